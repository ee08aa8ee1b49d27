use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A probe that fails for the endpoints it is told to.
#[derive(Default)]
struct FakeProbe {
    failing: Mutex<Vec<String>>,
}

impl Probe for FakeProbe {
    fn health<'a>(
        &'a self,
        endpoint: &'a str,
        _build_id: &'a str,
        _environment: &'a str,
        _tenant: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>> {
        let failing = self.failing.lock().iter().any(|e| e == endpoint);
        Box::pin(async move {
            if failing {
                Err("Unauthenticated: wrong environment".into())
            } else {
                Ok(())
            }
        })
    }
}

struct Fixture {
    controller: Controller,
    probe: Arc<FakeProbe>,
    clock: Arc<AtomicU64>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(FakeProbe::default());
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let controller = open(dir.path(), &probe, &clock);
    Fixture {
        controller,
        probe,
        clock,
        dir,
    }
}

fn open(dir: &std::path::Path, probe: &Arc<FakeProbe>, clock: &Arc<AtomicU64>) -> Controller {
    let clock = clock.clone();
    Controller::open(
        dir,
        probe.clone(),
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap()
}

fn build(id: &str, environment: &str) -> Build {
    Build {
        build_id: id.into(),
        version: id.into(),
        environment: environment.into(),
        tenant: environment.into(),
        artifact_digest: format!("sha256:{id}"),
        endpoints: vec![format!("http://{id}:7001")],
    }
}

fn steps(weights: &[u32], bake_ms: u64) -> Vec<Step> {
    weights
        .iter()
        .map(|w| Step {
            weight_bp: *w,
            bake_ms,
        })
        .collect()
}

fn weights(table: &RouteTable) -> Vec<(String, u32)> {
    table
        .entries
        .iter()
        .map(|e| (e.build_id.clone(), e.weight_bp))
        .collect()
}

async fn bootstrap(f: &Fixture) {
    for b in [
        build("v1", "production"),
        build("v2", "production"),
        build("v2-stg", "staging"),
    ] {
        f.controller.register_build(b).unwrap();
    }
    f.controller
        .create_deployment("production", "production", "v1", steps(&[10_000], 0))
        .await
        .unwrap();
    assert_eq!(f.controller.tick(|_| Health::Healthy).unwrap().len(), 1);
}

#[tokio::test]
async fn a_rollout_climbs_its_steps_and_makes_the_build_known_good() {
    let f = fixture();
    bootstrap(&f).await;
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(weights(&table), [("v1".to_string(), 10_000)]);
    let first_version = table.version;

    let d = f
        .controller
        .create_deployment(
            "production",
            "production",
            "v2",
            steps(&[1000, 5000, 10_000], 1000),
        )
        .await
        .unwrap();
    assert_eq!(d.known_good.as_deref(), Some("v1"));
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(
        weights(&table),
        [("v1".to_string(), 9000), ("v2".to_string(), 1000)]
    );
    assert!(table.version > first_version);
    assert!(edgekv_routing::validate(&table, "production", "production", None).is_ok());

    assert!(
        f.controller.tick(|_| Health::Healthy).unwrap().is_empty(),
        "still baking"
    );
    f.clock.fetch_add(1000, Ordering::SeqCst);
    f.controller.tick(|_| Health::Healthy).unwrap();
    assert_eq!(
        weights(&f.controller.route_table("production").unwrap())[1].1,
        5000
    );
    f.clock.fetch_add(1000, Ordering::SeqCst);
    f.controller.tick(|_| Health::Healthy).unwrap();
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(
        weights(&table),
        [("v1".to_string(), 0), ("v2".to_string(), 10_000)],
        "known-good stays, at 0"
    );
    f.clock.fetch_add(1000, Ordering::SeqCst);
    let moved = f.controller.tick(|_| Health::Healthy).unwrap();
    assert_eq!(moved[0].1, Transition::Completed);
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(table.known_good_build, "v2");
    assert_eq!(weights(&table), [("v2".to_string(), 10_000)]);
}

#[tokio::test]
async fn pre_checks_refuse_with_named_reasons() {
    let f = fixture();
    bootstrap(&f).await;
    let refuse = |r: Result<Deployment>| r.unwrap_err().to_string();
    // The 2023 failure: a staging build into production.
    let message = refuse(
        f.controller
            .create_deployment("production", "production", "v2-stg", steps(&[10_000], 0))
            .await,
    );
    assert!(
        message.contains("staging") && message.contains("production"),
        "{message}"
    );
    let message = refuse(
        f.controller
            .create_deployment("production", "production", "v9", steps(&[10_000], 0))
            .await,
    );
    assert!(message.contains("not registered"), "{message}");
    let message = refuse(
        f.controller
            .create_deployment("production", "production", "v2", steps(&[5000], 0))
            .await,
    );
    assert!(message.contains("last step"), "{message}");
    f.probe.failing.lock().push("http://v2:7001".into());
    let message = refuse(
        f.controller
            .create_deployment("production", "production", "v2", steps(&[10_000], 0))
            .await,
    );
    assert!(
        message.contains("health probe") && message.contains("Unauthenticated"),
        "{message}"
    );
    f.probe.failing.lock().clear();
    f.controller
        .create_deployment(
            "production",
            "production",
            "v2",
            steps(&[1000, 10_000], 1000),
        )
        .await
        .unwrap();
    let message = refuse(
        f.controller
            .create_deployment("production", "production", "v2", steps(&[10_000], 0))
            .await,
    );
    assert!(message.contains("still active"), "{message}");
}

#[tokio::test]
async fn a_breach_or_an_operator_rolls_back_to_known_good() {
    let f = fixture();
    bootstrap(&f).await;
    let d = f
        .controller
        .create_deployment(
            "production",
            "production",
            "v2",
            steps(&[1000, 10_000], 1000),
        )
        .await
        .unwrap();
    let before = f.controller.route_table("production").unwrap().version;
    let moved = f
        .controller
        .tick(|_| Health::Breach("v2 answered UNAUTHENTICATED to 100% of 400 requests".into()))
        .unwrap();
    assert!(matches!(moved[0].1, Transition::RolledBack(_)));
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(weights(&table), [("v1".to_string(), 10_000)]);
    assert!(table.version > before);
    let status = f.controller.deployment(&d.id).unwrap();
    assert!(
        matches!(status.phase, Phase::RolledBack { ref reason } if reason.contains("UNAUTHENTICATED"))
    );

    // Pause and resume, then an operator's rollback of the active deployment.
    let d = f
        .controller
        .create_deployment(
            "production",
            "production",
            "v2",
            steps(&[1000, 10_000], 1000),
        )
        .await
        .unwrap();
    assert!(matches!(
        f.controller.pause(&d.id).unwrap().phase,
        Phase::Paused { step: 0 }
    ));
    f.clock.fetch_add(10_000, Ordering::SeqCst);
    assert!(
        f.controller.tick(|_| Health::Healthy).unwrap().is_empty(),
        "a paused deployment holds"
    );
    f.controller.resume(&d.id).unwrap();
    assert_eq!(
        f.controller
            .rollback("production", None, "operator")
            .unwrap(),
        "v1"
    );
    assert_eq!(
        weights(&f.controller.route_table("production").unwrap()),
        [("v1".to_string(), 10_000)]
    );
}

#[tokio::test]
async fn control_resumes_after_a_restart_and_never_issues_an_older_version() {
    let f = fixture();
    bootstrap(&f).await;
    f.controller
        .create_deployment(
            "production",
            "production",
            "v2",
            steps(&[1000, 10_000], 1000),
        )
        .await
        .unwrap();
    let table = f.controller.route_table("production").unwrap();
    drop(f.controller);
    let again = open(f.dir.path(), &f.probe, &f.clock);
    let resumed = again.route_table("production").unwrap();
    assert_eq!(
        resumed.content_hash(),
        table.content_hash(),
        "same table after the restart"
    );
    f.clock.fetch_add(1000, Ordering::SeqCst);
    again.tick(|_| Health::Healthy).unwrap();
    assert_eq!(
        weights(&again.route_table("production").unwrap())[1].1,
        10_000
    );

    // Control lost its store: an edge reporting version 41 carries it past that.
    let lost = tempfile::tempdir().unwrap();
    let fresh = open(lost.path(), &f.probe, &f.clock);
    fresh.register_build(build("v1", "production")).unwrap();
    fresh.observe_edge_version("production", 41).unwrap();
    fresh
        .create_deployment("production", "production", "v1", steps(&[10_000], 0))
        .await
        .unwrap();
    assert!(fresh.route_table("production").unwrap().version > 41);
}

#[test]
fn builds_are_checked_when_registered() {
    let f = fixture();
    let mut no_endpoint = build("v1", "production");
    no_endpoint.endpoints.clear();
    assert!(matches!(
        f.controller.register_build(no_endpoint),
        Err(ControlError::Invalid(_))
    ));
    let mut no_env = build("v1", "production");
    no_env.environment = " ".into();
    assert!(matches!(
        f.controller.register_build(no_env),
        Err(ControlError::Invalid(_))
    ));
    assert!(f.controller.list_builds("production", "").is_err());
}
