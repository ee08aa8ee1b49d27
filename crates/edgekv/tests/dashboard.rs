//! Control's rollout dashboard in a real browser: `edgekv dev` serves it, and
//! tests/dashboard/drive.cjs drives Debian's chromium through playwright-core
//! (both installed by scripts/node-deps.sh) while the edgekv CLI starts a
//! rollout: the steps advance on the page, the verdict and its figures show,
//! the buttons refuse without the admin token, and with it pause, resume and a
//! rollback (its reason in the history) work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{BIN, clean};

fn node_dir() -> PathBuf {
    std::env::var_os("EDGEKV_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/edgekv-node")
        })
}

#[test]
fn the_dashboard_shows_a_rollout_advance_and_acts_only_with_the_admin_token() {
    let playwright = node_dir().join("node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "playwright-core is not installed at {}: run ./scripts/node-deps.sh (or make test, which does)",
        playwright.display()
    );
    let chromium = std::env::var("EDGEKV_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no chromium at {chromium}: run ./scripts/node-deps.sh (it installs Debian's chromium)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut dev = clean(Command::new(BIN))
        .args(["dev", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args([
            "--control-listen",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let (mut dashboard, mut control) = (None, None);
    while dashboard.is_none() || control.is_none() {
        let line = lines.next().expect("edgekv dev exited").unwrap();
        let line = line.trim();
        if let Some(url) = line.strip_prefix("dashboard: ") {
            dashboard = Some(url.to_string());
        } else if let Some(rest) = line.strip_prefix("control:") {
            // "control:  http://ADDR (admin token TOKEN)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            control = Some((
                words[0].to_string(),
                words[3].trim_end_matches(')').to_string(),
            ));
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let dashboard = dashboard.unwrap();
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{dashboard}");
    let (control, admin) = control.unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/dashboard/drive.cjs"
        ))
        .args([&dashboard, BIN, &control, &admin])
        .arg(&shots)
        .env("EDGEKV_NODE_DIR", node_dir())
        .env("EDGEKV_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = dev.kill();
    let _ = dev.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok: the rollback's reason shown"),
        "{stdout}"
    );
    let shot = std::fs::metadata(shots.join("dashboard.png")).unwrap();
    assert!(shot.len() > 10_000, "a screenshot of {} bytes", shot.len());
    if let Some(keep) = std::env::var_os("EDGEKV_KEEP_SCREENSHOT") {
        std::fs::copy(shots.join("dashboard.png"), keep).unwrap();
    }
}
