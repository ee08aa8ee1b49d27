//! Wall clocks and the hybrid logical clock.
//!
//! Everything that reads the time takes a [`Clock`], so tests drive expirations with
//! a [`ManualClock`] instead of sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Whole seconds since the Unix epoch.
    fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set_ms(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// Bits of an HLC stamp that hold the logical counter; the rest hold milliseconds.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock: stamps that follow wall time in milliseconds but never
/// repeat or go backwards on one node, and that move past every stamp observed.
#[derive(Debug)]
pub struct Hlc {
    clock: Arc<dyn Clock>,
    last: AtomicU64,
}

impl Hlc {
    /// A hybrid logical clock over `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Hlc {
            clock,
            last: AtomicU64::new(0),
        }
    }

    /// Returns a new stamp, greater than every stamp returned or observed before.
    pub fn now(&self) -> u64 {
        let physical = self.clock.now_ms() << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past a stamp seen from another node.
    pub fn observe(&self, stamp: u64) {
        self.last.fetch_max(stamp, Ordering::AcqRel);
    }

    /// The wall-clock milliseconds of a stamp.
    pub fn physical_ms(stamp: u64) -> u64 {
        stamp >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_even_when_the_clock_stands_still() {
        let clock = Arc::new(ManualClock::new(5_000));
        let hlc = Hlc::new(clock.clone());
        let a = hlc.now();
        let b = hlc.now();
        assert!(b > a);
        assert_eq!(Hlc::physical_ms(a), 5_000);
        hlc.observe(b + 100);
        assert!(hlc.now() > b + 100);
        clock.advance(Duration::from_secs(10));
        assert_eq!(Hlc::physical_ms(hlc.now()), 15_000);
    }
}
