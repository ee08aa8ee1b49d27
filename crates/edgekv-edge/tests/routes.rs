//! An edge against a scripted control plane: every route table is checked by the
//! edge itself, whatever control sends — a table naming a staging build, or a
//! malformed one, is NACKed and the edge keeps serving with the last good table,
//! which it also keeps on disk for a restart while control is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::{Clock, ManualClock};
use edgekv_proto::v1::{self, control_server};
use edgekv_test_support::{CREDENTIAL, ENVIRONMENT, TOKEN, TestOrigin, eventually, token_table};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A control plane that sends the tables the test gives it and reports the ACKs.
#[derive(Clone)]
struct Scripted {
    tables: Arc<Mutex<Option<mpsc::Receiver<v1::RouteTable>>>>,
    acks: mpsc::Sender<v1::RouteAck>,
}

fn none<T>() -> Result<T, Status> {
    Err(Status::unimplemented("scripted control"))
}

#[tonic::async_trait]
impl control_server::Control for Scripted {
    async fn report_health(
        &self,
        request: Request<Streaming<v1::HealthReport>>,
    ) -> Result<Response<v1::HealthReportSummary>, Status> {
        let mut reports = request.into_inner();
        let mut count = 0;
        while let Some(Ok(_)) = reports.next().await {
            count += 1;
        }
        Ok(Response::new(v1::HealthReportSummary { reports: count }))
    }
    async fn register_build(
        &self,
        _: Request<v1::RegisterBuildRequest>,
    ) -> Result<Response<v1::BuildResponse>, Status> {
        none()
    }
    async fn list_builds(
        &self,
        _: Request<v1::ListBuildsRequest>,
    ) -> Result<Response<v1::ListBuildsResponse>, Status> {
        none()
    }
    async fn create_deployment(
        &self,
        _: Request<v1::CreateDeploymentRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        none()
    }
    async fn get_deployment(
        &self,
        _: Request<v1::GetDeploymentRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        none()
    }
    async fn list_deployments(
        &self,
        _: Request<v1::ListDeploymentsRequest>,
    ) -> Result<Response<v1::ListDeploymentsResponse>, Status> {
        none()
    }
    async fn pause_deployment(
        &self,
        _: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        none()
    }
    async fn resume_deployment(
        &self,
        _: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        none()
    }
    async fn abort_deployment(
        &self,
        _: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        none()
    }
    async fn rollback(
        &self,
        _: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::RollbackResponse>, Status> {
        none()
    }
    async fn create_token(
        &self,
        _: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        none()
    }
    async fn revoke_token(
        &self,
        _: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        none()
    }
    async fn list_tokens(
        &self,
        _: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        none()
    }

    type StreamRoutesStream = ReceiverStream<Result<v1::RouteTable, Status>>;

    async fn stream_routes(
        &self,
        request: Request<Streaming<v1::RouteAck>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let mut acks = request.into_inner();
        let forward = self.acks.clone();
        tokio::spawn(async move {
            while let Some(Ok(ack)) = acks.next().await {
                let _ = forward.send(ack).await;
            }
        });
        let mut tables = self
            .tables
            .lock()
            .await
            .take()
            .ok_or_else(|| Status::unavailable("one stream only"))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(table) = tables.recv().await {
                if tx.send(Ok(table)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type StreamTokensStream = ReceiverStream<Result<v1::TokenTable, Status>>;

    async fn stream_tokens(
        &self,
        _: Request<Streaming<v1::TokenAck>>,
    ) -> Result<Response<Self::StreamTokensStream>, Status> {
        none()
    }
}

fn entry(build_id: &str, environment: &str, weight_bp: u32, endpoint: &str) -> v1::RouteEntry {
    v1::RouteEntry {
        build_id: build_id.into(),
        environment: environment.into(),
        tenant: environment.into(),
        artifact_digest: String::new(),
        weight_bp,
        endpoints: vec![endpoint.into()],
        data_set: String::new(),
    }
}

fn table(version: u64, entries: Vec<v1::RouteEntry>) -> v1::RouteTable {
    v1::RouteTable {
        version,
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        issued_at: 1,
        known_good_build: "v1".into(),
        entries,
    }
}

async fn start_edge(dir: &std::path::Path, control: &str, clock: Arc<ManualClock>) -> RunningEdge {
    let config = EdgeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        control: control.into(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        ..EdgeConfig::default()
    };
    let edge =
        edgekv_edge::open(config, clock as Arc<dyn Clock>, token_table(), CREDENTIAL).unwrap();
    RunningEdge::start(edge).await.unwrap()
}

async fn route_version(running: &RunningEdge) -> String {
    let url = format!(
        "http://{}/client/v4/accounts/acct/storage/kv/namespaces",
        running.http_addr
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get("edgekv-route-version")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_checks_every_table_control_sends() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000_000).await;
    let (table_tx, table_rx) = mpsc::channel(4);
    let (ack_tx, mut acks) = mpsc::channel(16);
    let scripted = Scripted {
        tables: Arc::new(Mutex::new(Some(table_rx))),
        acks: ack_tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(control_server::ControlServer::new(scripted))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let running = start_edge(dir.path(), &control, clock.clone()).await;
    let hello = acks.recv().await.unwrap();
    assert_eq!(
        (hello.version, hello.environment.as_str()),
        (0, ENVIRONMENT)
    );

    // A good table: installed and ACKed; the edge syncs through its known-good build.
    table_tx
        .send(table(
            5,
            vec![entry("v1", ENVIRONMENT, 10_000, &origin.url)],
        ))
        .await
        .unwrap();
    let ack = acks.recv().await.unwrap();
    assert_eq!((ack.version, ack.nack_reason.as_str()), (5, ""));
    let edge = running.edge().clone();
    eventually(Duration::from_secs(10), "the edge syncs", || {
        let edge = edge.clone();
        async move { edge.feed().synced() }
    })
    .await;
    assert_eq!(route_version(&running).await, "5");

    // The 2023 table: a staging build with a look-alike id. NACKed, not installed.
    let staging = table(
        6,
        vec![
            entry("v1", ENVIRONMENT, 9000, &origin.url),
            entry("v1-stg", "staging", 1000, &origin.url),
        ],
    );
    table_tx.send(staging).await.unwrap();
    let nack = acks.recv().await.unwrap();
    assert_eq!(nack.nacked_version, 6);
    assert!(nack.nack_reason.contains("staging"), "{}", nack.nack_reason);
    assert_eq!(nack.version, 5, "the edge still holds 5");
    // A malformed one (weights that do not sum to 100%): NACKed too.
    table_tx
        .send(table(7, vec![entry("v1", ENVIRONMENT, 9000, &origin.url)]))
        .await
        .unwrap();
    let nack = acks.recv().await.unwrap();
    assert!(nack.nack_reason.contains("10000"), "{}", nack.nack_reason);
    // The same version with other content: NACKed.
    table_tx
        .send(table(
            5,
            vec![entry("v1", ENVIRONMENT, 10_000, "http://elsewhere:1")],
        ))
        .await
        .unwrap();
    let nack = acks.recv().await.unwrap();
    assert!(
        nack.nack_reason.contains("other content"),
        "{}",
        nack.nack_reason
    );
    // ...and it keeps serving with the last good table.
    assert_eq!(route_version(&running).await, "5");

    // An admin may target a build of the table directly; nobody else, nothing else.
    let base = format!(
        "http://{}/client/v4/accounts/acct/storage/kv",
        running.http_addr
    );
    let kv = edgekv_test_support::Client::new(&base, TOKEN);
    let ns = kv.create_namespace("override").await;
    assert_eq!(kv.put(&ns, "k", "v").await, 200);
    let get = |token: &'static str, build: &'static str| {
        reqwest::Client::new()
            .get(format!("{base}/namespaces/{ns}/values/k"))
            .bearer_auth(token)
            .header("edgekv-version-override", build)
            .send()
    };
    let response = get(TOKEN, "v1").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["edgekv-build"], "v1");
    assert_eq!(
        get(TOKEN, "v9").await.unwrap().status(),
        400,
        "not in the table"
    );
    // Writes and lists honour it too.
    let put = |build: &'static str, value: &'static str| {
        reqwest::Client::new()
            .put(format!("{base}/namespaces/{ns}/values/k"))
            .bearer_auth(TOKEN)
            .header("edgekv-version-override", build)
            .body(value)
            .send()
    };
    assert_eq!(put("v1", "via-v1").await.unwrap().status(), 200);
    assert_eq!(put("v9", "nowhere").await.unwrap().status(), 400);
    assert_eq!(kv.get(&ns, "k").await, (200, b"via-v1".to_vec()));
    let listed = reqwest::Client::new()
        .get(format!("{base}/namespaces/{ns}/keys"))
        .bearer_auth(TOKEN)
        .header("edgekv-version-override", "v9")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 400);
    let reader = edgekv_test_support::READ_ONLY_TOKEN;
    assert_eq!(
        get(reader, "v1").await.unwrap().status(),
        403,
        "not an admin token"
    );

    // A new build that fails this edge's own health probe is ejected: its share
    // goes to known-good.
    let unreachable = table(
        9,
        vec![
            entry("v1", ENVIRONMENT, 0, &origin.url),
            entry("v2", ENVIRONMENT, 10_000, "http://127.0.0.1:1"),
        ],
    );
    table_tx.send(unreachable).await.unwrap();
    let ack = acks.recv().await.unwrap();
    assert_eq!((ack.version, ack.nack_reason.as_str()), (9, ""));
    let url = format!("{base}/namespaces/{ns}/values/k");
    eventually(
        Duration::from_secs(10),
        "v2 is ejected and reads go to known-good",
        || {
            let url = url.clone();
            async move {
                let response = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(TOKEN)
                    .header("cache-control", "no-cache")
                    .send()
                    .await
                    .unwrap();
                response
                    .headers()
                    .get("edgekv-build")
                    .is_some_and(|b| b == "v1")
            }
        },
    )
    .await;
    assert!(running.edge().routes().is_ejected("v2"));

    // Restarted while control is down, it serves with the table it kept on disk.
    drop(edge);
    running.shutdown().await;
    let restarted = start_edge(dir.path(), "http://127.0.0.1:1", clock).await;
    assert_eq!(route_version(&restarted).await, "9");
    restarted.shutdown().await;
}
