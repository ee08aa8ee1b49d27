//! How long a write waits when it pushes the hot tier over its budget and runs an
//! eviction sweep, at a large tier.
//!
//! A tier of 256 MiB is filled with keys of 100 B up to just under its budget;
//! then every key is read once, so that each carries the CLOCK mark a hit sets
//! (the worst case for a sweep: it must clear marks before it finds anything to
//! evict); then new keys are written, each timed, from the first write past the
//! budget (which begins the sweep) until the tier is back within 1% of the 90%
//! a sweep stops at. With entries this small the tier never reaches its hard
//! limit (an eighth over budget), past which one write sweeps as far as it
//! must: that case is not timed here. Evicted entries are freed outside the
//! shards' locks, so a read waits for at most one shard's pass, and on the
//! tier's freeing thread while it has room for the batch: the times are the
//! writes' waits, not the CPU the freeing takes on that thread.
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

/// What a round measured, from the first write past the budget to the tier back
/// within 1% of the 90% of it a sweep stops at.
struct Round {
    entries: usize,
    /// Each write's time, and the entries it evicted.
    writes: Vec<(Duration, u64)>,
    evicted: u64,
}

fn round() -> Round {
    let hot = HotTier::new(BUDGET);
    let value = Bytes::from(vec![b'v'; 100]);
    let record = |i: usize| Record {
        revision: i as u64 + 1,
        ..Record::value(value.clone(), None, None)
    };
    let mut i = 0;
    // Up to just under the budget: no sweep yet.
    while hot.stats().bytes + 1_000 <= BUDGET {
        hot.update(NAMESPACE, key(i).as_bytes(), record(i));
        i += 1;
    }
    for k in 0..i {
        hot.read(NAMESPACE, key(k).as_bytes(), |_| ());
    }
    let mut round = Round {
        entries: hot.stats().entries,
        writes: Vec::new(),
        evicted: 0,
    };
    // Timed from the first write past the budget (it begins the sweep) until the
    // tier is back within 1% of 90% of it.
    let finished = BUDGET / 10 * 9 + BUDGET / 100;
    loop {
        let evictions = hot.stats().evictions;
        let started = Instant::now();
        hot.update(NAMESPACE, key(i).as_bytes(), record(i));
        let took = started.elapsed();
        i += 1;
        // The few writes before, up to the budget, swept nothing.
        if round.writes.is_empty() && hot.stats().bytes <= BUDGET && hot.stats().evictions == 0 {
            continue;
        }
        round.writes.push((took, hot.stats().evictions - evictions));
        if hot.stats().evictions > 0 && hot.stats().bytes <= finished {
            break;
        }
    }
    round.evicted = hot.stats().evictions;
    round
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: sweep [ROUNDS]")?,
        None => 3,
    };
    for r in 1..=rounds {
        let round = round();
        let total: Duration = round.writes.iter().map(|w| w.0).sum();
        let slowest = round.writes.iter().map(|w| w.0).max().unwrap_or_default();
        let each: Vec<String> = round
            .writes
            .iter()
            .map(|(took, evicted)| format!("{:.1}/{evicted}", took.as_secs_f64() * 1e3))
            .collect();
        println!(
            "round {r}: a tier of {} MiB, {} entries, all marked: the sweep took {} writes, {:.1} ms in all, the slowest {:.2} ms; it evicted {} entries. Each write, ms/evicted: {}",
            BUDGET >> 20,
            round.entries,
            round.writes.len(),
            total.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
            round.evicted,
            each.join(" "),
        );
    }
    Ok(())
}
