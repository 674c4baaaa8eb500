//! The per-step-run socket and its connections.
//!
//! One [`EgressSession`] serves one Unix socket in a fresh folder for one step run. Each
//! connection brings one HTTP request head (bounded in size and time); a CONNECT is judged by the
//! [`EgressPolicy`] before any DNS lookup and, when allowed, becomes a byte pipe to the upstream
//! address; a plain request goes to the emulator (emulator mode) or is refused. The caps of
//! [`EgressLimits`] are held across the execution by the shared [`EgressBudget`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::policy::{Decision, EgressPolicy, HostPort};
use super::{EgressCounts, EgressLimits, SOCKET_NAME};

/// The largest request head read (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Log lines kept per session; past that they are only counted.
pub const MAX_LOG_LINES: usize = 100;
/// The longest log line (in characters).
const MAX_LINE_CHARS: usize = 300;
/// The longest request target quoted in a log line.
const MAX_TARGET_CHARS: usize = 200;
/// How long `finish` waits for the connections' tasks.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// How long writing an error answer (and draining what the client still sends) may take.
const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// Bytes drained after an error answer, so closing does not reset the client's read.
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// The read size while piping.
const PIPE_CHUNK: usize = 16 * 1024;
/// Addresses of one name tried at most.
const MAX_ADDRESSES: usize = 16;
/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;
/// Stand-in for "no deadline" when a configured number of seconds overflows the clock.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A failed egress operation, with its context.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A host or host:port text that is not one.
    #[error("invalid host {value:?}: {rule}")]
    InvalidHost {
        /// The text (clipped, control characters replaced).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An unknown AWS partition.
    #[error(
        "unknown AWS partition {partition:?} (known: aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b)"
    )]
    InvalidPartition {
        /// The partition given.
        partition: String,
    },
    /// A region name that is malformed or of another partition.
    #[error("invalid region {region:?} for partition {partition}: {rule}")]
    InvalidRegion {
        /// The region given (clipped).
        region: String,
        /// The partition it was checked against.
        partition: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A configured list over its bound.
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        /// What the list holds.
        what: &'static str,
        /// Its length.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// `start` was called outside a tokio runtime.
    #[error("the egress socket needs a tokio runtime")]
    NoRuntime,
    /// The socket's path does not fit a Unix socket address.
    #[error("egress socket path {path} is {len} bytes, more than the {max} a Unix socket allows")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Creating a folder failed.
    #[error("cannot create the egress folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading a folder's metadata failed.
    #[error("cannot inspect the egress folder {path}: {source}")]
    InspectDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The parent folder exists but others could swap what is inside.
    #[error("the egress folder {path} is not safe to use: {why}")]
    UnsafeDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// Setting a mode failed.
    #[error("cannot set mode {mode:o} on {path}: {source}")]
    SetMode {
        /// The file or folder.
        path: PathBuf,
        /// The mode wanted.
        mode: u32,
        /// The cause.
        source: io::Error,
    },
    /// Binding the socket failed.
    #[error("cannot bind the egress socket {path}: {source}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Counters of one scope (an execution's budget or one session).
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    limit_reached: OnceLock<String>,
}

impl Counters {
    fn snapshot(&self) -> EgressCounts {
        EgressCounts {
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            limit_reached: self.limit_reached.get().cloned(),
        }
    }
}

/// The caps of one execution, shared by every step run's session: what was used so far
/// (connections, concurrent connections, bytes) and the first cap reached.
#[derive(Debug)]
pub struct EgressBudget {
    limits: EgressLimits,
    totals: Counters,
    concurrent: AtomicU64,
    /// Bytes granted in both directions (reserved before being forwarded).
    bytes_granted: AtomicU64,
}

impl EgressBudget {
    /// A fresh budget holding `limits`.
    pub fn new(limits: EgressLimits) -> Arc<EgressBudget> {
        Arc::new(EgressBudget {
            limits,
            totals: Counters::default(),
            concurrent: AtomicU64::new(0),
            bytes_granted: AtomicU64::new(0),
        })
    }

    /// The execution's totals so far, across its sessions.
    pub fn counts(&self) -> EgressCounts {
        self.totals.snapshot()
    }

    /// Grants up to `wanted` bytes; less (maybe 0) when `max_bytes` is reached.
    fn grant(&self, wanted: usize) -> usize {
        let wanted64 = u64::try_from(wanted).unwrap_or(u64::MAX);
        let mut granted = 0;
        let _ = self
            .bytes_granted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                granted = wanted64.min(self.limits.max_bytes.saturating_sub(used));
                Some(used.saturating_add(granted))
            });
        usize::try_from(granted).unwrap_or(wanted)
    }
}

/// Holds one slot of `max_concurrent_connections` until dropped.
struct ConcurrencySlot(Arc<EgressBudget>);

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        self.0.concurrent.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Log lines of one session, bounded.
#[derive(Debug, Default)]
struct LogBuffer {
    lines: Vec<String>,
    kept: usize,
    dropped: u64,
}

/// What every connection of one session shares.
struct Shared {
    policy: Arc<EgressPolicy>,
    budget: Arc<EgressBudget>,
    counts: Counters,
    log: Mutex<LogBuffer>,
    /// Tests only: the addresses every name "resolves" to (no DNS traffic in tests).
    resolve_override: Option<Vec<SocketAddr>>,
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// Container to upstream.
    Out,
    /// Upstream to container.
    In,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, LogBuffer> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push_line(&self, line: String) -> String {
        let mut log = self.log();
        if log.kept < MAX_LOG_LINES {
            // Only the kept lines reach the daemon's log too: a flood stays bounded there.
            tracing::info!(target: "scriptbox::egress", "{line}");
            log.kept = log.kept.saturating_add(1);
            log.lines.push(line.clone());
        } else {
            log.dropped = log.dropped.saturating_add(1);
        }
        line
    }

    /// Logs `egress to TARGET VERB: REASON` and returns the line.
    fn log_target(&self, target: &str, verb: &str, reason: &str) -> String {
        let target = clip_for_log(target, MAX_TARGET_CHARS);
        let line = clip_for_log(
            &format!("egress to {target} {verb}: {reason}"),
            MAX_LINE_CHARS,
        );
        self.push_line(line)
    }

