//! `scriptbox signal EXECUTION_ID --type Approve|Reject|Resume|StartStep|StopStep`: a signal to
//! an execution's waiting `aws:pause` or `aws:approve` step.
//!
//! An execution of `scriptbox run` listens for its signals on an owner-only Unix socket,
//! `<runs dir>/<EXECUTION_ID>.sock` ([`runs_dir`]: beside the daemon's default socket), for as
//! long as it runs; `scriptbox signal` sends there when that socket exists, else to the daemon
//! (`POST /v1/executions/{id}/signal`). The run socket's protocol is one JSON line each way
//! (`{"SignalType", "Payload"}` → `{"StepName"}` or `{"Error": {"Code", "Message"}}`), at most
//! [`MAX_LOCAL_REQUEST_BYTES`], within [`LOCAL_DEADLINE`]; a peer of another uid is refused.
//! The sender is the OS user's name (`runbook::signals::local_user`).
//!
//! Exit codes: 0 delivered; 1 refused (the execution does not wait for that signal, or ended);
//! 2 bad input or an unknown execution; 3 no daemon answered.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::connect::{id_path, refused, unreachable_daemon};
use super::{CliError, ConnectArgs};
use crate::runbook::signals::{Signal, SignalKind, SignalSender, check_payload, local_user};

/// The largest request line on a run's signal socket.
pub const MAX_LOCAL_REQUEST_BYTES: u64 = 64 * 1024;
/// The longest a signal exchange on a run's socket may take, either side.
pub const LOCAL_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once on a run's socket.
const LOCAL_CONNECTIONS: usize = 8;

/// A signal type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum SignalTypeArg {
    /// Approve an aws:approve step.
    Approve,
    /// Reject an aws:approve step.
    Reject,
    /// Resume an aws:pause step.
    Resume,
    /// Interactive mode (refused: scriptbox runs Auto mode only).
    StartStep,
    /// Interactive mode (refused: scriptbox runs Auto mode only).
    StopStep,
}

impl SignalTypeArg {
    fn kind(self) -> SignalKind {
        match self {
            SignalTypeArg::Approve => SignalKind::Approve,
            SignalTypeArg::Reject => SignalKind::Reject,
            SignalTypeArg::Resume => SignalKind::Resume,
            SignalTypeArg::StartStep => SignalKind::StartStep,
            SignalTypeArg::StopStep => SignalKind::StopStep,
        }
    }
}

/// `scriptbox signal`
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The execution id (of `scriptbox run`, or of the daemon).
    pub id: String,
    /// The signal.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub signal_type: SignalTypeArg,
    /// A comment (Approve, Reject), sent as the payload's `Comment`.
    #[arg(long)]
    pub comment: Option<String>,
    /// The waiting step's name (`StepName`; optional for Resume).
    #[arg(long, value_name = "NAME")]
    pub step_name: Option<String>,
    /// Where the daemon is (when no `scriptbox run` of that id listens here).
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where `scriptbox run` executions listen for signals: `scriptbox-runs/` beside the daemon's
/// default socket (`$XDG_RUNTIME_DIR`, `/run/scriptbox` as root, or `/tmp/scriptbox-$UID`).
pub fn runs_dir() -> PathBuf {
    let socket = crate::config::default_socket();
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/tmp"))
        .join("scriptbox-runs")
}

/// Why a run's signal socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RunSocketError {
    /// The folder or the socket failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The folder is not this user's own.
    #[error("{} is not a folder owned by this user and closed to others", .0.display())]
    NotPrivate(PathBuf),
}

/// Creates `dir` (and its parents) owner-only, and checks it is this user's, not a symlink.
fn private_dir(dir: &Path) -> Result<(), RunSocketError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunSocketError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let meta = std::fs::symlink_metadata(d).map_err(io(d))?;
        // The parent may be root's (`/run/user`...); the folder itself must be ours.
        let owner_ok = meta.uid() == uid || (d != dir && meta.uid() == 0);
        if !meta.is_dir() || !owner_ok {
            return Err(RunSocketError::NotPrivate(d.to_path_buf()));
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    Ok(())
}

/// A run's signal socket, removed when dropped.
#[derive(Debug)]
pub struct RunSocket {
    path: PathBuf,
    stop: CancellationToken,
}

impl Drop for RunSocket {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl RunSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Listens for execution `id`'s signals in `dir` until the returned socket is dropped.
pub fn listen(dir: &Path, id: &str, sender: SignalSender) -> Result<RunSocket, RunSocketError> {
    id_path(id).map_err(|_| RunSocketError::NotPrivate(dir.join(id)))?;
    private_dir(dir)?;
    let path = dir.join(format!("{id}.sock"));
    let listener = UnixListener::bind(&path).map_err(|source| RunSocketError::Io {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        RunSocketError::Io {
            path: path.clone(),
            source,
        }
    })?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let turns = Arc::new(tokio::sync::Semaphore::new(LOCAL_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = token.cancelled() => return,
            };
            let Ok((stream, _)) = conn else { continue };
            let Ok(turn) = turns.clone().try_acquire_owned() else {
                continue;
            };
            let sender = sender.clone();
            tokio::spawn(async move {
                let _turn = turn;
                let _ = tokio::time::timeout(LOCAL_DEADLINE, serve_one(stream, &sender)).await;
            });
        }
    });
    Ok(RunSocket { path, stop })
}

