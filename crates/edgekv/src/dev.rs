//! `edgekv dev`: the embedded default — every role in one process, data under
//! `./edgekv-data`, a working edge on `127.0.0.1:8787`.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use edgekv_control::model::{Build, Step};
use edgekv_control::{ControlConfig, RunningControl};
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::SystemClock;
use edgekv_origin::{OriginConfig, RunningOrigin};

use crate::cli::DevArgs;
use crate::config::File;
use crate::roles::shutdown_signal;

/// The file in the data dir that keeps the generated dev token.
const TOKEN_FILE: &str = "dev-token";
/// The file in the data dir that keeps the dev environment's credential.
const CREDENTIAL_FILE: &str = "credentials";
/// The environment (and tenant) of everything `edgekv dev` runs.
const ENVIRONMENT: &str = "dev";
/// The builds `edgekv dev` serves: the first is known-good, the second is there to
/// try a rollout with.
const BUILDS: [&str; 2] = ["dev-1", "dev-2"];
/// The file in the data dir that keeps the builds' ports across restarts.
const PORTS_FILE: &str = "dev-ports";
/// The file in the data dir that keeps the operator's admin token.
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Runs `edgekv dev` until SIGINT or SIGTERM.
pub async fn run(args: DevArgs, file: &File) -> anyhow::Result<()> {
    let mut dev = file.dev.clone();
    if let Some(http) = args.http {
        dev.http = http;
    }
    if let Some(admin) = args.admin {
        dev.admin = admin;
    }
    if let Some(dir) = args.data_dir {
        dev.data_dir = dir;
    }
    if let Some(account) = args.account {
        dev.account = account;
    }
    if let Some(url) = &args.store {
        edgekv_origin::config::check_store_url(url)
            .map_err(|e| anyhow::anyhow!("invalid configuration: --store: {e}"))?;
    }
    if args.check_config {
        let mut edge = file.edge.clone().unwrap_or_default();
        edge.http = dev.http;
        edge.admin = dev.admin;
        edge.binding = args.binding.or(edge.binding);
        edge.validate_local()
            .map_err(|e| anyhow::anyhow!("invalid configuration: [edge]: {e}"))?;
        println!(
            "configuration OK: would run edgekv dev (origin, control on {}, edge) over {}\n{dev:#?}\n{edge:#?}",
            args.control_listen,
            dev.data_dir.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&dev.data_dir)
        .with_context(|| format!("cannot create the data dir {}", dev.data_dir.display()))?;
    let token = match args.token {
        Some(token) if !token.trim().is_empty() => token,
        _ => stored_secret(&dev.data_dir.join(TOKEN_FILE))?,
    };
    let credential = stored_secret(&dev.data_dir.join(CREDENTIAL_FILE))?;

    // The origin: two builds over the store in <data dir>/origin, on loopback, on
    // the ports they had last time (control knows them by their endpoints).
    let ports_file = dev.data_dir.join(PORTS_FILE);
    let ports: Vec<u16> = std::fs::read_to_string(&ports_file)
        .ok()
        .map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let builds = BUILDS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let port = ports.get(i).copied().unwrap_or(0);
            format!("{id}=127.0.0.1:{port}")
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))
        })
        .collect::<anyhow::Result<Vec<edgekv_origin::BuildSpec>>>()?;
    let origin_config = OriginConfig {
        data_dir: dev.data_dir.join("origin"),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        credential_file: dev.data_dir.join(CREDENTIAL_FILE),
        builds,
        ..file.origin.clone().unwrap_or_default()
    };
    let origin_config = OriginConfig {
        store: args.store.clone().or(origin_config.store.clone()),
        ..origin_config
    };
    if let Some(url) = &origin_config.store {
        println!("store: {} (PostgreSQL)", edgekv_origin::config::redact(url));
    }
    let origin = RunningOrigin::start(origin_config, Arc::new(SystemClock))
        .await
        .context("cannot start the origin")?;
    let ports: Vec<String> = origin
        .builds
        .values()
        .map(|a| a.port().to_string())
        .collect();
    std::fs::write(&ports_file, ports.join(" "))
        .with_context(|| format!("cannot write {}", ports_file.display()))?;

    // Control: its own state in <data dir>/control; both builds registered, the
    // first one bootstrapped as known-good.
    let admin_token = stored_secret(&dev.data_dir.join(ADMIN_TOKEN_FILE))?;
    // The default port, or any when it is taken (a second `edgekv dev` on one
    // machine still starts); a port asked for must be had.
    let dashboard = args
        .dashboard
        .unwrap_or_else(|| DASHBOARD.parse().unwrap_or(([127, 0, 0, 1], 8792).into()));
    let control = RunningControl::start(ControlConfig {
        grpc: args.control_listen,
        data_dir: dev.data_dir.join("control"),
        admin_token_file: dev.data_dir.join(ADMIN_TOKEN_FILE),
        credentials: vec![(ENVIRONMENT.into(), dev.data_dir.join(CREDENTIAL_FILE))],
        tick_ms: 500,
        break_glass_key: None,
        tls: None,
        tls_ca: None,
        state: None,
        http: Some(dashboard),
        http_any_port_if_taken: args.dashboard.is_none(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot start control: {e}"))?;
    let control_url = format!("http://{}", control.addr);
    for (id, addr) in &origin.builds {
        control
            .controller()
            .register_build(Build {
                build_id: id.clone(),
                version: id.clone(),
                environment: ENVIRONMENT.into(),
                tenant: ENVIRONMENT.into(),
                artifact_digest: String::new(),
                endpoints: vec![format!("http://{addr}")],
                data_set: String::new(),
            })
            .context("cannot register the dev builds")?;
    }
    if control.controller().route_table(ENVIRONMENT).is_none() {
        control
            .controller()
            .create_deployment(
                ENVIRONMENT,
                ENVIRONMENT,
                BUILDS[0],
                vec![Step {
                    weight_bp: 10_000,
                    bake_ms: 0,
                }],
            )
            .await
            .context("cannot bootstrap the first dev build")?;
        // A one-step bootstrap with no bake completes at its first tick.
        control
            .controller()
            .tick(|_| edgekv_control::rollout::Health::Healthy)
            .context("cannot complete the bootstrap")?;
    }

    // The edge, following control's route tables.
    let config = EdgeConfig {
        http: dev.http,
        admin: dev.admin,
        binding: args.binding,
        data_dir: dev.data_dir.join("edge"),
        control: control_url.clone(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        ..file.edge.clone().unwrap_or_default()
    };
    let table = TokenTable::new(
        1,
        [(tokens::hash(&token), Grant::full("dev", &dev.account))],
    );
    let edge = edgekv_edge::open(config, Arc::new(SystemClock), table, &credential)
        .context("cannot open the edge")?;
    let running = match RunningEdge::start(edge).await {
        Ok(running) => running,
        Err(err) => {
            control.shutdown().await;
            origin.shutdown().await;
            return Err(err.into());
        }
    };
    // Print the banner once the edge can serve: it has a route table and has synced.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !running.edge().feed().synced() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // workerd's KV binding: a namespace for Workers, and a ready config and
    // sample Worker in <data dir>/workerd.
    let worker = match running.binding_addr {
        Some(addr) => {
            let namespace = workers_namespace(running.edge(), &dev.account).await?;
            let files = crate::workerd::write_sample(
                &dev.data_dir.join("workerd"),
                addr,
                &token,
                &namespace.id,
            )?;
            Some((addr, namespace, files))
        }
        None => None,
    };

    // The commands to try name this very binary: after `make dev` no `edgekv` is
    // on the PATH (`make install` puts one in ~/.cargo/bin).
    let bin = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .filter(|p| !p.contains(' '))
        .unwrap_or_else(|| "edgekv".to_string());
    // The banner is best effort: a closed stdout must not stop the node.
    let banner = format!(
        "edgekv dev is running\n  edge:     http://{http}\n  admin:    http://{admin}\n  \
         control:  {control_url} (admin token {admin_token})\n  \
         dashboard: {dashboard_url}\n  \
         builds:   {builds} (known-good {first})\n  \
         account:  {account}\n  token:    {token}\n  data dir: {dir}\n\
         try:\n  export EDGEKV_URL=http://{http} EDGEKV_TOKEN={token} EDGEKV_ACCOUNT={account}\n  \
         {bin} kv namespace create my-first-namespace\n\
         a rollout:\n  export EDGEKV_CONTROL={control_url} EDGEKV_ADMIN_TOKEN={admin_token}\n  \
         {bin} deploy start {second} --environment dev --steps 10:30s,50:30s,100:30s --min-requests 0\n  \
         {bin} deploy status --environment dev\n  \
         (each step waits for {min} requests to {second} per health window unless --min-requests says less;\n  \
         try `{bin} bench` for traffic)\n",
        http = running.http_addr,
        dashboard_url = control
            .http_addr
            .map_or_else(|| "none".to_string(), |a| format!("http://{a}/")),
        builds = BUILDS.join(", "),
        first = BUILDS[0],
        second = BUILDS[1],
        min = edgekv_control::health::Thresholds::default().min_requests,
        admin = running.admin_addr,
        account = dev.account,
        dir = dev.data_dir.display(),
    );
    let banner = match &worker {
        None => banner,
        Some((addr, namespace, files)) => format!(
            "{banner}a Worker on workerd, reading this edge through its KV binding:\n  \
             binding: http://{addr} (namespace {id}, {title:?})\n  \
             npx workerd serve {config}\n  \
             curl http://{worker}/   (the Worker: {script})\n",
            id = namespace.id,
            title = namespace.title,
            config = files.config.display(),
            worker = files.worker_addr,
            script = files.script.display(),
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);

    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    control.shutdown().await;
    origin.shutdown().await;
    Ok(())
}

/// Where the dashboard listens by default.
const DASHBOARD: &str = "127.0.0.1:8792";

/// The title of the namespace `edgekv dev --binding` gives Workers.
const WORKERS_NAMESPACE: &str = "workers";

/// The account's namespace titled [`WORKERS_NAMESPACE`], created on first use.
async fn workers_namespace(
    edge: &Arc<edgekv_edge::Edge>,
    account: &str,
) -> anyhow::Result<edgekv_kv::Namespace> {
    if let Some(namespace) = edge
        .namespaces(account)
        .into_iter()
        .find(|n| n.title == WORKERS_NAMESPACE)
    {
        return Ok(namespace);
    }
    edge.create_namespace(account, WORKERS_NAMESPACE, edgekv_kv::Mode::Cache)
        .await
        .with_context(|| format!("cannot create the namespace {WORKERS_NAMESPACE:?}"))
}

/// Returns the secret kept in a file, generating it on first use.
fn stored_secret(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    let secret = tokens::generate();
    write_private(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

/// Writes a secret readable by its owner only, atomically.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(temp, path)
}