    /// Logs `egress request refused: WHY` and returns the line.
    fn log_request(&self, why: &str) -> String {
        let line = clip_for_log(&format!("egress request refused: {why}"), MAX_LINE_CHARS);
        self.push_line(line)
    }

    /// Counts an accepted connection; returns how many the execution had before it.
    fn count_connection(&self) -> u64 {
        self.counts.connections.fetch_add(1, Ordering::Relaxed);
        self.budget
            .totals
            .connections
            .fetch_add(1, Ordering::Relaxed)
    }

    fn count_refused(&self) {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        self.budget.totals.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `name` as the cap reached (the first one wins, per session and per budget).
    fn reach(&self, name: &str) {
        let _ = self.counts.limit_reached.set(name.to_owned());
        let _ = self.budget.totals.limit_reached.set(name.to_owned());
    }

    fn count_bytes(&self, direction: Direction, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let (session, total) = match direction {
            Direction::Out => (&self.counts.bytes_out, &self.budget.totals.bytes_out),
            Direction::In => (&self.counts.bytes_in, &self.budget.totals.bytes_in),
        };
        session.fetch_add(n, Ordering::Relaxed);
        total.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes a concurrency slot, or names the cap that refuses this connection.
    fn admit(&self, before: u64) -> Result<ConcurrencySlot, (&'static str, u64)> {
        let limits = &self.budget.limits;
        if before >= limits.max_connections {
            return Err(("max_connections", limits.max_connections));
        }
        let open = self.budget.concurrent.fetch_add(1, Ordering::Relaxed);
        let slot = ConcurrencySlot(Arc::clone(&self.budget));
        if open >= limits.max_concurrent_connections {
            return Err((
                "max_concurrent_connections",
                limits.max_concurrent_connections,
            ));
        }
        // Once every byte is spent, a new connection could carry nothing.
        if self.budget.bytes_granted.load(Ordering::Relaxed) >= limits.max_bytes {
            return Err(("max_bytes", limits.max_bytes));
        }
        Ok(slot)
    }
}

/// One step run's socket: a fresh folder holding [`SOCKET_NAME`], served until
/// [`EgressSession::finish`] (or drop).
pub struct EgressSession {
    dir: PathBuf,
    socket: PathBuf,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    finished: bool,
}

impl std::fmt::Debug for EgressSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressSession")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EgressSession {
    /// Within a tokio runtime: creates `parent` (mode 0711) if missing (it must be a folder of
    /// this user that no one else can write), a fresh random subfolder (0711), binds
    /// [`SOCKET_NAME`] in it, hands the socket to `socket_owner` (uid, gid) with mode 0600 when
    /// given and possible (as root), else gives it mode 0666; then serves it in a spawned task.
    /// Fails, creating nothing, when the socket's path would not fit a Unix socket address.
    pub fn start(
        parent: &Path,
        socket_owner: Option<(u32, u32)>,
        policy: Arc<EgressPolicy>,
        budget: Arc<EgressBudget>,
    ) -> Result<EgressSession, EgressError> {
        Self::start_with(parent, socket_owner, policy, budget, None)
    }

    fn start_with(
        parent: &Path,
        socket_owner: Option<(u32, u32)>,
        policy: Arc<EgressPolicy>,
        budget: Arc<EgressBudget>,
        resolve_override: Option<Vec<SocketAddr>>,
    ) -> Result<EgressSession, EgressError> {
        tokio::runtime::Handle::try_current().map_err(|_| EgressError::NoRuntime)?;
        let mut name = uuid::Uuid::new_v4().simple().to_string();
        name.truncate(16);
        let dir = parent.join(name);
        let socket = dir.join(SOCKET_NAME);
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EgressError::SocketPathTooLong {
                path: socket,
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        prepare_parent(parent)?;
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(|source| EgressError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        let listener = match bind_socket(&dir, &socket, socket_owner) {
            Ok(listener) => listener,
            Err(err) => {
                remove_sync(&socket, &dir);
                return Err(err);
            }
        };
        let shared = Arc::new(Shared {
            policy,
            budget,
            counts: Counters::default(),
            log: Mutex::new(LogBuffer::default()),
            resolve_override,
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            cancel.clone(),
            tracker.clone(),
        ));
        Ok(EgressSession {
            dir,
            socket,
            shared,
            cancel,
            tracker,
            finished: false,
        })
    }

    /// The folder to mount read-only at [`super::CONTAINER_DIR`]; it holds only the socket.
    pub fn host_dir(&self) -> &Path {
        &self.dir
    }

    /// The socket's path on the host.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The refusal log lines not yet taken (drained). At most 100 lines are kept per session;
    /// past that one final line `... N more egress refusals` counts the rest.
    pub fn take_log_lines(&self) -> Vec<String> {
        let mut log = self.shared.log();
        let mut lines = std::mem::take(&mut log.lines);
        if log.dropped > 0 {
            lines.push(format!("... {} more egress refusals", log.dropped));
            log.dropped = 0;
        }
        lines
    }

    /// This session's counts so far (the budget keeps the execution's totals).
    pub fn counts(&self) -> EgressCounts {
        self.shared.counts.snapshot()
    }

    /// Stops accepting, ends every connection, waits for the tasks (at most 5 s), removes the
    /// socket and the folder; returns this session's counts.
    pub async fn finish(mut self) -> EgressCounts {
        self.finished = true;
        self.cancel.cancel();
        self.tracker.close();
        remove_quietly(tokio::fs::remove_file(&self.socket).await, &self.socket);
        if tokio::time::timeout(FINISH_WAIT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(dir = %self.dir.display(), "egress tasks still running after 5 s");
        }
        remove_quietly(tokio::fs::remove_dir(&self.dir).await, &self.dir);
        self.shared.counts.snapshot()
    }
}

impl Drop for EgressSession {
    /// Without `finish`: cancels every task and removes the socket and folder (best effort;
    /// two tiny syscalls, like `start`'s).
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.cancel();
            self.tracker.close();
            remove_sync(&self.socket, &self.dir);
        }
    }
}

fn remove_quietly(result: io::Result<()>, path: &Path) {
    if let Err(err) = result {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "cannot remove egress path: {err}");
        }
    }
}

