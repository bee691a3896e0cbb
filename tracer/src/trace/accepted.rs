//! An accepted socket's own addresses on every row, on every kernel.
//!
//! Before Linux 6.15 the child's `LISTEN -> SYN_RECV` carries the listener's
//! tuple (remote `*:0`, see [`Transition::is_child_before_its_tuple`]); its
//! next event, microseconds later in the same softirq, carries its
//! four-tuple. So such a row waits for that event and takes its addresses, and the rows after it
//! wait behind it to keep the stream in the kernel's order. A row waits at
//! most [`MAX_WAIT`] (then it is printed as the kernel reported it), and at
//! most [`MAX_WAITING`] rows wait at once.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use crate::kernel::event::Transition;

/// Longest a row waits for its socket's next event: a child whose
/// handshake stalls (a TCP Fast Open child waits for the client's ACK)
/// must not hold the stream up for long.
pub const MAX_WAIT: Duration = Duration::from_millis(250);

/// Most rows held back at once; beyond it the oldest is let go.
pub const MAX_WAITING: usize = 65_536;

/// The rows held back, in the kernel's order.
#[derive(Debug, Default)]
pub struct AcceptedTuples {
    queue: VecDeque<Transition>,
    /// Sequence number of `queue[0]`; each row pushed takes the next one.
    front_seq: u64,
    /// Children still waiting for their four-tuple: their row's sequence
    /// number, by socket address.
    waiting: HashMap<u64, u64>,
}

impl AcceptedTuples {
    /// Takes the next transition; hands on, in order, every row that no
    /// longer needs to wait.
    pub fn push(&mut self, t: Transition, out: &mut impl FnMut(Transition)) {
        if let Some(seq) = self.waiting.remove(&t.skaddr)
            && let Some(held) = self.queue.get_mut(index(seq, self.front_seq))
            && t.remote.port() != 0
        {
            held.local = t.local;
            held.remote = t.remote;
        }
        if t.is_child_before_its_tuple() {
            let seq = self.front_seq + self.queue.len() as u64;
            self.waiting.insert(t.skaddr, seq);
        } else if self.queue.is_empty() {
            out(t);
            return;
        }
        let now_ns = t.ts_ns;
        self.queue.push_back(t);
        self.release(now_ns, out);
    }

    /// Hands on the rows whose wait is over at `now_ns` (CLOCK_MONOTONIC).
    pub fn release(&mut self, now_ns: u64, out: &mut impl FnMut(Transition)) {
        let max_wait_ns = MAX_WAIT.as_nanos() as u64;
        while let Some(front) = self.queue.front() {
            let waits = self.waiting.get(&front.skaddr) == Some(&self.front_seq);
            let expired = front.ts_ns.saturating_add(max_wait_ns) <= now_ns;
            if waits && !expired && self.queue.len() <= MAX_WAITING {
                break;
            }
            if waits {
                self.waiting.remove(&front.skaddr);
            }
            self.pop(out);
        }
    }

    /// Hands on every row held (at the end of the trace).
    pub fn flush(&mut self, out: &mut impl FnMut(Transition)) {
        while !self.queue.is_empty() {
            self.pop(out);
        }
        self.waiting.clear();
    }

    /// How long until the oldest held row must go, if one is held.
    pub fn next_deadline(&self, now_ns: u64) -> Option<Duration> {
        let front = self.queue.front()?;
        let due = front.ts_ns.saturating_add(MAX_WAIT.as_nanos() as u64);
        Some(Duration::from_nanos(due.saturating_sub(now_ns)))
    }

    fn pop(&mut self, out: &mut impl FnMut(Transition)) {
        if let Some(t) = self.queue.pop_front() {
            self.front_seq += 1;
            out(t);
        }
    }
}

