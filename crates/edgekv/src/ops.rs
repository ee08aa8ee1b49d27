//! `edgekv build ...` and `edgekv deploy ...`: clients of the control plane for
//! operators, with readable output (or `--json`) and the exit codes of
//! [`crate::client`].

use edgekv_proto::v1::{self, control_client::ControlClient};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cli::{
    BreakGlassArgs, BreakGlassCommand, BuildArgs, BuildCommand, ControlClientArgs, DeployArgs,
    DeployCommand, TokenArgs, TokenCommand,
};
use crate::client::{ClientError, EXIT_DENIED, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_REFUSED};

struct Control {
    client: ControlClient<Channel>,
    token: String,
}

impl Control {
    async fn connect(args: &ControlClientArgs) -> anyhow::Result<Self> {
        Self::connect_as(args, false).await
    }

    /// Connects; without an admin token only when `token_optional` (a break-glass
    /// rollback carries its own signed authority).
    async fn connect_as(args: &ControlClientArgs, token_optional: bool) -> anyhow::Result<Self> {
        let token = match (&args.admin_token, token_optional) {
            (Some(token), _) => token.clone(),
            (None, true) => String::new(),
            (None, false) => {
                return Err(ClientError {
                    exit_code: EXIT_DENIED,
                    message: "no admin token: pass --admin-token or set EDGEKV_ADMIN_TOKEN".into(),
                }
                .into());
            }
        };
        let refused = |message: String| ClientError {
            exit_code: EXIT_FAILURE,
            message,
        };
        let ca = args
            .tls_ca
            .as_deref()
            .map(edgekv_proto::tls::read_ca)
            .transpose()
            .map_err(refused)?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(args.control.clone())
            .map_err(|e| refused(format!("invalid control URL {:?}: {e}", args.control)))?;
        if let Some(tls) =
            edgekv_proto::tls::client_for(&args.control, ca.as_deref()).map_err(refused)?
        {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| refused(format!("TLS: {e}")))?;
        }
        let client = ControlClient::new(
            endpoint
                .connect()
                .await
                .map_err(|e| refused(format!("cannot reach control at {}: {e}", args.control)))?,
        );
        Ok(Control { client, token })
    }

    fn request<T>(&self, message: T) -> anyhow::Result<Request<T>> {
        let mut request = Request::new(message);
        if self.token.is_empty() {
            return Ok(request);
        }
        let value = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| anyhow::anyhow!("the admin token is not valid header text"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

fn failed(status: Status) -> anyhow::Error {
    let exit_code = match status.code() {
        Code::NotFound => EXIT_NOT_FOUND,
        Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => EXIT_REFUSED,
        _ => EXIT_FAILURE,
    };
    ClientError {
        exit_code,
        message: status.message().to_string(),
    }
    .into()
}

/// Runs a `build` subcommand.
pub async fn build(args: BuildArgs) -> anyhow::Result<()> {
    let mut control = Control::connect(&args.client).await?;
    match args.command {
        BuildCommand::Register {
            build_id,
            environment,
            tenant,
            version,
            artifact_digest,
            endpoints,
        } => {
            let build = v1::Build {
                tenant: tenant.unwrap_or_else(|| environment.clone()),
                build_id,
                version,
                environment,
                artifact_digest,
                endpoints,
                data_set: String::new(),
            };
            let request = control.request(v1::RegisterBuildRequest { build: Some(build) })?;
            let answer = control
                .client
                .register_build(request)
                .await
                .map_err(failed)?
                .into_inner();
            let build = answer.build.unwrap_or_default();
            let data_set = if build.data_set.is_empty() {
                "unknown (control could not probe it yet)"
            } else {
                &build.data_set
            };
            if args.client.json {
                println!(
                    "{}",
                    json!({ "build_id": build.build_id, "created": answer.created, "data_set": build.data_set })
                );
            } else if answer.created {
                println!(
                    "registered build {} in {}/{}, data set {data_set}",
                    build.build_id, build.environment, build.tenant
                );
            } else {
                println!(
                    "build {} was already registered, data set {data_set}",
                    build.build_id
                );
            }
        }
        BuildCommand::List {
            environment,
            tenant,
        } => {
            let request = control.request(v1::ListBuildsRequest {
                tenant: tenant.unwrap_or_else(|| environment.clone()),
                environment,
            })?;
            let builds = control
                .client
                .list_builds(request)
                .await
                .map_err(failed)?
                .into_inner()
                .builds;
            if args.client.json {
                let list: Vec<_> = builds
                    .iter()
                    .map(|b| json!({ "build_id": b.build_id, "version": b.version, "environment": b.environment, "tenant": b.tenant, "endpoints": b.endpoints, "data_set": b.data_set }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!("BUILD\tVERSION\tENVIRONMENT/TENANT\tDATA SET\tENDPOINTS");
                for b in builds {
                    println!(
                        "{}\t{}\t{}/{}\t{}\t{}",
                        b.build_id,
                        b.version,
                        b.environment,
                        b.tenant,
                        if b.data_set.is_empty() {
                            "unknown"
                        } else {
                            &b.data_set
                        },
                        b.endpoints.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Parses `PERCENT[:BAKE],...`, e.g. `10:30s,50:30s,100:60s`.
pub fn parse_steps(text: &str) -> anyhow::Result<Vec<v1::Step>> {
    text.split(',')
        .map(|part| {
            let (percent, bake) = part.split_once(':').unwrap_or((part, "0"));
            let percent: f64 =
                percent.trim().trim_end_matches('%').parse().map_err(|_| {
                    anyhow::anyhow!("step {part:?}: {percent:?} is not a percentage")
                })?;
            let bake = edgekv_origin::fault::parse_duration(bake)
                .map_err(|e| anyhow::anyhow!("step {part:?}: {e}"))?;
            Ok(v1::Step {
                weight_bp: (percent * 100.0).round() as u32,
                bake_ms: bake.as_millis() as u64,
            })
        })
        .collect()
}

fn describe(d: &v1::Deployment) -> String {
    let mut out = format!(
        "deployment {}: build {} in {}/{} — {}",
        d.id, d.build_id, d.environment, d.tenant, d.phase
    );
    if d.phase == "running" || d.phase == "paused" {
        let weight = d.steps.get(d.step as usize).map_or(0, |s| s.weight_bp);
        out.push_str(&format!(
            ", step {} of {} ({}% of traffic)",
            d.step + 1,
            d.steps.len(),
            f64::from(weight) / 100.0
        ));
    }
    out.push_str(&format!(
        "\n  known-good now: {}{}",
        if d.current_known_good.is_empty() {
            "none"
        } else {
            &d.current_known_good
        },
        if d.known_good == d.current_known_good {
            String::new()
        } else if d.known_good.is_empty() {
            " (this deployment was the bootstrap)".to_string()
        } else {
            format!(" (when this deployment started: {})", d.known_good)
        }
    ));
    if !d.data_set.is_empty() {
        out.push_str(&format!("\n  data set: {}", d.data_set));
    }
    let steps: Vec<String> = d
        .steps
        .iter()
        .map(|s| {
            format!(
                "{}% for {} s",
                f64::from(s.weight_bp) / 100.0,
                s.bake_ms / 1000
            )
        })
        .collect();
    out.push_str(&format!("\n  steps: {}", steps.join(" → ")));
    if !d.reason.is_empty() {
        out.push_str(&format!("\n  stopped because: {}", d.reason));
    }
    if !d.health.is_empty() {
        out.push_str(&format!("\n  health: {}", d.health));
    }
    if let Some(t) = &d.thresholds {
        out.push_str(&format!(
            "\n  thresholds: ≥ {} requests per {} s window; error rate ≤ {:.1}% and ≤ {:.1}× known-good's + 1 point; p99 ≤ {} ms and ≤ {:.1}× known-good's",
            t.min_requests,
            t.window_ms / 1000,
            f64::from(t.max_error_bp) / 100.0,
            f64::from(t.relative_error_pct) / 100.0,
            t.max_p99_ms,
            f64::from(t.relative_p99_pct) / 100.0
        ));
    }
    for (node, pin) in &d.pins {
        out.push_str(&format!(
            "\n  BREAK-GLASS: edge {node} is pinned to {pin} (promotions held)"
        ));
    }
    if d.acked.is_empty() {
        out.push_str("\n  edges: none connected");
    }
    for (node, version) in &d.acked {
        out.push_str(&format!("\n  edge {node}: holds route version {version}"));
    }
    for (node, left) in &d.departed {
        out.push_str(&format!("\n  edge {node} (departed): {left}"));
    }
    for line in &d.history {
        out.push_str(&format!("\n  {line}"));
    }
    out
}

fn print(args: &ControlClientArgs, deployments: &[v1::Deployment]) {
    if args.json {
        let list: Vec<_> = deployments
            .iter()
            .map(edgekv_control::view::deployment_json)
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for d in deployments {
            println!("{}", describe(d));
        }
    }
}

/// Exit code of `deploy status --watch` for a deployment rolled back.
pub const EXIT_ROLLED_BACK: u8 = 10;
/// Exit code of `deploy status --watch` for a deployment aborted.
pub const EXIT_ABORTED: u8 = 11;

/// A progress bar of `width` cells for `done` of 1.
fn bar(done: f64, width: usize) -> String {
    let full = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), "-".repeat(width - full))
}

/// The steps of a deployment as progress bars: done, baking (with its bake's
/// progress), or to come.
fn step_bars(d: &v1::Deployment) -> String {
    let mut out = String::new();
    for (i, s) in d.steps.iter().enumerate() {
        let i = i as u32;
        let done = match d.phase.as_str() {
            "completed" => 1.0,
            "running" | "paused" if i < d.step => 1.0,
            "running" if i == d.step && s.bake_ms > 0 => {
                d.now_ms.saturating_sub(d.step_since_ms) as f64 / s.bake_ms as f64
            }
            "running" if i == d.step => 1.0,
            _ => 0.0,
        };
        let mark = if i == d.step && (d.phase == "running" || d.phase == "paused") {
            "▶"
        } else {
            " "
        };
        out.push_str(&format!(
            "\n  {mark} step {} {} {:>6}% of traffic, bake {} s",
            i + 1,
            bar(done, 20),
            f64::from(s.weight_bp) / 100.0,
            s.bake_ms / 1000
        ));
    }
    out
}

/// Follows a deployment until it ends (`deploy status --watch`): redrawn in place
/// on a terminal, a line per change otherwise; the exit code says how it ended.
async fn watch(
    control: &mut Control,
    id: Option<String>,
    environment: Option<String>,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let id = match id {
        Some(id) => id,
        None => {
            let request = control.request(v1::ListDeploymentsRequest {
                environment: environment.clone().unwrap_or_default(),
            })?;
            let list = control
                .client
                .list_deployments(request)
                .await
                .map_err(failed)?
                .into_inner();
            list.deployments
                .iter()
                .rev()
                .find(|d| d.phase == "running" || d.phase == "paused")
                .map(|d| d.id.clone())
                .ok_or_else(|| ClientError {
                    exit_code: EXIT_NOT_FOUND,
                    message: format!(
                        "no deployment is active{}; name one to watch",
                        environment.map(|e| format!(" in {e}")).unwrap_or_default()
                    ),
                })?
        }
    };
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let request = control.request(v1::GetDeploymentRequest { id: id.clone() })?;
        let d = control
            .client
            .get_deployment(request)
            .await
            .map_err(failed)?
            .into_inner()
            .deployment
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear, then the whole view: steps, verdict, edges.
            let view = format!("{}{}", describe(&d), step_bars(&d));
            let _ = writeln!(out, "\x1b[H\x1b[2J{view}");
        } else {
            let line = format!(
                "{} step {}/{} {}",
                d.phase,
                d.step + 1,
                d.steps.len(),
                if d.reason.is_empty() {
                    &d.health
                } else {
                    &d.reason
                }
            );
            if line != last {
                let _ = writeln!(
                    out,
                    "{} {id}: {line}",
                    edgekv_control::model::rfc3339(d.now_ms)
                );
                last = line;
            }
        }
        let _ = out.flush();
        drop(out);
        match d.phase.as_str() {
            "completed" => return Ok(()),
            "rolled_back" => {
                return Err(ClientError {
                    exit_code: EXIT_ROLLED_BACK,
                    message: format!("deployment {id} was rolled back: {}", d.reason),
                }
                .into());
            }
            "aborted" => {
                return Err(ClientError {
                    exit_code: EXIT_ABORTED,
                    message: format!("deployment {id} was aborted: {}", d.reason),
                }
                .into());
            }
            _ => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Runs a `deploy` subcommand.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let glass = matches!(
        args.command,
        DeployCommand::Rollback {
            break_glass_key_file: Some(_),
            ..
        }
    );
    let mut control = Control::connect_as(&args.client, glass).await?;
    let client = &args.client;
    let one = |answer: v1::DeploymentResponse| answer.deployment.into_iter().collect::<Vec<_>>();
    match args.command {
        DeployCommand::Start {
            build_id,
            environment,
            tenant,
            steps,
            min_requests,
            max_error_rate,
            max_p99_ms,
            relative_error,
            relative_p99,
            health_window,
            client_error_margin,
            new_data_set,
        } => {
            if !(0.0..=100.0).contains(&client_error_margin) {
                anyhow::bail!(
                    "--client-error-margin is in percentage points: 0 to 100, not {client_error_margin}"
                );
            }
            if !(0.0..=100.0).contains(&max_error_rate) {
                anyhow::bail!("--max-error-rate is a percentage: 0 to 100, not {max_error_rate}");
            }
            if relative_error < 1.0 || relative_p99 < 1.0 {
                anyhow::bail!(
                    "--relative-error and --relative-p99 are factors of at least 1, not {relative_error} and {relative_p99}"
                );
            }
            let window = edgekv_origin::fault::parse_duration(&health_window)
                .map_err(|e| anyhow::anyhow!("--health-window: {e}"))?;
            let request = control.request(v1::CreateDeploymentRequest {
                tenant: tenant.unwrap_or_else(|| environment.clone()),
                environment,
                build_id,
                steps: parse_steps(&steps)?,
                thresholds: Some(v1::HealthThresholds {
                    window_ms: window.as_millis() as u64,
                    min_requests,
                    min_requests_set: true,
                    // At least one basis point: zero would read as "the default".
                    max_error_bp: ((max_error_rate * 100.0).round() as u32).max(1),
                    relative_error_pct: (relative_error * 100.0).round() as u32,
                    max_p99_ms,
                    relative_p99_pct: (relative_p99 * 100.0).round() as u32,
                    // At least one basis point: zero would read as "the default".
                    client_error_margin_bp: ((client_error_margin * 100.0).round() as u32).max(1),
                }),
                new_data_set: new_data_set.unwrap_or_default(),
            })?;
            let answer = control
                .client
                .create_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
        DeployCommand::Status {
            id,
            environment,
            watch: true,
        } => return watch(&mut control, id, environment).await,
        DeployCommand::Status { id: Some(id), .. } => {
            let request = control.request(v1::GetDeploymentRequest { id })?;
            let answer = control
                .client
                .get_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
        DeployCommand::Status {
            id: None,
            environment,
            ..
        } => {
            let request = control.request(v1::ListDeploymentsRequest {
                environment: environment.unwrap_or_default(),
            })?;
            let list = control
                .client
                .list_deployments(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &list.deployments);
        }
        DeployCommand::Pause { id } => {
            let request = control.request(v1::DeploymentActionRequest {
                id,
                reason: String::new(),
            })?;
            let answer = control
                .client
                .pause_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
        DeployCommand::Resume { id } => {
            let request = control.request(v1::DeploymentActionRequest {
                id,
                reason: String::new(),
            })?;
            let answer = control
                .client
                .resume_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
        DeployCommand::Abort { id, reason } => {
            let request = control.request(v1::DeploymentActionRequest { id, reason })?;
            let answer = control
                .client
                .abort_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
        DeployCommand::Rollback {
            environment,
            to,
            reason,
            break_glass_key_file,
        } => {
            let order = match &break_glass_key_file {
                Some(path) => Some(sign(
                    path,
                    edgekv_breakglass::Action::Rollback,
                    &environment,
                    "control",
                    to.as_deref().unwrap_or(""),
                    "",
                    std::time::Duration::from_secs(300),
                )?),
                None => None,
            };
            let mut request = control.request(v1::RollbackRequest {
                environment,
                to_build: to.unwrap_or_default(),
                reason,
            })?;
            if let Some(order) = order {
                let text = serde_json::to_string(&order)?;
                request.metadata_mut().insert(
                    "edgekv-break-glass",
                    text.parse().map_err(|_| {
                        anyhow::anyhow!("the signed order is not valid header text")
                    })?,
                );
                eprintln!("BREAK-GLASS: sending a signed rollback order to control");
            }
            let answer = control
                .client
                .rollback(request)
                .await
                .map_err(failed)?
                .into_inner();
            if client.json {
                println!(
                    "{}",
                    json!({ "known_good": answer.known_good, "route_version": answer.route_version })
                );
            } else {
                println!(
                    "known-good is {} (route version {})",
                    answer.known_good, answer.route_version
                );
            }
        }
    }
    Ok(())
}

/// Runs a `token` subcommand.
pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut control = Control::connect(&args.client).await?;
    match args.command {
        TokenCommand::Create {
            name,
            account,
            environment,
            namespaces,
            read_only,
            admin,
        } => {
            let request = control.request(v1::CreateTokenRequest {
                name,
                account,
                namespaces,
                read_only,
                admin,
                environment,
            })?;
            let answer = control
                .client
                .create_token(request)
                .await
                .map_err(failed)?
                .into_inner();
            if args.client.json {
                println!(
                    "{}",
                    json!({ "token": answer.token, "version": answer.version })
                );
            } else {
                println!("{}", answer.token);
            }
        }
        TokenCommand::Revoke { name } => {
            let request = control.request(v1::RevokeTokenRequest { name: name.clone() })?;
            let answer = control
                .client
                .revoke_token(request)
                .await
                .map_err(failed)?
                .into_inner();
            if args.client.json {
                println!("{}", json!({ "revoked": name, "version": answer.version }));
            } else {
                println!("revoked {name} (token table version {})", answer.version);
            }
        }
        TokenCommand::List { environment } => {
            let request = control.request(v1::ListTokensRequest {
                environment: environment.unwrap_or_default(),
            })?;
            let answer = control
                .client
                .list_tokens(request)
                .await
                .map_err(failed)?
                .into_inner();
            if args.client.json {
                let list: Vec<_> = answer
                    .grants
                    .iter()
                    .map(|g| json!({ "name": g.name, "account": g.account, "environment": g.environment, "namespaces": g.namespaces, "read_only": g.read_only, "admin": g.admin }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for g in answer.grants {
                    let scope = if g.namespaces.is_empty() {
                        "all namespaces".to_string()
                    } else {
                        g.namespaces.join(",")
                    };
                    let mode = if g.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    };
                    // An empty environment: a token issued before tokens had
                    // one, accepted in every environment.
                    let environment = if g.environment.is_empty() {
                        "all environments"
                    } else {
                        g.environment.as_str()
                    };
                    println!(
                        "{}\t{}\t{scope}\t{mode}\t{environment}{}",
                        g.name,
                        g.account,
                        if g.admin { "\tadmin" } else { "" }
                    );
                }
            }
        }
    }
    Ok(())
}

/// Parses a duration flag like `10s` or `500ms`.
pub fn parse_duration_arg(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    edgekv_origin::fault::parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Signs a break-glass order with the private key in `path`; `lifts` is the nonce
/// of the pin an unpin lifts (empty for other orders).
fn sign(
    path: &std::path::Path,
    action: edgekv_breakglass::Action,
    environment: &str,
    node: &str,
    build: &str,
    lifts: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<edgekv_breakglass::SignedOrder> {
    let key = edgekv_breakglass::SigningKey::load(path).map_err(|e| ClientError {
        exit_code: EXIT_REFUSED,
        message: e.to_string(),
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    Ok(key.sign(&edgekv_breakglass::Order {
        action,
        environment: environment.to_string(),
        node: node.to_string(),
        build: build.to_string(),
        issued_ms: now,
        not_after_ms: now + ttl.as_millis() as u64,
        nonce: edgekv_breakglass::nonce(),
        lifts: lifts.to_string(),
    }))
}

/// The nonce of the pin an edge has in force, read from its admin listener's
/// `/status` (`None`: no pin is in force there).
async fn pin_in_force(client: &reqwest::Client, admin: &str) -> Result<Option<String>, String> {
    let url = format!("{admin}/status");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let status: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("{url} did not answer JSON: {e}"))?;
    let pinned = &status["pinned"];
    if pinned.is_null() {
        return Ok(None);
    }
    pinned["nonce"]
        .as_str()
        .filter(|nonce| !nonce.is_empty())
        .map(|nonce| Some(nonce.to_string()))
        .ok_or_else(|| format!("{url} shows a pin but not its nonce (an older edge?)"))
}

/// Runs a `break-glass` subcommand.
pub async fn break_glass(args: BreakGlassArgs) -> anyhow::Result<()> {
    let (key_file, edges, order) = match args.command {
        BreakGlassCommand::Keygen { private, public } => {
            let public_hex =
                edgekv_breakglass::generate_key_files(&private, &public).map_err(|e| {
                    ClientError {
                        exit_code: EXIT_REFUSED,
                        message: e.to_string(),
                    }
                })?;
            println!(
                "private key: {} (keep it offline)\npublic key:  {} ({public_hex})",
                private.display(),
                public.display()
            );
            return Ok(());
        }
        BreakGlassCommand::Pin {
            key_file,
            edges,
            build,
            ttl,
            environment,
            node,
        } => {
            let ttl = edgekv_origin::fault::parse_duration(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let action = edgekv_breakglass::Action::Pin;
            (
                key_file.clone(),
                edges,
                (action, environment, node, build, Some(String::new()), ttl),
            )
        }
        BreakGlassCommand::Unpin {
            key_file,
            edges,
            environment,
            node,
            pin,
        } => {
            let action = edgekv_breakglass::Action::Unpin;
            let ttl = std::time::Duration::from_secs(300);
            (
                key_file.clone(),
                edges,
                (action, environment, node, String::new(), pin, ttl),
            )
        }
    };
    // `lifts`: `None` for an unpin that names, at each edge, the pin in force there.
    let (action, environment, node, build, lifts, ttl) = order;
    let shared = lifts
        .as_deref()
        .map(|lifts| sign(&key_file, action, &environment, &node, &build, lifts, ttl))
        .transpose()?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut failures = 0;
    for edge in &edges {
        let admin = edge.trim_end_matches('/');
        let signed = match &shared {
            Some(signed) => signed.clone(),
            None => match pin_in_force(&client, admin).await {
                Ok(Some(pin)) => sign(&key_file, action, &environment, &node, &build, &pin, ttl)?,
                Ok(None) => {
                    println!("{edge}: no pin in force; nothing to unpin");
                    continue;
                }
                Err(why) => {
                    failures += 1;
                    eprintln!(
                        "{edge}: cannot learn the pin in force ({why}); name it with --pin NONCE"
                    );
                    continue;
                }
            },
        };
        let url = format!("{admin}/break-glass");
        match client.post(&url).json(&signed).send().await {
            Ok(response) if response.status().is_success() => {
                let body = response.text().await.unwrap_or_default();
                println!("{edge}: {}", body.trim());
            }
            Ok(response) => {
                failures += 1;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                eprintln!("{edge}: refused ({status}): {}", body.trim());
            }
            Err(err) => {
                failures += 1;
                eprintln!("{edge}: cannot reach the admin listener: {err}");
            }
        }
    }
    if failures > 0 {
        return Err(ClientError {
            exit_code: EXIT_FAILURE,
            message: format!(
                "{failures} of {} edges did not apply the order",
                edges.len()
            ),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse() {
        let steps = parse_steps("10:30s,50%:1m,100").unwrap();
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.weight_bp, s.bake_ms))
                .collect::<Vec<_>>(),
            [(1000, 30_000), (5000, 60_000), (10_000, 0)]
        );
        assert_eq!(parse_steps("0.5:1s").unwrap()[0].weight_bp, 50);
        assert!(parse_steps("ten:1s").is_err());
        assert!(parse_steps("10:1h").is_err());
    }
}
