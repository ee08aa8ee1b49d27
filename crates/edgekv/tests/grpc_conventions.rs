//! The gRPC conventions orchestrators and operators rely on, checked from outside
//! with Python's grpcio against the real binary: the standard `grpc.health.v1`
//! service (what grpc_health_probe and Kubernetes gRPC probes call) and server
//! reflection (what grpcurl uses), on origin builds and on control.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{Control, Origin};

/// The venv's python with grpcio (made by `scripts/python-venv.sh`, which
/// `make test` runs); the test fails with that command when it is missing.
fn python() -> String {
    let venv = std::env::var("EDGEKV_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/edgekv-venv", std::env::var("HOME").unwrap()));
    let python = format!("{venv}/bin/python3");
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python venv with grpcio at {venv}: run ./scripts/python-venv.sh (make test does)"
    );
    python
}

/// What `tests/python/grpc_probe.py` saw at `url` for `services`.
fn probe(url: &str, services: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_probe.py");
    let out = Command::new(python())
        .arg(script)
        .arg(url.trim_start_matches("http://"))
        .args(services)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn origin_and_control_answer_standard_health_checks_and_reflection() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), "production", "cred", &["kv-v1"], &[]);
    let control = Control::start(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
    );
    for (url, service) in [
        (origin.url("kv-v1"), "edgekv.v1.Origin"),
        (control.url.clone(), "edgekv.v1.Control"),
    ] {
        let seen = probe(&url, &[service]);
        assert_eq!(seen["health"][""], "SERVING", "{url}: {seen}");
        assert_eq!(seen["health"][service], "SERVING", "{url}: {seen}");
        assert_eq!(seen["unknown"], "NOT_FOUND", "{url}: {seen}");
        let listed: Vec<&str> = seen["listed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for name in [service, "grpc.health.v1.Health"] {
            assert!(listed.contains(&name), "{url} lists {listed:?}");
        }
        assert_eq!(seen["described"][service], true, "{url}: {seen}");
    }
}
