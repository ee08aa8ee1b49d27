//! The weighted choice of a build, sticky per affinity key.
//!
//! An affinity key (the `edgekv-version-key` header, else the key, else the
//! namespace) hashes to one of 10000 slots; the entries' weights, in table order,
//! cover the slots. So a key keeps its build while the weights hold, and moving
//! weight from one build to the next moves only the keys in the slots that change
//! hands.

use crate::{RouteEntry, RouteTable, WEIGHT_TOTAL};

/// The slot of an affinity key: FNV-1a, folded to `0..10000`.
pub fn slot(affinity: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in affinity {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix, so keys that differ only in their last byte spread out.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash % u64::from(WEIGHT_TOTAL)) as u32
}

/// Returns the entry that serves an affinity key; `None` only for a table whose
/// weights are all zero (which validation refuses).
pub fn pick<'t>(table: &'t RouteTable, affinity: &[u8]) -> Option<&'t RouteEntry> {
    let slot = slot(affinity);
    let mut upper = 0;
    for entry in &table.entries {
        upper += entry.weight_bp;
        if slot < upper {
            return Some(entry);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn table(weights: &[u32]) -> RouteTable {
        RouteTable {
            version: 1,
            environment: "e".into(),
            tenant: "e".into(),
            issued_at: 0,
            known_good_build: "b0".into(),
            entries: weights
                .iter()
                .enumerate()
                .map(|(i, w)| RouteEntry {
                    build_id: format!("b{i}"),
                    environment: "e".into(),
                    tenant: "e".into(),
                    artifact_digest: String::new(),
                    weight_bp: *w,
                    endpoints: vec!["http://x".into()],
                    data_set: String::new(),
                })
                .collect(),
        }
    }

    /// Splits weights summing to 10000 from arbitrary cut points.
    fn weights() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec(0u32..=10_000, 1..5).prop_map(|mut cuts| {
            cuts.sort_unstable();
            let mut last = 0;
            let mut out: Vec<u32> = cuts
                .iter()
                .map(|c| {
                    let w = c - last;
                    last = *c;
                    w
                })
                .collect();
            out.push(10_000 - last);
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Over many keys the split matches the weights within 1.5 points; every
        /// build with weight gets traffic, none without does.
        #[test]
        fn the_split_follows_the_weights(weights in weights()) {
            let t = table(&weights);
            let keys = 40_000;
            let mut counts: HashMap<String, u32> = HashMap::new();
            for k in 0..keys {
                let entry = pick(&t, format!("key-{k}").as_bytes()).unwrap();
                *counts.entry(entry.build_id.clone()).or_default() += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                let got = counts.get(&format!("b{i}")).copied().unwrap_or(0);
                let share = f64::from(got) / f64::from(keys);
                let want = f64::from(*w) / 10_000.0;
                prop_assert!((share - want).abs() < 0.015, "b{} got {:.4}, weight {:.4}", i, share, want);
                if *w == 0 {
                    prop_assert_eq!(got, 0, "b{} has weight 0 but got traffic", i);
                }
                if *w >= 50 {
                    prop_assert!(got > 0, "b{} has weight {} but no traffic", i, w);
                }
            }
        }

        /// A key keeps its build while the table holds, and a move of weight from
        /// b0 to b1 moves no key between other builds.
        #[test]
        fn affinity_is_stable(key in proptest::collection::vec(any::<u8>(), 0..40), step in 0u32..5000) {
            let before = table(&[5000, 0, 5000]);
            let first = pick(&before, &key).unwrap().build_id.clone();
            prop_assert_eq!(&pick(&before, &key).unwrap().build_id, &first);
            let after = table(&[5000 - step, step, 5000]);
            let moved = pick(&after, &key).unwrap().build_id.clone();
            if first == "b2" {
                prop_assert_eq!(moved, "b2");
            } else {
                prop_assert!(moved == "b0" || moved == "b1");
            }
        }
    }

    #[test]
    fn a_build_with_a_tiny_weight_still_gets_its_share() {
        let t = table(&[9_990, 10]);
        let hits = (0..100_000)
            .filter(|k| pick(&t, format!("k{k}").as_bytes()).unwrap().build_id == "b1")
            .count();
        assert!(
            (50..=150).contains(&hits),
            "0.1% weight got {hits} of 100000"
        );
    }
}
