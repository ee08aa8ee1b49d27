//! Real Workers on workerd reading edgekv through their KV binding: the
//! `workerd` binary from npm (installed by scripts/node-deps.sh into
//! ~/.cache/edgekv-node) runs a Worker whose `env.KV` names the edge's
//! `--binding` listener, as an operator would configure it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BIN, Control, Edge, Kv, Origin, Proc, TOKEN, clean, eventually, low_port_addr};

/// The Worker the tests run.
const WORKER: &str = include_str!("workerd/every-call.js");

/// The workerd binary: `EDGEKV_WORKERD`, else what scripts/node-deps.sh
/// installed. Missing, the test fails and says how to install it.
fn workerd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEKV_WORKERD") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("EDGEKV_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/edgekv-node")
        });
    let bin = dir.join("node_modules/.bin/workerd");
    assert!(
        bin.exists(),
        "workerd is not installed at {}: run ./scripts/node-deps.sh (or make test, which does)",
        bin.display()
    );
    bin
}

/// A workerd process serving one config; killed on drop.
struct Workerd {
    child: Child,
    /// Where the Worker answers: `http://ADDR`.
    url: String,
}

impl Workerd {
    /// Serves `config` (in `dir`), with its `http` socket on a free port;
    /// waits until it accepts connections.
    fn serve(dir: &Path, config: &Path) -> Workerd {
        let addr = low_port_addr();
        let logs = if std::env::var_os("EDGEKV_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new(workerd_bin())
            .current_dir(dir)
            .arg("serve")
            .arg(config)
            .args(["--socket-addr", &format!("http={addr}")])
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .unwrap();
        let mut workerd = Workerd {
            child,
            url: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                workerd.child.try_wait().unwrap().is_none(),
                "workerd exited; run with EDGEKV_TEST_LOGS=1 to see why"
            );
            assert!(
                Instant::now() < deadline,
                "workerd did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        workerd
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An external service of the config: the binding listener at `binding`,
/// with these headers added to every request.
fn service(name: &str, binding: &str, headers: &[(&str, &str)]) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("(name = \"{n}\", value = \"{v}\")"))
        .collect();
    format!(
        "(name = \"{name}\", external = (address = \"{binding}\", http = (injectRequestHeaders = [{}])))",
        headers.join(", ")
    )
}

/// Writes the test Worker and its config into `dir`: `KV` as an operator
/// configures it, and bindings with a wrong token, no namespace and an
/// unknown namespace.
fn write_config(dir: &Path, binding: &str, token: &str, namespace: &str) -> PathBuf {
    std::fs::write(dir.join("w.js"), WORKER).unwrap();
    let bearer = format!("Bearer {token}");
    let services = [
        service(
            "edgekv",
            binding,
            &[("Authorization", &bearer), ("edgekv-namespace", namespace)],
        ),
        service(
            "bad-token",
            binding,
            &[
                ("Authorization", "Bearer not-a-token"),
                ("edgekv-namespace", namespace),
            ],
        ),
        service("no-namespace", binding, &[("Authorization", &bearer)]),
        service(
            "unknown-namespace",
            binding,
            &[
                ("Authorization", &bearer),
                ("edgekv-namespace", "00000000000000000000000000000000"),
            ],
        ),
    ];
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = (
      modules = [(name = "w.js", esModule = embed "w.js")],
      compatibilityDate = "2025-09-01",
      bindings = [
        (name = "KV", kvNamespace = "edgekv"),
        (name = "BAD_TOKEN", kvNamespace = "bad-token"),
        (name = "NO_NAMESPACE", kvNamespace = "no-namespace"),
        (name = "UNKNOWN_NAMESPACE", kvNamespace = "unknown-namespace"),
      ],
    )),
    {services},
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);
"#,
        services = services.join(",\n    ")
    );
    let path = dir.join("test.capnp");
    std::fs::write(&path, config).unwrap();
    path
}

