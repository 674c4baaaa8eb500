//! The sandbox: one fresh, hardened container per execution, behind the [`Backend`] seam.
//!
//! Every setting that matters for safety is fixed here from the operator's [`SandboxConfig`]; a
//! job can only lower the memory limit and choose its timeout. The container's lifecycle —
//! create, attach, start, feed stdin, drain output, wait, inspect, remove — has a deadline at
//! every step, and removal happens on every path: success, error, cancellation, and (through a
//! drop guard) when the caller abandons the future.
//!
//! [`Backend`] is what the runner ([`crate::execute`]) and the warm pool ([`crate::pool`]) need of
//! a container engine. [`Engine`] (`docker.rs`) is the Docker implementation and the only code in
//! the crate that names bollard (image building and import go through it too);
//! [`fake::FakeBackend`] is a recording test double that writes real protocol frames.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::result::KillReason;

mod docker;
#[doc(hidden)]
pub mod fake;
mod unavailable;

pub use docker::{Engine, ImageDetails};
pub use unavailable::Unavailable;

/// Label carrying the execution id, on every container scriptbox creates.
pub const LABEL_EXECUTION: &str = "scriptbox.execution";
/// Label naming the scriptbox process that owns the container (`host:pid:start-time`).
pub const LABEL_OWNER: &str = "scriptbox.daemon";
/// Label with the Unix time after which the container is certainly abandoned.
pub const LABEL_DEADLINE: &str = "scriptbox.deadline";

/// The operator's sandbox settings. Requests never choose these; they can only lower memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Numeric non-root `uid:gid` the handler runs as.
    pub user: String,
    /// OCI runtime: `runc` (default) or `runsc` (gVisor).
    pub container_runtime: String,
    /// Docker network; `none` (the default) leaves only a loopback interface.
    pub network: String,
    /// Memory limit, bytes; swap is set equal so there is none. tmpfs pages count against it.
    pub memory_bytes: i64,
    /// CPU quota in units of 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Processes and threads in the container (runc).
    pub pids_limit: i64,
    /// The pids limit under runsc. gVisor's sentry counts its own host threads against the
    /// container's pids cgroup, so the runc value would starve it; guest processes are then
    /// bounded by the memory limit and the deadline (measured by the adversarial suite).
    pub runsc_pids_limit: i64,
    /// Size of the `/tmp` tmpfs.
    pub tmpfs_bytes: u64,
    /// Inodes of the `/tmp` tmpfs.
    pub tmpfs_inodes: u64,
    /// `/dev/shm` size.
    pub shm_bytes: i64,
    /// Open files per process.
    pub nofile: i64,
    /// Largest file a process may write.
    pub fsize_bytes: i64,
    /// Bytes of stdout plus stderr read before the container is killed.
    pub output_limit_bytes: u64,
    /// Deadline of each Docker call (create, attach, start, inspect, remove).
    pub docker_call_timeout_secs: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            user: "10001:10001".into(),
            container_runtime: "runc".into(),
            network: "none".into(),
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids_limit: 128,
            runsc_pids_limit: 1024,
            tmpfs_bytes: 128 * 1024 * 1024,
            tmpfs_inodes: 16 * 1024,
            shm_bytes: 16 * 1024 * 1024,
            nofile: 1024,
            fsize_bytes: 128 * 1024 * 1024,
            output_limit_bytes: 16 * 1024 * 1024,
            docker_call_timeout_secs: 30,
        }
    }
}

impl SandboxConfig {
    /// The pids limit for the configured container runtime.
    pub fn effective_pids_limit(&self) -> i64 {
        if self.container_runtime == "runsc" {
            self.runsc_pids_limit
        } else {
            self.pids_limit
        }
    }
}

