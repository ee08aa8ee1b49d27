//! Health analysis: the edges' per-build reports, summed over a sliding window,
//! judged against a deployment's thresholds.
//!
//! The verdict on the deploying build, in this order:
//! 1. an edge that ejected the deploying build is a breach;
//! 2. too few requests to the deploying build in the window is inconclusive
//!    (promotion waits; nothing rolls back);
//! 3. an error rate (build faults: auth, unavailable, deadline, other) above the
//!    absolute ceiling, or above known-good's rate × the relative factor + one
//!    percentage point, is a breach;
//! 4. a p99 latency above the absolute ceiling, or above known-good's p99 × the
//!    relative factor (only past 50 ms), is a breach;
//! 5. a client-error rate — answers the client sees as 404, and 4xx refusals —
//!    above known-good's × the relative factor plus a margin, by more than
//!    chance (three standard errors), over the reports in which both builds were
//!    served, is a breach: a build over the wrong data answers 404 to keys that
//!    exist, which no error count shows;
//! 6. otherwise healthy — unless an edge of the environment holds a break-glass
//!    pin: then promotion is held (inconclusive) while the pin lasts. A pin never
//!    hides a breach.
//!
//! An edge whose own calls to known-good fail authentication is itself unhealthy:
//! its reports are left out. Reports older than the window are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};

use edgekv_proto::v1;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::rollout::Health;

pub use edgekv_proto::LATENCY_BOUNDS_MS;
/// The latency assigned to the overflow bucket, in ms.
const OVERFLOW_MS: u64 = 10_000;
/// Below this p99, the relative latency threshold is not applied: small absolute
/// differences in fast answers are noise.
const RELATIVE_P99_FLOOR_MS: u64 = 50;

/// A deployment's health thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// The window the analysis sums over, ms.
    pub window_ms: u64,
    /// Fewer requests to the new build in the window: inconclusive.
    pub min_requests: u64,
    /// Absolute error-rate ceiling, basis points of requests.
    pub max_error_bp: u32,
    /// Relative error-rate factor against known-good, percent (plus one point).
    pub relative_error_pct: u32,
    /// Absolute p99 ceiling, ms.
    pub max_p99_ms: u64,
    /// Relative p99 factor against known-good, percent.
    pub relative_p99_pct: u32,
    /// The client-error rates (404s, 4xx refusals) may exceed known-good's × the
    /// relative error factor by this much, basis points.
    pub client_error_margin_bp: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window_ms: 10_000,
            min_requests: 20,
            max_error_bp: 500,
            relative_error_pct: 200,
            max_p99_ms: 1_000,
            relative_p99_pct: 300,
            client_error_margin_bp: 500,
        }
    }
}

impl Thresholds {
    /// Thresholds from the wire: zero fields take the defaults (`min_requests`
    /// only when `min_requests_set` is false).
    pub fn from_wire(t: Option<&v1::HealthThresholds>) -> Self {
        let d = Thresholds::default();
        let Some(t) = t else { return d };
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        Thresholds {
            window_ms: or(t.window_ms, d.window_ms),
            min_requests: if t.min_requests_set {
                t.min_requests
            } else {
                d.min_requests
            },
            max_error_bp: if t.max_error_bp == 0 {
                d.max_error_bp
            } else {
                t.max_error_bp
            },
            relative_error_pct: if t.relative_error_pct == 0 {
                d.relative_error_pct
            } else {
                t.relative_error_pct
            },
            max_p99_ms: or(t.max_p99_ms, d.max_p99_ms),
            relative_p99_pct: if t.relative_p99_pct == 0 {
                d.relative_p99_pct
            } else {
                t.relative_p99_pct
            },
            client_error_margin_bp: if t.client_error_margin_bp == 0 {
                d.client_error_margin_bp
            } else {
                t.client_error_margin_bp
            },
        }
    }

    /// The thresholds on the wire.
    pub fn to_wire(self) -> v1::HealthThresholds {
        v1::HealthThresholds {
            window_ms: self.window_ms,
            min_requests: self.min_requests,
            min_requests_set: true,
            max_error_bp: self.max_error_bp,
            relative_error_pct: self.relative_error_pct,
            max_p99_ms: self.max_p99_ms,
            relative_p99_pct: self.relative_p99_pct,
            client_error_margin_bp: self.client_error_margin_bp,
        }
    }
}

