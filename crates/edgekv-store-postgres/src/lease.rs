//! A lease held in the database, and the one document its holder writes: how two
//! control processes share one state, one active and one standby.
//!
//! The lease is a session advisory lock on a connection of its own. PostgreSQL
//! releases it the moment that connection ends — the holder's process died, or
//! its host was cut off and TCP keepalives gave up — and a waiting process takes
//! it. The document is written on the same connection, so a holder that lost the
//! lease can no longer write: nothing it does lands after the next holder read
//! the document.

use std::sync::Arc;
use std::time::Duration;

use edgekv_store::{Error, Result};
use tokio_postgres::Client;

use crate::{Fail, parse_url, run_on, schema};

/// How often a waiting process tries to take the lease.
pub const TRY_EVERY: Duration = Duration::from_millis(250);
/// How often the holder checks its lease's connection.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The lease on `name`, held by this process, and its document.
pub struct PgLease {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    name: String,
    target: String,
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLease")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish()
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgLease {
    /// Connects to the database at `url`, applies the schema's migrations, and
    /// waits until this process holds the lease on `name`: blocks for as long as
    /// another process holds it, calling `waiting` once when it starts to wait.
    pub fn acquire(url: &str, name: &str, waiting: &mut dyn FnMut()) -> Result<Self> {
        let (mut config, tls) = parse_url(url).map_err(Error::Engine)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // Keepalives at both ends: a holder cut off from the database notices
        // (and exits), and the server ends its session — freeing the lease for
        // the standby — within about 10 s.
        crate::guard_sessions(&mut config);
        let target = crate::describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgekv-lease")
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("cannot start the lease's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let client = run_on(&handle, async move {
            let (mut client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::error!(error = %err, "the lease's database connection failed");
                }
            });
            schema::migrate(&mut client).await?;
            Ok(Arc::new(client))
        })
        .map_err(|e| Error::Engine(format!("{target}: {}", e.message)))?;
        let mut told = false;
        loop {
            let (held, key) = (client.clone(), name.to_string());
            let taken = run_on(&handle, async move {
                let row = held
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtext('edgekv-lease:' || $1))",
                        &[&key],
                    )
                    .await?;
                Ok(row.get::<_, bool>(0))
            })
            .map_err(|e| Error::Engine(format!("{target}: {}", e.message)))?;
            if taken {
                tracing::info!(name, target = %target, "took the lease");
                return Ok(PgLease {
                    runtime: Some(runtime),
                    handle,
                    client,
                    name: name.to_string(),
                    target,
                });
            }
            if !told {
                told = true;
                waiting();
            }
            std::thread::sleep(TRY_EVERY);
        }
    }

    /// The database, without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The document, if one was ever saved.
    pub fn load(&self) -> Result<Option<Vec<u8>>> {
        let (client, name) = (self.client.clone(), self.name.clone());
        run_on(&self.handle, async move {
            let row = client
                .query_opt(
                    "SELECT body FROM edgekv_documents WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
        .map_err(Error::from)
    }

    /// Saves the document, durably, on the lease's connection: it fails once the
    /// lease is lost.
    pub fn save(&self, body: &[u8]) -> Result<()> {
        let (client, name, body) = (self.client.clone(), self.name.clone(), body.to_vec());
        run_on(&self.handle, async move {
            if client.is_closed() {
                return Err(Fail::fatal("the lease was lost: its connection is closed"));
            }
            client
                .execute(
                    "INSERT INTO edgekv_documents (name, body) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body, saved_at = now()",
                    &[&name, &body],
                )
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    /// Checks the lease's connection every [`CHECK_EVERY`]; calls `lost` once, with
    /// why, when it fails (the holder must stop acting on the lease).
    pub fn on_lost(&self, lost: Box<dyn Fn(String) + Send + Sync>) {
        let client = self.client.clone();
        self.handle.spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let checked =
                    tokio::time::timeout(Duration::from_secs(3), client.simple_query("SELECT 1"))
                        .await;
                let why = match checked {
                    Ok(Ok(_)) => continue,
                    Ok(Err(err)) => err.to_string(),
                    Err(_) => "the database did not answer within 3 s".to_string(),
                };
                lost(why);
                return;
            }
        });
    }
}
