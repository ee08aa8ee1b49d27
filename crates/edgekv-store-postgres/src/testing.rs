//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` and `pg_ctl`
//! of the installed PostgreSQL (Debian's `postgresql` package) in a temporary
//! directory, listening on 127.0.0.1 on a free port, stopped when dropped.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres`
//! user (`runuser`). When PostgreSQL is missing, [`TestPostgres::start`] fails and
//! says how to install it; tests never skip silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A PostgreSQL server of its own, in a temporary directory.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    databases: AtomicUsize,
}

/// The TLS of a test server.
struct ServerTls {
    cert: String,
    key: String,
    only_tls: bool,
}

/// How to get PostgreSQL on a machine that lacks it.
pub const INSTALL_HINT: &str = "PostgreSQL is not installed (no initdb under \
    /usr/lib/postgresql/*/bin): run `scripts/install-deps.sh` (as root), or \
    `apt-get install -y postgresql`, or set EDGEKV_PG_BIN to the directory of initdb \
    and pg_ctl";

/// The directory of the installed PostgreSQL's `initdb` and `pg_ctl`: `EDGEKV_PG_BIN`,
/// else the newest under /usr/lib/postgresql.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("EDGEKV_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| INSTALL_HINT.to_string())?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| INSTALL_HINT.to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TestPostgres {
    /// Starts a server; panics with what to do when PostgreSQL is missing.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(server) => server,
            Err(err) => panic!("cannot start a test PostgreSQL: {err}"),
        }
    }

    /// One server for the whole test process, started on first use and stopped
    /// once nothing holds it.
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());
        let mut slot = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = slot.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *slot = Arc::downgrade(&server);
        server
    }

    /// Starts a server that speaks TLS with `cert` and `key` (PEM) and, with
    /// `only_tls`, refuses connections in clear.
    pub fn start_with_tls(cert: &str, key: &str, only_tls: bool) -> Self {
        let tls = ServerTls {
            cert: cert.to_string(),
            key: key.to_string(),
            only_tls,
        };
        match Self::try_start_with(Some(&tls)) {
            Ok(server) => server,
            Err(err) => panic!("cannot start a test PostgreSQL: {err}"),
        }
    }

    /// Starts a server, or says why it cannot.
    pub fn try_start() -> Result<Self, String> {
        Self::try_start_with(None)
    }

    fn try_start_with(tls: Option<&ServerTls>) -> Result<Self, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("edgekv-pg-")
            .tempdir_in(std::env::temp_dir())
            .map_err(|e| format!("temporary directory: {e}"))?;
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("cannot give the temporary directory to the postgres user \
                            (is the postgres user missing? install the postgresql package)"
                    .into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let server = TestPostgres {
            bin,
            dir,
            port,
            as_postgres,
            databases: AtomicUsize::new(0),
        };
        let data = server.data_dir();
        server.command(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            path_str(server.dir.path())
        );
        if let Some(tls) = tls {
            server.install_tls(tls)?;
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        // More server settings, to look into a test or a benchmark: e.g.
        // EDGEKV_PG_OPTIONS="-c log_min_duration_statement=0".
        if let Ok(more) = std::env::var("EDGEKV_PG_OPTIONS") {
            options.push(' ');
            options.push_str(&more);
        }
        let log = server.dir.path().join("server.log");
        server.command(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(server)
    }

    /// Puts the certificate and key in the data directory (the key readable by
    /// the server's user alone, as PostgreSQL demands) and, with `only_tls`,
    /// allows TCP connections over TLS only.
    fn install_tls(&self, tls: &ServerTls) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        let mut files = vec![
            ("server.crt", tls.cert.as_str()),
            ("server.key", tls.key.as_str()),
        ];
        // The `postgres` database (this helper's own statements) stays open in clear.
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
                   host postgres all 127.0.0.1/32 trust\n";
        if tls.only_tls {
            files.push(("pg_hba.conf", hba));
        }
        for (name, text) in files {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("writing {name}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod {name}: {e}"))?;
            if self.as_postgres {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&path)
                    .status()
                    .map_err(|e| format!("chown: {e}"))?;
                if !status.success() {
                    return Err(format!("cannot give {name} to the postgres user"));
                }
            }
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", path.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the server's `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a new, empty database; returns its URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("edgekv_{}_{n}", std::process::id());
        self.execute(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL on the `postgres` database; panics on failure.
    pub fn execute(&self, sql: &str) {
        execute(&self.admin_url(), sql);
    }
}

/// Runs a query against `url` and returns its first column, as 64-bit integers
/// (like [`execute`], from any thread); panics on failure.
pub fn query_i64(url: &str, sql: &str) -> Vec<i64> {
    on_a_connection(url, sql, |client, statement| async move {
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|row| row.get::<_, i64>(0)).collect())
    })
}

/// Runs SQL against `url`, on a thread and runtime of its own (callable from
/// inside or outside an async runtime); panics on failure.
pub fn execute(url: &str, sql: &str) {
    on_a_connection(url, sql, |client, statements| async move {
        client.batch_execute(&statements).await.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_string())
        })
    })
}

/// Connects to `url` on a thread and runtime of its own and runs `work` with the
/// client and `sql`; panics, naming the SQL, when it fails.
fn on_a_connection<T, F, Fut>(url: &str, sql: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let (url, statement) = (url.to_string(), sql.to_string());
    let done = std::thread::spawn(move || -> Result<T, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            work(client, statement).await
        })
    })
    .join();
    match done {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("SQL {sql:?} failed: {err}"),
        Err(_) => panic!("SQL {sql:?} panicked"),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.command(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "stop"],
        );
    }
}
