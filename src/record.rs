//! The one execution record: what the store returns, and what the native API, the SSM facade
//! and the CLI render. Its serialized forms are written here only:
//! - [`ExecutionRecord::native_json`]: the `GET /v1/executions/{id}` object, the result's shape
//!   (`invoke`'s for a step, `run`'s for a runbook) with the daemon's keys (`Id`, `Kind`,
//!   `Status`, the times) and, for a step, `ExitCode`, which may arrive after the result
//!   ([`ExitFact`]);
//! - [`ExecutionRecord::summary_json`]: a row of `GET /v1/executions`;
//! - [`ExecutionRecord::from_native_json`]: the object read back (the CLI).
//!
//! A record made before the store kept typed outcomes shows the object it stored
//! ([`Outcome::Legacy`]), so its bytes do not change on upgrade.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::result::{ErrorDetail, LogLine, LogStream, StepResult, StepStatus};

pub use crate::timestamp::Timestamp;

/// An execution's status. `Queued` and `Running` are the daemon's; the rest are a step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecStatus {
    /// Accepted, waiting for a container permit.
    Queued,
    /// Holding a permit.
    Running,
    /// Ended well.
    Success,
    /// Ended badly (including "scriptbox restarted while this execution was running").
    Failed,
    /// A step's timeout passed.
    TimedOut,
    /// Cancelled (by a client, or by a shutdown past its grace period).
    Cancelled,
}

impl ExecStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExecStatus; 6] = [
        ExecStatus::Queued,
        ExecStatus::Running,
        ExecStatus::Success,
        ExecStatus::Failed,
        ExecStatus::TimedOut,
        ExecStatus::Cancelled,
    ];

    /// The spelling in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "Queued",
            ExecStatus::Running => "Running",
            ExecStatus::Success => "Success",
            ExecStatus::Failed => "Failed",
            ExecStatus::TimedOut => "TimedOut",
            ExecStatus::Cancelled => "Cancelled",
        }
    }

    /// Parses the spelling.
    pub fn parse(s: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True once the execution can no longer change.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::Running)
    }
}

impl From<StepStatus> for ExecStatus {
    fn from(s: StepStatus) -> Self {
        match s {
            StepStatus::Success => ExecStatus::Success,
            StepStatus::Failed => ExecStatus::Failed,
            StepStatus::TimedOut => ExecStatus::TimedOut,
            StepStatus::Cancelled => ExecStatus::Cancelled,
        }
    }
}

/// What was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecKind {
    /// One executeScript step.
    Step,
    /// A whole runbook.
    Runbook,
}

impl ExecKind {
    /// The spelling in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecKind::Step => "Step",
            ExecKind::Runbook => "Runbook",
        }
    }

    /// Parses the spelling.
    pub fn parse(s: &str) -> Option<ExecKind> {
        [ExecKind::Step, ExecKind::Runbook]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Docker's exit facts of a step's container: with the result (a cold run, in
/// [`StepResult::exit_code`]) or after it (a warm run, whose container is removed after its
/// result is recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ExitFact {
    /// Not a step, or the result carries the exit code itself.
    #[default]
    NotApplicable,
    /// The result is known, the container's exit not yet (`ExitCode: null`).
    Pending,
    /// Docker reported the exit after the result.
    Known {
        /// The exit code, when Docker gave one.
        exit_code: Option<i64>,
        /// The kernel killed the container for memory.
        oom_killed: bool,
    },
}

/// One runbook step as stored and shown (the keys of `runbook::output::step_json`; a step in
/// progress has only its name, action, status, start and attempts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StepExecution {
    /// The step's name.
    pub step_name: String,
    /// `aws:executeScript`...
    pub action: String,
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_execution_id: Option<String>,
    /// `InProgress`, `Success`...
    pub step_status: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_start_time: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_end_time: Option<Timestamp>,
    /// Inputs, each JSON-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Map<String, Value>>,
    /// Outputs, each a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Map<String, Value>>,
    /// `Abort`, `Continue`, `step:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Attempts allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The step's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// `isCritical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_critical: Option<bool>,
    /// `isEnd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_end: Option<bool>,
    /// The step chosen next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Attempts made (scriptbox's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scriptbox_attempts: Option<u32>,
    /// The last attempt's log (scriptbox's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scriptbox_log: Option<Vec<LogLine>>,
    /// Keys added by a later runbook module (`ValidNextSteps`...): kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl StepExecution {
    /// A step's record when it starts an attempt.
    pub fn started(name: &str, action: &str, attempt: u32) -> StepExecution {
        StepExecution {
            step_name: name.to_string(),
            action: action.to_string(),
            step_status: "InProgress".into(),
            execution_start_time: Some(Timestamp::now()),
            scriptbox_attempts: Some(attempt),
            ..Default::default()
        }
    }

    /// A finished step's record, from the runbook module's report of it.
    pub fn finished(record: &crate::runbook::executor::StepRecord) -> StepExecution {
        let json = crate::runbook::output::step_json(record);
        serde_json::from_value(json).unwrap_or_else(|_| StepExecution {
            step_name: record.name.clone(),
            action: record.action_kind.name().to_string(),
            step_status: record.status.as_str().into(),
            ..Default::default()
        })
    }
}

