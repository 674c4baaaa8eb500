//! The sandbox: one fresh, hardened container per execution. The only module that talks to Docker.
//!
//! Every setting that matters for safety is fixed here from the operator's [`SandboxConfig`]; a
//! job can only lower the memory limit and choose its timeout. The container's lifecycle —
//! create, attach, start, feed stdin, drain output, wait, inspect, remove — has a deadline at
//! every step, and removal happens on every path: success, error, cancellation, and (through a
//! drop guard) when the caller abandons the future.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::result::KillReason;

/// Label carrying the execution id, on every container scriptbox creates.
pub const LABEL_EXECUTION: &str = "scriptbox.execution";
/// Label naming the scriptbox process that owns the container (`host:pid:start-time`).
pub const LABEL_OWNER: &str = "scriptbox.daemon";
/// Label with the Unix time after which the container is certainly abandoned.
pub const LABEL_DEADLINE: &str = "scriptbox.deadline";
/// Extra time past a job's timeout before its container counts as abandoned.
const ABANDON_GRACE: Duration = Duration::from_secs(120);
/// How long output may keep arriving after the container exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long a container may take to exit after it wrote its result (the bootstrap exits at once).
const EXIT_AFTER_RESULT: Duration = Duration::from_secs(5);
/// How long a killed container may take to be reported as exited.
const EXIT_AFTER_KILL: Duration = Duration::from_secs(15);
/// How far past the exit Docker's event log is read for a kill by someone else.
const KILL_EVENT_MARGIN: Duration = Duration::from_millis(250);

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
#[derive(Debug, Clone)]
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

/// A connection to the Docker engine plus the sandbox settings.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    config: Arc<SandboxConfig>,
    owner: Arc<OwnerId>,
    cleanup: TaskTracker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
        ("--cpus", format!("{}", c.nano_cpus as f64 / 1e9)),
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

/// Runs a Docker call under a deadline, mapping both failure kinds to [`SandboxError`].
async fn call<T>(
    operation: &'static str,
    subject: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, DockerError>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SandboxError::Call {
            operation,
            subject: subject.to_string(),
            source,
        }),
        Err(_) => Err(SandboxError::Deadline {
            operation,
            subject: subject.to_string(),
            seconds: limit.as_secs(),
        }),
    }
}

