//! The Docker backend: [`Engine`], the one place in the crate that talks to bollard.
//!
//! Containers are created with every hardening setting of `docs/sandbox.md`, driven under a
//! deadline at every step, and removed on every path. Image inspection, building and import go
//! through here as well, so nothing outside `src/sandbox/` names bollard.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    ContainerJob, ContainerOutcome, ExitFacts, Flow, LABEL_DEADLINE, LABEL_EXECUTION, LABEL_OWNER,
    OutputObserver, OutputStream, OwnerId, PrestartedContainer, Removal, SandboxConfig,
    SandboxError, SweepReport,
};
use crate::result::KillReason;

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

/// A connection to the Docker engine plus the sandbox settings: the Docker [`super::Backend`].
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

    /// The underlying client, for the integration tests (`tests/`), which inspect containers
    /// and images directly.
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
            // The one mount a container may have: its AWS egress folder (one socket), read-only.
            mounts: Some(job.egress_dir.iter().map(|dir| egress_mount(dir)).collect()),
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

    /// Attaches to the container and starts it (unless pre-started). Returns its output and
    /// input streams, when the run started, and its deadline.
    async fn attach_and_start(
        &self,
        id: &str,
        start: bool,
        timeout: Duration,
    ) -> Result<(AttachContainerResults, Instant, tokio::time::Instant), SandboxError> {
        let limit = self.call_limit();
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
        if start {
            call("start", id, limit, self.docker.start_container(id, None)).await?;
        }
        // The deadline counts from the moment the request can be delivered.
        let started = Instant::now();
        let deadline = started
            .checked_add(timeout)
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(far_future)
            .min(far_future());
        Ok((attached, started, deadline))
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
        // Docker's events from here on are this execution's (a pooled container's wait before
        // it is not).
        let driven_since = SystemTime::now();
        let (attached, started, deadline) = self.attach_and_start(id, start, job.timeout).await?;
        let mut output = attached.output;
        let mut input = attached.input;
        let far = far_future();
        let stdin = job.stdin;
        let feed = async move {
            input.write_all(&stdin).await?;
            input.flush().await?;
            input.shutdown().await
        };
        tokio::pin!(feed);
        let mut wait = self.docker.wait_container(id, None);
        let mut st = Drive::new(id);
        // The kill call runs *beside* the output drain: dockerd finishes a killed container only
        // after its output copy is done, so awaiting the kill without reading would deadlock.
        let mut kill_call: Option<PendingCall<'_>> = None;
        while !st.done(early_result) {
            let drain_until = st.exited_at.map(|t| t + DRAIN_AFTER_EXIT).unwrap_or(far);
            let give_up_at = st.killed_at.map(|t| t + EXIT_AFTER_KILL).unwrap_or(far);
            let overstay_at = st.result_at.map(|t| t + EXIT_AFTER_RESULT).unwrap_or(far);
            let undecided = st.undecided();
            let mut kill: Option<KillReason> = None;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if undecided => kill = Some(KillReason::Cancelled),
                _ = tokio::time::sleep_until(deadline), if undecided => kill = Some(KillReason::Timeout),
                chunk = output.next(), if st.output_open => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        kill = st.on_output(OutputStream::Stdout, &message, observer);
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        kill = st.on_output(OutputStream::Stderr, &message, observer);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => st.output_open = false,
                },
                _ = tokio::time::sleep_until(overstay_at), if st.overstaying() => {
                    // The bootstrap exits right after its result; a container that stays is
                    // killed, without a kill reason: the result it gave stands.
                    st.killed_at = Some(tokio::time::Instant::now());
                    kill_call = Some(Box::pin(self.kill(id)));
                }
                fed = &mut feed, if st.feeding => {
                    st.feeding = false;
                    if fed.is_err() {
                        st.outcome.stdin_incomplete = true;
                    }
                }
                waited = wait.next(), if st.exited_at.is_none() => {
                    st.exited_at = Some(tokio::time::Instant::now());
                    st.outcome.run = started.elapsed();
                    st.outcome.exit_code = waited.and_then(exit_code_of);
                }
                _ = tokio::time::sleep_until(drain_until), if st.exited_at.is_some() => {
                    // The stream normally ends ~30 ms after exit; never wait on it forever.
                    st.output_open = false;
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
                _ = tokio::time::sleep_until(give_up_at), if st.killed_at.is_some() && st.exited_at.is_none() => {
                    return Err(SandboxError::Deadline {
                        operation: "wait after kill",
                        subject: id.to_string(),
                        seconds: EXIT_AFTER_KILL.as_secs(),
                    });
                }
            }
            if st.settle(kill, self.config.output_limit_bytes) {
                kill_call = Some(Box::pin(self.kill(id)));
            }
        }
        if st.exited_at.is_none() {
            // Early result: the exit is observed in the background, before removal.
            st.outcome.run = started.elapsed();
            return Ok((st.outcome, false));
        }
        self.judge_exit(id, st, driven_since).await
    }

    /// After the exit: Docker's exit code and OOM kill, and whether someone else killed it.
    async fn judge_exit(
        &self,
        id: &str,
        st: Drive,
        driven_since: SystemTime,
    ) -> Result<(ContainerOutcome, bool), SandboxError> {
        let mut outcome = st.outcome;
        let facts = self.inspect_exit(id).await?;
        outcome.oom_killed = facts.oom_killed;
        if facts.exit_code.is_some() {
            outcome.exit_code = facts.exit_code;
        }
        if outcome.oom_killed && outcome.kill_reason.is_none() {
            outcome.kill_reason = Some(KillReason::OutOfMemory);
        }
        if outcome.kill_reason.is_none()
            && st.result_at.is_none()
            && st.killed_at.is_none()
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

/// The exit code in Docker's answer to a wait (an error answer may carry one too).
fn exit_code_of(
    waited: Result<bollard::models::ContainerWaitResponse, DockerError>,
) -> Option<i64> {
    match waited {
        Ok(r) => Some(r.status_code),
        Err(DockerError::DockerContainerWaitError { code, .. }) => Some(code),
        Err(_) => None,
    }
}

/// A year from now: the "never" of the drive loop's timers.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// What the drive loop knows of one container so far.
struct Drive {
    outcome: ContainerOutcome,
    feeding: bool,
    output_open: bool,
    exited_at: Option<tokio::time::Instant>,
    killed_at: Option<tokio::time::Instant>,
    /// Set when the observer has the whole result: from then on the execution's outcome is
    /// decided, and nothing the container does (late frames, floods, overstaying) changes it.
    result_at: Option<tokio::time::Instant>,
}

impl Drive {
    fn new(id: &str) -> Self {
        Drive {
            outcome: ContainerOutcome {
                container_id: id.to_string(),
                ..Default::default()
            },
            feeding: true,
            output_open: true,
            exited_at: None,
            killed_at: None,
            result_at: None,
        }
    }

    /// The loop ends when the container exited and its output is drained, or (an early
    /// result) as soon as the result is whole.
    fn done(&self, early_result: bool) -> bool {
        (self.exited_at.is_some() && !self.output_open)
            || (self.result_at.is_some() && early_result && self.outcome.kill_reason.is_none())
    }

    /// Nothing has decided the outcome yet: a cancel or the deadline still may.
    fn undecided(&self) -> bool {
        self.outcome.kill_reason.is_none() && self.exited_at.is_none() && self.result_at.is_none()
    }

    /// The result is in but the container neither exited nor was killed.
    fn overstaying(&self) -> bool {
        self.result_at.is_some() && self.killed_at.is_none() && self.exited_at.is_none()
    }

    /// Counts and hands a chunk to the observer; returns the kill it asks for.
    fn on_output(
        &mut self,
        stream: OutputStream,
        message: &[u8],
        observer: &mut dyn OutputObserver,
    ) -> Option<KillReason> {
        self.outcome.output_bytes = self
            .outcome
            .output_bytes
            .saturating_add(byte_count(message));
        match observer.on_output(stream, message) {
            // After the result nothing the container sends may kill it.
            _ if self.result_at.is_some() => None,
            Flow::Kill(r) => Some(r),
            Flow::ResultComplete => {
                self.result_at = Some(tokio::time::Instant::now());
                None
            }
            Flow::Continue => None,
        }
    }

    /// Applies the output limit and a kill asked for this turn; true when a kill must start.
    fn settle(&mut self, kill: Option<KillReason>, output_limit_bytes: u64) -> bool {
        let mut kill = kill;
        if self.outcome.output_bytes > output_limit_bytes
            && self.outcome.kill_reason.is_none()
            && self.result_at.is_none()
        {
            kill = kill.or(Some(KillReason::OutputLimit));
        }
        let mut start_kill = false;
        if let Some(reason) = kill
            && self.outcome.kill_reason.is_none()
            && self.exited_at.is_none()
            && self.killed_at.is_none()
        {
            self.outcome.kill_reason = Some(reason);
            self.killed_at = Some(tokio::time::Instant::now());
            start_kill = true;
        }
        if self.outcome.kill_reason.is_some() && self.exited_at.is_some() {
            // Nothing after a kill is worth reading.
            self.output_open = false;
        }
        start_kill
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

/// What the engine says about an image (`images` reads its labels, environment and size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDetails {
    /// The image's labels.
    pub labels: HashMap<String, String>,
    /// Its `ENV` entries (`KEY=value`).
    pub env: Vec<String>,
    /// Its size in bytes, when the engine reports one.
    pub size_bytes: Option<u64>,
}

impl Engine {
    /// Whether the engine answers, within the call deadline.
    pub async fn ping(&self) -> Result<(), SandboxError> {
        call("ping", "engine", self.call_limit(), self.docker.ping())
            .await
            .map(|_| ())
    }

    /// An image's labels, environment and size; `None` when it is not present.
    pub async fn image_details(&self, image: &str) -> Result<Option<ImageDetails>, SandboxError> {
        match call(
            "inspect image",
            image,
            self.call_limit(),
            self.docker.inspect_image(image),
        )
        .await
        {
            Ok(found) => {
                let config = found.config.unwrap_or_default();
                Ok(Some(ImageDetails {
                    labels: config.labels.unwrap_or_default(),
                    env: config.env.unwrap_or_default(),
                    size_bytes: found.size.and_then(|s| u64::try_from(s).ok()),
                }))
            }
            Err(SandboxError::Call { source, .. }) if is_not_found(&source) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Builds `tag` from a tar build context holding `Dockerfile`; each line of the build's
    /// output goes to `on_line`. The error is the engine's own message. No deadline of its own:
    /// the caller bounds the build as a whole.
    pub async fn build_image(
        &self,
        tag: &str,
        buildargs: &HashMap<String, String>,
        labels: &HashMap<String, String>,
        context: Vec<u8>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), SandboxError> {
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .buildargs(buildargs)
            .labels(labels)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream = self.docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(context))),
        );
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(SandboxError::Refused(err));
                    }
                    if let Some(line) = info.stream.as_deref() {
                        on_line(line);
                    }
                }
                Err(e) => return Err(SandboxError::Refused(e.to_string())),
            }
        }
        Ok(())
    }

    /// Imports a root file system tar stream (`chunks`) as image `repo:tag` with Dockerfile
    /// `changes` (`ENV`, `LABEL`, `CMD`...). The error is the engine's own message. No deadline
    /// of its own: the caller bounds the import.
    pub async fn import_image(
        &self,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
        mut chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    ) -> Result<(), SandboxError> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let body = bollard::body_stream(futures::stream::poll_fn(move |cx| chunks.poll_recv(cx)));
        let mut stream = self.docker.create_image(Some(options), Some(body), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| SandboxError::Refused(e.to_string()))?;
        }
        Ok(())
    }

    /// The containers `owner` holds (every scriptbox container when `None`), by label.
    pub async fn held_containers(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<super::HeldContainer>, SandboxError> {
        let held = self
            .labelled_containers()
            .await?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let container = super::HeldContainer {
                    id: c.id?,
                    execution_id: labels.get(LABEL_EXECUTION).cloned(),
                    owner: labels.get(LABEL_OWNER).cloned(),
                    labels,
                };
                match owner {
                    Some(o) if container.owner.as_deref() != Some(o) => None,
                    _ => Some(container),
                }
            })
            .collect();
        Ok(held)
    }
}

