//! The health probe against a real origin build: a staging build refuses the
//! production credential, so deploying it to production is refused before any
//! traffic moves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgekv_control::Controller;
use edgekv_control::model::{Build, Step};
use edgekv_control::probe::GrpcProbe;
use edgekv_kv::SystemClock;
use edgekv_origin::{OriginConfig, RunningOrigin};

#[tokio::test]
async fn a_staging_build_fails_the_production_probe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("staging.credentials"), "staging-secret\n").unwrap();
    let config = OriginConfig {
        data_dir: dir.path().join("origin"),
        environment: "staging".into(),
        tenant: "staging".into(),
        credential_file: dir.path().join("staging.credentials"),
        builds: vec!["kv-v2=127.0.0.1:0".parse().unwrap()],
        sync_writes: false,
        ..OriginConfig::default()
    };
    let origin = RunningOrigin::start(config, Arc::new(SystemClock))
        .await
        .unwrap();
    let url = origin.url("kv-v2").unwrap();

    let credentials = BTreeMap::from([
        ("production".to_string(), "production-secret".to_string()),
        ("staging".to_string(), "staging-secret".to_string()),
    ]);
    let probe = Arc::new(GrpcProbe::new(credentials, Duration::from_secs(2)));
    let control_dir = tempfile::tempdir().unwrap();
    let controller = Controller::open(control_dir.path(), probe, Arc::new(|| 1)).unwrap();
    // A deploy tool that mislabels the build as production gets past the registry,
    // but not past the probe made with the production credential.
    controller
        .register_build(Build {
            build_id: "kv-v2".into(),
            version: "2".into(),
            environment: "production".into(),
            tenant: "production".into(),
            artifact_digest: "sha256:2".into(),
            endpoints: vec![url.clone()],
            data_set: String::new(),
        })
        .unwrap();
    let err = controller
        .create_deployment(
            "production",
            "production",
            "kv-v2",
            vec![Step {
                weight_bp: 10_000,
                bake_ms: 0,
            }],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("health probe") && err.contains("Unauthenticated"),
        "{err}"
    );
    assert!(
        controller.route_table("production").is_none(),
        "no traffic moved"
    );

    // Registered as what it is, it passes the staging probe.
    let staging_dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(GrpcProbe::new(
        BTreeMap::from([("staging".to_string(), "staging-secret".to_string())]),
        Duration::from_secs(2),
    ));
    let staging = Controller::open(staging_dir.path(), probe, Arc::new(|| 1)).unwrap();
    staging
        .register_build(Build {
            build_id: "kv-v2".into(),
            version: "2".into(),
            environment: "staging".into(),
            tenant: "staging".into(),
            artifact_digest: "sha256:2".into(),
            endpoints: vec![url],
            data_set: String::new(),
        })
        .unwrap();
    staging
        .create_deployment(
            "staging",
            "staging",
            "kv-v2",
            vec![Step {
                weight_bp: 10_000,
                bake_ms: 0,
            }],
        )
        .await
        .unwrap();
    origin.shutdown().await;
}
