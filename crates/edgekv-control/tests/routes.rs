//! `StreamRoutes` over real gRPC: an edge's stream gets the current table, above
//! any version the edge reports holding, and new tables as the rollout moves; its
//! ACKs and NACKs are recorded; a credential of another environment is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgekv_control::model::{Build, Step};
use edgekv_control::{ControlConfig, RunningControl};
use edgekv_proto::v1::{self, control_client::ControlClient};
use tokio_stream::StreamExt as _;
use tonic::{Code, Request};

fn stream_request(
    credential: &str,
    acks: tokio::sync::mpsc::Receiver<v1::RouteAck>,
) -> Request<tokio_stream::wrappers::ReceiverStream<v1::RouteAck>> {
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(acks));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    request
}

fn hello(version: u64) -> v1::RouteAck {
    v1::RouteAck {
        node_id: "edge-a".into(),
        environment: "production".into(),
        tenant: "production".into(),
        version,
        ..Default::default()
    }
}

#[tokio::test]
async fn route_tables_stream_to_edges() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin"), "admin\n").unwrap();
    std::fs::write(dir.path().join("prod"), "prod-cred\n").unwrap();
    let running = RunningControl::start(ControlConfig {
        grpc: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("state"),
        admin_token_file: dir.path().join("admin"),
        credentials: vec![("production".into(), dir.path().join("prod"))],
        tick_ms: 20,
        break_glass_key: None,
    })
    .await
    .unwrap();
    // The builds do not exist: their deployments fail the health probe, so the
    // known-good build is set through the operator's rollback instead.
    let controller = running.controller().clone();
    for id in ["v1", "v2"] {
        controller
            .register_build(Build {
                build_id: id.into(),
                version: id.into(),
                environment: "production".into(),
                tenant: "production".into(),
                artifact_digest: String::new(),
                endpoints: vec![format!("http://{id}.invalid:1")],
            })
            .unwrap();
    }
    let mut client = ControlClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();

    // A credential of another environment is refused.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello(0)).await.unwrap();
    let refused = client
        .stream_routes(stream_request("staging-cred", rx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // An edge holding version 40 (control lost its store): the next table is newer.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello(40)).await.unwrap();
    let mut tables = client
        .stream_routes(stream_request("prod-cred", rx))
        .await
        .unwrap()
        .into_inner();
    // No known-good yet: nothing is sent until the first table exists.
    assert!(
        controller
            .create_deployment(
                "production",
                "production",
                "v1",
                vec![Step {
                    weight_bp: 10_000,
                    bake_ms: 0
                }]
            )
            .await
            .unwrap_err()
            .to_string()
            .contains("health probe")
    );
    controller
        .rollback("production", Some("v1"), "set up known-good")
        .unwrap();
    let table = tokio::time::timeout(Duration::from_secs(5), tables.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        table.version > 40,
        "version {} is not above the edge's 40",
        table.version
    );
    assert_eq!(table.known_good_build, "v1");
    assert_eq!(table.entries.len(), 1);

    // A NACK and an ACK are recorded per edge.
    tx.send(v1::RouteAck {
        nack_reason: "entry v9 is a build of staging".into(),
        nacked_version: table.version,
        ..hello(40)
    })
    .await
    .unwrap();
    let acks = running.acks().clone();
    let said = || acks.lock()["production"]["edge-a"].clone();
    for _ in 0..100 {
        if said().nack.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        said().nack.as_deref(),
        Some("entry v9 is a build of staging")
    );
    tx.send(hello(table.version)).await.unwrap();
    for _ in 0..100 {
        if said().version == table.version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        said(),
        edgekv_control::service::EdgeAck {
            version: table.version,
            nack: None
        }
    );
    // A change sends a newer table on the open stream.
    controller
        .rollback("production", Some("v2"), "operator")
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), tables.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next.version > table.version);
    assert_eq!(next.known_good_build, "v2");
    drop((tables, tx));
    running.shutdown().await;
}