impl super::Backend for Engine {
    fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn with_sandbox(&self, config: SandboxConfig) -> Arc<dyn super::Backend> {
        Arc::new(self.with_config(config))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(Engine::ping(self))
    }

    fn prestart<'a>(
        &'a self,
        job: &'a ContainerJob,
    ) -> BoxFuture<'a, Result<PrestartedContainer, SandboxError>> {
        Box::pin(Engine::prestart(self, job))
    }

    fn run<'a>(
        &'a self,
        prestarted: Option<PrestartedContainer>,
        job: ContainerJob,
        observer: &'a mut dyn OutputObserver,
        cancel: &'a CancellationToken,
        defer_removal: bool,
    ) -> BoxFuture<'a, Result<(ContainerOutcome, Removal), SandboxError>> {
        Box::pin(self.run_with(prestarted, job, observer, cancel, defer_removal))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(Engine::remove(self, id))
    }

    fn held<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<super::HeldContainer>, SandboxError>> {
        Box::pin(self.held_containers(owner))
    }

    fn sweep(&self) -> BoxFuture<'_, Result<SweepReport, SandboxError>> {
        Box::pin(self.sweep_leftovers())
    }
}

/// The read-only bind of an execution's egress folder at [`crate::egress::CONTAINER_DIR`]; no
/// propagation, so nothing mounted later on either side crosses it.
fn egress_mount(dir: &std::path::Path) -> Mount {
    Mount {
        target: Some(crate::egress::CONTAINER_DIR.into()),
        source: Some(dir.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}
