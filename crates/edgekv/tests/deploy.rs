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

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A tool of the test venv (`scripts/python-venv.sh`, which `make test` runs).
fn venv_tool(name: &str) -> String {
    let venv = std::env::var("EDGEKV_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/edgekv-venv", std::env::var("HOME").unwrap()));
    let tool = format!("{venv}/bin/{name}");
    assert!(
        Path::new(&tool).exists(),
        "{tool} is missing: run ./scripts/python-venv.sh (make test does)"
    );
    tool
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every Kubernetes manifest validates against the API's schemas (version 1.31,
/// strict: an unknown field is an error); a broken copy does not.
#[test]
fn kubernetes_manifests_validate_against_the_api() {
    let validate = venv_tool("kubernetes-validate");
    let dir = deploy_dir().join("kubernetes");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 5, "{manifests:?}");
    let mut kinds = String::new();
    for manifest in &manifests {
        let path = manifest.to_str().unwrap();
        let (ok, out) = run(&validate, &["-k", "1.31.0", "--strict", path]);
        assert!(ok, "{path}: {out}");
        kinds.push_str(&std::fs::read_to_string(manifest).unwrap());
    }
    for kind in [
        "kind: StatefulSet",
        "kind: Service",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: PodDisruptionBudget",
        "path: /readyz",
        "path: /healthz",
        "grpc:",
        "requests:",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes");
    }
    // The check can fail: a port that is not a number is refused.
    let broken = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    let edge = std::fs::read_to_string(dir.join("edge.yaml")).unwrap();
    std::fs::write(
        broken.path(),
        edge.replace("containerPort: 8787", "containerPort: eighty-seven"),
    )
    .unwrap();
    let (ok, out) = run(
        &validate,
        &["-k", "1.31.0", "--strict", broken.path().to_str().unwrap()],
    );
    assert!(!ok, "a broken manifest passed: {out}");
}

/// The compose file validates against the compose specification; a broken copy
/// does not.
#[test]
fn the_compose_file_matches_the_compose_spec() {
    let check = venv_tool("check-jsonschema");
    let compose = deploy_dir().join("compose/compose.yaml");
    let (ok, out) = run(
        &check,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            compose.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let broken = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    let text = std::fs::read_to_string(&compose).unwrap();
    assert!(text.contains(r#"ports: ["8797:8787"]"#));
    std::fs::write(
        broken.path(),
        text.replace(r#"ports: ["8797:8787"]"#, r#"ports: "8797:8787""#),
    )
    .unwrap();
    let (ok, out) = run(
        &check,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            broken.path().to_str().unwrap(),
        ],
    );
    assert!(!ok, "a broken compose file passed: {out}");
}

/// The Dockerfile builds in one stage and runs in another, as a non-root user,
/// with a health check and the binary as its entrypoint.
#[test]
fn the_dockerfile_is_multi_stage_non_root_and_checks_health() {
    let text = std::fs::read_to_string(deploy_dir().join("docker/Dockerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(from >= 2, "one stage only");
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("COPY --from=build"))
    );
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    let user = last_stage
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the run stage names a user");
    assert!(
        !user.starts_with("root") && !user.starts_with("0:") && user != "0",
        "runs as {user}"
    );
    assert!(last_stage.contains("HEALTHCHECK"));
    assert!(last_stage.contains(r#"ENTRYPOINT ["edgekv"]"#));
}

/// Every command the deployment files run — the compose services', the
/// Kubernetes containers', the image's default — passes `edgekv ... --check-config`
/// with the files they name (secrets, the ConfigMap's config) put in place: a
/// renamed or misspelt flag fails here, not at deploy time.
#[test]
fn the_deployment_files_commands_pass_the_binarys_check() {
    let bin = env!("CARGO_BIN_EXE_edgekv");
    let deploy = deploy_dir();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    for name in ["credential", "admin_token", "admin-token"] {
        std::fs::write(dir.path().join("secrets").join(name), "a-secret\n").unwrap();
    }
    // The ConfigMap's edge.toml, with its data dir moved under the temp dir.
    let configmap = std::fs::read_to_string(deploy.join("kubernetes/configmap.yaml")).unwrap();
    let edge_toml: String = configmap
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("edge.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect::<String>()
        .replace("/var/lib/edgekv", &format!("{root}/var"));
    assert!(edge_toml.contains("[edge]"), "{configmap}");
    std::fs::write(dir.path().join("edge.toml"), edge_toml).unwrap();
    let place = |arg: &str| {
        arg.replace("/run/secrets/", &format!("{root}/secrets/"))
            .replace("/etc/edgekv/secrets/", &format!("{root}/secrets/"))
            .replace("/etc/edgekv/edge.toml", &format!("{root}/edge.toml"))
            .replace("/var/lib/edgekv", &format!("{root}/var"))
    };
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    let files = [
        ("compose/compose.yaml", "command: "),
        ("kubernetes/origin.yaml", "args: "),
        ("kubernetes/control.yaml", "args: "),
        ("kubernetes/edge.yaml", "args: "),
        ("docker/Dockerfile", "CMD "),
    ];
    for (file, prefix) in files {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        for line in text.lines() {
            // The image's own CMD starts its line; the health check's is indented.
            let line = if prefix == "CMD " { line } else { line.trim() };
            if let Some(json) = line.strip_prefix(prefix) {
                let args: Vec<String> = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{file}: {json} is not one line of JSON: {e}"));
                commands.push((file.to_string(), args.iter().map(|a| place(a)).collect()));
            }
        }
    }
    assert!(commands.len() >= 8, "{commands:?}");
    for (file, args) in &commands {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("--check-config")
            .output()
            .unwrap();
        assert!(
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
            "{file}: edgekv {args:?} --check-config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the check can fail: a misspelt flag is refused.
    let out = std::process::Command::new(bin)
        .args(["edge", "--contrl", "http://x:7000", "--check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
