//! The schema, as versioned migrations applied at open.
//!
//! Each migration runs once, in order, in one transaction with the version bump,
//! under an advisory lock (two origins starting at once do not both migrate).
//!
//! `edgekv_schema` holds two numbers. `applied` is the last migration applied.
//! `version` is the oldest binary's schema version that may still use the
//! database: a migration that only adds what older binaries ignore leaves it, so
//! the processes of the previous release — the known-good build a rollback goes
//! to — keep running and can restart beside a newer one. A database whose
//! `version` is newer than this binary's is refused: this binary would write
//! rows a newer one no longer reads the same way. (Binaries before `applied`
//! existed read `version` alone, with the same meaning.)

use tokio_postgres::Client;

use crate::Fail;

/// The schema version this binary writes.
pub const VERSION: i32 = 3;

/// One migration: the version it brings the schema to, the oldest binary's
/// version that may use the database after it, and its SQL.
type Migration = (i32, i32, &'static str);

/// The migrations, in order.
const MIGRATIONS: &[Migration] = &[
    (
        1,
        1,
        r#"
    -- One row: the last revision, and the highest revision trimmed from the log.
    -- Every commit takes this row's lock first: commits are ordered by it, and the
    -- revision is bumped in the commit's own transaction, so revisions have no gaps.
    CREATE TABLE edgekv_head (
        id smallint PRIMARY KEY CHECK (id = 1),
        revision bigint NOT NULL,
        log_floor bigint NOT NULL
    );
    INSERT INTO edgekv_head (id, revision, log_floor) VALUES (1, 0, 0);

    CREATE TABLE edgekv_namespaces (
        id text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );

    -- A record's encoded form is cut into chunks of at most 1 MiB: the first here,
    -- the rest in edgekv_record_parts (part 1, 2, ...); `parts` counts them all.
    CREATE TABLE edgekv_records (
        namespace text COLLATE "C" NOT NULL,
        key bytea NOT NULL,
        head bytea NOT NULL,
        revision bigint NOT NULL,
        expiration bigint,
        tombstone boolean NOT NULL,
        parts integer NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX edgekv_records_expiration ON edgekv_records (expiration)
        WHERE expiration IS NOT NULL;

    CREATE TABLE edgekv_record_parts (
        namespace text COLLATE "C" NOT NULL,
        key bytea NOT NULL,
        part integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (namespace, key, part)
    );

    -- The change log: each commit's encoded entry, in chunks of at most 1 MiB.
    CREATE TABLE edgekv_log (
        revision bigint NOT NULL,
        part integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (revision, part)
    );

    -- Client write ids, with the digest of their content, while their commit is
    -- in the log.
    CREATE TABLE edgekv_written (
        id bytea PRIMARY KEY,
        revision bigint NOT NULL,
        digest bytea
    );
    CREATE INDEX edgekv_written_revision ON edgekv_written (revision);

    CREATE TABLE edgekv_meta (
        name text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL
    );

    CREATE TABLE edgekv_queue_counters (
        queue text COLLATE "C" PRIMARY KEY,
        last bigint NOT NULL
    );
    CREATE TABLE edgekv_queues (
        queue text COLLATE "C" NOT NULL,
        sequence bigint NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (queue, sequence)
    );
    "#,
    ),
    (
        2,
        2,
        r#"
    -- Named documents written by the holder of a lease (control's state: one
    -- active control writes it, a standby reads it when it takes over).
    CREATE TABLE edgekv_documents (
        name text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL,
        saved_at timestamptz NOT NULL DEFAULT now()
    );
    "#,
    ),
    (
        3,
        // Additive: a binary of version 2 ignores the new column (its ids have
        // none, and go with the log, as they did) and keeps the index it trims by.
        2,
        r#"
    ALTER TABLE edgekv_schema ADD COLUMN applied integer;
    -- Write ids are kept for a time (past the last replay of them an origin
    -- accepts), not as long as their commit's log entry: until_s is when an id
    -- may be forgotten. Ids without one (kept before, or by a binary of version
    -- 2 still running) go with the log.
    ALTER TABLE edgekv_written ADD COLUMN until_s bigint;
    CREATE INDEX edgekv_written_until ON edgekv_written (until_s) WHERE until_s IS NOT NULL;
    "#,
    ),
];

/// The advisory lock key of migrations ("edgekv" in ASCII).
const MIGRATION_LOCK: i64 = 0x6564_6765_6b76;

/// The migration that adds `edgekv_schema.applied`.
const APPLIED_SINCE: i32 = 3;

/// How long a migration waits for a table's lock: past it, the open fails (and
/// says why) rather than queue every other origin's writes behind it.
const MIGRATION_LOCK_TIMEOUT: &str = "10s";

/// Brings the schema to [`VERSION`]; returns the last migration found applied.
pub async fn migrate(client: &mut Client) -> Result<i32, Fail> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'; \
         CREATE TABLE IF NOT EXISTS edgekv_schema (version integer NOT NULL)"
    ))
    .await?;
    let has_applied: bool = txn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'edgekv_schema' \
             AND column_name = 'applied')",
            &[],
        )
        .await?
        .get(0);
    let read = if has_applied {
        "SELECT version, coalesce(applied, version) FROM edgekv_schema"
    } else {
        "SELECT version, version FROM edgekv_schema"
    };
    let (mut needs, found): (i32, i32) = txn
        .query_opt(read, &[])
        .await?
        .map_or((0, 0), |row| (row.get(0), row.get(1)));
    if needs > VERSION {
        return Err(Fail::fatal(format!(
            "the database's edgekv schema (version {found}) needs binaries of version \
             {needs} or newer, newer than this binary's {VERSION}: run a newer edgekv against it"
        )));
    }
    if found == 0 {
        txn.execute("INSERT INTO edgekv_schema (version) VALUES (0)", &[])
            .await?;
    }
    for (version, readable_from, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > found) {
        txn.batch_execute(sql).await?;
        needs = needs.max(*readable_from);
        if *version >= APPLIED_SINCE {
            txn.execute(
                "UPDATE edgekv_schema SET version = $1, applied = $2",
                &[&needs, version],
            )
            .await?;
        } else {
            txn.execute("UPDATE edgekv_schema SET version = $1", &[&needs])
                .await?;
        }
        tracing::info!(version, "applied an edgekv schema migration");
    }
    txn.commit().await?;
    Ok(found)
}