fn remove_sync(socket: &Path, dir: &Path) {
    remove_quietly(std::fs::remove_file(socket), socket);
    remove_quietly(std::fs::remove_dir(dir), dir);
}

/// Creates `parent` when missing; it must then be a real folder of this user, not writable by
/// others (else someone could swap the session folder under us).
fn prepare_parent(parent: &Path) -> Result<(), EgressError> {
    let missing =
        std::fs::symlink_metadata(parent).is_err_and(|err| err.kind() == io::ErrorKind::NotFound);
    if missing {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(|source| EgressError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        // The mode asked for is cut by the umask: the container's user must traverse it.
        set_mode(parent, 0o711)?;
    }
    let meta = std::fs::symlink_metadata(parent).map_err(|source| EgressError::InspectDir {
        path: parent.to_owned(),
        source,
    })?;
    let unsafe_dir = |why| EgressError::UnsafeDir {
        path: parent.to_owned(),
        why,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("not a folder (a symbolic link?)"));
    }
    if meta.uid() != current_euid() {
        return Err(unsafe_dir("owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir("writable by group or others"));
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EgressError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        EgressError::SetMode {
            path: path.to_owned(),
            mode,
            source,
        }
    })
}

/// Binds the socket and sets its owner and mode (0600 for `owner` when chown works, else 0666).
fn bind_socket(
    dir: &Path,
    socket: &Path,
    owner: Option<(u32, u32)>,
) -> Result<UnixListener, EgressError> {
    set_mode(dir, 0o711)?;
    let listener = UnixListener::bind(socket).map_err(|source| EgressError::Bind {
        path: socket.to_owned(),
        source,
    })?;
    let owned = match owner {
        Some((uid, gid)) => match std::os::unix::fs::chown(socket, Some(uid), Some(gid)) {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!("egress socket not handed to {uid}:{gid} ({err}); mode 0666");
                false
            }
        },
        None => false,
    };
    set_mode(socket, if owned { 0o600 } else { 0o666 })?;
    Ok(listener)
}

fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Where session folders go by default: `/run/scriptbox/egress` as root, else
/// `$XDG_RUNTIME_DIR/scriptbox/egress` (when set and absolute), else `/tmp/scriptbox-<uid>/egress`.
pub fn default_egress_dir() -> PathBuf {
    let uid = current_euid();
    if uid == 0 {
        return PathBuf::from("/run/scriptbox/egress");
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return runtime.join("scriptbox").join("egress");
    }
    PathBuf::from(format!("/tmp/scriptbox-{uid}/egress"))
}

/// `text` with every character but printable ASCII replaced by `?` (no control, no bidi
/// override: a target should be ASCII anyway), clipped to `max_chars` characters (an ellipsis
/// marks the cut): text from a container goes into logs only this way.
pub(super) fn clip_for_log(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.pop();
            out.push('…');
            break;
        }
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
    out
}

fn deadline_after(start: Instant, seconds: u64) -> Instant {
    start
        .checked_add(Duration::from_secs(seconds))
        .unwrap_or(start + FAR_FUTURE)
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                let cancel = cancel.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = handle_connection(stream, &shared) => {}
                    }
                });
            }
            Err(err) => {
                // EMFILE and the like: wait a little instead of spinning.
                tracing::warn!("egress accept failed: {err}");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// A request line: its method and target.
struct RequestLine<'a> {
    method: &'a str,
    target: &'a str,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the end of the request head (`\r\n\r\n`), at most [`MAX_HEAD_BYTES`], by
/// `deadline`. Returns the bytes read and the head's length (bytes after it were sent early),
/// `None` when the client closed without sending anything, or why the head is refused.
async fn read_head(
    stream: &mut UnixStream,
    deadline: Instant,
    seconds: u64,
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let room = chunk.len().min(MAX_HEAD_BYTES.saturating_sub(buf.len()));
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Err(format!("no complete request head within {seconds} s")),
            Ok(Err(err)) => return Err(format!("reading the request head failed: {err}")),
            Ok(Ok(0)) if buf.is_empty() => return Ok(None),
            Ok(Ok(0)) => return Err("the connection closed inside the request head".to_owned()),
            Ok(Ok(n)) => n,
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(pos) = buf.get(from..).and_then(|tail| find(tail, b"\r\n\r\n")) {
            let len = from.saturating_add(pos).saturating_add(4);
            return Ok(Some((buf, len)));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(format!("the request head is over {MAX_HEAD_BYTES} bytes"));
        }
    }
}

/// What a plain (non-CONNECT) request asks for, as `HOST:PORT` for the log: the authority of an
/// absolute-form target (`http://example.com/x` → `example.com:80`), else the `Host` header's,
/// else the target as written.
fn plain_target(target: &str, head: &[u8]) -> String {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let (rest, port) = if lower.starts_with("http://") {
        (target.get(7..).unwrap_or_default(), 80)
    } else if lower.starts_with("https://") {
        (target.get(8..).unwrap_or_default(), 443)
    } else {
        return host_header(head)
            .map(|host| with_port(host, 80))
            .unwrap_or_else(|| target.to_owned());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return target.to_owned();
    }
    with_port(authority, port)
}

/// `host` with `:port` added when it names none (`[v6]` and `v6]:p` forms kept).
fn with_port(host: &str, port: u16) -> String {
    let after_bracket = host.rsplit(']').next().unwrap_or(host);
    if after_bracket.contains(':') && (host.starts_with('[') || host.matches(':').count() == 1) {
        host.to_ascii_lowercase()
    } else {
        format!("{}:{port}", host.to_ascii_lowercase())
    }
}

/// The value of the request head's `Host` header, if it has one.
fn host_header(head: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

/// `METHOD TARGET HTTP/1.x`, checked.
fn parse_request_line(head: &[u8]) -> Result<RequestLine<'_>, &'static str> {
    let end = find(head, b"\r\n").ok_or("no request line")?;
    let line = head.get(..end).ok_or("no request line")?;
    let line = std::str::from_utf8(line).map_err(|_| "the request line is not UTF-8")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD TARGET VERSION");
    };
    if method.is_empty()
        || method.len() > 32
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the method is not a token");
    }
    if target.is_empty() || target.chars().any(char::is_control) {
        return Err("the target is empty or holds control characters");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("the version is not HTTP/1.0 or HTTP/1.1");
    }
    Ok(RequestLine { method, target })
}