/// The length of a chunk of output as the byte counters hold it.
fn byte_count(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version.
    pub async fn connect(config: SandboxConfig) -> Result<Self, SandboxError> {
        let endpoint =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let docker = Docker::connect_with_defaults().map_err(|source| SandboxError::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        // negotiate_version asks the engine: it is also our liveness check.
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| SandboxError::Deadline {
                operation: "version",
                subject: endpoint.clone(),
                seconds: 10,
            })?
            .map_err(|source| SandboxError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok(Engine {
            docker,
            config: Arc::new(config),
            owner: Arc::new(OwnerId::current()),
            cleanup: TaskTracker::new(),
        })
    }

    /// The sandbox settings in force.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The same engine connection and owner with other sandbox settings (a daemon request's
    /// lowered limits).
    pub fn with_config(&self, config: SandboxConfig) -> Engine {
        Engine {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    /// The underlying client, for image building (`images`) only.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn call_limit(&self) -> Duration {
        Duration::from_secs(self.config.docker_call_timeout_secs.max(1))
    }

    /// Whether an image is present, and its labels if so.
    pub async fn image_labels(
        &self,
        image: &str,
    ) -> Result<Option<HashMap<String, String>>, SandboxError> {
        match tokio::time::timeout(self.call_limit(), self.docker.inspect_image(image)).await {
            Ok(Ok(found)) => Ok(Some(
                found.config.and_then(|c| c.labels).unwrap_or_default(),
            )),
            Ok(Err(e)) if is_not_found(&e) => Ok(None),
            Ok(Err(source)) => Err(SandboxError::Call {
                operation: "inspect image",
                subject: image.into(),
                source,
            }),
            Err(_) => Err(SandboxError::Deadline {
                operation: "inspect image",
                subject: image.into(),
                seconds: self.call_limit().as_secs(),
            }),
        }
    }

    /// The container create body: every hardening setting of `docs/sandbox.md`.
    pub fn container_spec(&self, job: &ContainerJob) -> ContainerCreateBody {
        let c = &self.config;
        let memory = job
            .memory_bytes
            .map(|m| m.min(c.memory_bytes))
            .unwrap_or(c.memory_bytes);
        // Checked: a timeout too large for the clock must not panic; such a container is
        // abandoned only when its owner dies.
        let deadline = SystemTime::now()
            .checked_add(job.timeout)
            .and_then(|t| t.checked_add(ABANDON_GRACE))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        let labels = HashMap::from([
            (LABEL_EXECUTION.to_string(), job.execution_id.clone()),
            (LABEL_OWNER.to_string(), self.owner.label()),
            (LABEL_DEADLINE.to_string(), deadline.to_string()),
            ("scriptbox.runtime".to_string(), job.runtime.clone()),
        ]);
        let ulimit = |name: &str, value: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(value),
            hard: Some(value),
        };
        let tmpfs_options = format!(
            "rw,nosuid,nodev,noexec,size={},nr_inodes={},mode=1777",
            c.tmpfs_bytes, c.tmpfs_inodes
        );
        let host_config = HostConfig {
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_string(), tmpfs_options)])),
            shm_size: Some(c.shm_bytes),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            privileged: Some(false),
            network_mode: Some(c.network.clone()),
            memory: Some(memory),
            memory_swap: Some(memory),
            oom_kill_disable: Some(false),
            nano_cpus: Some(c.nano_cpus),
            pids_limit: Some(c.effective_pids_limit()),
            init: Some(true),
            ulimits: Some(vec![
                ulimit("nofile", c.nofile),
                ulimit("fsize", c.fsize_bytes),
                ulimit("core", 0),
            ]),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            auto_remove: Some(false),
            mounts: Some(vec![]),
            binds: Some(vec![]),
            runtime: Some(c.container_runtime.clone()),
            ipc_mode: Some("private".into()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(job.image.clone()),
            cmd: Some(job.command.clone()),
            entrypoint: Some(vec![]),
            env: Some(job.env.clone()),
            user: Some(c.user.clone()),
            working_dir: Some("/tmp".into()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // With StdinOnce, shutting our side down delivers EOF to the bootstrap.
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(c.network == "none"),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Creates a container for a job (not started). Its labels carry the job's execution id.
    async fn create(&self, job: &ContainerJob) -> Result<String, SandboxError> {
        // Unique even when an execution is retried in a second container (a stale pooled one
        // may still be on its way out under the same execution id).
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("scriptbox-{}-{}", job.execution_id, &suffix[..8]);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = call(
            "create",
            &name,
            self.call_limit(),
            self.docker
                .create_container(Some(options), self.container_spec(job)),
        )
        .await
        .map_err(|e| match e {
            SandboxError::Call { source, .. } if is_not_found(&source) => {
                SandboxError::ImageMissing {
                    image: job.image.clone(),
                    runtime: job.runtime.clone(),
                }
            }
            other => other,
        })?;
        Ok(created.id)
    }

    /// Creates and starts a container ahead of its execution (the warm pool): its bootstrap
    /// starts, imports what every handler pays for, and blocks reading its request on stdin.
    /// Nothing is attached yet; the container is used once by [`Engine::run_with`], then removed.
    pub async fn prestart(&self, job: &ContainerJob) -> Result<PrestartedContainer, SandboxError> {
        let id = self.create(job).await?;
        let mut guard = RemovalGuard {
            engine: Some(self.clone()),
            id: id.clone(),
        };
        call(
            "start",
            &id,
            self.call_limit(),
            self.docker.start_container(&id, None),
        )
        .await?;
        guard.disarm();
        Ok(PrestartedContainer {
            id,
            execution_id: job.execution_id.clone(),
            created_at: Instant::now(),
        })
    }

    /// Runs one job in a fresh container and removes it, whatever happens.
    pub async fn run(
        &self,
        job: ContainerJob,
        observer: &mut dyn OutputObserver,
        cancel: &CancellationToken,
    ) -> Result<ContainerOutcome, SandboxError> {
        let (outcome, removal) = self.run_with(None, job, observer, cancel, false).await?;
        removal.finish().await?;
        Ok(outcome)
    }

    /// Runs one job, in `prestarted` (whose execution id must be the job's) or a new container.
    ///
    /// With `defer_removal`, the outcome is returned as soon as the result frame is complete
    /// (the observer says so), and the rest — waiting for the exit, Docker's exit facts, removal —
    /// happens in the background, off the request path; the returned [`Removal`] completes when
    /// the container is gone and carries the exit facts (a caller holding a concurrency permit
    /// keeps it until then). Otherwise everything is done before this returns.
    pub async fn run_with(
        &self,
        prestarted: Option<PrestartedContainer>,
        job: ContainerJob,
        observer: &mut dyn OutputObserver,
        cancel: &CancellationToken,
        defer_removal: bool,
    ) -> Result<(ContainerOutcome, Removal), SandboxError> {
        let created_at = Instant::now();
        let (id, start) = match prestarted {
            Some(c) => (c.id, false),
            None => (self.create(&job).await?, true),
        };
        // If this future is dropped mid-run, the guard still removes the container.
        let mut guard = RemovalGuard {
            engine: Some(self.clone()),
            id: id.clone(),
        };
        let driven = self
            .drive(&id, job, observer, cancel, start, defer_removal)
            .await;
        if defer_removal && let Ok((outcome, exited)) = &driven {
            guard.disarm();
            let engine = self.clone();
            let removing = id.clone();
            let exited = *exited;
            let handle = self.cleanup.spawn(async move {
                if exited {
                    engine.remove(&removing).await.map(|()| None)
                } else {
                    engine.finish_after_result(&removing).await.map(Some)
                }
            });
            let mut outcome = outcome.clone();
            outcome.total = created_at.elapsed();
            return Ok((outcome, Removal(Some(handle))));
        }
        let removed = self.remove(&id).await;
        if removed.is_ok() {
            guard.disarm();
        }
        let (mut outcome, _) = driven?;
        removed?;
        outcome.total = created_at.elapsed();
        Ok((outcome, Removal(None)))
    }

    /// Attach, start, feed stdin, drain output, enforce the deadline, wait, inspect.
    async fn drive(
        &self,
        id: &str,
        job: ContainerJob,
        observer: &mut dyn OutputObserver,
        cancel: &CancellationToken,
        start: bool,
        early_result: bool,
    ) -> Result<(ContainerOutcome, bool), SandboxError> {
        let limit = self.call_limit();
        // Docker's events from here on are this execution's (a pooled container's wait before
        // it is not).
        let driven_since = SystemTime::now();
        let attach_options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = call(
            "attach",
            id,
            limit,
            self.docker.attach_container(id, Some(attach_options)),
        )
        .await?;
        let mut output = attached.output;
        let mut input = attached.input;
        if start {
            call("start", id, limit, self.docker.start_container(id, None)).await?;
        }
        // The deadline counts from the moment the request can be delivered.
        let started = Instant::now();
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let deadline = started
            .checked_add(job.timeout)
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far)
            .min(far);

        let stdin = job.stdin;
        let feed = async move {
            input.write_all(&stdin).await?;
            input.flush().await?;
            input.shutdown().await
        };
        tokio::pin!(feed);
        let mut wait = self.docker.wait_container(id, None);

        let mut outcome = ContainerOutcome {
            container_id: id.to_string(),
            ..Default::default()
        };
        let mut feeding = true;
        let mut output_open = true;
        let mut exited_at: Option<tokio::time::Instant> = None;
        let mut killed_at: Option<tokio::time::Instant> = None;
        // The kill call runs *beside* the output drain: dockerd finishes a killed container only
        // after its output copy is done, so awaiting the kill without reading would deadlock.
        let mut kill_call: Option<PendingCall<'_>> = None;

        // Set when the observer has the whole result: from then on the execution's outcome is
        // decided, and nothing the container does (late frames, floods, overstaying) changes it.
        let mut result_at: Option<tokio::time::Instant> = None;
        loop {
            if exited_at.is_some() && !output_open {
                break;
            }
            if result_at.is_some() && early_result && outcome.kill_reason.is_none() {
                break;
            }
            let drain_until = exited_at.map(|t| t + DRAIN_AFTER_EXIT).unwrap_or(far);
            let give_up_at = killed_at.map(|t| t + EXIT_AFTER_KILL).unwrap_or(far);
            let overstay_at = result_at.map(|t| t + EXIT_AFTER_RESULT).unwrap_or(far);
            let undecided =
                outcome.kill_reason.is_none() && exited_at.is_none() && result_at.is_none();
            let mut kill: Option<KillReason> = None;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if undecided => {
                    kill = Some(KillReason::Cancelled);
                }
                _ = tokio::time::sleep_until(deadline), if undecided => {
                    kill = Some(KillReason::Timeout);
                }
                chunk = output.next(), if output_open => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        outcome.output_bytes = outcome.output_bytes.saturating_add(byte_count(&message));
                        match observer.on_output(OutputStream::Stdout, &message) {
                            // After the result nothing the container sends may kill it.
                            _ if result_at.is_some() => {}
                            Flow::Kill(r) => kill = Some(r),
                            Flow::ResultComplete => result_at = Some(tokio::time::Instant::now()),
                            Flow::Continue => {}
                        }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        outcome.output_bytes = outcome.output_bytes.saturating_add(byte_count(&message));
                        match observer.on_output(OutputStream::Stderr, &message) {
                            // After the result nothing the container sends may kill it.
                            _ if result_at.is_some() => {}
                            Flow::Kill(r) => kill = Some(r),
                            Flow::ResultComplete => result_at = Some(tokio::time::Instant::now()),
                            Flow::Continue => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => output_open = false,
                },
                _ = tokio::time::sleep_until(overstay_at), if result_at.is_some() && killed_at.is_none() && exited_at.is_none() => {
                    // The bootstrap exits right after its result; a container that stays is
                    // killed, without a kill reason: the result it gave stands.
                    killed_at = Some(tokio::time::Instant::now());
                    kill_call = Some(Box::pin(self.kill(id)));
                }
                fed = &mut feed, if feeding => {
                    feeding = false;
                    if fed.is_err() {
                        outcome.stdin_incomplete = true;
                    }
                }
                waited = wait.next(), if exited_at.is_none() => {
                    exited_at = Some(tokio::time::Instant::now());
                    outcome.run = started.elapsed();
                    outcome.exit_code = match waited {
                        Some(Ok(r)) => Some(r.status_code),
                        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code),
                        _ => None,
                    };
                }
                _ = tokio::time::sleep_until(drain_until), if exited_at.is_some() => {
                    // The stream normally ends ~30 ms after exit; never wait on it forever.
                    output_open = false;
                }
                killed = async {
                    match kill_call.as_mut() {
                        Some(call) => call.await,
                        None => std::future::pending().await,
                    }
                }, if kill_call.is_some() => {
                    kill_call = None;
                    killed?;
                }
                _ = tokio::time::sleep_until(give_up_at), if killed_at.is_some() && exited_at.is_none() => {
                    return Err(SandboxError::Deadline {
                        operation: "wait after kill",
                        subject: id.to_string(),
                        seconds: EXIT_AFTER_KILL.as_secs(),
                    });
                }
            }
            if outcome.output_bytes > self.config.output_limit_bytes
                && outcome.kill_reason.is_none()
                && result_at.is_none()
            {
                kill = kill.or(Some(KillReason::OutputLimit));
            }
            if let Some(reason) = kill
                && outcome.kill_reason.is_none()
                && exited_at.is_none()
                && killed_at.is_none()
            {
                outcome.kill_reason = Some(reason);
                killed_at = Some(tokio::time::Instant::now());
                kill_call = Some(Box::pin(self.kill(id)));
            }
            if outcome.kill_reason.is_some() && exited_at.is_some() {
                // Nothing after a kill is worth reading.
                output_open = false;
            }
        }

        if exited_at.is_none() {
            // Early result: the exit is observed in the background, before removal.
            outcome.run = started.elapsed();
            return Ok((outcome, false));
        }
        let facts = self.inspect_exit(id).await?;
        outcome.oom_killed = facts.oom_killed;
        if facts.exit_code.is_some() {
            outcome.exit_code = facts.exit_code;
        }
        if outcome.oom_killed && outcome.kill_reason.is_none() {
            outcome.kill_reason = Some(KillReason::OutOfMemory);
        }
        if outcome.kill_reason.is_none()
            && result_at.is_none()
            && killed_at.is_none()
            && self.killed_by_someone_else(id, driven_since).await
        {
            outcome.kill_reason = Some(KillReason::External);
        }
        Ok((outcome, true))
    }

    /// Whether Docker's event log holds a `kill` of the container since `since`. Asked only
    /// when the container ended without a result and scriptbox did not kill it, so any kill is
    /// someone else's (`docker kill`, `docker stop`, `docker rm -f`). A script that kills its own
    /// bootstrap leaves no such event. Bounded; an engine that does not answer means "no".
    async fn killed_by_someone_else(&self, id: &str, since: SystemTime) -> bool {
        let unix = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
                .unwrap_or_else(|_| "0".into())
        };
        // dockerd logs the kill when it signals, before it sees the exit; `until` a little after
        // now only covers the unlikely order where the exit was reported first.
        let until = SystemTime::now() + KILL_EVENT_MARGIN;
        let filters = HashMap::from([
            ("container".to_string(), vec![id.to_string()]),
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["kill".to_string()]),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&unix(since))
            .until(&unix(until))
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options));
        let first = tokio::time::timeout(self.call_limit(), events.next()).await;
        match first {
            Ok(Some(Ok(event))) => event.action.as_deref() == Some("kill"),
            Ok(Some(Err(e))) => {
                tracing::warn!("docker events for {id} failed: {e}");
                false
            }
            Ok(None) => false,
            Err(_) => {
                tracing::warn!("docker events for {id} did not answer in time");
                false
            }
        }
    }

    /// Docker's view of a finished container: exit code and OOM kill.
    async fn inspect_exit(&self, id: &str) -> Result<ExitFacts, SandboxError> {
        let inspected = call(
            "inspect",
            id,
            self.call_limit(),
            self.docker.inspect_container(id, None),
        )
        .await?;
        let state = inspected.state.unwrap_or_default();
        Ok(ExitFacts {
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// After an early result: waits (bounded) for the container to exit, kills it if it does
    /// not, reads Docker's exit facts, and removes it.
    async fn finish_after_result(&self, id: &str) -> Result<ExitFacts, SandboxError> {
        let mut wait = self.docker.wait_container(id, None);
        if tokio::time::timeout(EXIT_AFTER_RESULT, wait.next())
            .await
            .is_err()
        {
            self.kill(id).await?;
            let _ = tokio::time::timeout(EXIT_AFTER_KILL, wait.next()).await;
        }
        let facts = self.inspect_exit(id).await;
        self.remove(id).await?;
        facts
    }

    /// SIGKILL, no grace: the bootstrap may have trapped SIGTERM.
    async fn kill(&self, id: &str) -> Result<(), SandboxError> {
        let options = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        match call(
            "kill",
            id,
            self.call_limit(),
            self.docker.kill_container(id, Some(options)),
        )
        .await
        {
            // 409: it already stopped by itself, which is what we wanted.
            Err(SandboxError::Call {
                source:
                    DockerError::DockerResponseServerError {
                        status_code: 409 | 404,
                        ..
                    },
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Force-removes a container; a container that is already gone counts as removed.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match call(
            "remove",
            id,
            self.call_limit(),
            self.docker.remove_container(id, Some(options)),
        )
        .await
        {
            Err(SandboxError::Call { source, .. }) if is_not_found(&source) => Ok(()),
            // 409 "removal already in progress": somebody else is removing it.
            Err(SandboxError::Call {
                source:
                    DockerError::DockerResponseServerError {
                        status_code: 409, ..
                    },
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Lists every container scriptbox created (by label), running or not.
    pub async fn labelled_containers(
        &self,
    ) -> Result<Vec<bollard::models::ContainerSummary>, SandboxError> {
        let filters = HashMap::from([("label".to_string(), vec![LABEL_EXECUTION.to_string()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        call(
            "list",
            "containers",
            self.call_limit(),
            self.docker.list_containers(Some(options)),
        )
        .await
    }

    /// Removes containers left behind by a dead scriptbox: those whose owner process is gone,
    /// and those past their deadline label. Decided by labels alone.
    pub async fn sweep_leftovers(&self) -> Result<SweepReport, SandboxError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut report = SweepReport::default();
        for c in self.labelled_containers().await? {
            let labels = c.labels.unwrap_or_default();
            let owner_dead = labels
                .get(LABEL_OWNER)
                .and_then(|l| OwnerId::parse(l))
                .map(|o| !o.is_alive())
                .unwrap_or(true);
            let expired = labels
                .get(LABEL_DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .map(|d| d < now)
                .unwrap_or(true);
            let Some(id) = c.id else { continue };
            if owner_dead || expired {
                self.remove(&id).await?;
                report.removed.push(id);
            } else {
                report.kept += 1;
            }
        }
        Ok(report)
    }

    /// Waits (bounded) for removals started by drop guards.
    pub async fn finish_cleanup(&self, limit: Duration) {
        self.cleanup.close();
        let _ = tokio::time::timeout(limit, self.cleanup.wait()).await;
    }
}

/// A Docker call in flight beside the main loop (the kill).
type PendingCall<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(), SandboxError>> + Send + 'a>>;

/// Removes the container if the run future is dropped before it could.
struct RemovalGuard {
    engine: Option<Engine>,
    id: String,
}

impl RemovalGuard {
    fn disarm(&mut self) {
        self.engine = None;
    }
}

impl Drop for RemovalGuard {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let id = std::mem::take(&mut self.id);
            let tracker = engine.cleanup.clone();
            tracker.spawn_on(
                async move {
                    if let Err(e) = engine.remove(&id).await {
                        tracing::warn!("could not remove abandoned container {id}: {e}");
                    }
                },
                &handle,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
