//! Admission, queue and execution.
//!
//! - At most `concurrency` containers alive: an execution takes a semaphore permit before its
//!   first container and gives it back only after [`Runner::run`] returned, which is after its
//!   container was removed. A runbook holds its permit for its whole run (its steps run one at a
//!   time, so it never has more than one container).
//! - At most `queue_length` executions wait for a permit; past that a submission is refused
//!   (the API answers 429 with `Retry-After`) before anything is stored.
//! - Every accepted execution is stored before its id is returned; every status change, step
//!   record and log line is written as it happens.
//! - One cancellation token per execution: cancelling a queued one takes it out of the queue;
//!   cancelling a running one kills its container (the step ends `Cancelled`).
//! - A submission is validated off the async workers ([`Scheduler::submit`]: at most
//!   [`VALIDATIONS_AT_ONCE`] at once, each within [`VALIDATION_DEADLINE`]): reading a runbook and
//!   matching its parameters is CPU work, bounded by the runbook module's own limits.
//! - A panic in an execution's task ends that execution `Failed` with a message and returns its
//!   permit and queue place; the daemon goes on.
//! - Running "one step in a container" is [`Runner`]'s (on a [`crate::sandbox::Backend`]). It takes
//!   a pre-started container from the warm pool when the execution's limits are the pool's; a
//!   waiting pool container holds a permit too (it is alive), the pool fills only with free
//!   permits, and the dispatcher makes the pool give one up when an execution waits for a permit.
//!   A warm step's result is recorded as soon as it is known; its container is removed in the
//!   background, and only then is the execution's permit released.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::children::{ChildDocuments, ssm_automation_operation};
use super::metrics::Metrics;
use super::types::{
    AttachmentRequest, CANCELLED_QUEUED_MESSAGE, Invalid, Prepared, RunbookRequest, SubmitRequest,
    Work, base64_of, prepare,
};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::config::{EffectiveLimits, Settings};
use crate::execute::{JobLimits, Runner, StepJob};
use crate::pool::WarmPool;
use crate::record::RunbookOutcome;
use crate::result::{LogLine, LogStream};
use crate::runbook::children::{
    self as child, ChildError, ChildOutcome, ChildRequest, ChildRunbooks, MAX_CHILD_DEPTH,
};
use crate::runbook::signals::{Signal, SignalError, SignalSender};
use crate::runbook::{self as rb, executor::RunEvent};
use crate::runtimes::Catalog;
use crate::sandbox::Removal;
use crate::step::ValidatedStep;
use crate::store::{
    CancelRequest, ExecKind, ExecStatus, ExecutionRecord, ExecutionStore, ExitFact, Finish,
    NewExecution, Outcome, StepExecution, Timestamp,
};

/// Submissions validated at once (each on a blocking thread); more wait their turn.
pub const VALIDATIONS_AT_ONCE: usize = 4;

/// The longest one submission's validation may take before it is refused. Its work is bounded
/// by the runbook module's limits (values, aliases, pattern budget); this is the last guard.
pub const VALIDATION_DEADLINE: Duration = Duration::from_secs(30);

/// How long a running execution stays this daemon's without a heartbeat; heartbeats come
/// every third of it.
pub const LEASE: Duration = Duration::from_secs(30);

/// Releases the containers-alive gauge when dropped.
struct Alive<'m>(&'m Metrics);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.container_removed();
    }
}

/// Why a submission was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The request is invalid.
    Invalid(super::types::Invalid),
    /// The queue is full.
    Busy {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The daemon is shutting down.
    ShuttingDown,
    /// The store failed.
    Store(String),
}

/// What cancelling found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now `Cancelled`.
    CancelledQueued,
    /// It is running; its container is being killed.
    Cancelling,
    /// It had already ended.
    AlreadyFinished(ExecStatus),
    /// No such execution.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A slot is reserved; the store insert is in flight.
    Admitting,
    Queued,
    Running,
}

struct Entry {
    token: CancellationToken,
    phase: Phase,
    /// The running runbook's signal sender (`aws:pause`, `aws:approve` wait on its inbox).
    signals: Option<SignalSender>,
}

/// What signalling an execution found.
#[derive(Debug, PartialEq, Eq)]
pub enum SignalOutcome {
    /// Delivered to the waiting step (its name).
    Delivered(String),
    /// The execution runs but does not take the signal now (the reason).
    Refused(SignalError),
    /// It is queued: no step waits yet.
    Queued,
    /// It had already ended.
    AlreadyFinished(ExecStatus),
    /// No such execution.
    NotFound,
}