/// Answers one request on a run's socket.
async fn serve_one(stream: UnixStream, sender: &SignalSender) -> std::io::Result<()> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    let same_user = stream.peer_cred().map(|c| c.uid() == me).unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let answer = if same_user {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_LOCAL_REQUEST_BYTES + 1));
        reader.read_line(&mut line).await?;
        local_answer(&line, sender)
    } else {
        error_json(
            "AccessDenied",
            "this execution takes signals from its own user only",
        )
    };
    write.write_all(format!("{answer}\n").as_bytes()).await?;
    write.shutdown().await
}

fn error_json(code: &str, message: &str) -> Value {
    json!({"Error": {"Code": code, "Message": message}})
}

/// The answer to one request line.
fn local_answer(line: &str, sender: &SignalSender) -> Value {
    if u64::try_from(line.len()).unwrap_or(u64::MAX) > MAX_LOCAL_REQUEST_BYTES {
        return error_json("InvalidRequest", "the request is too large");
    }
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(line) else {
        return error_json("InvalidRequest", "the request must be one JSON object");
    };
    let Some(kind) = req
        .get("SignalType")
        .and_then(Value::as_str)
        .and_then(SignalKind::parse)
    else {
        return error_json("InvalidRequest", "SignalType is missing or unknown");
    };
    let payload = match check_payload(req.get("Payload")) {
        Ok(p) => p,
        Err(e) => return error_json("InvalidRequest", &e.to_string()),
    };
    match sender.send(Signal::new(kind, payload, local_user())) {
        Ok(step) => json!({"StepName": step}),
        Err(e) => error_json("InvalidSignal", &e.to_string()),
    }
}

/// Sends one request to a run's socket; its answer.
async fn ask_run(path: &Path, body: &Value) -> std::io::Result<Value> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await?;
        stream.write_all(format!("{body}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_LOCAL_REQUEST_BYTES))
            .read_line(&mut line)
            .await?;
        Ok::<_, std::io::Error>(serde_json::from_str(&line).unwrap_or(Value::Null))
    };
    tokio::time::timeout(LOCAL_DEADLINE, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

/// `scriptbox signal`
pub(super) async fn signal(args: SignalArgs) -> Result<ExitCode, CliError> {
    let path = id_path(&args.id)?;
    let kind = args.signal_type.kind();
    let mut payload = Map::new();
    if let Some(c) = &args.comment {
        payload.insert("Comment".into(), json!([c]));
    }
    if let Some(s) = &args.step_name {
        payload.insert("StepName".into(), json!([s]));
    }
    let payload = check_payload(Some(&Value::Object(payload)))
        .map_err(|e| CliError::Invalid(format!("--comment / --step-name: {e}")))?;
    let body = json!({"SignalType": kind.as_str(), "Payload": payload});
    let local = runs_dir().join(format!("{}.sock", args.id));
    if local.exists() {
        let answer = ask_run(&local, &body).await.map_err(|e| {
            CliError::Environment(anyhow::anyhow!(
                "the run of {} does not answer on {}: {e}",
                args.id,
                local.display()
            ))
        })?;
        if let Some(step) = answer["StepName"].as_str() {
            println!("{}: {kind} delivered to step {step}", args.id);
            return Ok(ExitCode::SUCCESS);
        }
        let message = answer["Error"]["Message"].as_str().unwrap_or("no answer");
        if answer["Error"]["Code"] == "InvalidSignal" {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
        return Err(CliError::Invalid(message.to_string()));
    }
    let client = args.connect.client()?;
    let answer = client
        .post(&format!("{path}/signal"), &body)
        .await
        .map_err(unreachable_daemon)?;
    match answer.status {
        202 => {
            let v = answer.json();
            println!(
                "{}: {kind} delivered to step {}",
                args.id,
                v["StepName"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        409 => {
            eprintln!("error: {}", answer.error_message());
            Ok(ExitCode::from(1))
        }
        _ => refused(&answer, "the signal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::signals::{Waiting, inbox};

    #[tokio::test]
    async fn a_run_socket_takes_its_users_signals_and_is_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let (tx, rx) = inbox();
        let socket = listen(&runs, "exec-1", tx).unwrap();
        let mode = std::fs::metadata(&runs).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = socket.path().to_path_buf();
        let resume = json!({"SignalType": "Resume"});
        let refused = ask_run(&path, &resume).await.unwrap();
        assert_eq!(refused["Error"]["Code"], "InvalidSignal", "{refused}");
        {
            let _w = rx.wait_for(Waiting::resume("pause1"));
            let ok = ask_run(&path, &resume).await.unwrap();
            assert_eq!(ok["StepName"], "pause1", "{ok}");
            assert_eq!(rx.next().await.unwrap().sender, local_user());
        }
        let bad = ask_run(&path, &json!({"SignalType": "Nope"}))
            .await
            .unwrap();
        assert_eq!(bad["Error"]["Code"], "InvalidRequest");
        let big = json!({"SignalType": "Resume", "Payload": {"Comment": ["x".repeat(100_000)]}});
        let too_big = ask_run(&path, &big).await;
        assert!(
            too_big
                .map(|v| v["Error"]["Code"] == "InvalidRequest")
                .unwrap_or(true),
            "an oversized request is refused (or the connection closed)"
        );
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn a_run_id_must_be_an_execution_id() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = inbox();
        assert!(listen(dir.path(), "../x", tx).is_err());
    }
}
