//! Runs a checked runbook: steps in order, `nextStep`, `isEnd`, `onFailure`, `onCancel`,
//! `isCritical`, `maxAttempts`, per-step timeouts; outputs by selector; events as they happen.
//!
//! Decisions where AWS is silent **(ours)**:
//! - `onFailure: Abort` ends the execution `Failed` (`TimedOut` when the step timed out) even when
//!   the step is not critical; `Continue` and `step:name` go on, and the execution's status is
//!   then decided by the critical steps.
//! - `isEnd` ends the execution after the step whether it succeeded or failed with `Continue`;
//!   `onFailure: step:name` wins over `isEnd`.
//! - Steps that never ran are not listed (as AWS lists only executed steps).
//! - Cancelled during a step: the step is `Cancelled`; with `onCancel: step:name` that step (and
//!   what follows it) runs with a fresh cancellation token; the execution ends `Cancelled`.
//! - A step execution can repeat through branches and loops; past 1000 step executions (a
//!   loop's inner steps count, and a running loop counts as one) the execution fails.
//! - An aws:loop step's inner steps run here as steps of the execution (retries, onFailure,
//!   onCancel, records, events, the run deadline as for any step); their records come in the
//!   order they end, the loop's after them. `actions::loop_steps` has the loop's rules.
//! - The whole execution runs at most [`ExecOptions::max_run_secs`]: then the running step is
//!   stopped through its cancellation token (its container killed and removed) and both end
//!   `TimedOut`. A retried step's record keeps earlier attempts' log lines up to
//!   [`MAX_EARLIER_ATTEMPTS_LOG_BYTES`].

use std::collections::HashMap;
use std::time::Duration;

use crate::timestamp::Timestamp;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::actions::StepFailure;
use super::actions::branch;
use super::actions::loop_steps::{self, LoopSpec};
use super::actions::{Action, ActionSpec, Ran, RunCx};
use super::children::ChildRunbooks;
use super::document::{OnCancel, OnFailure, Runbook, StepDecl, StepKind};
use super::interpolate::{Scope, Variable};
use super::selector::ValueType;
use super::signals::{SignalInbox, SignalKind};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::context::{AwsContext, context_dict};
use crate::egress::EgressCounts;
use crate::execute::ExecuteError;
use crate::result::{LogLine, LogStream, StepResult, StepStatus, aws_plain_failure};
use crate::runtimes::Catalog;
use crate::step::ValidatedStep;

/// The most step executions one execution may have (loops through branches end here).
pub const MAX_STEP_EXECUTIONS: usize = 1000;

/// What a runner gets besides the step.
pub struct RunContext<'a> {
    /// The runbook execution's id (`automation:EXECUTION_ID`).
    pub automation_execution_id: &'a str,
    /// This step execution's id (the container's label).
    pub step_execution_id: String,
    /// Called with each log line as it arrives.
    pub on_log: &'a mut (dyn FnMut(&LogLine) + Send),
    /// Cancels the step.
    pub cancel: &'a CancellationToken,
    /// The role the step's credentials come from, when AWS access is on.
    pub assume_role: Option<&'a str>,
}

/// Runs one validated executeScript step. `Err` is a failure of the engine (or of building the
/// container's request), not of the script: the step fails `EngineFailure` and the execution ends.
pub trait StepRunner: Send + Sync {
    /// True when steps get AWS credentials (AWS access is on): only then is the runbook's
    /// `assumeRole` resolved and checked, so a document whose role is a placeholder (a
    /// template's `${automation_role}`) still runs without AWS, as it always has.
    fn gives_credentials(&self) -> bool {
        false
    }

    /// Runs the step.
    fn run<'a>(
        &'a self,
        step: &'a ValidatedStep,
        ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<StepResult, ExecuteError>>;

    /// Makes one AWS API call for an action (`aws:executeAwsApi`...), as the step's role (the
    /// operator's credentials when the runbook names none); the response as AWS renders it.
    fn call_aws<'a>(
        &'a self,
        call: &'a AwsCall,
        ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, AwsCallError>> {
        let _ = (call, ctx);
        Box::pin(async { Err(AwsCallError::NoAccess) })
    }

    /// How long a wait (`aws:waitForAwsResourceProperty`...) sleeps between two calls
    /// (`[aws] poll_interval_seconds`).
    fn poll_interval(&self) -> std::time::Duration {
        crate::runbook::actions::aws_call::DEFAULT_POLL_INTERVAL
    }
}

/// What happens during an execution, as it happens.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A step (or a new attempt of it) starts.
    StepStarted {
        /// The step.
        step: &'a StepDecl,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A log line of the running step.
    Log {
        /// The step.
        step: &'a StepDecl,
        /// The line.
        line: &'a LogLine,
    },
    /// A step waits for a signal (aws:pause, aws:approve): the execution shows `Waiting` until
    /// the step's attempt ends.
    Waiting {
        /// The step.
        step: &'a StepDecl,
        /// The execution's id (what `scriptbox signal` takes).
        execution_id: &'a str,
        /// The signal types it waits for.
        accepts: &'a [SignalKind],
    },
    /// A step finished (after its last attempt).
    StepFinished {
        /// Its record.
        record: &'a StepRecord,
    },
}

/// One executed step.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// `name`.
    pub name: String,
    /// The step's action.
    pub action_kind: Action,
    /// A fresh id per step execution.
    pub step_execution_id: String,
    /// Its status.
    pub status: StepStatus,
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// The inputs after substitution (as written when substitution failed).
    pub inputs: Map<String, Value>,
    /// Declared outputs, typed, in declaration order (only on success).
    pub outputs: Vec<(String, ValueType, Value)>,
    /// The executeScript Payload (on success).
    pub payload: Option<Value>,
    /// The failure, AWS-shaped.
    pub failure_message: Option<String>,
    /// The step's log, every attempt.
    pub log: Vec<LogLine>,
    /// Attempts made.
    pub attempts: u32,
    /// `onFailure`.
    pub on_failure: String,
    /// `maxAttempts`.
    pub max_attempts: u32,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<i64>,
    /// `isCritical`.
    pub is_critical: bool,
    /// `isEnd`.
    pub is_end: bool,
    /// The step that ran next (or the declared nextStep).
    pub next_step: Option<String>,
    /// What its AWS egress did, every attempt (absent when AWS access is off).
    pub egress: Option<EgressCounts>,
}

/// The whole execution.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The execution id.
    pub id: String,
    /// The document's name.
    pub document_name: String,
    /// Success, Failed, TimedOut or Cancelled.
    pub status: StepStatus,
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// The parameters, typed.
    pub parameters: Map<String, Value>,
    /// The executed steps, in order.
    pub steps: Vec<StepRecord>,
    /// Document outputs: name → value when the step succeeded.
    pub outputs: Vec<(String, Option<Value>)>,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
    /// Set when the engine itself failed (Docker down, image missing): the CLI exits 3.
    pub engine_error: Option<String>,
}

/// Options of an execution.
pub struct ExecOptions<'a> {
    /// The execution id; a fresh UUID when `None`.
    pub execution_id: Option<String>,
    /// The context values (`global:*`).
    pub context: &'a AwsContext,
    /// For validating steps whose inputs are known only now.
    pub catalog: &'a Catalog,
    /// The operator's timeout ceiling.
    pub max_timeout_secs: u64,
    /// The longest the whole execution may run (`limits.max_runbook_seconds`).
    pub max_run_secs: u64,
    /// Starts `aws:executeAutomation`'s children; `None` where there is no document store.
    pub children: Option<&'a dyn ChildRunbooks>,
    /// The signals sent to this execution (`aws:pause`, `aws:approve` wait on it).
    pub signals: Option<&'a SignalInbox>,
    /// How deep this execution is below a top-level one (0 at the top).
    pub depth: u32,
}

