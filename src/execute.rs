//! Runs one validated step in the sandbox and turns what came back into a [`StepResult`].
//!
//! Data flows one way: validated step → request bytes → container → frames and log → result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsAccess;
use crate::aws::credentials::CredentialError;
use crate::aws::worker::{AwsWorker, MAX_RESPONSE_BYTES};
use crate::context::{AwsContext, container_env, context_dict};
use crate::egress::{EgressBudget, EgressError, EgressSession};
use crate::pool::WarmPool;
use crate::protocol::{
    AwsRequest, BootstrapLimits, BootstrapResult, FrameDecoder, FrameEvent, PROTOCOL_VERSION,
    RelayRequest, RequestHeader, encode_request, parse_result,
};
use crate::result::{
    ErrorDetail, KillReason, LogLine, LogStream, PayloadVerdict, StepResult, StepStatus,
    TIMEOUT_MESSAGE, apply_payload_rules, aws_failure_message, aws_plain_failure, error_detail,
    payload_too_large_message, signal_of_exit_code,
};
use crate::sandbox::{
    Backend, ContainerJob, ContainerOutcome, Engine, Flow, OutputObserver, OutputStream,
    PrestartedContainer, Removal, SandboxConfig, SandboxError,
};
use crate::step::ValidatedStep;

/// Limits of what the executor keeps of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputLimits {
    /// Bytes of log kept per stream; past it the container is killed and the log marked truncated.
    pub log_bytes_per_stream: usize,
    /// Longest log line kept whole; longer lines are split.
    pub line_bytes: usize,
    /// Lines of log kept per stream; past it the container is killed and the log marked truncated.
    pub log_lines_per_stream: usize,
    /// Bytes zip attachments may expand to inside the sandbox.
    pub unzip_bytes: u64,
    /// Entries zip attachments may hold.
    pub unzip_entries: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            log_bytes_per_stream: 1024 * 1024,
            line_bytes: 16 * 1024,
            log_lines_per_stream: 20_000,
            unzip_bytes: 64 * 1024 * 1024,
            unzip_entries: 10_000,
        }
    }
}

/// Per-execution options.
pub struct ExecuteOptions<'a> {
    /// The execution id; a fresh UUID when `None`.
    pub execution_id: Option<String>,
    /// A lower memory limit than the sandbox's.
    pub memory_bytes: Option<i64>,
    /// The context values.
    pub context: &'a AwsContext,
    /// Output limits.
    pub limits: &'a OutputLimits,
    /// Called with each log line as soon as it is complete.
    pub on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>,
    /// `automation:EXECUTION_ID` when the step is part of a runbook execution.
    pub automation_execution_id: Option<String>,
    /// AWS access of the step (`None` in mode `none`: no socket, no mount, no credentials).
    pub aws: Option<StepAws<'a>>,
}

/// What a step run needs for AWS: the operator's access, the execution's egress budget and the
/// role to assume.
pub struct StepAws<'a> {
    /// The operator's mode, rules and credential broker.
    pub access: &'a AwsAccess,
    /// The execution's caps, shared by its step runs.
    pub budget: Arc<EgressBudget>,
    /// The runbook's `assumeRole` (or `--assume-role`), already substituted and checked.
    pub role: Option<String>,
}

/// Collects the container's output: frames, the log with its caps, and live delivery.
struct StepObserver<'a> {
    decoder: FrameDecoder,
    limits: &'a OutputLimits,
    log: Vec<LogLine>,
    partial: [Vec<u8>; 2],
    kept: [usize; 2],
    lines: [usize; 2],
    truncated: bool,
    result: Option<Vec<u8>>,
    result_too_large: Option<u64>,
    unframed: bool,
    /// The handler's stderr is the container's raw stderr (PowerShell), not `E` frames: it is a
    /// separate stream from the frames, so its lines may arrive after the result frame.
    raw_stderr_log: bool,
    on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>,
    /// The step's egress, whose refusals become log lines as they happen.
    egress: Option<Arc<EgressSession>>,
}

impl<'a> StepObserver<'a> {
    fn new(limits: &'a OutputLimits, on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>) -> Self {
        Self {
            decoder: FrameDecoder::default(),
            limits,
            log: Vec::new(),
            partial: [Vec::new(), Vec::new()],
            kept: [0, 0],
            lines: [0, 0],
            truncated: false,
            result: None,
            result_too_large: None,
            unframed: false,
            raw_stderr_log: false,
            on_log,
            egress: None,
        }
    }

    /// Moves the egress refusals seen so far into the log (scriptbox's lines: bounded by the
    /// session, not by the handler's stream caps).
    fn take_egress_lines(&mut self) {
        let Some(egress) = self.egress.as_ref() else {
            return;
        };
        for text in egress.take_log_lines() {
            let line = LogLine {
                stream: LogStream::Scriptbox,
                text,
            };
            if let Some(f) = self.on_log.as_mut() {
                f(&line);
            }
            self.log.push(line);
        }
    }

