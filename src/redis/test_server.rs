//! A real `redis-server` for the tests: started on a free loopback port in a temporary
//! directory, stopped when dropped, and killed with the test process in any case (its parent
//! death signal is SIGKILL, and its parent is a thread that lives as long as the process).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::store::test_support::TempDir;

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

type Spawn = (
    u16,
    std::path::PathBuf,
    mpsc::Sender<std::io::Result<Child>>,
);

/// Spawns every server from one thread that never ends, so that PR_SET_PDEATHSIG (which fires
/// when the spawning *thread* exits) fires only when the test process dies.
fn spawner() -> &'static std::sync::Mutex<mpsc::Sender<Spawn>> {
    static TX: OnceLock<std::sync::Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::spawn(move || {
            for (port, dir, reply) in rx {
                let mut cmd = Command::new("redis-server");
                cmd.args(["--port", &port.to_string()])
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no", "--protected-mode", "no"])
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // SAFETY: prctl is async-signal-safe and touches only this child.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    })
}

pub(crate) struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let dir = TempDir::new("redis");
        let mut s = Self {
            port: free_port(),
            dir,
            child: None,
        };
        s.restart();
        s
    }

    /// One server for every test of this process that does not stop it.
    pub(crate) fn shared() -> &'static RedisServer {
        static S: OnceLock<RedisServer> = OnceLock::new();
        S.get_or_init(RedisServer::start)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// kill -9.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port; returns once it answers PING.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap()
            .send((self.port, self.dir.path().to_owned(), tx))
            .unwrap();
        let child = rx
            .recv()
            .unwrap()
            .expect("redis-server is installed (the Makefile installs it)");
        self.child = Some(child);
        let client = ::redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
