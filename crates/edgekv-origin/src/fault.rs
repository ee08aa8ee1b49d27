//! Faults a build can be told to inject — for tests and demos only, never for
//! production traffic.
//!
//! `unauthenticated` answers every call UNAUTHENTICATED (what the 2023 staging build
//! did), `unavailable` answers UNAVAILABLE, `latency=DUR` delays every answer, and
//! `error-rate=P` answers UNAVAILABLE to a share P of calls. `after=DUR` arms the
//! fault only after the build has run that long; `when=PATH` only once a file
//! exists at PATH (a switch a test or a demo flips at the moment it chooses).
//! Once armed, a fault stays armed.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tonic::Status;

/// The kind of fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Every call answers UNAUTHENTICATED.
    Unauthenticated,
    /// Every call answers UNAVAILABLE.
    Unavailable,
    /// Every call is delayed.
    Latency(Duration),
    /// A share of calls answers UNAVAILABLE.
    ErrorRate(f64),
}

/// A fault and when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// How long after start the fault is armed.
    pub after: Duration,
    /// The fault is armed only once a file exists here.
    pub when: Option<PathBuf>,
}

/// A fault armed at a point in time (and, optionally, by a file).
#[derive(Debug, Clone)]
pub struct ArmedFault {
    fault: Fault,
    armed_at: Instant,
    tripped: Arc<AtomicBool>,
}

impl ArmedFault {
    /// Arms `fault`, counting its delay from now.
    pub fn new(fault: Fault) -> Self {
        ArmedFault {
            armed_at: Instant::now() + fault.after,
            fault,
            tripped: Arc::default(),
        }
    }

    /// Whether the fault is armed now.
    fn armed(&self) -> bool {
        if self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        let armed = Instant::now() >= self.armed_at
            && self.fault.when.as_ref().is_none_or(|path| path.exists());
        if armed {
            tracing::warn!(fault = ?self.fault.kind, "injected fault armed (test only)");
            self.tripped.store(true, Ordering::Relaxed);
        }
        armed
    }

    /// Delays an answer that is ready, for a `latency` fault: the build did its work
    /// at once and answers late, as a slow build does.
    pub async fn delay(&self) {
        if let FaultKind::Latency(delay) = self.fault.kind
            && self.armed()
        {
            tokio::time::sleep(delay).await;
        }
    }

    /// Applies the fault to one call before it is served: an error to answer, or
    /// nothing (a `latency` fault delays the answer instead, see [`Self::delay`]).
    pub async fn apply(&self, build_id: &str) -> Result<(), Status> {
        if !self.armed() {
            return Ok(());
        }
        match self.fault.kind {
            FaultKind::Unauthenticated => Err(Status::unauthenticated(format!(
                "build {build_id}: injected fault: unauthenticated"
            ))),
            FaultKind::Unavailable => Err(Status::unavailable(format!(
                "build {build_id}: injected fault: unavailable"
            ))),
            FaultKind::Latency(_) => Ok(()),
            FaultKind::ErrorRate(share) => {
                if rand::thread_rng().gen_bool(share) {
                    Err(Status::unavailable(format!(
                        "build {build_id}: injected fault: error-rate"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Parses a duration like `250ms`, `2s`, `1m` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: the unit must be ms, s or m")),
    }
}

impl FromStr for Fault {
    type Err = String;

    /// Parses `KIND[;after=DUR]`, e.g. `unauthenticated;after=5s` or `latency=200ms`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(';');
        let kind = parts.next().unwrap_or_default().trim();
        let kind = match kind.split_once('=') {
            None if kind == "unauthenticated" => FaultKind::Unauthenticated,
            None if kind == "unavailable" => FaultKind::Unavailable,
            Some(("latency", d)) => FaultKind::Latency(parse_duration(d)?),
            Some(("error-rate", p)) => {
                let share: f64 = p
                    .parse()
                    .map_err(|_| format!("error-rate {p:?} is not a number"))?;
                if !(0.0..=1.0).contains(&share) {
                    return Err(format!("error-rate {share} must be between 0 and 1"));
                }
                FaultKind::ErrorRate(share)
            }
            _ => {
                return Err(format!(
                    "unknown fault {kind:?}: use unauthenticated, unavailable, latency=DUR or error-rate=P"
                ));
            }
        };
        let mut after = Duration::ZERO;
        let mut when = None;
        for part in parts {
            match part.trim().split_once('=') {
                Some(("after", d)) => after = parse_duration(d)?,
                Some(("when", path)) if !path.is_empty() => when = Some(PathBuf::from(path)),
                _ => {
                    return Err(format!(
                        "unknown fault option {part:?}: use after=DUR or when=PATH"
                    ));
                }
            }
        }
        Ok(Fault { kind, after, when })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_switch_arms_a_fault_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let switch = dir.path().join("break");
        let fault = ArmedFault::new(
            format!("unauthenticated;when={}", switch.display())
                .parse()
                .unwrap(),
        );
        assert!(
            fault.apply("v2").await.is_ok(),
            "not armed before the file exists"
        );
        std::fs::write(&switch, b"").unwrap();
        let refused = fault.apply("v2").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        std::fs::remove_file(&switch).unwrap();
        assert!(fault.apply("v2").await.is_err(), "armed for good");
    }

    #[test]
    fn parses() {
        assert_eq!(
            "unauthenticated".parse::<Fault>(),
            Ok(Fault {
                kind: FaultKind::Unauthenticated,
                after: Duration::ZERO,
                when: None,
            })
        );
        assert_eq!(
            "latency=250ms;after=2s".parse::<Fault>(),
            Ok(Fault {
                kind: FaultKind::Latency(Duration::from_millis(250)),
                after: Duration::from_secs(2),
                when: None,
            })
        );
        assert_eq!(
            "unavailable;when=/tmp/switch"
                .parse::<Fault>()
                .map(|f| f.when),
            Ok(Some(PathBuf::from("/tmp/switch")))
        );
        assert!("unavailable;when=".parse::<Fault>().is_err());
        assert!("error-rate=1.5".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
        assert_eq!(parse_duration("3"), Ok(Duration::from_millis(3)));
        assert!(parse_duration("3h").is_err());
    }
}
