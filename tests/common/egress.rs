//! Fixtures for the AWS egress: listeners on the host's loopback that count what reaches them,
//! and steps run with AWS access on (through the library, as the CLI and the daemon do).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scriptbox::aws::{AwsAccess, AwsConfig, AwsMode};
use scriptbox::egress::EgressLimits;
use scriptbox::execute::StepAws;
use scriptbox::result::StepResult;
use scriptbox::sandbox::Engine;
use scriptbox::step::StepInputs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What a [`Listener`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Bytes received.
    pub bytes: AtomicU64,
    /// The longest a connection stayed open, milliseconds.
    pub longest_ms: AtomicU64,
}

/// A listener on 127.0.0.1 that counts connections and bytes. In HTTP mode it answers every
/// request head with a tiny `200` (an emulator stand-in); otherwise it only reads.
pub struct Listener {
    /// Its port.
    pub port: u16,
    /// What it saw.
    pub seen: Arc<Seen>,
    stop: CancellationToken,
}

impl Listener {
    /// Starts one; `http` makes it answer requests.
    pub async fn start(http: bool) -> Listener {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback listener");
        let port = socket.local_addr().expect("its address").port();
        let seen = Arc::new(Seen::default());
        let stop = CancellationToken::new();
        let (seen2, stop2) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = socket.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                seen2.connections.fetch_add(1, Ordering::SeqCst);
                seen2.open.fetch_add(1, Ordering::SeqCst);
                let seen3 = seen2.clone();
                tokio::spawn(async move {
                    let began = std::time::Instant::now();
                    serve(stream, http, &seen3).await;
                    let ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                    seen3.longest_ms.fetch_max(ms, Ordering::SeqCst);
                    seen3.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Listener { port, seen, stop }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.seen.bytes.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.seen.open.load(Ordering::SeqCst)
    }

    /// The longest connection, milliseconds.
    pub fn longest_ms(&self) -> u64 {
        self.seen.longest_ms.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, http: bool, seen: &Seen) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        seen.bytes
            .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::SeqCst);
        if http {
            head.extend_from_slice(&buf[..n]);
            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                head.drain(..end + 4);
                let reply =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
                if stream.write_all(reply).await.is_err() {
                    return;
                }
            }
            if head.len() > 64 * 1024 {
                head.clear();
            }
        }
    }
}

/// `[aws]` for a test: `mode`, the emulator's endpoint, extra hosts, and a private egress
/// folder (so a test can see that nothing of its egress outlives the run).
pub fn aws_config(
    mode: AwsMode,
    endpoint: Option<String>,
    allow_hosts: Vec<String>,
) -> (AwsConfig, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("sbx-eg")
        .tempdir_in("/tmp")
        .expect("a temporary egress folder");
    // The container's user must reach the socket folder: the parent of the sessions' folders.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the egress folder");
    let config = AwsConfig {
        mode,
        endpoint,
        allow_hosts,
        egress_dir: Some(dir.path().join("egress")),
        ..AwsConfig::default()
    };
    (config, dir)
}

/// The AWS access of `config` with `limits`, as the CLI builds it.
pub async fn access(config: &AwsConfig, limits: &EgressLimits) -> Arc<AwsAccess> {
    let settings = super::settings();
    AwsAccess::from_settings(config, limits, &settings.context, &settings.sandbox.user)
        .await
        .expect("AWS access from the test's settings")
        .expect("a mode other than none")
}

/// Runs a step with AWS access (and `role`), under `execution_id`.
pub async fn run_with_aws(
    engine: &Engine,
    inputs: &StepInputs,
    access: &AwsAccess,
    role: Option<String>,
    execution_id: Option<String>,
) -> StepResult {
    let aws = StepAws {
        access,
        budget: access.new_budget(),
        role,
    };
    super::run_with_options(
        engine,
        inputs,
        execution_id,
        &CancellationToken::new(),
        Some(aws),
    )
    .await
}

/// The folders left under a test's egress folder (none once every run has ended).
pub fn leftovers(config: &AwsConfig) -> Vec<PathBuf> {
    let Some(dir) = &config.egress_dir else {
        return vec![];
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => vec![],
    }
}

/// The lines scriptbox itself wrote into a result's log (egress refusals among them): the
/// host's own record, not anything the script printed.
pub fn scriptbox_lines(r: &StepResult) -> Vec<String> {
    r.log
        .iter()
        .filter(|l| l.stream == scriptbox::result::LogStream::Scriptbox)
        .map(|l| l.text.clone())
        .collect()
}
