//! Test support for edgekv: a real origin build and a real edge on `127.0.0.1:0`,
//! each over RocksDB in a temporary directory, an HTTP client for the edge's API,
//! and an `eventually` helper.
//!
//! Everything here runs the real parts — real hyper listeners, real RocksDB on disk —
//! so tests built on it exercise what production runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::{Clock, ManualClock};
use edgekv_origin::{OriginConfig, RunningOrigin};

/// The environment and tenant of test clusters.
pub const ENVIRONMENT: &str = "test";
/// The credential of the test environment.
pub const CREDENTIAL: &str = "test-environment-credential";

/// The account every test edge serves.
pub const ACCOUNT: &str = "acct";
/// A token with full rights on [`ACCOUNT`].
pub const TOKEN: &str = "00000000000000000000000000000001";
/// A token with full rights on another account.
pub const OTHER_ACCOUNT_TOKEN: &str = "00000000000000000000000000000002";
/// A read-only token on [`ACCOUNT`].
pub const READ_ONLY_TOKEN: &str = "00000000000000000000000000000003";

/// The token table of test edges.
pub fn token_table() -> TokenTable {
    let read_only = Grant {
        read_only: true,
        admin: false,
        ..Grant::full("read-only", ACCOUNT)
    };
    TokenTable::new(
        1,
        [
            (tokens::hash(TOKEN), Grant::full("test", ACCOUNT)),
            (
                tokens::hash(OTHER_ACCOUNT_TOKEN),
                Grant::full("other", "other-acct"),
            ),
            (tokens::hash(READ_ONLY_TOKEN), read_only),
        ],
    )
}

/// A real origin process in-process: one build, `v1`, on loopback.
pub struct TestOrigin {
    /// The running origin.
    pub running: Option<RunningOrigin>,
    /// The URL of build `v1`.
    pub url: String,
    dir: PathBuf,
    clock: Arc<ManualClock>,
    log_retain: u64,
    _temp: tempfile::TempDir,
}

impl TestOrigin {
    /// Starts an origin that keeps `log_retain` revisions, reading `clock`.
    pub async fn start(clock: Arc<ManualClock>, log_retain: u64) -> TestOrigin {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        std::fs::write(dir.join("credentials"), format!("{CREDENTIAL}\n")).unwrap();
        let running = Self::run(&dir, clock.clone(), log_retain, "127.0.0.1:0").await;
        TestOrigin {
            url: running.url("v1").unwrap(),
            running: Some(running),
            dir,
            clock,
            log_retain,
            _temp: temp,
        }
    }

    async fn run(
        dir: &Path,
        clock: Arc<ManualClock>,
        log_retain: u64,
        addr: &str,
    ) -> RunningOrigin {
        let config = OriginConfig {
            data_dir: dir.to_path_buf(),
            environment: ENVIRONMENT.into(),
            tenant: ENVIRONMENT.into(),
            credential_file: dir.join("credentials"),
            builds: vec![format!("v1={addr}").parse().unwrap()],
            log_retain,
            progress_interval_ms: 50,
            sync_writes: false,
            maintenance_interval_ms: 50,
            ..OriginConfig::default()
        };
        RunningOrigin::start(config, clock as Arc<dyn Clock>)
            .await
            .unwrap()
    }

    /// The origin's data dir (its store, while it is stopped, may be copied or
    /// replaced: a backup, a restore).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the origin; its store stays.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Starts the origin again on the same store and address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.url.trim_start_matches("http://").to_string();
        self.running = Some(Self::run(&self.dir, self.clock.clone(), self.log_retain, &addr).await);
    }
}

