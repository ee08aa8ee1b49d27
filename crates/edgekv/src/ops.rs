//! `edgekv build ...` and `edgekv deploy ...`: clients of the control plane for
//! operators, with readable output (or `--json`) and the exit codes of
//! [`crate::client`].

use edgekv_proto::v1::{self, control_client::ControlClient};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cli::{
    BuildArgs, BuildCommand, ControlClientArgs, DeployArgs, DeployCommand, TokenArgs, TokenCommand,
};
use crate::client::{ClientError, EXIT_DENIED, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_REFUSED};

struct Control {
    client: ControlClient<Channel>,
    token: String,
}

impl Control {
    async fn connect(args: &ControlClientArgs) -> anyhow::Result<Self> {
        let token = args.admin_token.clone().ok_or_else(|| ClientError {
            exit_code: EXIT_DENIED,
            message: "no admin token: pass --admin-token or set EDGEKV_ADMIN_TOKEN".into(),
        })?;
        let client = ControlClient::connect(args.control.clone())
            .await
            .map_err(|e| ClientError {
                exit_code: EXIT_FAILURE,
                message: format!("cannot reach control at {}: {e}", args.control),
            })?;
        Ok(Control { client, token })
    }

    fn request<T>(&self, message: T) -> anyhow::Result<Request<T>> {
        let mut request = Request::new(message);
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
            };
            let request = control.request(v1::RegisterBuildRequest { build: Some(build) })?;
            let answer = control
                .client
                .register_build(request)
                .await
                .map_err(failed)?
                .into_inner();
            let build = answer.build.unwrap_or_default();
            if args.client.json {
                println!(
                    "{}",
                    json!({ "build_id": build.build_id, "created": answer.created })
                );
            } else if answer.created {
                println!(
                    "registered build {} in {}/{}",
                    build.build_id, build.environment, build.tenant
                );
            } else {
                println!("build {} was already registered", build.build_id);
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
                    .map(|b| json!({ "build_id": b.build_id, "version": b.version, "environment": b.environment, "tenant": b.tenant, "endpoints": b.endpoints }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for b in builds {
                    println!("{}\t{}\t{}", b.build_id, b.version, b.endpoints.join(","));
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
        "\n  known-good: {}",
        if d.known_good.is_empty() {
            "none (bootstrap)"
        } else {
            &d.known_good
        }
    ));
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
    if d.acked.is_empty() {
        out.push_str("\n  edges: none connected");
    }
    for (node, version) in &d.acked {
        out.push_str(&format!("\n  edge {node}: holds route version {version}"));
    }
    for line in &d.history {
        out.push_str(&format!("\n  {line}"));
    }
    out
}

fn deployment_json(d: &v1::Deployment) -> serde_json::Value {
    json!({
        "id": d.id, "environment": d.environment, "tenant": d.tenant, "build_id": d.build_id,
        "known_good": d.known_good, "phase": d.phase, "step": d.step, "reason": d.reason,
        "steps": d.steps.iter().map(|s| json!({"weight_bp": s.weight_bp, "bake_ms": s.bake_ms})).collect::<Vec<_>>(),
        "acked": d.acked, "history": d.history,
    })
}

fn print(args: &ControlClientArgs, deployments: &[v1::Deployment]) {
    if args.json {
        let list: Vec<_> = deployments.iter().map(deployment_json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for d in deployments {
            println!("{}", describe(d));
        }
    }
}

/// Runs a `deploy` subcommand.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let mut control = Control::connect(&args.client).await?;
    let client = &args.client;
    let one = |answer: v1::DeploymentResponse| answer.deployment.into_iter().collect::<Vec<_>>();
    match args.command {
        DeployCommand::Start {
            build_id,
            environment,
            tenant,
            steps,
        } => {
            let request = control.request(v1::CreateDeploymentRequest {
                tenant: tenant.unwrap_or_else(|| environment.clone()),
                environment,
                build_id,
                steps: parse_steps(&steps)?,
            })?;
            let answer = control
                .client
                .create_deployment(request)
                .await
                .map_err(failed)?
                .into_inner();
            print(client, &one(answer));
        }
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
        } => {
            let request = control.request(v1::RollbackRequest {
                environment,
                to_build: to.unwrap_or_default(),
                reason,
            })?;
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
        TokenCommand::List => {
            let request = control.request(v1::ListTokensRequest {})?;
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
                    .map(|g| json!({ "name": g.name, "account": g.account, "namespaces": g.namespaces, "read_only": g.read_only, "admin": g.admin }))
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
                    println!(
                        "{}\t{}\t{scope}\t{mode}{}",
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