struct Job {
    id: String,
    prepared: Prepared,
    runtime_label: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    entries: HashMap<String, Entry>,
    /// Reserved + queued + running.
    outstanding: usize,
    accepting: bool,
}

/// The limit of containers alive at once, shared by executions and the warm pool.
pub struct ContainerCapacity {
    /// One permit per container alive (`server.concurrency` of them).
    pub permits: Arc<Semaphore>,
    /// The warm pool, whose waiting containers hold permits too.
    pub pool: Option<WarmPool>,
}

/// The scheduler.
pub struct Scheduler {
    settings: Arc<Settings>,
    catalog: Arc<Catalog>,
    store: Arc<dyn ExecutionStore>,
    metrics: Arc<Metrics>,
    runner: Arc<Runner>,
    permits: Arc<Semaphore>,
    pool: Option<WarmPool>,
    concurrency: usize,
    capacity: usize,
    scratch: PathBuf,
    state: Mutex<State>,
    notify: Notify,
    tracker: TaskTracker,
    stop_dispatch: CancellationToken,
    validations: Arc<Semaphore>,
    /// This daemon's owner label: the holder of its executions' leases.
    owner: String,
    /// Where children's documents come from (set once by the daemon; unset: children are
    /// refused with the reason).
    child_documents: OnceLock<Arc<dyn ChildDocuments>>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Scheduler {
    /// A scheduler; call [`Scheduler::start`] to begin dispatching.
    pub fn new(
        settings: Arc<Settings>,
        catalog: Arc<Catalog>,
        store: Arc<dyn ExecutionStore>,
        metrics: Arc<Metrics>,
        runner: Arc<Runner>,
        scratch: PathBuf,
        capacity_limit: ContainerCapacity,
    ) -> Arc<Scheduler> {
        let ContainerCapacity { permits, pool } = capacity_limit;
        let concurrency = settings.server.effective_concurrency();
        let capacity = concurrency + settings.server.queue_length;
        Arc::new(Scheduler {
            settings,
            catalog,
            store,
            metrics,
            runner,
            permits,
            pool,
            concurrency,
            capacity,
            scratch,
            state: Mutex::new(State {
                accepting: true,
                ..Default::default()
            }),
            notify: Notify::new(),
            tracker: TaskTracker::new(),
            stop_dispatch: CancellationToken::new(),
            validations: Arc::new(Semaphore::new(VALIDATIONS_AT_ONCE)),
            owner: crate::sandbox::OwnerId::current().label(),
            child_documents: OnceLock::new(),
        })
    }

    /// Containers allowed at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// (queued, running) now.
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.lock().expect("scheduler lock");
        let running = st
            .entries
            .values()
            .filter(|e| e.phase == Phase::Running)
            .count();
        (st.queue.len(), running)
    }

    /// Validates a submission without admitting it.
    pub fn prepare(&self, req: &SubmitRequest) -> Result<Prepared, SubmitError> {
        prepare(req, &self.settings, &self.catalog, &self.scratch).map_err(SubmitError::Invalid)
    }