/// A real edge serving on loopback, its data dir and its clock.
pub struct TestEdge {
    /// The running edge.
    pub running: Option<RunningEdge>,
    /// The manual clock the edge (and its origin) reads; advance it to expire keys.
    pub clock: Arc<ManualClock>,
    /// `http://ADDR/client/v4/accounts/acct/storage/kv`.
    pub base: String,
    /// The admin listener's base URL.
    pub admin: String,
    /// Where workerd's KV binding protocol listens.
    pub binding: std::net::SocketAddr,
    /// The origin this edge reads through to, when the edge started it.
    pub origin: Option<TestOrigin>,
    origin_url: String,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestEdge {
    /// Starts an origin and an edge following it, each in a new temporary directory.
    pub async fn start() -> TestEdge {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let origin = TestOrigin::start(clock.clone(), 1_000_000).await;
        let mut edge = Self::start_with(&origin.url, clock).await;
        edge.origin = Some(origin);
        edge
    }

    /// Starts an edge of an existing origin, in a new temporary directory.
    pub async fn start_with(origin_url: &str, clock: Arc<ManualClock>) -> TestEdge {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut edge = Self::start_in(&dir, origin_url, clock).await;
        edge._temp = Some(temp);
        edge
    }

    /// Starts an edge over an existing data dir (for restart tests), and waits until
    /// it has synced with its origin.
    pub async fn start_in(dir: &Path, origin_url: &str, clock: Arc<ManualClock>) -> TestEdge {
        let config = EdgeConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            binding: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: dir.to_path_buf(),
            hot_tier_bytes: 64 * 1024 * 1024,
            shutdown_grace_s: 5,
            origin: origin_url.to_string(),
            environment: ENVIRONMENT.into(),
            tenant: ENVIRONMENT.into(),
            ..EdgeConfig::default()
        };
        let edge = edgekv_edge::open(
            config,
            clock.clone() as Arc<dyn Clock>,
            token_table(),
            CREDENTIAL,
        )
        .unwrap();
        let running = RunningEdge::start(edge).await.unwrap();
        let synced = running.edge().clone();
        eventually(
            Duration::from_secs(10),
            "the edge syncs with its origin",
            || {
                let edge = synced.clone();
                async move { edge.feed().synced() && edge.feed().connected() }
            },
        )
        .await;
        TestEdge {
            base: format!(
                "http://{}/client/v4/accounts/{ACCOUNT}/storage/kv",
                running.http_addr
            ),
            admin: format!("http://{}", running.admin_addr),
            binding: running.binding_addr.unwrap(),
            running: Some(running),
            clock,
            origin: None,
            origin_url: origin_url.to_string(),
            dir: dir.to_path_buf(),
            _temp: None,
        }
    }

    /// The edge's data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The running edge's core.
    pub fn edge(&self) -> &Arc<edgekv_edge::Edge> {
        self.running.as_ref().unwrap().edge()
    }

    /// Stops the edge gracefully; its data dir stays.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Stops the edge and starts a new one over the same directory, origin and clock.
    pub async fn restart(mut self) -> TestEdge {
        self.stop().await;
        let temp = self._temp.take();
        let origin = self.origin.take();
        let mut next = Self::start_in(&self.dir, &self.origin_url, self.clock.clone()).await;
        next._temp = temp;
        next.origin = origin;
        next
    }

    /// An HTTP client authenticated with [`TOKEN`].
    pub fn client(&self) -> Client {
        Client::new(&self.base, TOKEN)
    }
}

/// A thin client of the KV API for tests.
#[derive(Clone)]
pub struct Client {
    /// The base URL (`.../storage/kv`).
    pub base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of `base` that sends `token`.
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// A request to `path` (appended to the base), authenticated.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Creates a namespace and returns its id.
    pub async fn create_namespace(&self, title: &str) -> String {
        self.create(serde_json::json!({ "title": title })).await
    }

    /// Creates a `full` namespace (every edge holds every key) and returns its id.
    pub async fn create_full_namespace(&self, title: &str) -> String {
        self.create(serde_json::json!({ "title": title, "mode": "full" }))
            .await
    }

    async fn create(&self, body: serde_json::Value) -> String {
        let response = self
            .request(reqwest::Method::POST, "/namespaces")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["result"]["id"].as_str().unwrap().to_string()
    }

    /// The URL path of a key's value.
    pub fn value_path(ns: &str, key: &str) -> String {
        format!("/namespaces/{ns}/values/{}", encode(key))
    }

    /// Puts a raw value; returns the status.
    pub async fn put(&self, ns: &str, key: &str, value: impl Into<reqwest::Body>) -> u16 {
        self.request(reqwest::Method::PUT, &Self::value_path(ns, key))
            .body(value)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Gets a value: `(status, body)`.
    pub async fn get(&self, ns: &str, key: &str) -> (u16, Vec<u8>) {
        let response = self
            .request(reqwest::Method::GET, &Self::value_path(ns, key))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// Deletes a key; returns the status.
    pub async fn delete(&self, ns: &str, key: &str) -> u16 {
        self.request(reqwest::Method::DELETE, &Self::value_path(ns, key))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Percent-encodes a key for a URL path: every byte but ASCII letters and digits.
pub fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Polls `check` until it returns true or `deadline` passes; panics with `what`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= until {
            panic!("not true within {deadline:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