/// An error answer: `status`, the log line as a text body, `Connection: close`.
fn error_answer(status: &str, line: &str) -> String {
    let body = format!("{line}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes an error answer (the log line as its body, `Connection: close`), then drains what the
/// client still sends for a moment, so that closing does not turn into a reset of its read.
async fn answer_and_close(mut stream: UnixStream, status: &str, line: &str) {
    let answer = error_answer(status, line);
    let _ = tokio::time::timeout(ANSWER_WAIT, async {
        if stream.write_all(answer.as_bytes()).await.is_ok() {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while drained < MAX_DRAIN_BYTES {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained = drained.saturating_add(n),
                }
            }
        }
    })
    .await;
}

/// Why connecting upstream did not happen.
enum Upstream {
    /// The policy's address check refused it (403).
    Refused(String),
    /// Resolving or connecting failed (502).
    Failed(String),
}

async fn handle_connection(mut stream: UnixStream, shared: &Shared) {
    let accepted = Instant::now();
    let before = shared.count_connection();
    let _slot = match shared.admit(before) {
        Ok(slot) => slot,
        Err((cap, max)) => {
            shared.count_refused();
            shared.reach(cap);
            let line = shared.log_request(&format!("{cap} ({max}) reached"));
            // No waiting over a cap: one non-blocking write of the answer, then close, so a
            // flood of connections past the cap holds no task for long.
            let _ = stream.try_write(error_answer("503 Service Unavailable", &line).as_bytes());
            return;
        }
    };
    let limits = &shared.budget.limits;
    let end = deadline_after(accepted, limits.max_connection_seconds);
    let head_deadline = deadline_after(accepted, limits.connect_timeout_seconds).min(end);
    let (buf, head_len) =
        match read_head(&mut stream, head_deadline, limits.connect_timeout_seconds).await {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(why) => {
                shared.count_refused();
                let line = shared.log_request(&why);
                answer_and_close(stream, "400 Bad Request", &line).await;
                return;
            }
        };
    let request = match parse_request_line(buf.get(..head_len).unwrap_or_default()) {
        Ok(request) => request,
        Err(why) => {
            shared.count_refused();
            let line = shared.log_request(why);
            answer_and_close(stream, "400 Bad Request", &line).await;
            return;
        }
    };
    let tunnel = request.method == "CONNECT";
    let decision = if tunnel {
        shared.policy.decide_connect(request.target)
    } else {
        shared.policy.decide_plain(request.target)
    };
    let target = if tunnel {
        request.target.to_owned()
    } else {
        plain_target(request.target, buf.get(..head_len).unwrap_or_default())
    };
    let allowed = match decision {
        Decision::Allow(allowed) => allowed,
        Decision::Refuse(reason) => {
            shared.count_refused();
            let line = shared.log_target(&target, "refused", &reason);
            answer_and_close(stream, "403 Forbidden", &line).await;
            return;
        }
    };
    let connect_deadline = deadline_after(Instant::now(), limits.connect_timeout_seconds).min(end);
    let upstream = match connect_upstream(shared, &allowed, connect_deadline).await {
        Ok(upstream) => upstream,
        Err(Upstream::Refused(reason)) => {
            shared.count_refused();
            let line = shared.log_target(&target, "refused", &reason);
            answer_and_close(stream, "403 Forbidden", &line).await;
            return;
        }
        Err(Upstream::Failed(reason)) => {
            let line = shared.log_target(&target, "failed", &reason);
            answer_and_close(stream, "502 Bad Gateway", &line).await;
            return;
        }
    };
    let early = if tunnel {
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        if stream.write_all(ok).await.is_err() {
            return;
        }
        buf.get(head_len..).unwrap_or_default()
    } else {
        buf.as_slice()
    };
    pipe(stream, upstream, early, &target, end, shared).await;
}

/// Why an address may not be reached by an AWS name, if it may not.
fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    let v4 = |ip: Ipv4Addr| {
        if ip.is_loopback() {
            Some("a loopback")
        } else if ip.is_link_local() {
            Some("a link-local")
        } else if ip.is_unspecified() || ip.octets()[0] == 0 {
            Some("an unspecified")
        } else if ip.is_multicast() {
            Some("a multicast")
        } else if ip.is_broadcast() {
            Some("a broadcast")
        } else {
            None
        }
    };
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            if let Some(mapped) = ip.to_ipv4_mapped() {
                v4(mapped)
            } else if ip.is_loopback() {
                Some("a loopback")
            } else if ip.is_unspecified() {
                Some("an unspecified")
            } else if ip.is_multicast() {
                Some("a multicast")
            } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
                Some("a link-local")
            } else {
                None
            }
        }
    }
}

/// The addresses of `allowed` (an IP literal is its own address), by `deadline`.
async fn resolve(
    shared: &Shared,
    allowed: &HostPort,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Upstream> {
    if let Some(ip) = allowed.ip() {
        return Ok(vec![SocketAddr::new(ip, allowed.port)]);
    }
    if let Some(addresses) = &shared.resolve_override {
        return Ok(addresses.clone());
    }
    let lookup = tokio::net::lookup_host((allowed.host.as_str(), allowed.port));
    match tokio::time::timeout_at(deadline, lookup).await {
        Err(_) => Err(Upstream::Failed("the DNS lookup timed out".to_owned())),
        Ok(Err(err)) => Err(Upstream::Failed(format!("the DNS lookup failed: {err}"))),
        Ok(Ok(addresses)) => Ok(addresses.take(MAX_ADDRESSES).collect()),
    }
}

/// Resolves (checking the addresses for AWS names) and connects, by `deadline`. Connects to
/// the very addresses checked, so a second lookup cannot answer differently.
async fn connect_upstream(
    shared: &Shared,
    allowed: &HostPort,
    deadline: Instant,
) -> Result<TcpStream, Upstream> {
    let addresses = resolve(shared, allowed, deadline).await?;
    if shared.policy.checks_addresses(allowed) {
        if let Some(kind) = addresses.iter().find_map(|a| forbidden_address(a.ip())) {
            return Err(Upstream::Refused(format!("resolves to {kind} address")));
        }
    }
    let mut last = "the name has no address".to_owned();
    for address in addresses {
        match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
            Err(_) => return Err(Upstream::Failed("connecting timed out".to_owned())),
            Ok(Err(err)) => last = format!("connecting to {address} failed: {err}"),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
        }
    }
    Err(Upstream::Failed(last))
}