/// Runs a runbook with resolved parameters.
pub async fn execute(
    rb: &Runbook,
    params: Map<String, Value>,
    runner: &dyn StepRunner,
    options: &ExecOptions<'_>,
    observer: &mut (dyn FnMut(RunEvent<'_>) + Send),
    cancel: &CancellationToken,
) -> Execution {
    let id = options
        .execution_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let start = Timestamp::now();
    // `{{ssm:NAME}}` defaults are read from the endpoint's Parameter Store before any step.
    let mut params = params;
    if let Err(e) =
        super::parameters::resolve_parameter_store(&rb.parameters, &mut params, runner, &id, cancel)
            .await
    {
        return Execution {
            id,
            document_name: rb.name.clone(),
            status: StepStatus::Failed,
            start,
            end: Timestamp::now(),
            parameters: params,
            steps: Vec::new(),
            outputs: Vec::new(),
            failure_message: Some(e.to_string()),
            engine_error: None,
        };
    }
    let scope = Scope {
        params: params.clone(),
        system: context_dict(options.context, &id, start.utc()),
        outputs: HashMap::new(),
        unsuccessful: HashMap::new(),
        variables: rb
            .variables
            .iter()
            .map(|v| {
                let var = Variable {
                    ty: v.ty,
                    value: v.default.clone(),
                };
                (v.name.clone(), var)
            })
            .collect(),
    };
    // No deadline only when it is too far to be represented (it never comes).
    let deadline =
        tokio::time::Instant::now().checked_add(Duration::from_secs(options.max_run_secs));
    let out_of_time = format!(
        "The execution ran longer than limits.max_runbook_seconds ({} s) and was stopped.",
        options.max_run_secs
    );
    let mut run = Run {
        rb,
        id: &id,
        runner,
        options,
        observer,
        scope,
        state: State::new(cancel),
        records: Vec::new(),
        deadline,
        out_of_time,
        open_loops: 0,
    };
    run.main_steps().await;
    let Run {
        mut state,
        records,
        scope,
        ..
    } = run;
    if state.cancelled {
        state.status = StepStatus::Cancelled;
        state
            .failure_message
            .get_or_insert_with(|| "The execution was cancelled.".into());
    }
    Execution {
        id,
        document_name: rb.name.clone(),
        status: state.status,
        start,
        end: Timestamp::now(),
        parameters: params,
        steps: records,
        outputs: doc_outputs(rb, &scope),
        failure_message: state.failure_message,
        engine_error: state.engine_error,
    }
}

/// Where the execution goes after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// The step at this index of the same level (mainSteps, or the loop's steps).
    Step(usize),
    /// The end of the level: of the execution, or of the loop's iteration.
    End,
    /// The execution stops (an abort, a cancel without onCancel, the deadline, the bound).
    Stop,
    /// A step outside the level (an inner step's onFailure / onCancel naming a main step).
    Outside(String),
}

/// An execution in progress: what its steps share.
struct Run<'r> {
    rb: &'r Runbook,
    id: &'r str,
    runner: &'r dyn StepRunner,
    options: &'r ExecOptions<'r>,
    observer: &'r mut (dyn FnMut(RunEvent<'_>) + Send),
    scope: Scope,
    state: State,
    /// The ended step executions, in the order they ended.
    records: Vec<StepRecord>,
    deadline: Option<tokio::time::Instant>,
    out_of_time: String,
    /// Loops running now: counted as step executions before their records exist.
    open_loops: usize,
}

impl<'r> Run<'r> {
    /// Runs `mainSteps` from the first.
    async fn main_steps(&mut self) {
        let steps = &self.rb.steps;
        let mut next = if steps.is_empty() { None } else { Some(0) };
        while let Some(i) = next {
            let went = match &steps[i].kind {
                StepKind::Loop(spec) => self.run_loop(steps, i, spec).await,
                _ => self.one_step(steps, i).await,
            };
            next = match went {
                Next::Step(n) => Some(n),
                Next::Outside(t) => self.rb.step_index(&t),
                Next::End | Next::Stop => None,
            };
        }
    }

    /// Whether the execution stops before its next step.
    fn stops(&mut self) -> bool {
        let executed = self.records.len() + self.open_loops;
        self.state
            .stops_before_step(self.deadline, &self.out_of_time, executed)
    }

    /// Tells the observer a step ended and keeps its record.
    fn finish(&mut self, record: StepRecord) {
        (self.observer)(RunEvent::StepFinished { record: &record });
        self.records.push(record);
    }

    /// Runs step `i` of `level` (all its attempts) within the run deadline; where next.
    async fn one_step(&mut self, level: &'r [StepDecl], i: usize) -> Next {
        if self.stops() {
            return Next::Stop;
        }
        let step = &level[i];
        // The step gets its own token so that the deadline stops it the way a cancel does
        // (its container is killed and removed) without cancelling the execution.
        let step_token = self.state.token.child_token();
        let run = run_step(
            self.rb,
            step,
            self.id,
            self.runner,
            self.options,
            &mut self.scope,
            &mut *self.observer,
            &step_token,
        );
        let (timed_out, (mut record, branch_target, engine_failed)) =
            within(self.deadline, &step_token, run).await;
        if timed_out && !self.state.token.is_cancelled() {
            record.status = StepStatus::TimedOut;
            record.failure_message = Some(self.out_of_time.clone());
            record.next_step = None;
            self.finish(record);
            self.state.status = StepStatus::TimedOut;
            self.state.failure_message = Some(self.out_of_time.clone());
            return Next::Stop;
        }
        let next = next_after(
            level,
            i,
            &record,
            branch_target,
            engine_failed,
            &mut self.scope,
            &mut self.state,
        );
        record.next_step = match &next {
            Next::Step(n) => Some(level[*n].name.clone()),
            Next::Outside(t) => Some(t.clone()),
            Next::End | Next::Stop => None,
        };
        self.finish(record);
        next
    }

