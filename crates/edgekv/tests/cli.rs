//! End-to-end: real `edgekv` processes — `edgekv dev` serving, the `kv` client
//! commands against it, SIGTERM, restart on the same data dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edgekv");

/// A running `edgekv dev` and what it printed.
struct Dev {
    child: Child,
    url: String,
    token: String,
    /// The control plane's URL and admin token.
    control: (String, String),
    /// The banner's "try" command that creates a namespace.
    try_create: String,
}

impl Dev {
    fn start(dir: &Path, extra: &[&str]) -> Dev {
        let mut child = clean(Command::new(BIN))
            .args([
                "dev",
                "--http",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut token, mut control, mut try_create) = (None, None, None, None);
        while url.is_none() || token.is_none() || control.is_none() || try_create.is_none() {
            let line = lines
                .next()
                .expect("edgekv dev exited before its banner")
                .unwrap();
            if let Some(rest) = line.trim().strip_prefix("edge:") {
                url = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("token:") {
                token = Some(rest.trim().to_string());
            }
            if line.contains("kv namespace create") {
                try_create = Some(line.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("control:") {
                // "http://ADDR (admin token T)"
                let mut words = rest.split_whitespace();
                let control_url = words.next().unwrap().to_string();
                let admin = words.last().unwrap().trim_end_matches(')').to_string();
                control = Some((control_url, admin));
            }
        }
        // Keep draining what it prints, so it never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Dev {
            child,
            url: url.unwrap(),
            token: token.unwrap(),
            control: control.unwrap(),
            try_create: try_create.unwrap(),
        }
    }

    fn kv(&self, args: &[&str]) -> Output {
        self.kv_with_input(args, None)
    }

    fn kv_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = clean(Command::new(BIN))
            .arg("kv")
            .args(args)
            .env("EDGEKV_URL", &self.url)
            .env("EDGEKV_TOKEN", &self.token)
            .env("EDGEKV_ACCOUNT", "dev")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "edgekv dev exited with {status} on SIGTERM"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "edgekv dev did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command without the caller's EDGEKV_* variables.
fn clean(mut command: Command) -> Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("EDGEKV_") {
            command.env_remove(key);
        }
    }
    command
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn dev_serves_the_client_commands_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), &[]);
    assert_eq!(dev.token.len(), 32, "a generated 128-bit token");

    let ns = stdout(&dev.kv(&["namespace", "create", "demo"]))
        .trim()
        .to_string();
    assert_eq!(ns.len(), 32);
    let listed = stdout(&dev.kv(&["namespace", "list"]));
    assert_eq!(listed, format!("{ns}\tdemo\n"));