/// One build's figures summed over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Build faults: auth, unavailable, deadline, other.
    pub faults: [u64; 4],
    /// Latency histogram.
    pub latency: Vec<u64>,
    /// Answers the client saw as 404.
    pub not_found: u64,
    /// Client faults (4xx refusals, NOT_FOUND included).
    pub client_errors: u64,
    /// Hedged reads known-good answered first.
    pub late: u64,
    /// The last fault message seen.
    pub last_error: String,
}

impl Totals {
    fn add(&mut self, b: &v1::BuildHealth) {
        self.requests += b.requests;
        self.faults[0] += b.errors_auth;
        self.faults[1] += b.errors_unavailable;
        self.faults[2] += b.errors_deadline;
        self.faults[3] += b.errors_other;
        self.not_found += b.not_found;
        self.client_errors += b.client_errors;
        self.late += b.late;
        if self.latency.len() < b.latency_buckets.len() {
            self.latency.resize(b.latency_buckets.len(), 0);
        }
        for (sum, n) in self.latency.iter_mut().zip(&b.latency_buckets) {
            *sum += n;
        }
        if !b.last_error.is_empty() {
            self.last_error = b.last_error.clone();
        }
    }

    /// Build faults of every class.
    pub fn errors(&self) -> u64 {
        self.faults.iter().sum()
    }

    /// Errors per 10,000 requests.
    pub fn error_bp(&self) -> u64 {
        (self.errors() * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }

    /// 404 answers per 10,000 requests.
    pub fn not_found_bp(&self) -> u64 {
        (self.not_found * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }

    /// Client faults per 10,000 requests.
    pub fn client_error_bp(&self) -> u64 {
        (self.client_errors * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }

    /// The p99 latency, as the upper bound of its bucket, ms.
    pub fn p99_ms(&self) -> u64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0;
        }
        let target = total.saturating_mul(99).div_ceil(100);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= target {
                return LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(OVERFLOW_MS);
            }
        }
        OVERFLOW_MS
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} requests failed ({:.1}%: auth {}, unavailable {}, deadline {}, other {}), {} hedged around, 404 {:.1}%, 4xx {:.1}%, p99 ≤ {} ms",
            self.errors(),
            self.requests,
            self.error_bp() as f64 / 100.0,
            self.faults[0],
            self.faults[1],
            self.faults[2],
            self.faults[3],
            self.late,
            self.not_found_bp() as f64 / 100.0,
            self.client_error_bp() as f64 / 100.0,
            self.p99_ms()
        )
    }
}

/// What a verdict is judged from ([`Analyzer::figures`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// The deploying build's.
    pub deploying: Totals,
    /// Known-good's.
    pub known_good: Totals,
    /// Known-good's, from the reports in which the deploying build served too.
    pub paired: Totals,
    /// The edges whose reports count.
    pub reporting: usize,
    /// The edges left out: their calls to known-good fail authentication.
    pub left_out: Vec<String>,
    /// An edge that ejected the deploying build, and why.
    pub ejected: Option<(String, String)>,
}

/// The reports of every edge, by environment and node, for a while.
#[derive(Debug, Default)]
pub struct Analyzer {
    edges: Mutex<HashMap<EdgeKey, VecDeque<(u64, v1::HealthReport)>>>,
}

/// An edge: its environment and node id.
type EdgeKey = (String, String);

/// How many standard errors a client-error rate must stand above known-good's
/// before it counts: three, so a healthy build is not rolled back by chance.
const MIN_Z: f64 = 3.0;

/// The fewest requests of the deploying build whose client-error rate is
/// compared with known-good's: below it, a handful of requests split by key
/// differ in their mix of absent keys by chance far more often than a normal
/// approximation of three standard errors allows (seen: 6 of 15 requests 404
/// at a healthy build, against known-good's 11%, rolled it back).
const CLIENT_ERROR_MIN_REQUESTS: u64 = 30;

/// The two-proportion z-score of `a` (count of n) above `b`: how many standard
/// errors rate a stands above rate b (0 when either has no requests).
pub fn z_score((a, n): (u64, u64), (b, m): (u64, u64)) -> f64 {
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (pa, pb) = (a as f64 / n as f64, b as f64 / m as f64);
    let pooled = (a + b) as f64 / (n + m) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n as f64 + 1.0 / m as f64)).sqrt();
    if se == 0.0 {
        return if pa > pb { f64::INFINITY } else { 0.0 };
    }
    (pa - pb) / se
}

