//! How long a write waits when it pushes the hot tier over its budget and runs an
//! eviction sweep, at a large tier.
//!
//! A tier of 256 MiB is filled with keys of 100 B up to just under its budget;
//! then every key is read once, so that each carries the CLOCK mark a hit sets
//! (the worst case for a sweep: it must clear marks before it finds anything to
//! evict); then new keys are written until a sweep has run. Each write is timed,
//! and the one that swept is reported with what it evicted. A sweep runs under
//! one shard's write lock at a time, so reads of that shard wait as long as the
//! sweep stays in it: the figure bounds that wait too.
//!
//! `sweep [ROUNDS]` (default 3 rounds, each on a fresh tier) prints one line per
//! round. Build with `cargo build --profile bench -p edgekv -p edgekv-benches`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use edgekv_edge::hot::HotTier;
use edgekv_kv::Record;

const BUDGET: usize = 256 << 20;
const NAMESPACE: &str = "0123456789abcdef0123456789abcdef";

fn key(i: usize) -> String {
    format!("key-{i:010}")
}

/// One round: the sweeping write's time, the entries before it, and the slowest
/// write besides it.
fn round() -> (Duration, usize, u64, Duration) {
    let hot = HotTier::new(BUDGET);
    let value = Bytes::from(vec![b'v'; 100]);
    let record = |i: usize| Record {
        revision: i as u64 + 1,
        ..Record::value(value.clone(), None, None)
    };
    let mut i = 0;
    // Up to just under the budget: no sweep yet.
    while hot.stats().bytes < BUDGET - BUDGET / 100 {
        hot.update(NAMESPACE, key(i).as_bytes(), record(i));
        i += 1;
    }
    for k in 0..i {
        hot.read(NAMESPACE, key(k).as_bytes(), |_| ());
    }
    let entries = hot.stats().entries;
    let mut slowest_other = Duration::ZERO;
    loop {
        let before = hot.stats().evictions;
        let started = Instant::now();
        hot.update(NAMESPACE, key(i).as_bytes(), record(i));
        let took = started.elapsed();
        i += 1;
        let evicted = hot.stats().evictions - before;
        if evicted > 0 {
            return (took, entries, evicted, slowest_other);
        }
        slowest_other = slowest_other.max(took);
    }
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: sweep [ROUNDS]")?,
        None => 3,
    };
    for r in 1..=rounds {
        let (took, entries, evicted, other) = round();
        println!(
            "round {r}: a tier of {} MiB, {entries} entries, all marked: the write that swept took {:.2} ms and evicted {evicted} entries; the slowest other write {:.3} ms",
            BUDGET >> 20,
            took.as_secs_f64() * 1e3,
            other.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
