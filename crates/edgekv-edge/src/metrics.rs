//! Request counters and latency histograms, rendered as Prometheus text.
//!
//! Everything is a fixed array of atomics indexed by route and status, so
//! recording a request takes no lock and allocates nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hot::HotStats;

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RouteLabel {
    Namespaces,
    Namespace,
    Value,
    Metadata,
    Keys,
    BulkWrite,
    BulkDelete,
    BulkGet,
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 9] = [
        RouteLabel::Namespaces,
        RouteLabel::Namespace,
        RouteLabel::Value,
        RouteLabel::Metadata,
        RouteLabel::Keys,
        RouteLabel::BulkWrite,
        RouteLabel::BulkDelete,
        RouteLabel::BulkGet,
        RouteLabel::Other,
    ];

    /// The label value in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Namespaces => "namespaces",
            RouteLabel::Namespace => "namespace",
            RouteLabel::Value => "value",
            RouteLabel::Metadata => "metadata",
            RouteLabel::Keys => "keys",
            RouteLabel::BulkWrite => "bulk_write",
            RouteLabel::BulkDelete => "bulk_delete",
            RouteLabel::BulkGet => "bulk_get",
            RouteLabel::Other => "other",
        }
    }
}

const ROUTES: usize = RouteLabel::ALL.len();
/// Statuses counted one by one; any other lands in the last slot, labelled `other`.
const STATUSES: [u16; 12] = [200, 202, 400, 401, 403, 404, 405, 413, 414, 415, 500, 503];
const STATUS_SLOTS: usize = STATUSES.len() + 1;
/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];
const BUCKET_SLOTS: usize = BUCKETS_US.len() + 1;

/// The edge's request metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; STATUS_SLOTS]; ROUTES],
    latency: [[AtomicU64; BUCKET_SLOTS]; ROUTES],
    latency_sum_us: [AtomicU64; ROUTES],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_us: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        let r = route as usize;
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len());
        self.requests[r][s].fetch_add(1, Ordering::Relaxed);
        let us = elapsed.as_micros() as u64;
        let b = BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(BUCKETS_US.len());
        self.latency[r][b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[r].fetch_add(us, Ordering::Relaxed);
    }

    /// The number of requests counted for a route and status.
    pub fn requests(&self, route: RouteLabel, status: u16) -> u64 {
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len());
        self.requests[route as usize][s].load(Ordering::Relaxed)
    }

    /// Renders the metrics and the hot tier's counters as Prometheus text.
    pub fn render(&self, hot: &HotStats) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str("# HELP edgekv_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE edgekv_http_requests_total counter\n");
        for route in RouteLabel::ALL {
            for (slot, count) in self.requests[route as usize].iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(slot)
                    .map_or("other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "edgekv_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    route.as_str()
                );
            }
        }
        out.push_str("# HELP edgekv_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE edgekv_http_request_duration_seconds histogram\n");
        for route in RouteLabel::ALL {
            let r = route as usize;
            let mut cumulative = 0;
            for (b, count) in self.latency[r].iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = BUCKETS_US
                    .get(b)
                    .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(
                    out,
                    "edgekv_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    route.as_str()
                );
            }
            let sum = self.latency_sum_us[r].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "edgekv_http_request_duration_seconds_sum{{route=\"{}\"}} {sum}",
                route.as_str()
            );
            let _ = writeln!(
                out,
                "edgekv_http_request_duration_seconds_count{{route=\"{}\"}} {cumulative}",
                route.as_str()
            );
        }
        let gauges = [
            (
                "edgekv_hot_hits_total",
                "counter",
                "Lookups answered by the hot tier.",
                hot.hits as f64,
            ),
            (
                "edgekv_hot_misses_total",
                "counter",
                "Lookups the hot tier could not answer.",
                hot.misses as f64,
            ),
            (
                "edgekv_hot_evictions_total",
                "counter",
                "Entries evicted from the hot tier.",
                hot.evictions as f64,
            ),
            (
                "edgekv_hot_entries",
                "gauge",
                "Entries held in the hot tier.",
                hot.entries as f64,
            ),
            (
                "edgekv_hot_bytes",
                "gauge",
                "Bytes held in the hot tier.",
                hot.bytes as f64,
            ),
            (
                "edgekv_hot_capacity_bytes",
                "gauge",
                "The hot tier's budget in bytes.",
                hot.capacity as f64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