    /// Records one complete line; returns false once the stream's line cap is passed.
    fn push_line(&mut self, stream: LogStream, bytes: &[u8]) -> bool {
        let idx = usize::from(stream == LogStream::Stderr);
        if stream != LogStream::Scriptbox {
            if self.lines[idx] >= self.limits.log_lines_per_stream {
                self.truncated = true;
                return false;
            }
            self.lines[idx] += 1;
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        let line = LogLine { stream, text };
        if let Some(cb) = self.on_log.as_mut() {
            cb(&line);
        }
        self.log.push(line);
        true
    }

    /// Appends log bytes of one stream; returns false once its cap is passed.
    fn log_bytes(&mut self, stream: LogStream, mut bytes: &[u8]) -> bool {
        let idx = usize::from(stream == LogStream::Stderr);
        if self.kept[idx] >= self.limits.log_bytes_per_stream {
            self.truncated = true;
            return false;
        }
        let room = self.limits.log_bytes_per_stream - self.kept[idx];
        let mut within = bytes.len() <= room;
        if !within {
            bytes = &bytes[..room];
            self.truncated = true;
        }
        self.kept[idx] += bytes.len();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, newline) = match rest.iter().position(|b| *b == b'\n') {
                Some(p) => (&rest[..p], true),
                None => (rest, false),
            };
            rest = &rest[(piece.len() + usize::from(newline)).min(rest.len())..];
            let mut pending = std::mem::take(&mut self.partial[idx]);
            pending.extend_from_slice(piece);
            // Split very long lines so one line can't hold the whole log hostage.
            while pending.len() > self.limits.line_bytes {
                let tail = pending.split_off(self.limits.line_bytes);
                within &= self.push_line(stream, &pending);
                pending = tail;
            }
            if newline {
                within &= self.push_line(stream, &pending);
                if !within {
                    return false;
                }
            } else {
                self.partial[idx] = pending;
            }
        }
        within
    }

    fn flush_partials(&mut self) {
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let pending = std::mem::take(&mut self.partial[idx]);
            if !pending.is_empty() {
                self.push_line(stream, &pending);
            }
        }
    }
}

impl OutputObserver for StepObserver<'_> {
    fn on_output(&mut self, stream: OutputStream, bytes: &[u8]) -> Flow {
        self.take_egress_lines();
        // The first R frame is the result: no frame after it (a forged second result, late log
        // lines, a flood) may change the payload, the status or the log. Only a raw stderr log
        // (PowerShell's) may still deliver lines written before the result, within its caps.
        if self.result.is_some() {
            if stream == OutputStream::Stderr && self.raw_stderr_log {
                self.log_bytes(LogStream::Stderr, bytes);
            }
            return Flow::ResultComplete;
        }
        if self.result_too_large.is_some() {
            return Flow::Continue;
        }
        let mut within = true;
        match stream {
            OutputStream::Stderr => within = self.log_bytes(LogStream::Stderr, bytes),
            OutputStream::Stdout => {
                let mut events = Vec::new();
                self.decoder.feed(bytes, &mut |e| events.push(e));
                for event in events {
                    if self.result.is_some() || self.result_too_large.is_some() {
                        break;
                    }
                    match event {
                        FrameEvent::Stdout(b) => within &= self.log_bytes(LogStream::Stdout, &b),
                        FrameEvent::Stderr(b) => within &= self.log_bytes(LogStream::Stderr, &b),
                        FrameEvent::Unframed(b) => {
                            self.unframed = true;
                            within &= self.log_bytes(LogStream::Stdout, &b);
                        }
                        FrameEvent::Result(body) => self.result = Some(body),
                        FrameEvent::ResultTooLarge(n) => {
                            // The verdict is known from the frame header: stop the container
                            // rather than read megabytes that will be thrown away.
                            self.result_too_large = Some(n);
                            within = false;
                        }
                    }
                }
            }
        }
        if !within {
            Flow::Kill(KillReason::OutputLimit)
        } else if self.result.is_some() {
            // The R frame is the bootstrap's last frame: everything before it has arrived.
            Flow::ResultComplete
        } else {
            Flow::Continue
        }
    }
}

/// How a container's exit code reads in a message: the signal behind it when there is one.
fn exit_description(exit_code: Option<i64>) -> String {
    match exit_code {
        Some(code) => match signal_of_exit_code(code) {
            Some((signal, name)) => format!("exit code {code}: signal {signal}, {name}"),
            None => format!("exit code {code}"),
        },
        None => "exit code unknown".into(),
    }
}

/// Errors that stop an execution before it has a result (the engine, not the script).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Building the request failed.
    #[error(transparent)]
    Request(#[from] crate::protocol::RequestError),
    /// Docker failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The step's AWS egress socket could not be opened.
    #[error("cannot open the step's AWS egress: {0}")]
    Egress(#[from] EgressError),
}

/// The limits of one execution where they differ from the backend's (a daemon request's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobLimits {
    /// The execution's sandbox settings; the warm pool serves only executions without them
    /// (or with exactly the backend's).
    pub sandbox: Option<SandboxConfig>,
    /// A ceiling on the step's own timeout.
    pub timeout_cap: Option<Duration>,
    /// A lower memory limit than the sandbox's, for a container started for this execution.
    pub memory_bytes: Option<i64>,
}

/// What one run of a step needs besides the step.
pub struct StepJob<'a> {
    /// The execution id (the container's `scriptbox.execution` label, unless a pooled
    /// container's own label is adopted).
    pub execution_id: String,
    /// `automation:EXECUTION_ID` for a runbook's step; the execution id otherwise.
    pub automation_execution_id: Option<String>,
    /// The execution's limits.
    pub limits: JobLimits,
    /// Called with each log line as soon as it is complete.
    pub on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>,
    /// Kills the container.
    pub cancel: &'a CancellationToken,
    /// The role the step's credentials come from (the runbook's `assumeRole`, `--assume-role`).
    pub assume_role: Option<String>,
}