    /// Validates a submission on a blocking thread (never on the async workers), within
    /// [`VALIDATION_DEADLINE`].
    pub async fn prepare_off_workers(&self, req: &SubmitRequest) -> Result<Prepared, SubmitError> {
        let refused = |message: String| {
            SubmitError::Invalid(Invalid {
                code: "InvalidRequest",
                field: None,
                message,
                problems: vec![],
            })
        };
        let turn = self
            .validations
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SubmitError::ShuttingDown)?;
        let (req, settings, catalog, scratch) = (
            req.clone(),
            self.settings.clone(),
            self.catalog.clone(),
            self.scratch.clone(),
        );
        let work = tokio::task::spawn_blocking(move || {
            // Held until the work ends, even past the deadline below.
            let _turn = turn;
            prepare(&req, &settings, &catalog, &scratch)
        });
        match tokio::time::timeout(VALIDATION_DEADLINE, work).await {
            Ok(Ok(prepared)) => prepared.map_err(SubmitError::Invalid),
            Ok(Err(e)) => Err(refused(format!(
                "scriptbox failed internally while validating the request: {e}"
            ))),
            Err(_) => Err(refused(format!(
                "validating the request took longer than {} s; it is refused",
                VALIDATION_DEADLINE.as_secs()
            ))),
        }
    }

    /// Validates, admits, stores (durably) and queues a submission; returns its id.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<String, SubmitError> {
        self.submit_with_parent(req, None).await
    }

    /// [`Scheduler::submit`] for an execution another one started (a runbook's own
    /// StartAutomationExecution): stored with its parent's id.
    pub async fn submit_with_parent(
        &self,
        req: &SubmitRequest,
        parent_id: Option<String>,
    ) -> Result<String, SubmitError> {
        let prepared = self.prepare_off_workers(req).await?;
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut st = self.state.lock().expect("scheduler lock");
            if !st.accepting {
                return Err(SubmitError::ShuttingDown);
            }
            if st.outstanding >= self.capacity {
                drop(st);
                self.metrics.refused.fetch_add(1, Ordering::SeqCst);
                return Err(SubmitError::Busy {
                    retry_after: self.settings.server.retry_after_seconds.max(1),
                });
            }
            st.outstanding += 1;
            st.entries.insert(
                id.clone(),
                Entry {
                    token: CancellationToken::new(),
                    phase: Phase::Admitting,
                    signals: None,
                },
            );
        }
        let request = serde_json::to_string(req).expect("requests serialize");
        let new = NewExecution {
            id: id.clone(),
            kind: prepared.kind(),
            runtime: prepared.runtime(),
            document_name: prepared.document_name(),
            request,
            submitted: now(),
            parent_id,
        };
        if let Err(e) = self.store.insert(new).await {
            let mut st = self.state.lock().expect("scheduler lock");
            st.entries.remove(&id);
            st.outstanding -= 1;
            return Err(SubmitError::Store(e.to_string()));
        }
        self.metrics.accepted.fetch_add(1, Ordering::SeqCst);
        self.enqueue(id.clone(), prepared);
        Ok(id)
    }

    fn enqueue(&self, id: String, prepared: Prepared) {
        let runtime_label = prepared.runtime().unwrap_or_else(|| "runbook".into());
        let mut st = self.state.lock().expect("scheduler lock");
        if let Some(e) = st.entries.get_mut(&id) {
            e.phase = Phase::Queued;
        }
        st.queue.push_back(Job {
            id,
            prepared,
            runtime_label,
        });
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        drop(st);
        self.notify.notify_one();
    }

    /// Queues executions found `Queued` in the store at start (they were acknowledged).
    pub async fn requeue(&self, rows: Vec<ExecutionRecord>) {
        for row in rows {
            let parsed: Result<SubmitRequest, String> =
                serde_json::from_str(&row.request).map_err(|e| e.to_string());
            let prepared = parsed.and_then(|req| {
                prepare(&req, &self.settings, &self.catalog, &self.scratch).map_err(|e| e.message)
            });
            match prepared {
                Ok(p) => {
                    {
                        let mut st = self.state.lock().expect("scheduler lock");
                        st.outstanding += 1;
                        st.entries.insert(
                            row.id.clone(),
                            Entry {
                                token: CancellationToken::new(),
                                phase: Phase::Admitting,
                                signals: None,
                            },
                        );
                    }
                    self.enqueue(row.id.clone(), p);
                }
                Err(why) => {
                    // The settings changed under it (a lower maximum...): end it honestly.
                    let msg = format!(
                        "scriptbox restarted and could no longer run this queued execution: {why}"
                    );
                    let outcome = row.provisional(vec![], &[], Some(&msg), ExecStatus::Failed);
                    let _ = self
                        .store
                        .finish(Finish {
                            id: row.id.clone(),
                            status: ExecStatus::Failed,
                            outcome,
                            failure_message: Some(msg),
                            ended: now(),
                            exit: ExitFact::NotApplicable,
                        })
                        .await;
                }
            }
        }
    }

    /// Starts the dispatcher and the lease heartbeat.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        self.tracker.spawn(async move { me.dispatch().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.heartbeat().await });
    }

    /// Every third of [`LEASE`], extends the lease of each running execution.
    async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEASE / 3) => {}
                _ = self.stop_dispatch.cancelled() => return,
            }
            let running: Vec<String> = {
                let st = self.state.lock().expect("scheduler lock");
                st.entries
                    .iter()
                    .filter(|(_, e)| e.phase == Phase::Running)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for id in running {
                if let Err(e) = self.store.heartbeat(&id, &self.owner, LEASE).await {
                    tracing::warn!("cannot extend the lease of {id}: {e}");
                }
            }
        }
    }

    async fn dispatch(self: Arc<Self>) {
        loop {
            // A pooled container waiting idle holds a permit: when executions are queued and no
            // permit is free, the pool gives its oldest container up.
            if self.permits.available_permits() == 0
                && !self.state.lock().expect("scheduler lock").queue.is_empty()
                && let Some(pool) = &self.pool
            {
                pool.evict_one();
            }
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = self.stop_dispatch.cancelled() => return,
            };
            let job = loop {
                let next = {
                    let mut st = self.state.lock().expect("scheduler lock");
                    let job = st.queue.pop_front();
                    if let Some(j) = &job {
                        self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                        if let Some(e) = st.entries.get_mut(&j.id) {
                            e.phase = Phase::Running;
                        }
                    }
                    job
                };
                if let Some(j) = next {
                    break j;
                }
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = self.stop_dispatch.cancelled() => return,
                }
            };
            let me = self.clone();
            self.tracker
                .spawn(async move { me.run_job(job, permit).await });
        }
    }

    fn token(&self, id: &str) -> Option<CancellationToken> {
        let st = self.state.lock().expect("scheduler lock");
        st.entries.get(id).map(|e| e.token.clone())
    }

    fn release(&self, id: &str) {
        let mut st = self.state.lock().expect("scheduler lock");
        if st.entries.remove(id).is_some() {
            st.outstanding -= 1;
        }
    }

    /// Runs a job; a panic inside ends the execution `Failed` and returns its queue place (its
    /// permit is dropped as the panic unwinds).
    async fn run_job(self: Arc<Self>, job: Job, permit: OwnedSemaphorePermit) {
        let id = job.id.clone();
        let label = job.runtime_label.clone();
        let ran = AssertUnwindSafe(self.clone().run_job_inner(job, permit))
            .catch_unwind()
            .await;
        let Err(panic) = ran else { return };
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        let msg = format!(
            "scriptbox failed internally while running this execution ({why}); it is ended as Failed"
        );
        tracing::error!("execution {id}: {msg}");
        self.store.append_log(&id, None, LogStream::Scriptbox, &msg);
        if let Ok(Some(row)) = self.store.get(&id).await {
            let finish = Finish {
                id: id.clone(),
                status: ExecStatus::Failed,
                outcome: row.provisional(vec![], &[], Some(&msg), ExecStatus::Failed),
                failure_message: Some(msg),
                ended: now(),
                exit: ExitFact::NotApplicable,
            };
            if let Err(e) = self.store.finish(finish).await {
                tracing::error!("cannot record the end of {id}: {e}");
            }
        }
        self.metrics.finished("Failed", &label, 0.0);
        self.release(&id);
    }

    async fn run_job_inner(self: Arc<Self>, job: Job, permit: OwnedSemaphorePermit) {
        let id = job.id.clone();
        let Some(token) = self.token(&id) else {
            return;
        };
        if token.is_cancelled() {
            drop(permit);
            self.finish_queued_cancel(&id).await;
            return;
        }
        let began = Instant::now();
        match self.store.claim(&id, &self.owner, LEASE).await {
            Ok(true) => {}
            Ok(false) => tracing::error!("{id} was no longer queued when it got its permit"),
            Err(e) => tracing::error!("cannot record the start of {id}: {e}"),
        }
        self.metrics.container_started();
        // Counts the container permit as released however this ends (a panic too).
        let alive = Alive(&self.metrics);
        let limits = job.prepared.limits.clone();
        let (status, outcome, failure, removal) = match job.prepared.work {
            Work::Step(step) => self.run_step(&id, &step, &limits, &token).await,
            Work::Runbook(doc, params) => {
                let execution = self
                    .run_runbook(&id, &doc, params, &limits, &token, 0)
                    .await;
                let (status, outcome, failure) = runbook_end(&execution);
                (status, outcome, failure, None)
            }
        };
        // A warm step's result is recorded before Docker reports the exit: its exit fact is
        // pending (`ExitCode: null`) until the removal below brings it.
        let exit = match &outcome {
            Outcome::Step(r) if removal.is_some() && r.exit_code.is_none() => ExitFact::Pending,
            _ => ExitFact::NotApplicable,
        };
        let finish = Finish {
            id: id.clone(),
            status,
            outcome,
            failure_message: failure,
            ended: now(),
            exit,
        };
        if let Err(e) = self.store.finish(finish).await {
            tracing::error!("cannot record the end of {id}: {e}");
        }
        self.metrics.finished(
            status.as_str(),
            &job.runtime_label,
            began.elapsed().as_secs_f64(),
        );
        // The result is recorded; a warm run's container may still be on its way out. Docker's
        // exit facts arrive with its removal: an abnormal exit after the result is logged.
        if let Some(removal) = removal {
            let finished = removal.finish().await;
            if exit == ExitFact::Pending
                && let Ok(Some(facts)) = &finished
            {
                let known = ExitFact::Known {
                    exit_code: facts.exit_code,
                    oom_killed: facts.oom_killed,
                };
                if let Err(e) = self.store.record_exit(&id, known).await {
                    tracing::error!("cannot record the exit code of {id}: {e}");
                }
            }
            match finished {
                Ok(Some(facts)) if facts.exit_code != Some(0) || facts.oom_killed => {
                    self.store.append_log(
                        &id,
                        None,
                        LogStream::Scriptbox,
                        &format!(
                            "after its result, Docker reported the container's exit code {:?}{}",
                            facts.exit_code,
                            if facts.oom_killed {
                                " and an OOM kill"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("removing the container of {id}: {e}"),
            }
        }
        // The container is removed: the permit can go.
        drop(permit);
        drop(alive);
        self.release(&id);
    }

    /// An execution's limits as the runner takes them.
    fn job_limits(&self, limits: &EffectiveLimits) -> JobLimits {
        JobLimits {
            sandbox: Some(limits.sandbox(self.runner.backend().config())),
            timeout_cap: Some(Duration::from_secs(limits.timeout_seconds)),
            memory_bytes: Some(limits.memory_bytes),
        }
    }

    async fn run_step(
        &self,
        id: &str,
        step: &ValidatedStep,
        limits: &EffectiveLimits,
        token: &CancellationToken,
    ) -> (ExecStatus, Outcome, Option<String>, Option<Removal>) {
        let store = self.store.clone();
        let log_id = id.to_string();
        let mut on_log =
            move |line: &LogLine| store.append_log(&log_id, None, line.stream, &line.text);
        let job = StepJob {
            execution_id: id.to_string(),
            automation_execution_id: None,
            limits: self.job_limits(limits),
            on_log: Some(&mut on_log),
            cancel: token,
            // A single step has no runbook to name a role: it runs without credentials unless
            // the operator passes its own (`aws.pass_operator_credentials`).
            assume_role: None,
        };
        match self.runner.run(step, job).await {
            Ok((mut result, removal)) => {
                // The execution's id is the daemon's; a pooled container's own label id is kept
                // next to it for finding the container.
                if result.execution_id != id {
                    result.log.push(LogLine {
                        stream: LogStream::Scriptbox,
                        text: format!(
                            "ran in a pre-started container (label scriptbox.execution={})",
                            result.execution_id
                        ),
                    });
                    result.execution_id = id.to_string();
                }
                // A note scriptbox added after the run (a payload cut to 100 items...).
                for l in result
                    .log
                    .iter()
                    .filter(|l| l.stream == LogStream::Scriptbox)
                {
                    self.store.append_log(id, None, l.stream, &l.text);
                }
                let failure = result.failure_message.clone();
                let status = ExecStatus::from(result.status);
                (
                    status,
                    Outcome::Step(Box::new(result)),
                    failure,
                    Some(removal),
                )
            }
            Err(e) => {
                let msg = format!("the container engine failed: {e}");
                self.store.append_log(id, None, LogStream::Scriptbox, &msg);
                let result = crate::record::engine_failure(id, &step.runtime, &msg);
                (
                    ExecStatus::Failed,
                    Outcome::Step(Box::new(result)),
                    Some(msg),
                    None,
                )
            }
        }
    }

    /// Runs a runbook execution `depth` levels below a top-level one, recording its steps and
    /// log as they happen; its children run inline ([`ExecChildren`]).
    async fn run_runbook(
        &self,
        id: &str,
        doc: &rb::document::Runbook,
        params: serde_json::Map<String, Value>,
        limits: &EffectiveLimits,
        token: &CancellationToken,
        depth: u32,
    ) -> rb::executor::Execution {
        let steps = self.runner.with_runbook_limits(self.job_limits(limits));
        let (sender, inbox) = rb::signals::inbox();
        if let Some(e) = self
            .state
            .lock()
            .expect("scheduler lock")
            .entries
            .get_mut(id)
        {
            e.signals = Some(sender);
        }
        let children = ExecChildren {
            scheduler: self,
            limits,
        };
        let options = rb::executor::ExecOptions {
            execution_id: Some(id.to_string()),
            context: &self.settings.context,
            catalog: &self.catalog,
            max_timeout_secs: self.settings.limits.max_timeout_seconds,
            max_run_secs: self.settings.limits.max_runbook_seconds,
            children: Some(&children),
            signals: Some(&inbox),
            depth,
        };
        let store = self.store.clone();
        let exec_id = id.to_string();
        let mut index: i64 = 0;
        // A step's stored log, over all its attempts, is at most one container's output limit:
        // a failing step retried maxAttempts times does not grow the database past it.
        let log_cap = usize::try_from(limits.output_limit_bytes).unwrap_or(usize::MAX);
        let mut logged: usize = 0;
        // The running step's record, shown `Waiting` while it waits for a signal.
        let mut current: Option<StepExecution> = None;
        let mut observer = move |event: RunEvent<'_>| match event {
            RunEvent::StepStarted { step, attempt } => {
                if attempt == 1 {
                    logged = 0;
                }
                let record = StepExecution::started(&step.name, step.action_kind().name(), attempt);
                store.step(&exec_id, index, &record);
                current = Some(record);
            }
            RunEvent::Waiting { step, .. } => {
                let mut record = current.take().unwrap_or_else(|| {
                    StepExecution::started(&step.name, step.action_kind().name(), 1)
                });
                record.step_status = "Waiting".into();
                store.step(&exec_id, index, &record);
                current = Some(record);
            }
            RunEvent::Log { step, line } => {
                let before = logged;
                logged = logged.saturating_add(line.text.len());
                if logged <= log_cap {
                    store.append_log(&exec_id, Some(&step.name), line.stream, &line.text);
                } else if before <= log_cap {
                    store.append_log(
                        &exec_id,
                        Some(&step.name),
                        LogStream::Scriptbox,
                        &format!(
                            "further log lines of this step are not stored: its attempts printed more than {log_cap} bytes (the output limit); its record keeps the last attempt's log"
                        ),
                    );
                }
            }
            RunEvent::StepFinished { record } => {
                store.step(&exec_id, index, &StepExecution::finished(record));
                current = None;
                index += 1;
            }
        };
        rb::executor::execute(doc, params, &steps, &options, &mut observer, token).await
    }

    async fn finish_queued_cancel(&self, id: &str) {
        if let Ok(Some(row)) = self.store.get(id).await {
            let outcome = row.provisional(
                vec![],
                &[],
                Some(CANCELLED_QUEUED_MESSAGE),
                ExecStatus::Cancelled,
            );
            let _ = self
                .store
                .cancel_queued(Finish {
                    id: id.to_string(),
                    status: ExecStatus::Cancelled,
                    outcome,
                    failure_message: Some(CANCELLED_QUEUED_MESSAGE.into()),
                    ended: now(),
                    exit: ExitFact::NotApplicable,
                })
                .await;
            self.metrics.finished(
                "Cancelled",
                row.runtime.as_deref().unwrap_or(match row.kind {
                    ExecKind::Step => "",
                    ExecKind::Runbook => "runbook",
                }),
                0.0,
            );
        }
        self.release(id);
    }

    /// Cancels an execution.
    pub async fn cancel(&self, id: &str) -> CancelOutcome {
        let found = {
            let mut st = self.state.lock().expect("scheduler lock");
            match st.entries.get(id).map(|e| (e.phase, e.token.clone())) {
                Some((Phase::Queued, token)) => {
                    token.cancel();
                    let before = st.queue.len();
                    st.queue.retain(|j| j.id != id);
                    if st.queue.len() < before {
                        self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                        Some(true)
                    } else {
                        // The dispatcher has just taken it: it sees the token and records it.
                        Some(false)
                    }
                }
                Some((_, token)) => {
                    token.cancel();
                    Some(false)
                }
                None => None,
            }
        };
        match found {
            Some(true) => {
                self.finish_queued_cancel(id).await;
                CancelOutcome::CancelledQueued
            }
            Some(false) => {
                // Stored, so every reader (SSM's `Cancelling`) sees it, after a restart too.
                match self.store.request_cancel(id, now()).await {
                    Ok(CancelRequest::Requested | CancelRequest::Queued) => {}
                    Ok(other) => tracing::debug!("cancel of {id}: the store found {other:?}"),
                    Err(e) => tracing::error!("cannot record the cancel request of {id}: {e}"),
                }
                CancelOutcome::Cancelling
            }
            None => match self.store.get(id).await {
                Ok(Some(row)) => CancelOutcome::AlreadyFinished(row.status),
                _ => CancelOutcome::NotFound,
            },
        }
    }

    /// Sends `signal` to execution `id`'s waiting step (see `runbook::signals` for what is taken).
    pub async fn signal(&self, id: &str, signal: Signal) -> SignalOutcome {
        let found = {
            let st = self.state.lock().expect("scheduler lock");
            st.entries.get(id).map(|e| (e.phase, e.signals.clone()))
        };
        match found {
            Some((_, Some(sender))) => match sender.send(signal) {
                Ok(step) => SignalOutcome::Delivered(step),
                Err(e) => SignalOutcome::Refused(e),
            },
            // Admitted or queued, or a single step (which never waits).
            Some((Phase::Running, None)) => {
                SignalOutcome::Refused(SignalError::NotWaiting(signal.kind))
            }
            Some(_) => SignalOutcome::Queued,
            None => match self.store.get(id).await {
                Ok(Some(row)) if row.status.is_terminal() => {
                    SignalOutcome::AlreadyFinished(row.status)
                }
                // Stored but not this daemon's to run (another owner's lease): nobody here waits.
                Ok(Some(_)) => SignalOutcome::Refused(SignalError::NotWaiting(signal.kind)),
                _ => SignalOutcome::NotFound,
            },
        }
    }

    /// Graceful shutdown: refuse new submissions, start nothing new (queued executions stay
    /// queued in the store and run after the next start), let running ones finish for up to
    /// `grace`, then cancel them and wait until they are recorded.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut st = self.state.lock().expect("scheduler lock");
            st.accepting = false;
        }
        if let Some(pool) = &self.pool {
            pool.shutdown(Duration::from_secs(30)).await;
        }
        self.stop_dispatch.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let running: Vec<(String, CancellationToken)> = {
                let st = self.state.lock().expect("scheduler lock");
                st.entries
                    .iter()
                    .filter(|(_, e)| e.phase == Phase::Running)
                    .map(|(id, e)| (id.clone(), e.token.clone()))
                    .collect()
            };
            for (id, token) in running {
                self.store.append_log(
                    &id,
                    None,
                    LogStream::Scriptbox,
                    &format!(
                        "scriptbox is shutting down and the grace period of {} s passed: the execution is cancelled",
                        grace.as_secs()
                    ),
                );
                token.cancel();
            }
            self.tracker.wait().await;
        }
    }
}

