//! Request counters and latency histograms, rendered as Prometheus text.
//!
//! Everything is a fixed array of atomics indexed by route and status, so
//! recording a request takes no lock and allocates nothing. The arrays are
//! striped: each thread counts into the stripe it was given on its first request,
//! on cache lines of its own, and a scrape sums the stripes. Workers on different
//! cores then never write the same line on the request path.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::hot::HotStats;

/// When a request started, for its latency: a raw reading of the CPU's
/// time-stamp counter where that is steady (`quanta` checks; else of the OS
/// clock), scaled only when the request ends. On a virtual machine that costs
/// under half of an `Instant::now`, and every request takes two.
#[derive(Debug, Clone, Copy)]
pub struct Started(u64);

/// The clock of [`Started`], calibrated on first use.
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

impl Started {
    /// Now.
    pub fn now() -> Self {
        Started(CLOCK.raw())
    }

    /// The time since.
    pub fn elapsed(self) -> Duration {
        CLOCK.delta(self.0, CLOCK.raw())
    }
}

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
/// The counter slot of a status.
fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&c| c == status)
        .unwrap_or(STATUSES.len())
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];
const BUCKET_SLOTS: usize = BUCKETS_US.len() + 1;

/// The edge's request metrics.
#[derive(Debug)]
pub struct Metrics {
    stripes: Box<[Stripe]>,
    /// Route or token tables installed that could not be kept on disk.
    table_save_failures: AtomicU64,
}

/// One thread's share of the counters. Stripes are handed out round-robin to
/// threads as they first count, so two threads share one once more threads have
/// counted than there are stripes: that costs only contention, never a count.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe {
    requests: [[AtomicU64; STATUS_SLOTS]; ROUTES],
    latency: [[AtomicU64; BUCKET_SLOTS]; ROUTES],
    latency_sum_us: [AtomicU64; ROUTES],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_us: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The most stripes a [`Metrics`] has, whatever the number of cores.
const MAX_STRIPES: usize = 64;

/// Hands each thread its stripe number, round-robin, on first use.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
}

impl Default for Metrics {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Metrics::with_stripes(cores)
    }
}

impl Metrics {
    /// Metrics with `stripes` stripes (at least one, at most 64); one per core
    /// running requests is enough.
    pub fn with_stripes(stripes: usize) -> Self {
        // The first reading calibrates the clock (up to 200 ms): now, not in the
        // first request.
        Started::now();
        Metrics {
            stripes: (0..stripes.clamp(1, MAX_STRIPES))
                .map(|_| Stripe::default())
                .collect(),
            table_save_failures: AtomicU64::new(0),
        }
    }

    /// Counts a table installed that could not be kept on disk.
    pub fn table_save_failed(&self) {
        self.table_save_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Tables installed that could not be kept on disk, since start.
    pub fn table_save_failures(&self) -> u64 {
        self.table_save_failures.load(Ordering::Relaxed)
    }

    /// The calling thread's stripe.
    fn stripe(&self) -> &Stripe {
        // While a thread's locals are being torn down, the first stripe.
        let n = STRIPE.try_with(|n| *n).unwrap_or(0);
        &self.stripes[n % self.stripes.len()]
    }

    /// Counts one answered request.
    pub fn record(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        let r = route as usize;
        let s = status_slot(status);
        let stripe = self.stripe();
        stripe.requests[r][s].fetch_add(1, Ordering::Relaxed);
        let us = elapsed.as_micros() as u64;
        let b = BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(BUCKETS_US.len());
        stripe.latency[r][b].fetch_add(1, Ordering::Relaxed);
        stripe.latency_sum_us[r].fetch_add(us, Ordering::Relaxed);
    }

    /// The sum over the stripes of one counter.
    fn sum(&self, counter: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| counter(stripe).load(Ordering::Relaxed))
            .sum()
    }

    /// The number of requests counted for a route and status.
    pub fn requests(&self, route: RouteLabel, status: u16) -> u64 {
        let s = status_slot(status);
        self.sum(|stripe| &stripe.requests[route as usize][s])
    }

    /// Renders the metrics and the hot tier's counters as Prometheus text.
    pub fn render(&self, hot: &HotStats) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str("# HELP edgekv_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE edgekv_http_requests_total counter\n");
        for route in RouteLabel::ALL {
            for slot in 0..STATUS_SLOTS {
                let count = self.sum(|stripe| &stripe.requests[route as usize][slot]);
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
            for b in 0..BUCKET_SLOTS {
                cumulative += self.sum(|stripe| &stripe.latency[r][b]);
                let le = BUCKETS_US
                    .get(b)
                    .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(
                    out,
                    "edgekv_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    route.as_str()
                );
            }
            let sum = self.sum(|stripe| &stripe.latency_sum_us[r]) as f64 / 1e6;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_clock_measures_what_the_os_clock_does() {
        let (started, os) = (Started::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (ours, theirs) = (started.elapsed(), os.elapsed());
        // Calibrated against the OS clock: within a few percent of it (and never
        // backwards), however long the sleep overran.
        assert!(
            ours.as_secs_f64() > theirs.as_secs_f64() * 0.95 - 0.001,
            "{ours:?} vs {theirs:?}"
        );
        assert!(
            ours.as_secs_f64() < theirs.as_secs_f64() * 1.05 + 0.001,
            "{ours:?} vs {theirs:?}"
        );
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn counts_from_many_threads_sum_over_the_stripes() {
        // Fewer stripes than threads: some threads share one, none is lost.
        let metrics = Metrics::with_stripes(3);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let metrics = &metrics;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        metrics.record(RouteLabel::Value, 200, Duration::from_micros(t * 100));
                    }
                    metrics.record(RouteLabel::Keys, 404, Duration::from_millis(3));
                });
            }
        });
        assert_eq!(metrics.requests(RouteLabel::Value, 200), 8000);
        assert_eq!(metrics.requests(RouteLabel::Keys, 404), 8);
        assert_eq!(metrics.requests(RouteLabel::Value, 404), 0);
        let used = metrics
            .stripes
            .iter()
            .filter(|s| s.requests[RouteLabel::Value as usize][0].load(Ordering::Relaxed) > 0)
            .count();
        assert!(
            used > 1,
            "threads should spread over the stripes, used {used}"
        );

        let text = metrics.render(&crate::hot::HotTier::new(1 << 20).stats());
        assert_eq!(
            line(
                &text,
                "edgekv_http_requests_total{route=\"value\",status=\"200\"}"
            ),
            Some("8000")
        );
        // Latencies 0, 100, …, 700 µs: 2000 within 100 µs, all 8000 within 1 ms.
        assert_eq!(
            line(
                &text,
                "edgekv_http_request_duration_seconds_bucket{route=\"value\",le=\"0.0001\"}"
            ),
            Some("2000")
        );
        assert_eq!(
            line(
                &text,
                "edgekv_http_request_duration_seconds_bucket{route=\"value\",le=\"0.001\"}"
            ),
            Some("8000")
        );
        // Σ 1000 × (0 + 100 + … + 700) µs = 2.8 s.
        assert_eq!(
            line(
                &text,
                "edgekv_http_request_duration_seconds_sum{route=\"value\"}"
            ),
            Some("2.8")
        );
        assert_eq!(
            line(
                &text,
                "edgekv_http_request_duration_seconds_count{route=\"keys\"}"
            ),
            Some("8")
        );
    }

    #[test]
    fn stripes_are_bounded() {
        assert_eq!(Metrics::with_stripes(0).stripes.len(), 1);
        assert_eq!(Metrics::with_stripes(1000).stripes.len(), MAX_STRIPES);
    }
}
