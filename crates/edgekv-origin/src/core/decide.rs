//! The decision of a group of client writes, pure: given what the store held when
//! the group took the store's write order, which commits to make and what each
//! write's caller is told. IO (reading the view, committing) is the caller's.
//!
//! Writes of a group are decided in arrival order, each seeing the ones before it:
//! a key written twice in one group is ordered as if the two had been committed
//! one after the other, and a write id seen twice is a duplicate the second time.

use std::collections::HashMap;

use bytes::Bytes;
use edgekv_kv::Record;
use edgekv_kv::ordering::{self, Decision};
use edgekv_store::{Commit, ReadSet, ReadView, Write, WrittenId};

use super::WriteRequest;
use crate::Error;

/// A write waiting for its group, with its id and digest worked out.
#[derive(Debug)]
pub(crate) struct Pending {
    pub request: WriteRequest,
    pub write_id: Option<Vec<u8>>,
    pub digest: Option<[u8; 32]>,
}

/// Where a revision comes from: known, or the revision the group's `n`th commit
/// will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Known(u64),
    Commit(usize),
}

impl At {
    pub fn resolve(self, revisions: &[u64]) -> u64 {
        match self {
            At::Known(revision) => revision,
            At::Commit(n) => revisions.get(n).copied().unwrap_or_default(),
        }
    }
}

/// What one write of the group gets.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Refused; nothing of it committed.
    Refused(Error),
    /// Committed (`duplicate`: committed before, not again).
    Done {
        at: At,
        duplicate: bool,
        superseded: bool,
        /// The records held for its keys afterwards, with where each one's
        /// revision comes from.
        records: Vec<(Record, At)>,
    },
}

/// What a group reads: every key, write id and namespace of its writes.
pub(crate) fn reads(group: &[Pending]) -> ReadSet {
    let mut reads = ReadSet::default();
    for pending in group {
        let namespace = &pending.request.namespace;
        if !reads.namespaces.contains(namespace) {
            reads.namespaces.push(namespace.clone());
        }
        reads
            .keys
            .extend((pending.request.mutations.iter()).map(|m| (namespace.clone(), m.key.clone())));
        reads.write_ids.extend(pending.write_id.clone());
    }
    reads
}

/// The clock a write is decided against, and how long deletes are remembered:
/// the tombstones' time, which is also the replay horizon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Horizon {
    /// The origin's clock, Unix ms.
    pub now_ms: u64,
    /// How long a tombstone is kept, in seconds.
    pub tombstone_ttl_s: u64,
}

impl Horizon {
    /// When a delete made now may be purged.
    pub fn tombstone_until(&self) -> u64 {
        (self.now_ms / 1000).saturating_add(self.tombstone_ttl_s)
    }

    /// When a write id committed now may be forgotten: past the last replay of
    /// it that [`Horizon::check_replay`] lets through. A replay's stamp is at
    /// most the tombstones' time old, and a stamp runs at most
    /// [`ordering::MAX_CLOCK_SKEW_MS`] ahead of this clock; one second more for
    /// the rounding to seconds.
    pub fn write_id_until(&self) -> u64 {
        let skew_s = ordering::MAX_CLOCK_SKEW_MS.div_ceil(1000);
        self.tombstone_until()
            .saturating_add(skew_s)
            .saturating_add(1)
    }

    /// Refuses a replay stamped longer ago than the tombstones are kept: its
    /// key's tombstone may be gone (a delete would come back), and so may its id.
    pub fn check_replay(&self, hlc: u64) -> Result<(), Error> {
        let age_ms = self.now_ms.saturating_sub(edgekv_kv::Hlc::physical_ms(hlc));
        if age_ms > self.tombstone_ttl_s.saturating_mul(1000) {
            return Err(Error::ReplayTooOld {
                age_s: age_ms / 1000,
                horizon_s: self.tombstone_ttl_s,
            });
        }
        Ok(())
    }
}

