//! Latency histograms of the API requests the head answers over worker and
//! driver streams (get, wait, KV, actor and placement-group calls), by
//! method, for `/metrics` (`oxray_rpc_latency_seconds`).
//!
//! They live in the head's process, where the dashboard that renders them
//! runs too, so reading them needs no message: a process-wide registry keyed
//! by method, with Prometheus' default bucket bounds. Recording is one short
//! lock and a bucket increment per answered request.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus' client defaults).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One method's latencies: cumulative counts per bucket bound, sum, count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// `cumulative[i]` requests took at most `BUCKETS[i]` seconds.
    pub cumulative: [u64; BUCKETS.len()],
    pub sum_seconds: f64,
    pub count: u64,
}

static HISTOGRAMS: Mutex<BTreeMap<&'static str, LatencyHistogram>> = Mutex::new(BTreeMap::new());

/// Records that a `method` request was answered after `latency`.
pub(crate) fn observe(method: &'static str, latency: Duration) {
    let seconds = latency.as_secs_f64();
    let mut histograms = HISTOGRAMS.lock();
    let histogram = histograms.entry(method).or_default();
    for (bound, count) in BUCKETS.iter().zip(histogram.cumulative.iter_mut()) {
        if seconds <= *bound {
            *count += 1;
        }
    }
    histogram.sum_seconds += seconds;
    histogram.count += 1;
}

/// Every method's histogram so far, by method name.
pub fn rpc_latencies() -> BTreeMap<&'static str, LatencyHistogram> {
    HISTOGRAMS.lock().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        observe("TestMethod", Duration::from_millis(30));
        observe("TestMethod", Duration::from_millis(3));
        let histogram = rpc_latencies()["TestMethod"].clone();
        assert_eq!(histogram.count, 2);
        assert_eq!(histogram.cumulative[0], 1, "only 3 ms is within 5 ms");
        assert_eq!(histogram.cumulative[3], 2, "both are within 50 ms");
        assert!((histogram.sum_seconds - 0.033).abs() < 1e-9);
    }
}