/// The one runner: runs a validated step in a fresh container of its backend, one from the
/// warm pool when the execution's limits are the pool's, else a new one. The daemon, the CLI
/// (`invoke`, `run`) and the runbook executor (through [`crate::runbook::runner`]) all use it.
#[derive(Clone)]
pub struct Runner {
    backend: Arc<dyn Backend>,
    pool: Option<WarmPool>,
    context: Arc<AwsContext>,
    output: Arc<OutputLimits>,
    /// The limits the runbook port ([`crate::runbook::executor::StepRunner`]) runs steps with.
    runbook_limits: JobLimits,
    /// AWS access in the operator's mode (`None`: mode `none`).
    aws: Option<Arc<AwsAccess>>,
    /// The egress budget of the execution this runner serves ([`Runner::for_execution`]).
    egress_budget: Option<Arc<EgressBudget>>,
    /// The runtime of the AWS API worker (`None`: AWS actions fail naming the fix).
    aws_worker: Option<Arc<AwsWorker>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("backend", &self.backend)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner on `backend`, taking pre-started containers from `pool` when it may.
    pub fn new(
        backend: Arc<dyn Backend>,
        pool: Option<WarmPool>,
        context: AwsContext,
        output: OutputLimits,
    ) -> Self {
        Runner {
            backend,
            pool,
            context: Arc::new(context),
            output: Arc::new(output),
            runbook_limits: JobLimits::default(),
            aws: None,
            egress_budget: None,
            aws_worker: None,
        }
    }

    /// The same runner making AWS actions' calls in `worker`'s runtime.
    pub fn with_aws_worker(self, worker: Option<AwsWorker>) -> Runner {
        Runner {
            aws_worker: worker.map(Arc::new),
            ..self
        }
    }

    /// The AWS API worker's runtime, when one is set.
    pub fn aws_worker(&self) -> Option<&AwsWorker> {
        self.aws_worker.as_deref()
    }

    /// The same runner giving steps AWS access in the operator's mode.
    pub fn with_aws(self, aws: Option<Arc<AwsAccess>>) -> Runner {
        Runner {
            aws,
            egress_budget: None,
            ..self
        }
    }

    /// The AWS access, when on.
    pub fn aws(&self) -> Option<&Arc<AwsAccess>> {
        self.aws.as_ref()
    }

    /// The same runner for one execution: its step runs share one egress budget, so the caps
    /// of `[egress]` hold for the execution as a whole.
    pub fn for_execution(&self) -> Runner {
        Runner {
            egress_budget: self.aws.as_ref().map(|a| a.new_budget()),
            ..self.clone()
        }
    }

    /// The backend it runs containers on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The warm pool, when on.
    pub fn pool(&self) -> Option<&WarmPool> {
        self.pool.as_ref()
    }

    /// The same runner whose runbook steps run with `limits` (one daemon execution's).
    pub fn with_runbook_limits(&self, limits: JobLimits) -> Runner {
        Runner {
            runbook_limits: limits,
            ..self.for_execution()
        }
    }

    /// The limits the runbook port runs steps with.
    pub fn runbook_limits(&self) -> &JobLimits {
        &self.runbook_limits
    }

    /// Runs the step. The result may come back before the container is gone (a warm run);
    /// the [`Removal`] completes when it is.
    pub async fn run<'a>(
        &'a self,
        step: &'a ValidatedStep,
        job: StepJob<'a>,
    ) -> Result<(StepResult, Removal), ExecuteError> {
        self.run_as(step, job, Purpose::Script).await
    }

    /// Runs the AWS API worker's step ([`crate::aws::worker`]): as any step (hardening,
    /// egress, header), never in a pooled container, with the action's credentials (the
    /// role's, else the operator's own) and its reply bounded by the worker's response limit
    /// rather than executeScript's payload rules.
    pub async fn run_worker<'a>(
        &'a self,
        step: &'a ValidatedStep,
        job: StepJob<'a>,
    ) -> Result<(StepResult, Removal), ExecuteError> {
        self.run_as(step, job, Purpose::AwsWorker).await
    }

    async fn run_as<'a>(
        &'a self,
        step: &'a ValidatedStep,
        job: StepJob<'a>,
        purpose: Purpose,
    ) -> Result<(StepResult, Removal), ExecuteError> {
        let StepJob {
            execution_id,
            automation_execution_id,
            limits,
            on_log,
            cancel,
            assume_role,
        } = job;
        // Pooled containers were made with the backend's sandbox: only an execution with
        // exactly those limits may take one.
        let own_sandbox = limits
            .sandbox
            .filter(|sandbox| sandbox != self.backend.config());
        // A pooled container was created without the egress mount: AWS steps run cold.
        let pool = self
            .pool
            .as_ref()
            .filter(|_| own_sandbox.is_none() && self.aws.is_none() && purpose == Purpose::Script);
        let lowered;
        let backend: &dyn Backend = match own_sandbox {
            Some(sandbox) => {
                lowered = self.backend.with_sandbox(sandbox);
                lowered.as_ref()
            }
            None => self.backend.as_ref(),
        };
        let capped;
        let step = match limits.timeout_cap {
            Some(cap) if cap < step.timeout => {
                let mut lower = step.clone();
                lower.timeout = cap;
                capped = lower;
                &capped
            }
            _ => step,
        };
        let options = ExecuteOptions {
            // A pooled container carries its own execution id label, which the step adopts.
            execution_id: pool.is_none().then(|| execution_id.clone()),
            memory_bytes: if pool.is_none() {
                limits.memory_bytes
            } else {
                None
            },
            context: &self.context,
            limits: &self.output,
            on_log,
            // The handler's automation:EXECUTION_ID is the caller's execution id either way.
            automation_execution_id: automation_execution_id
                .or_else(|| pool.map(|_| execution_id.clone())),
            aws: self.aws.as_deref().map(|access| StepAws {
                access,
                budget: self
                    .egress_budget
                    .clone()
                    .unwrap_or_else(|| access.new_budget()),
                role: assume_role,
            }),
        };
        // A cold run (no pooled container ready) is labelled with the caller's own id.
        run_step(
            backend,
            pool,
            step,
            options,
            Some(execution_id),
            cancel,
            purpose,
        )
        .await
    }
}