/// Errors of one Docker operation, each with its context.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No engine answered.
    #[error(
        "cannot reach the Docker engine ({endpoint}): {source}. Start dockerd, or set DOCKER_HOST"
    )]
    Connect {
        /// Where we looked.
        endpoint: String,
        /// The client's error.
        source: DockerError,
    },
    /// The runtime's image is not in the engine.
    #[error("image {image} is not present; build it with `scriptbox images build {runtime}`")]
    ImageMissing {
        /// The image.
        image: String,
        /// The runtime it serves.
        runtime: String,
    },
    /// A Docker call failed.
    #[error("docker {operation} failed for {subject}: {source}")]
    Call {
        /// `create`, `attach`, `start`, `kill`, `inspect`, `remove`, `list`...
        operation: &'static str,
        /// The container or image.
        subject: String,
        /// The client's error.
        source: DockerError,
    },
    /// There is no container engine (a run of work that needs none, such as `scriptbox run` of
    /// a runbook without executeScript steps, where Docker is not reachable).
    #[error("no container engine is available: start dockerd, or set DOCKER_HOST")]
    Unavailable,
    /// The engine refused or failed, in its own words (an image build or import, or a test
    /// double's scripted failure).
    #[error("{0}")]
    Refused(String),
    /// A Docker call did not answer within its deadline.
    #[error("docker {operation} for {subject} did not answer within {seconds} s")]
    Deadline {
        /// The operation.
        operation: &'static str,
        /// The container or image.
        subject: String,
        /// The deadline.
        seconds: u64,
    },
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The container's stdout (protocol frames).
    Stdout,
    /// The container's stderr (raw log).
    Stderr,
}

/// What an observer wants after seeing output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Kill the container for this reason.
    Kill(KillReason),
    /// The result is complete: nothing after it matters to the execution.
    ResultComplete,
}

/// Receives the container's output as it arrives.
pub trait OutputObserver: Send {
    /// Called for every chunk, in arrival order.
    fn on_output(&mut self, stream: OutputStream, bytes: &[u8]) -> Flow;
}

/// One container run.
#[derive(Clone)]
pub struct ContainerJob {
    /// The execution id (label and container name).
    pub execution_id: String,
    /// The image.
    pub image: String,
    /// The runtime name, for messages.
    pub runtime: String,
    /// The bootstrap command.
    pub command: Vec<String>,
    /// Environment from the allowlist (never the host's).
    pub env: Vec<String>,
    /// The full stdin stream.
    pub stdin: Vec<u8>,
    /// Time from start until SIGKILL.
    pub timeout: Duration,
    /// A lower memory limit than the configured one, if asked for.
    pub memory_bytes: Option<i64>,
    /// The execution's AWS egress folder on the host (one socket), mounted read-only at
    /// [`crate::egress::CONTAINER_DIR`]; `None` (no mount at all) unless AWS access is on.
    pub egress_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ContainerJob {
    /// Everything but the stdin bytes, which may carry a step's temporary credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerJob")
            .field("execution_id", &self.execution_id)
            .field("image", &self.image)
            .field("runtime", &self.runtime)
            .field("command", &self.command)
            .field("env", &self.env)
            .field("stdin_bytes", &self.stdin.len())
            .field("timeout", &self.timeout)
            .field("memory_bytes", &self.memory_bytes)
            .field("egress_dir", &self.egress_dir)
            .finish()
    }
}

/// What happened to a container, from Docker and the host's clocks.
#[derive(Debug, Clone, Default)]
pub struct ContainerOutcome {
    /// The container id.
    pub container_id: String,
    /// Exit code from Docker (inspect).
    pub exit_code: Option<i64>,
    /// Docker inspect's `OOMKilled`.
    pub oom_killed: bool,
    /// Why scriptbox killed it, if it did.
    pub kill_reason: Option<KillReason>,
    /// Bytes read from stdout and stderr.
    pub output_bytes: u64,
    /// True when the stdin stream could not be delivered whole (the container did not read it).
    pub stdin_incomplete: bool,
    /// Creation to removal.
    pub total: Duration,
    /// Start until exit.
    pub run: Duration,
}

/// Identifies this scriptbox process on this host, so a sweep can tell dead owners from live ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerId {
    /// Host identity (`/etc/machine-id` or hostname).
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (guards against pid reuse).
    pub start_ticks: u64,
}

impl OwnerId {
    /// The current process.
    pub fn current() -> Self {
        let pid = std::process::id();
        OwnerId {
            host: host_identity(),
            pid,
            start_ticks: process_start_ticks(pid).unwrap_or(0),
        }
    }

    /// The label value.
    pub fn label(&self) -> String {
        format!("{}:{}:{}", self.host, self.pid, self.start_ticks)
    }