/// A runbook's result: the shape of `scriptbox run --output json` (AWS's
/// `GetAutomationExecution`, with scriptbox's keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunbookOutcome {
    /// The execution's id.
    pub automation_execution_id: String,
    /// The document's name.
    pub document_name: String,
    /// `Pending`, `InProgress`, `Success`...
    pub automation_execution_status: String,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_start_time: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_end_time: Option<Timestamp>,
    /// The resolved parameters, each a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The document's outputs.
    pub outputs: Map<String, Value>,
    /// The steps.
    pub step_executions: Vec<StepExecution>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Keys added by a later runbook module: kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RunbookOutcome {
    /// The outcome of a finished run, from the runbook module's report.
    pub fn of(execution: &crate::runbook::executor::Execution) -> RunbookOutcome {
        let json = crate::runbook::output::execution_json(execution);
        serde_json::from_value(json).unwrap_or_else(|_| RunbookOutcome {
            automation_execution_id: execution.id.clone(),
            document_name: execution.document_name.clone(),
            automation_execution_status: execution.status.as_str().into(),
            failure_message: execution.failure_message.clone(),
            ..Default::default()
        })
    }
}

/// The result of a step the container engine failed to run.
pub fn engine_failure(execution_id: &str, runtime: &str, message: &str) -> StepResult {
    StepResult::not_run(execution_id, runtime, "EngineError", message)
}

/// What an execution produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Not finished: shown with what is known so far ([`ExecutionRecord::provisional`]).
    #[default]
    Pending,
    /// A step's result.
    Step(Box<StepResult>),
    /// A runbook's result.
    Runbook(Box<RunbookOutcome>),
    /// The whole object stored by a scriptbox before typed outcomes, shown as it was.
    #[serde(skip)]
    Legacy(Map<String, Value>),
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogRow {
    /// Increasing within an execution (not contiguous).
    pub seq: i64,
    /// The runbook step the line belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// stdout, stderr or scriptbox.
    pub stream: String,
    /// The text.
    pub text: String,
}

/// The one execution record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Submission order (the paging cursor).
    pub seq: i64,
    /// The id.
    pub id: String,
    /// Step or runbook.
    pub kind: ExecKind,
    /// The status.
    pub status: ExecStatus,
    /// Set when a cancel was asked for while it was running: SSM shows it `Cancelling`; the
    /// native API keeps `Status: Running`.
    pub cancel_requested: Option<Timestamp>,
    /// The step's runtime (steps only).
    pub runtime: Option<String>,
    /// The document's name (runbooks only).
    pub document_name: Option<String>,
    /// The submitted request, JSON (re-read to run a queued execution after a restart).
    pub request: String,
    /// When it was accepted.
    pub submitted: Timestamp,
    /// When it got a permit.
    pub started: Option<Timestamp>,
    /// When it ended.
    pub ended: Option<Timestamp>,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
    /// What it produced.
    pub outcome: Outcome,
    /// Docker's exit facts, when they came after the result.
    pub exit: ExitFact,
}