/// Runs a validated step in a fresh container of `engine` (no pool) and waits for its removal.
pub async fn execute_step(
    engine: &Engine,
    step: &ValidatedStep,
    options: ExecuteOptions<'_>,
    cancel: &CancellationToken,
) -> Result<StepResult, ExecuteError> {
    let (result, removal) =
        run_step(engine, None, step, options, None, cancel, Purpose::Script).await?;
    removal.finish().await?;
    Ok(result)
}

/// Runs a validated step, in a pre-started container of `pool` when one fits (same image and
/// limits, no caller-chosen execution id), else in a new one. The result comes back as soon as
/// Docker reports the exit; a pooled container's removal then goes on in the background and the
/// returned [`Removal`] completes when it is gone.
pub async fn execute_step_pooled(
    engine: &Engine,
    pool: Option<&WarmPool>,
    step: &ValidatedStep,
    options: ExecuteOptions<'_>,
    cancel: &CancellationToken,
) -> Result<(StepResult, Removal), ExecuteError> {
    run_step(engine, pool, step, options, None, cancel, Purpose::Script).await
}

/// What a run is for: a user's step, or scriptbox's own AWS API worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// An executeScript step (or `invoke`): executeScript's credentials and payload rules.
    Script,
    /// The AWS API worker: the action's credentials, the worker's response bound.
    AwsWorker,
}

/// What goes into one container besides the step: its ids, context and limits, and its AWS
/// request and egress folder when AWS access is on.
struct JobParts<'a> {
    execution_id: &'a str,
    automation_id: &'a str,
    context: &'a AwsContext,
    limits: &'a OutputLimits,
    memory_bytes: Option<i64>,
    aws: Option<AwsRequest>,
    egress_dir: Option<std::path::PathBuf>,
}

/// The request bytes and the container job of one execution.
fn container_job(step: &ValidatedStep, parts: JobParts<'_>) -> Result<ContainerJob, ExecuteError> {
    let JobParts {
        execution_id,
        automation_id,
        context,
        limits,
        memory_bytes,
        aws,
        egress_dir,
    } = parts;
    let now = Utc::now();
    let task_dir = format!(
        "/tmp/{}-{}",
        uuid::Uuid::new_v4(),
        now.format("%Y-%m-%d-%H-%M-%S")
    );
    let header = RequestHeader {
        v: PROTOCOL_VERSION,
        task_dir,
        language: step.language.as_str(),
        entry: step.entry.clone(),
        payload: step.payload.clone(),
        context: context_dict(context, automation_id, now),
        zips: step.zips.clone(),
        limits: BootstrapLimits {
            unzip_bytes: limits.unzip_bytes,
            unzip_entries: limits.unzip_entries,
            payload_items: crate::result::MAX_PAYLOAD_ITEMS,
        },
        archive_bytes: 0,
        aws,
    };
    let stdin = encode_request(header, &step.files)?;
    Ok(ContainerJob {
        execution_id: execution_id.to_string(),
        image: step.image.clone(),
        runtime: step.runtime.clone(),
        command: step.command.clone(),
        env: container_env(context),
        stdin,
        timeout: step.timeout,
        memory_bytes,
        egress_dir,
    })
}

/// Why a step's AWS access could not be prepared.
enum AwsPrepareError {
    /// No credentials for the step: the step fails, as an automation does whose role cannot be
    /// assumed.
    Credentials(CredentialError),
    /// The egress socket could not be opened (a host problem, not the step's).
    Egress(EgressError),
}

/// The step's credentials and its egress session, before the container exists.
async fn prepare_aws(
    aws: &StepAws<'_>,
    step: &ValidatedStep,
    automation_id: &str,
    purpose: Purpose,
) -> Result<(EgressSession, AwsRequest), AwsPrepareError> {
    let role = aws.role.as_deref();
    let credentials = match purpose {
        Purpose::Script => {
            aws.access
                .credentials(role, automation_id, step.timeout)
                .await
        }
        Purpose::AwsWorker => {
            aws.access
                .action_credentials(role, automation_id, step.timeout)
                .await
        }
    }
    .map_err(AwsPrepareError::Credentials)?;
    let session = aws
        .access
        .open_egress(Arc::clone(&aws.budget))
        .map_err(AwsPrepareError::Egress)?;
    let mut env: std::collections::BTreeMap<String, String> = credentials
        .map(|c| c.env().into_iter().collect())
        .unwrap_or_default();
    // The sandbox is no EC2 instance: without this, an SDK that finds no credentials asks
    // instance metadata through the proxy (an emulator such as moto answers it).
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    let request = AwsRequest {
        env,
        relay: Some(RelayRequest {
            socket: crate::egress::CONTAINER_SOCKET.into(),
            endpoint: aws.access.endpoint_via_relay(),
        }),
    };
    Ok((session, request))
}

