//! Namespace ids the edge does not know: what bounds the origin calls they cost.
//!
//! A request may name a namespace created at another edge a moment ago, before
//! the change feed brought it here, so an unknown id makes the edge ask the
//! origin for its namespace list. Unbounded, a flood of random ids would make one
//! origin call each (and, behind one lock, make every request wait for all of
//! them). [`UnknownNamespaces`] bounds it:
//!
//! - **One refresh per account per interval** (`namespace_refresh_interval_ms`).
//!   Requests for unknown ids of one account share the refresh in flight (a watch
//!   channel per account, the same pattern as a read in flight); a request whose
//!   account refreshed less than the interval ago answers from that refresh at
//!   once, without another call. This gate is what bounds origin calls.
//! - **A negative cache**: an id found unknown is remembered as unknown for the
//!   interval, so a repeated id answers 404 without even looking at the gate. It
//!   holds at most `unknown_namespaces_max` ids (default 10,000): when full,
//!   expired ids are dropped, and if none had expired it is cleared whole.
//!   Clearing costs nothing but gate look-ups: the gate still stands, so no extra
//!   origin call follows.
//! - **No lock across a wait.** A refresh runs in a task of its own; the maps here
//!   are locked only to look up or insert, never while the origin answers. A
//!   request of another account, or for a namespace the edge knows (answered
//!   from the namespace map before any of this), never waits behind a refresh.
//!
//! The interval is read from the edge's [`Clock`](edgekv_kv::Clock), so tests
//! move it with a manual clock. A clock that steps back never closes the gate:
//! a refresh or an entry from the future counts as expired.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use crate::Error;

/// What one refresh of an account's namespaces found; shared by every request
/// that waited for it, and by those that come within the interval after.
#[derive(Debug, Clone)]
pub(crate) enum Refreshed {
    /// The origin listed its namespaces: the edge now holds every cache-mode
    /// namespace of the account that was listed; these full-mode ones exist but
    /// are still loading here. An id in neither does not exist.
    Listed(Arc<HashSet<String>>),
    /// The origin could not list them, but the edge's own view is fresh enough to
    /// stand: an id it does not hold is answered 404, though not remembered.
    Unlisted,
    /// The edge cannot tell whether a namespace exists (a 503 for the client).
    Unavailable(Arc<str>),
    /// Keeping what the origin listed failed (a 500; the cause is logged).
    Failed(Arc<str>),
}

impl Refreshed {
    /// Whether `id`, still not held after this refresh, is known not to exist.
    pub(crate) fn settles_unknown(&self, id: &str) -> bool {
        matches!(self, Refreshed::Listed(loading) if !loading.contains(id))
    }

    /// The answer to a request for `id`, which the edge still does not hold.
    pub(crate) fn answer(&self, id: &str) -> Error {
        match self {
            Refreshed::Listed(loading) if loading.contains(id) => {
                Error::Unavailable("this full namespace is still loading at this edge".into())
            }
            Refreshed::Listed(_) | Refreshed::Unlisted => Error::NamespaceNotFound,
            Refreshed::Unavailable(why) => Error::Unavailable(why.to_string()),
            Refreshed::Failed(why) => Error::Internal(why.to_string()),
        }
    }
}

/// An account's last refresh: when it started, and its outcome (`None` while in
/// flight).
#[derive(Debug)]
struct AccountRefresh {
    started_ms: u64,
    outcome: watch::Receiver<Option<Refreshed>>,
}

impl AccountRefresh {
    /// The refresh to wait for instead of starting one: this one, while it is in
    /// flight or less than `interval_ms` old.
    fn joinable(
        &self,
        now_ms: u64,
        interval_ms: u64,
    ) -> Option<watch::Receiver<Option<Refreshed>>> {
        let done = self.outcome.borrow().is_some();
        if !done {
            // In flight, unless its task ended without an answer.
            return (!self.outcome.is_closed()).then(|| self.outcome.clone());
        }
        within(self.started_ms, now_ms, interval_ms).then(|| self.outcome.clone())
    }
}

/// Whether `now_ms` is less than `interval_ms` after `since_ms` (and not before it).
fn within(since_ms: u64, now_ms: u64, interval_ms: u64) -> bool {
    now_ms >= since_ms && now_ms - since_ms < interval_ms
}

/// How a request for an unknown id of an account gets its refresh.
#[derive(Debug)]
pub(crate) enum Join {
    /// No refresh is in flight or recent: the caller starts one and sends its
    /// outcome here (the others wait on it meanwhile).
    Lead(watch::Sender<Option<Refreshed>>),
    /// Wait for this refresh (in flight, or done within the interval).
    Follow(watch::Receiver<Option<Refreshed>>),
}

