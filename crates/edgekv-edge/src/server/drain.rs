//! Graceful shutdown of connections for one atomic load per poll.
//!
//! A connection's task is polled on every request. hyper-util's
//! `GracefulShutdown` polls a watch channel's `changed()` future each time
//! (a `Notify` poll); on the hot path, which answers in a few microseconds,
//! that was a visible share of the work. Here a connection loads one flag per
//! poll and registers its waker only when the waker changes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

/// Watches connections; [`Drain::shutdown`] tells them all to finish. Clones
/// share what they watch.
#[derive(Debug, Default, Clone)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// The wakers of connections not yet told, by connection.
    wakers: Mutex<HashMap<u64, Waker>>,
    /// Connections not yet finished.
    live: AtomicUsize,
    /// Notified when the last connection finishes.
    drained: Notify,
}

impl Drain {
    /// Wraps a connection so that [`Drain::shutdown`] reaches it.
    pub(crate) fn watch<C: GracefulConnection>(&self, conn: C) -> Watched<C> {
        self.shared.live.fetch_add(1, Ordering::AcqRel);
        Watched {
            conn: Some(Box::pin(conn)),
            shared: self.shared.clone(),
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            registered: None,
            told: false,
        }
    }

    /// Tells every connection to finish the requests it has begun and close, then
    /// waits until all have (idle connections close at once).
    pub(crate) async fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, waker)| waker)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.shared.live.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// A connection watched by a [`Drain`].
pub(crate) struct Watched<C> {
    /// Taken in `drop`, so the connection (its socket, its service's hold on the
    /// edge) is gone before the drain hears that it finished.
    conn: Option<Pin<Box<C>>>,
    shared: Arc<Shared>,
    id: u64,
    registered: Option<Waker>,
    told: bool,
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            unreachable!("the connection is taken only in drop");
        };
        if !this.told {
            // Register before reading the flag: a shutdown that set the flag after
            // this read finds the waker (it takes the lock after setting it).
            if !this
                .registered
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                this.shared
                    .wakers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(this.id, cx.waker().clone());
                this.registered = Some(cx.waker().clone());
            }
            if this.shared.stopping.load(Ordering::Acquire) {
                this.told = true;
                conn.as_mut().graceful_shutdown();
            }
        }
        conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        drop(self.conn.take());
        if self.registered.is_some() {
            self.shared
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.drained.notify_waiters();
        }
    }
}