    /// Runs the aws:loop step `i` of `level`: its iterations (each runs the inner steps as
    /// steps of the execution), then its own record; where next.
    async fn run_loop(&mut self, level: &'r [StepDecl], i: usize, spec: &'r LoopSpec) -> Next {
        if self.stops() {
            return Next::Stop;
        }
        let step = &level[i];
        (self.observer)(RunEvent::StepStarted { step, attempt: 1 });
        let mut record = base_record(step, step.inputs.clone());
        let planned = match self.scope.substitute(&Value::Object(step.inputs.clone())) {
            Ok(Value::Object(inputs)) => {
                record.inputs = inputs;
                loop_steps::plan(spec, &record.inputs).map_err(|e| e.to_string())
            }
            Ok(_) => loop_steps::plan(spec, &Map::new()).map_err(|e| e.to_string()),
            Err(e) => Err(format!("The step's inputs could not be resolved: {e}")),
        };
        self.scope.unsuccessful.remove(&step.name);
        self.open_loops += 1;
        let ended = match planned {
            Ok(plan) => self.iterations(step, spec, &plan, &mut record).await,
            Err(e) => LoopEnd::Failed(e),
        };
        self.open_loops -= 1;
        record.end = Timestamp::now();
        let next = match ended {
            LoopEnd::Done => {
                record.status = StepStatus::Success;
                next_after(
                    level,
                    i,
                    &record,
                    None,
                    false,
                    &mut self.scope,
                    &mut self.state,
                )
            }
            LoopEnd::Failed(message) => {
                record.status = StepStatus::Failed;
                record.failure_message = Some(aws_plain_failure("InvalidInput", &message));
                next_after(
                    level,
                    i,
                    &record,
                    None,
                    false,
                    &mut self.scope,
                    &mut self.state,
                )
            }
            // An inner step decided (the loop inherits its onFailure / onCancel).
            LoopEnd::Inner(next) => {
                record.status = if self.state.cancelled {
                    StepStatus::Cancelled
                } else if self.state.status == StepStatus::TimedOut {
                    StepStatus::TimedOut
                } else {
                    StepStatus::Failed
                };
                // The inner step that decided, or (the deadline, the step bound, a cancel
                // between steps) why the execution stopped.
                let inner = self
                    .records
                    .last()
                    .filter(|r| r.status != StepStatus::Success)
                    .map(|r| {
                        let why = r.failure_message.as_deref().unwrap_or("");
                        format!("Step {} of the loop ended {}: {why}", r.name, r.status)
                    });
                record.failure_message = inner
                    .or_else(|| self.state.failure_message.clone())
                    .or_else(|| Some("The execution was cancelled.".into()));
                self.scope.outputs.remove(&step.name);
                self.scope
                    .unsuccessful
                    .insert(step.name.clone(), record.status.to_string());
                next
            }
        };
        record.next_step = match &next {
            Next::Step(n) => Some(level[*n].name.clone()),
            Next::Outside(t) => Some(t.clone()),
            Next::End | Next::Stop => None,
        };
        self.finish(record);
        next
    }

    /// The iterations of a loop; the loop's outputs are those of the last one.
    async fn iterations(
        &mut self,
        step: &'r StepDecl,
        spec: &'r LoopSpec,
        plan: &loop_steps::Plan,
        record: &mut StepRecord,
    ) -> LoopEnd {
        let mut done: u32 = 0;
        record.outputs = loop_steps::iteration_outputs(spec, plan, 0);
        loop {
            match loop_steps::again(spec, plan, done, &self.scope) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return LoopEnd::Failed(e.to_string()),
            }
            done += 1;
            record.outputs = loop_steps::iteration_outputs(spec, plan, done);
            let current: Map<String, Value> = record
                .outputs
                .iter()
                .map(|(n, _, v)| (n.clone(), v.clone()))
                .collect();
            self.scope.outputs.insert(step.name.clone(), current);
            self.loop_log(step, record, format!("iteration {done}"));
            let mut at = if spec.steps.is_empty() { None } else { Some(0) };
            while let Some(j) = at {
                at = match self.one_step(&spec.steps, j).await {
                    Next::Step(k) => Some(k),
                    Next::End => None,
                    other => return LoopEnd::Inner(other),
                };
            }
        }
        let condition_holds = spec.condition.is_some()
            && done >= plan.max
            && spec
                .condition
                .as_ref()
                .is_some_and(|c| branch::eval(c, &self.scope).unwrap_or(false));
        if condition_holds {
            let line = format!(
                "MaxIterations ({}) reached while LoopCondition still holds: the loop ends",
                plan.max
            );
            self.loop_log(step, record, line);
        }
        LoopEnd::Done
    }

    /// A line of the loop's own log (its record's, and the observer's).
    fn loop_log(&mut self, step: &StepDecl, record: &mut StepRecord, text: String) {
        let line = LogLine {
            stream: LogStream::Scriptbox,
            text,
        };
        (self.observer)(RunEvent::Log { step, line: &line });
        record.log.push(line);
    }
}

/// How a loop's iterations ended.
enum LoopEnd {
    /// Every iteration ran (or the condition stopped the loop, or MaxIterations did).
    Done,
    /// The loop itself failed (its inputs or its condition): its own onFailure applies.
    Failed(String),
    /// An inner step stopped the execution or went to a step outside the loop.
    Inner(Next),
}

/// The document's outputs: each with its value when its step succeeded.
fn doc_outputs(rb: &Runbook, scope: &Scope) -> Vec<(String, Option<Value>)> {
    rb.outputs
        .iter()
        .map(|o| {
            let v = scope
                .outputs
                .get(&o.step)
                .and_then(|m| m.get(&o.output))
                .cloned();
            (o.text.clone(), v)
        })
        .collect()
}

/// What the execution has come to so far, besides its records.
struct State {
    /// The token steps run under (fresh after a cancel, for the `onCancel` path).
    token: CancellationToken,
    /// The execution was cancelled.
    cancelled: bool,
    /// The execution's status so far.
    status: StepStatus,
    /// Why it did not succeed.
    failure_message: Option<String>,
    /// The engine's failure, if it failed.
    engine_error: Option<String>,
}

impl State {
    fn new(cancel: &CancellationToken) -> State {
        State {
            token: cancel.clone(),
            cancelled: false,
            status: StepStatus::Success,
            failure_message: None,
            engine_error: None,
        }
    }

    /// Whether the execution ends before its next step: past the run deadline, past
    /// [`MAX_STEP_EXECUTIONS`] steps (`executed` so far), or cancelled.
    fn stops_before_step(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        out_of_time: &str,
        executed: usize,
    ) -> bool {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            self.status = StepStatus::TimedOut;
            self.failure_message = Some(out_of_time.to_string());
            return true;
        }
        if executed >= MAX_STEP_EXECUTIONS {
            self.status = StepStatus::Failed;
            self.failure_message = Some(format!(
                "The execution ran {MAX_STEP_EXECUTIONS} steps; a loop through nextStep or aws:branch is assumed and the execution stopped."
            ));
            return true;
        }
        if self.token.is_cancelled() {
            self.cancelled = true;
            return true;
        }
        false
    }
}

/// Where to go after step `i` of `level` ended as `record`, updating the scope and the state.
fn next_after(
    level: &[StepDecl],
    i: usize,
    record: &StepRecord,
    branch_target: Option<String>,
    engine_failed: bool,
    scope: &mut Scope,
    state: &mut State,
) -> Next {
    let step = &level[i];
    let find = |t: &str| match level.iter().position(|s| s.name == t) {
        Some(n) => Next::Step(n),
        None => Next::Outside(t.to_string()),
    };
    let successor = |target: Option<String>| -> Next {
        match target.or_else(|| step.next_step.clone()) {
            Some(t) => find(&t),
            None if i + 1 < level.len() => Next::Step(i + 1),
            None => Next::End,
        }
    };
    match record.status {
        StepStatus::Success => {
            let mut outs = Map::new();
            for (name, _, v) in &record.outputs {
                outs.insert(name.clone(), v.clone());
            }
            if let Some(p) = &record.payload {
                outs.insert("Payload".into(), p.clone());
            }
            scope.outputs.insert(step.name.clone(), outs);
            scope.unsuccessful.remove(&step.name);
            if step.is_end {
                Next::End
            } else {
                successor(branch_target)
            }
        }
        StepStatus::Cancelled => {
            state.cancelled = true;
            scope.outputs.remove(&step.name);
            scope
                .unsuccessful
                .insert(step.name.clone(), "Cancelled".into());
            match &step.on_cancel {
                OnCancel::Abort => Next::Stop,
                OnCancel::Step(t) => {
                    state.token = CancellationToken::new();
                    find(t)
                }
            }
        }
        StepStatus::Failed | StepStatus::TimedOut => {
            scope.outputs.remove(&step.name);
            scope
                .unsuccessful
                .insert(step.name.clone(), record.status.to_string());
            let aborts = engine_failed || step.on_failure == OnFailure::Abort;
            if (step.is_critical || aborts) && state.status == StepStatus::Success {
                state.status = record.status;
                state.failure_message = record.failure_message.clone();
            }
            if engine_failed {
                state.engine_error = record.failure_message.clone();
            }
            match &step.on_failure {
                _ if aborts => Next::Stop,
                OnFailure::Step(t) => find(t),
                OnFailure::Continue if step.is_end => Next::End,
                _ => successor(None),
            }
        }
    }
}

