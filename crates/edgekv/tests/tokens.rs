//! Token tables as strict as route tables, end to end with real processes: a
//! token is for one environment and a staging token never works on a production
//! edge; an edge NACKs an older token table, or the same version with other
//! content, and keeps serving with the table it holds — across its own restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{ACCOUNT, Control, Edge, Kv, Origin, eventually};

/// Creates a token of `environment` on control; returns the secret.
fn create(control: &Control, name: &str, environment: &str) -> String {
    control
        .ok(&[
            "token",
            "create",
            name,
            "--account",
            ACCOUNT,
            "--environment",
            environment,
        ])
        .trim()
        .to_string()
}

/// The status of a read of key `k` of `ns` at `edge` with `token`.
async fn get(edge: &Edge, ns: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/namespaces/{ns}/values/k", edge.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The token table the edge refused last (version, reason), unless it accepted
/// one since.
async fn token_nack(edge: &Edge) -> Option<(u64, String)> {
    let status = edge.status().await;
    let nack = &status["token_nack"];
    Some((
        nack["version"].as_u64()?,
        nack["reason"].as_str()?.to_string(),
    ))
}

/// Waits until the edge has NACKed `version` for a reason that says `why`.
async fn nacked(edge: &Edge, version: u64, why: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("the edge NACKs token table {version} ({why})"),
        || async {
            matches!(token_nack(edge).await, Some((v, reason)) if v == version && reason.contains(why))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_token_never_works_on_a_production_edge_and_an_older_token_table_is_nacked() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let production = Origin::start(dirs[0].path(), "production", "prod-cred", &["kv-v1"], &[]);
    let staging_credential = dirs[1].path().join("staging-credential");
    std::fs::write(&staging_credential, "stg-cred\n").unwrap();
    let mut control = Control::start(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &staging_credential,
    );
    control.register("kv-v1", "production", &production.url("kv-v1"));
    control.bootstrap("kv-v1", "production");
    let mut edge = Edge::start_with_control(
        dirs[2].path(),
        &control.url,
        "production",
        "prod-cred",
        &["--node-id", "edge-a"],
    );
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("config", "cache").await;
    assert_eq!(kv.put(&ns, "k", "v").await, 200);

    // A token names its environment, one control knows.
    let out = control.cli(&["token", "create", "app", "--account", ACCOUNT]);
    assert!(!out.status.success(), "a token without an environment");
    let why = control.refused(&[
        "token",
        "create",
        "app",
        "--account",
        ACCOUNT,
        "--environment",
        "prodution",
    ]);
    assert!(why.contains("prodution"), "{why}");

    // A staging token, then a production one: the table that brings the
    // production token was issued after both, and still holds no staging token.
    let staging_token = create(&control, "stg-app", "staging");
    let production_token = create(&control, "prod-app", "production");
    eventually(
        Duration::from_secs(5),
        "the production token works at the production edge",
        || async { get(&edge, &ns, &production_token).await == 200 },
    )
    .await;
    assert_eq!(
        get(&edge, &ns, &staging_token).await,
        401,
        "a staging token works on a production edge"
    );
    let listed = control.ok(&["token", "list", "--environment", "production"]);
    assert!(
        listed.contains("prod-app\tacct") && !listed.contains("stg-app"),
        "{listed}"
    );

    // Control's state now (token table version 2); then a newer token (version 3).
    let state = dirs[1].path().join("state").join("control.json");
    let older_state = std::fs::read(&state).unwrap();
    let newer_token = create(&control, "prod-app-2", "production");
    eventually(
        Duration::from_secs(5),
        "the newer token works at the edge",
        || async { get(&edge, &ns, &newer_token).await == 200 },
    )
    .await;
    assert_eq!(edge.status().await["token_table_version"], 3);

    // Control comes back from the older state and offers version 2: the edge
    // NACKs it, keeps version 3, and serves with it.
    control.proc.terminate();
    std::fs::write(&state, &older_state).unwrap();
    control = Control::run(control.args.clone());
    nacked(&edge, 2, "older").await;
    assert_eq!(edge.status().await["token_table_version"], 3);
    assert_eq!(
        get(&edge, &ns, &newer_token).await,
        200,
        "the edge dropped a token of the table it holds"
    );
    assert_eq!(get(&edge, &ns, &production_token).await, 200);
    assert_eq!(get(&edge, &ns, &staging_token).await, 401);

    // The older control issues a version 3 of its own: the same version with
    // other content is NACKed as well.
    let conflicting = create(&control, "prod-app-3", "production");
    nacked(&edge, 3, "other content").await;
    assert_eq!(get(&edge, &ns, &conflicting).await, 401);
    assert_eq!(get(&edge, &ns, &newer_token).await, 200);

    // What the edge holds survives its restart: it loads its version 3 from disk
    // and NACKs control's other version 3 again.
    edge.proc.terminate();
    edge = edge.start_again();
    edge.ready().await;
    nacked(&edge, 3, "other content").await;
    assert_eq!(get(&edge, &ns, &newer_token).await, 200);
    assert_eq!(get(&edge, &ns, &conflicting).await, 401);
    assert_eq!(get(&edge, &ns, &staging_token).await, 401);

    // A newer version installs: control's own tokens rule again.
    let latest = create(&control, "prod-app-4", "production");
    eventually(
        Duration::from_secs(5),
        "the newer table installs",
        || async { get(&edge, &ns, &latest).await == 200 },
    )
    .await;
    assert_eq!(get(&edge, &ns, &conflicting).await, 200);
    assert_eq!(
        get(&edge, &ns, &newer_token).await,
        401,
        "a token control does not know"
    );
    assert_eq!(edge.status().await["token_nack"], serde_json::Value::Null);
    drop(production);
}
