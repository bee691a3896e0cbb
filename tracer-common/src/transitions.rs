//! Transition counts by old and new state: the one shape they have, from
//! the kernel's per-CPU map through the probe, the shared state and the
//! rates to the metrics.

use crate::TcpState;

/// Slots per side of a [`TransitionMatrix`], and of every array indexed by
/// kernel state number: states are 1..=12, slot 0 collects numbers this
/// build does not know.
pub const STATE_SLOTS: usize = TcpState::ALL.len() + 1;

// Slots are the state numbers: the last state must land in the last slot.
const _: () = assert!(TcpState::ALL[TcpState::ALL.len() - 1] as usize == STATE_SLOTS - 1);

/// Cells of a [`TransitionMatrix`].
const CELLS: usize = STATE_SLOTS * STATE_SLOTS;

/// How many times each `old -> new` happened. The kernel program keeps one
/// per CPU (the single entry of its `TRANSITIONS` map); user space adds them
/// up. Cells are `old * STATE_SLOTS + new`, row by row.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionMatrix {
    counts: [u64; CELLS],
}

const _: () = assert!(core::mem::size_of::<TransitionMatrix>() == 8 * 169);

impl Default for TransitionMatrix {
    fn default() -> Self {
        TransitionMatrix::ZERO
    }
}

impl TransitionMatrix {
    pub const ZERO: TransitionMatrix = TransitionMatrix { counts: [0; CELLS] };

    /// The cell of `old -> new`, kernel numbers, with out-of-range numbers
    /// folded into slot 0 (so a newer kernel's state is still counted).
    #[inline(always)]
    pub const fn cell(old: u32, new: u32) -> usize {
        let slots = STATE_SLOTS as u32;
        let old = if old < slots { old } else { 0 };
        let new = if new < slots { new } else { 0 };
        (old * slots + new) as usize
    }

    /// Counts one `old -> new` (kernel numbers). The kernel program calls it
    /// on its per-CPU copy.
    #[inline(always)]
    pub fn record(&mut self, old: u32, new: u32) {
        // `cell` is always in range; `get_mut` keeps a panic path (which the
        // verifier would reject) out of the kernel program all the same.
        if let Some(count) = self.counts.get_mut(Self::cell(old, new)) {
            *count += 1;
        }
    }

    /// How many times `old -> new` happened.
    pub fn get(&self, old: TcpState, new: TcpState) -> u64 {
        self.counts[Self::cell(old as u32, new as u32)]
    }
}

#[cfg(feature = "user")]
impl TransitionMatrix {
    /// Adds another CPU's counts to these (the kernel's counters wrap, so
    /// the sum does too).
    pub fn add(&mut self, other: &TransitionMatrix) {
        for (sum, n) in self.counts.iter_mut().zip(&other.counts) {
            *sum = sum.wrapping_add(*n);
        }
    }

    /// Every transition counted, known states or not.
    pub fn total(&self) -> u64 {
        self.counts.iter().copied().fold(0, u64::wrapping_add)
    }

    /// The transitions between known states that happened at least once,
    /// with their counts, by old state then new state (kernel order).
    pub fn nonzero(&self) -> impl Iterator<Item = (TcpState, TcpState, u64)> + '_ {
        TcpState::ALL.into_iter().flat_map(move |old| {
            TcpState::ALL.into_iter().filter_map(move |new| {
                let n = self.get(old, new);
                (n > 0).then_some((old, new, n))
            })
        })
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), one array of integers, no padding.
    unsafe impl aya::Pod for super::TransitionMatrix {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    #[test]
    fn cells_are_rows_of_old_states() {
        assert_eq!(STATE_SLOTS, 13);
        assert_eq!(TransitionMatrix::cell(0, 0), 0);
        assert_eq!(TransitionMatrix::cell(1, 2), 13 + 2);
        assert_eq!(TransitionMatrix::cell(12, 12), CELLS - 1);
        // Unknown numbers share slot 0 of their side.
        assert_eq!(TransitionMatrix::cell(13, 7), 7);
        assert_eq!(TransitionMatrix::cell(7, u32::MAX), 7 * 13);
    }

    #[test]
    fn records_count_each_pair_apart() {
        let mut m = TransitionMatrix::ZERO;
        for _ in 0..3 {
            m.record(Close as u32, SynSent as u32);
        }
        m.record(SynSent as u32, Established as u32);
        assert_eq!(m.get(Close, SynSent), 3);
        assert_eq!(m.get(SynSent, Established), 1);
        // The reverse pair is another cell.
        assert_eq!(m.get(Established, SynSent), 0);
        assert_eq!(m.get(SynSent, Close), 0);
    }
}

#[cfg(all(test, feature = "user"))]
mod user_tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use TcpState::*;

    fn matrix(pairs: &[(u32, u32, u64)]) -> TransitionMatrix {
        let mut m = TransitionMatrix::ZERO;
        for &(old, new, n) in pairs {
            for _ in 0..n {
                m.record(old, new);
            }
        }
        m
    }

    #[test]
    fn per_cpu_copies_add_up() {
        let mut sum = matrix(&[(7, 10, 1), (10, 3, 4)]);
        sum.add(&matrix(&[(10, 3, 2), (1, 4, 5)]));
        assert_eq!(sum.get(Close, Listen), 1);
        assert_eq!(sum.get(Listen, SynRecv), 6);
        assert_eq!(sum.get(Established, FinWait1), 5);
        assert_eq!(sum.total(), 12);
    }

    #[test]
    fn sums_wrap_as_the_kernel_counters_do() {
        let mut big = TransitionMatrix::ZERO;
        big.counts[TransitionMatrix::cell(1, 8)] = u64::MAX;
        big.add(&matrix(&[(1, 8, 2)]));
        assert_eq!(big.get(Established, CloseWait), 1);
    }

    #[test]
    fn nonzero_lists_known_pairs_in_kernel_order() {
        // Made up: an unknown new state (13) and an unknown old one (0).
        let m = matrix(&[(10, 3, 2), (1, 4, 1), (7, 2, 3), (1, 13, 9), (0, 7, 4)]);
        let listed: Vec<_> = m.nonzero().collect();
        assert_eq!(
            listed,
            [
                (Established, FinWait1, 1),
                (Close, SynSent, 3),
                (Listen, SynRecv, 2),
            ]
        );
        // The unknown ones still count in the total.
        assert_eq!(m.total(), 19);
    }
}
