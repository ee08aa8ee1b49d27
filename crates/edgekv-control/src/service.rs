//! The `Control` gRPC service over a [`Controller`].
//!
//! Operators authenticate with an admin token; edges with their environment's
//! credential. Errors map to statuses here and only here.

// `tonic::Status` is the error of every RPC; boxing it here would only be unboxed again.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use edgekv_proto::v1::{self, control_server};
use edgekv_routing::RouteTable;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::{ControlError, Controller};
use crate::health::{Analyzer, Thresholds};
use crate::model::{Build, Deployment, Phase, Step};
use crate::rollout::Health;
use crate::state::TokenRecord;
use edgekv_breakglass::{Verifier, VerifyingKey};

fn token_grants(tokens: Vec<(String, TokenRecord)>) -> Vec<v1::TokenGrant> {
    tokens
        .into_iter()
        .map(|(name, t)| v1::TokenGrant {
            hash: t.hash,
            name,
            account: t.account,
            namespaces: t.namespaces,
            read_only: t.read_only,
            admin: t.admin,
            environment: t.environment,
        })
        .collect()
}

/// The SHA-256 of a secret (a credential or an admin token, as presented).
fn secret_digest(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// Whether a presented secret equals an accepted one, compared as the edge and the
/// builds compare theirs: as SHA-256 digests, here over all 32 bytes with no early
/// exit, so the time taken tells a caller nothing of how much of a guess was right.
fn same_secret(presented: &str, accepted: &str) -> bool {
    let (presented, accepted) = (secret_digest(presented), secret_digest(accepted));
    let difference = presented
        .iter()
        .zip(&accepted)
        .fold(0u8, |difference, (p, a)| difference | (p ^ a));
    std::hint::black_box(difference) == 0
}

/// Whether a presented secret is one of `accepted`; every entry is compared, so the
/// time taken does not say which one matched, or how nearly.
fn one_of<'a>(presented: &str, accepted: impl IntoIterator<Item = &'a String>) -> bool {
    accepted.into_iter().fold(false, |found, candidate| {
        found | same_secret(presented, candidate)
    })
}

/// What every edge last told control, per environment and node.
pub type Acks = Arc<Mutex<BTreeMap<String, BTreeMap<String, EdgeAck>>>>;

/// One edge's last word on the route table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeAck {
    /// The version it holds.
    pub version: u64,
    /// The reason of its last NACK, if the last message was one.
    pub nack: Option<String>,
    /// When its stream ended (Unix ms), if it has: a departed edge.
    pub left_ms: Option<u64>,
    /// The stream that speaks for it now (a reconnect replaces the old one).
    pub stream: u64,
}

/// Departed edges kept per environment, at most: the oldest are forgotten first.
pub const MAX_DEPARTED: usize = 1_000;

