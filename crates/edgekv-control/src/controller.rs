//! [`Controller`]: the control plane's operations on its state. Every change is
//! written to the state file before it is answered, so a restart (or a crash)
//! resumes exactly where control was.

use std::sync::Arc;

use edgekv_routing::RouteTable;
use parking_lot::Mutex;

use crate::health::Thresholds;
use crate::model::{Build, Deployment, Phase, Step, rfc3339};
use crate::precheck::{self, Refusal};
use crate::probe::Probe;
use crate::rollout::{self, Health, Transition};
use crate::state::{ControlState, StateError, StateFile, StateStore, TokenRecord};

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

/// How far past control's route version an edge may report holding: further is
/// refused as absurd (a hostile or corrupt hello).
pub const MAX_VERSION_LEAP: u64 = 1 << 32;

/// The result of a control operation.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// The control plane: builds, deployments and route tables over a state file.
pub struct Controller {
    state: Mutex<ControlState>,
    file: Arc<dyn StateStore>,
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
        Self::open_with(Arc::new(StateFile::in_dir(dir)), probe, clock)
    }

    /// Opens the controller over the state a [`StateStore`] keeps.
    pub fn open_with(
        file: Arc<dyn StateStore>,
        probe: Arc<dyn Probe>,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self> {
        let state = file.load()?;
        Ok(Controller {
            state: Mutex::new(state),
            file,
            probe,
            clock,
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Per environment, the last route table version issued.
    pub fn route_versions(&self) -> std::collections::BTreeMap<String, u64> {
        (self.state.lock().environments.iter())
            .map(|(name, env)| (name.clone(), env.route_version))
            .collect()
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

    /// Probes a registered build's first endpoint with its environment's
    /// credential and records the data set it answers with. Returns it, or why it
    /// is unknown (the build may be registered before it runs).
    pub async fn learn_data_set(&self, build_id: &str) -> Result<String> {
        let build = self
            .state
            .lock()
            .builds
            .get(build_id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no build {build_id:?}")))?;
        let endpoint = build.endpoints.first().cloned().unwrap_or_default();
        let data_set = self
            .probe
            .health(
                &endpoint,
                &build.build_id,
                &build.environment,
                &build.tenant,
            )
            .await
            .map_err(|why| {
                ControlError::Invalid(format!("cannot probe {build_id} at {endpoint}: {why}"))
            })?;
        self.record_data_sets(&[(build_id, &data_set)])?;
        Ok(data_set)
    }

    /// Records what builds answered with, where it is news.
    fn record_data_sets(&self, seen: &[(&str, &str)]) -> Result<()> {
        let news = {
            let state = self.state.lock();
            seen.iter()
                .any(|(id, ds)| state.builds.get(*id).is_some_and(|b| b.data_set != *ds))
        };
        if !news {
            return Ok(());
        }
        self.change(|state| {
            for (id, ds) in seen {
                if let Some(b) = state.builds.get_mut(*id) {
                    if !b.data_set.is_empty() && b.data_set != *ds {
                        tracing::warn!(build = %id, was = %b.data_set, now = %ds, "a build now serves another data set");
                    }
                    b.data_set = ds.to_string();
                }
            }
            Ok(())
        })
    }

    /// The known-good build of an environment now.
    pub fn known_good(&self, environment: &str) -> Option<String> {
        self.state
            .lock()
            .environments
            .get(environment)
            .and_then(|e| e.known_good.clone())
    }

    /// A build by id.
    pub fn build(&self, build_id: &str) -> Result<Build> {
        self.state
            .lock()
            .builds
            .get(build_id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no build {build_id:?}")))
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
        self.create_deployment_with(
            environment,
            tenant,
            build_id,
            steps,
            Thresholds::default(),
            None,
        )
        .await
    }

    /// [`Controller::create_deployment`] with the health analysis' thresholds, and
    /// the data set the operator names for a real migration (`None`: the build
    /// must serve known-good's).
    pub async fn create_deployment_with(
        &self,
        environment: &str,
        tenant: &str,
        build_id: &str,
        steps: Vec<Step>,
        thresholds: Thresholds,
        new_data_set: Option<&str>,
    ) -> Result<Deployment> {
        if thresholds.window_ms < 1_000 || thresholds.window_ms > 5 * 60_000 {
            return Err(ControlError::Invalid(format!(
                "the health window must be between 1 s and 5 min, not {} ms",
                thresholds.window_ms
            )));
        }
        let (build, known_good) = {
            let state = self.state.lock();
            let build = precheck::check(
                state.builds.values(),
                &state.deployments,
                build_id,
                environment,
                tenant,
                &steps,
            )?
            .clone();
            let known_good = state
                .environments
                .get(environment)
                .and_then(|e| e.known_good.as_ref())
                .and_then(|k| state.builds.get(k))
                .filter(|k| k.build_id != build.build_id)
                .cloned();
            (build, known_good)
        };
        let mut data_sets = Vec::new();
        for endpoint in &build.endpoints {
            match self
                .probe
                .health(endpoint, &build.build_id, environment, tenant)
                .await
            {
                Ok(data_set) => data_sets.push((endpoint.clone(), data_set)),
                Err(reason) => {
                    return Err(Refusal::HealthFailed {
                        build_id: build.build_id.clone(),
                        endpoint: endpoint.clone(),
                        environment: environment.to_string(),
                        reason,
                    }
                    .into());
                }
            }
        }
        let build_data_set = data_sets
            .first()
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        if data_sets.iter().any(|(_, d)| *d != build_data_set) {
            return Err(Refusal::MixedDataSets {
                build_id: build.build_id.clone(),
                data_sets: data_sets
                    .iter()
                    .map(|(e, d)| format!("{e} → {d}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
        // Known-good's data set: as recorded, or probed now when control never
        // learnt it (a state from before data sets).
        let known_good_data_set = match &known_good {
            Some(k) if !k.data_set.is_empty() => Some((k.build_id.clone(), k.data_set.clone())),
            Some(k) => {
                let endpoint = k.endpoints.first().cloned().unwrap_or_default();
                match self
                    .probe
                    .health(&endpoint, &k.build_id, environment, tenant)
                    .await
                {
                    Ok(d) => Some((k.build_id.clone(), d)),
                    Err(why) if new_data_set.is_none() => {
                        return Err(ControlError::Invalid(format!(
                            "deployment refused: control cannot tell which data set known-good {} serves ({why}); to deploy anyway, name the new build's data set: --new-data-set {build_data_set}",
                            k.build_id
                        )));
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        // What the probes saw is a fact: recorded even when the pre-check refuses.
        let mut seen = vec![(build.build_id.as_str(), build_data_set.as_str())];
        if let Some((k, d)) = &known_good_data_set {
            seen.push((k.as_str(), d.as_str()));
        }
        self.record_data_sets(&seen)?;
        precheck::data_set(
            &build.build_id,
            &build_data_set,
            known_good_data_set
                .as_ref()
                .map(|(k, d)| (k.as_str(), d.as_str())),
            new_data_set,
        )?;
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
                    "{}: created; known-good {}; data set {build_data_set}{}",
                    rfc3339(now),
                    known_good.as_deref().unwrap_or("none (bootstrap)"),
                    if new_data_set.is_some() {
                        " (a migration named by the operator)"
                    } else {
                        ""
                    }
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
                    .push(format!("{}: paused at step {}", rfc3339(now), step + 1));
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
                    .push(format!("{}: resumed at step {}", rfc3339(now), step + 1));
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
            d.history
                .push(format!("{}: aborted: {reason}", rfc3339(now)));
            Ok(())
        })
    }

    /// Rolls an environment back. Without `to`: an active deployment (running or
    /// paused) is rolled back and traffic goes to known-good, which stays as it
    /// is; with nothing active there is nothing to roll back from, and that is an
    /// error that changes nothing — so rolling back twice equals rolling back once.
    /// With `to`: known-good becomes that build (of the environment's tenant and
    /// data set, and once known-good itself), and an active deployment is rolled
    /// back too. A rollback never makes the build it leaves known-good. Returns the
    /// known-good build.
    pub fn rollback(&self, environment: &str, to: Option<&str>, reason: &str) -> Result<String> {
        let now = (self.clock)();
        {
            // `--to` the build that is known-good already, with nothing active:
            // done before; pressing it again changes nothing.
            let state = self.state.lock();
            let current = state
                .environments
                .get(environment)
                .and_then(|e| e.known_good.clone());
            let active = state
                .deployments
                .iter()
                .any(|d| d.environment == environment && d.phase.is_active());
            if let (Some(current), Some(to)) = (current, to)
                && current == to
                && !active
            {
                return Ok(current);
            }
        }
        self.change(|state| {
            let builds = state.builds.clone();
            let env = state
                .environments
                .get(environment)
                .cloned()
                .unwrap_or_default();
            let current = env.known_good.clone().ok_or_else(|| {
                ControlError::Invalid(format!(
                    "environment {environment} has no known-good build: nothing to roll back to"
                ))
            })?;
            let target = match to {
                Some(id) if id != current => {
                    let build = builds
                        .get(id)
                        .ok_or_else(|| Refusal::UnknownBuild(id.to_string()))?;
                    if build.environment != environment {
                        return Err(Refusal::WrongEnvironment {
                            build_id: id.to_string(),
                            build_environment: build.environment.clone(),
                            environment: environment.to_string(),
                        }
                        .into());
                    }
                    let current_build = builds.get(&current);
                    if let Some(k) = current_build {
                        if build.tenant != k.tenant {
                            return Err(Refusal::WrongTenant {
                                build_id: id.to_string(),
                                build_tenant: build.tenant.clone(),
                                tenant: k.tenant.clone(),
                            }
                            .into());
                        }
                        if !build.data_set.is_empty()
                            && !k.data_set.is_empty()
                            && build.data_set != k.data_set
                        {
                            return Err(Refusal::WrongDataSet {
                                build_id: id.to_string(),
                                build_data_set: build.data_set.clone(),
                                known_good: current.clone(),
                                known_good_data_set: k.data_set.clone(),
                            }
                            .into());
                        }
                    }
                    if !env.known_good_history.iter().any(|b| b == id) {
                        return Err(ControlError::Invalid(format!(
                            "build {id} was never known-good in {environment}; a rollback goes only to a build that was (earlier known-good: {})",
                            if env.known_good_history.is_empty() {
                                "none".to_string()
                            } else {
                                env.known_good_history.join(", ")
                            }
                        )));
                    }
                    Some(id.to_string())
                }
                _ => None,
            };
            let active = state
                .deployments
                .iter_mut()
                .rev()
                .find(|d| d.environment == environment && d.phase.is_active());
            let stamp = rfc3339(now);
            match (active, &target) {
                (Some(d), _) => {
                    d.phase = Phase::RolledBack {
                        reason: reason.to_string(),
                    };
                    d.history.push(match &target {
                        Some(t) => format!("{stamp}: rolled back to {t} by an operator: {reason}"),
                        None => format!("{stamp}: rolled back to {current} by an operator: {reason}"),
                    });
                }
                (None, Some(t)) => {
                    if let Some(d) = state
                        .deployments
                        .iter_mut()
                        .rev()
                        .find(|d| d.environment == environment)
                    {
                        d.history.push(format!(
                            "{stamp}: environment rolled back from {current} to {t} by an operator: {reason}"
                        ));
                    }
                }
                (None, None) => {
                    return Err(ControlError::Invalid(format!(
                        "nothing to roll back in {environment}: no deployment is active and traffic already goes to known-good {current}; to go back to an earlier build, name it with --to{}",
                        match env.known_good_history.last() {
                            Some(b) => format!(" (the previous known-good is {b})"),
                            None => String::new(),
                        }
                    )));
                }
            }
            let env = state.environments.entry(environment.to_string()).or_default();
            if let Some(target) = target {
                // The build left stays in the history of builds once known-good;
                // the target was one already.
                if !env.known_good_history.contains(&current) {
                    env.known_good_history.push(current);
                }
                env.known_good = Some(target);
            }
            env.route_version += 1;
            env.known_good
                .clone()
                .ok_or_else(|| ControlError::Invalid(format!("environment {environment} has no known-good build")))
        })
    }

    /// Advances every running deployment given its health verdict, and rolls back
    /// a paused one whose verdict is a breach; a completed one makes its build
    /// known-good. Returns what moved.
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
                .filter(|d| d.phase.is_active())
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
                if transition == Transition::Completed {
                    // Promotion: the only way a build becomes known-good. Every
                    // build that ever was stays listed, for `rollback --to`.
                    if let Some(previous) = env.known_good.replace(build_id.clone())
                        && !env.known_good_history.contains(&previous)
                    {
                        env.known_good_history.push(previous);
                    }
                    env.known_good_history.retain(|b| *b != build_id);
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
        if record.environment.trim().is_empty() {
            return Err(ControlError::Invalid(
                "a token needs an environment: the one whose edges accept it".into(),
            ));
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

    /// The token table of one environment: the version (one counter for every
    /// environment) and, by name, only the tokens its edges accept
    /// ([`TokenRecord::is_for`]) — never another environment's.
    pub fn tokens_for(&self, environment: &str) -> (u64, Vec<(String, TokenRecord)>) {
        let state = self.state.lock();
        let list = state
            .tokens
            .iter()
            .filter(|(_, t)| t.is_for(environment))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        (state.token_version, list)
    }

    /// The tenant of an environment as control knows it: its known-good build's,
    /// else the one tenant its registered builds share; `None` when control has
    /// no build of it yet (or its builds disagree).
    pub fn tenant_of(&self, environment: &str) -> Option<String> {
        let state = self.state.lock();
        let known_good = state
            .environments
            .get(environment)
            .and_then(|e| e.known_good.as_ref())
            .and_then(|id| state.builds.get(id));
        if let Some(build) = known_good {
            return Some(build.tenant.clone());
        }
        let mut tenants = state
            .builds
            .values()
            .filter(|b| b.environment == environment)
            .map(|b| b.tenant.as_str());
        let first = tenants.next()?;
        tenants.all(|t| t == first).then(|| first.to_string())
    }

    /// Raises an environment's route version past what an edge reports holding,
    /// so versions never go backwards (even after control lost its state). Only a
    /// version control has not issued moves it: an edge reopening its stream with
    /// the current version changes nothing (else every reconnect would push a new
    /// table to the whole fleet). A version absurdly far ahead (more than 2^32 past
    /// control's) is refused: one hostile hello must not make every edge NACK.
    pub fn observe_edge_version(&self, environment: &str, version: u64) -> Result<()> {
        let held = self
            .state
            .lock()
            .environments
            .get(environment)
            .map_or(0, |e| e.route_version);
        if version <= held {
            return Ok(());
        }
        if version - held > MAX_VERSION_LEAP {
            return Err(ControlError::Invalid(format!(
                "the edge reports route version {version}, more than 2^32 past control's {held}: refused"
            )));
        }
        self.change(|state| {
            let env = state
                .environments
                .entry(environment.to_string())
                .or_default();
            env.route_version = rollout::next_version(env.route_version, [version])
                .ok_or_else(|| ControlError::Invalid("route versions are exhausted".into()))?;
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