/// The per-account refresh gate and the negative cache of namespace ids.
#[derive(Debug)]
pub(crate) struct UnknownNamespaces {
    interval_ms: u64,
    /// The most ids remembered as unknown, and the most accounts whose last
    /// refresh is remembered. Only accounts with a valid token get to the gate (the
    /// token is checked first), so the second is reached only by that many
    /// accounts refreshing within one interval.
    max: usize,
    /// Namespace id → (account, clock ms when it was found unknown).
    unknown: DashMap<Box<str>, (Box<str>, u64)>,
    /// Account → its last refresh.
    accounts: DashMap<Box<str>, AccountRefresh>,
    /// Refreshes started: each is one namespace listing asked of the origin.
    refreshes: AtomicU64,
}

impl UnknownNamespaces {
    /// A gate that lets each account refresh once per `interval_ms`, remembering
    /// at most `max` unknown ids and `max` accounts.
    pub(crate) fn new(interval_ms: u64, max: usize) -> Self {
        UnknownNamespaces {
            interval_ms: interval_ms.max(1),
            max: max.max(1),
            unknown: DashMap::new(),
            accounts: DashMap::new(),
            refreshes: AtomicU64::new(0),
        }
    }

    /// Refreshes started since the edge started.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Whether `id` of `account` was found unknown less than the interval ago.
    pub(crate) fn remembers(&self, account: &str, id: &str, now_ms: u64) -> bool {
        self.unknown.get(id).is_some_and(|entry| {
            let (owner, since_ms) = entry.value();
            &**owner == account && within(*since_ms, now_ms, self.interval_ms)
        })
    }

    /// Remembers `id` of `account` as unknown from `now_ms`, for the interval.
    pub(crate) fn remember(&self, account: &str, id: &str, now_ms: u64) {
        if self.unknown.len() >= self.max && !self.unknown.contains_key(id) {
            let interval_ms = self.interval_ms;
            self.unknown
                .retain(|_, (_, since_ms)| within(*since_ms, now_ms, interval_ms));
            if self.unknown.len() >= self.max {
                // Every entry is recent: a flood of distinct ids. Start over; the
                // gate still holds each account to one refresh per interval.
                self.unknown.clear();
            }
        }
        self.unknown.insert(id.into(), (account.into(), now_ms));
    }

    /// Forgets `id` as unknown: it exists now (created here, or on the feed).
    pub(crate) fn forget(&self, id: &str) {
        self.unknown.remove(id);
    }