fn stream_of(s: &str) -> LogStream {
    match s {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => LogStream::Scriptbox,
    }
}

impl ExecutionRecord {
    /// The outcome of an execution that has none (not finished, or ended without a result: a
    /// restart, a cancel before it started): the result's shape with what is known so far.
    /// `failure` marks the steps still in progress as ended with `status`.
    pub fn provisional(
        &self,
        steps: Vec<StepExecution>,
        logs: &[LogRow],
        failure: Option<&str>,
        status: ExecStatus,
    ) -> Outcome {
        match self.kind {
            ExecKind::Step => Outcome::Step(Box::new(StepResult {
                execution_id: self.id.clone(),
                runtime: self.runtime.clone().unwrap_or_default(),
                // Shown as the record's status.
                status: StepStatus::Failed,
                payload: Value::Null,
                failure_message: failure.map(str::to_string),
                error: failure.map(|f| ErrorDetail {
                    error_type: "ScriptboxRestarted".into(),
                    message: f.to_string(),
                    stack_trace: vec![],
                }),
                log: logs
                    .iter()
                    .map(|l| LogLine {
                        stream: stream_of(&l.stream),
                        text: l.text.clone(),
                    })
                    .collect(),
                log_truncated: false,
                kill_reason: None,
                exit_code: None,
                container_id: None,
                duration_ms: 0,
                egress: None,
            })),
            ExecKind::Runbook => {
                let mut steps = steps;
                if let Some(f) = failure {
                    for s in steps.iter_mut().filter(|s| s.step_status == "InProgress") {
                        s.step_status = status.as_str().into();
                        s.failure_message = Some(f.to_string());
                    }
                }
                // A step waiting for a signal (aws:pause, aws:approve) shows its execution
                // `Waiting`, as AWS does.
                let waiting = steps.iter().any(|s| s.step_status == "Waiting");
                let aws_status = match status {
                    ExecStatus::Queued => "Pending",
                    ExecStatus::Running if waiting => "Waiting",
                    ExecStatus::Running => "InProgress",
                    other => other.as_str(),
                };
                Outcome::Runbook(Box::new(RunbookOutcome {
                    automation_execution_id: self.id.clone(),
                    document_name: self.document_name.clone().unwrap_or_default(),
                    automation_execution_status: aws_status.into(),
                    step_executions: steps,
                    failure_message: failure.map(str::to_string),
                    ..Default::default()
                }))
            }
        }
    }

    fn daemon_keys(&self, m: &mut Map<String, Value>) {
        m.insert("Id".into(), json!(self.id));
        m.insert("Kind".into(), json!(self.kind.as_str()));
        m.insert("Status".into(), json!(self.status.as_str()));
        m.insert("SubmittedTime".into(), json!(self.submitted));
        if let Some(t) = &self.started {
            m.insert("StartedTime".into(), json!(t));
        }
        if let Some(t) = &self.ended {
            m.insert("EndedTime".into(), json!(t));
        }
    }