fn index(seq: u64, front_seq: u64) -> usize {
    // A sequence number behind the front was already handed on: no index.
    usize::try_from(seq.wrapping_sub(front_seq)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tracer_common::TcpState::{self, *};

    use super::*;
    use crate::kernel::event::{Comm, Family};

    const MS: u64 = 1_000_000;
    const SRV: &str = "10.0.0.1:80";
    const ANY: &str = "0.0.0.0:0";

    fn ev(
        ts_ns: u64,
        sk: u64,
        old: TcpState,
        new: TcpState,
        local: &str,
        remote: &str,
    ) -> Transition {
        let local: SocketAddr = local.parse().expect("test address");
        Transition {
            ts_ns,
            skaddr: sk,
            old,
            new,
            family: Family::V4,
            local,
            remote: remote.parse().expect("test address"),
            pid: 0,
            tid: 0,
            comm: Comm::default(),
            netns: 1,
            old_state: None,
            fin_received: None,
            timewait_made: None,
            sk_err: None,
            reset_received: None,
        }
    }

    fn rows(events: Vec<Transition>, end_ns: u64) -> Vec<(u64, TcpState, String)> {
        let mut a = AcceptedTuples::default();
        let mut out = Vec::new();
        let mut sink = |t: Transition| out.push((t.skaddr, t.new, t.remote.to_string()));
        for t in events {
            a.push(t, &mut sink);
        }
        a.release(end_ns, &mut sink);
        out
    }

    #[test]
    fn a_child_takes_its_addresses_from_its_next_event_in_order() {
        let out = rows(
            vec![
                ev(MS, 7, Listen, SynRecv, SRV, ANY),
                ev(MS, 9, SynSent, Established, "10.0.0.2:5", SRV),
                ev(MS, 7, SynRecv, Established, SRV, "10.0.0.2:5"),
            ],
            MS,
        );
        assert_eq!(
            out,
            vec![
                (7, SynRecv, "10.0.0.2:5".to_owned()),
                (9, Established, SRV.to_owned()),
                (7, Established, "10.0.0.2:5".to_owned()),
            ]
        );
    }

    #[test]
    fn rows_with_their_own_tuple_pass_at_once() {
        let mut a = AcceptedTuples::default();
        let mut n = 0;
        a.push(ev(MS, 7, Listen, SynRecv, SRV, "10.0.0.2:5"), &mut |_| {
            n += 1
        });
        a.push(ev(MS, 8, Close, Listen, SRV, ANY), &mut |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(a.next_deadline(MS), None);
    }

    #[test]
    fn a_row_waits_at_most_its_time_limit() {
        let wait = MAX_WAIT.as_nanos() as u64;
        let held = vec![ev(MS, 7, Listen, SynRecv, SRV, ANY)];
        assert!(rows(held.clone(), MS + wait - 1).is_empty());
        assert_eq!(rows(held, MS + wait), vec![(7, SynRecv, ANY.to_owned())]);
        let mut a = AcceptedTuples::default();
        a.push(ev(MS, 7, Listen, SynRecv, SRV, ANY), &mut |_| {});
        assert_eq!(
            a.next_deadline(MS + 50 * MS),
            Some(MAX_WAIT - Duration::from_millis(50))
        );
    }

    #[test]
    fn a_later_event_of_another_socket_lets_an_expired_row_go() {
        let wait = MAX_WAIT.as_nanos() as u64;
        let out = rows(
            vec![
                ev(MS, 7, Listen, SynRecv, SRV, ANY),
                ev(MS + wait, 9, Close, Listen, "10.0.0.1:81", ANY),
            ],
            MS + wait,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (7, SynRecv, ANY.to_owned()));
    }

    #[test]
    fn the_number_of_rows_held_is_bounded() {
        let mut a = AcceptedTuples::default();
        let mut out = 0usize;
        for sk in 0..(MAX_WAITING as u64 + 10) {
            a.push(ev(MS, sk, Listen, SynRecv, SRV, ANY), &mut |_| out += 1);
        }
        assert_eq!(out, 10);
        let mut rest = 0usize;
        a.flush(&mut |_| rest += 1);
        assert_eq!(out + rest, MAX_WAITING + 10);
    }
}
