//! A `scriptbox serve` child process for tests: started on a temporary socket and data
//! directory, ready once it printed its listening line.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scriptbox::client::{Client, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// A running `scriptbox serve`.
pub struct Daemon {
    /// The process (taken by `kill9` / `terminate`).
    pub child: Option<Child>,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its TCP address, when it listens on one.
    pub tcp: Option<String>,
}

impl Daemon {
    /// Starts a daemon in `dir` and waits for its ready line.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("s.sock");
        let data_dir = dir.join("data");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("SCRIPTBOX_SOCKET");
        if let Ok(rt) = std::env::var("SCRIPTBOX_TEST_RUNTIME") {
            cmd.arg("--container-runtime").arg(rt);
        }
        let mut child = cmd.spawn().expect("start scriptbox serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon prints its ready line");
        assert!(line.starts_with("scriptbox serve: listening on"), "{line}");
        let tcp = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tcp:"))
            .map(str::to_string);
        Daemon {
            child: Some(child),
            socket,
            data_dir,
            tcp,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    /// kill -9, and reap the process (a zombie still looks alive in /proc).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; returns the exit status and how long the exit took.
    pub fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().unwrap();
        let began = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(
                i32::try_from(child.id()).expect("a pid fits in i32"),
                libc::SIGTERM,
            )
        };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, began.elapsed());
            }
            if began.elapsed() > limit {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("the daemon did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    /// `http://<tcp address>`, for clients that speak HTTP over TCP.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}",
            self.tcp.as_deref().expect("the daemon listens on TCP")
        )
    }
}
