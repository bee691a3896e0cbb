//! Time-in-state histograms: fixed buckets from 100 µs to 10 min, plain
//! counters (the engine is single-threaded; the metrics module reads them).

/// Upper bounds in seconds. Covers a loopback handshake (~100 µs) to the
/// TIME_WAIT length (60 s) and long FIN_WAIT2/CLOSE_WAIT stays (10 min).
pub const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

/// The same bounds in nanoseconds: events carry nanoseconds, and integer
/// compares spare every observation a division.
const BUCKETS_NS: [u64; BUCKETS.len()] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    600_000_000_000,
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; index BUCKETS.len() is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    pub fn observe_ns(&mut self, ns: u64) {
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        self.counts[i] += 1;
        self.sum_seconds += ns as f64 * 1e-9;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// `(upper bound, cumulative count)` for each finite bucket.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut acc = 0;
        BUCKETS.iter().zip(&self.counts).map(move |(&b, &c)| {
            acc += c;
            (b, acc)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_nanoseconds_match_the_bounds_in_seconds() {
        for (ns, secs) in BUCKETS_NS.iter().zip(BUCKETS) {
            assert_eq!(*ns, (secs * 1e9).round() as u64);
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        h.observe_ns(100_000); // exactly 100 µs: first bucket (le="0.0001")
        h.observe_ns(100_001);
        h.observe_ns(60_000_000_000);
        h.observe_ns(3_600_000_000_000); // an hour: +Inf only
        let c: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(c[0], (0.0001, 1));
        assert_eq!(c[1], (0.00025, 2));
        assert_eq!(c.iter().find(|(b, _)| *b == 60.0).unwrap().1, 3);
        assert_eq!(c.last().unwrap(), &(600.0, 3));
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 3660.000200001).abs() < 1e-6);
    }
}
