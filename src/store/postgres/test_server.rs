//! A throwaway PostgreSQL server for the tests: one per test process, started on first use.
//!
//! - The Debian binaries (`/usr/lib/postgresql/<version>/bin`, or `KEEL_PG_BIN`; the Makefile
//!   installs the `postgresql` package when missing) run as the unprivileged user `nobody`
//!   (PostgreSQL refuses root; the tests run as root here), in a temporary directory, on a free
//!   loopback port, with its Unix socket in that directory.
//! - Stopped also on failure: a watchdog process started with the server waits for the test
//!   process to end (however it ends) and then shuts the server down (SIGQUIT) and removes the
//!   directory.
//! - One database per test: [`PgServer::database_for`] creates a database named after the
//!   test's temporary directory, so a second call (a "reopen") reaches the same data.
//!
//! Shared by the unit tests (as `crate::store::postgres::test_server`) and the integration
//! tests (`#[path]`-included), so it uses only std, libc and the `postgres` client.
#![allow(dead_code)]

use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The unprivileged user the server runs as.
const USER: &str = "nobody";
/// The database role the tests connect as (the initdb superuser).
pub const ROLE: &str = "keel";

/// A running test server.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    uid: u32,
    gid: u32,
    create: Mutex<()>,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();

/// The process's server, started on first use.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("test PostgreSQL: {e}")))
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KEEL_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}): install the postgresql package"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn ids_of(user: &str) -> Result<(u32, u32), String> {
    let name = std::ffi::CString::new(user).unwrap();
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("no user {user}"));
    }
    // SAFETY: non-null, see above.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgServer {
    fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let (uid, gid) = ids_of(USER)?;
        let root = std::env::temp_dir().join(format!("keel-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let data = root.join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.3; done; \
             kill -QUIT $(head -n 1 {data}/postmaster.pid 2>/dev/null) 2>/dev/null; \
             for i in 1 2 3 4 5 6 7 8 9 10; do [ -e {data}/postmaster.pid ] || break; sleep 0.3; done; \
             rm -rf {root}",
            pid = std::process::id(),
            data = data.display(),
            root = root.display()
        );
        Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("watchdog: {e}"))?;
        let server = Self {
            bin,
            data,
            port: free_port(),
            uid,
            gid,
            create: Mutex::new(()),
        };
        let out = server
            .command("initdb")
            .args(["-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&server.data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        server.boot()?;
        Ok(server)
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.data)
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        c
    }

    /// Starts the postmaster on the data directory and waits until it accepts connections.
    fn boot(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 \
             -c fsync=on -c synchronous_commit=on",
            self.port,
            self.data.display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.data.join("server.log"))
            .arg("-D")
            .arg(&self.data)
            .arg("start")
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{log}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (owned by the server's user).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{db}", self.port)
    }

    /// A superuser connection to the `postgres` database.
    pub fn admin(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("admin connection: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Creates (once) the database named after `dir` and returns its URL.
    pub fn database_for(&self, dir: &Path) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        let name = format!("t_{:016x}", h.finish());
        let _one = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let mut admin = self.admin();
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap()
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
        }
        self.url(&name)
    }

    /// Runs SQL on database `url` (as the superuser), e.g. to tamper with rows.
    pub fn exec(&self, url: &str, sql: &str) {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(sql).unwrap();
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs the postmaster and its backends (a crash), and waits until they are gone.
    pub fn kill9(&self) {
        let pid = self.pid().expect("the server is running");
        // Its backends too, as a crash of the machine would (found before the postmaster dies,
        // while they are still its children).
        let children = children_of(pid);
        // SAFETY: plain signals to the server's processes.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            for c in &children {
                libc::kill(*c, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only probes.
        while std::iter::once(&pid)
            .chain(&children)
            .any(|p| unsafe { libc::kill(*p, 0) } == 0 && !is_zombie(*p))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again after [`PgServer::kill9`] (crash recovery replays the WAL).
    pub fn restart(&self) {
        // The dead postmaster may linger as a zombie (nobody reaps it in a container), which
        // makes its pid file look live: the file is stale once every process is gone.
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
        let sock = format!(".s.PGSQL.{}", self.port);
        let _ = std::fs::remove_file(self.data.join(format!("{sock}.lock")));
        let _ = std::fs::remove_file(self.data.join(sock));
        self.boot().unwrap_or_else(|e| panic!("restart: {e}"));
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].split_whitespace().next()? == "Z"))
        .unwrap_or(true)
}
