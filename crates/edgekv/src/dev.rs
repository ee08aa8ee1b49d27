//! `edgekv dev`: the embedded default — every role in one process, data under
//! `./edgekv-data`, a working edge on `127.0.0.1:8787`.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
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
/// The build `edgekv dev` serves.
const BUILD: &str = "dev-1";

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
    std::fs::create_dir_all(&dev.data_dir)
        .with_context(|| format!("cannot create the data dir {}", dev.data_dir.display()))?;
    let token = match args.token {
        Some(token) if !token.trim().is_empty() => token,
        _ => stored_secret(&dev.data_dir.join(TOKEN_FILE))?,
    };
    let credential = stored_secret(&dev.data_dir.join(CREDENTIAL_FILE))?;

    // The origin: one build over the store in <data dir>/origin, on loopback.
    let build: edgekv_origin::BuildSpec = format!("{BUILD}=127.0.0.1:0")
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let origin_config = OriginConfig {
        data_dir: dev.data_dir.join("origin"),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        credential_file: dev.data_dir.join(CREDENTIAL_FILE),
        builds: vec![build],
        ..file.origin.clone().unwrap_or_default()
    };
    let origin = RunningOrigin::start(origin_config, Arc::new(SystemClock))
        .await
        .context("cannot start the origin")?;
    let origin_url = origin
        .url(BUILD)
        .context("the dev build is not listening")?;

    // The edge, reading through to that build.
    let config = EdgeConfig {
        http: dev.http,
        admin: dev.admin,
        data_dir: dev.data_dir.join("edge"),
        origin: origin_url.clone(),
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
            origin.shutdown().await;
            return Err(err.into());
        }
    };

    // The banner is best effort: a closed stdout must not stop the node.
    let banner = format!(
        "edgekv dev is running\n  edge:     http://{http}\n  admin:    http://{admin}\n  \
         origin:   build {BUILD} at {origin_url}\n  \
         account:  {account}\n  token:    {token}\n  data dir: {dir}\n\
         try:\n  export EDGEKV_URL=http://{http} EDGEKV_TOKEN={token} EDGEKV_ACCOUNT={account}\n  \
         edgekv kv namespace create my-first-namespace\n",
        http = running.http_addr,
        admin = running.admin_addr,
        account = dev.account,
        dir = dev.data_dir.display(),
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);

    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    origin.shutdown().await;
    Ok(())
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
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
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