    /// The `GET /v1/executions/{id}` object. A pending outcome is shown without steps or log
    /// lines; the API fills them in with [`ExecutionRecord::provisional`] first.
    pub fn native_json(&self) -> Value {
        let body = match &self.outcome {
            Outcome::Legacy(m) => return Value::Object(m.clone()),
            Outcome::Pending => {
                let failure = self.failure_message.as_deref();
                return ExecutionRecord {
                    outcome: self.provisional(vec![], &[], failure, self.status),
                    ..self.clone()
                }
                .native_json();
            }
            Outcome::Step(r) => serde_json::to_value(r),
            Outcome::Runbook(r) => serde_json::to_value(r),
        };
        let mut m = match body {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Outcome::Step(r) = &self.outcome
            && r.exit_code.is_none()
        {
            match self.exit {
                ExitFact::NotApplicable => {}
                ExitFact::Pending => {
                    m.insert("ExitCode".into(), Value::Null);
                }
                ExitFact::Known { exit_code, .. } => {
                    m.insert("ExitCode".into(), json!(exit_code));
                }
            }
        }
        self.daemon_keys(&mut m);
        Value::Object(m)
    }

    /// A row of `GET /v1/executions`.
    pub fn summary_json(&self) -> Value {
        let mut m = Map::new();
        self.daemon_keys(&mut m);
        if let Some(r) = &self.runtime {
            m.insert("Runtime".into(), json!(r));
        }
        if let Some(d) = &self.document_name {
            m.insert("DocumentName".into(), json!(d));
        }
        if let Some(f) = &self.failure_message {
            m.insert("FailureMessage".into(), json!(f));
        }
        Value::Object(m)
    }

    /// Reads a [`ExecutionRecord::native_json`] object back (`seq` and `request` are not in
    /// it: 0 and empty). `None` when it is not one.
    pub fn from_native_json(v: &Value) -> Option<ExecutionRecord> {
        let m = v.as_object()?;
        let text = |k: &str| m.get(k).and_then(Value::as_str);
        let time = |k: &str| text(k).and_then(Timestamp::parse);
        let kind = ExecKind::parse(text("Kind")?)?;
        let mut body = m.clone();
        for k in [
            "Id",
            "Kind",
            "Status",
            "SubmittedTime",
            "StartedTime",
            "EndedTime",
        ] {
            body.remove(k);
        }
        let (outcome, exit) = match kind {
            ExecKind::Step => {
                let exit = match m.get("ExitCode") {
                    Some(Value::Null) => ExitFact::Pending,
                    _ => ExitFact::NotApplicable,
                };
                if exit == ExitFact::Pending {
                    body.remove("ExitCode");
                }
                // The step's own `Status`: the record's, when it is a step's; before the step
                // ends, the provisional result's (`Failed`, which the record's status hides).
                let status = m.get("Status")?;
                let step_status = match serde_json::from_value::<StepStatus>(status.clone()) {
                    Ok(_) => status.clone(),
                    Err(_) => json!(StepStatus::Failed),
                };
                body.insert("Status".into(), step_status);
                match serde_json::from_value::<StepResult>(Value::Object(body)) {
                    Ok(r) => (Outcome::Step(Box::new(r)), exit),
                    Err(_) => (Outcome::Pending, ExitFact::NotApplicable),
                }
            }
            ExecKind::Runbook => {
                match serde_json::from_value::<RunbookOutcome>(Value::Object(body)) {
                    Ok(r) => (Outcome::Runbook(Box::new(r)), ExitFact::NotApplicable),
                    Err(_) => (Outcome::Pending, ExitFact::NotApplicable),
                }
            }
        };
        Some(ExecutionRecord {
            seq: 0,
            id: text("Id")?.to_string(),
            kind,
            status: ExecStatus::parse(text("Status")?)?,
            cancel_requested: None,
            runtime: text("Runtime").map(str::to_string),
            document_name: text("DocumentName").map(str::to_string),
            request: String::new(),
            submitted: time("SubmittedTime")?,
            started: time("StartedTime"),
            ended: time("EndedTime"),
            failure_message: text("FailureMessage").map(str::to_string),
            outcome,
            exit,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Golden values: the objects today's API returned before this module existed (captured
    //! by running the code of main 29d3417 on the fixture below, `tests/golden/records.json`),
    //! compared as `Value`s with what the record renders now.
    use super::*;

    fn fx_time(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn fx_step_result(exit_code: Option<i64>) -> crate::result::StepResult {
        use crate::result::*;
        StepResult {
            execution_id: "e1".into(),
            runtime: "python3.11".into(),
            status: StepStatus::Success,
            payload: serde_json::json!({"a": 1}),
            failure_message: None,
            error: None,
            log: vec![LogLine {
                stream: LogStream::Stdout,
                text: "hi".into(),
            }],
            log_truncated: false,
            kill_reason: None,
            exit_code,
            container_id: Some("c0ffee".into()),
            duration_ms: 42,
            egress: None,
        }
    }

    fn fx_execution() -> crate::runbook::executor::Execution {
        use crate::result::*;
        use crate::runbook::executor::*;
        let mut inputs = serde_json::Map::new();
        inputs.insert("Runtime".into(), serde_json::json!("python3.11"));
        let s1 = StepRecord {
            name: "one".into(),
            action_kind: crate::runbook::actions::Action::ExecuteScript,
            step_execution_id: "s-1".into(),
            status: StepStatus::Success,
            start: fx_time("2026-01-01T00:00:01.100Z"),
            end: fx_time("2026-01-01T00:00:01.900Z"),
            inputs,
            outputs: vec![(
                "Out".into(),
                crate::runbook::selector::ValueType::String,
                serde_json::json!("v"),
            )],
            payload: Some(serde_json::json!({"Out": "v"})),
            failure_message: None,
            log: vec![LogLine {
                stream: LogStream::Stderr,
                text: "warn".into(),
            }],
            attempts: 1,
            on_failure: "Abort".into(),
            max_attempts: 1,
            timeout_seconds: Some(60),
            is_critical: true,
            is_end: false,
            next_step: Some("two".into()),
            egress: None,
        };
        let s2 = StepRecord {
            name: "two".into(),
            action_kind: crate::runbook::actions::Action::Sleep,
            step_execution_id: "s-2".into(),
            status: StepStatus::Failed,
            start: fx_time("2026-01-01T00:00:02.000Z"),
            end: fx_time("2026-01-01T00:00:02.200Z"),
            inputs: serde_json::Map::new(),
            outputs: vec![],
            payload: None,
            failure_message: Some("boom".into()),
            log: vec![],
            attempts: 2,
            on_failure: "Abort".into(),
            max_attempts: 2,
            timeout_seconds: None,
            is_critical: true,
            is_end: true,
            next_step: None,
            egress: None,
        };
        let mut parameters = serde_json::Map::new();
        parameters.insert("Name".into(), serde_json::json!("x"));
        Execution {
            id: "r1".into(),
            document_name: "doc".into(),
            status: StepStatus::Failed,
            start: fx_time("2026-01-01T00:00:01.000Z"),
            end: fx_time("2026-01-01T00:00:02.300Z"),
            parameters,
            steps: vec![s1, s2],
            outputs: vec![
                ("one.Out".into(), Some(serde_json::json!("v"))),
                ("two.X".into(), None),
            ],
            failure_message: Some("boom".into()),
            engine_error: None,
        }
    }

    fn golden(name: &str) -> Value {
        let all: Value =
            serde_json::from_str(include_str!("../tests/golden/records.json")).unwrap();
        all[name].clone()
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn record(
        kind: ExecKind,
        status: ExecStatus,
        ended: bool,
        outcome: Outcome,
    ) -> ExecutionRecord {
        ExecutionRecord {
            seq: 7,
            id: if kind == ExecKind::Step { "e1" } else { "r1" }.into(),
            kind,
            status,
            cancel_requested: None,
            runtime: (kind == ExecKind::Step).then(|| "python3.11".into()),
            document_name: (kind == ExecKind::Runbook).then(|| "doc".into()),
            request: "{}".into(),
            submitted: at("2026-01-01T00:00:00.000Z"),
            started: Some(at("2026-01-01T00:00:00.500Z")),
            ended: ended.then(|| at("2026-01-01T00:00:02.500Z")),
            failure_message: None,
            outcome,
            exit: ExitFact::NotApplicable,
        }
    }

    fn logs() -> Vec<LogRow> {
        vec![
            LogRow {
                seq: 1,
                step: None,
                stream: "stdout".into(),
                text: "a".into(),
            },
            LogRow {
                seq: 2,
                step: None,
                stream: "scriptbox".into(),
                text: "b".into(),
            },
        ]
    }

    fn steps() -> Vec<StepExecution> {
        let mut second = StepExecution::started("two", "aws:sleep", 1);
        second.execution_start_time = Some(at("2026-01-01T00:00:02.000Z"));
        vec![StepExecution::finished(&fx_execution().steps[0]), second]
    }

    fn check(name: &str, record: &ExecutionRecord) {
        let rendered = record.native_json();
        assert_eq!(rendered, golden(name), "{name}");
        // Read back, it renders the same again (the CLI's view).
        if let Some(back) = ExecutionRecord::from_native_json(&rendered)
            && back.outcome != Outcome::Pending
        {
            let again = ExecutionRecord {
                seq: 7,
                request: "{}".into(),
                ..back
            };
            assert_eq!(again.native_json(), rendered, "{name} read back");
        }
    }

    #[test]
    fn steps_render_as_before_with_the_exit_code_as_a_late_fact() {
        let step = |exit_code| Outcome::Step(Box::new(fx_step_result(exit_code)));
        check(
            "cold",
            &record(ExecKind::Step, ExecStatus::Success, true, step(Some(0))),
        );
        let mut warm = record(ExecKind::Step, ExecStatus::Success, true, step(None));
        warm.exit = ExitFact::Pending;
        check("warm_pending", &warm);
        warm.exit = ExitFact::Known {
            exit_code: Some(3),
            oom_killed: false,
        };
        check("warm_known", &warm);
        let engine = Outcome::Step(Box::new(engine_failure(
            "e1",
            "python3.11",
            "the container engine failed: x",
        )));
        check(
            "engine_failure",
            &record(ExecKind::Step, ExecStatus::Failed, true, engine),
        );
    }

    #[test]
    fn runbooks_render_as_before() {
        let outcome = Outcome::Runbook(Box::new(RunbookOutcome::of(&fx_execution())));
        check(
            "runbook",
            &record(ExecKind::Runbook, ExecStatus::Failed, true, outcome),
        );
    }

    #[test]
    fn unfinished_and_restarted_executions_render_as_before() {
        let mut r = record(ExecKind::Step, ExecStatus::Running, false, Outcome::Pending);
        r.outcome = r.provisional(vec![], &logs(), None, ExecStatus::Running);
        check("step_running", &r);
        let mut r = record(ExecKind::Step, ExecStatus::Failed, true, Outcome::Pending);
        r.outcome = r.provisional(
            vec![],
            &logs(),
            Some(crate::server::types::RESTARTED_MESSAGE),
            ExecStatus::Failed,
        );
        check("step_restarted", &r);
        let mut r = record(
            ExecKind::Runbook,
            ExecStatus::Running,
            false,
            Outcome::Pending,
        );
        r.outcome = r.provisional(steps(), &[], None, ExecStatus::Running);
        check("runbook_running", &r);
        let mut r = record(
            ExecKind::Runbook,
            ExecStatus::Failed,
            true,
            Outcome::Pending,
        );
        r.outcome = r.provisional(
            steps(),
            &[],
            Some(crate::server::types::RESTARTED_MESSAGE),
            ExecStatus::Failed,
        );
        check("runbook_restarted", &r);
        let mut q = record(
            ExecKind::Runbook,
            ExecStatus::Queued,
            false,
            Outcome::Pending,
        );
        q.started = None;
        check("runbook_queued", &q);
    }

    #[test]
    fn list_rows_render_as_before() {
        let mut f = record(ExecKind::Step, ExecStatus::Failed, true, Outcome::Pending);
        f.failure_message = Some("why".into());
        assert_eq!(f.summary_json(), golden("summary_step"));
        let r = record(
            ExecKind::Runbook,
            ExecStatus::Running,
            false,
            Outcome::Pending,
        );
        assert_eq!(r.summary_json(), golden("summary_runbook"));
    }

    #[test]
    fn outcomes_and_exit_facts_survive_the_store_form() {
        let outcome = Outcome::Runbook(Box::new(RunbookOutcome::of(&fx_execution())));
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), outcome);
        let exit = ExitFact::Known {
            exit_code: None,
            oom_killed: true,
        };
        let text = serde_json::to_string(&exit).unwrap();
        assert_eq!(serde_json::from_str::<ExitFact>(&text).unwrap(), exit);
        assert_eq!(
            at("2026-01-01T00:00:01.250Z").epoch_secs(),
            1_767_225_601.25
        );
    }
}