/// Runs `run` (a step under `step_token`) to its end; at the deadline, cancels the step and
/// waits for it to stop. Tells whether the deadline came first.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    step_token: &CancellationToken,
    run: impl std::future::Future<Output = T>,
) -> (bool, T) {
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => (false, r),
        _ = until(deadline) => {
            step_token.cancel();
            (true, run.await)
        }
    }
}

/// Waits until the deadline; forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The most bytes of log lines from earlier attempts a step's record keeps (every line is
/// still passed to the observer, which stores the execution's log). The last attempt's lines
/// are always kept; the container's output limit bounds them.
pub const MAX_EARLIER_ATTEMPTS_LOG_BYTES: usize = 1024 * 1024;

fn base_record(step: &StepDecl, inputs: Map<String, Value>) -> StepRecord {
    let now = Timestamp::now();
    StepRecord {
        name: step.name.clone(),
        action_kind: step.action_kind(),
        step_execution_id: uuid::Uuid::new_v4().to_string(),
        status: StepStatus::Failed,
        start: now,
        end: now,
        inputs,
        outputs: Vec::new(),
        payload: None,
        failure_message: None,
        log: Vec::new(),
        attempts: 1,
        on_failure: step.on_failure.as_string(),
        max_attempts: step.max_attempts,
        timeout_seconds: step.timeout_seconds,
        is_critical: step.is_critical,
        is_end: step.is_end,
        next_step: None,
        egress: None,
    }
}

/// The runbook's `assumeRole` after substitution: `None` when absent or empty (the step then
/// runs without a role), else an IAM role ARN.
fn resolve_assume_role(rb: &Runbook, scope: &Scope) -> Result<Option<String>, StepFailure> {
    let invalid = |message: String| StepFailure::new("InvalidInput", message);
    let Some(written) = &rb.assume_role else {
        return Ok(None);
    };
    let value = scope
        .substitute(written)
        .map_err(|e| invalid(format!("assumeRole could not be resolved: {e}")))?;
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => {
            crate::aws::credentials::check_role_arn(&s).map_err(|e| invalid(e.to_string()))?;
            Ok(Some(s))
        }
        _ => Err(invalid(
            "assumeRole must be a string (an IAM role ARN)".into(),
        )),
    }
}

