//! [`Controller`]: the control plane's operations on its state. Every change is
//! written to the state file before it is answered, so a restart (or a crash)
//! resumes exactly where control was.

use std::sync::Arc;

use edgekv_routing::RouteTable;
use parking_lot::Mutex;

use crate::health::Thresholds;
use crate::model::{Build, Deployment, Phase, Step};
use crate::precheck::{self, Refusal};
use crate::probe::Probe;
use crate::rollout::{self, Health, Transition};
use crate::state::{ControlState, StateError, StateFile, TokenRecord};

/// A new token: 128 random bits as 32 hex digits.
fn new_secret() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token, hex.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A pre-check refused the deployment; the message names the reason.
    #[error("deployment refused: {0}")]
    Refused(#[from] Refusal),
    /// The state could not be read or written, or a request conflicts with it.
    #[error(transparent)]
    State(#[from] StateError),
    /// No such deployment or build.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or not possible in the current phase.
    #[error("{0}")]
    Invalid(String),
}

/// The result of a control operation.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// The control plane: builds, deployments and route tables over a state file.
pub struct Controller {
    state: Mutex<ControlState>,
    file: StateFile,
    probe: Arc<dyn Probe>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Bumped on every change, so route streams send new tables at once.
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("file", &self.file)
            .finish()
    }
}

