//! List cursors (`edgekv_kv::cursor`) and the pages they continue.
//!
//! Any text as a cursor: decoding never panics, what decodes is a non-empty key
//! that re-encodes to a cursor decoding to the same key, and a listing that starts
//! after it returns only keys after it. Any key round-trips through a cursor.
//!
//! The same input, read as a set of keys (some deleted or expired) in the
//! in-memory store, a prefix and a page size: paging through with the cursor each
//! page hands out returns every live key under the prefix exactly once, in order.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use edgekv_kv::{Mode, Namespace, Record, cursor};
use edgekv_store::{ListQuery, MemoryStore, Store, Write, keys};
use libfuzzer_sys::fuzz_target;

const NS: &str = "0123456789abcdef0123456789abcdef";
/// "Now" for expirations, in Unix seconds.
const NOW_S: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    text_cursors(data);
    key_round_trip(data);
    let mut u = Unstructured::new(data);
    if let Ok(listing) = Listing::arbitrary(&mut u) {
        listing.check();
    }
});

/// The input as a cursor a client sent back.
fn text_cursors(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = cursor::decode(text) else {
        return;
    };
    assert!(!key.is_empty(), "a cursor decoded to an empty key");
    assert_eq!(cursor::decode(&cursor::encode(&key)).as_ref(), Ok(&key));
    // The first stored key a page after it may return lies after it.
    let start = keys::list_start(NS, b"", Some(&key));
    assert!(start > keys::data_key(NS, &key));
}

/// The input as a key: its cursor decodes back to it.
fn key_round_trip(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let cursor = cursor::encode(data);
    assert!(
        cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a cursor is not URL-safe: {cursor:?}"
    );
    assert_eq!(cursor::decode(&cursor).as_deref(), Ok(data));
}

/// One key of the store.
#[derive(Arbitrary, Debug)]
struct AnyKey {
    key: Vec<u8>,
    tombstone: bool,
    /// Seconds from now (negative: expired).
    expires_in: Option<i16>,
}

/// A store's keys and a paged listing of them.
#[derive(Arbitrary, Debug)]
struct Listing {
    keys: Vec<AnyKey>,
    prefix: Vec<u8>,
    limit: u8,
    /// A cursor text to start from instead of the first page.
    start: Option<String>,
}

impl Listing {
    fn check(self) {
        let store = MemoryStore::new();
        store
            .create_namespace(&Namespace {
                id: NS.into(),
                title: "fuzz".into(),
                account: "acct".into(),
                mode: Mode::Full,
            })
            .unwrap();
        let mut writes = Vec::new();
        let mut live = BTreeSet::new();
        for k in self.keys.iter().take(64) {
            if k.key.is_empty() {
                continue;
            }
            let expiration = k
                .expires_in
                .map(|s| NOW_S.saturating_add_signed(i64::from(s)));
            let record = if k.tombstone {
                Record::tombstone(expiration)
            } else {
                Record::value(Bytes::from_static(b"v"), None, expiration)
            };
            // The last write of a key wins.
            if record.is_live(NOW_S) {
                live.insert(k.key.clone());
            } else {
                live.remove(&k.key);
            }
            writes.push(Write {
                namespace: NS.into(),
                key: k.key.clone().into(),
                record,
            });
        }
        store.write(writes).unwrap();

        let start_after = match &self.start {
            Some(text) => match cursor::decode(text) {
                Ok(key) => Some(key),
                // A foreign cursor is refused before any listing.
                Err(_) => return,
            },
            None => None,
        };
        let expected: Vec<&Vec<u8>> = live
            .iter()
            .filter(|k| k.starts_with(&self.prefix))
            .filter(|k| start_after.as_ref().is_none_or(|after| *k > after))
            .collect();

        let limit = usize::from(self.limit % 8) + 1;
        let mut query = ListQuery {
            prefix: self.prefix.clone(),
            start_after,
            limit,
        };
        let mut listed: Vec<Vec<u8>> = Vec::new();
        // Each page but the last holds `limit` keys: this many pages suffice.
        for _ in 0..=expected.len() {
            let page = store.list(NS, &query, NOW_S).unwrap();
            assert!(page.entries.len() <= limit, "a page over its limit");
            for (key, record) in &page.entries {
                assert!(record.is_live(NOW_S), "a dead key listed: {key:?}");
                assert!(key.starts_with(&self.prefix), "a key outside the prefix");
                if let Some(after) = &query.start_after {
                    assert!(
                        key.as_ref() > after.as_slice(),
                        "a key at or before the cursor"
                    );
                }
                if let Some(previous) = listed.last() {
                    assert!(
                        key.as_ref() > previous.as_slice(),
                        "keys out of order or repeated"
                    );
                }
                listed.push(key.to_vec());
            }
            let Some((last, _)) = page.entries.last().filter(|_| page.more) else {
                break;
            };
            // As a client does: the cursor of the page's last key, sent back as text.
            let next = cursor::encode(last);
            query.start_after = Some(cursor::decode(&next).unwrap());
        }
        let expected: Vec<Vec<u8>> = expected.into_iter().cloned().collect();
        assert_eq!(
            listed, expected,
            "the pages did not list every live key once"
        );
    }
}