/// `edgekv dev --binding`, and what its banner says.
struct Dev {
    child: Child,
    binding: String,
    namespace: String,
    config: PathBuf,
    token: String,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let mut child = clean(Command::new(BIN))
            .args(["dev", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args([
                "--control-listen",
                "127.0.0.1:0",
                "--binding",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut binding, mut token, mut config) = (None, None, None);
        while config.is_none() {
            let line = lines.next().expect("edgekv dev exited").unwrap();
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("binding: http://") {
                // "binding: http://ADDR (namespace ID, "workers")"
                let mut words = rest.split_whitespace();
                binding = Some((
                    words.next().unwrap().to_string(),
                    words.nth(1).unwrap().trim_end_matches(',').to_string(),
                ));
            } else if let Some(rest) = line.strip_prefix("token:") {
                token = Some(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("npx workerd serve ") {
                config = Some(PathBuf::from(rest.trim()));
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (binding, namespace) = binding.expect("no binding: line");
        Dev {
            child,
            binding,
            namespace,
            config: config.unwrap(),
            token: token.expect("no token: line"),
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(report: &Value, name: &str) -> Value {
    let outcome = &report[name];
    assert!(
        outcome.get("error").is_none(),
        "{name} threw: {}",
        outcome["error"]
    );
    outcome
        .get("ok")
        .unwrap_or_else(|| panic!("the Worker reported no {name}: {outcome}"))
        .clone()
}

fn error(report: &Value, name: &str) -> String {
    report[name]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} did not throw: {}", report[name]))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_workerd_uses_every_call_of_the_kv_binding_against_edgekv_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("data"));
    assert_eq!(dev.namespace.len(), 32, "{}", dev.namespace);

    // The sample config and Worker that `edgekv dev` wrote run as printed.
    let sample = Workerd::serve(dev.config.parent().unwrap(), &dev.config);
    let (status, body) = sample.get("/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("visit 1"), "{body}");
    let (_, body) = sample.get("/").await;
    assert!(
        body.contains("visit 2") && body.contains("keys: visits"),
        "{body}"
    );
    drop(sample);

    let work = dir.path().join("worker");
    std::fs::create_dir_all(&work).unwrap();
    let config = write_config(&work, &dev.binding, &dev.token, &dev.namespace);
    let worker = Workerd::serve(&work, &config);
    let r = worker.json("/every-call").await;

    // Every read type.
    assert_eq!(ok(&r, "put_text"), "done");
    assert_eq!(ok(&r, "get_text"), "héllo wörld");
    assert_eq!(ok(&r, "get_text_type"), "héllo wörld");
    assert_eq!(ok(&r, "get_text_opts"), "héllo wörld");
    assert_eq!(ok(&r, "get_json"), json!({"a": 1, "b": [true, null]}));
    assert_eq!(ok(&r, "get_json_opts"), json!({"a": 1, "b": [true, null]}));
    assert_eq!(ok(&r, "get_bytes"), json!([0, 1, 2, 255]));
    assert_eq!(ok(&r, "get_stream"), "héllo wörld");
    assert_eq!(ok(&r, "put_stream"), "streamed value");
    assert_eq!(ok(&r, "get_empty"), "");
    assert_eq!(ok(&r, "get_missing"), Value::Null);
    assert_eq!(ok(&r, "get_cache_ttl"), "héllo wörld");

    // Metadata both ways, raw UTF-8; a string's metadata; none; a miss.
    let meta = ok(&r, "meta");
    assert_eq!(meta["value"], "v");
    assert_eq!(meta["metadata"], json!({"owner": "ünïcode ✓", "n": 5}));
    assert!(
        ["HIT", "MISS"].contains(&meta["cacheStatus"].as_str().unwrap()),
        "{meta}"
    );
    assert_eq!(ok(&r, "meta_str")["metadata"], "just text");
    let meta_json = ok(&r, "meta_json");
    assert_eq!(meta_json["value"], json!({"a": 1, "b": [true, null]}));
    assert_eq!(meta_json["metadata"], Value::Null);
    let missing = ok(&r, "meta_missing");
    assert_eq!(
        (&missing["value"], &missing["metadata"]),
        (&Value::Null, &Value::Null)
    );

    // Awkward keys: each read back as written, then gone after its delete.
    let awkward = r["awkward"].as_object().unwrap();
    assert_eq!(awkward.len(), 8);
    for (key, value) in awkward {
        assert_eq!(value, &format!("value of {key}"), "{key:?}");
    }
    assert_eq!(
        r["awkward_deleted"],
        json!([null, null, null, null, null, null, null, null])
    );
    assert_eq!(r["list_plus"], json!(["a+b"]), "`+` is no space in keys");
    assert_eq!(r["list_unicode"], json!(["ünï ✓ 😀"]));
    assert_eq!(r["list_plus_deleted"], json!([]));

    // A list over three pages of 10, in byte order, ending complete.
    let expected: Vec<String> = (0..25).map(|i| format!("page/{i:02}")).collect();
    assert_eq!(r["list_names"], json!(expected));
    assert_eq!(r["list_pages"], 3);
    assert_eq!(r["list_last_complete"], true);
    assert_eq!(r["list_last_cursor"], Value::Null);
    assert_eq!(
        r["list_cache_status"], "MISS",
        "a list of a cache namespace asks a build"
    );
    // Expirations and metadata in a list; metadata as workerd parsed it.
    let all = r["list_all"].as_array().unwrap();
    let entry = |name: &str| {
        all.iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {all:?}"))
            .clone()
    };
    let now = r["now"].as_u64().unwrap();
    assert_eq!(entry("exp-at")["expiration"], now + 3600);
    assert_eq!(entry("exp-str")["expiration"], now + 7200);
    let ttl = entry("exp-ttl")["expiration"].as_u64().unwrap();
    assert!((now + 119..=now + 125).contains(&ttl), "{ttl} vs {now}");
    assert!(entry("text").get("expiration").is_none());
    assert_eq!(
        entry("meta")["metadata"],
        json!({"owner": "ünïcode ✓", "n": 5})
    );
    assert_eq!(entry("meta-str")["metadata"], "just text");
    let mut names: Vec<&str> = all.iter().map(|k| k["name"].as_str().unwrap()).collect();
    let listed = names.clone();
    names.sort_unstable();
    assert_eq!(listed, names, "a list is in byte order");

    // Bulk gets: in request order, a key asked twice once, null for a miss;
    // json values parsed; metadata as JSON values.
    assert_eq!(
        ok(&r, "bulk_text"),
        json!({"text": "héllo wörld", "missing": null, "a+b": "value of a+b"})
    );
    assert_eq!(
        ok(&r, "bulk_json"),
        json!({"json": {"a": 1, "b": [true, null]}})
    );
    assert_eq!(
        ok(&r, "bulk_meta"),
        json!({
            "meta": {"value": "v", "metadata": {"owner": "ünïcode ✓", "n": 5}},
            "meta-str": {"value": "v", "metadata": "just text"},
            "missing": null,
        })
    );
    let refused = error(&r, "bulk_not_json");
    assert!(refused.starts_with("KV GET_BULK failed: 400"), "{refused}");
    assert!(refused.contains("not JSON"), "{refused}");
    assert!(error(&r, "bulk_101").contains("KV GET_BULK failed: 400"));
    assert!(error(&r, "bulk_101").contains("100"));
    assert!(error(&r, "bulk_stream").contains("KV GET_BULK failed: 400"));
    assert!(error(&r, "bulk_array_buffer").contains("KV GET_BULK failed: 400"));
    assert!(error(&r, "bulk_empty").contains("KV GET_BULK failed: 400"));
    let bad_key = error(&r, "bulk_bad_key");
    assert!(
        bad_key.contains("KV GET_BULK failed: 400") && bad_key.contains("item 1"),
        "{bad_key}"
    );
    // Metadata is kept as the Worker wrote it: its key order too.
    assert_eq!(ok(&r, "meta_order"), json!(["z", "a", "m"]));
    assert_eq!(ok(&r, "meta_order_list"), json!(["z", "a", "m"]));

    // Deletes.
    assert_eq!(ok(&r, "delete"), "done");
    assert_eq!(ok(&r, "get_deleted"), Value::Null);
    assert_eq!(ok(&r, "delete_missing"), "done");

    // Refusals, with the reason the Worker sees.
    for (name, prefix, says) in [
        ("refuse_ttl", "KV PUT failed: 400", "expiration_ttl"),
        ("refuse_past", "KV PUT failed: 400", "expiration"),
        ("refuse_metadata", "KV PUT failed: 413", "1024"),
        ("refuse_value", "KV PUT failed: 413", "26214400"),
        ("refuse_limit", "KV GET failed: 400", "1000"),
        (
            "refuse_cache_ttl",
            "KV GET failed: 400",
            "Cache TTL must be at least 30",
        ),
        ("refuse_cursor", "KV GET failed: 400", "Invalid cursor"),
        ("refuse_prefix", "KV GET failed: 400", "512"),
        (
            "bad_token",
            "KV GET failed: 401",
            "invalid or revoked token",
        ),
        (
            "bad_token_put",
            "KV PUT failed: 401",
            "invalid or revoked token",
        ),
        ("no_namespace", "KV GET failed: 400", "edgekv-namespace"),
        (
            "unknown_namespace",
            "KV GET failed: 400",
            "namespace not found",
        ),
    ] {
        let message = error(&r, name);
        assert!(
            message.starts_with(prefix) && message.contains(says),
            "{name}: {message:?} (expected {prefix:?} saying {says:?})"
        );
    }
    // A value at the limit goes through.
    assert_eq!(ok(&r, "value_25mib"), 25 * 1024 * 1024);

    // On the wire: metadata as raw UTF-8 JSON text, where it came from.
    let response = reqwest::Client::new()
        .get(format!("http://{}/meta?urlencoded=true", dev.binding))
        .bearer_auth(&dev.token)
        .header("edgekv-namespace", &dev.namespace)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    let metadata = std::str::from_utf8(headers["cf-kv-metadata"].as_bytes()).unwrap();
    assert!(metadata.contains("ünïcode ✓"), "not raw UTF-8: {metadata}");
    assert_eq!(
        serde_json::from_str::<Value>(metadata).unwrap(),
        json!({"owner": "ünïcode ✓", "n": 5})
    );
    assert_eq!(headers["cf-cache-status"], "HIT");
}

/// Puts `count` keys `{prefix}-NNNN` = `{value} N` through the REST API.
async fn put_many(kv: &Kv, ns: &str, prefix: &str, value: &str, count: usize) {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({"key": format!("{prefix}-{i:04}"), "value": format!("{value}{i}")}))
        .collect();
    let response = kv
        .request(reqwest::Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The 2023 incident under a Worker: a rollout to a build that starts refusing
/// the edge's credential while Workers read and write through their binding.
/// No call fails — held keys, read-throughs, lists, writes — and control rolls
/// the build back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sees_no_failed_call_during_a_rollout_to_a_build_that_refuses_the_edge() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let switch = dirs[0].path().join("break-kv-v2");
    let v2 = format!("kv-v2,fault=unauthenticated;when={}", switch.display());
    let origin = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", &v2],
        &[],
    );
    std::fs::write(dirs[1].path().join("credentials"), "stg-cred\n").unwrap();
    let control = Control::start(
        dirs[2].path(),
        &dirs[0].path().join("credentials"),
        &dirs[1].path().join("credentials"),
    );
    control.register("kv-v1", "production", &origin.url("kv-v1"));
    control.register("kv-v2", "production", &origin.url("kv-v2"));
    control.bootstrap("kv-v1", "production");
    let edge = Edge::start_with_control(
        dirs[3].path(),
        &control.url,
        "production",
        "prod-cred",
        &["--node-id", "edge-a", "--binding", "127.0.0.1:0"],
    );
    let other = Edge::start_with_control(
        dirs[4].path(),
        &control.url,
        "production",
        "prod-cred",
        &["--node-id", "edge-b"],
    );
    edge.ready().await;
    other.ready().await;
    let binding = binding_of(&edge.proc);
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("config", "cache").await;
    // Held at the Worker's edge (written through it); the cold keys are
    // written at the other edge, so the first read of each goes to a build.
    put_many(&kv, &ns, "held", "value-", 200).await;
    eventually(
        Duration::from_secs(10),
        "edge-b knows the namespace",
        || async { Kv::of(&other).get(&ns, "held-0000").await.0 == 200 },
    )
    .await;
    put_many(&Kv::of(&other), &ns, "cold", "cold value ", 300).await;

    let work = dirs[3].path().join("worker");
    std::fs::create_dir_all(&work).unwrap();
    let config = write_config(&work, &binding, TOKEN, &ns);
    let worker = Workerd::serve(&work, &config);
    let first = worker.json("/mixed?round=0").await;
    assert_eq!(first["failures"], json!([]), "{first}");

    control.start_rollout_judged_on_faults("kv-v2", "production", 5, "50:600s,100:600s");
    control.wait_for_step("production-2", 0).await;
    // kv-v2 starts answering UNAUTHENTICATED to everyone.
    std::fs::write(&switch, b"").unwrap();
    let (mut calls, mut failures, mut rounds) = (0u64, Vec::new(), 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rolled_back_at = None;
    while rolled_back_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(2)) {
        assert!(Instant::now() < deadline, "control did not roll kv-v2 back");
        rounds += 1;
        let report = worker.json(&format!("/mixed?round={rounds}")).await;
        calls += report["calls"].as_u64().unwrap();
        failures.extend(report["failures"].as_array().unwrap().iter().cloned());
        if rolled_back_at.is_none() && control.status("production-2")["phase"] == "rolled_back" {
            rolled_back_at = Some(Instant::now());
        }
    }
    let status = control.status("production-2");
    assert!(
        status["reason"].as_str().unwrap().contains("kv-v2"),
        "{status}"
    );
    assert!(rounds >= 3, "only {rounds} rounds ran");
    assert_eq!(
        failures,
        Vec::<Value>::new(),
        "{calls} calls in {rounds} rounds"
    );
    eprintln!(
        "{calls} binding calls in {rounds} rounds, 0 failed; rolled back: {}",
        status["reason"]
    );
}

/// The `binding: http://ADDR` line an edge printed.
fn binding_of(proc: &Proc) -> String {
    proc.lines
        .iter()
        .find_map(|l| l.strip_prefix("binding: http://"))
        .unwrap_or_else(|| panic!("no binding line in {:?}", proc.lines))
        .trim()
        .parse::<SocketAddr>()
        .unwrap()
        .to_string()
}