/// What the store records of a runbook's end.
fn runbook_end(execution: &rb::executor::Execution) -> (ExecStatus, Outcome, Option<String>) {
    (
        ExecStatus::from(execution.status),
        Outcome::Runbook(Box::new(RunbookOutcome::of(execution))),
        execution.failure_message.clone(),
    )
}

/// The children of one execution the scheduler runs: inline, on its permit (see
/// `server::children` for why), with its limits.
struct ExecChildren<'a> {
    scheduler: &'a Scheduler,
    limits: &'a EffectiveLimits,
}

impl ChildRunbooks for ExecChildren<'_> {
    fn run_child<'b>(
        &'b self,
        request: ChildRequest,
        cancel: &'b CancellationToken,
    ) -> BoxFuture<'b, Result<ChildOutcome, ChildError>> {
        Box::pin(self.scheduler.run_child(request, self.limits, cancel))
    }

    fn answer_ssm_call<'b>(
        &'b self,
        call: &'b AwsCall,
        parent_execution_id: &'b str,
    ) -> Option<BoxFuture<'b, Result<Value, AwsCallError>>> {
        // Only an emulator lacks these operations; real AWS answers them itself.
        let emulator = self
            .scheduler
            .runner
            .aws()
            .is_some_and(|a| a.endpoint_via_relay());
        ssm_automation_operation(call)?;
        if !emulator {
            return None;
        }
        self.scheduler
            .child_documents
            .get()?
            .answer_ssm_call(call, parent_execution_id)
    }
}

