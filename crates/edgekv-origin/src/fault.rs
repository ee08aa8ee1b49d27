//! Faults a build can be told to inject — for tests and demos only, never for
//! production traffic.
//!
//! `unauthenticated` answers every call UNAUTHENTICATED (what the 2023 staging build
//! did), `unavailable` answers UNAVAILABLE, `latency=DUR` delays every answer, and
//! `error-rate=P` answers UNAVAILABLE to a share P of calls. `after=DUR` arms the
//! fault only after the build has run that long.

use std::str::FromStr;
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// How long after start the fault is armed.
    pub after: Duration,
}

/// A fault armed at a point in time.
#[derive(Debug, Clone, Copy)]
pub struct ArmedFault {
    fault: Fault,
    armed_at: Instant,
}

impl ArmedFault {
    /// Arms `fault`, counting its delay from now.
    pub fn new(fault: Fault) -> Self {
        ArmedFault {
            fault,
            armed_at: Instant::now() + fault.after,
        }
    }

    /// Whether the fault is armed now.
    fn armed(&self) -> bool {
        Instant::now() >= self.armed_at
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
        for part in parts {
            match part.trim().split_once('=') {
                Some(("after", d)) => after = parse_duration(d)?,
                _ => return Err(format!("unknown fault option {part:?}: only after=DUR")),
            }
        }
        Ok(Fault { kind, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "unauthenticated".parse::<Fault>(),
            Ok(Fault {
                kind: FaultKind::Unauthenticated,
                after: Duration::ZERO
            })
        );
        assert_eq!(
            "latency=250ms;after=2s".parse::<Fault>(),
            Ok(Fault {
                kind: FaultKind::Latency(Duration::from_millis(250)),
                after: Duration::from_secs(2)
            })
        );
        assert!("error-rate=1.5".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
        assert_eq!(parse_duration("3"), Ok(Duration::from_millis(3)));
        assert!(parse_duration("3h").is_err());
    }
}
