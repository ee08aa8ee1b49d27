//! TLS on every gRPC link, end to end with real processes: origin builds and
//! control serve TLS with a certificate from a throwaway CA made here; edges,
//! control's probes and the CLI trust that CA; an `https://` endpoint is refused,
//! never called in clear, where no CA is configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ADMIN, BIN, Control, Edge, Kv, Origin, clean};

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files
/// in `dir`: (ca, cert, key).
fn throwaway_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "edgekv test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// An operator command against control over TLS (`ca`: the CA it trusts).
fn cli(control: &Control, ca: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut command = clean(Command::new(BIN));
    command
        .args(args)
        .args(["--control", &control.url, "--admin-token", ADMIN]);
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command.output().unwrap()
}

fn ok(control: &Control, ca: &Path, args: &[&str]) -> String {
    let out = cli(control, Some(ca), args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_link_speaks_tls_and_https_without_a_ca_is_refused() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ca, cert, key) = throwaway_ca(dirs[4].path());
    let (ca_s, cert_s, key_s) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let origin = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1"],
        &["--tls-cert", cert_s, "--tls-key", key_s],
    );
    let build_url = origin.url("kv-v1");
    assert!(build_url.starts_with("https://"), "{build_url}");
    let control = Control::start_with(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
        &["--tls-cert", cert_s, "--tls-key", key_s, "--tls-ca", ca_s],
    );
    assert!(control.url.starts_with("https://"), "{}", control.url);

    // The CLI without the CA refuses the https control URL.
    let refused = cli(
        &control,
        None,
        &["build", "list", "--environment", "production"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--tls-ca"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // With it: register (control probes the https build with the CA) and deploy.
    ok(
        &control,
        &ca,
        &[
            "build",
            "register",
            "kv-v1",
            "--environment",
            "production",
            "--endpoint",
            &build_url,
        ],
    );
    ok(
        &control,
        &ca,
        &[
            "deploy",
            "start",
            "kv-v1",
            "--environment",
            "production",
            "--min-requests",
            "0",
            "--steps",
            "100:0s",
        ],
    );

    // An edge trusting the CA follows control over TLS and calls the build over TLS.
    let edge = Edge::start_with_control(
        dirs[2].path(),
        &control.url,
        "production",
        "prod-cred",
        &["--node-id", "edge-a", "--tls-ca", ca_s],
    );
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("tls", "cache").await;
    assert_eq!(kv.put(&ns, "k", "over tls").await, 200);
    let (status, body, _) = kv.get_with(&ns, "k", true).await;
    assert_eq!((status, body.as_str()), (200, "over tls"));

    // An edge of an https origin with no CA refuses to start rather than send its
    // credential in clear.
    std::fs::write(dirs[3].path().join("credential"), "prod-cred\n").unwrap();
    let out = clean(Command::new(BIN))
        .args(["edge", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dirs[3].path().join("data"))
        .args(["--environment", "production", "--origin", &build_url])
        .arg("--credential-file")
        .arg(dirs[3].path().join("credential"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an edge without a CA started");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-ca"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
