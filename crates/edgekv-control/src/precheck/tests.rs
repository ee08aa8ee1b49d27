use super::*;
use crate::model::Phase;

fn build(id: &str, environment: &str) -> Build {
    Build {
        build_id: id.into(),
        version: id.into(),
        environment: environment.into(),
        tenant: environment.into(),
        artifact_digest: format!("sha256:{id}"),
        endpoints: vec![format!("http://{id}:7001")],
        data_set: String::new(),
    }
}

fn step(weight_bp: u32) -> Step {
    Step {
        weight_bp,
        bake_ms: 1000,
    }
}

fn plan() -> Vec<Step> {
    vec![step(1000), step(5000), step(10_000)]
}

/// The 2023 failure: a staging build with a look-alike id deployed to production.
#[test]
fn a_staging_build_is_refused_for_production() {
    let builds = [
        build("kv-2023-10-30", "production"),
        build("kv-2023-10-30-stg", "staging"),
    ];
    let refusal = check(
        &builds,
        &[],
        "kv-2023-10-30-stg",
        "production",
        "production",
        &plan(),
    )
    .unwrap_err();
    assert!(matches!(refusal, Refusal::WrongEnvironment { .. }));
    let message = refusal.to_string();
    assert!(
        message.contains("staging") && message.contains("production"),
        "{message}"
    );
    assert!(
        check(
            &builds,
            &[],
            "kv-2023-10-30",
            "production",
            "production",
            &plan()
        )
        .is_ok()
    );
}

#[test]
fn each_refusal_names_its_reason() {
    let mut other_tenant = build("v3", "production");
    other_tenant.tenant = "acme".into();
    let builds = [build("v1", "production"), other_tenant];
    let unknown = check(&builds, &[], "v9", "production", "production", &plan()).unwrap_err();
    assert_eq!(unknown.to_string(), "build \"v9\" is not registered");
    let tenant = check(&builds, &[], "v3", "production", "production", &plan()).unwrap_err();
    assert!(tenant.to_string().contains("tenant \"acme\""));
    let active = Deployment {
        id: "d1".into(),
        environment: "production".into(),
        tenant: "production".into(),
        build_id: "v1".into(),
        known_good: None,
        steps: plan(),
        phase: Phase::Running {
            step: 0,
            since_ms: 0,
        },
        created_ms: 0,
        history: vec![],
        thresholds: Default::default(),
    };
    let busy = check(
        &builds,
        [&active],
        "v1",
        "production",
        "production",
        &plan(),
    )
    .unwrap_err();
    assert_eq!(busy, Refusal::ActiveDeployment("d1".into()));
    let finished = Deployment {
        phase: Phase::Completed,
        ..active
    };
    assert!(
        check(
            &builds,
            [&finished],
            "v1",
            "production",
            "production",
            &plan()
        )
        .is_ok()
    );
}

#[test]
fn steps_must_climb_to_all_traffic() {
    assert!(steps(&plan()).is_ok());
    assert!(steps(&[step(10_000)]).is_ok());
    for (bad, why) in [
        (vec![], "at least one"),
        (vec![step(0), step(10_000)], "1..=10000"),
        (
            vec![step(5000), step(5000), step(10_000)],
            "does not increase",
        ),
        (vec![step(1000), step(5000)], "last step"),
        (vec![step(20_000)], "1..=10000"),
    ] {
        let refusal = steps(&bad).unwrap_err();
        assert!(refusal.to_string().contains(why), "{refusal}");
    }
}

/// A build over another store (an empty data dir, a staging data set) is refused
/// with both ids named; naming the new id lets a real migration through, and a
/// wrong name is refused.
#[test]
fn a_build_over_another_data_set_is_refused_unless_named() {
    let (a, b) = ("a".repeat(32), "b".repeat(32));
    assert_eq!(data_set("v2", &a, Some(("v1", &a)), None), Ok(()));
    assert_eq!(data_set("v1", &a, None, None), Ok(()), "a bootstrap");
    let refused = data_set("v2", &b, Some(("v1", &a)), None).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains(&a) && message.contains(&b) && message.contains("--new-data-set"),
        "{message}"
    );
    assert_eq!(data_set("v2", &b, Some(("v1", &a)), Some(&b)), Ok(()));
    assert!(matches!(
        data_set("v2", &b, Some(("v1", &a)), Some(&a)),
        Err(Refusal::NotTheNamedDataSet { .. })
    ));
}
