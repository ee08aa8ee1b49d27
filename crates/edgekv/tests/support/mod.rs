//! Processes of the real `edgekv` binary for end-to-end tests: origins and edges
//! on loopback, each in its own temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgekv");
pub const ACCOUNT: &str = "acct";
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A command without the caller's EDGEKV_* variables.
pub fn clean(mut command: Command) -> Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("EDGEKV_") {
            command.env_remove(key);
        }
    }
    command
}

/// A free loopback address below the kernel's ephemeral port range, for servers a
/// test restarts on the same address. A port from the ephemeral range can be taken,
/// while its server is down, by a client of it reconnecting: the kernel may give
/// that client the very port it dials, and the socket connects to itself.
pub fn low_port_addr() -> String {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(101)) % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
}

/// A running process and the lines it printed before it was ready.
pub struct Proc {
    pub child: Child,
    pub lines: Vec<String>,
}

impl Proc {
    /// Spawns `command` and waits for `count` stdout lines containing `ready`.
    pub fn spawn(mut command: Command, ready: &str, count: usize) -> Proc {
        // EDGEKV_TEST_LOGS=1 shows the processes' logs.
        let logs = if std::env::var_os("EDGEKV_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = command.stdout(Stdio::piped()).stderr(logs).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Keep draining so the process never writes to a closed pipe.
                    continue;
                }
            }
        });
        let mut lines = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen += usize::from(line.contains(ready));
                    lines.push(line);
                    if seen == count {
                        return Proc { child, lines };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("process did not print {ready:?} in time; printed {lines:?}");
                }
            }
        }
    }

    /// Sends SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit (a process already killed with
    /// [`Proc::kill9`] stays so).
    pub fn terminate(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An origin process serving builds of one environment.
pub struct Origin {
    pub proc: Proc,
    pub dir: PathBuf,
    pub environment: String,
    /// `build id → http://ADDR`.
    pub builds: Vec<(String, String)>,
    specs: Vec<String>,
    extra: Vec<String>,
}

impl Origin {
    /// Starts an origin with `specs` like `v1` or `v2,fault=latency=1s` (ports are
    /// chosen by the system).
    pub fn start(
        dir: &Path,
        environment: &str,
        credential: &str,
        specs: &[&str],
        extra: &[&str],
    ) -> Origin {
        std::fs::write(dir.join("credentials"), format!("{credential}\n")).unwrap();
        let specs: Vec<String> = specs
            .iter()
            .map(|s| match s.split_once(',') {
                Some((id, rest)) => format!("{id}={},{rest}", low_port_addr()),
                None => format!("{s}={}", low_port_addr()),
            })
            .collect();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::run(dir, environment, specs, extra)
    }

    fn run(dir: &Path, environment: &str, specs: Vec<String>, extra: Vec<String>) -> Origin {
        let mut command = clean(Command::new(BIN));
        command
            .args(["origin", "--environment", environment, "--data-dir"])
            .arg(dir.join("data"))
            .arg("--credential-file")
            .arg(dir.join("credentials"))
            .args(&extra);
        for spec in &specs {
            command.args(["--build", spec]);
        }
        let proc = Proc::spawn(command, "listening", specs.len());
        let builds = proc
            .lines
            .iter()
            .filter_map(|l| {
                let id = l.strip_prefix("build ")?.split(' ').next()?.to_string();
                let url = l.rsplit(' ').next()?.to_string();
                Some((id, url))
            })
            .collect();
        Origin {
            proc,
            dir: dir.to_path_buf(),
            environment: environment.to_string(),
            builds,
            specs,
            extra,
        }
    }

    /// The URL of a build.
    pub fn url(&self, build: &str) -> String {
        self.builds
            .iter()
            .find(|(id, _)| id == build)
            .map(|(_, url)| url.clone())
            .unwrap_or_else(|| panic!("no build {build} in {:?}", self.builds))
    }

    /// Stops the origin (SIGTERM) and starts it again on the same addresses and store.
    pub fn restart(&mut self) {
        self.proc.terminate();
        let specs = self
            .specs
            .iter()
            .map(|spec| {
                let (id, rest) = spec.split_once('=').unwrap();
                let url = self.url(id);
                let addr = url.trim_start_matches("http://");
                match rest.split_once(',') {
                    Some((_, options)) => format!("{id}={addr},{options}"),
                    None => format!("{id}={addr}"),
                }
            })
            .collect();
        let next = Self::run(
            &self.dir,
            &self.environment.clone(),
            specs,
            self.extra.clone(),
        );
        *self = next;
    }
}

/// An edge process.
pub struct Edge {
    pub proc: Proc,
    pub dir: PathBuf,
    /// `http://ADDR/client/v4/accounts/acct/storage/kv`.
    pub base: String,
    pub admin: String,
    args: Vec<String>,
}

impl Edge {
    /// Starts an edge that follows control's route tables.
    pub fn start_with_control(
        dir: &Path,
        control_url: &str,
        environment: &str,
        credential: &str,
        extra: &[&str],
    ) -> Edge {
        let mut args = vec!["--control", control_url];
        args.extend_from_slice(extra);
        Self::start_with(dir, None, environment, credential, &args)
    }

    /// Starts an edge of `origin_url` in `environment`, with `credential`.
    pub fn start(
        dir: &Path,
        origin_url: &str,
        environment: &str,
        credential: &str,
        extra: &[&str],
    ) -> Edge {
        Self::start_with(dir, Some(origin_url), environment, credential, extra)
    }

    fn start_with(
        dir: &Path,
        origin_url: Option<&str>,
        environment: &str,
        credential: &str,
        extra: &[&str],
    ) -> Edge {
        std::fs::write(dir.join("credential"), format!("{credential}\n")).unwrap();
        let mut args: Vec<String> = vec![
            "edge".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--environment".into(),
            environment.into(),
            "--credential-file".into(),
            dir.join("credential").display().to_string(),
            "--account".into(),
            ACCOUNT.into(),
            "--token".into(),
            TOKEN.into(),
        ];
        if let Some(url) = origin_url {
            args.extend(["--origin".to_string(), url.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::run(dir, args)
    }

    fn run(dir: &Path, args: Vec<String>) -> Edge {
        let mut command = clean(Command::new(BIN));
        command.args(&args);
        let proc = Proc::spawn(command, "listening on", 1);
        let line = proc.lines.last().unwrap().clone();
        // "edge NODE listening on http://A (admin http://B)"
        let http = line
            .split(" on ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let admin = line
            .rsplit("admin ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_string();
        Edge {
            proc,
            dir: dir.to_path_buf(),
            base: format!("{http}/client/v4/accounts/{ACCOUNT}/storage/kv"),
            admin,
            args,
        }
    }

    /// Starts the edge again over the same data dir (new ports).
    pub fn start_again(&self) -> Edge {
        Self::run(&self.dir, self.args.clone())
    }

    /// The edge's `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/status", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the edge is ready (synced with its origin).
    pub async fn ready(&self) {
        eventually(Duration::from_secs(20), "the edge is ready", || async {
            reqwest::get(format!("{}/readyz", self.admin))
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await;
    }
}

/// A KV client of an edge.
pub struct Kv {
    pub base: String,
    http: reqwest::Client,
}

impl Kv {
    pub fn of(edge: &Edge) -> Kv {
        Kv {
            base: edge.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    pub async fn create_namespace(&self, title: &str, mode: &str) -> String {
        let response = self
            .request(reqwest::Method::POST, "/namespaces")
            .json(&serde_json::json!({ "title": title, "mode": mode }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["result"]["id"].as_str().unwrap().to_string()
    }

    pub async fn put(&self, ns: &str, key: &str, value: &str) -> u16 {
        match self
            .request(
                reqwest::Method::PUT,
                &format!("/namespaces/{ns}/values/{key}"),
            )
            .body(value.to_string())
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn delete(&self, ns: &str, key: &str) -> u16 {
        self.request(
            reqwest::Method::DELETE,
            &format!("/namespaces/{ns}/values/{key}"),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }

    /// `(status, body, edgekv-cache header)`.
    pub async fn get_with(&self, ns: &str, key: &str, no_cache: bool) -> (u16, String, String) {
        let mut request = self.request(
            reqwest::Method::GET,
            &format!("/namespaces/{ns}/values/{key}"),
        );
        if no_cache {
            request = request.header("cache-control", "no-cache");
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("edgekv-cache")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, response.text().await.unwrap(), cache)
    }

    pub async fn get(&self, ns: &str, key: &str) -> (u16, String) {
        let (status, body, _) = self.get_with(ns, key, false).await;
        (status, body)
    }

    /// Every key of a namespace, following cursors.
    pub async fn list(&self, ns: &str) -> (u16, Vec<String>) {
        let mut keys = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut path = format!("/namespaces/{ns}/keys");
            if !cursor.is_empty() {
                path.push_str(&format!("?cursor={cursor}"));
            }
            let response = self
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status != 200 {
                return (status, keys);
            }
            let body: serde_json::Value = response.json().await.unwrap();
            keys.extend(
                body["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k["name"].as_str().unwrap().to_string()),
            );
            cursor = body["result_info"]["cursor"].as_str().unwrap().to_string();
            if cursor.is_empty() {
                return (status, keys);
            }
        }
    }
}

pub use edgekv_test_support::eventually;

pub const ADMIN: &str = "operator-admin-token";

/// A control plane process, and the operator commands against it.
pub struct Control {
    pub proc: Proc,
    pub url: String,
    pub args: Vec<String>,
}

impl Control {
    pub fn start(dir: &Path, production: &Path, staging: &Path) -> Control {
        Self::start_with(dir, production, staging, &[])
    }

    /// [`Control::start`] with more flags.
    pub fn start_with(dir: &Path, production: &Path, staging: &Path, extra: &[&str]) -> Control {
        std::fs::write(dir.join("admin"), format!("{ADMIN}\n")).unwrap();
        let args = vec![
            "control".to_string(),
            "--grpc".into(),
            low_port_addr(),
            "--data-dir".into(),
            dir.join("state").display().to_string(),
            "--admin-token-file".into(),
            dir.join("admin").display().to_string(),
            "--probe-credential".into(),
            format!("production={}", production.display()),
            "--probe-credential".into(),
            format!("staging={}", staging.display()),
            "--tick-ms".into(),
            "100".into(),
        ];
        let args = args
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        Self::run(args)
    }

    pub fn run(args: Vec<String>) -> Control {
        let mut command = clean(Command::new(BIN));
        command.args(&args);
        let proc = Proc::spawn(command, "control listening on", 1);
        let url = proc
            .lines
            .last()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string();
        Control { proc, url, args }
    }

    /// Runs an operator command against this control plane.
    pub fn cli(&self, args: &[&str]) -> Output {
        clean(Command::new(BIN))
            .args(args)
            .args(["--control", &self.url, "--admin-token", ADMIN])
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?} was not refused: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Registers a build of an environment at `url`.
    pub fn register(&self, id: &str, environment: &str, url: &str) {
        self.ok(&[
            "build",
            "register",
            id,
            "--environment",
            environment,
            "--endpoint",
            url,
        ]);
    }

    /// Deploys the first build of `environment` (a bootstrap, no traffic needed).
    /// Deploys `build` to all of `environment` at once and waits until the
    /// deployment has completed, so that the build is known-good and the next
    /// deployment is not refused as one started while this one is active.
    pub fn bootstrap(&self, build: &str, environment: &str) {
        self.deploy_at_once(build, environment, &[]);
    }

    /// Deploys `build` to all of `environment` at once (with `extra` flags) and
    /// waits until the deployment has completed.
    pub fn deploy_at_once(&self, build: &str, environment: &str, extra: &[&str]) {
        let mut args = vec![
            "deploy",
            "start",
            build,
            "--environment",
            environment,
            "--min-requests",
            "0",
            "--steps",
            "100:0s",
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let id = out
            .split_whitespace()
            .skip_while(|word| *word != "deployment")
            .nth(1)
            .map(|id| id.trim_end_matches(':').to_string())
            .unwrap_or_else(|| panic!("no deployment id in {out:?}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(&id);
            if status["phase"] == "completed" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} of {build} did not complete: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a rollout of `build` in `environment` judged on faults, not on
    /// latency (p99 ceilings out of reach: a debug build on a shared machine
    /// running other tests is too noisy to judge), promoted with at least
    /// `min_requests` requests per window, through `steps` (`10:1s,100:600s`).
    pub fn start_rollout_judged_on_faults(
        &self,
        build: &str,
        environment: &str,
        min_requests: u32,
        steps: &str,
    ) {
        self.ok(&[
            "deploy",
            "start",
            build,
            "--environment",
            environment,
            "--min-requests",
            &min_requests.to_string(),
            "--max-p99-ms",
            "10000",
            "--relative-p99",
            "100",
            "--steps",
            steps,
        ]);
    }

    /// Waits (up to a minute) until deployment `id` runs at step index `step`,
    /// promoted on health; fails at once if it stops running.
    pub async fn wait_for_step(&self, id: &str, step: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(id);
            if status["phase"] == "running" && status["step"] == step {
                return;
            }
            assert!(
                status["phase"] == "running" && Instant::now() < deadline,
                "the rollout did not reach step {} on health: {status:#}",
                step + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn status(&self, id: &str) -> serde_json::Value {
        let text = self.ok(&["deploy", "status", id, "--json"]);
        serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
    }
}

// Helpers shared by the end-to-end tests of rollouts and faults.

/// An edge admin listener's JSON document at `path`.
pub async fn admin_json(edge: &Edge, path: &str) -> serde_json::Value {
    reqwest::get(format!("{}{path}", edge.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A gauge or counter from an edge's `/metrics`.
pub async fn metric(edge: &Edge, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", edge.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

pub async fn fill(kv: &Kv, ns: &str, count: usize) {
    let items: Vec<serde_json::Value> = (0..count)
        .map(|i| serde_json::json!({"key": format!("key-{i:04}"), "value": format!("value-{i}")}))
        .collect();
    let response = kv
        .request(reqwest::Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The builds that answered `no-cache` reads of `sample`.
pub async fn builds_of(kv: &Kv, ns: &str, sample: &[String]) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for key in sample {
        seen.insert(answered_by(kv, ns, key).await);
    }
    seen
}

/// The build that answered a `no-cache` read.
pub async fn answered_by(kv: &Kv, ns: &str, key: &str) -> String {
    let response = kv
        .request(
            reqwest::Method::GET,
            &format!("/namespaces/{ns}/values/{key}"),
        )
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a held key read through");
    response
        .headers()
        .get("edgekv-build")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}