/// Numbers route streams, so the end of an old stream of a reconnected edge does
/// not mark it departed.
static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Marks an edge's stream ended, if it is still the one that speaks for it, and
/// forgets the oldest departed edges past [`MAX_DEPARTED`].
fn departed(acks: &Acks, environment: &str, node: &str, stream: u64, now_ms: u64) {
    let mut acks = acks.lock();
    let Some(nodes) = acks.get_mut(environment) else {
        return;
    };
    if let Some(ack) = nodes.get_mut(node)
        && ack.stream == stream
    {
        ack.left_ms = Some(now_ms);
    }
    let mut gone: Vec<(u64, String)> = nodes
        .iter()
        .filter_map(|(n, a)| a.left_ms.map(|t| (t, n.clone())))
        .collect();
    if gone.len() > MAX_DEPARTED {
        gone.sort();
        for (_, n) in gone.iter().take(gone.len() - MAX_DEPARTED) {
            nodes.remove(n);
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct ControlService {
    controller: Arc<Controller>,
    admin_tokens: Arc<HashSet<String>>,
    edge_credentials: Arc<BTreeMap<String, String>>,
    acks: Acks,
    token_acks: TokenAcks,
    analyzer: Arc<Analyzer>,
    break_glass: Option<Arc<Verifier>>,
}

/// What every edge last said of token tables, per environment and node: the
/// version it holds, and the reason of its last NACK if the last word was one.
pub type TokenAcks = Arc<Mutex<BTreeMap<String, BTreeMap<String, (u64, Option<String>)>>>>;

impl ControlService {
    /// A service over `controller`, accepting `admin_tokens` from operators and
    /// `edge_credentials` (environment → credential) from edges.
    pub fn new(
        controller: Arc<Controller>,
        admin_tokens: HashSet<String>,
        edge_credentials: BTreeMap<String, String>,
    ) -> Self {
        ControlService {
            controller,
            admin_tokens: Arc::new(admin_tokens),
            edge_credentials: Arc::new(edge_credentials),
            acks: Arc::default(),
            token_acks: Arc::default(),
            analyzer: Arc::default(),
            break_glass: None,
        }
    }

    /// Accepts break-glass orders signed with `key` for `Rollback` when the normal
    /// auth path is down.
    pub fn with_break_glass(mut self, key: VerifyingKey) -> Self {
        self.break_glass = Some(Arc::new(Verifier::new(key, 24 * 3600 * 1000)));
        self
    }

    /// The health analysis fed by the edges' reports.
    pub fn analyzer(&self) -> Arc<Analyzer> {
        self.analyzer.clone()
    }

    /// What the edges last said.
    pub fn acks(&self) -> Acks {
        self.acks.clone()
    }

    /// The controller it serves.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// What the edges last said of token tables.
    pub fn token_acks(&self) -> TokenAcks {
        self.token_acks.clone()
    }

    /// Whether `token` is one of the operators' admin tokens (compared as
    /// [`one_of`] does: in constant time, every entry).
    pub fn is_admin(&self, token: &str) -> bool {
        one_of(token, self.admin_tokens.iter())
    }

    fn presented<T>(request: &Request<T>) -> Option<&str> {
        request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// Whether `presented` is the credential of `environment`'s edges (compared in
    /// constant time).
    fn edge_credential_of(&self, environment: &str, presented: Option<&str>) -> bool {
        match (self.edge_credentials.get(environment), presented) {
            (Some(accepted), Some(presented)) => same_secret(presented, accepted),
            _ => false,
        }
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match Self::presented(request) {
            Some(token) if self.is_admin(token) => Ok(()),
            _ => Err(Status::unauthenticated("control needs an admin token")),
        }
    }

    /// The answer of every call that returns one deployment.
    fn answer(&self, d: Deployment) -> Response<v1::DeploymentResponse> {
        Response::new(v1::DeploymentResponse {
            deployment: Some(self.deployment(d)),
        })
    }

    /// A deployment as `GetDeployment` answers it: with the edges' ACKs, the
    /// verdict now, break-glass pins and the data set.
    pub fn deployment(&self, d: Deployment) -> v1::Deployment {
        let (phase, step, reason) = match &d.phase {
            Phase::Running { step, .. } => ("running", *step, String::new()),
            Phase::Paused { step } => ("paused", *step, String::new()),
            Phase::Completed => ("completed", d.steps.len().saturating_sub(1), String::new()),
            Phase::Aborted { reason } => ("aborted", 0, reason.clone()),
            Phase::RolledBack { reason } => ("rolled_back", 0, reason.clone()),
        };
        let (acked, departed) = self
            .acks
            .lock()
            .get(&d.environment)
            .map(|nodes| {
                let connected = nodes
                    .iter()
                    .filter(|(_, a)| a.left_ms.is_none())
                    .map(|(n, a)| (n.clone(), a.version))
                    .collect();
                let departed = nodes
                    .iter()
                    .filter_map(|(n, a)| {
                        a.left_ms.map(|t| {
                            (
                                n.clone(),
                                format!(
                                    "left {} holding route version {}",
                                    crate::model::rfc3339(t),
                                    a.version
                                ),
                            )
                        })
                    })
                    .collect();
                (connected, departed)
            })
            .unwrap_or_default();
        let now = self.controller.now_ms();
        let health = if d.phase.is_active() {
            match self.analyzer.verdict(
                &d.environment,
                &d.build_id,
                d.known_good.as_deref().or(Some(&d.build_id)),
                &d.thresholds,
                now,
            ) {
                Health::Healthy => "healthy".to_string(),
                Health::Inconclusive(why) => format!("inconclusive: {why}"),
                Health::Breach(why) => format!("breach: {why}"),
            }
        } else {
            String::new()
        };
        let pins = self
            .analyzer
            .pins(&d.environment, now)
            .into_iter()
            .map(|(node, (build, until))| {
                (
                    node,
                    format!("{build} until {}", crate::model::rfc3339(until)),
                )
            })
            .collect();
        let current_known_good = self
            .controller
            .known_good(&d.environment)
            .unwrap_or_default();
        let data_set = self
            .controller
            .build(&d.build_id)
            .map(|b| b.data_set)
            .unwrap_or_default();
        v1::Deployment {
            id: d.id,
            environment: d.environment,
            tenant: d.tenant,
            build_id: d.build_id,
            known_good: d.known_good.unwrap_or_default(),
            steps: d
                .steps
                .iter()
                .map(|s| v1::Step {
                    weight_bp: s.weight_bp,
                    bake_ms: s.bake_ms,
                })
                .collect(),
            phase: phase.into(),
            step: step as u32,
            reason,
            history: d.history,
            acked,
            thresholds: Some(d.thresholds.to_wire()),
            health,
            pins,
            current_known_good,
            data_set,
            departed,
            step_since_ms: match d.phase {
                Phase::Running { since_ms, .. } => since_ms,
                _ => 0,
            },
            now_ms: now,
        }
    }
}

impl ControlService {
    /// A `Rollback` without a valid admin token may carry a break-glass order
    /// (`edgekv-break-glass` metadata, the signed order's JSON). `Err(None)`: no
    /// order was presented; `Err(Some(why))`: one was, and was refused.
    fn break_glass_rollback<T>(
        &self,
        request: &Request<T>,
    ) -> Result<edgekv_breakglass::Order, Option<String>> {
        let raw = request
            .metadata()
            .get("edgekv-break-glass")
            .and_then(|v| v.to_str().ok())
            .ok_or(None)?;
        let verifier = self.break_glass.as_ref().ok_or_else(|| {
            Some(
                "this control plane has no break-glass key configured (--break-glass-key)"
                    .to_string(),
            )
        })?;
        let signed: edgekv_breakglass::SignedOrder = serde_json::from_str(raw)
            .map_err(|e| Some(format!("the break-glass order is not valid JSON: {e}")))?;
        let now = self.controller.now_ms();
        // The environment is checked against the request by the caller; the order
        // names it, and "control" (or "all") as its node.
        let environment = serde_json::from_str::<edgekv_breakglass::Order>(&signed.order)
            .map(|o| o.environment)
            .unwrap_or_default();
        let order = verifier
            .verify(&signed, now, &environment, "control")
            .map_err(|e| Some(format!("break-glass order refused: {e}")))?;
        if order.action != edgekv_breakglass::Action::Rollback {
            return Err(Some(format!(
                "a break-glass order to {:?} cannot roll back",
                order.action
            )));
        }
        tracing::error!(
            environment = %order.environment,
            build = %order.build,
            nonce = %order.nonce,
            "BREAK-GLASS: rollback ordered with a break-glass key, bypassing admin auth"
        );
        Ok(order)
    }
}

fn status(err: ControlError) -> Status {
    match err {
        ControlError::Refused(r) => Status::failed_precondition(format!("deployment refused: {r}")),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::State(crate::state::StateError::BuildConflict(id)) => {
            Status::already_exists(format!("build id {id:?} is registered with other content"))
        }
        ControlError::State(crate::state::StateError::ScopeRequired) => {
            Status::invalid_argument("environment and tenant are both required")
        }
        ControlError::State(other) => Status::internal(other.to_string()),
    }
}

/// A route table for the wire.
pub fn table_to_wire(table: &RouteTable) -> v1::RouteTable {
    v1::RouteTable {
        version: table.version,
        environment: table.environment.clone(),
        tenant: table.tenant.clone(),
        issued_at: table.issued_at,
        known_good_build: table.known_good_build.clone(),
        entries: table
            .entries
            .iter()
            .map(|e| v1::RouteEntry {
                build_id: e.build_id.clone(),
                environment: e.environment.clone(),
                tenant: e.tenant.clone(),
                artifact_digest: e.artifact_digest.clone(),
                weight_bp: e.weight_bp,
                endpoints: e.endpoints.clone(),
                data_set: e.data_set.clone(),
            })
            .collect(),
    }
}

fn build_from_wire(b: v1::Build) -> Build {
    Build {
        build_id: b.build_id,
        version: b.version,
        environment: b.environment,
        tenant: b.tenant,
        artifact_digest: b.artifact_digest,
        endpoints: b.endpoints,
        // Learnt by control from the build's answers, never taken from a caller.
        data_set: String::new(),
    }
}

fn build_to_wire(b: Build) -> v1::Build {
    v1::Build {
        build_id: b.build_id,
        version: b.version,
        environment: b.environment,
        tenant: b.tenant,
        artifact_digest: b.artifact_digest,
        endpoints: b.endpoints,
        data_set: b.data_set,
    }
}

#[tonic::async_trait]
impl control_server::Control for ControlService {
    async fn register_build(
        &self,
        request: Request<v1::RegisterBuildRequest>,
    ) -> Result<Response<v1::BuildResponse>, Status> {
        self.admin(&request)?;
        let build = request
            .into_inner()
            .build
            .ok_or_else(|| Status::invalid_argument("no build given"))?;
        let id = build.build_id.clone();
        let created = self
            .controller
            .register_build(build_from_wire(build))
            .map_err(status)?;
        // Learn the build's data set now if it runs (it may be registered before
        // it does: the pre-check probes it again anyway).
        if let Err(why) = self.controller.learn_data_set(&id).await {
            tracing::info!(build = %id, %why, "registered a build whose data set is not known yet");
        }
        let build = self
            .controller
            .build(&id)
            .map(build_to_wire)
            .map_err(status)?;
        Ok(Response::new(v1::BuildResponse {
            build: Some(build),
            created,
        }))
    }

    async fn list_builds(
        &self,
        request: Request<v1::ListBuildsRequest>,
    ) -> Result<Response<v1::ListBuildsResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let builds = self
            .controller
            .list_builds(&r.environment, &r.tenant)
            .map_err(status)?;
        Ok(Response::new(v1::ListBuildsResponse {
            builds: builds.into_iter().map(build_to_wire).collect(),
        }))
    }

    async fn create_deployment(
        &self,
        request: Request<v1::CreateDeploymentRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let steps = r
            .steps
            .iter()
            .map(|s| Step {
                weight_bp: s.weight_bp,
                bake_ms: s.bake_ms,
            })
            .collect();
        let thresholds = Thresholds::from_wire(r.thresholds.as_ref());
        let d = self
            .controller
            .create_deployment_with(
                &r.environment,
                &r.tenant,
                &r.build_id,
                steps,
                thresholds,
                (!r.new_data_set.is_empty()).then_some(r.new_data_set.as_str()),
            )
            .await
            .map_err(status)?;
        Ok(self.answer(d))
    }

    async fn get_deployment(
        &self,
        request: Request<v1::GetDeploymentRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        self.admin(&request)?;
        let d = self
            .controller
            .deployment(&request.into_inner().id)
            .map_err(status)?;
        Ok(self.answer(d))
    }

    async fn list_deployments(
        &self,
        request: Request<v1::ListDeploymentsRequest>,
    ) -> Result<Response<v1::ListDeploymentsResponse>, Status> {
        self.admin(&request)?;
        let environment = request.into_inner().environment;
        let filter = (!environment.is_empty()).then_some(environment.as_str());
        let deployments = self
            .controller
            .deployments(filter)
            .into_iter()
            .map(|d| self.deployment(d))
            .collect();
        Ok(Response::new(v1::ListDeploymentsResponse { deployments }))
    }

    async fn pause_deployment(
        &self,
        request: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        self.admin(&request)?;
        let d = self
            .controller
            .pause(&request.into_inner().id)
            .map_err(status)?;
        Ok(self.answer(d))
    }

    async fn resume_deployment(
        &self,
        request: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        self.admin(&request)?;
        let d = self
            .controller
            .resume(&request.into_inner().id)
            .map_err(status)?;
        Ok(self.answer(d))
    }

    async fn abort_deployment(
        &self,
        request: Request<v1::DeploymentActionRequest>,
    ) -> Result<Response<v1::DeploymentResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let reason = if r.reason.is_empty() {
            "aborted by an operator".to_string()
        } else {
            r.reason
        };
        let d = self.controller.abort(&r.id, &reason).map_err(status)?;
        Ok(self.answer(d))
    }

    async fn rollback(
        &self,
        request: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::RollbackResponse>, Status> {
        let glass = match self.admin(&request) {
            Ok(()) => None,
            Err(refused) => Some(
                self.break_glass_rollback(&request)
                    .map_err(|why| match why {
                        Some(why) => Status::permission_denied(why),
                        None => refused,
                    })?,
            ),
        };
        let mut r = request.into_inner();
        if let Some(order) = glass {
            if order.environment != r.environment {
                return Err(Status::permission_denied(format!(
                    "the break-glass order is for environment {:?}, the rollback for {:?}",
                    order.environment, r.environment
                )));
            }
            r.to_build = order.build.clone();
            r.reason = format!("break-glass rollback (order {})", order.nonce);
        }
        let to = (!r.to_build.is_empty()).then_some(r.to_build.as_str());
        let reason = if r.reason.is_empty() {
            "rolled back by an operator".to_string()
        } else {
            r.reason
        };
        let known_good = self
            .controller
            .rollback(&r.environment, to, &reason)
            .map_err(status)?;
        let route_version = self
            .controller
            .route_table(&r.environment)
            .map_or(0, |t| t.version);
        Ok(Response::new(v1::RollbackResponse {
            known_good,
            route_version,
        }))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        // A token no edge could fetch is refused: an environment control has no
        // credential for has no edge (and is most likely a typo).
        if !r.environment.trim().is_empty() && !self.edge_credentials.contains_key(&r.environment) {
            return Err(Status::invalid_argument(format!(
                "control knows no environment {:?} (no --probe-credential for it): no edge would accept the token",
                r.environment
            )));
        }
        let (token, version) = self
            .controller
            .create_token(&r.name, |hash| TokenRecord {
                hash,
                account: r.account.clone(),
                namespaces: r.namespaces.clone(),
                read_only: r.read_only,
                admin: r.admin,
                environment: r.environment.clone(),
            })
            .map_err(status)?;
        let grant = v1::TokenGrant {
            hash: crate::controller::sha256_hex(&token),
            name: r.name,
            account: r.account,
            namespaces: r.namespaces,
            read_only: r.read_only,
            admin: r.admin,
            environment: r.environment,
        };
        Ok(Response::new(v1::CreateTokenResponse {
            token,
            grant: Some(grant),
            version,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.admin(&request)?;
        let version = self
            .controller
            .revoke_token(&request.into_inner().name)
            .map_err(status)?;
        Ok(Response::new(v1::RevokeTokenResponse {
            revoked: true,
            version,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.admin(&request)?;
        let environment = request.into_inner().environment;
        let (version, tokens) = if environment.is_empty() {
            self.controller.tokens()
        } else {
            self.controller.tokens_for(&environment)
        };
        Ok(Response::new(v1::ListTokensResponse {
            grants: token_grants(tokens),
            version,
        }))
    }

    type StreamRoutesStream = ReceiverStream<Result<v1::RouteTable, Status>>;

    async fn stream_routes(
        &self,
        request: Request<Streaming<v1::RouteAck>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let presented = Self::presented(&request).map(str::to_string);
        let mut acks = request.into_inner();
        let hello = acks.next().await.ok_or_else(|| {
            Status::invalid_argument("the stream must open with the edge's RouteAck")
        })??;
        if !self.edge_credential_of(&hello.environment, presented.as_deref()) {
            return Err(Status::unauthenticated(format!(
                "not a credential of environment {:?}",
                hello.environment
            )));
        }
        let environment = hello.environment.clone();
        if hello.node_id.trim().is_empty() || hello.node_id.len() > 256 {
            return Err(Status::invalid_argument(
                "the edge's first RouteAck must name its node (1 to 256 bytes)",
            ));
        }
        // The node id is fixed by the stream's first message: later messages
        // cannot speak for other (made-up) nodes.
        let node = hello.node_id.clone();
        if let Err(err) = self
            .controller
            .observe_edge_version(&environment, hello.version)
        {
            tracing::warn!(%node, version = hello.version, error = %err, "refused an edge's route stream");
            return Err(status(err));
        }
        let stream = STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.acks
            .lock()
            .entry(environment.clone())
            .or_default()
            .insert(
                node.clone(),
                EdgeAck {
                    version: hello.version,
                    nack: None,
                    left_ms: None,
                    stream,
                },
            );
        let (tx, rx) = mpsc::channel(8);
        let controller = self.controller.clone();
        let mut changed = controller.subscribe();
        let sender_env = environment.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                if let Some(table) = controller.route_table(&sender_env)
                    && table.version != sent
                {
                    sent = table.version;
                    if tx.send(Ok(table_to_wire(&table))).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        let acks_map = self.acks.clone();
        let clock = self.controller.clone();
        tokio::spawn(async move {
            while let Some(Ok(ack)) = acks.next().await {
                let nack = (!ack.nack_reason.is_empty()).then_some(ack.nack_reason.clone());
                if let Some(reason) = &nack {
                    tracing::warn!(%node, version = ack.nacked_version, %reason, "edge NACKed a route table");
                }
                let mut map = acks_map.lock();
                let nodes = map.entry(environment.clone()).or_default();
                match nodes.get_mut(&node) {
                    // A newer stream of the same node speaks for it now.
                    Some(held) if held.stream != stream => break,
                    Some(held) => {
                        held.version = ack.version;
                        held.nack = nack;
                    }
                    None => {
                        nodes.insert(
                            node.clone(),
                            EdgeAck {
                                version: ack.version,
                                nack,
                                left_ms: None,
                                stream,
                            },
                        );
                    }
                }
            }
            departed(&acks_map, &environment, &node, stream, clock.now_ms());
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_health(
        &self,
        request: Request<Streaming<v1::HealthReport>>,
    ) -> Result<Response<v1::HealthReportSummary>, Status> {
        let presented = Self::presented(&request).map(str::to_string);
        let mut reports = request.into_inner();
        let mut count = 0;
        while let Some(report) = reports.next().await {
            let report = report?;
            if !self.edge_credential_of(&report.environment, presented.as_deref()) {
                return Err(Status::unauthenticated(format!(
                    "not a credential of environment {:?}",
                    report.environment
                )));
            }
            self.analyzer.record(self.controller.now_ms(), report);
            count += 1;
        }
        Ok(Response::new(v1::HealthReportSummary { reports: count }))
    }

    type StreamTokensStream = ReceiverStream<Result<v1::TokenTable, Status>>;

    async fn stream_tokens(
        &self,
        request: Request<Streaming<v1::TokenAck>>,
    ) -> Result<Response<Self::StreamTokensStream>, Status> {
        let presented = Self::presented(&request).map(str::to_string);
        let mut acks = request.into_inner();
        // The first message says who the edge is: its environment picks the
        // tokens it gets, so a stream that does not name one gets none.
        let hello = acks.next().await.ok_or_else(|| {
            Status::invalid_argument("the stream must open with the edge's TokenAck")
        })??;
        if hello.environment.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the edge's first TokenAck must name its environment: control sends each environment only its own tokens",
            ));
        }
        if !self.edge_credential_of(&hello.environment, presented.as_deref()) {
            return Err(Status::unauthenticated(format!(
                "not a credential of environment {:?}",
                hello.environment
            )));
        }
        let (environment, edge_tenant) = (hello.environment, hello.tenant);
        let (tx, rx) = mpsc::channel(8);
        let controller = self.controller.clone();
        let mut changed = controller.subscribe();
        let sender_env = environment.clone();
        let token_acks = self.token_acks.clone();
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                let (version, tokens) = controller.tokens_for(&sender_env);
                if sent != Some(version) {
                    sent = Some(version);
                    // The tenant control knows for the environment; the edge checks
                    // it against its own. Without a build of it yet, control knows
                    // none and names the edge's.
                    let tenant = controller
                        .tenant_of(&sender_env)
                        .unwrap_or_else(|| edge_tenant.clone());
                    let table = v1::TokenTable {
                        version,
                        grants: token_grants(tokens),
                        environment: sender_env.clone(),
                        tenant,
                    };
                    if tx.send(Ok(table)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(ack)) = acks.next().await {
                let nack = (!ack.nack_reason.is_empty()).then(|| ack.nack_reason.clone());
                token_acks
                    .lock()
                    .entry(environment.clone())
                    .or_default()
                    .insert(ack.node_id.clone(), (ack.version, nack));
                if !ack.nack_reason.is_empty() {
                    tracing::warn!(
                        node = %ack.node_id,
                        %environment,
                        version = ack.nacked_version,
                        held = ack.version,
                        reason = %ack.nack_reason,
                        "edge NACKed a token table; it keeps the one it holds"
                    );
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal_and_one_of_checks_every_entry() {
        assert!(same_secret("prod-cred", "prod-cred"));
        assert!(!same_secret("prod-cred", "prod-creD"));
        assert!(!same_secret("prod-cred", "prod-cred-and-more"));
        assert!(!same_secret("", "prod-cred"));
        let accepted: HashSet<String> = ["alpha", "beta"].map(String::from).into();
        assert!(one_of("alpha", accepted.iter()));
        assert!(one_of("beta", accepted.iter()));
        assert!(!one_of("gamma", accepted.iter()));
        assert!(!one_of("beta", std::iter::empty::<&String>()));
    }
}
