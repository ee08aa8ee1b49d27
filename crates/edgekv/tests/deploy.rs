//! Every example config under `deploy/` parses and validates.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn configs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            configs(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn example_configs_parse() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut found = Vec::new();
    configs(&deploy, &mut found);
    assert!(
        found.len() >= 2,
        "no example configs found under {}",
        deploy.display()
    );
    for path in found {
        edgekv::config::File::load(Some(&path))
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}

/// Every example config, loaded by the binary itself with `--check-config`: it
/// validates the file with the flags an operator would add (the credential file
/// and builds are per host) and prints what it would run; a broken config is
/// refused with the field named.
#[test]
fn example_configs_pass_the_binarys_own_check() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_edgekv");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, "a-credential\n").unwrap();
    let credentials = credentials.to_str().unwrap();
    let check = |role: &str, config: &Path, extra: &[&str]| {
        let out = Command::new(bin)
            .args([role, "--config"])
            .arg(config)
            .arg("--check-config")
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (role, file, extra) in [
        (
            "origin",
            "origin.toml",
            vec![
                "--credential-file",
                credentials,
                "--build",
                "v1=127.0.0.1:7001",
            ],
        ),
        ("edge", "edge.toml", vec!["--credential-file", credentials]),
        ("dev", "dev.toml", vec![]),
    ] {
        let (ok, stdout, stderr) = check(role, &deploy.join(file), &extra);
        assert!(ok, "{file}: {stderr}");
        assert!(stdout.starts_with("configuration OK"), "{file}: {stdout}");
    }
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[edge]\nhot_tier_bytes = 10\n").unwrap();
    let (ok, _, stderr) = check(
        "edge",
        &broken,
        &[
            "--credential-file",
            credentials,
            "--origin",
            "http://127.0.0.1:1",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("hot_tier_bytes"), "{stderr}");
    let (ok, _, stderr) = check(
        "edge",
        &deploy.join("edge.toml"),
        &["--credential-file", "/nonexistent/credentials"],
    );
    assert!(!ok, "a missing credential file is an error");
    assert!(stderr.contains("/nonexistent/credentials"), "{stderr}");
}
