use super::*;
use crate::RouteEntry;

fn entry(id: &str, environment: &str, weight_bp: u32) -> RouteEntry {
    RouteEntry {
        build_id: id.into(),
        environment: environment.into(),
        tenant: environment.into(),
        artifact_digest: format!("sha256:{id}"),
        weight_bp,
        endpoints: vec![format!("http://{id}.internal:7001")],
        data_set: String::new(),
    }
}

fn table(version: u64, entries: Vec<RouteEntry>) -> RouteTable {
    RouteTable {
        version,
        environment: "production".into(),
        tenant: "production".into(),
        issued_at: 1,
        known_good_build: "v1".into(),
        entries,
    }
}

fn good(version: u64) -> RouteTable {
    table(
        version,
        vec![
            entry("v1", "production", 9000),
            entry("v2", "production", 1000),
        ],
    )
}

#[test]
fn a_good_table_is_installed_then_acked_again() {
    let t = good(5);
    assert_eq!(
        validate(&t, "production", "production", None),
        Ok(Verdict::Install)
    );
    let hash = t.content_hash();
    assert_eq!(
        validate(&t, "production", "production", Some((5, &hash))),
        Ok(Verdict::AckAgain)
    );
    assert_eq!(
        validate(&good(6), "production", "production", Some((5, &hash))),
        Ok(Verdict::Install)
    );
    // issued_at is not content: a re-send at a later time is the same table.
    let resent = RouteTable {
        issued_at: 99,
        ..good(5)
    };
    assert_eq!(
        validate(&resent, "production", "production", Some((5, &hash))),
        Ok(Verdict::AckAgain)
    );
}

/// The 2023 bug: a staging build, with a look-alike id, in a production table.
#[test]
fn a_staging_entry_in_a_production_table_is_refused() {
    let t = table(
        7,
        vec![
            entry("v1", "production", 9000),
            entry("v1-staging", "staging", 1000),
        ],
    );
    let nack = validate(&t, "production", "production", None).unwrap_err();
    assert!(matches!(nack, Nack::ForeignEntry { ref build_id, .. } if build_id == "v1-staging"));
    assert!(nack.to_string().contains("staging"));
}

#[test]
fn every_rule_refuses_with_a_reason() {
    let scope = validate(&good(1), "staging", "staging", None).unwrap_err();
    assert!(matches!(scope, Nack::WrongScope { .. }));
    let weights = table(
        1,
        vec![
            entry("v1", "production", 9000),
            entry("v2", "production", 999),
        ],
    );
    assert_eq!(
        validate(&weights, "production", "production", None),
        Err(Nack::Weights { sum: 9999 })
    );
    let mut no_endpoint = good(1);
    no_endpoint.entries[1].endpoints.clear();
    assert!(matches!(
        validate(&no_endpoint, "production", "production", None),
        Err(Nack::Endpoints { .. })
    ));
    let mut bad_endpoint = good(1);
    bad_endpoint.entries[1].endpoints = vec!["v2.internal:7001".into()];
    assert!(matches!(
        validate(&bad_endpoint, "production", "production", None),
        Err(Nack::Endpoints { .. })
    ));
    let twice = table(
        1,
        vec![
            entry("v1", "production", 5000),
            entry("v1", "production", 5000),
        ],
    );
    assert_eq!(
        validate(&twice, "production", "production", None),
        Err(Nack::Duplicate("v1".into()))
    );
    let mut no_known_good = good(1);
    no_known_good.known_good_build = "v0".into();
    assert!(matches!(
        validate(&no_known_good, "production", "production", None),
        Err(Nack::KnownGoodMissing(_))
    ));
    assert_eq!(
        validate(&table(1, vec![]), "production", "production", None),
        Err(Nack::Empty)
    );
    let held = good(5).content_hash();
    assert_eq!(
        validate(&good(4), "production", "production", Some((5, &held))),
        Err(Nack::Older {
            offered: 4,
            held: 5
        })
    );
    let mut other = good(5);
    other.entries[0].weight_bp = 8000;
    other.entries[1].weight_bp = 2000;
    assert_eq!(
        validate(&other, "production", "production", Some((5, &held))),
        Err(Nack::Conflict(5))
    );
}

#[test]
fn the_known_good_build_may_have_weight_zero() {
    let t = RouteTable {
        known_good_build: "v1".into(),
        ..table(
            1,
            vec![
                entry("v1", "production", 0),
                entry("v2", "production", 10_000),
            ],
        )
    };
    assert_eq!(
        validate(&t, "production", "production", None),
        Ok(Verdict::Install)
    );
}