/// The result of a step whose credentials could not be had: nothing ran.
fn credentials_failure(
    execution_id: String,
    step: &ValidatedStep,
    error: &CredentialError,
) -> StepResult {
    let message = format!("scriptbox could not get AWS credentials for this step: {error}");
    StepResult::not_run(&execution_id, &step.runtime, "CredentialsError", &message)
}

/// Runs the job in `prestarted` or a new container. A pooled container that died while waiting
/// never reads the request and writes nothing (the bootstrap always writes a result): the job
/// then runs in a new container instead.
async fn run_container(
    backend: &dyn Backend,
    prestarted: Option<PrestartedContainer>,
    step: &ValidatedStep,
    job: ContainerJob,
    observer: &mut StepObserver<'_>,
    cancel: &CancellationToken,
) -> Result<(ContainerOutcome, Removal), SandboxError> {
    let pooled = prestarted.is_some();
    // Returning at the result frame is safe only where the handler's stderr is framed on the same
    // ordered stream (the Python bootstrap); PowerShell's stderr is raw, so its late lines could
    // arrive after the result: a pooled PowerShell run waits for the exit as a cold one does.
    let defer = pooled && step.language == crate::runtimes::Language::Python;
    if !pooled {
        return backend.run(None, job, observer, cancel, false).await;
    }
    let ran = backend
        .run(prestarted, job.clone(), observer, cancel, defer)
        .await;
    let stale = match &ran {
        Ok((o, _)) => o.output_bytes == 0 && o.kill_reason.is_none(),
        Err(_) => true,
    };
    if stale && !cancel.is_cancelled() {
        tracing::warn!(
            "a pooled container for {} was not usable; running cold",
            step.runtime
        );
        return backend.run(None, job, observer, cancel, false).await;
    }
    ran
}

