//! [`RunningControl`]: the `Control` listener and the driver that advances
//! deployments.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgekv_proto::v1::control_server::ControlServer;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;

use crate::controller::Controller;
use crate::probe::GrpcProbe;
use crate::rollout::Transition;
use crate::service::ControlService;

/// How control runs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the `Control` service listens.
    pub grpc: SocketAddr,
    /// Where control keeps its state (never the KV data plane).
    pub data_dir: PathBuf,
    /// Operators' admin tokens, one per line.
    pub admin_token_file: PathBuf,
    /// Per environment, the file of the credential used to probe its builds and
    /// accepted from its edges (`--probe-credential ENV=FILE`).
    pub credentials: Vec<(String, PathBuf)>,
    /// How often deployments are advanced, in ms.
    pub tick_ms: u64,
    /// The Ed25519 public key file whose break-glass orders `Rollback` accepts when
    /// the normal auth path is down.
    pub break_glass_key: Option<PathBuf>,
    /// TLS of the Control service: its PEM certificate chain and key (both or
    /// neither; none: cleartext gRPC).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The PEM CA control trusts when it probes `https://` build endpoints.
    pub tls_ca: Option<PathBuf>,
    /// Where the dashboard, `/metrics` and `/healthz` listen over HTTP (none:
    /// no HTTP listener).
    pub http: Option<SocketAddr>,
    /// When `http`'s port is taken, listen on any free port of its host instead
    /// of failing (`edgekv dev`'s default dashboard port).
    pub http_any_port_if_taken: bool,
    /// Where the state is kept instead of the state file in `data_dir` (a
    /// database shared with a standby control, whose lease this control holds).
    pub state: Option<Arc<dyn crate::state::StateStore>>,
}

/// A running control plane.
#[derive(Debug)]
pub struct RunningControl {
    /// The `grpc.health.v1` reporter: NOT_SERVING once stopping.
    health: tonic_health::server::HealthReporter,
    /// Where the service listens.
    pub addr: SocketAddr,
    /// Where `/metrics` listens, with `--http`.
    pub http_addr: Option<SocketAddr>,
    /// `https` when the service serves TLS, else `http`.
    pub scheme: &'static str,
    controller: Arc<Controller>,
    acks: crate::service::Acks,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

fn first_line(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("{} holds no credential", path.display()))
}

impl RunningControl {
    /// Opens the state, binds the listener and starts the driver.
    pub async fn start(config: ControlConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
        let admin_tokens: HashSet<String> = std::fs::read_to_string(&config.admin_token_file)
            .map_err(|e| format!("cannot read {}: {e}", config.admin_token_file.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if admin_tokens.is_empty() {
            return Err(format!(
                "{} holds no admin token",
                config.admin_token_file.display()
            ));
        }
        let mut credentials = BTreeMap::new();
        for (environment, path) in &config.credentials {
            credentials.insert(environment.clone(), first_line(path)?);
        }
        let tls_ca = config
            .tls_ca
            .as_deref()
            .map(edgekv_proto::tls::read_ca)
            .transpose()?;
        let probe = Arc::new(
            GrpcProbe::new(credentials.clone(), Duration::from_secs(2)).with_tls_ca(tls_ca),
        );
        let clock = Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        let controller = Arc::new(
            match &config.state {
                Some(state) => Controller::open_with(state.clone(), probe, clock),
                None => Controller::open(&config.data_dir, probe, clock),
            }
            .map_err(|e| e.to_string())?,
        );
        let mut service = ControlService::new(controller.clone(), admin_tokens, credentials);
        if let Some(path) = &config.break_glass_key {
            let key = edgekv_breakglass::VerifyingKey::load(path).map_err(|e| e.to_string())?;
            service = service.with_break_glass(key);
        }
        let dashboard_service = service.clone();
        let analyzer = service.analyzer();
        let acks = service.acks();
        let listener = listen(config.grpc, LISTEN_BACKLOG)
            .map_err(|e| format!("cannot listen on {}: {e}", config.grpc))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let incoming = TcpIncoming::from_listener(listener, true, Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut serve_stop = stopped.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = &config.tls {
            builder = builder
                .tls_config(edgekv_proto::tls::server(cert, key)?)
                .map_err(|e| format!("control's TLS: {e}"))?;
        }
        // The standard probes and grpcurl's reflection (no credential needed).
        let (mut reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<ControlServer<ControlService>>()
            .await;
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            b.register_encoded_file_descriptor_set(edgekv_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .map_err(|e| format!("gRPC reflection: {e}"))?;
        let reflection_alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(|e| format!("gRPC reflection: {e}"))?;
        tasks.spawn(async move {
            let result = builder
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_alpha)
                .add_service(ControlServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = serve_stop.changed().await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "control stopped serving");
            }
        });
        let http_addr = match config.http {
            Some(addr) => {
                let listener = match crate::http::bind(addr).await {
                    Ok(listener) => listener,
                    Err(_) if config.http_any_port_if_taken => {
                        crate::http::bind(SocketAddr::new(addr.ip(), 0)).await?
                    }
                    Err(err) => return Err(err),
                };
                let bound = listener.local_addr().map_err(|e| e.to_string())?;
                let sources = crate::http::Sources {
                    controller: controller.clone(),
                    acks: acks.clone(),
                    analyzer: analyzer.clone(),
                    service: dashboard_service,
                };
                tasks.spawn(crate::http::serve(listener, sources, stopped.clone()));
                Some(bound)
            }
            None => None,
        };
        let driver = controller.clone();
        let mut driver_stop = stopped;
        let every = Duration::from_millis(config.tick_ms.max(1));
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = driver_stop.changed() => return,
                }
                // Each running deployment is judged from the edges' reports: a
                // breach rolls back now, inconclusive holds the step.
                let now = driver.now_ms();
                let verdict = |d: &crate::model::Deployment| {
                    analyzer.verdict(
                        &d.environment,
                        &d.build_id,
                        d.known_good.as_deref().or(Some(&d.build_id)),
                        &d.thresholds,
                        now,
                    )
                };
                match driver.tick(verdict) {
                    Ok(moved) => {
                        for (id, transition) in moved {
                            match &transition {
                                Transition::RolledBack(why) => tracing::error!(deployment = %id, reason = %why, "health breach: rolled back to known-good"),
                                _ => tracing::info!(deployment = %id, ?transition, "deployment moved"),
                            }
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "cannot advance deployments"),
                }
            }
        });
        tracing::info!(%addr, "control serving");
        Ok(RunningControl {
            health: reporter,
            addr,
            http_addr,
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
            controller,
            acks,
            stop,
            tasks,
        })
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// What each edge last said about its route table, per environment.
    pub fn acks(&self) -> &crate::service::Acks {
        &self.acks
    }

    /// Stops the listener and the driver. Open route streams end with it.
    pub async fn shutdown(mut self) {
        self.health
            .set_not_serving::<ControlServer<ControlService>>()
            .await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// Connections control's listener queues before it accepts them: after a control
/// restart a whole fleet reconnects at once (with jitter, within about a
/// second), more than the usual 128.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a backlog of `backlog` (the kernel caps it at
/// `net.core.somaxconn`).
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
