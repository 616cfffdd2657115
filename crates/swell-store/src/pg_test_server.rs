//! A real PostgreSQL server for tests (feature `conformance`): started once per test
//! binary on first use, one fresh database per test, stopped when the binary exits.
//!
//! - **Which server.** `SWELL_TEST_POSTGRES_URL` (any database on it; the tests create
//!   and drop their own) if set; otherwise a private server: `initdb` into a temporary
//!   directory and `pg_ctl start`, listening on a unix socket in that directory only (no
//!   TCP port to collide with). The binaries are found on `PATH`, in `SWELL_PG_BIN`, or
//!   in Debian's `/usr/lib/postgresql/<version>/bin` (newest first).
//! - **Never a silent skip.** Without binaries and without a URL, every test that asks
//!   for a database panics, saying what to install.
//! - **As root.** PostgreSQL refuses to run as root, so when we are root its commands run
//!   as the `postgres` user (`runuser -u postgres --`), which owns the directory.
//! - **Stopping.** A test binary never runs destructors of statics, so the server is
//!   stopped by a watchdog started with it: a shell that waits for this process to exit,
//!   then runs `pg_ctl stop -m immediate` and removes the directory. A crashed or killed
//!   test binary leaves nothing running either.
//! - **Speed.** `fsync`, `synchronous_commit` and `full_page_writes` are off: a test
//!   server need not survive a power cut.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The variable naming an existing server to test against instead of a private one.
pub const URL_VAR: &str = "SWELL_TEST_POSTGRES_URL";

/// The variable naming the directory of `initdb` and `pg_ctl`.
pub const BIN_VAR: &str = "SWELL_PG_BIN";

const INSTALL_HINT: &str = "PostgreSQL's server binaries (initdb, pg_ctl) were not found on PATH, \
     in $SWELL_PG_BIN or in /usr/lib/postgresql/*/bin: install the Debian package \
     `postgresql` (apt-get install postgresql; scripts/test does it), or set \
     SWELL_TEST_POSTGRES_URL to the URL of a server where the tests may create databases";

/// The server the tests of this binary share.
#[derive(Debug)]
pub struct TestServer {
    /// Options for the maintenance database (`postgres`), where databases are created.
    admin: PgConnectOptions,
    /// The URL with the database left out (`…/{db}…`), to build each database's URL.
    url_template: String,
    /// Where the private server lives, if it is ours.
    dir: Option<PathBuf>,
    /// How long starting it took.
    started_in: std::time::Duration,
}

/// A fresh, empty database on the test server.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, for [`crate::PgStore::connect`] or `swell serve --database-url`.
    pub url: String,
    /// Its name.
    pub name: String,
}

static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestServer {
    /// The shared server, started on first call. Panics (with what to install) if no
    /// server can be had: a test that needs PostgreSQL fails rather than skips.
    pub fn shared() -> &'static TestServer {
        match SERVER.get_or_init(Self::start) {
            Ok(server) => server,
            Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
        }
    }

    /// How long the private server took to initialise and start (zero for an external one).
    pub fn started_in(&self) -> std::time::Duration {
        self.started_in
    }

    /// The private server's directory (data, socket, log), if the server is ours.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Creates a new empty database named after `hint` (made unique in this process).
    pub async fn database(&self, hint: &str) -> TestDatabase {
        self.database_with(hint, "").await
    }

    /// [`TestServer::database`] with `CREATE DATABASE` options (`TEMPLATE template0
    /// LOCALE_PROVIDER icu ICU_LOCALE 'en-US'`, …).
    pub async fn database_with(&self, hint: &str, options: &str) -> TestDatabase {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let hint: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!("swell_{hint}_{}_{n}", std::process::id());
        let mut admin = self.connect_admin().await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\" {options}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        TestDatabase {
            url: self.url_template.replace("{db}", &name),
            name,
        }
    }

    /// Drops a database made by [`TestServer::database`], closing its connections.
    pub async fn drop_database(&self, db: TestDatabase) {
        let mut admin = self.connect_admin().await;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            db.name
        ))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {}: {e}", db.name));
        let _ = admin.close().await;
    }

    async fn connect_admin(&self) -> PgConnection {
        self.admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to the test server: {e}"))
    }

    fn start() -> Result<TestServer, String> {
        if let Ok(url) = std::env::var(URL_VAR) {
            return Self::external(&url);
        }
        let t0 = Instant::now();
        let bin = find_bin().ok_or_else(|| INSTALL_HINT.to_string())?;
        let root = is_root()?;
        let dir = std::env::temp_dir().join(format!("swell-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock"))
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        if root {
            for p in [dir.clone(), dir.join("sock")] {
                std::os::unix::fs::chown(&p, Some(postgres_uid()?), None)
                    .map_err(|e| format!("chown {} to postgres: {e}", p.display()))?;
            }
        }
        let data = dir.join("data");
        let log = dir.join("server.log");
        let sock = dir.join("sock");
        run(
            root,
            &bin.join("initdb"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
            ],
        )?;
        // The watchdog first: from here on, whatever happens, the server is stopped and
        // the directory removed when this process is gone.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
             {runas}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            runas = if root { "runuser -u postgres -- " } else { "" },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the watchdog: {e}"))?;
        let opts = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            sock.display()
        );
        let started = run(
            root,
            &bin.join("pg_ctl"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
        if let Err(e) = started {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\nserver log:\n{tail}"));
        }
        let url_template = format!(
            "postgres://postgres@localhost/{{db}}?host={}",
            sock.display()
        );
        let admin = PgConnectOptions::from_str(&url_template.replace("{db}", "postgres"))
            .map_err(|e| format!("test server URL: {e}"))?;
        Ok(TestServer {
            admin,
            url_template,
            dir: Some(dir),
            started_in: t0.elapsed(),
        })
    }

    fn external(url: &str) -> Result<TestServer, String> {
        let admin = PgConnectOptions::from_str(url).map_err(|e| format!("{URL_VAR}: {e}"))?;
        // Rebuild the URL from its parts, so that only the database changes.
        let host = admin.get_host();
        let host_part = if host.starts_with('/') {
            format!("localhost:{}/{{db}}?host={host}", admin.get_port())
        } else {
            format!("{host}:{}/{{db}}", admin.get_port())
        };
        let password = url::password(url);
        let url_template = format!(
            "postgres://{}{}@{host_part}",
            admin.get_username(),
            password.map(|p| format!(":{p}")).unwrap_or_default()
        );
        Ok(TestServer {
            admin,
            url_template,
            dir: None,
            started_in: std::time::Duration::ZERO,
        })
    }
}

/// Just enough URL parsing to carry a password over (already percent-encoded).
mod url {
    pub fn password(url: &str) -> Option<&str> {
        let rest = url.split_once("://")?.1;
        let userinfo = rest.split_once('@')?.0;
        if userinfo.contains('/') {
            return None;
        }
        userinfo.split_once(':').map(|(_, p)| p)
    }
}

fn find_bin() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os(BIN_VAR).map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(d) = std::env::split_paths(&path).find(|d| has(d))
    {
        return Some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn is_root() -> Result<bool, String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn postgres_uid() -> Result<u32, String> {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .map_err(|e| format!("id -u postgres: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            "we run as root and PostgreSQL refuses to: a `postgres` user is needed \
             (the Debian package `postgresql` creates it)"
                .to_string()
        })
}

/// Runs a PostgreSQL command (as `postgres` when we are root); an error carries its output.
fn run(root: bool, program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    // The server started by `pg_ctl` writes to its log file; nothing may keep our
    // pipes open, or `output()` would wait for the server to exit.
    let out = cmd
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
