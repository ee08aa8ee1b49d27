//! Freeing what an eviction sweep unlinked, off the write that swept.
//!
//! A sweep that evicts tens of thousands of entries spends most of its time
//! freeing them: each entry's count is read again (long gone from the CPU's
//! caches by then) and handed back to the allocator. A [`Freer`] hands a batch
//! to a thread of its own, and the write goes on. One batch may wait while the
//! thread frees another: the two evicting writes of a sweep that had to clear
//! every mark first come one right after the other (`make bench-sweep`). When
//! one batch is being freed and another waits, the caller frees a third itself:
//! so memory unlinked from the tier but not yet freed is at most what two
//! evicting writes unlinked. Small batches are freed in place: waking the
//! thread would cost more.

use std::sync::OnceLock;
use std::sync::mpsc::{self, SyncSender, TrySendError};

/// Frees batches on a thread of its own, started on the first batch.
pub(super) struct Freer<T: Send + 'static> {
    /// `None` if the thread could not be started: batches are freed in place.
    queue: OnceLock<Option<SyncSender<Vec<T>>>>,
    /// Smaller batches are freed in place.
    min_batch: usize,
}

impl<T: Send + 'static> Freer<T> {
    /// The name of the thread that frees batches.
    pub(super) const THREAD: &'static str = "edgekv-hot-free";

    /// A freer that hands over batches of at least `min_batch` values.
    pub(super) fn new(min_batch: usize) -> Self {
        Freer {
            queue: OnceLock::new(),
            min_batch: min_batch.max(1),
        }
    }

    /// Frees `batch`: on the freeing thread unless it already has a batch
    /// waiting or this one is small, else here. Returns whether the thread took
    /// it.
    pub(super) fn free(&self, batch: Vec<T>) -> bool {
        if batch.len() < self.min_batch {
            return false;
        }
        let Some(queue) = self.queue.get_or_init(Self::start) else {
            return false;
        };
        match queue.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                drop(batch);
                false
            }
        }
    }

    /// Whether the freeing thread was started.
    #[cfg(test)]
    pub(super) fn started(&self) -> bool {
        self.queue.get().is_some_and(Option::is_some)
    }

    fn start() -> Option<SyncSender<Vec<T>>> {
        let (queue, batches) = mpsc::sync_channel::<Vec<T>>(1);
        let started = std::thread::Builder::new()
            .name(Self::THREAD.into())
            // Ends when the tier, and with it the sender, is dropped.
            .spawn(move || batches.into_iter().for_each(drop));
        match started {
            Ok(_) => Some(queue),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the hot tier's freeing thread; evicted entries are freed by the writes that evict them");
                None
            }
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Freer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freer")
            .field("min_batch", &self.min_batch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    const THREAD: &str = Freer::<Witness>::THREAD;

    /// Holds the freeing thread in a witness's drop until the test lets it go.
    struct Gate {
        arrived: Sender<()>,
        open: Arc<Barrier>,
    }

    /// Says on which thread it was dropped. Dropped on the freeing thread, it
    /// first waits at its gate, if it has one.
    struct Witness {
        dropped_on: Sender<Option<String>>,
        gate: Option<Gate>,
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            let name = std::thread::current().name().map(str::to_owned);
            if let Some(gate) = &self.gate
                && name.as_deref() == Some(THREAD)
            {
                gate.arrived.send(()).unwrap();
                gate.open.wait();
            }
            let _ = self.dropped_on.send(name);
        }
    }

    /// A batch of one witness, and where it will say it was freed.
    fn batch(gate: Option<Gate>) -> (Vec<Witness>, Receiver<Option<String>>) {
        let (dropped_on, seen) = channel();
        (vec![Witness { dropped_on, gate }], seen)
    }

    fn freed_on(seen: &Receiver<Option<String>>) -> Option<String> {
        seen.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn a_batch_is_freed_on_the_freeing_thread() {
        let freer = Freer::new(1);
        let (witness, seen) = batch(None);
        assert!(freer.free(witness));
        assert_eq!(freed_on(&seen).as_deref(), Some(THREAD));
    }

    #[test]
    fn one_batch_waits_while_another_is_freed_and_the_next_is_freed_by_the_caller() {
        let freer = Freer::new(1);
        // The thread takes the first batch and is held freeing it, at the gate.
        let (arrived, at_gate) = channel();
        let open = Arc::new(Barrier::new(2));
        let gate = Gate {
            arrived,
            open: open.clone(),
        };
        let (first, first_seen) = batch(Some(gate));
        assert!(freer.free(first));
        at_gate.recv_timeout(Duration::from_secs(10)).unwrap();
        // The second waits for it.
        let (second, second_seen) = batch(None);
        assert!(freer.free(second));
        // The third is refused, and freed by the caller at once.
        let (third, third_seen) = batch(None);
        assert!(!freer.free(third));
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(third_seen.try_recv().unwrap(), here);
        assert!(second_seen.try_recv().is_err(), "the second batch waits");
        open.wait();
        assert_eq!(freed_on(&first_seen).as_deref(), Some(THREAD));
        assert_eq!(freed_on(&second_seen).as_deref(), Some(THREAD));
    }

    #[test]
    fn a_small_batch_is_freed_in_place_and_starts_nothing() {
        let freer = Freer::new(2);
        let (witness, seen) = batch(None);
        assert!(!freer.free(witness));
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(seen.try_recv().unwrap(), here);
        assert!(!Freer::<Witness>::new(1).free(Vec::new()));
        assert!(freer.queue.get().is_none());
    }
}