/// How long reports are kept at most (the longest window a deployment may ask).
const KEEP_MS: u64 = 5 * 60_000;

impl Analyzer {
    /// Keeps a report received at `now_ms`.
    pub fn record(&self, now_ms: u64, report: v1::HealthReport) {
        let mut edges = self.edges.lock();
        let reports = edges
            .entry((report.environment.clone(), report.node_id.clone()))
            .or_default();
        reports.push_back((now_ms, report));
        while reports
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > KEEP_MS)
        {
            reports.pop_front();
        }
    }

    /// The break-glass pins edges of `environment` report now: node → (build,
    /// until ms). Only reports of the last 5 s count.
    pub fn pins(&self, environment: &str, now_ms: u64) -> BTreeMap<String, (String, u64)> {
        let edges = self.edges.lock();
        edges
            .iter()
            .filter(|((env, _), _)| env == environment)
            .filter_map(|((_, node), reports)| {
                let (at, last) = reports.back()?;
                if now_ms.saturating_sub(*at) > 5_000 || last.pinned.is_empty() {
                    return None;
                }
                let (build, until) = last.pinned.split_once(',')?;
                let until: u64 = until.parse().ok()?;
                (until > now_ms).then(|| (node.clone(), (build.to_string(), until)))
            })
            .collect()
    }

    /// The verdict on `build` (deploying) against `known_good` in `environment`.
    /// A break-glass pin holds promotion (a healthy verdict becomes inconclusive)
    /// but never hides a breach: a pin must not stop an automatic rollback.
    pub fn verdict(
        &self,
        environment: &str,
        build: &str,
        known_good: Option<&str>,
        thresholds: &Thresholds,
        now_ms: u64,
    ) -> Health {
        let verdict = self.judge(environment, build, known_good, thresholds, now_ms);
        if verdict != Health::Healthy {
            return verdict;
        }
        match self.pins(environment, now_ms).iter().next() {
            Some((node, (pinned, until))) => Health::Inconclusive(format!(
                "edge {node} is pinned to {pinned} by break-glass until {until} ms: promotions are held"
            )),
            None => Health::Healthy,
        }
    }

    /// The figures the verdict on `build` against `known_good` is judged
    /// from: what the edges of `environment` reported over the last `window_ms`.
    pub fn figures(
        &self,
        environment: &str,
        build: &str,
        known_good: Option<&str>,
        window_ms: u64,
        now_ms: u64,
    ) -> Figures {
        let edges = self.edges.lock();
        let mut figures = Figures::default();
        for ((env, node), reports) in edges.iter() {
            if env != environment {
                continue;
            }
            let recent: Vec<&v1::HealthReport> = reports
                .iter()
                .filter(|(at, _)| now_ms.saturating_sub(*at) <= window_ms)
                .map(|(_, r)| r)
                .collect();
            let Some(latest) = recent.last() else {
                continue;
            };
            if latest.known_good_auth_failing {
                figures.left_out.push(node.clone());
                continue;
            }
            figures.reporting += 1;
            if let Some(b) = latest
                .builds
                .iter()
                .find(|b| b.build_id == build && b.ejected)
                && known_good != Some(build)
                && figures.ejected.is_none()
            {
                let why = if b.last_error.is_empty() {
                    "its probes or requests failed".to_string()
                } else {
                    b.last_error.clone()
                };
                figures.ejected = Some((node.clone(), why));
            }
            for report in recent {
                let served = report
                    .builds
                    .iter()
                    .any(|b| b.build_id == build && b.requests > 0);
                for b in &report.builds {
                    if b.build_id == build {
                        figures.deploying.add(b);
                    } else if Some(b.build_id.as_str()) == known_good {
                        figures.known_good.add(b);
                        if served {
                            figures.paired.add(b);
                        }
                    }
                }
            }
        }
        figures
    }

    fn judge(
        &self,
        environment: &str,
        build: &str,
        known_good: Option<&str>,
        thresholds: &Thresholds,
        now_ms: u64,
    ) -> Health {
        // Known-good's figures from the reports in which the deploying build was
        // served too (`paired`): its client-error rates are compared over the
        // same stretch of traffic, not with what known-good answered before the
        // deployment began.
        let Figures {
            deploying,
            known_good: reference,
            paired,
            reporting,
            left_out,
            ejected,
        } = self.figures(environment, build, known_good, thresholds.window_ms, now_ms);
        if let Some((node, why)) = ejected {
            return Health::Breach(format!("edge {node} ejected build {build}: {why}"));
        }
        let window_s = thresholds.window_ms as f64 / 1000.0;
        let left_out = if left_out.is_empty() {
            String::new()
        } else {
            format!(
                "; left out (their calls to known-good fail authentication): {}",
                left_out.join(", ")
            )
        };
        if deploying.requests < thresholds.min_requests {
            return Health::Inconclusive(format!(
                "{} requests to {build} in the last {window_s} s from {reporting} edges; at least {} are needed{left_out}",
                deploying.requests, thresholds.min_requests
            ));
        }
        let evidence = || {
            format!(
                "{build}: {} over the last {window_s} s from {reporting} edges; known-good {}: {}{left_out}{}",
                deploying.describe(),
                known_good.unwrap_or("none"),
                reference.describe(),
                if deploying.last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {}", deploying.last_error)
                }
            )
        };
        let error_bp = deploying.error_bp();
        if error_bp > u64::from(thresholds.max_error_bp) {
            return Health::Breach(format!(
                "error rate {:.1}% is above the ceiling of {:.1}% — {}",
                error_bp as f64 / 100.0,
                f64::from(thresholds.max_error_bp) / 100.0,
                evidence()
            ));
        }
        let comparable = known_good.is_some_and(|k| k != build)
            && reference.requests >= thresholds.min_requests.max(1);
        if comparable {
            let allowed =
                reference.error_bp() * u64::from(thresholds.relative_error_pct) / 100 + 100;
            if error_bp > allowed {
                return Health::Breach(format!(
                    "error rate {:.1}% is above {}% of known-good's plus one point ({:.1}%) — {}",
                    error_bp as f64 / 100.0,
                    thresholds.relative_error_pct,
                    allowed as f64 / 100.0,
                    evidence()
                ));
            }
        }
        let p99 = deploying.p99_ms();
        if p99 > thresholds.max_p99_ms {
            return Health::Breach(format!(
                "p99 latency {p99} ms is above the ceiling of {} ms — {}",
                thresholds.max_p99_ms,
                evidence()
            ));
        }
        if comparable && p99 > RELATIVE_P99_FLOOR_MS {
            let allowed = reference.p99_ms() * u64::from(thresholds.relative_p99_pct) / 100;
            if p99 > allowed {
                return Health::Breach(format!(
                    "p99 latency {p99} ms is above {}% of known-good's ({allowed} ms) — {}",
                    thresholds.relative_p99_pct,
                    evidence()
                ));
            }
        }
        if known_good.is_some_and(|k| k != build)
            && paired.requests >= thresholds.min_requests.max(1)
        {
            let margin = u64::from(thresholds.client_error_margin_bp);
            for (what, count, rate, reference_count, reference_rate) in [
                (
                    "404",
                    deploying.not_found,
                    deploying.not_found_bp(),
                    paired.not_found,
                    paired.not_found_bp(),
                ),
                (
                    "4xx",
                    deploying.client_errors,
                    deploying.client_error_bp(),
                    paired.client_errors,
                    paired.client_error_bp(),
                ),
            ] {
                let allowed =
                    reference_rate * u64::from(thresholds.relative_error_pct) / 100 + margin;
                // Above the allowance, and by more than chance: a handful of
                // requests split by key can differ in their mix of absent keys.
                let (sample, reference) = (
                    (count, deploying.requests),
                    (reference_count, paired.requests),
                );
                let significant = deploying.requests >= CLIENT_ERROR_MIN_REQUESTS
                    && count + reference_count >= 5
                    && z_score(sample, reference) >= MIN_Z;
                if rate > allowed && significant {
                    return Health::Breach(format!(
                        "{what} rate {:.1}% is above {}% of known-good's ({:.1}%) plus {:.1} points — {}",
                        rate as f64 / 100.0,
                        thresholds.relative_error_pct,
                        reference_rate as f64 / 100.0,
                        margin as f64 / 100.0,
                        evidence()
                    ));
                }
            }
        }
        Health::Healthy
    }
}

#[cfg(test)]
mod tests;