    /// Parses a label value.
    pub fn parse(label: &str) -> Option<Self> {
        let mut parts = label.rsplitn(3, ':');
        let start_ticks = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_string();
        Some(OwnerId {
            host,
            pid,
            start_ticks,
        })
    }

    /// True when this owner is a process on this host that is still running.
    /// Owners on other hosts are reported alive: only their deadline can retire them.
    pub fn is_alive(&self) -> bool {
        if self.host != host_identity() {
            return true;
        }
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }
}

fn host_identity() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown-host".into())
            .replace(':', "_")
    })
    .clone()
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks after boot; `None` for a
/// process that is gone or a zombie.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // A zombie has exited; only its parent has not reaped it yet: it owns nothing any more.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// A container started ahead of its execution, its bootstrap blocked reading stdin.
#[derive(Debug)]
pub struct PrestartedContainer {
    /// The Docker id.
    pub id: String,
    /// The execution id on its `scriptbox.execution` label, which its execution adopts.
    pub execution_id: String,
    /// When it was started.
    pub created_at: Instant,
}

/// Docker's facts about a container that exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitFacts {
    /// The exit code.
    pub exit_code: Option<i64>,
    /// Docker inspect's `OOMKilled`.
    pub oom_killed: bool,
}

/// The removal of a finished container, possibly still running in the background.
#[derive(Debug)]
pub struct Removal(Option<tokio::task::JoinHandle<Result<Option<ExitFacts>, SandboxError>>>);

impl Removal {
    /// Nothing to remove (no container was created).
    pub fn nothing() -> Removal {
        Removal(None)
    }

    /// Waits until the container is removed. After an early result (warm runs) it also gives
    /// Docker's exit facts, which the outcome could not carry yet.
    pub async fn finish(self) -> Result<Option<ExitFacts>, SandboxError> {
        match self.0 {
            None => Ok(None),
            Some(handle) => handle.await.unwrap_or(Ok(None)),
        }
    }
}

/// What a sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Containers removed.
    pub removed: Vec<String>,
    /// Containers still owned by a live scriptbox, left alone.
    pub kept: usize,
}

/// `--cpus` of `nano_cpus` (units of 1e-9 CPUs), in decimal without trailing zeros (`1.5`).
fn cpus_flag(nano_cpus: i64) -> String {
    let (whole, frac) = (nano_cpus / 1_000_000_000, (nano_cpus % 1_000_000_000).abs());
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The `docker run --rm -i` arguments equivalent to [`Engine::container_spec`] for `image` and
/// `command` (the benchmarks compare scriptbox with exactly this; labels are left out).
pub fn docker_run_equivalent(
    config: &SandboxConfig,
    image: &str,
    command: &[String],
) -> Vec<String> {
    let c = config;
    let mut args: Vec<String> = ["run", "--rm", "-i", "--read-only", "--tmpfs"]
        .map(String::from)
        .to_vec();
    args.push(format!(
        "/tmp:rw,nosuid,nodev,noexec,size={},nr_inodes={},mode=1777",
        c.tmpfs_bytes, c.tmpfs_inodes
    ));
    let pairs = [
        ("--user", c.user.clone()),
        ("--cap-drop", "ALL".into()),
        ("--security-opt", "no-new-privileges:true".into()),
        ("--network", c.network.clone()),
        ("--memory", c.memory_bytes.to_string()),
        ("--memory-swap", c.memory_bytes.to_string()),
        ("--cpus", cpus_flag(c.nano_cpus)),
        ("--pids-limit", c.effective_pids_limit().to_string()),
        ("--ulimit", format!("nofile={0}:{0}", c.nofile)),
        ("--ulimit", format!("fsize={0}:{0}", c.fsize_bytes)),
        ("--ulimit", "core=0:0".into()),
        ("--log-driver", "none".into()),
        ("--shm-size", c.shm_bytes.to_string()),
        ("--ipc", "private".into()),
        ("--runtime", c.container_runtime.clone()),
        ("-e", "HOME=/tmp".into()),
        ("-e", "LANG=C.UTF-8".into()),
        ("-w", "/tmp".into()),
    ];
    for (flag, value) in pairs {
        args.push(flag.into());
        args.push(value);
    }
    args.push("--init".into());
    args.push(image.into());
    args.extend(command.iter().cloned());
    args
}

/// A container the backend holds, as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldContainer {
    /// The backend's id.
    pub id: String,
    /// Its `scriptbox.execution` label.
    pub execution_id: Option<String>,
    /// Its `scriptbox.daemon` label (the owner).
    pub owner: Option<String>,
    /// Every label.
    pub labels: HashMap<String, String>,
}