/// Runs one step (all its attempts). Returns its record, a branch's chosen step, and whether
/// the engine itself failed.
#[allow(clippy::too_many_arguments)] // Reason: the executor's state, passed explicitly.
async fn run_step(
    rb: &Runbook,
    step: &StepDecl,
    automation_id: &str,
    runner: &dyn StepRunner,
    options: &ExecOptions<'_>,
    scope: &mut Scope,
    observer: &mut (dyn FnMut(RunEvent<'_>) + Send),
    cancel: &CancellationToken,
) -> (StepRecord, Option<String>, bool) {
    observer(RunEvent::StepStarted { step, attempt: 1 });
    let resolved = scope.substitute(&Value::Object(step.inputs.clone()));
    let mut record = base_record(step, step.inputs.clone());
    let fail = |record: &mut StepRecord, kind: &str, message: String| {
        record.status = StepStatus::Failed;
        record.failure_message = Some(aws_plain_failure(kind, &message));
        record.end = Timestamp::now();
    };
    let inputs = match resolved {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => {
            fail(
                &mut record,
                "InvalidInput",
                format!("The step's inputs could not be resolved: {e}"),
            );
            return (record, None, false);
        }
    };
    record.inputs = inputs.clone();
    let role = if runner.gives_credentials() {
        resolve_assume_role(rb, scope)
    } else {
        Ok(None)
    };
    let assume_role = match role {
        Ok(role) => role,
        Err(f) => {
            fail(&mut record, f.kind, f.message);
            return (record, None, false);
        }
    };
    let step_execution_id = record.step_execution_id.clone();
    let mut cx = RunCx {
        runner,
        options,
        attachments: &rb.attachments,
        scope,
        automation_id,
        step_execution_id: &step_execution_id,
        observer,
        cancel,
        assume_role,
    };
    let ran = step.action_kind().run(&mut cx, step, &inputs).await;
    match ran {
        Ran::Failed(f) => {
            fail(&mut record, f.kind, f.message);
            (record, None, false)
        }
        Ran::Attempted { last, attempts } => {
            record.attempts = attempts;
            record.log = last.log;
            record.egress = last.egress;
            record.status = last.status;
            record.failure_message = last.failure;
            record.payload = last.payload;
            if last.status == StepStatus::Success {
                record.outputs = last.outputs;
            }
            record.end = Timestamp::now();
            (record, last.next, last.engine_failed)
        }
    }
}

/// Runs one step of action `A`: what is resolved once, then attempts while `A::RETRIES` and
/// `maxAttempts` allow. The record keeps every attempt's log lines, bounded by
/// [`MAX_EARLIER_ATTEMPTS_LOG_BYTES`] for the attempts before the last.
pub(crate) fn attempts<'a, A: ActionSpec>(
    cx: &'a mut RunCx<'_>,
    step: &'a StepDecl,
    inputs: &'a Map<String, Value>,
) -> BoxFuture<'a, Ran> {
    Box::pin(async move {
        let ready = match A::prepare(cx, step, inputs) {
            Ok(r) => r,
            Err(f) => return Ran::Failed(f),
        };
        let mut log: Vec<LogLine> = Vec::new();
        let mut payload = None;
        let mut egress: Option<EgressCounts> = None;
        let mut attempt = 1;
        loop {
            if attempt > 1 {
                let kept: usize = log.iter().map(|l| l.text.len()).sum();
                if kept > MAX_EARLIER_ATTEMPTS_LOG_BYTES {
                    let lines = log.len();
                    log.clear();
                    log.push(LogLine {
                        stream: LogStream::Scriptbox,
                        text: format!(
                            "{lines} log lines of attempts before attempt {attempt} are left out of this record (more than {MAX_EARLIER_ATTEMPTS_LOG_BYTES} bytes)"
                        ),
                    });
                }
                (cx.observer)(RunEvent::StepStarted { step, attempt });
                log.push(LogLine {
                    stream: LogStream::Scriptbox,
                    text: format!("attempt {attempt} of {}", step.max_attempts),
                });
            }
            let mut last = A::attempt(cx, step, &ready).await;
            log.append(&mut last.log);
            if let Some(counts) = &last.egress {
                egress.get_or_insert_with(EgressCounts::default).add(counts);
            }
            // A payload stays in the record once a script returned one, as it always has.
            if last.payload.is_some() {
                payload.clone_from(&last.payload);
            }
            let unsuccessful = matches!(last.status, StepStatus::Failed | StepStatus::TimedOut);
            if A::RETRIES && !last.engine_failed && unsuccessful && cx.cancel.is_cancelled() {
                // The cancel raced an attempt that ended for its own reason (an output limit, a
                // timeout): the operator asked to stop, so the step is Cancelled.
                last.status = StepStatus::Cancelled;
                last.failure = Some("The step was cancelled.".into());
            }
            let retry = A::RETRIES
                && !last.engine_failed
                && unsuccessful
                && attempt < step.max_attempts
                && !cx.cancel.is_cancelled();
            if !retry {
                last.log = log;
                last.payload = payload;
                last.egress = egress;
                return Ran::Attempted {
                    last,
                    attempts: attempt,
                };
            }
            attempt += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::document::{LoadOptions, load_str};
    use crate::runbook::yaml::Format;
    use serde_json::json;
    use std::sync::Mutex;

    /// A fake runner: each handler name maps to a scripted outcome; records what ran.
    struct Fake {
        /// handler → list of outcomes per attempt (the last repeats).
        outcomes: HashMap<String, Vec<(StepStatus, Value)>>,
        ran: Mutex<Vec<String>>,
        /// Handlers that block until cancelled.
        blocking: Vec<String>,
        /// Bytes of output each run prints (one line).
        log_bytes: usize,
        /// Whether it plays a runner with AWS access on.
        credentials: bool,
        /// The role each run was given.
        roles: Mutex<Vec<Option<String>>>,
    }

    impl Fake {
        fn new(outcomes: &[(&str, &[(StepStatus, Value)])]) -> Fake {
            Fake {
                outcomes: outcomes
                    .iter()
                    .map(|(h, o)| (h.to_string(), o.to_vec()))
                    .collect(),
                ran: Mutex::new(Vec::new()),
                blocking: Vec::new(),
                log_bytes: 0,
                credentials: false,
                roles: Mutex::new(Vec::new()),
            }
        }
    }

    impl StepRunner for Fake {
        fn gives_credentials(&self) -> bool {
            self.credentials
        }

        fn run<'a>(
            &'a self,
            step: &'a ValidatedStep,
            ctx: RunContext<'a>,
        ) -> BoxFuture<'a, Result<StepResult, ExecuteError>> {
            Box::pin(async move {
                let handler = step.entry.as_ref().unwrap().function.clone();
                self.roles
                    .lock()
                    .unwrap()
                    .push(ctx.assume_role.map(str::to_string));
                let n = {
                    let mut ran = self.ran.lock().unwrap();
                    ran.push(handler.clone());
                    ran.iter().filter(|h| **h == handler).count()
                };
                (ctx.on_log)(&LogLine {
                    stream: LogStream::Stdout,
                    text: format!("{handler} ran ({})", ctx.automation_execution_id),
                });
                let (mut status, payload) = if self.blocking.contains(&handler) {
                    ctx.cancel.cancelled().await;
                    (StepStatus::Cancelled, Value::Null)
                } else {
                    let list = self.outcomes.get(&handler).cloned().unwrap_or_default();
                    list.get(n - 1)
                        .or(list.last())
                        .cloned()
                        .unwrap_or((StepStatus::Success, Value::Null))
                };
                if ctx.cancel.is_cancelled() {
                    status = StepStatus::Cancelled;
                }
                Ok(StepResult {
                    execution_id: ctx.step_execution_id,
                    runtime: step.runtime.clone(),
                    status,
                    payload,
                    failure_message: (status != StepStatus::Success)
                        .then(|| format!("{handler} {status}")),
                    error: None,
                    log: (self.log_bytes > 0)
                        .then(|| LogLine {
                            stream: LogStream::Stdout,
                            text: "x".repeat(self.log_bytes),
                        })
                        .into_iter()
                        .collect(),
                    log_truncated: false,
                    kill_reason: None,
                    exit_code: Some(0),
                    container_id: None,
                    duration_ms: 1,
                    egress: None,
                })
            })
        }
    }

    /// A YAML runbook of script steps: each `(name, extra step YAML)`; handler = name.
    fn doc(steps: &[(&str, &str)], extra: &str) -> Runbook {
        let mut y = String::from("schemaVersion: '0.3'\n");
        y.push_str(extra);
        y.push_str("mainSteps:\n");
        for (name, more) in steps {
            if more.starts_with("action:") {
                y.push_str(&format!(
                    "  - name: {name}\n    {}\n",
                    more.replace('\n', "\n    ")
                ));
                continue;
            }
            y.push_str(&format!(
                "  - name: {name}\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: {name}\n      Script: 'def {name}(e, c): pass'\n"
            ));
            if !more.is_empty() {
                y.push_str(&format!("    {}\n", more.replace('\n', "\n    ")));
            }
        }
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        load_str(
            &y,
            "test",
            Format::Yaml,
            std::path::Path::new("."),
            &options,
        )
        .unwrap_or_else(|e| panic!("{e}\n{y}"))
    }

    async fn run_with(
        rb: &Runbook,
        fake: &Fake,
        cancel: &CancellationToken,
    ) -> (Execution, Vec<String>) {
        run_limited(rb, fake, cancel, 86_400).await
    }

    async fn run_limited(
        rb: &Runbook,
        fake: &Fake,
        cancel: &CancellationToken,
        max_run_secs: u64,
    ) -> (Execution, Vec<String>) {
        let catalog = Catalog::builtin();
        let ctx = AwsContext::default();
        let options = ExecOptions {
            execution_id: Some("exec-1".into()),
            context: &ctx,
            catalog: &catalog,
            max_timeout_secs: 600,
            max_run_secs,
            children: None,
            signals: None,
            depth: 0,
        };
        let mut events = Vec::new();
        let params = crate::runbook::parameters::resolve(&rb.parameters, &[]).unwrap();
        let e = execute(
            rb,
            params,
            fake,
            &options,
            &mut |ev| {
                events.push(match ev {
                    RunEvent::StepStarted { step, attempt } => {
                        format!("start {} {attempt}", step.name)
                    }
                    RunEvent::Log { step, line } => format!("log {} {}", step.name, line.text),
                    RunEvent::Waiting { step, .. } => format!("waiting {}", step.name),
                    RunEvent::StepFinished { record } => {
                        format!("end {} {}", record.name, record.status)
                    }
                })
            },
            cancel,
        )
        .await;
        (e, events)
    }

    async fn run(rb: &Runbook, fake: &Fake) -> Execution {
        run_with(rb, fake, &CancellationToken::new()).await.0
    }

    fn names(e: &Execution) -> Vec<String> {
        e.steps
            .iter()
            .map(|s| format!("{}:{}", s.name, s.status))
            .collect()
    }

    const FAIL: &[(StepStatus, Value)] = &[(StepStatus::Failed, Value::Null)];

    #[tokio::test]
    async fn steps_run_in_order_and_events_stream() {
        let rb = doc(&[("a", ""), ("b", "")], "");
        let (e, events) = run_with(&rb, &Fake::new(&[]), &CancellationToken::new()).await;
        assert_eq!(names(&e), ["a:Success", "b:Success"]);
        assert_eq!(e.status, StepStatus::Success);
        assert_eq!(
            events,
            [
                "start a 1",
                "log a a ran (exec-1)",
                "end a Success",
                "start b 1",
                "log b b ran (exec-1)",
                "end b Success"
            ]
        );
        assert_eq!(e.steps[0].next_step.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn assume_role_is_resolved_and_checked_only_with_aws_access() {
        // A template's placeholder role runs as it always has without AWS access.
        let rb = doc(&[("a", "")], "assumeRole: '${automation_role}'\n");
        let without = Fake::new(&[]);
        let e = run(&rb, &without).await;
        assert_eq!(names(&e), ["a:Success"]);
        assert_eq!(*without.roles.lock().unwrap(), [None]);
        // With AWS access it must be a role ARN: the step fails naming the rule, nothing runs.
        let with = Fake {
            credentials: true,
            ..Fake::new(&[])
        };
        let e = run(&rb, &with).await;
        assert_eq!(names(&e), ["a:Failed"]);
        let message = e.steps[0].failure_message.clone().unwrap_or_default();
        assert!(message.contains("InvalidInput - assumeRole"), "{message}");
        assert!(message.contains("is not an IAM role ARN"), "{message}");
        assert!(with.roles.lock().unwrap().is_empty());
        // Through a parameter, as AWS's own runbooks write it; empty means no role.
        let arn = "arn:aws:iam::123456789012:role/automation";
        for (value, want) in [(arn, Some(arn.to_string())), ("", None)] {
            let rb = doc(
                &[("a", "")],
                &format!(
                    "assumeRole: '{{{{ AutomationAssumeRole }}}}'\nparameters:\n  AutomationAssumeRole:\n    type: String\n    default: '{value}'\n"
                ),
            );
            let with = Fake {
                credentials: true,
                ..Fake::new(&[])
            };
            let e = run(&rb, &with).await;
            assert_eq!(names(&e), ["a:Success"], "{value:?}");
            assert_eq!(*with.roles.lock().unwrap(), [want]);
        }
    }

    #[tokio::test]
    async fn abort_is_the_default() {
        let rb = doc(&[("a", ""), ("b", "")], "");
        let e = run(&rb, &Fake::new(&[("a", FAIL)])).await;
        assert_eq!(names(&e), ["a:Failed"]);
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.failure_message.as_deref(), Some("a Failed"));
    }

    #[tokio::test]
    async fn continue_goes_on_and_is_not_critical() {
        let rb = doc(&[("a", "onFailure: Continue"), ("b", "")], "");
        let e = run(&rb, &Fake::new(&[("a", FAIL)])).await;
        assert_eq!(names(&e), ["a:Failed", "b:Success"]);
        assert!(!e.steps[0].is_critical);
        assert_eq!(e.status, StepStatus::Success);
        // Continue with isCritical: true: goes on, but the execution fails.
        let rb = doc(
            &[("a", "onFailure: Continue\nisCritical: true"), ("b", "")],
            "",
        );
        let e = run(&rb, &Fake::new(&[("a", FAIL)])).await;
        assert_eq!(names(&e), ["a:Failed", "b:Success"]);
        assert_eq!(e.status, StepStatus::Failed);
    }

    #[tokio::test]
    async fn on_failure_step_jumps() {
        let rb = doc(
            &[
                ("a", "onFailure: step:rollback"),
                ("b", "isEnd: true"),
                ("rollback", ""),
            ],
            "",
        );
        let e = run(&rb, &Fake::new(&[("a", FAIL)])).await;
        assert_eq!(names(&e), ["a:Failed", "rollback:Success"]);
        assert_eq!(e.status, StepStatus::Failed);
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(names(&e), ["a:Success", "b:Success"]);
        assert_eq!(e.status, StepStatus::Success);
        // isCritical false with a jump: the execution succeeds.
        let rb = doc(
            &[
                ("a", "onFailure: step:fix\nisCritical: false"),
                ("b", "isEnd: true"),
                ("fix", ""),
            ],
            "",
        );
        let e = run(&rb, &Fake::new(&[("a", FAIL)])).await;
        assert_eq!(names(&e), ["a:Failed", "fix:Success"]);
        assert_eq!(e.status, StepStatus::Success);
    }

    #[tokio::test]
    async fn timed_out_critical_step_times_out_the_execution() {
        let rb = doc(&[("a", "")], "");
        let e = run(
            &rb,
            &Fake::new(&[("a", &[(StepStatus::TimedOut, Value::Null)])]),
        )
        .await;
        assert_eq!(e.status, StepStatus::TimedOut);
    }

    #[tokio::test]
    async fn max_attempts_retries() {
        let rb = doc(&[("a", "maxAttempts: 3")], "");
        let fake = Fake::new(&[(
            "a",
            &[
                (StepStatus::Failed, Value::Null),
                (StepStatus::Failed, Value::Null),
                (StepStatus::Success, Value::Null),
            ],
        )]);
        let (e, events) = run_with(&rb, &fake, &CancellationToken::new()).await;
        assert_eq!(names(&e), ["a:Success"]);
        assert_eq!(e.steps[0].attempts, 3);
        assert!(events.contains(&"start a 3".to_string()));
        let fake = Fake::new(&[("a", FAIL)]);
        let e = run(&rb, &fake).await;
        assert_eq!(e.steps[0].attempts, 3);
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(fake.ran.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn next_step_and_is_end() {
        let rb = doc(
            &[
                ("a", "nextStep: c"),
                ("b", ""),
                ("c", "isEnd: true"),
                ("d", ""),
            ],
            "",
        );
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(names(&e), ["a:Success", "c:Success"]);
    }

    #[tokio::test]
    async fn typed_outputs_flow_and_selector_failures_fail_the_step() {
        let rb = doc(
            &[
                (
                    "a",
                    "outputs:\n  - {Name: N, Selector: $.Payload.n, Type: Integer}\n  - {Name: M, Selector: $.Payload, Type: StringMap}",
                ),
                (
                    "b",
                    "onFailure: Continue\noutputs:\n  - {Name: X, Selector: $.Payload.missing, Type: String}",
                ),
            ],
            "outputs: [a.N, a.M, b.X]\n",
        );
        let fake = Fake::new(&[("a", &[(StepStatus::Success, serde_json::json!({"n": 4}))])]);
        let e = run(&rb, &fake).await;
        assert_eq!(e.steps[0].outputs[0].2, serde_json::json!(4));
        assert_eq!(e.steps[1].status, StepStatus::Failed);
        assert!(
            e.steps[1]
                .failure_message
                .as_ref()
                .unwrap()
                .contains("selector $.Payload.missing matched nothing")
        );
        assert_eq!(
            e.outputs[0],
            ("a.N".to_string(), Some(serde_json::json!(4)))
        );
        assert_eq!(e.outputs[2], ("b.X".to_string(), None));
    }

    #[tokio::test]
    async fn branch_and_sleep_steps() {
        let rb = doc(
            &[
                (
                    "check",
                    "action: aws:branch\ninputs:\n  Choices:\n    - NextStep: big\n      Variable: '{{ N }}'\n      NumericGreater: 10\n  Default: small",
                ),
                ("big", "isEnd: true"),
                ("small", "nextStep: nap"),
                ("nap", "action: aws:sleep\ninputs:\n  Duration: PT0.01S"),
            ],
            "parameters:\n  N: {type: Integer, default: 3}\n",
        );
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(names(&e), ["check:Success", "small:Success", "nap:Success"]);
        assert_eq!(e.steps[0].next_step.as_deref(), Some("small"));
    }

    #[tokio::test]
    async fn sleep_times_out() {
        let rb = doc(
            &[(
                "nap",
                "action: aws:sleep\ntimeoutSeconds: 1\ninputs:\n  Duration: PT1H",
            )],
            "",
        );
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(e.status, StepStatus::TimedOut);
    }

    #[tokio::test]
    async fn cancel_stops_and_on_cancel_runs_its_step() {
        let rb = doc(
            &[
                ("a", "onCancel: step:cleanup"),
                ("b", "isEnd: true"),
                ("cleanup", ""),
            ],
            "",
        );
        let mut fake = Fake::new(&[]);
        fake.blocking = vec!["a".into()];
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let (e, _) = run_with(&rb, &fake, &cancel).await;
        assert_eq!(names(&e), ["a:Cancelled", "cleanup:Success"]);
        assert_eq!(e.status, StepStatus::Cancelled);
        // Without onCancel: the execution stops.
        let rb = doc(&[("a", ""), ("b", "")], "");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let (e, _) = run_with(&rb, &Fake::new(&[]), &cancel).await;
        assert!(e.steps.is_empty());
        assert_eq!(e.status, StepStatus::Cancelled);
    }

    #[tokio::test]
    async fn branch_loops_are_bounded() {
        let rb = doc(&[("a", "nextStep: a")], "");
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(e.steps.len(), MAX_STEP_EXECUTIONS);
        assert_eq!(e.status, StepStatus::Failed);
    }

    #[tokio::test]
    async fn the_whole_run_has_a_deadline() {
        let rb = doc(
            &[
                ("z", "action: aws:sleep\ninputs: {Duration: PT30S}"),
                ("a", ""),
            ],
            "",
        );
        let fake = Fake::new(&[]);
        let began = std::time::Instant::now();
        let (e, _) = run_limited(&rb, &fake, &CancellationToken::new(), 1).await;
        assert!(began.elapsed() < Duration::from_secs(10));
        assert_eq!(e.status, StepStatus::TimedOut);
        assert_eq!(names(&e), ["z:TimedOut"]);
        assert!(
            e.failure_message
                .as_deref()
                .unwrap()
                .contains("longer than limits.max_runbook_seconds (1 s)"),
            "{:?}",
            e.failure_message
        );
        // A script step blocked in its container is stopped through its token, like a cancel.
        let rb = doc(&[("b", "")], "");
        let mut fake = Fake::new(&[]);
        fake.blocking.push("b".into());
        let (e, _) = run_limited(&rb, &fake, &CancellationToken::new(), 1).await;
        assert_eq!(names(&e), ["b:TimedOut"]);
        assert_eq!(e.status, StepStatus::TimedOut);
    }

    #[tokio::test]
    async fn retries_keep_the_record_log_bounded() {
        let rb = doc(&[("a", "maxAttempts: 100")], "");
        let mut fake = Fake::new(&[("a", FAIL)]);
        fake.log_bytes = 300 * 1024;
        let e = run(&rb, &fake).await;
        assert_eq!(e.steps[0].attempts, 100);
        let kept: usize = e.steps[0].log.iter().map(|l| l.text.len()).sum();
        assert!(
            kept <= MAX_EARLIER_ATTEMPTS_LOG_BYTES + 2 * fake.log_bytes,
            "{kept}"
        );
        assert!(
            e.steps[0]
                .log
                .iter()
                .any(|l| l.text.contains("are left out of this record")),
        );
    }

    /// Loads a whole YAML runbook (for loops, whose inner steps `doc` does not write).
    fn doc_text(y: &str) -> Runbook {
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        load_str(y, "test", Format::Yaml, std::path::Path::new("."), &options)
            .unwrap_or_else(|e| panic!("{e}\n{y}"))
    }

    /// An executeScript step (handler = name) at the indent of a loop's `Steps`, with `more`.
    fn inner(name: &str, more: &str) -> String {
        format!(
            "        - name: {name}\n          action: aws:executeScript\n          inputs:\n            Runtime: python3.11\n            Handler: {name}\n            Script: 'def {name}(e, c): pass'\n{more}"
        )
    }

    fn ok(v: Value) -> (StepStatus, Value) {
        (StepStatus::Success, v)
    }

    #[tokio::test]
    async fn a_loop_runs_its_steps_once_per_iterator() {
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nmainSteps:\n  - name: each\n    action: aws:loop\n    inputs:\n      Iterators: [a, b, c]\n      Steps:\n{}  - name: after\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: after\n      Script: 'def after(e, c): pass'\n      InputPayload: {{last: '{{{{ each.CurrentIteratorValue }}}}', n: '{{{{ each.CurrentIteration }}}}', w: '{{{{ work.Payload }}}}'}}\noutputs: [each.CurrentIteration]\n",
            inner(
                "work",
                "            InputPayload: {item: '{{ each.CurrentIteratorValue }}', n: '{{ each.CurrentIteration }}'}\n"
            )
        ));
        let fake = Fake::new(&[("work", &[ok(json!(1)), ok(json!(2)), ok(json!(3))])]);
        let (e, events) = run_with(&rb, &fake, &CancellationToken::new()).await;
        assert_eq!(
            names(&e),
            [
                "work:Success",
                "work:Success",
                "work:Success",
                "each:Success",
                "after:Success"
            ]
        );
        for (k, item) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(
                e.steps[k].inputs["InputPayload"],
                json!({"item": item, "n": k + 1})
            );
        }
        // After the loop: the last iteration's values, and the inner step's last outputs.
        assert_eq!(
            e.steps[4].inputs["InputPayload"],
            json!({"last": "c", "n": 3, "w": 3})
        );
        assert_eq!(e.outputs[0].1, Some(json!(3)));
        assert_eq!(e.steps[3].next_step.as_deref(), Some("after"));
        assert_eq!(events[0], "start each 1");
        assert!(
            events.contains(&"log each iteration 3".to_string()),
            "{events:?}"
        );
        assert_eq!(e.status, StepStatus::Success);
    }

    #[tokio::test]
    async fn a_do_while_loop_runs_until_its_condition_fails() {
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nvariables:\n  Count: {{type: Integer, default: 0}}\nmainSteps:\n  - name: poll\n    action: aws:loop\n    inputs:\n      MaxIterations: 10\n      LoopCondition:\n        Variable: '{{{{ check.Retry }}}}'\n        BooleanEquals: true\n      Steps:\n{}        - name: bump\n          action: aws:updateVariable\n          inputs:\n            Name: variable:Count\n            Value: '{{{{ poll.CurrentIteration }}}}'\n          isEnd: true\n        - name: never\n          action: aws:sleep\n          inputs: {{Duration: PT1H}}\n  - name: report\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: report\n      Script: 'def report(e, c): pass'\n      InputPayload: {{count: '{{{{ variable:Count }}}}'}}\n",
            inner(
                "check",
                "          outputs:\n            - {Name: Retry, Selector: $.Payload.retry, Type: Boolean}\n"
            )
        ));
        let fake = Fake::new(&[(
            "check",
            &[
                ok(json!({"retry": true})),
                ok(json!({"retry": true})),
                ok(json!({"retry": false})),
            ],
        )]);
        let e = run(&rb, &fake).await;
        assert_eq!(
            names(&e),
            [
                "check:Success",
                "bump:Success",
                "check:Success",
                "bump:Success",
                "check:Success",
                "bump:Success",
                "poll:Success",
                "report:Success"
            ]
        );
        assert_eq!(e.steps[7].inputs["InputPayload"], json!({"count": 3}));
        assert_eq!(e.steps[6].outputs[0].2, json!(3));
        // MaxIterations ends a loop whose condition still holds, and says so.
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nmainSteps:\n  - name: poll\n    action: aws:loop\n    inputs:\n      MaxIterations: 2\n      LoopCondition: {{Variable: '{{{{ check.Retry }}}}', BooleanEquals: true}}\n      Steps:\n{}",
            inner(
                "check",
                "          outputs:\n            - {Name: Retry, Selector: $.Payload.retry, Type: Boolean}\n"
            )
        ));
        let fake = Fake::new(&[("check", &[ok(json!({"retry": true}))])]);
        let e = run(&rb, &fake).await;
        assert_eq!(
            names(&e),
            ["check:Success", "check:Success", "poll:Success"]
        );
        assert!(
            e.steps[2].log.iter().any(|l| l
                .text
                .contains("MaxIterations (2) reached while LoopCondition still holds")),
            "{:?}",
            e.steps[2].log
        );
    }

    #[tokio::test]
    async fn on_failure_inside_a_loop_is_the_loops() {
        let body = |on_failure: &str| {
            format!(
                "schemaVersion: '0.3'\nmainSteps:\n  - name: each\n    action: aws:loop\n    inputs:\n      Iterators: [a, b]\n      Steps:\n{}{}  - name: after\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n    isEnd: true\n  - name: rescue\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n",
                inner("flaky", &format!("          {on_failure}\n")),
                inner("next", "")
            )
        };
        let fails_second = Fake::new(&[(
            "flaky",
            &[ok(Value::Null), (StepStatus::Failed, Value::Null)],
        )]);
        // Abort (the default): the loop fails and the execution stops.
        let e = run(&doc_text(&body("onFailure: Abort")), &fails_second).await;
        assert_eq!(
            names(&e),
            [
                "flaky:Success",
                "next:Success",
                "flaky:Failed",
                "each:Failed"
            ]
        );
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.failure_message.as_deref(), Some("flaky Failed"));
        assert_eq!(
            e.steps[3].failure_message.as_deref(),
            Some("Step flaky of the loop ended Failed: flaky Failed")
        );
        // Continue: the iteration goes on.
        let fake = Fake::new(&[("flaky", FAIL)]);
        let e = run(&doc_text(&body("onFailure: Continue")), &fake).await;
        assert_eq!(
            names(&e),
            [
                "flaky:Failed",
                "next:Success",
                "flaky:Failed",
                "next:Success",
                "each:Success",
                "after:Success"
            ]
        );
        assert_eq!(e.status, StepStatus::Success);
        // step:X naming a main step: the loop fails there and the execution goes on at X.
        let fails_second = Fake::new(&[(
            "flaky",
            &[ok(Value::Null), (StepStatus::Failed, Value::Null)],
        )]);
        let e = run(&doc_text(&body("onFailure: step:rescue")), &fails_second).await;
        assert_eq!(
            names(&e),
            [
                "flaky:Success",
                "next:Success",
                "flaky:Failed",
                "each:Failed",
                "rescue:Success"
            ]
        );
        assert_eq!(e.steps[3].next_step.as_deref(), Some("rescue"));
        assert_eq!(e.status, StepStatus::Failed, "flaky is critical");
        // step:X naming an inner step: the iteration goes on there.
        let fake = Fake::new(&[("flaky", FAIL)]);
        let e = run(
            &doc_text(&body("onFailure: step:next\n          isCritical: false")),
            &fake,
        )
        .await;
        assert_eq!(names(&e).len(), 6, "{:?}", names(&e));
        assert_eq!(e.status, StepStatus::Success);
    }

    #[tokio::test]
    async fn a_loop_failing_on_its_own_uses_its_own_on_failure() {
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nparameters:\n  Items: {{type: String, default: notalist}}\nmainSteps:\n  - name: each\n    action: aws:loop\n    onFailure: Continue\n    inputs:\n      Iterators: '{{{{ Items }}}}'\n      Steps:\n{}  - name: after\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n",
            inner("work", "")
        ));
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(names(&e), ["each:Failed", "after:Success"]);
        let message = e.steps[0].failure_message.clone().unwrap_or_default();
        assert!(
            message.contains("Iterators must be a list (a StringList), not a string"),
            "{message}"
        );
        assert_eq!(e.status, StepStatus::Success);
    }

    #[tokio::test]
    async fn inner_steps_count_against_the_bound_and_obey_cancel_and_the_deadline() {
        // 100 iterations of 10 steps pass MAX_STEP_EXECUTIONS: the execution stops there.
        let mut steps = String::new();
        for k in 0..10 {
            steps.push_str(&format!(
                "        - {{name: set{k}, action: aws:updateVariable, inputs: {{Name: 'variable:Go', Value: true}}}}\n"
            ));
        }
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nvariables:\n  Go: {{type: Boolean, default: true}}\nmainSteps:\n  - name: spin\n    action: aws:loop\n    inputs:\n      LoopCondition: {{Variable: '{{{{ variable:Go }}}}', BooleanEquals: true}}\n      Steps:\n{steps}"
        ));
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(e.steps.len(), MAX_STEP_EXECUTIONS);
        assert_eq!(e.steps.last().map(|s| s.name.as_str()), Some("spin"));
        let spin = e.steps.last().and_then(|s| s.failure_message.clone());
        assert!(spin.unwrap_or_default().contains("ran 1000 steps"));
        assert_eq!(e.status, StepStatus::Failed);
        assert!(
            e.failure_message
                .as_deref()
                .unwrap_or("")
                .contains("ran 1000 steps"),
            "{:?}",
            e.failure_message
        );
        // A cancel during an inner step: it and the loop end Cancelled, onCancel of the inner
        // step runs (a main step).
        let rb = doc_text(&format!(
            "schemaVersion: '0.3'\nmainSteps:\n  - name: each\n    action: aws:loop\n    inputs:\n      Iterators: [a, b]\n      Steps:\n{}  - name: after\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n    isEnd: true\n  - name: cleanup\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n",
            inner("slow", "          onCancel: step:cleanup\n")
        ));
        let mut fake = Fake::new(&[]);
        fake.blocking = vec!["slow".into()];
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let (e, _) = run_with(&rb, &fake, &cancel).await;
        assert_eq!(
            names(&e),
            ["slow:Cancelled", "each:Cancelled", "cleanup:Success"]
        );
        assert_eq!(e.status, StepStatus::Cancelled);
        // The run deadline stops an inner step, and the loop with it.
        let rb = doc_text(
            "schemaVersion: '0.3'\nmainSteps:\n  - name: each\n    action: aws:loop\n    inputs:\n      Iterators: [a]\n      Steps:\n        - {name: nap, action: aws:sleep, inputs: {Duration: PT30S}}\n",
        );
        let began = std::time::Instant::now();
        let (e, _) = run_limited(&rb, &Fake::new(&[]), &CancellationToken::new(), 1).await;
        assert!(began.elapsed() < Duration::from_secs(10));
        assert_eq!(names(&e), ["nap:TimedOut", "each:TimedOut"]);
        assert_eq!(e.status, StepStatus::TimedOut);
    }

    #[tokio::test]
    async fn update_variable_sets_a_typed_value() {
        let rb = doc_text(
            "schemaVersion: '0.3'\nparameters:\n  N: {type: String, default: '7'}\nvariables:\n  Count: {type: Integer}\nmainSteps:\n  - name: early\n    action: aws:sleep\n    onFailure: Continue\n    inputs: {Duration: 'PT{{ variable:Count }}S'}\n  - name: set\n    action: aws:updateVariable\n    onFailure: Continue\n    inputs: {Name: 'variable:Count', Value: '{{ N }}'}\n  - name: set2\n    action: aws:updateVariable\n    inputs: {Name: 'variable:Count', Value: 0}\n  - name: late\n    action: aws:sleep\n    inputs: {Duration: 'PT{{ variable:Count }}S'}\n",
        );
        let e = run(&rb, &Fake::new(&[])).await;
        assert_eq!(
            names(&e),
            ["early:Failed", "set:Failed", "set2:Success", "late:Success"]
        );
        let early = e.steps[0].failure_message.clone().unwrap_or_default();
        assert!(
            early.contains("variable \"Count\" has no value yet"),
            "{early}"
        );
        // A String parameter is not converted to the Integer variable.
        let set = e.steps[1].failure_message.clone().unwrap_or_default();
        assert!(
            set.contains("Value for variable \"Count\" (Integer) is a string, not of type Integer"),
            "{set}"
        );
        assert_eq!(e.steps[3].inputs["Duration"], json!("PT0S"));
    }
}
