//! A real moto server on 127.0.0.1 for tests, from the venv `make moto` (scripts/ensure-moto.sh)
//! installs in `target/moto/venv`. Without the venv a test prints one `SKIPPED:` line and returns,
//! unless `SCRIPTBOX_REQUIRE_MOTO=1` (set by `make test`), where a missing moto is a failure.
//! Each [`Moto`] is its own server on its own port, so tests in one binary run side by side.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(30);
const PYTHON_DEADLINE: Duration = Duration::from_secs(60);

/// One moto server (its own process group, killed on drop).
pub struct Moto {
    child: Child,
    port: u16,
    /// Holds the server's log (stdout and stderr) until drop.
    log_dir: tempfile::TempDir,
}

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto/venv/bin")
}

fn required() -> bool {
    std::env::var("SCRIPTBOX_REQUIRE_MOTO").as_deref() == Ok("1")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// True once an HTTP request to the port gets an HTTP status line back.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl Moto {
    /// `None` after printing one `SKIPPED: moto is not installed (make moto): <why>` line when
    /// the venv is missing, unless `SCRIPTBOX_REQUIRE_MOTO=1` (then it panics with the reason).
    /// Picks a free 127.0.0.1 port, starts `moto_server -H 127.0.0.1 -p PORT` and waits (30 s at
    /// most) until it answers HTTP.
    pub fn start() -> Option<Moto> {
        Moto::start_with_env(&[])
    }

    /// [`Moto::start`] with these variables in the server's environment (moto's own settings,
    /// such as `MOTO_IAM_LOAD_MANAGED_POLICIES=true`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<Moto> {
        let server = venv().join("moto_server");
        if !server.is_file() {
            let why = format!("{} does not exist", server.display());
            if required() {
                panic!("moto is not installed (make moto): {why} (SCRIPTBOX_REQUIRE_MOTO=1)");
            }
            eprintln!("SKIPPED: moto is not installed (make moto): {why}");
            return None;
        }
        let log_dir = tempfile::tempdir().expect("temporary folder for moto's log");
        let log = File::create(log_dir.path().join("moto.log")).expect("moto log");
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        let mut moto = Moto {
            child,
            port,
            log_dir,
        };
        moto.wait_until_it_answers();
        Some(moto)
    }

    fn wait_until_it_answers(&mut self) {
        let started = Instant::now();
        while !answers(self.port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited ({status}) before answering:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > START_DEADLINE {
                panic!(
                    "moto_server did not answer on port {} within {START_DEADLINE:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server printed so far (its request log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("moto.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs Python code with the venv's python (boto3 comes with moto) against this server:
    /// `AWS_ENDPOINT_URL` is its URL, the key `testing`/`testing`, region `us-east-1`, instance
    /// metadata disabled. 60 s at most; returns stdout; panics with stderr on failure.
    pub fn python(&self, code: &str) -> String {
        let dir = tempfile::tempdir().expect("temporary folder");
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        let mut child = Command::new(venv().join("python"))
            .args(["-c", code])
            .env("AWS_ENDPOINT_URL", self.url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("starting the venv's python");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for python") {
                break status;
            }
            if started.elapsed() > PYTHON_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("python did not finish within {PYTHON_DEADLINE:?}:\n{code}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !status.success() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("python failed ({status}):\n{code}\n--- stderr:\n{stderr}");
        }
        stdout
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // The whole group: moto_server may have children (werkzeug's reloader is off, but
            // nothing it starts should outlive the test).
            // SAFETY: kill(2) with a negative pid signals our own child's process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