/// What running steps needs of a container engine: the seam between the runner and the warm
/// pool on one side and Docker (or a test double) on the other. Every call has a deadline.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The sandbox settings in force.
    fn config(&self) -> &SandboxConfig;

    /// The same backend (connection, owner, cleanup) with other sandbox settings: a daemon
    /// request's lowered limits.
    fn with_sandbox(&self, config: SandboxConfig) -> Arc<dyn Backend>;

    /// Whether the engine answers, within the call deadline.
    fn ping(&self) -> BoxFuture<'_, Result<(), SandboxError>>;

    /// Creates and starts a container ahead of its execution (the warm pool): its bootstrap
    /// blocks reading its request on stdin. It is used once by [`Backend::run`], then removed.
    fn prestart<'a>(
        &'a self,
        job: &'a ContainerJob,
    ) -> BoxFuture<'a, Result<PrestartedContainer, SandboxError>>;

    /// Runs one job, in `prestarted` (whose execution id must be the job's) or a new container,
    /// feeding its output to `observer`; `cancel` kills it.
    ///
    /// With `defer_removal`, the outcome is returned as soon as the observer has the whole
    /// result, and the rest (exit, Docker's exit facts, removal) happens in the background; the
    /// [`Removal`] completes when the container is gone. Otherwise everything is done first.
    fn run<'a>(
        &'a self,
        prestarted: Option<PrestartedContainer>,
        job: ContainerJob,
        observer: &'a mut dyn OutputObserver,
        cancel: &'a CancellationToken,
        defer_removal: bool,
    ) -> BoxFuture<'a, Result<(ContainerOutcome, Removal), SandboxError>>;

    /// Force-removes a container; one already gone counts as removed.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// The containers `owner` (an [`OwnerId::label`]) holds; every scriptbox container when
    /// `owner` is `None`.
    fn held<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<HeldContainer>, SandboxError>>;

    /// Removes containers left behind by a dead scriptbox (dead owner or past its deadline).
    fn sweep(&self) -> BoxFuture<'_, Result<SweepReport, SandboxError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_read_as_the_float_docker_takes() {
        for (nano, want) in [
            (1_000_000_000, "1"),
            (1_500_000_000, "1.5"),
            (250_000_000, "0.25"),
            (10_000_000, "0.01"),
            (3_000_000_007, "3.000000007"),
        ] {
            assert_eq!(cpus_flag(nano), want);
        }
    }

    #[test]
    fn the_docker_run_equivalent_carries_every_limit() {
        let c = SandboxConfig::default();
        let args = docker_run_equivalent(&c, "img", &["python3".into()]).join(" ");
        for want in [
            "--read-only".to_string(),
            format!("--memory {0} --memory-swap {0}", c.memory_bytes),
            format!("--pids-limit {}", c.pids_limit),
            "--network none".into(),
            "--cap-drop ALL".into(),
            "--security-opt no-new-privileges:true".into(),
            "--log-driver none".into(),
            "--init img python3".into(),
        ] {
            assert!(args.contains(&want), "{want} missing from {args}");
        }
    }

    #[test]
    fn owner_labels_round_trip_and_detect_the_living() {
        let me = OwnerId::current();
        assert!(me.start_ticks > 0);
        let parsed = OwnerId::parse(&me.label()).unwrap();
        assert_eq!(parsed, me);
        assert!(parsed.is_alive());
        let reused = OwnerId {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive(), "a reused pid must not look alive");
        let elsewhere = OwnerId {
            host: "other-host".into(),
            ..me
        };
        assert!(
            elsewhere.is_alive(),
            "other hosts are retired by deadline only"
        );
        assert!(OwnerId::parse("garbage").is_none());
    }
}
