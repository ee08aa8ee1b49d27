use super::*;

const ENV: &str = "production";
const TENANT: &str = "production";

fn grant(name: &str, environment: &str) -> v1::TokenGrant {
    v1::TokenGrant {
        hash: hex::encode(crate::tokens::hash(name)),
        name: name.into(),
        account: "acct".into(),
        namespaces: vec![],
        read_only: false,
        admin: false,
        environment: environment.into(),
    }
}

fn table(version: u64, grants: Vec<v1::TokenGrant>) -> v1::TokenTable {
    v1::TokenTable {
        version,
        grants,
        environment: ENV.into(),
        tenant: TENANT.into(),
    }
}

/// What an edge holds after installing `table`.
fn held(table: &v1::TokenTable) -> Held {
    match validate(table, ENV, TENANT, None) {
        Ok(Verdict::Install(grants)) => Held {
            version: table.version,
            content_hash: content_hash(&grants),
        },
        other => panic!("the table does not install: {other:?}"),
    }
}

#[test]
fn a_first_table_installs_with_its_grants() {
    let offered = table(3, vec![grant("a", ENV), grant("legacy", "")]);
    let Ok(Verdict::Install(grants)) = validate(&offered, ENV, TENANT, None) else {
        panic!("not installed");
    };
    let names: Vec<&str> = grants.iter().map(|(_, g)| g.name.as_str()).collect();
    assert_eq!(names, ["a", "legacy"]);
    assert_eq!(grants[0].0, crate::tokens::hash("a"));
}

#[test]
fn a_newer_table_installs() {
    let holding = held(&table(3, vec![grant("a", ENV)]));
    let newer = table(4, vec![grant("a", ENV), grant("b", ENV)]);
    assert!(matches!(
        validate(&newer, ENV, TENANT, Some(holding)),
        Ok(Verdict::Install(grants)) if grants.len() == 2
    ));
}

#[test]
fn an_older_table_is_nacked() {
    let holding = held(&table(5, vec![grant("a", ENV), grant("b", ENV)]));
    // Control restarted from an older state: the token b it lost must not vanish.
    let older = table(4, vec![grant("a", ENV)]);
    assert_eq!(
        validate(&older, ENV, TENANT, Some(holding)),
        Err(Nack::Older {
            offered: 4,
            held: 5
        })
    );
    // Even with the very same content: versions never go backwards.
    let same_content = table(4, vec![grant("a", ENV), grant("b", ENV)]);
    assert!(matches!(
        validate(&same_content, ENV, TENANT, Some(holding)),
        Err(Nack::Older { .. })
    ));
}

#[test]
fn the_same_content_again_is_acked_again_whatever_its_order() {
    let holding = held(&table(5, vec![grant("a", ENV), grant("b", ENV)]));
    let again = table(5, vec![grant("b", ENV), grant("a", ENV)]);
    assert_eq!(
        validate(&again, ENV, TENANT, Some(holding)),
        Ok(Verdict::AckAgain)
    );
}

#[test]
fn the_same_version_with_other_content_is_nacked() {
    let holding = held(&table(5, vec![grant("a", ENV)]));
    let mut read_only = grant("a", ENV);
    read_only.read_only = true;
    for other in [
        vec![grant("a", ENV), grant("b", ENV)],
        vec![],
        vec![read_only],
    ] {
        assert_eq!(
            validate(&table(5, other.clone()), ENV, TENANT, Some(holding)),
            Err(Nack::Conflict(5)),
            "{other:?}"
        );
    }
}

#[test]
fn another_environments_table_is_nacked() {
    let mut staging = table(9, vec![grant("a", "staging")]);
    staging.environment = "staging".into();
    staging.tenant = "staging".into();
    assert!(matches!(
        validate(&staging, ENV, TENANT, None),
        Err(Nack::WrongScope { table_environment, .. }) if table_environment == "staging"
    ));
    // A table that names no environment (an older control's) is not this edge's.
    let mut unscoped = table(9, vec![grant("a", "")]);
    unscoped.environment.clear();
    unscoped.tenant.clear();
    assert!(matches!(
        validate(&unscoped, ENV, TENANT, None),
        Err(Nack::WrongScope { .. })
    ));
}

#[test]
fn another_tenants_table_is_nacked() {
    let mut acme = table(9, vec![grant("a", ENV)]);
    acme.tenant = "acme".into();
    let holding = held(&table(3, vec![]));
    assert!(matches!(
        validate(&acme, ENV, TENANT, Some(holding)),
        Err(Nack::WrongScope { table_tenant, .. }) if table_tenant == "acme"
    ));
}

/// The 2023 failure for tokens: a staging token in a production table.
#[test]
fn a_table_with_another_environments_token_is_nacked() {
    let mixed = table(9, vec![grant("a", ENV), grant("stg", "staging")]);
    assert_eq!(
        validate(&mixed, ENV, TENANT, None),
        Err(Nack::ForeignGrant {
            name: "stg".into(),
            grant_environment: "staging".into(),
            environment: ENV.into(),
        })
    );
}

#[test]
fn malformed_grants_are_nacked() {
    let mut not_hex = grant("a", ENV);
    not_hex.hash = "zz".into();
    let mut short = grant("b", ENV);
    short.hash = "abcd".into();
    let mut no_account = grant("c", ENV);
    no_account.account.clear();
    let mut twice = grant("a", ENV);
    twice.name = "a-again".into();
    for (grants, name) in [
        (vec![not_hex], "a"),
        (vec![short], "b"),
        (vec![no_account], "c"),
        (vec![grant("a", ENV), twice], "a-again"),
    ] {
        assert!(
            matches!(
                validate(&table(1, grants), ENV, TENANT, None),
                Err(Nack::Malformed { name: n, .. }) if n == name
            ),
            "{name}"
        );
    }
}

#[test]
fn the_content_hash_covers_every_field_and_not_the_order() {
    let base = vec![grant("a", ENV), grant("b", ENV)];
    let hash_of = |grants: Vec<v1::TokenGrant>| held(&table(1, grants)).content_hash;
    let reference = hash_of(base.clone());
    assert_eq!(hash_of(base.iter().rev().cloned().collect()), reference);
    let changes: [fn(&mut v1::TokenGrant); 5] = [
        |g| g.name.push('x'),
        |g| g.account.push('x'),
        |g| g.namespaces.push("ns".into()),
        |g| g.read_only = true,
        |g| g.admin = true,
    ];
    for change in changes {
        let mut changed = base.clone();
        change(&mut changed[0]);
        assert_ne!(hash_of(changed), reference);
    }
}
