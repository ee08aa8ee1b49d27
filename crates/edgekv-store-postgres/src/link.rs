//! The committing thread's own connection: a write group's transaction runs on
//! the thread that calls [`edgekv_store::Store::transact`] (the origin's writer
//! thread), over a connection that thread drives itself.
//!
//! Through the pool, each phase of a transaction is handed to the store's
//! runtime thread and its answer handed back: four thread wake-ups per group,
//! each a scheduling delay on a busy machine, with the head's lock held over
//! most of them (and every origin's writes waiting on that lock). Here the
//! thread waits on the socket itself, and decides between the phases without
//! leaving it.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, Statement};

use crate::{CALL_TIMEOUT, Fail, MakeTls, Session};

/// A connection of its own and the runtime it runs on, driven only while a
/// call runs (by the calling thread).
pub(crate) struct Link {
    runtime: Option<tokio::runtime::Runtime>,
    session: Option<LinkSession>,
    config: Config,
    tls: MakeTls,
}

/// The link's connection, with its prepared statements.
pub(crate) struct LinkSession {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    connection: JoinHandle<()>,
}

impl Session for LinkSession {
    fn client(&self) -> &Client {
        &self.client
    }

    async fn prepared(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let cached = self.statements.lock().get(sql).cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.lock().insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Link {
    pub(crate) fn new(config: Config, tls: MakeTls) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Link {
            runtime: Some(runtime),
            session: None,
            config,
            tls,
        })
    }

    /// Runs `work` on the link's connection (made first when there is none), on
    /// this thread, for [`CALL_TIMEOUT`] at most. After a failure the connection
    /// is closed, so that no transaction stays open on it; the next call makes
    /// a new one. Never call it on an async runtime's thread.
    pub(crate) fn run<T>(
        &mut self,
        work: impl AsyncFnOnce(&LinkSession) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let Some(runtime) = &self.runtime else {
            return Err(Fail::fatal("the PostgreSQL store is closed"));
        };
        if self.session.is_none() {
            let (config, tls) = (self.config.clone(), self.tls.clone());
            let made = runtime.block_on(async move {
                tokio::time::timeout(CALL_TIMEOUT, async move {
                    let (client, connection) = config.connect(tls).await?;
                    let connection = tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(error = %err, "the writer's database connection ended");
                        }
                    });
                    // Generic plans: each group's statements are planned once per
                    // connection, not at each execution (a custom plan is made for
                    // the first five, and then whenever it looks cheaper — for the
                    // group's statements, always). They are written so that the
                    // generic plan is the index probe per key. An engine without
                    // the setting keeps its own choice.
                    if let Err(err) = client.batch_execute(GENERIC_PLANS).await {
                        tracing::debug!(error = %err, "the database keeps its choice of plans");
                    }
                    Ok::<_, Fail>(LinkSession {
                        client,
                        statements: Mutex::default(),
                        connection,
                    })
                })
                .await
            });
            self.session = Some(match made {
                Ok(made) => made?,
                Err(_) => return Err(no_answer()),
            });
        }
        // Out of its slot while the work runs: only work that ended well puts it
        // back. A failure — a panic included — closes it.
        let Some(session) = self.session.take() else {
            return Err(Fail::fatal("the writer's database connection is missing"));
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                match tokio::time::timeout(CALL_TIMEOUT, work(&session)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(no_answer()),
                }
            })
        }));
        match outcome {
            Ok(Ok(value)) => {
                self.session = Some(session);
                Ok(value)
            }
            Ok(Err(fail)) => {
                close(runtime, session);
                Err(fail)
            }
            Err(panic) => {
                close(runtime, session);
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// The writer's statements are planned once per connection.
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

/// Closes the connection now: the server rolls back whatever was open on it and
/// releases the head's lock at once (it would otherwise wait for the next call
/// to drive the connection, or for the idle-in-transaction timeout).
fn close(runtime: &tokio::runtime::Runtime, session: LinkSession) {
    let LinkSession {
        client, connection, ..
    } = session;
    drop(client);
    connection.abort();
    let _ = runtime.block_on(connection);
}

fn no_answer() -> Fail {
    Fail::fatal(format!(
        "PostgreSQL: no answer within {} s",
        CALL_TIMEOUT.as_secs()
    ))
}

impl Drop for Link {
    fn drop(&mut self) {
        // Dropped anywhere (an async task included): never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