impl Controller {
    /// Opens the controller over the state file in `dir`; `clock` gives Unix ms.
    pub fn open(
        dir: &std::path::Path,
        probe: Arc<dyn Probe>,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self> {
        let file = StateFile::in_dir(dir);
        let state = file.load()?;
        Ok(Controller {
            state: Mutex::new(state),
            file,
            probe,
            clock,
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Control's clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// A receiver that changes whenever the state does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies a change to the state and persists it; nothing changes if either fails.
    fn change<T>(&self, apply: impl FnOnce(&mut ControlState) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock();
        let mut next = state.clone();
        let out = apply(&mut next)?;
        self.file.save(&next)?;
        *state = next;
        self.changed.send_modify(|n| *n += 1);
        Ok(out)
    }

    /// Registers a build; returns whether it was new.
    pub fn register_build(&self, build: Build) -> Result<bool> {
        for (field, value) in [
            ("build_id", &build.build_id),
            ("environment", &build.environment),
            ("tenant", &build.tenant),
        ] {
            if value.trim().is_empty() {
                return Err(ControlError::Invalid(format!("{field} must not be empty")));
            }
        }
        if build.endpoints.is_empty()
            || !build
                .endpoints
                .iter()
                .all(|e| e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ControlError::Invalid(
                "a build needs at least one endpoint, each an http(s) URL".into(),
            ));
        }
        self.change(|state| Ok(state.register_build(build)?))
    }

    /// The builds of one environment and tenant.
    pub fn list_builds(&self, environment: &str, tenant: &str) -> Result<Vec<Build>> {
        let state = self.state.lock();
        Ok(state
            .list_builds(environment, tenant)?
            .into_iter()
            .cloned()
            .collect())
    }

    /// Starts a deployment after every pre-check, the health probe of each of the
    /// build's endpoints with the target environment's credential included. The
    /// first deployment of an environment is a bootstrap: its build is
    /// provisionally known-good.
    pub async fn create_deployment(
        &self,
        environment: &str,
        tenant: &str,
        build_id: &str,
        steps: Vec<Step>,
    ) -> Result<Deployment> {
        self.create_deployment_with(environment, tenant, build_id, steps, Thresholds::default())
            .await
    }

    /// [`Controller::create_deployment`] with the health analysis' thresholds.
    pub async fn create_deployment_with(
        &self,
        environment: &str,
        tenant: &str,
        build_id: &str,
        steps: Vec<Step>,
        thresholds: Thresholds,
    ) -> Result<Deployment> {
        if thresholds.window_ms < 1_000 || thresholds.window_ms > 5 * 60_000 {
            return Err(ControlError::Invalid(format!(
                "the health window must be between 1 s and 5 min, not {} ms",
                thresholds.window_ms
            )));
        }
        let build = {
            let state = self.state.lock();
            precheck::check(
                state.builds.values(),
                &state.deployments,
                build_id,
                environment,
                tenant,
                &steps,
            )?
            .clone()
        };
        for endpoint in &build.endpoints {
            if let Err(reason) = self
                .probe
                .health(endpoint, &build.build_id, environment, tenant)
                .await
            {
                return Err(Refusal::HealthFailed {
                    build_id: build.build_id.clone(),
                    endpoint: endpoint.clone(),
                    environment: environment.to_string(),
                    reason,
                }
                .into());
            }
        }
        let now = (self.clock)();
        self.change(|state| {
            // Checked again: another deployment may have started during the probe.
            precheck::check(
                state.builds.values(),
                &state.deployments,
                build_id,
                environment,
                tenant,
                &steps,
            )?;
            let env = state
                .environments
                .entry(environment.to_string())
                .or_default();
            let known_good = env.known_good.clone();
            if known_good.is_none() {
                env.known_good = Some(build_id.to_string());
            }
            env.route_version += 1;
            let deployment = Deployment {
                id: format!("{environment}-{}", state.deployments.len() + 1),
                environment: environment.to_string(),
                tenant: tenant.to_string(),
                build_id: build_id.to_string(),
                known_good: known_good.clone(),
                steps,
                phase: Phase::Running {
                    step: 0,
                    since_ms: now,
                },
                created_ms: now,
                history: vec![format!(
                    "{now}: created; known-good {}",
                    known_good.as_deref().unwrap_or("none (bootstrap)")
                )],
                thresholds,
            };
            state.deployments.push(deployment.clone());
            Ok(deployment)
        })
    }

    /// A deployment by id.
    pub fn deployment(&self, id: &str) -> Result<Deployment> {
        self.state
            .lock()
            .deployments
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no deployment {id:?}")))
    }

    /// The deployments, of one environment or all, oldest first.
    pub fn deployments(&self, environment: Option<&str>) -> Vec<Deployment> {
        self.state
            .lock()
            .deployments
            .iter()
            .filter(|d| environment.is_none_or(|e| d.environment == e))
            .cloned()
            .collect()
    }

    fn act(
        &self,
        id: &str,
        action: impl FnOnce(&mut Deployment, u64) -> Result<()>,
    ) -> Result<Deployment> {
        let now = (self.clock)();
        self.change(|state| {
            let deployment = state
                .deployments
                .iter_mut()
                .find(|d| d.id == id)
                .ok_or_else(|| ControlError::NotFound(format!("no deployment {id:?}")))?;
            action(deployment, now)?;
            let (environment, out) = (deployment.environment.clone(), deployment.clone());
            state
                .environments
                .entry(environment)
                .or_default()
                .route_version += 1;
            Ok(out)
        })
    }

    /// Holds a running deployment at its step.
    pub fn pause(&self, id: &str) -> Result<Deployment> {
        self.act(id, |d, now| match d.phase {
            Phase::Running { step, .. } => {
                d.phase = Phase::Paused { step };
                d.history
                    .push(format!("{now}: paused at step {}", step + 1));
                Ok(())
            }
            ref other => Err(ControlError::Invalid(format!(
                "cannot pause a deployment that is {other:?}"
            ))),
        })
    }

    /// Resumes a paused deployment; its step's bake starts again.
    pub fn resume(&self, id: &str) -> Result<Deployment> {
        self.act(id, |d, now| match d.phase {
            Phase::Paused { step } => {
                d.phase = Phase::Running {
                    step,
                    since_ms: now,
                };
                d.history
                    .push(format!("{now}: resumed at step {}", step + 1));
                Ok(())
            }
            ref other => Err(ControlError::Invalid(format!(
                "cannot resume a deployment that is {other:?}"
            ))),
        })
    }

    /// Stops a deployment; traffic goes back to known-good.
    pub fn abort(&self, id: &str, reason: &str) -> Result<Deployment> {
        self.act(id, |d, now| {
            if !d.phase.is_active() {
                return Err(ControlError::Invalid(format!(
                    "cannot abort a deployment that is {:?}",
                    d.phase
                )));
            }
            d.phase = Phase::Aborted {
                reason: reason.to_string(),
            };
            d.history.push(format!("{now}: aborted: {reason}"));
            Ok(())
        })
    }

    /// Rolls an environment back: an active deployment is rolled back to
    /// known-good; with none active, known-good becomes `to` (or the previous
    /// known-good). Returns the known-good build.
    pub fn rollback(&self, environment: &str, to: Option<&str>, reason: &str) -> Result<String> {
        let now = (self.clock)();
        self.change(|state| {
            if let Some(d) = state
                .deployments
                .iter_mut()
                .find(|d| d.environment == environment && d.phase.is_active())
            {
                d.phase = Phase::RolledBack { reason: reason.to_string() };
                d.history.push(format!("{now}: rolled back: {reason}"));
            } else {
                let builds = state.builds.clone();
                let env = state.environments.entry(environment.to_string()).or_default();
                let target = match to {
                    Some(id) => id.to_string(),
                    None => env.known_good_history.last().cloned().ok_or_else(|| {
                        ControlError::Invalid(format!(
                            "environment {environment} has no earlier known-good build to roll back to"
                        ))
                    })?,
                };
                match builds.get(&target) {
                    Some(b) if b.environment == environment => {}
                    Some(b) => {
                        return Err(Refusal::WrongEnvironment {
                            build_id: target.clone(),
                            build_environment: b.environment.clone(),
                            environment: environment.to_string(),
                        }
                        .into());
                    }
                    None => return Err(Refusal::UnknownBuild(target).into()),
                }
                if let Some(current) = env.known_good.replace(target.clone())
                    && current != target
                {
                    env.known_good_history.retain(|b| *b != target);
                    env.known_good_history.push(current);
                }
            }
            let env = state.environments.entry(environment.to_string()).or_default();
            env.route_version += 1;
            env.known_good
                .clone()
                .ok_or_else(|| ControlError::Invalid(format!("environment {environment} has no known-good build")))
        })
    }

    /// Advances every running deployment given its health verdict; a completed one
    /// makes its build known-good. Returns what moved.
    pub fn tick(
        &self,
        health: impl Fn(&Deployment) -> Health,
    ) -> Result<Vec<(String, Transition)>> {
        let now = (self.clock)();
        let moved = {
            let state = self.state.lock();
            state
                .deployments
                .iter()
                .filter(|d| matches!(d.phase, Phase::Running { .. }))
                .map(|d| (d.id.clone(), health(d)))
                .collect::<Vec<_>>()
        };
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        self.change(|state| {
            let mut transitions = Vec::new();
            for (id, verdict) in moved {
                let Some(d) = state.deployments.iter_mut().find(|d| d.id == id) else {
                    continue;
                };
                let Some(transition) = rollout::advance(d, now, &verdict) else {
                    continue;
                };
                let (environment, build_id) = (d.environment.clone(), d.build_id.clone());
                let env = state.environments.entry(environment).or_default();
                if transition == Transition::Completed
                    && let Some(previous) = env.known_good.replace(build_id.clone())
                    && previous != build_id
                {
                    env.known_good_history.push(previous);
                }
                env.route_version += 1;
                transitions.push((id, transition));
            }
            Ok(transitions)
        })
    }

    /// Issues a token; returns the secret (shown once; only its hash is kept) and
    /// the new token table version.
    pub fn create_token(
        &self,
        name: &str,
        record: impl FnOnce(String) -> TokenRecord,
    ) -> Result<(String, u64)> {
        if name.trim().is_empty() {
            return Err(ControlError::Invalid("a token needs a name".into()));
        }
        let secret = new_secret();
        let hash = sha256_hex(&secret);
        let record = record(hash);
        if record.account.trim().is_empty() {
            return Err(ControlError::Invalid("a token needs an account".into()));
        }
        let version = self.change(|state| {
            if state.tokens.contains_key(name) {
                return Err(ControlError::Invalid(format!(
                    "a token named {name:?} exists; revoke it first"
                )));
            }
            state.tokens.insert(name.to_string(), record);
            state.token_version += 1;
            Ok(state.token_version)
        })?;
        Ok((secret, version))
    }

    /// Revokes a token by name; returns the new token table version.
    pub fn revoke_token(&self, name: &str) -> Result<u64> {
        self.change(|state| {
            state
                .tokens
                .remove(name)
                .ok_or_else(|| ControlError::NotFound(format!("no token named {name:?}")))?;
            state.token_version += 1;
            Ok(state.token_version)
        })
    }

    /// The token table: its version and every token by name.
    pub fn tokens(&self) -> (u64, Vec<(String, TokenRecord)>) {
        let state = self.state.lock();
        let list = state
            .tokens
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        (state.token_version, list)
    }

    /// Raises an environment's route version past what an edge reports holding, so
    /// versions never go backwards (even after control lost its state).
    pub fn observe_edge_version(&self, environment: &str, version: u64) -> Result<()> {
        let held = self
            .state
            .lock()
            .environments
            .get(environment)
            .map_or(0, |e| e.route_version);
        if version < held {
            return Ok(());
        }
        self.change(|state| {
            let env = state
                .environments
                .entry(environment.to_string())
                .or_default();
            env.route_version = rollout::next_version(env.route_version, [version]);
            Ok(())
        })
    }

    /// The route table of an environment now, if it has a known-good build.
    pub fn route_table(&self, environment: &str) -> Option<RouteTable> {
        let state = self.state.lock();
        let env = state.environments.get(environment)?;
        let known_good = state.builds.get(env.known_good.as_ref()?)?;
        let active = state
            .deployments
            .iter()
            .rev()
            .find(|d| d.environment == environment && d.phase.is_active())
            .and_then(|d| state.builds.get(&d.build_id).map(|b| (b, d)));
        Some(rollout::route_table(
            known_good,
            active,
            env.route_version,
            (self.clock)(),
        ))
    }
}

#[cfg(test)]
mod tests;
