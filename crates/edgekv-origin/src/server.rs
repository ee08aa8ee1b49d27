//! [`RunningOrigin`]: every build's listener over one core, and the background work
//! (log trimming, expiry purge, credential reloads).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgekv_kv::Clock;
use edgekv_proto::MAX_MESSAGE_BYTES;
use edgekv_proto::v1::{self, origin_server::OriginServer};
use edgekv_store::Store;
use edgekv_store_postgres::{PgOptions, PgStore};
use edgekv_store_rocksdb::{RocksOptions, RocksStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;

use crate::credentials::Credentials;
use crate::fault::ArmedFault;
use crate::service::Build;
use crate::{Error, OriginConfig, OriginCore, Result};

/// A running origin process: its builds' addresses and the handle that stops it.
#[derive(Debug)]
pub struct RunningOrigin {
    /// Where each build listens, by build id.
    pub builds: BTreeMap<String, SocketAddr>,
    /// `https` when the builds serve TLS, else `http`.
    scheme: &'static str,
    core: Arc<OriginCore>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Each build's `grpc.health.v1` reporter: NOT_SERVING once stopping.
    health: Vec<tonic_health::server::HealthReporter>,
}

/// Opens the store a config names (blocking: a database may take a while to answer).
pub fn open_store(config: &OriginConfig) -> Result<Arc<dyn Store>> {
    match &config.store {
        Some(url) => {
            let store = PgStore::open(url, &PgOptions::default())?;
            tracing::info!(store = %store.target(), "the store is a PostgreSQL database");
            Ok(Arc::new(store))
        }
        None => {
            let options = RocksOptions {
                sync_writes: config.sync_writes,
                change_log: true,
                ..RocksOptions::default()
            };
            Ok(Arc::new(RocksStore::open(
                config.data_dir.join("db"),
                &options,
            )?))
        }
    }
}

impl RunningOrigin {
    /// Opens the store (RocksDB in the config's data dir, or the PostgreSQL
    /// database of `store`) and serves every build.
    pub async fn start(config: OriginConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let opening = config.clone();
        let store = tokio::task::spawn_blocking(move || open_store(&opening))
            .await
            .map_err(|e| Error::Io(format!("opening the store: {e}")))??;
        let core = Arc::new(OriginCore::new(store, clock, config.tombstone_ttl_s)?);
        Self::serve(config, core).await
    }

    /// Serves every build of the config over an existing core.
    pub async fn serve(config: OriginConfig, core: Arc<OriginCore>) -> Result<Self> {
        let credentials = Credentials::load(&config.credential_file)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(edgekv_proto::tls::server(cert, key).map_err(Error::Config)?)
            }
            _ => None,
        };
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut builds = BTreeMap::new();
        let mut health = Vec::new();
        for spec in &config.builds {
            let listener = TcpListener::bind(spec.addr).await.map_err(|e| {
                Error::Io(format!(
                    "build {}: cannot listen on {}: {e}",
                    spec.id, spec.addr
                ))
            })?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::Io(format!("build {}: {e}", spec.id)))?;
            let build = Build::new(
                core.clone(),
                v1::Stamp {
                    build_id: spec.id.clone(),
                    environment: config.environment.clone(),
                    tenant: config.tenant.clone(),
                    data_set: core.data_set().to_string(),
                },
                spec.version.clone(),
                credentials.clone(),
                spec.fault.clone().map(ArmedFault::new),
                Duration::from_millis(config.progress_interval_ms),
            );
            if spec.fault.is_some() {
                tracing::warn!(build = %spec.id, fault = ?spec.fault, "build injects a fault (test only)");
            }
            let service = OriginServer::new(build)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            // No Nagle on answers: a small answer must not wait for the caller's ACK.
            let incoming =
                TcpIncoming::from_listener(listener, true, Some(Duration::from_secs(30)))
                    .map_err(|e| Error::Io(format!("build {}: {e}", spec.id)))?;
            let mut stopped = stopped.clone();
            let id = spec.id.clone();
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &tls {
                builder = builder
                    .tls_config(tls.clone())
                    .map_err(|e| Error::Config(format!("build {}: TLS: {e}", spec.id)))?;
            }
            // The standard probes (grpc_health_probe, Kubernetes gRPC probes) and
            // grpcurl's reflection; neither needs a credential nor shows data.
            let (mut reporter, health_service) = tonic_health::server::health_reporter();
            reporter.set_serving::<OriginServer<Build>>().await;
            health.push(reporter);
            let (reflection, reflection_alpha) = crate::server::reflection()?;
            tasks.spawn(async move {
                let result = builder
                    .add_service(health_service)
                    .add_service(reflection)
                    .add_service(reflection_alpha)
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.changed().await;
                    })
                    .await;
                if let Err(err) = result {
                    tracing::error!(build = %id, error = %err, "build stopped serving");
                }
            });
            tracing::info!(build = %spec.id, %addr, environment = %config.environment, data_set = %core.data_set(), "build serving");
            builds.insert(spec.id.clone(), addr);
        }
        tasks.spawn(maintain(
            core.clone(),
            config.log_retain,
            Duration::from_millis(config.maintenance_interval_ms),
            stopped.clone(),
        ));
        let reloader = credentials.spawn_reloader(Duration::from_secs(1));
        let mut stop_reload = stopped;
        tasks.spawn(async move {
            let _ = stop_reload.changed().await;
            reloader.abort();
        });
        Ok(RunningOrigin {
            health,
            builds,
            scheme: if tls.is_some() { "https" } else { "http" },
            core,
            stop,
            tasks,
        })
    }

    /// The core shared by the builds.
    pub fn core(&self) -> &Arc<OriginCore> {
        &self.core
    }

    /// The URL of a build, `http://ADDR` (`https://` when it serves TLS).
    pub fn url(&self, build_id: &str) -> Option<String> {
        self.builds
            .get(build_id)
            .map(|addr| format!("{}://{addr}", self.scheme))
    }

    /// Stops every build and the background work: open watch streams end, calls
    /// in flight get a few seconds to finish.
    pub async fn shutdown(mut self) {
        for reporter in &mut self.health {
            reporter.set_not_serving::<OriginServer<Build>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
        self.core.close();
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("calls still in flight after 5 s; closing");
            self.tasks.abort_all();
        }
        tracing::info!("origin stopped");
    }
}

async fn maintain(
    core: Arc<OriginCore>,
    keep: u64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let work = core.clone();
        match tokio::task::spawn_blocking(move || work.maintain(keep)).await {
            Ok(Ok(done)) if done != crate::core::Maintained::default() => {
                tracing::debug!(
                    trimmed = done.trimmed,
                    purged = done.purged,
                    forgotten = done.forgotten,
                    "origin maintenance"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "origin maintenance failed"),
            Err(err) => tracing::warn!(error = %err, "origin maintenance task failed"),
        }
    }
}

/// The gRPC server reflection services (v1 and v1alpha, for grpcurl and older
/// clients) over edgekv's protos.
#[allow(clippy::type_complexity)]
pub fn reflection() -> Result<(
    tonic_reflection::server::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(edgekv_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    Ok((v1, v1alpha))
}