impl Scheduler {
    /// Sets where children's documents come from (the daemon's document store); once.
    pub fn set_child_documents(&self, documents: Arc<dyn ChildDocuments>) {
        if self.child_documents.set(documents).is_err() {
            tracing::warn!("the child documents' source was already set");
        }
    }

    /// Starts a child of `request.parent_execution_id` and runs it to its end, inline on the
    /// parent's permit: stored with its parent's id, cancellable by its own id and by `cancel`.
    async fn run_child(
        &self,
        request: ChildRequest,
        limits: &EffectiveLimits,
        cancel: &CancellationToken,
    ) -> Result<ChildOutcome, ChildError> {
        if request.depth > MAX_CHILD_DEPTH {
            return Err(ChildError::TooDeep);
        }
        let (found, req, mut doc, params) = self.child_document(&request).await?;
        child::with_parent_role(&mut doc, request.assume_role.as_deref());
        let parent = request.parent_execution_id.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let token = cancel.child_token();
        {
            let mut st = self.state.lock().expect("scheduler lock");
            if !st.accepting {
                return Err(ChildError::Unavailable(
                    "the daemon is shutting down: no child execution is started".into(),
                ));
            }
            // Counted among the outstanding executions, never refused for it: it runs on its
            // parent's permit and place.
            st.outstanding += 1;
            st.entries.insert(
                id.clone(),
                Entry {
                    token: token.clone(),
                    phase: Phase::Running,
                    signals: None,
                },
            );
        }
        let new = NewExecution {
            id: id.clone(),
            kind: ExecKind::Runbook,
            runtime: None,
            document_name: Some(doc.name.clone()),
            request: serde_json::to_string(&req).unwrap_or_default(),
            submitted: now(),
            parent_id: Some(parent.clone()),
        };
        if let Err(e) = self.store.insert(new).await {
            self.release(&id);
            return Err(ChildError::Unavailable(format!(
                "the child execution could not be stored: {e}"
            )));
        }
        self.metrics.accepted.fetch_add(1, Ordering::SeqCst);
        if let Some(docs) = self.child_documents.get() {
            docs.started(&id, &parent, &found).await;
        }
        if let Err(e) = self.store.claim(&id, &self.owner, LEASE).await {
            tracing::error!("cannot record the start of {id}: {e}");
        }
        let began = Instant::now();
        let execution = self
            .run_runbook(&id, &doc, params, limits, &token, request.depth)
            .await;
        let (status, outcome, failure) = runbook_end(&execution);
        let finish = Finish {
            id: id.clone(),
            status,
            outcome,
            failure_message: failure,
            ended: now(),
            exit: ExitFact::NotApplicable,
        };
        if let Err(e) = self.store.finish(finish).await {
            tracing::error!("cannot record the end of {id}: {e}");
        }
        self.metrics
            .finished(status.as_str(), "runbook", began.elapsed().as_secs_f64());
        self.release(&id);
        Ok(child::outcome_of(&execution))
    }