/// How one direction of a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader closed; the writer was shut down after it.
    Eof,
    /// A read or write failed.
    Error,
    /// `max_bytes` was reached.
    Cap,
    /// The other direction stopped the pipe.
    Stopped,
}

/// Pipes both ways until both sides close, a cap is reached or `end` passes.
async fn pipe(
    client: UnixStream,
    upstream: TcpStream,
    early: &[u8],
    target: &str,
    end: Instant,
    shared: &Shared,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let stop = CancellationToken::new();
    let out = copy_one_way(
        &mut client_read,
        &mut upstream_write,
        early,
        Direction::Out,
        shared,
        &stop,
    );
    let back = copy_one_way(
        &mut upstream_read,
        &mut client_write,
        &[],
        Direction::In,
        shared,
        &stop,
    );
    let limits = &shared.budget.limits;
    match tokio::time::timeout_at(end, async { tokio::join!(out, back) }).await {
        Ok((out, back)) => {
            if out == End::Cap || back == End::Cap {
                shared.reach("max_bytes");
                let reason = format!("max_bytes ({}) reached", limits.max_bytes);
                shared.log_target(target, "refused", &reason);
            }
        }
        Err(_) => {
            shared.reach("max_connection_seconds");
            let reason = format!(
                "max_connection_seconds ({}) reached",
                limits.max_connection_seconds
            );
            shared.log_target(target, "refused", &reason);
        }
    }
}

/// Copies `reader` to `writer` (after `early`), each chunk granted by the budget first.
async fn copy_one_way<R, W>(
    reader: &mut R,
    writer: &mut W,
    early: &[u8],
    direction: Direction,
    shared: &Shared,
    stop: &CancellationToken,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ended = |end: End| {
        if end != End::Stopped {
            stop.cancel();
        }
        end
    };
    if let Err(end) = forward(writer, early, direction, shared, stop).await {
        return ended(end);
    }
    let mut buf = vec![0u8; PIPE_CHUNK];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return End::Stopped,
            read = reader.read(&mut buf) => match read {
                Ok(0) => {
                    let _ = writer.shutdown().await;
                    return End::Eof;
                }
                Ok(n) => n,
                Err(_) => return ended(End::Error),
            },
        };
        let chunk = buf.get(..n).unwrap_or_default();
        if let Err(end) = forward(writer, chunk, direction, shared, stop).await {
            return ended(end);
        }
    }
}