/// Milliseconds since `began`, saturated.
fn millis_since(began: Instant) -> u64 {
    u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The core of every run: request, container, result.
/// `cold_id` labels a fresh container when `options` leaves the id open (so that a pooled one
/// may be adopted) and none was ready.
async fn run_step(
    backend: &dyn Backend,
    pool: Option<&WarmPool>,
    step: &ValidatedStep,
    options: ExecuteOptions<'_>,
    cold_id: Option<String>,
    cancel: &CancellationToken,
    purpose: Purpose,
) -> Result<(StepResult, Removal), ExecuteError> {
    let began = Instant::now();
    let ExecuteOptions {
        execution_id,
        memory_bytes,
        context,
        limits,
        on_log,
        automation_execution_id,
        aws,
    } = options;
    // A pooled container already carries its execution id label: the execution adopts it. It
    // has no egress mount, so a step with AWS access never takes one.
    let prestarted = match (pool, &execution_id, memory_bytes, &aws) {
        (Some(pool), None, None, None) => pool.take(step),
        _ => None,
    };
    let execution_id = prestarted
        .as_ref()
        .map(|c| c.execution_id.clone())
        .or(execution_id)
        .or(cold_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let automation_id = automation_execution_id.unwrap_or_else(|| execution_id.clone());
    let (session, aws_request) = match &aws {
        None => (None, None),
        Some(aws) => match prepare_aws(aws, step, &automation_id, purpose).await {
            Ok((session, request)) => (Some(Arc::new(session)), Some(request)),
            Err(AwsPrepareError::Credentials(e)) => {
                let mut result = credentials_failure(execution_id, step, &e);
                result.duration_ms = millis_since(began);
                return Ok((result, Removal::nothing()));
            }
            Err(AwsPrepareError::Egress(e)) => return Err(ExecuteError::Egress(e)),
        },
    };
    let job = container_job(
        step,
        JobParts {
            execution_id: &execution_id,
            automation_id: &automation_id,
            context,
            limits,
            memory_bytes,
            aws: aws_request,
            egress_dir: session.as_ref().map(|s| s.host_dir().to_path_buf()),
        },
    )?;
    let mut observer = StepObserver::new(limits, on_log);
    observer.egress = session.clone();
    // Only the Python bootstrap frames the handler's stderr; PowerShell's is the raw stream.
    observer.raw_stderr_log = step.language != crate::runtimes::Language::Python;
    let ran = run_container(backend, prestarted, step, job, &mut observer, cancel).await;
    // The container has exited (or never ran): its egress ends here, on every path.
    observer.take_egress_lines();
    observer.egress = None;
    let egress = match session.map(Arc::try_unwrap) {
        Some(Ok(session)) => Some(session.finish().await),
        // Only the observer held another reference, and it let go above.
        Some(Err(_)) | None => None,
    };
    let (outcome, removal) = ran?;
    observer.flush_partials();
    let config = backend.config();
    let verdict = Verdict {
        step,
        limits,
        memory_limit: memory_bytes
            .map(|m| m.min(config.memory_bytes))
            .unwrap_or(config.memory_bytes),
        output_limit_bytes: config.output_limit_bytes,
        purpose,
    };
    let mut result = verdict.result(execution_id, &outcome, observer);
    result.duration_ms = millis_since(began);
    result.egress = egress;
    Ok((result, removal))
}

/// What judging a run's outcome needs besides the outcome.
struct Verdict<'a> {
    step: &'a ValidatedStep,
    limits: &'a OutputLimits,
    memory_limit: i64,
    output_limit_bytes: u64,
    purpose: Purpose,
}

impl Verdict<'_> {
    /// The step's result from the container's outcome and what the observer collected.
    fn result(
        &self,
        execution_id: String,
        outcome: &ContainerOutcome,
        mut observer: StepObserver<'_>,
    ) -> StepResult {
        let mut result = StepResult {
            execution_id,
            runtime: self.step.runtime.clone(),
            status: StepStatus::Failed,
            payload: Value::Null,
            failure_message: None,
            error: None,
            log: Vec::new(),
            log_truncated: observer.truncated,
            kill_reason: outcome.kill_reason,
            exit_code: outcome.exit_code,
            container_id: Some(outcome.container_id.clone()),
            duration_ms: 0,
            egress: None,
        };
        // A result too large to read was the reason for an output-limit kill: report the payload.
        let kill_reason = match (outcome.kill_reason, observer.result_too_large) {
            (Some(KillReason::OutputLimit), Some(_)) => None,
            (reason, _) => reason,
        };
        result.kill_reason = kill_reason;
        match kill_reason {
            Some(reason) => {
                let (status, kind, message) = self.killed(reason, outcome.exit_code);
                fail(&mut result, status, kind, message);
            }
            None => match (observer.result.take(), observer.result_too_large) {
                (_, Some(size)) => fail(
                    &mut result,
                    StepStatus::Failed,
                    "PayloadTooLarge",
                    payload_too_large_message(usize::try_from(size).unwrap_or(usize::MAX), false),
                ),
                (Some(body), None) => match self.purpose {
                    Purpose::Script => returned(&mut result, &body, &mut observer.log),
                    Purpose::AwsWorker => worker_returned(&mut result, &body),
                },
                (None, None) => {
                    let why = exited_without_result(outcome, observer.unframed);
                    fail(&mut result, StepStatus::Failed, "ScriptExited", why);
                }
            },
        }
        result.log = observer.log;
        result
    }

    /// The status, error type and message of a container scriptbox (or someone) killed.
    fn killed(
        &self,
        reason: KillReason,
        exit_code: Option<i64>,
    ) -> (StepStatus, &'static str, String) {
        match reason {
            KillReason::Cancelled => (
                StepStatus::Cancelled,
                "Cancelled",
                "The execution was cancelled; its container was killed.".into(),
            ),
            KillReason::Timeout => (
                StepStatus::TimedOut,
                "Timeout",
                format!(
                    "The step's timeout of {} seconds passed; its container was killed.",
                    self.step.timeout.as_secs()
                ),
            ),
            KillReason::OutputLimit => (
                StepStatus::Failed,
                "OutputLimitExceeded",
                format!(
                    "The script wrote more output than allowed ({} bytes per stream, {} bytes in all); its container was killed and the log truncated.",
                    self.limits.log_bytes_per_stream, self.output_limit_bytes
                ),
            ),
            KillReason::OutOfMemory => (
                StepStatus::Failed,
                "OutOfMemory",
                format!(
                    "The script ran out of memory (limit {} MiB); the kernel killed it.",
                    self.memory_limit / (1024 * 1024)
                ),
            ),
            KillReason::External => (
                StepStatus::Failed,
                "KilledExternally",
                format!(
                    "The container was killed from outside scriptbox ({}), not by its timeout, its limits or a cancellation: someone stopped it through Docker (docker kill, docker stop, docker rm -f) before the script returned a result.",
                    exit_description(exit_code)
                ),
            ),
        }
    }
}

/// Marks the result failed with an error of `kind`.
fn fail(result: &mut StepResult, status: StepStatus, kind: &str, message: String) {
    result.status = status;
    result.failure_message = Some(if status == StepStatus::TimedOut {
        format!("{TIMEOUT_MESSAGE} {message}")
    } else {
        aws_plain_failure(kind, &message)
    });
    result.error = Some(ErrorDetail {
        error_type: kind.into(),
        message,
        stack_trace: vec![],
    });
}

/// Reads the `R` frame: the handler returned (within the payload rules) or raised.
fn returned(result: &mut StepResult, body: &[u8], log: &mut Vec<LogLine>) {
    match parse_result(body) {
        Ok(BootstrapResult::Returned {
            payload,
            original_items,
        }) => match apply_payload_rules(payload, original_items) {
            PayloadVerdict::Keep(payload, note) => {
                result.status = StepStatus::Success;
                result.payload = payload;
                if let Some(note) = note {
                    log.push(LogLine {
                        stream: LogStream::Scriptbox,
                        text: note,
                    });
                }
            }
            PayloadVerdict::TooLarge(size) => fail(
                result,
                StepStatus::Failed,
                "PayloadTooLarge",
                payload_too_large_message(size, true),
            ),
        },
        Ok(BootstrapResult::Raised(error)) => {
            result.failure_message = Some(aws_failure_message(&error));
            result.error = Some(error_detail(&error));
        }
        Err(why) => fail(
            result,
            StepStatus::Failed,
            "ProtocolError",
            format!("The sandbox's result could not be read: {why}"),
        ),
    }
}

