//! Query latency per hostgroup: the one metric observed on the data path (everything else
//! `/metrics` shows is read from counters at scrape time). Sessions hold their hostgroups'
//! histograms and observe without a lookup.

use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

/// Latency buckets of the query histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 10.0,
];

/// The latency histograms sessions observe on the data path; `/metrics` gathers them.
pub struct Latencies {
    registry: Registry,
    query_duration: HistogramVec,
}

impl Default for Latencies {
    fn default() -> Self {
        let query_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_query_duration_seconds",
                "Time from a statement's arrival to the end of its response, per hostgroup.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["hostgroup"],
        )
        .expect("valid histogram");
        let registry = Registry::new();
        registry
            .register(Box::new(query_duration.clone()))
            .expect("registered once");
        Latencies {
            registry,
            query_duration,
        }
    }
}

impl Latencies {
    /// The latency histogram of one hostgroup (sessions keep it to observe without a
    /// lookup).
    pub fn hostgroup_histogram(&self, hostgroup: u32) -> Histogram {
        self.query_duration
            .with_label_values(&[&hostgroup.to_string()])
    }

    /// The histograms' current values, for the exposition.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}
