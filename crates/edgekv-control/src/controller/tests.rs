use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// The data set every fake endpoint serves unless told otherwise.
const DATA_SET: &str = "0123456789abcdef0123456789abcdef";

/// A probe that fails for the endpoints it is told to, and answers with the data
/// set it is told to (by default [`DATA_SET`]).
#[derive(Default)]
struct FakeProbe {
    failing: Mutex<Vec<String>>,
    data_sets: Mutex<std::collections::HashMap<String, String>>,
}

impl Probe for FakeProbe {
    fn health<'a>(
        &'a self,
        endpoint: &'a str,
        _build_id: &'a str,
        _environment: &'a str,
        _tenant: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + 'a>> {
        let failing = self.failing.lock().iter().any(|e| e == endpoint);
        let data_set = self
            .data_sets
            .lock()
            .get(endpoint)
            .cloned()
            .unwrap_or_else(|| DATA_SET.to_string());
        Box::pin(async move {
            if failing {
                Err("Unauthenticated: wrong environment".into())
            } else {
                Ok(data_set)
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
        data_set: String::new(),
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

    // A paused deployment is still judged: a breach rolls it back.
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
    f.controller.pause(&d.id).unwrap();
    let moved = f
        .controller
        .tick(|_| Health::Breach("v2: 40% of reads answered 404".into()))
        .unwrap();
    assert!(matches!(moved[0].1, Transition::RolledBack(_)), "{moved:?}");
    assert!(matches!(
        f.controller.deployment(&d.id).unwrap().phase,
        Phase::RolledBack { .. }
    ));
}

/// An operator pressing rollback twice in an incident must not redeploy the bad
/// build: a rollback goes to known-good and never makes the build it left
/// known-good; with nothing to roll back it says so and changes nothing.
#[tokio::test]
async fn rolling_back_twice_equals_rolling_back_once() {
    let f = fixture();
    bootstrap(&f).await;
    f.controller
        .create_deployment("production", "production", "v2", steps(&[10_000], 0))
        .await
        .unwrap();
    assert_eq!(
        f.controller.tick(|_| Health::Healthy).unwrap()[0].1,
        Transition::Completed
    );
    assert_eq!(
        f.controller
            .route_table("production")
            .unwrap()
            .known_good_build,
        "v2"
    );

    // Nothing is active: a plain rollback has nothing to roll back from.
    let version = f.controller.route_table("production").unwrap().version;
    let why = f
        .controller
        .rollback("production", None, "incident")
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("nothing to roll back") && why.contains("--to") && why.contains("v1"),
        "{why}"
    );
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(
        (table.known_good_build.as_str(), table.version),
        ("v2", version)
    );

    // The operator names the earlier known-good build; pressing it again changes
    // nothing, and a plain rollback after it does not go back to v2.
    assert_eq!(
        f.controller
            .rollback("production", Some("v1"), "incident")
            .unwrap(),
        "v1"
    );
    let after = f.controller.route_table("production").unwrap();
    assert_eq!(weights(&after), [("v1".to_string(), 10_000)]);
    assert_eq!(
        f.controller
            .rollback("production", Some("v1"), "again")
            .unwrap(),
        "v1"
    );
    assert!(f.controller.rollback("production", None, "again").is_err());
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(
        (table.known_good_build.as_str(), table.version),
        ("v1", after.version)
    );

    // --to is honoured while a deployment is active, and only to a build that
    // was known-good.
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
    let why = f
        .controller
        .rollback("production", Some("v2-stg"), "x")
        .unwrap_err()
        .to_string();
    assert!(why.contains("staging"), "{why}");
    assert_eq!(
        f.controller
            .rollback("production", Some("v2"), "back to v2")
            .unwrap(),
        "v2"
    );
    assert!(matches!(
        f.controller.deployment(&d.id).unwrap().phase,
        Phase::RolledBack { .. }
    ));
    let history = f.controller.deployment(&d.id).unwrap().history;
    assert!(
        history.last().unwrap().contains("rolled back to v2") && history[0].starts_with("19"),
        "RFC 3339 times: {history:?}"
    );
}

/// A build whose endpoints serve another data set than known-good's is refused,
/// naming both; the operator's `--new-data-set` lets a named migration through.
#[tokio::test]
async fn a_build_over_another_data_set_is_refused() {
    let f = fixture();
    bootstrap(&f).await;
    let other = "f".repeat(32);
    f.probe
        .data_sets
        .lock()
        .insert("http://v2:7001".into(), other.clone());
    let why = f
        .controller
        .create_deployment("production", "production", "v2", steps(&[10_000], 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(why.contains(&other) && why.contains(DATA_SET), "{why}");
    assert!(
        f.controller
            .list_builds("production", "production")
            .unwrap()
            .iter()
            .any(|b| b.build_id == "v2" && b.data_set == other),
        "what control saw is recorded"
    );
    f.controller
        .create_deployment_with(
            "production",
            "production",
            "v2",
            steps(&[10_000], 0),
            Thresholds::default(),
            Some(&other),
        )
        .await
        .unwrap();
    let table = f.controller.route_table("production").unwrap();
    assert_eq!(table.entry("v2").unwrap().data_set, other);
    assert_eq!(table.entry("v1").unwrap().data_set, DATA_SET);
}

/// An edge reopening its stream with the version control issued changes nothing;
/// only a version control never issued moves it, and an absurd one is refused.
#[tokio::test]
async fn edge_versions_move_control_only_when_they_are_news() {
    let f = fixture();
    bootstrap(&f).await;
    let version = f.controller.route_table("production").unwrap().version;
    let mut changed = f.controller.subscribe();
    changed.borrow_and_update();
    f.controller
        .observe_edge_version("production", version)
        .unwrap();
    f.controller
        .observe_edge_version("production", version - 1)
        .unwrap();
    assert!(
        !changed.has_changed().unwrap(),
        "no new table for a reconnect"
    );
    assert_eq!(
        f.controller.route_table("production").unwrap().version,
        version
    );
    f.controller
        .observe_edge_version("production", version + 5)
        .unwrap();
    assert_eq!(
        f.controller.route_table("production").unwrap().version,
        version + 6
    );
    assert!(
        f.controller
            .observe_edge_version("production", version + (1 << 40))
            .is_err()
    );
    assert_eq!(
        f.controller.route_table("production").unwrap().version,
        version + 6
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
