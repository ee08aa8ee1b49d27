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
        tls: None,
        tls_ca: None,
        state: None,
        http: None,
        http_any_port_if_taken: false,
    })
    .await
    .unwrap();
    // Real builds, so deployments pass their health probe.
    std::fs::write(dir.path().join("origin-credentials"), "prod-cred\n").unwrap();
    let origin = edgekv_origin::RunningOrigin::start(
        edgekv_origin::OriginConfig {
            data_dir: dir.path().join("origin"),
            environment: "production".into(),
            tenant: "production".into(),
            credential_file: dir.path().join("origin-credentials"),
            builds: vec![
                "v1=127.0.0.1:0".parse().unwrap(),
                "v2=127.0.0.1:0".parse().unwrap(),
            ],
            sync_writes: false,
            ..edgekv_origin::OriginConfig::default()
        },
        std::sync::Arc::new(edgekv_kv::SystemClock),
    )
    .await
    .unwrap();
    let controller = running.controller().clone();
    for id in ["v1", "v2"] {
        controller
            .register_build(Build {
                build_id: id.into(),
                version: id.into(),
                environment: "production".into(),
                tenant: "production".into(),
                artifact_digest: String::new(),
                endpoints: vec![origin.url(id).unwrap()],
                data_set: String::new(),
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
        tokio::time::timeout(Duration::from_millis(300), tables.next())
            .await
            .is_err(),
        "no table before the first deployment"
    );
    let all = || {
        vec![Step {
            weight_bp: 10_000,
            bake_ms: 0,
        }]
    };
    // Promoted on bake time alone: no edge reports traffic in this test.
    let promote_on_bake = edgekv_control::health::Thresholds {
        min_requests: 0,
        ..Default::default()
    };
    controller
        .create_deployment_with(
            "production",
            "production",
            "v1",
            all(),
            promote_on_bake,
            None,
        )
        .await
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
            nack: None,
            left_ms: None,
            stream: said().stream,
        }
    );
    // The stream's first message fixed its node: an ACK naming another node
    // speaks for edge-a, and adds no made-up edge.
    tx.send(v1::RouteAck {
        node_id: "made-up".into(),
        ..hello(table.version)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !acks.lock()["production"].contains_key("made-up"),
        "{:?}",
        acks.lock()
    );
    // A change sends a newer table on the open stream.
    let mut next = table.clone();
    while next.known_good_build != "v2" {
        if controller
            .deployments(Some("production"))
            .iter()
            .all(|d| !d.phase.is_active())
            && controller.known_good("production").as_deref() == Some("v1")
        {
            controller
                .create_deployment_with(
                    "production",
                    "production",
                    "v2",
                    all(),
                    promote_on_bake,
                    None,
                )
                .await
                .unwrap();
        }
        next = tokio::time::timeout(Duration::from_secs(5), tables.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(next.version > table.version);
    }
    assert!(
        next.entries.iter().all(|e| e.data_set.len() == 32),
        "{next:?}"
    );
    drop((tables, tx));
    // A stream that ended leaves its edge listed apart, as departed.
    for _ in 0..200 {
        if said().left_ms.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(said().left_ms.is_some(), "{:?}", said());
    running.shutdown().await;
    origin.shutdown().await;
}