    /// The child's document, found in the parent's tenant's store and checked with its
    /// parameters, as a submission of it would be.
    async fn child_document(
        &self,
        request: &ChildRequest,
    ) -> Result<
        (
            super::children::ChildDocument,
            SubmitRequest,
            Box<rb::document::Runbook>,
            serde_json::Map<String, Value>,
        ),
        ChildError,
    > {
        let docs = self.child_documents.get().ok_or_else(|| {
            ChildError::Unavailable(
                "this daemon has no document store for aws:executeAutomation".into(),
            )
        })?;
        let name = child::document_name_of(&request.document_name);
        let found = docs
            .find(
                &request.parent_execution_id,
                name,
                request.document_version.as_deref(),
            )
            .await?;
        let req = SubmitRequest {
            runbook: Some(RunbookRequest {
                document: found.content.clone(),
                document_name: Some(found.name.clone()),
                parameters: request.runtime_parameters.clone(),
                attachments: found
                    .files
                    .iter()
                    .map(|(n, b)| AttachmentRequest {
                        name: n.clone(),
                        content: base64_of(b),
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        let prepared = match self.prepare_off_workers(&req).await {
            Ok(p) => p,
            Err(SubmitError::Invalid(i)) => {
                return Err(ChildError::Refused(format!(
                    "the child document {name}: {}",
                    i.message
                )));
            }
            Err(_) => {
                return Err(ChildError::Unavailable(
                    "the daemon is shutting down: no child execution is started".into(),
                ));
            }
        };
        match prepared.work {
            Work::Runbook(doc, params) => Ok((found, req, doc, params)),
            Work::Step(_) => Err(ChildError::Refused(format!(
                "the child document {name} is not a runbook"
            ))),
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
