//! `edgekv bench` against a real edge process: it fills, runs the mix it was
//! asked for, counts what it saw and writes its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{ACCOUNT, BIN, Edge, Kv, Origin, TOKEN, clean};

fn bench(edge_root: &str, dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let report = dir.join("report.json");
    let out = clean(Command::new(BIN))
        .args([
            "bench",
            "--url",
            edge_root,
            "--token",
            TOKEN,
            "--account",
            ACCOUNT,
        ])
        .args(["--quiet", "--json"])
        .arg(&report)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgekv bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency ms: p50"), "{stdout}");
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_fills_runs_a_mix_and_reports() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), "production", "cred", &["v1"], &[]);
    let edge = Edge::start(dirs[1].path(), &origin.url("v1"), "production", "cred", &[]);
    edge.ready().await;
    let root = edge.base.split("/client/").next().unwrap().to_string();

    // A 90/10 mix over a zipfian distribution, bounded by a request count.
    let report = bench(
        &root,
        dirs[2].path(),
        &[
            "--keys",
            "300",
            "--value-size",
            "64",
            "--reads",
            "90",
            "--distribution",
            "zipfian",
            "--requests",
            "600",
            "-c",
            "4",
            "-d",
            "60s",
        ],
    );
    assert_eq!(report["requests"], 600);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["statuses"]["200"], 600, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    // The fill really wrote the keys, with values of the asked size.
    let ns = report["namespace"].as_str().unwrap().to_string();
    let (status, value) = Kv::of(&edge).get(&ns, "bench-00000299").await;
    assert_eq!((status, value.len()), (200, 64));

    // The runs below read the keys filled above.
    let over_filled = |args: &[&str]| {
        let filled = ["--namespace", &ns, "--no-fill", "--keys", "300", "-c", "2"];
        bench(&root, dirs[2].path(), &[&filled[..], args].concat())
    };

    // Bulk gets of existing keys count keys per second.
    let report = over_filled(&["--bulk-get", "20", "--requests", "50"]);
    assert_eq!(report["statuses"]["200"], 50, "{report}");
    let ratio = report["keys_per_s"].as_f64().unwrap() / report["throughput_rps"].as_f64().unwrap();
    assert!((ratio - 20.0).abs() < 1e-6, "{report}");

    // Busy-polling for answers: the same requests, and the tool still stops.
    let report = over_filled(&["--spin", "--threads", "1", "--requests", "200"]);
    assert_eq!(report["statuses"]["200"], 200, "{report}");

    // Each run picks its own seed unless told one, and reports it.
    let seeds: Vec<u64> = [&[][..], &[][..], &["--seed", "42"][..]]
        .iter()
        .map(|seed| {
            let report = over_filled(&[&["--requests", "20"][..], seed].concat());
            report["seed"].as_u64().unwrap()
        })
        .collect();
    assert_ne!(seeds[0], seeds[1], "two runs replayed one sequence");
    assert_eq!(seeds[2], 42);

    // At a fixed rate the tool paces itself (open loop): about rate × duration.
    let report = over_filled(&["--rate", "200", "-d", "2s"]);
    let sent = report["requests"].as_u64().unwrap();
    assert!((300..=420).contains(&sent), "200/s for 2 s sent {sent}");

    // Mistakes are refused with a reason.
    let out = clean(Command::new(BIN))
        .args(["bench", "--url", &root, "--token", TOKEN, "--reads", "120"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reads"));
}
