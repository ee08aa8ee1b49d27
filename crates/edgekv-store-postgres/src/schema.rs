//! The schema, as versioned migrations applied at open.
//!
//! Each migration runs once, in order, in one transaction with the version bump,
//! under an advisory lock (two origins starting at once do not both migrate). A
//! database whose schema is newer than this binary's is refused: an older binary
//! would write rows a newer one no longer reads the same way.

use tokio_postgres::Client;

use crate::Fail;

/// The schema version this binary writes.
pub const VERSION: i32 = 3;

/// The migrations, by the version they bring the schema to.
const MIGRATIONS: &[(i32, &str)] = &[
    (
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
        r#"
    -- Write ids are kept for a time (past the last replay of them an origin
    -- accepts), not as long as their commit's log entry: until_s is when an id
    -- may be forgotten. Ids kept before (until_s NULL) still go with the log.
    ALTER TABLE edgekv_written ADD COLUMN until_s bigint;
    DROP INDEX edgekv_written_revision;
    CREATE INDEX edgekv_written_revision ON edgekv_written (revision) WHERE until_s IS NULL;
    CREATE INDEX edgekv_written_until ON edgekv_written (until_s) WHERE until_s IS NOT NULL;
    "#,
    ),
];

/// The advisory lock key of migrations ("edgekv" in ASCII).
const MIGRATION_LOCK: i64 = 0x6564_6765_6b76;

/// Brings the schema to [`VERSION`]; returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i32, Fail> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS edgekv_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = txn
        .query_opt("SELECT version FROM edgekv_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    if found > VERSION {
        return Err(Fail::fatal(format!(
            "the database's edgekv schema is version {found}, newer than this binary's \
             {VERSION}: run a newer edgekv against it"
        )));
    }
    if found == 0 {
        txn.execute("INSERT INTO edgekv_schema (version) VALUES (0)", &[])
            .await?;
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        txn.batch_execute(sql).await?;
        txn.execute("UPDATE edgekv_schema SET version = $1", &[version])
            .await?;
        tracing::info!(version, "applied an edgekv schema migration");
    }
    txn.commit().await?;
    Ok(found)
}