/// Writes what the budget grants of `data`; `Err(Cap)` when that is not all of it.
async fn forward<W: AsyncWrite + Unpin>(
    writer: &mut W,
    data: &[u8],
    direction: Direction,
    shared: &Shared,
    stop: &CancellationToken,
) -> Result<(), End> {
    if data.is_empty() {
        return Ok(());
    }
    let granted = shared.budget.grant(data.len());
    let part = data.get(..granted).unwrap_or_default();
    if !part.is_empty() {
        tokio::select! {
            () = stop.cancelled() => return Err(End::Stopped),
            written = writer.write_all(part) => written.map_err(|_| End::Error)?,
        }
        shared.count_bytes(direction, part.len());
    }
    if granted < data.len() {
        Err(End::Cap)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_are_logged_by_host_and_port() {
        let head = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: Example.COM\r\n\r\n";
        assert_eq!(plain_target("/", head), "example.com:80");
        assert_eq!(
            plain_target("http://example.com/x?y", b""),
            "example.com:80"
        );
        assert_eq!(
            plain_target("HTTP://u:p@Example.com:8080/", b""),
            "example.com:8080"
        );
        assert_eq!(plain_target("https://h/", b""), "h:443");
        assert_eq!(plain_target("http://[::1]:81/", b""), "[::1]:81");
        assert_eq!(plain_target("http://[::1]/", b""), "[::1]:80");
        assert_eq!(
            plain_target("/containers/json", b"GET / HTTP/1.1\r\n\r\n"),
            "/containers/json"
        );
        assert_eq!(plain_target("http:///", b""), "http:///");
    }
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// A loopback listener that counts connections and bytes received, and echoes (or not).
    struct Upstream {
        port: u16,
        connections: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        received: Arc<AtomicUsize>,
    }

    async fn upstream(echo: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let (c, d, r) = (connections.clone(), closed.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (d, r) = (d.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                r.fetch_add(n, Ordering::SeqCst);
                                if echo && stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            port,
            connections,
            closed,
            received,
        }
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn limits() -> EgressLimits {
        EgressLimits {
            connect_timeout_seconds: 2,
            ..EgressLimits::default()
        }
    }

    fn aws_policy(extra: &[&str]) -> Arc<EgressPolicy> {
        let extra = extra
            .iter()
            .map(|e| HostPort::parse(e, 443).unwrap())
            .collect();
        Arc::new(EgressPolicy::aws("aws", vec!["us-east-1".into()], extra).unwrap())
    }

    fn emulator_policy(port: u16) -> Arc<EgressPolicy> {
        Arc::new(EgressPolicy::emulator(
            HostPort::parse(&format!("127.0.0.1:{port}"), 80).unwrap(),
        ))
    }

    fn session(
        parent: &Path,
        policy: Arc<EgressPolicy>,
        limits: EgressLimits,
    ) -> (EgressSession, Arc<EgressBudget>) {
        let budget = EgressBudget::new(limits);
        let session = EgressSession::start(parent, None, policy, Arc::clone(&budget)).unwrap();
        (session, budget)
    }

    /// Sends `head` and reads the answer's head (or what came before EOF / an error).
    async fn send(session: &EgressSession, head: &[u8]) -> (UnixStream, String) {
        let mut stream = UnixStream::connect(session.socket_path()).await.unwrap();
        stream.write_all(head).await.unwrap();
        let answer = read_answer(&mut stream).await;
        (stream, answer)
    }

    async fn read_answer(stream: &mut UnixStream) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        let read = async {
            while find(&got, b"\r\n\r\n").is_none() {
                match stream.read(&mut byte).await {
                    Ok(1) => got.push(byte[0]),
                    _ => break,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn read_exact_or_eof(stream: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    /// Whether the peer closed (EOF or reset) within 5 s, draining what comes before.
    async fn closes(stream: &mut UnixStream) -> bool {
        let mut buf = [0u8; 4096];
        let wait = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_ok()
    }

    fn connect_head(target: &str) -> Vec<u8> {
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn emulator_forwards_plain_requests_and_only_its_own_connect() {
        let tmp = tempfile::tempdir().unwrap();
        let emu = upstream(true).await;
        let other = upstream(true).await;
        let (session, budget) = session(tmp.path(), emulator_policy(emu.port), limits());

        let head = b"POST http://sts.amazonaws.com/ HTTP/1.1\r\nHost: sts.amazonaws.com\r\nContent-Length: 0\r\n\r\n";
        let (mut stream, answer) = send(&session, head).await;
        // The emulator listener echoes: what came back is exactly what it was sent.
        assert_eq!(answer.as_bytes(), &head[..]);
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            read_exact_or_eof(&mut stream, 18).await,
            b"GET / HTTP/1.1\r\n\r\n"
        );
        drop(stream);

        let (mut stream, answer) =
            send(&session, &connect_head(&format!("127.0.0.1:{}", emu.port))).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        stream.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact_or_eof(&mut stream, 4).await, b"ping");
        drop(stream);

        for target in [
            format!("127.0.0.1:{}", other.port),
            "example.com:443".to_owned(),
        ] {
            let (_stream, answer) = send(&session, &connect_head(&target)).await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(answer.contains("Connection: close"), "{answer}");
        }
        wait_for("both emulator connections closed", || {
            emu.closed.load(Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(emu.connections.load(Ordering::SeqCst), 2);
        assert_eq!(other.connections.load(Ordering::SeqCst), 0);
        assert_eq!(emu.received.load(Ordering::SeqCst), head.len() + 18 + 4);
        let lines = session.take_log_lines();
        assert_eq!(
            lines,
            vec![
                format!(
                    "egress to 127.0.0.1:{} refused: not the emulator's address 127.0.0.1:{}",
                    other.port, emu.port
                ),
                format!(
                    "egress to example.com:443 refused: not the emulator's address 127.0.0.1:{}",
                    emu.port
                ),
            ]
        );
        assert!(session.take_log_lines().is_empty(), "drained");
        let counts = session.finish().await;
        assert_eq!(counts.connections, 4);
        assert_eq!(counts.refused, 2);
        assert_eq!(counts.bytes_out, u64::try_from(head.len() + 22).unwrap());
        assert_eq!(counts.bytes_in, counts.bytes_out);
        assert_eq!(budget.counts(), counts);
    }

    #[tokio::test]
    async fn aws_mode_tunnels_to_extras_and_refuses_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = upstream(true).await;
        let other = upstream(true).await;
        let extra = format!("127.0.0.1:{}", allowed.port);
        let (session, budget) = session(tmp.path(), aws_policy(&[&extra]), limits());

        // Bytes sent right behind the CONNECT head (before the 200) are forwarded too.
        let mut head = connect_head(&extra);
        head.extend_from_slice(b"early");
        let (mut stream, answer) = send(&session, &head).await;
        assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n");
        assert_eq!(read_exact_or_eof(&mut stream, 5).await, b"early");
        stream.write_all(&[7u8; 10_000]).await.unwrap();
        assert_eq!(
            read_exact_or_eof(&mut stream, 10_000).await,
            vec![7u8; 10_000]
        );
        drop(stream);
        wait_for("tunnel closed", || {
            allowed.closed.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(allowed.received.load(Ordering::SeqCst), 10_005);

        let cases = [
            (
                format!("127.0.0.1:{}", other.port),
                "an IP address is not an AWS host",
            ),
            (
                "example.com:443".to_owned(),
                "not an AWS host of partition aws in us-east-1",
            ),
            (
                "ec2.us-east-1.amazonaws.com:22".to_owned(),
                "port 22 is not 443",
            ),
        ];
        for (target, reason) in &cases {
            let (_stream, answer) = send(&session, &connect_head(target)).await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            let _ = reason;
        }
        let (_stream, answer) = send(&session, b"GET http://example.com/ HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(other.connections.load(Ordering::SeqCst), 0);
        assert_eq!(allowed.connections.load(Ordering::SeqCst), 1);

        let mut expected: Vec<String> = cases
            .iter()
            .map(|(target, reason)| format!("egress to {target} refused: {reason}"))
            .collect();
        expected.push(
            "egress to example.com:80 refused: a plain HTTP request is not allowed, only CONNECT"
                .to_owned(),
        );
        assert_eq!(session.take_log_lines(), expected);
        let counts = session.finish().await;
        assert_eq!(
            (
                counts.connections,
                counts.refused,
                counts.bytes_out,
                counts.bytes_in
            ),
            (5, 4, 10_005, 10_005)
        );
        assert_eq!(counts.limit_reached, None);
        assert_eq!(budget.counts(), counts);
    }

    #[tokio::test]
    async fn aws_names_resolving_to_loopback_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = upstream(true).await;
        let budget = EgressBudget::new(limits());
        // No DNS in tests: every name "resolves" to the loopback listener.
        let fake = vec![SocketAddr::from(([127, 0, 0, 1], listener.port))];
        let session =
            EgressSession::start_with(tmp.path(), None, aws_policy(&[]), budget, Some(fake))
                .unwrap();
        let (_stream, answer) = send(&session, &connect_head("sts.amazonaws.com:443")).await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert_eq!(
            session.take_log_lines(),
            vec!["egress to sts.amazonaws.com:443 refused: resolves to a loopback address"]
        );
        assert_eq!(listener.connections.load(Ordering::SeqCst), 0);
        for (ip, kind) in [
            ("169.254.169.254", Some("a link-local")),
            ("fe80::1", Some("a link-local")),
            ("::ffff:127.0.0.1", Some("a loopback")),
            ("::1", Some("a loopback")),
            ("0.0.0.0", Some("an unspecified")),
            ("::", Some("an unspecified")),
            ("224.0.0.1", Some("a multicast")),
            ("ff02::1", Some("a multicast")),
            ("255.255.255.255", Some("a broadcast")),
            ("10.0.0.5", None),
            ("52.94.0.1", None),
            ("2600:1f18::1", None),
        ] {
            assert_eq!(forbidden_address(ip.parse().unwrap()), kind, "{ip}");
        }
        session.finish().await;
    }

    #[tokio::test]
    async fn max_connections_and_max_concurrent_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let up = upstream(true).await;
        let extra = format!("127.0.0.1:{}", up.port);
        let caps = EgressLimits {
            max_connections: 3,
            max_concurrent_connections: 1,
            ..limits()
        };
        let (session, budget) = session(tmp.path(), aws_policy(&[&extra]), caps);

        let (mut first, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        let (_second, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert_eq!(
            budget.counts().limit_reached.as_deref(),
            Some("max_concurrent_connections")
        );
        first.write_all(b"x").await.unwrap();
        assert_eq!(read_exact_or_eof(&mut first, 1).await, b"x");
        drop(first);
        wait_for("first tunnel closed", || {
            up.closed.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_for("the slot freed", || {
            budget.concurrent.load(Ordering::SeqCst) == 0
        })
        .await;
        let (third, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        drop(third);
        wait_for("third tunnel closed", || {
            up.closed.load(Ordering::SeqCst) == 2
        })
        .await;
        // The fourth is over max_connections (3), whatever its target.
        let (_fourth, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
        assert_eq!(
            session.take_log_lines(),
            vec![
                "egress request refused: max_concurrent_connections (1) reached",
                "egress request refused: max_connections (3) reached",
            ]
        );
        let counts = session.finish().await;
        assert_eq!((counts.connections, counts.refused), (4, 2));
        // The first cap reached stays the one named.
        assert_eq!(
            counts.limit_reached.as_deref(),
            Some("max_concurrent_connections")
        );
        assert_eq!(
            budget.counts().limit_reached.as_deref(),
            Some("max_concurrent_connections")
        );
    }

    #[tokio::test]
    async fn max_connections_spans_sessions_of_one_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let up = upstream(true).await;
        let extra = format!("127.0.0.1:{}", up.port);
        let budget = EgressBudget::new(EgressLimits {
            max_connections: 1,
            ..limits()
        });
        let policy = aws_policy(&[&extra]);
        let one = EgressSession::start(tmp.path(), None, policy.clone(), budget.clone()).unwrap();
        let (stream, answer) = send(&one, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        drop(stream);
        one.finish().await;
        let two = EgressSession::start(tmp.path(), None, policy, budget.clone()).unwrap();
        let (_stream, answer) = send(&two, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        let counts = two.finish().await;
        assert_eq!((counts.connections, counts.refused), (1, 1));
        let total = budget.counts();
        assert_eq!((total.connections, total.refused), (2, 1));
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn max_bytes_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = upstream(false).await;
        let extra = format!("127.0.0.1:{}", sink.port);
        let caps = EgressLimits {
            max_bytes: 1000,
            ..limits()
        };
        let (session, budget) = session(tmp.path(), aws_policy(&[&extra]), caps);
        let (mut stream, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        let _ = stream.write_all(&[1u8; 5000]).await;
        assert!(closes(&mut stream).await, "the tunnel was not closed");
        wait_for("sink connection closed", || {
            sink.closed.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(sink.received.load(Ordering::SeqCst), 1000);
        assert_eq!(
            session.take_log_lines(),
            vec![format!(
                "egress to {extra} refused: max_bytes (1000) reached"
            )]
        );
        // Every byte is spent: the next connection is refused before its head is read.
        let (_next, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert_eq!(
            session.take_log_lines(),
            vec!["egress request refused: max_bytes (1000) reached"]
        );
        assert_eq!(sink.connections.load(Ordering::SeqCst), 1);
        let counts = session.finish().await;
        assert_eq!(counts.bytes_out, 1000);
        assert_eq!((counts.connections, counts.refused), (2, 1));
        assert_eq!(counts.limit_reached.as_deref(), Some("max_bytes"));
        assert_eq!(budget.counts().limit_reached.as_deref(), Some("max_bytes"));
    }

    #[tokio::test]
    async fn max_connection_seconds_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let up = upstream(true).await;
        let extra = format!("127.0.0.1:{}", up.port);
        let caps = EgressLimits {
            max_connection_seconds: 1,
            connect_timeout_seconds: 1,
            ..limits()
        };
        let (session, _budget) = session(tmp.path(), aws_policy(&[&extra]), caps);
        let started = Instant::now();
        let (mut stream, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(closes(&mut stream).await, "the idle tunnel was not closed");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        wait_for("upstream side closed", || {
            up.closed.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            session.take_log_lines(),
            vec![format!(
                "egress to {extra} refused: max_connection_seconds (1) reached"
            )]
        );
        let counts = session.finish().await;
        assert_eq!(
            counts.limit_reached.as_deref(),
            Some("max_connection_seconds")
        );
    }

    #[tokio::test]
    async fn slow_oversized_and_malformed_heads_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let emu = upstream(true).await;
        let caps = EgressLimits {
            connect_timeout_seconds: 1,
            ..limits()
        };
        let (session, _budget) = session(tmp.path(), emulator_policy(emu.port), caps);
        let started = Instant::now();
        let (_slow, answer) = send(&session, b"CONNECT 127.0.0.1:").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        let mut big = b"GET /".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        let (_big, answer) = send(&session, &big).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (_bad, answer) = send(&session, b"GET / HTTP/2.0\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (_bad, answer) = send(&session, b"\x01\x02 / HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert_eq!(
            session.take_log_lines(),
            vec![
                "egress request refused: no complete request head within 1 s",
                "egress request refused: the request head is over 8192 bytes",
                "egress request refused: the version is not HTTP/1.0 or HTTP/1.1",
                "egress request refused: the method is not a token",
            ]
        );
        assert_eq!(emu.connections.load(Ordering::SeqCst), 0);
        let counts = session.finish().await;
        assert_eq!((counts.connections, counts.refused), (4, 4));
    }

    #[tokio::test]
    async fn log_lines_are_bounded_and_sanitized() {
        let tmp = tempfile::tempdir().unwrap();
        let (session, _budget) = session(tmp.path(), aws_policy(&[]), limits());
        let long = format!("{}\u{202e}.evil.com:443", "a".repeat(500));
        let (_s, answer) = send(&session, &connect_head(&long)).await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        let lines = session.take_log_lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].chars().count() <= 300, "{}", lines[0]);
        assert!(!lines[0].contains('\u{202e}'), "{}", lines[0]);
        assert!(lines[0].starts_with("egress to aaaa"), "{}", lines[0]);
        for _ in 0..(MAX_LOG_LINES + 4) {
            let (_s, answer) = send(&session, &connect_head("example.com:443")).await;
            assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        }
        let lines = session.take_log_lines();
        assert_eq!(lines.len(), MAX_LOG_LINES);
        assert_eq!(lines.last().unwrap(), "... 5 more egress refusals");
        let counts = session.finish().await;
        assert_eq!(counts.refused, u64::try_from(MAX_LOG_LINES + 5).unwrap());
    }

    #[tokio::test]
    async fn finish_ends_connections_and_removes_socket_and_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let up = upstream(true).await;
        let extra = format!("127.0.0.1:{}", up.port);
        let (session, _budget) = session(tmp.path(), aws_policy(&[&extra]), limits());
        let dir = session.host_dir().to_owned();
        let socket = session.socket_path().to_owned();
        assert_eq!(socket, dir.join(SOCKET_NAME));
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o711);
        assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o7777, 0o666);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "the folder holds only the socket");
        let (mut open, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        session.finish().await;
        assert!(closes(&mut open).await, "an open tunnel outlived finish");
        wait_for("upstream side closed", || {
            up.closed.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(!socket.exists() && !dir.exists());
        assert!(UnixStream::connect(&socket).await.is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn drop_without_finish_removes_socket_and_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let up = upstream(true).await;
        let extra = format!("127.0.0.1:{}", up.port);
        let (session, _budget) = session(tmp.path(), aws_policy(&[&extra]), limits());
        let dir = session.host_dir().to_owned();
        let socket = session.socket_path().to_owned();
        let (mut open, answer) = send(&session, &connect_head(&extra)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        drop(session);
        assert!(!socket.exists() && !dir.exists());
        assert!(UnixStream::connect(&socket).await.is_err());
        assert!(closes(&mut open).await, "an open tunnel outlived the drop");
    }

    #[tokio::test]
    async fn start_checks_path_length_parent_and_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let budget = EgressBudget::new(limits());
        let long = tmp.path().join("x".repeat(100));
        let err = EgressSession::start(&long, None, aws_policy(&[]), budget.clone()).unwrap_err();
        assert!(
            matches!(err, EgressError::SocketPathTooLong { .. }),
            "{err}"
        );
        assert!(!long.exists(), "nothing is created for a path too long");

        // A missing parent is created (0711); the socket goes to its owner with 0600.
        let parent = tmp.path().join("run").join("egress");
        let owner = (current_euid(), unsafe { libc::getegid() });
        let session =
            EgressSession::start(&parent, Some(owner), aws_policy(&[]), budget.clone()).unwrap();
        assert_eq!(std::fs::metadata(&parent).unwrap().mode() & 0o777, 0o711);
        let socket = std::fs::metadata(session.socket_path()).unwrap();
        assert_eq!(socket.mode() & 0o7777, 0o600);
        assert_eq!((socket.uid(), socket.gid()), owner);
        session.finish().await;
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = EgressSession::start(&open, None, aws_policy(&[]), budget.clone()).unwrap_err();
        assert!(matches!(err, EgressError::UnsafeDir { .. }), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&parent, &link).unwrap();
        let err = EgressSession::start(&link, None, aws_policy(&[]), budget).unwrap_err();
        assert!(matches!(err, EgressError::UnsafeDir { .. }), "{err}");
    }

    #[tokio::test]
    async fn as_root_the_socket_goes_to_the_container_user() {
        if current_euid() != 0 {
            println!("SKIPPED: chown to another uid needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let budget = EgressBudget::new(limits());
        let session =
            EgressSession::start(tmp.path(), Some((10001, 10001)), aws_policy(&[]), budget)
                .unwrap();
        let socket = std::fs::metadata(session.socket_path()).unwrap();
        assert_eq!((socket.uid(), socket.gid()), (10001, 10001));
        assert_eq!(socket.mode() & 0o7777, 0o600);
        let dir = std::fs::metadata(session.host_dir()).unwrap();
        assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o711));
        session.finish().await;
    }

    #[test]
    fn start_outside_a_runtime_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let err = EgressSession::start(
            tmp.path(),
            None,
            aws_policy(&[]),
            EgressBudget::new(limits()),
        )
        .unwrap_err();
        assert!(matches!(err, EgressError::NoRuntime), "{err}");
    }

    #[test]
    fn default_dir_and_clipping() {
        let dir = default_egress_dir();
        assert!(
            dir.is_absolute() && dir.ends_with("egress"),
            "{}",
            dir.display()
        );
        assert_eq!(clip_for_log("a\nb\u{7f}c", 10), "a?b?c");
        assert_eq!(clip_for_log("abcdef", 4), "abc…");
        assert_eq!(clip_for_log("é\u{202e}x", 3), "??x");
    }

    #[test]
    fn budget_grants_exactly_max_bytes() {
        let budget = EgressBudget::new(EgressLimits {
            max_bytes: 10,
            ..EgressLimits::default()
        });
        assert_eq!(budget.grant(4), 4);
        assert_eq!(budget.grant(4), 4);
        assert_eq!(budget.grant(4), 2);
        assert_eq!(budget.grant(4), 0);
    }
}