    stdout(&dev.kv(&["put", &ns, "greeting", "hello world"]));
    assert_eq!(stdout(&dev.kv(&["get", &ns, "greeting"])), "hello world");
    // A value from standard input, binary and with a slash in its key.
    let binary: Vec<u8> = (0..=255).collect();
    stdout(&dev.kv_with_input(&["put", &ns, "bin/ary"], Some(&binary)));
    let output = dev.kv(&["get", &ns, "bin/ary"]);
    assert!(output.status.success());
    assert_eq!(output.stdout, binary);
    // Metadata and TTL.
    stdout(&dev.kv(&[
        "put",
        &ns,
        "meta",
        "v",
        "--metadata",
        r#"{"a":1}"#,
        "--ttl",
        "3600",
    ]));
    let listed = stdout(&dev.kv(&["list", &ns, "--json"]));
    assert!(listed.contains(r#""metadata":{"a":1}"#), "{listed}");
    assert_eq!(stdout(&dev.kv(&["list", &ns])), "bin/ary\ngreeting\nmeta\n");
    assert_eq!(
        stdout(&dev.kv(&["list", &ns, "--prefix", "g"])),
        "greeting\n"
    );
    assert_eq!(stdout(&dev.kv(&["list", &ns, "--limit", "1"])), "bin/ary\n");

    // Exit codes scripts can use.
    stdout(&dev.kv(&["delete", &ns, "greeting"]));
    let missing = dev.kv(&["get", &ns, "greeting"]);
    assert_eq!(missing.status.code(), Some(1), "not found");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let denied = clean(Command::new(BIN))
        .args(["kv", "--url", &dev.url, "--token", "wrong", "get", &ns, "k"])
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(3), "auth refused");
    let refused = dev.kv(&["put", &ns, &"k".repeat(600), "v"]);
    assert_eq!(refused.status.code(), Some(4), "invalid request");
    let unreachable = clean(Command::new(BIN))
        .args([
            "kv",
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "get",
            &ns,
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(5), "edge unreachable");

    let token = dev.token.clone();
    dev.stop();

    // Restart on the same dir: same token, same data.
    let dev = Dev::start(dir.path(), &[]);
    assert_eq!(
        dev.token, token,
        "the generated token is kept in the data dir"
    );
    let output = dev.kv(&["get", &ns, "bin/ary"]);
    assert!(output.status.success());
    assert_eq!(output.stdout, binary);
    assert_eq!(stdout(&dev.kv(&["get", &ns, "meta"])), "v");
    assert_eq!(
        dev.kv(&["get", &ns, "greeting"]).status.code(),
        Some(1),
        "the delete survived"
    );
    dev.stop();
}

#[test]
fn dev_token_can_be_fixed_and_the_config_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        dir.path(),
        &["--token", "my-fixed-token", "--account", "team"],
    );
    assert_eq!(dev.token, "my-fixed-token");
    let output = clean(Command::new(BIN))
        .args([
            "kv",
            "--url",
            &dev.url,
            "--token",
            "my-fixed-token",
            "--account",
            "team",
        ])
        .args(["namespace", "create", "x"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dev.stop();

    // A config file with an unknown key is refused with a message naming it.
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[edge]\nhot_tier_byte = 5\n").unwrap();
    let output = clean(Command::new(BIN))
        .args(["dev", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hot_tier_byte"), "{stderr}");
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = clean(Command::new(BIN))
        .args([
            "dev",
            "--http",
            &addr,
            "--admin",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}

/// A newcomer can try a rollout on one machine: `edgekv dev` runs control with two
/// builds, the first known-good.
#[test]
fn dev_runs_control_with_two_builds_to_roll_out() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), &[]);
    let (control, admin) = dev.control.clone();
    let ops = |args: &[&str]| {
        clean(Command::new(BIN))
            .args(args)
            .args(["--control", &control, "--admin-token", &admin])
            .output()
            .unwrap()
    };
    let listed = ops(&["build", "list", "--environment", "dev"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("dev-1") && listed.contains("dev-2"),
        "{listed}"
    );
    let ns = stdout(&dev.kv(&["namespace", "create", "rollout"]))
        .trim()
        .to_string();
    stdout(&dev.kv(&["put", &ns, "k", "v"]));
    let started = ops(&[
        "deploy",
        "start",
        "dev-2",
        "--environment",
        "dev",
        "--min-requests",
        "0",
        "--steps",
        "100:0s",
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // Reads that go to a build now go to dev-2.
    let url = format!(
        "{}/client/v4/accounts/dev/storage/kv/namespaces/{ns}/values/k",
        dev.url
    );
    let addr = dev.url.trim_start_matches("http://").to_string();
    let path = url.trim_start_matches(&dev.url).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let head = http_get_head(&addr, &path, &dev.token);
        if head.to_ascii_lowercase().contains("edgekv-build: dev-2") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reads never reached dev-2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dev.stop();
}

/// The response head of a no-cache GET, over a plain TCP connection.
fn http_get_head(addr: &str, path: &str, token: &str) -> String {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The stderr lines an origin writes while it starts, with `--log-format format`
/// and stderr a pipe (not a terminal).
fn origin_log_lines(format: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("credentials"), "cred\n").unwrap();
    let mut child = clean(Command::new(BIN))
        .args([
            "--log-format",
            format,
            "origin",
            "--environment",
            "production",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--credential-file")
        .arg(dir.path().join("credentials"))
        .args(["--build", "v1=127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("listening on") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Logs a tool can read: no ANSI colour codes when stderr is not a terminal, and
/// `--log-format json` writes one JSON object per line.
#[test]
fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let text = origin_log_lines("text");
    assert!(text.iter().any(|l| l.contains("build serving")), "{text:?}");
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in a pipe: {text:?}"
    );
    let json = origin_log_lines("json");
    assert!(!json.is_empty());
    for line in &json {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
    }
    assert!(json.iter().any(|l| l.contains("build serving")), "{json:?}");
}

/// `make dev` leaves no `edgekv` on the PATH: the commands its banner offers to
/// try name the running binary, and work as printed.
#[test]
fn the_banner_commands_name_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), &[]);
    let mut words = dev.try_create.split_whitespace();
    let program = words.next().unwrap();
    assert!(
        std::path::Path::new(program).is_absolute(),
        "{}",
        dev.try_create
    );
    let args: Vec<&str> = words.collect();
    let out = clean(Command::new(program))
        .args(&args)
        .env("EDGEKV_URL", &dev.url)
        .env("EDGEKV_TOKEN", &dev.token)
        .env("EDGEKV_ACCOUNT", "dev")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        dev.try_create,
        String::from_utf8_lossy(&out.stderr)
    );
    dev.stop();
}

/// `edgekv dev --store postgres://...` runs the whole demo with the origin on
/// PostgreSQL: the data lives in the database, so a new data dir over the same
/// database still finds it.
#[test]
fn dev_runs_on_postgres() {
    use edgekv_store_postgres::testing::{TestPostgres, query_i64};
    let server = TestPostgres::shared();
    let url = server.database();
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let dev = Dev::start(dir.path(), &["--store", &url, "--token", token]);
    let ns = stdout(&dev.kv(&["namespace", "create", "on-postgres"]))
        .trim()
        .to_string();
    stdout(&dev.kv(&["put", &ns, "greeting", "hello from postgres"]));
    assert_eq!(
        stdout(&dev.kv(&["get", &ns, "greeting"])),
        "hello from postgres"
    );
    let rows = query_i64(
        &url,
        &format!("SELECT count(*) FROM edgekv_records WHERE namespace = '{ns}'"),
    );
    assert_eq!(rows, [1], "the value is in the database");
    dev.stop();

    // A fresh data dir (no RocksDB of the origin's, no edge cache), same database.
    let other = tempfile::tempdir().unwrap();
    let again = Dev::start(other.path(), &["--store", &url, "--token", token]);
    assert_eq!(
        stdout(&again.kv(&["get", &ns, "greeting"])),
        "hello from postgres"
    );
    assert!(
        !other.path().join("origin").join("db").exists(),
        "the origin kept nothing in the data dir"
    );
    again.stop();
}
