//! The long-running roles: `edgekv origin` and `edgekv edge`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use edgekv_edge::RunningEdge;
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_kv::SystemClock;
use edgekv_origin::{BuildSpec, RunningOrigin};

use crate::cli::{EdgeArgs, OriginArgs};
use crate::config::File;

/// Runs an origin until SIGINT or SIGTERM.
pub async fn origin(args: OriginArgs, file: &File) -> anyhow::Result<()> {
    let mut config = file.origin.clone().unwrap_or_default();
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    if let Some(environment) = args.environment {
        config.environment = environment;
    }
    config.tenant = tenant(
        args.tenant,
        file.origin.as_ref().map(|o| &o.tenant),
        &config.environment,
    );
    if let Some(path) = args.credential_file {
        config.credential_file = path;
    }
    if let Some(keep) = args.log_retain {
        config.log_retain = keep;
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    if let (Some(addr), Some(id)) = (args.grpc, args.build_id) {
        let mut spec: BuildSpec = format!("{id}={addr}")
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        if let Some(fault) = args.fault {
            spec.fault = Some(
                fault
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--fault: {e}"))?,
            );
        }
        config.builds.push(spec);
    }
    for text in args.build {
        config.builds.push(
            text.parse()
                .map_err(|e: String| anyhow::anyhow!("--build: {e}"))?,
        );
    }
    if args.check_config {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        edgekv_origin::credentials::read_file(&config.credential_file)?;
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            edgekv_proto::tls::server(cert, key).map_err(|e| anyhow::anyhow!(e))?;
        }
        let mut shown = config.clone();
        shown.store = shown.store.as_deref().map(edgekv_origin::config::redact);
        println!("configuration OK: would run an origin\n{shown:#?}");
        return Ok(());
    }
    let environment = config.environment.clone();
    let running = RunningOrigin::start(config, Arc::new(SystemClock))
        .await
        .context("cannot start the origin")?;
    for id in running.builds.keys() {
        let url = running.url(id).unwrap_or_default();
        println!("build {id} of environment {environment} listening on {url}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Runs an edge until SIGINT or SIGTERM.
pub async fn edge(args: EdgeArgs, file: &File) -> anyhow::Result<()> {
    let mut config = file.edge.clone().unwrap_or_default();
    if let Some(http) = args.http {
        config.http = http;
    }
    if let Some(admin) = args.admin {
        config.admin = admin;
    }
    if let Some(binding) = args.binding {
        config.binding = Some(binding);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(bytes) = args.hot_tier_bytes {
        config.hot_tier_bytes = bytes;
    }
    if let Some(origin) = args.origin {
        config.origin = origin;
    }
    if let Some(control) = args.control {
        config.control = control;
        config.origin.clear();
    }
    if let Some(environment) = args.environment {
        config.environment = environment;
    }
    config.tenant = tenant(
        args.tenant,
        file.edge.as_ref().map(|e| &e.tenant),
        &config.environment,
    );
    if args.node_id.is_some() {
        config.node_id = args.node_id;
    }
    if args.break_glass_key.is_some() {
        config.break_glass_key = args.break_glass_key;
    }
    if let Some(n) = args.origin_write_calls_in_flight {
        config.origin_write_calls_in_flight = n;
    }
    if let Some(n) = args.origin_write_call_max_writes {
        config.origin_write_call_max_writes = n;
    }
    if let Some(n) = args.origin_write_call_max_bytes {
        config.origin_write_call_max_bytes = n;
    }
    if let Some(max) = args.outbox_max_writes {
        config.outbox_max_writes = max;
    }
    if let Some(max) = args.outbox_max_bytes {
        config.outbox_max_bytes = max;
    }
    if let Some(age) = args.outbox_max_age_s {
        config.outbox_max_age_s = age;
    }
    if let Some(every) = args.probe_interval_ms {
        config.probe_interval_ms = every;
    }
    if args.tls_ca.is_some() {
        config.tls_ca = args.tls_ca;
    }
    if let Some(every) = args.namespace_refresh_interval_ms {
        config.namespace_refresh_interval_ms = every;
    }
    if let Some(max) = args.unknown_namespaces_max {
        config.unknown_namespaces_max = max;
    }
    if let Some(max) = args.hedge_max_ms {
        config.hedge_max_ms = max;
    }
    if let Some(ms) = args.slow_eject_ms {
        config.slow_eject_ms = ms;
    }
    if let Some(ms) = args.header_read_timeout_ms {
        config.header_read_timeout_ms = ms;
    }
    if let Some(ms) = args.idle_timeout_ms {
        config.idle_timeout_ms = ms;
    }
    if let Some(max) = args.max_connections {
        config.max_connections = max;
    }
    if let Some(max) = args.max_body_requests {
        config.max_body_requests = max;
    }
    if let Some(ms) = args.body_wait_ms {
        config.body_wait_ms = ms;
    }
    if let Some(ttl) = args.cache_ttl_s {
        config.cache_ttl_s = ttl;
    }
    let credential_file = args
        .credential_file
        .context("--credential-file is required: the edge's environment credential")?;
    let credential = first_credential(&credential_file)?;
    if args.check_config {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        edgekv_edge::breakglass::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(ca) = &config.tls_ca {
            edgekv_proto::tls::read_ca(ca).map_err(|e| anyhow::anyhow!(e))?;
        }
        println!(
            "configuration OK: would run an edge with the credential of {} and {}\n{config:#?}",
            credential_file.display(),
            if args.account.is_some() {
                "a bootstrap token"
            } else {
                "no bootstrap token (tokens from control)"
            }
        );
        return Ok(());
    }
    let table = match (args.account, args.token) {
        (Some(account), Some(token)) => TokenTable::new(
            1,
            [(tokens::hash(&token), Grant::full("bootstrap", account))],
        ),
        _ => {
            tracing::warn!("no --account/--token: the edge has no token table and is not ready");
            TokenTable::default()
        }
    };
    let edge = edgekv_edge::open(config, Arc::new(SystemClock), table, &credential)
        .context("cannot open the edge")?;
    let running = RunningEdge::start(edge).await?;
    // Before the line that says the edge listens, which scripts wait for.
    if let Some(binding) = running.binding_addr {
        println!("binding: http://{binding}");
    }
    println!(
        "edge {} listening on http://{} (admin http://{})",
        running.edge().node_id(),
        running.http_addr,
        running.admin_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn control(args: crate::cli::ControlArgs) -> anyhow::Result<()> {
    let mut credentials = Vec::new();
    for text in &args.probe_credential {
        let (environment, file) = text
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--probe-credential {text:?} is not ENV=FILE"))?;
        credentials.push((environment.to_string(), file.into()));
    }
    if let Some(url) = &args.store {
        edgekv_origin::config::check_store_url(url)
            .map_err(|e| anyhow::anyhow!("invalid configuration: --store: {e}"))?;
    }
    let mut config = edgekv_control::ControlConfig {
        grpc: args.grpc,
        data_dir: args.data_dir,
        admin_token_file: args.admin_token_file,
        credentials,
        tick_ms: args.tick_ms,
        break_glass_key: args.break_glass_key.clone(),
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        tls_ca: args.tls_ca.clone(),
        state: None,
        http: args.http,
        http_any_port_if_taken: false,
    };
    if args.check_config {
        let tokens = std::fs::read_to_string(&config.admin_token_file)
            .with_context(|| format!("cannot read {}", config.admin_token_file.display()))?;
        anyhow::ensure!(
            tokens
                .lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#')),
            "{} holds no admin token",
            config.admin_token_file.display()
        );
        for (environment, path) in &config.credentials {
            first_credential(path).with_context(|| format!("credential of {environment}"))?;
        }
        if let Some((cert, key)) = &config.tls {
            edgekv_proto::tls::server(cert, key).map_err(|e| anyhow::anyhow!(e))?;
        }
        if let Some(ca) = &config.tls_ca {
            edgekv_proto::tls::read_ca(ca).map_err(|e| anyhow::anyhow!(e))?;
        }
        if let Some(url) = &args.store {
            println!("state: {} (PostgreSQL)", edgekv_origin::config::redact(url));
        }
        println!("configuration OK: would run control\n{config:#?}");
        return Ok(());
    }
    if let Some(url) = args.store.clone() {
        // Active or standby: whoever holds the database's control lease serves;
        // the other waits here, without listening, until the lease is free.
        let state = tokio::task::spawn_blocking(move || {
            edgekv_control::state::SharedState::acquire(&url, &mut || {
                println!("control standby: another control holds the lease; waiting to take over");
            })
        })
        .await
        .context("the lease task failed")?
        .map_err(|e| anyhow::anyhow!("cannot take the control lease: {e}"))?;
        // Fenced: a control that lost its lease must not act on it; it exits, and
        // its supervisor starts it again as a standby.
        state.on_lost(Box::new(|why| {
            tracing::error!(%why, "LOST THE CONTROL LEASE: exiting so the standby takes over");
            std::process::exit(3);
        }));
        tracing::info!(state = %state.target(), "holding the control lease: active");
        config.state = Some(std::sync::Arc::new(state));
    }
    let running = edgekv_control::RunningControl::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start control: {e}"))?;
    if let Some(http) = running.http_addr {
        println!("control metrics on http://{http}/metrics");
    }
    println!("control listening on {}://{}", running.scheme, running.addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// The tenant: the flag, else the config file's, else the environment's name (one
/// tenant per environment).
fn tenant(flag: Option<String>, from_file: Option<&String>, environment: &str) -> String {
    flag.or_else(|| from_file.cloned())
        .unwrap_or_else(|| environment.to_string())
}

/// The first credential of a credential file.
pub fn first_credential(path: &Path) -> anyhow::Result<String> {
    let list = edgekv_origin::credentials::read_file(path)?;
    Ok(list.into_iter().next().unwrap_or_default())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