/// Reads the AWS API worker's `R` frame: its reply, bounded by the worker's response limit
/// (the worker itself refuses a larger response; this holds if it did not).
fn worker_returned(result: &mut StepResult, body: &[u8]) {
    // The reply wraps the response: allow for its envelope.
    if body.len() > MAX_RESPONSE_BYTES + 64 * 1024 {
        return fail(
            result,
            StepStatus::Failed,
            "ResponseTooLarge",
            format!(
                "The AWS API worker's reply is {} bytes, over the limit of {MAX_RESPONSE_BYTES} bytes",
                body.len()
            ),
        );
    }
    match parse_result(body) {
        Ok(BootstrapResult::Returned { payload, .. }) => {
            result.status = StepStatus::Success;
            result.payload = payload;
        }
        Ok(BootstrapResult::Raised(error)) => {
            result.failure_message = Some(aws_failure_message(&error));
            result.error = Some(error_detail(&error));
        }
        Err(why) => fail(
            result,
            StepStatus::Failed,
            "ProtocolError",
            format!("The AWS API worker's result could not be read: {why}"),
        ),
    }
}

/// Why a process that ended without a result failed, in the user's terms.
fn exited_without_result(outcome: &ContainerOutcome, unframed: bool) -> String {
    let code = outcome
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut why = match outcome.exit_code.and_then(signal_of_exit_code) {
        Some((signal, name)) => format!(
            "The script's process ended (exit code {code}: killed by signal {signal}, {name}) without returning a result."
        ),
        None => {
            format!("The script's process ended (exit code {code}) without returning a result.")
        }
    };
    if outcome.stdin_incomplete {
        why.push_str(" It did not read its whole request.");
    }
    if unframed {
        why.push_str(
            " Its bootstrap wrote unexpected output; is the image built for this version of scriptbox?",
        );
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FRAME_STDOUT;

    fn python_step() -> ValidatedStep {
        let inputs = crate::step::StepInputs {
            runtime: Some("python3.11".into()),
            handler: Some("h".into()),
            script: Some("def h(e, c): return 1".into()),
            ..Default::default()
        };
        crate::step::validate(&inputs, &crate::runtimes::Catalog::builtin(), 600).unwrap()
    }

    fn job<'a>(id: &str, limits: JobLimits, cancel: &'a CancellationToken) -> StepJob<'a> {
        StepJob {
            execution_id: id.into(),
            automation_execution_id: None,
            limits,
            on_log: None,
            cancel,
            assume_role: None,
        }
    }

    #[tokio::test]
    async fn the_runner_serves_lowered_limits_cold_and_the_backends_own_from_the_pool() {
        use crate::sandbox::fake::{Call, FakeBackend, Reply};
        let fake = FakeBackend::new(SandboxConfig::default());
        let backend: Arc<dyn Backend> = fake.clone();
        let pool = WarmPool::with_backend(
            backend.clone(),
            crate::pool::PoolConfig {
                size: 1,
                idle_timeout_secs: 300,
                python_preimport: vec![],
            },
            &AwsContext::default(),
            Duration::from_secs(600),
            None,
        );
        let runner = Runner::new(
            backend,
            Some(pool.clone()),
            AwsContext::default(),
            OutputLimits::default(),
        );
        let step = python_step();
        let cancel = CancellationToken::new();
        // The runtime's first use runs cold (nothing is ready yet) and fills the pool; the cold
        // container is the caller's own execution, labelled with its id.
        let (first, _) = runner
            .run(&step, job("first", JobLimits::default(), &cancel))
            .await
            .unwrap();
        assert_eq!(first.status, StepStatus::Success);
        assert_eq!(first.execution_id, "first");
        let began = Instant::now();
        while pool.ready_count() == 0 {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the pool never filled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Lowered limits: a new container under the caller's id, with the timeout capped.
        let lowered = JobLimits {
            sandbox: Some(SandboxConfig {
                memory_bytes: 64 * 1024 * 1024,
                ..SandboxConfig::default()
            }),
            timeout_cap: Some(Duration::from_millis(50)),
            memory_bytes: Some(64 * 1024 * 1024),
        };
        fake.push(Reply::HangUntilCancel);
        let (capped, _) = runner
            .run(&step, job("lowered", lowered, &cancel))
            .await
            .unwrap();
        assert_eq!(capped.status, StepStatus::TimedOut);
        assert_eq!(capped.execution_id, "lowered");
        assert_eq!(
            pool.ready_count(),
            1,
            "a lowered run took a pooled container"
        );
        // The backend's own limits: the pooled container, whose label id the run adopts.
        let same = JobLimits {
            sandbox: Some(SandboxConfig::default()),
            ..JobLimits::default()
        };
        let (warm, removal) = runner.run(&step, job("warm", same, &cancel)).await.unwrap();
        removal.finish().await.unwrap();
        assert_eq!(warm.status, StepStatus::Success);
        assert_ne!(warm.execution_id, "warm");
        let runs: Vec<(String, bool)> = fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Run {
                    execution_id,
                    prestarted,
                } => Some((execution_id, prestarted)),
                _ => None,
            })
            .collect();
        assert_eq!(runs[0], (first.execution_id.clone(), false));
        assert_eq!(runs[1], ("lowered".to_string(), false));
        assert_eq!(runs[2], (warm.execution_id.clone(), true));
        pool.shutdown(Duration::from_secs(5)).await;
        assert!(fake.live().is_empty(), "{:?}", fake.live());
    }

    #[tokio::test]
    async fn without_an_engine_every_run_fails_unavailable() {
        let runner = Runner::new(
            Arc::new(crate::sandbox::Unavailable::default()),
            None,
            AwsContext::default(),
            OutputLimits::default(),
        );
        let cancel = CancellationToken::new();
        let ran = runner
            .run(&python_step(), job("x", JobLimits::default(), &cancel))
            .await;
        assert!(
            matches!(ran, Err(ExecuteError::Sandbox(SandboxError::Unavailable))),
            "{ran:?}"
        );
    }

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        crate::protocol::encode_frame(kind, body)
    }

    #[test]
    fn nothing_after_the_first_result_frame_counts() {
        use crate::protocol::{FRAME_RESULT, FRAME_STDERR};
        let limits = OutputLimits::default();
        let mut o = StepObserver::new(&limits, None);
        let mut first = frame(FRAME_STDOUT, b"before\n");
        first.extend(frame(FRAME_RESULT, br#"{"ok":true,"payload":"genuine"}"#));
        // In the same chunk, after the result: a forged result, a late line, a huge frame.
        first.extend(frame(FRAME_RESULT, br#"{"ok":true,"payload":"forged"}"#));
        first.extend(frame(FRAME_STDOUT, b"late\n"));
        let mut huge = vec![FRAME_RESULT];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        first.extend(huge.clone());
        assert_eq!(
            o.on_output(OutputStream::Stdout, &first),
            Flow::ResultComplete
        );
        // Later chunks, on both streams: ignored, never a kill.
        let mut later = frame(
            FRAME_RESULT,
            br#"{"ok":false,"error":{"type":"X","message":"m"}}"#,
        );
        later.extend(frame(FRAME_STDERR, b"late err\n"));
        later.extend(huge);
        assert_eq!(
            o.on_output(OutputStream::Stdout, &later),
            Flow::ResultComplete
        );
        assert_eq!(
            o.on_output(OutputStream::Stderr, &[b'x'; 4 * 1024 * 1024]),
            Flow::ResultComplete
        );
        o.flush_partials();
        assert_eq!(
            o.result.as_deref(),
            Some(&br#"{"ok":true,"payload":"genuine"}"#[..])
        );
        assert_eq!(o.result_too_large, None);
        assert!(!o.truncated && !o.unframed);
        let texts: Vec<&str> = o.log.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["before"]);

        // PowerShell's stderr is a raw stream beside the frames: its lines may trail the result
        // and are still logged, but frames after the result are not, and nothing is a kill.
        let mut ps = StepObserver::new(&limits, None);
        ps.raw_stderr_log = true;
        let mut out = frame(FRAME_RESULT, br#"{"ok":true,"payload":1}"#);
        out.extend(frame(FRAME_STDOUT, b"late\n"));
        assert_eq!(
            ps.on_output(OutputStream::Stdout, &out),
            Flow::ResultComplete
        );
        assert_eq!(
            ps.on_output(OutputStream::Stderr, b"written before the result\n"),
            Flow::ResultComplete
        );
        assert_eq!(
            ps.on_output(OutputStream::Stderr, &[b'x'; 4 * 1024 * 1024]),
            Flow::ResultComplete
        );
        assert_eq!(ps.log[0].text, "written before the result");
        assert!(ps.log.iter().all(|l| l.stream == LogStream::Stderr));
    }

    #[test]
    fn log_lines_are_split_capped_and_lossy() {
        let limits = OutputLimits {
            log_bytes_per_stream: 40,
            line_bytes: 8,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut cb = |l: &LogLine| seen.push(l.text.clone());
        let mut o = StepObserver::new(&limits, Some(&mut cb));
        let mut out = frame(FRAME_STDOUT, b"hi\nthere");
        out.extend(frame(FRAME_STDOUT, b" you\n"));
        assert_eq!(o.on_output(OutputStream::Stdout, &out), Flow::Continue);
        assert_eq!(
            o.on_output(OutputStream::Stderr, b"bad \xff\x00 bytes\n"),
            Flow::Continue
        );
        assert_eq!(
            o.on_output(OutputStream::Stderr, &[b'x'; 100]),
            Flow::Kill(KillReason::OutputLimit)
        );
        o.flush_partials();
        assert!(o.truncated);
        let texts: Vec<String> = o.log.iter().map(|l| l.text.clone()).collect();
        assert_eq!(texts[0], "hi");
        assert_eq!(texts[1], "there yo");
        assert_eq!(texts[2], "u");
        assert_eq!(texts[3], "bad \u{fffd}\u{0} b");
        let stderr_kept: usize = o
            .log
            .iter()
            .filter(|l| l.stream == LogStream::Stderr)
            .map(|l| l.text.len())
            .sum();
        assert!(stderr_kept <= 45, "{stderr_kept}");
        drop(o);
        assert_eq!(seen.len(), texts.len());
    }
}