/// Decides a group against `view`: the commits to make, in order, and one verdict
/// per write. A replay is checked against the horizon again (it was when it was
/// queued): it may have waited for its group past the horizon, and its id with it.
pub(crate) fn group(
    group: &[Pending],
    view: ReadView,
    horizon: Horizon,
) -> (Vec<Commit>, Vec<Verdict>) {
    let tombstone_until = horizon.tombstone_until();
    let ReadView {
        records: held,
        written,
        namespaces,
    } = view;
    // What each key holds as the group goes, and where its revision comes from.
    let mut records: HashMap<(String, Bytes), (Record, At)> = held
        .into_iter()
        .map(|(key, record)| {
            let at = At::Known(record.revision);
            (key, (record, at))
        })
        .collect();
    let mut ids: HashMap<Vec<u8>, (Option<[u8; 32]>, At)> = written
        .into_iter()
        .map(|(id, WrittenId { revision, digest })| (id, (digest, At::Known(revision))))
        .collect();
    let id_until = horizon.write_id_until();
    let mut commits = Vec::new();
    let mut verdicts = Vec::with_capacity(group.len());
    for pending in group {
        let request = &pending.request;
        if !namespaces.contains_key(&request.namespace) {
            verdicts.push(Verdict::Refused(Error::NamespaceNotFound(
                request.namespace.clone(),
            )));
            continue;
        }
        let now_held = |records: &HashMap<(String, Bytes), (Record, At)>| -> Vec<(Record, At)> {
            (request.mutations.iter())
                .map(|m| {
                    records
                        .get(&(request.namespace.clone(), m.key.clone()))
                        .cloned()
                        .unwrap_or_else(|| (Record::tombstone(None), At::Known(0)))
                })
                .collect()
        };
        if let Some(id) = &pending.write_id
            && let Some((held_digest, at)) = ids.get(id)
        {
            // The same id with other content is a node reusing ids (a data dir
            // lost without a new incarnation): never a duplicate's success.
            if let (Some(held), Some(now)) = (held_digest, pending.digest)
                && *held != now
            {
                let revision = match at {
                    At::Known(revision) => *revision,
                    At::Commit(_) => 0,
                };
                tracing::error!(
                    write_id = %String::from_utf8_lossy(id),
                    revision,
                    "A NODE REUSED A WRITE ID for another write: refused, not applied"
                );
                verdicts.push(Verdict::Refused(Error::WriteIdReused {
                    write_id: String::from_utf8_lossy(id).into_owned(),
                    revision,
                }));
                continue;
            }
            verdicts.push(Verdict::Done {
                at: *at,
                duplicate: true,
                superseded: false,
                records: now_held(&records),
            });
            continue;
        }
        // A known id answered above; an unknown one past the horizon may be an id
        // forgotten while the replay waited.
        if request.replay
            && let Err(err) = horizon.check_replay(request.hlc)
        {
            verdicts.push(Verdict::Refused(err));
            continue;
        }
        let at = At::Commit(commits.len());
        let mut writes = Vec::with_capacity(request.mutations.len());
        let mut superseded = false;
        for m in &request.mutations {
            let key = (request.namespace.clone(), m.key.clone());
            let current = records.get(&key).map(|(r, _)| r.hlc);
            let hlc = match ordering::decide(request.hlc, current, request.replay) {
                Decision::Apply(hlc) => hlc,
                Decision::Superseded => {
                    superseded = true;
                    continue;
                }
            };
            let mut record = match &m.put {
                Some((value, metadata, expiration)) => {
                    Record::value(value.clone(), metadata.clone(), *expiration)
                }
                None => Record::tombstone(Some(tombstone_until)),
            };
            record.hlc = hlc;
            records.insert(key, (record.clone(), at));
            writes.push(Write {
                namespace: request.namespace.clone(),
                key: m.key.clone(),
                record,
            });
        }
        if let Some(id) = &pending.write_id {
            ids.insert(id.clone(), (pending.digest, at));
        }
        commits.push(Commit {
            writes,
            write_id: pending.write_id.clone(),
            write_id_until_s: id_until,
            write_digest: pending.digest,
            ..Commit::default()
        });
        verdicts.push(Verdict::Done {
            at,
            duplicate: false,
            superseded,
            records: now_held(&records),
        });
    }
    (commits, verdicts)
}