    /// The refresh a request for an unknown id of `account` waits for: the one in
    /// flight or done within the interval, or a new one the caller must run.
    /// Takes no lock the caller could hold across a wait. A 503 when `max`
    /// accounts all refreshed within the interval.
    pub(crate) fn join(&self, account: &str, now_ms: u64) -> Result<Join, Error> {
        // The common case under a flood: a look-up, no allocation, no write lock.
        if let Some(refresh) = self.accounts.get(account)
            && let Some(outcome) = refresh.joinable(now_ms, self.interval_ms)
        {
            return Ok(Join::Follow(outcome));
        }
        if self.accounts.len() >= self.max && !self.accounts.contains_key(account) {
            let interval_ms = self.interval_ms;
            self.accounts
                .retain(|_, refresh| refresh.joinable(now_ms, interval_ms).is_some());
            if self.accounts.len() >= self.max {
                return Err(Error::Unavailable(
                    "too many accounts are looking up unknown namespaces at once; retry shortly"
                        .into(),
                ));
            }
        }
        // Under the entry's shard lock: two requests that both missed above agree
        // on one leader.
        let (lead, outcome) = watch::channel(None);
        let refresh = AccountRefresh {
            started_ms: now_ms,
            outcome,
        };
        match self.accounts.entry(account.into()) {
            Entry::Occupied(mut held) => {
                if let Some(outcome) = held.get().joinable(now_ms, self.interval_ms) {
                    // Another request started one between the look-up above and here.
                    return Ok(Join::Follow(outcome));
                }
                held.insert(refresh);
            }
            Entry::Vacant(slot) => {
                slot.insert(refresh);
            }
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(Join::Lead(lead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const MAX: usize = 100;

    fn lead(join: Join) -> watch::Sender<Option<Refreshed>> {
        match join {
            Join::Lead(lead) => lead,
            Join::Follow(_) => panic!("expected to lead a refresh"),
        }
    }

    fn follow(join: Join) -> watch::Receiver<Option<Refreshed>> {
        match join {
            Join::Follow(outcome) => outcome,
            Join::Lead(_) => panic!("expected to follow a refresh"),
        }
    }

    fn listed() -> Option<Refreshed> {
        Some(Refreshed::Listed(Arc::default()))
    }

    #[test]
    fn one_refresh_per_account_per_interval() {
        let gate = UnknownNamespaces::new(1000, MAX);
        let first = lead(gate.join("a", T0).unwrap());
        // While it is in flight, the account's requests wait for it.
        let waiting = follow(gate.join("a", T0 + 5).unwrap());
        assert!(waiting.borrow().is_none());
        // Another account does not wait behind it.
        let _other = lead(gate.join("b", T0 + 5).unwrap());
        first.send_replace(listed());
        // Done: within the interval its outcome is the answer, past it a new one.
        let recent = follow(gate.join("a", T0 + 999).unwrap());
        assert!(recent.borrow().is_some());
        let _next = lead(gate.join("a", T0 + 1000).unwrap());
        assert_eq!(gate.refreshes(), 3);
    }

    #[test]
    fn a_refresh_that_ended_without_an_answer_is_not_waited_for() {
        let gate = UnknownNamespaces::new(1000, MAX);
        drop(lead(gate.join("a", T0).unwrap()));
        let _again = lead(gate.join("a", T0 + 1).unwrap());
    }

    #[test]
    fn a_clock_stepped_back_does_not_close_the_gate() {
        let gate = UnknownNamespaces::new(1000, MAX);
        lead(gate.join("a", T0).unwrap()).send_replace(listed());
        let _again = lead(gate.join("a", T0 - 60_000).unwrap());
        gate.remember("a", "x", T0);
        assert!(!gate.remembers("a", "x", T0 - 1));
    }

    #[test]
    fn the_accounts_remembered_are_bounded() {
        let gate = UnknownNamespaces::new(1000, MAX);
        let senders: Vec<_> = (0..MAX)
            .map(|i| lead(gate.join(&format!("acct{i}"), T0).unwrap()))
            .collect();
        // All in flight: one more account is turned away, never remembered past
        // the bound.
        assert!(matches!(
            gate.join("one-more", T0),
            Err(Error::Unavailable(_))
        ));
        // Done and older than the interval, they make room.
        for sender in &senders {
            sender.send_replace(listed());
        }
        let _next = lead(gate.join("one-more", T0 + 1000).unwrap());
        assert_eq!(gate.accounts.len(), 1);
    }

    #[test]
    fn unknown_ids_are_remembered_for_the_interval_per_account() {
        let gate = UnknownNamespaces::new(1000, MAX);
        gate.remember("a", "x", T0);
        assert!(gate.remembers("a", "x", T0 + 999));
        assert!(!gate.remembers("b", "x", T0 + 1), "another account's id");
        assert!(!gate.remembers("a", "x", T0 + 1000), "expired");
        gate.forget("x");
        assert!(!gate.remembers("a", "x", T0 + 1));
    }

    #[test]
    fn the_negative_cache_is_bounded() {
        let gate = UnknownNamespaces::new(1000, MAX);
        // Full of expired ids: those go, the recent ones stay.
        for i in 0..MAX - 1 {
            gate.remember("a", &format!("old{i}"), T0);
        }
        gate.remember("a", "recent", T0 + 1500);
        gate.remember("a", "new", T0 + 1600);
        assert_eq!(gate.unknown.len(), 2);
        assert!(gate.remembers("a", "recent", T0 + 1600));
        // Full of recent ids: cleared whole, never past the bound.
        for i in 0..MAX * 2 {
            gate.remember("a", &format!("flood{i}"), T0 + 2000);
            assert!(gate.unknown.len() <= MAX);
        }
    }

    #[test]
    fn outcomes_answer_as_the_old_lookup_did() {
        let loading = Refreshed::Listed(Arc::new(HashSet::from(["full".to_string()])));
        assert!(matches!(loading.answer("full"), Error::Unavailable(_)));
        assert!(!loading.settles_unknown("full"));
        assert!(matches!(loading.answer("gone"), Error::NamespaceNotFound));
        assert!(loading.settles_unknown("gone"));
        assert!(matches!(
            Refreshed::Unlisted.answer("x"),
            Error::NamespaceNotFound
        ));
        assert!(!Refreshed::Unlisted.settles_unknown("x"));
        let unavailable = Refreshed::Unavailable("origin down".into());
        assert!(matches!(unavailable.answer("x"), Error::Unavailable(_)));
        assert!(!unavailable.settles_unknown("x"));
    }
}
