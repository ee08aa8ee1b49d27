//! Route table checks (`edgekv_routing::validate`) and the weighted choice
//! (`edgekv_routing::pick`).
//!
//! The input is a table: its JSON text when it parses as one (the form an edge
//! keeps on disk and reads at start), else a table built from the bytes with
//! `arbitrary` (a mirror of `RouteTable` below, converted; the library derives no
//! `Arbitrary`). For every table:
//! - `validate` never panics and agrees with an independent statement of its rules;
//! - a table that validates picks, for every affinity key, an entry of its own
//!   with weight, the same one every time;
//! - a valid table survives JSON, is acknowledged again under its own version and
//!   content hash, refused under its own version with another hash, and refused
//!   when older than the held version.
#![no_main]

use std::collections::HashSet;

use arbitrary::{Arbitrary, Unstructured};
use edgekv_routing::{Nack, RouteEntry, RouteTable, Verdict, WEIGHT_TOTAL, pick, slot, validate};
use libfuzzer_sys::fuzz_target;

/// The edge's environment and tenant.
const ENVIRONMENT: &str = "production";
const TENANT: &str = "acme";

fuzz_target!(|data: &[u8]| {
    let (table, affinities) = match serde_json::from_slice::<RouteTable>(data) {
        Ok(table) => (
            table,
            vec![b"".to_vec(), b"config/flags".to_vec(), data.to_vec()],
        ),
        Err(_) => {
            let mut u = Unstructured::new(data);
            let Ok(any) = AnyTable::arbitrary(&mut u) else {
                return;
            };
            let affinities = any.affinities.clone();
            (any.into_table(), affinities)
        }
    };
    check(&table, &affinities);
});

fn check(table: &RouteTable, affinities: &[Vec<u8>]) {
    let verdict = validate(table, ENVIRONMENT, TENANT, None);
    assert_eq!(
        verdict.is_ok(),
        valid(table),
        "validate disagrees with the rules: {verdict:?} for {table:#?}"
    );
    for affinity in affinities {
        assert!(slot(affinity) < WEIGHT_TOTAL);
    }
    if verdict.is_err() {
        return;
    }
    assert_eq!(verdict, Ok(Verdict::Install));

    for affinity in affinities {
        let entry = pick(table, affinity).expect("a valid table picks an entry for every key");
        assert!(
            table.entries.iter().any(|e| std::ptr::eq(e, entry)),
            "pick returned an entry of another table"
        );
        assert!(entry.weight_bp > 0, "pick chose an entry without weight");
        assert!(
            std::ptr::eq(pick(table, affinity).unwrap(), entry),
            "pick is not sticky"
        );
    }

    let text = serde_json::to_string(table).unwrap();
    assert_eq!(&serde_json::from_str::<RouteTable>(&text).unwrap(), table);

    let hash = table.content_hash();
    assert_eq!(
        validate(table, ENVIRONMENT, TENANT, Some((table.version, &hash))),
        Ok(Verdict::AckAgain)
    );
    assert_eq!(
        validate(table, ENVIRONMENT, TENANT, Some((table.version, "other"))),
        Err(Nack::Conflict(table.version))
    );
    if let Some(held) = table.version.checked_add(1) {
        assert!(matches!(
            validate(table, ENVIRONMENT, TENANT, Some((held, &hash))),
            Err(Nack::Older { .. })
        ));
    }
    if let Some(held) = table.version.checked_sub(1) {
        assert_eq!(
            validate(table, ENVIRONMENT, TENANT, Some((held, "any"))),
            Ok(Verdict::Install)
        );
    }
}

/// The rules of a valid table, stated apart from `validate`'s code.
fn valid(table: &RouteTable) -> bool {
    let in_scope = |environment: &str, tenant: &str| environment == ENVIRONMENT && tenant == TENANT;
    let usable = |e: &str| e.starts_with("http://") || e.starts_with("https://");
    let ids: HashSet<&str> = table.entries.iter().map(|e| e.build_id.as_str()).collect();
    let weights: u64 = table.entries.iter().map(|e| u64::from(e.weight_bp)).sum();
    in_scope(&table.environment, &table.tenant)
        && !table.entries.is_empty()
        && table.entries.iter().all(|e| {
            in_scope(&e.environment, &e.tenant)
                && !e.endpoints.is_empty()
                && e.endpoints.iter().all(|u| usable(u))
        })
        && ids.len() == table.entries.len()
        && weights == u64::from(WEIGHT_TOTAL)
        && ids.contains(table.known_good_build.as_str())
}

/// A name drawn mostly from a few, so that duplicates and matches are common.
#[derive(Arbitrary, Debug, Clone)]
enum Name {
    Known(u8),
    Text(String),
}

impl Name {
    fn build(&self) -> String {
        match self {
            Name::Known(n) => format!("v{}", n % 4),
            Name::Text(text) => text.clone(),
        }
    }
}

/// The edge's scope, mostly, or another.
#[derive(Arbitrary, Debug)]
enum AnyScope {
    Edge,
    Other(String, String),
}

impl AnyScope {
    fn get(&self) -> (String, String) {
        match self {
            AnyScope::Edge => (ENVIRONMENT.into(), TENANT.into()),
            AnyScope::Other(environment, tenant) => (environment.clone(), tenant.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AnyEndpoint {
    Http(String),
    Https(String),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum AnyWeight {
    /// A share of 10000.
    Share(u16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct AnyEntry {
    build: Name,
    scope: AnyScope,
    artifact_digest: String,
    weight: AnyWeight,
    endpoints: Vec<AnyEndpoint>,
    data_set: String,
}

#[derive(Arbitrary, Debug)]
struct AnyTable {
    version: u64,
    issued_at: u64,
    scope: AnyScope,
    known_good: Name,
    entries: Vec<AnyEntry>,
    /// Gives the last entry what the others leave of 10000, when they leave any.
    balance: bool,
    affinities: Vec<Vec<u8>>,
}

impl AnyTable {
    fn into_table(self) -> RouteTable {
        let (environment, tenant) = self.scope.get();
        let mut entries: Vec<RouteEntry> = self
            .entries
            .into_iter()
            .map(|e| {
                let (environment, tenant) = e.scope.get();
                RouteEntry {
                    build_id: e.build.build(),
                    environment,
                    tenant,
                    artifact_digest: e.artifact_digest,
                    weight_bp: match e.weight {
                        AnyWeight::Share(w) => u32::from(w) % (WEIGHT_TOTAL + 1),
                        AnyWeight::Raw(w) => w,
                    },
                    endpoints: e
                        .endpoints
                        .into_iter()
                        .map(|u| match u {
                            AnyEndpoint::Http(rest) => format!("http://{rest}"),
                            AnyEndpoint::Https(rest) => format!("https://{rest}"),
                            AnyEndpoint::Text(text) => text,
                        })
                        .collect(),
                    data_set: e.data_set,
                }
            })
            .collect();
        if self.balance
            && let Some((last, others)) = entries.split_last_mut()
        {
            let taken: u64 = others.iter().map(|e| u64::from(e.weight_bp)).sum();
            if let Some(left) = u64::from(WEIGHT_TOTAL).checked_sub(taken) {
                last.weight_bp = left as u32;
            }
        }
        RouteTable {
            version: self.version,
            environment,
            tenant,
            issued_at: self.issued_at,
            known_good_build: self.known_good.build(),
            entries,
        }
    }
}
