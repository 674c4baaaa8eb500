//! StartAutomationExecution, GetAutomationExecution, DescribeAutomationExecutions,
//! DescribeAutomationStepExecutions, StopAutomationExecution — on the daemon's scheduler and
//! store: an execution started here is a runbook execution like any other (same limits, queue,
//! log, `scriptbox ls`, `GET /v1/executions`), with its document version noted in
//! `ssm_executions`.
//!
//! Each execution belongs to the tenant of the caller that started it: other tenants' get,
//! list and stop answer as if it did not exist. Executions submitted through the native API
//! belong to no tenant, so SSM callers never see them (the native API sees every execution).

use serde_json::{Map, Value, json};

use super::SsmState;
use super::documents::{self, ExecRow, max_results, opt_str, req_str};
use super::errors::SsmError;
use super::sigv4::Caller;
use crate::record::RunbookOutcome;
use crate::server::api::execution_record;
use crate::server::scheduler::{CancelOutcome, SignalOutcome, SubmitError};
use crate::server::types::{AttachmentRequest, RunbookRequest, SubmitRequest, base64_of};
use crate::store::{ExecKind, ExecStatus, ExecutionRecord, ListFilter, Outcome, Timestamp};

/// RFC 3339 → epoch seconds (what the JSON 1.1 protocol carries for timestamps).
pub fn epoch(t: &str) -> Option<f64> {
    Timestamp::parse(t).map(|t| t.epoch_secs())
}

fn epoch_value(v: &Value) -> Option<Value> {
    v.as_str().and_then(epoch).map(|f| json!(f))
}

/// StartAutomationExecution.
pub async fn start(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "DocumentName")?.to_string();
    if let Some(mode) = opt_str(req, "Mode")?
        && mode != "Auto"
    {
        return Err(SsmError::client(
            "InvalidAutomationExecutionParametersException",
            format!("Mode {mode}: scriptbox runs executions in Auto mode only"),
        ));
    }
    for unsupported in [
        "Targets",
        "TargetMaps",
        "TargetLocations",
        "TargetParameterName",
    ] {
        if req.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(SsmError::client(
                "InvalidAutomationExecutionParametersException",
                format!(
                    "{unsupported}: rate-controlled and multi-account executions are not supported by scriptbox"
                ),
            ));
        }
    }
    let params = documents::parameters(req)?;
    let doc = documents::runnable(st, caller, req).await?;
    let submit = SubmitRequest {
        runbook: Some(RunbookRequest {
            document: doc.content,
            document_name: Some(name.clone()),
            parameters: params,
            attachments: doc
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
    let id = match st.scheduler.submit(&submit).await {
        Ok(id) => id,
        Err(SubmitError::Invalid(i)) => {
            let code = match i.code {
                "InvalidRunbook" => "InvalidDocumentContent",
                _ => "InvalidAutomationExecutionParametersException",
            };
            return Err(SsmError::client(code, i.message));
        }
        Err(SubmitError::Busy { retry_after }) => {
            return Err(SsmError::client(
                "AutomationExecutionLimitExceededException",
                format!(
                    "every container slot and queue place is taken; retry after {retry_after} s"
                ),
            ));
        }
        Err(SubmitError::ShuttingDown) => {
            return Err(SsmError {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                code: "ServiceUnavailable",
                message: "the daemon is shutting down".into(),
            });
        }
        Err(SubmitError::Store(e)) => return Err(SsmError::internal(e)),
    };
    let row = ExecRow {
        document_name: name,
        document_version: doc.version.to_string(),
        executed_by: caller.access_key.clone(),
        tenant: caller.tenant.clone(),
    };
    let id2 = id.clone();
    st.docs
        .with(move |c| documents::insert_execution(c, &id2, &row))
        .await?
        .map_err(|e| SsmError::internal(format!("database: {e}")))?;
    Ok(json!({"AutomationExecutionId": id}))
}

/// The execution row and its SSM facts, if it is a runbook execution started through the SSM
/// API by the caller's tenant; any other answers as if it did not exist.
async fn runbook_row(
    st: &SsmState,
    caller: &Caller,
    id: &str,
) -> Result<(ExecutionRecord, ExecRow), SsmError> {
    let Some(ssm) = ssm_row(st, id).await?.filter(|s| s.tenant == caller.tenant) else {
        return Err(SsmError::no_execution(id));
    };
    match st.store.get(id).await.map_err(SsmError::internal)? {
        Some(row) if row.kind == ExecKind::Runbook => Ok((row, ssm)),
        _ => Err(SsmError::no_execution(id)),
    }
}

async fn ssm_row(st: &SsmState, id: &str) -> Result<Option<ExecRow>, SsmError> {
    let id = id.to_string();
    st.docs
        .with(move |c| documents::get_execution(c, &id))
        .await?
        .map_err(|e| SsmError::internal(format!("database: {e}")))
}

/// The AWS status of a stored status (`Cancelling` once a stop is stored, until it ends).
fn aws_status(row: &ExecutionRecord) -> &'static str {
    match row.status {
        ExecStatus::Queued => "Pending",
        ExecStatus::Running if row.cancel_requested.is_some() => "Cancelling",
        ExecStatus::Running => "InProgress",
        other => other.as_str(),
    }
}

/// The AWS status with what the running step shows: `Waiting` while an aws:pause or aws:approve
/// step waits for a signal (`current`: the running step's status).
fn aws_status_with(row: &ExecutionRecord, current: Option<&str>) -> &'static str {
    match aws_status(row) {
        "InProgress" if current == Some(WAITING) => WAITING,
        other => other,
    }
}

/// A step's (and its execution's) status while it waits for a signal.
const WAITING: &str = "Waiting";

/// Whether a stored step status is a running one (`InProgress`, or `Waiting` for a signal).
fn is_running_step(status: &str) -> bool {
    status == "InProgress" || status == WAITING
}

const STEP_FIELDS: [&str; 16] = [
    "StepName",
    "Action",
    "TimeoutSeconds",
    "OnFailure",
    "MaxAttempts",
    "ExecutionStartTime",
    "ExecutionEndTime",
    "StepStatus",
    "Inputs",
    "Outputs",
    "FailureMessage",
    "StepExecutionId",
    "IsEnd",
    "NextStep",
    "IsCritical",
    "ValidNextSteps",
];

/// A stored step record as botocore's `StepExecution`.
pub fn step_execution(s: &Value) -> Value {
    let mut m = Map::new();
    for f in STEP_FIELDS {
        let Some(v) = s.get(f) else { continue };
        let v = match f {
            "ExecutionStartTime" | "ExecutionEndTime" => match epoch_value(v) {
                Some(t) => t,
                None => continue,
            },
            _ => v.clone(),
        };
        m.insert(f.into(), v);
    }
    Value::Object(m)
}

/// Parameters as AWS shows them: from the result, else from the request.
fn parameters_of(row: &ExecutionRecord, outcome: &RunbookOutcome) -> Map<String, Value> {
    if let Some(p) = &outcome.parameters {
        return p.clone();
    }
    let req: Value = serde_json::from_str(&row.request).unwrap_or(Value::Null);
    let mut out = Map::new();
    if let Some(Value::Object(p)) = req.pointer("/Runbook/Parameters") {
        for (k, v) in p {
            out.insert(
                k.clone(),
                Value::Array(
                    crate::runbook::output::strings(v)
                        .into_iter()
                        .map(Value::String)
                        .collect(),
                ),
            );
        }
    }
    out
}

/// The runbook outcome of a record (its provisional one while it runs; a record stored by an
/// older scriptbox read from its object).
fn runbook_outcome(record: &ExecutionRecord) -> RunbookOutcome {
    match &record.outcome {
        Outcome::Runbook(r) => (**r).clone(),
        Outcome::Legacy(m) => serde_json::from_value(Value::Object(m.clone())).unwrap_or_default(),
        Outcome::Pending | Outcome::Step(_) => RunbookOutcome::default(),
    }
}

/// GetAutomationExecution's `AutomationExecution`, from the execution's record.
pub async fn execution(st: &SsmState, caller: &Caller, id: &str) -> Result<Value, SsmError> {
    let (_, ssm) = runbook_row(st, caller, id).await?;
    let row = execution_record(st.store.as_ref(), id)
        .await
        .map_err(|_| SsmError::internal("cannot read the execution"))?
        .ok_or_else(|| SsmError::no_execution(id))?;
    let outcome = runbook_outcome(&row);
    let steps: Vec<Value> = outcome
        .step_executions
        .iter()
        .map(|s| step_execution(&serde_json::to_value(s).unwrap_or(Value::Null)))
        .collect();
    let start = outcome
        .execution_start_time
        .or(row.started)
        .unwrap_or(row.submitted);
    let mut m = json!({
        "AutomationExecutionId": row.id,
        "DocumentName": row.document_name.clone().unwrap_or_default(),
        "ExecutionStartTime": start.epoch_secs(),
        "AutomationExecutionStatus": aws_status_with(
            &row,
            outcome
                .step_executions
                .iter()
                .rev()
                .find(|s| is_running_step(&s.step_status))
                .map(|s| s.step_status.as_str()),
        ),
        "StepExecutionsTruncated": false,
        "Parameters": parameters_of(&row, &outcome),
        "Outputs": outcome.outputs,
        "Mode": "Auto",
        "StepExecutions": steps,
    });
    m["DocumentVersion"] = json!(ssm.document_version);
    if let Some(by) = &ssm.executed_by {
        m["ExecutedBy"] = json!(by);
    }
    if row.status.is_terminal() {
        if let Some(t) = outcome.execution_end_time.or(row.ended) {
            m["ExecutionEndTime"] = json!(t.epoch_secs());
        }
    } else if let Some(cur) = outcome
        .step_executions
        .iter()
        .rev()
        .find(|s| is_running_step(&s.step_status))
    {
        m["CurrentStepName"] = json!(cur.step_name);
        m["CurrentAction"] = json!(cur.action);
    }
    if let Some(f) = outcome
        .failure_message
        .as_deref()
        .or(row.failure_message.as_deref())
    {
        m["FailureMessage"] = json!(f);
    }
    Ok(m)
}

/// GetAutomationExecution.
pub async fn get(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let id = req_str(req, "AutomationExecutionId")?;
    Ok(json!({"AutomationExecution": execution(st, caller, id).await?}))
}

fn filters(req: &Value, allowed: &[&str]) -> Result<Vec<(String, Vec<String>)>, SsmError> {
    let mut out = Vec::new();
    let Some(list) = req.get("Filters") else {
        return Ok(out);
    };
    let list = list
        .as_array()
        .ok_or_else(|| SsmError::client("SerializationException", "Filters: expected a list"))?;
    for f in list {
        let key = req_str(f, "Key")?.to_string();
        if !allowed.contains(&key.as_str()) {
            return Err(SsmError::client(
                "InvalidFilterKey",
                format!("The filter key {key} is not valid"),
            ));
        }
        let values: Vec<String> = f
            .get("Values")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if values.is_empty() {
            return Err(SsmError::client(
                "InvalidFilterValue",
                format!("The filter {key} needs at least one value"),
            ));
        }
        out.push((key, values));
    }
    Ok(out)
}

fn time_filter(key: &str, values: &[String]) -> Result<f64, SsmError> {
    let v = &values[0];
    epoch(v).or_else(|| v.parse::<f64>().ok()).ok_or_else(|| {
        SsmError::client(
            "InvalidFilterValue",
            format!("{key}: {v:?} is not a time (use ISO 8601, e.g. 2026-01-01T00:00:00Z)"),
        )
    })
}

const EXECUTION_FILTERS: [&str; 12] = [
    "DocumentNamePrefix",
    "ExecutionStatus",
    "ExecutionId",
    "ParentExecutionId",
    "CurrentAction",
    "StartTimeBefore",
    "StartTimeAfter",
    "AutomationType",
    "TagKey",
    "TargetResourceGroup",
    "AutomationSubtype",
    "OpsItemId",
];

/// DescribeAutomationExecutions: runbook executions, newest first.
pub async fn describe_executions(
    st: &SsmState,
    caller: &Caller,
    req: &Value,
) -> Result<Value, SsmError> {
    let fs = filters(req, &EXECUTION_FILTERS)?;
    let max = max_results(req)?;
    let mut cursor = match opt_str(req, "NextToken")? {
        None => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| {
            SsmError::client("InvalidNextToken", "The specified token is not valid.")
        })?),
    };
    for (k, v) in &fs {
        if k.starts_with("StartTime") {
            time_filter(k, v)?;
        }
        if k == "ExecutionStatus" {
            for s in v {
                if ![
                    "Pending",
                    "InProgress",
                    "Waiting",
                    "Success",
                    "TimedOut",
                    "Cancelling",
                    "Cancelled",
                    "Failed",
                ]
                .contains(&s.as_str())
                    && ExecStatus::parse(s).is_none()
                {
                    return Err(SsmError::client(
                        "InvalidFilterValue",
                        format!("The filter value {s} is not a valid ExecutionStatus"),
                    ));
                }
            }
        }
    }
    let mut out: Vec<Value> = Vec::new();
    let mut next = None;
    'pages: loop {
        let rows = st
            .store
            .list(ListFilter {
                status: None,
                before: cursor,
                limit: 200,
            })
            .await
            .map_err(SsmError::internal)?;
        let exhausted = rows.len() < 200;
        for row in &rows {
            cursor = Some(row.seq);
            if row.kind != ExecKind::Runbook {
                continue;
            }
            let Some(meta) = metadata_if(st, caller, row, &fs).await? else {
                continue;
            };
            if out.len() == max {
                next = out
                    .last()
                    .and_then(|o| o["__seq"].as_i64())
                    .map(|s| s.to_string());
                break 'pages;
            }
            out.push(meta);
        }
        if exhausted {
            break;
        }
    }
    for o in out.iter_mut() {
        if let Some(m) = o.as_object_mut() {
            m.remove("__seq");
        }
    }
    let mut body = json!({"AutomationExecutionMetadataList": out});
    if let Some(n) = next {
        body["NextToken"] = json!(n);
    }
    Ok(body)
}

/// The metadata of a row when it passes the filters.
async fn metadata_if(
    st: &SsmState,
    caller: &Caller,
    row: &ExecutionRecord,
    fs: &[(String, Vec<String>)],
) -> Result<Option<Value>, SsmError> {
    // Only the caller's tenant's SSM executions: native submissions belong to no tenant.
    let Some(ssm) = ssm_row(st, &row.id)
        .await?
        .filter(|s| s.tenant == caller.tenant)
    else {
        return Ok(None);
    };
    let name = row.document_name.clone().unwrap_or_default();
    let start = row.started.unwrap_or(row.submitted).epoch_secs();
    let outputs = match &row.outcome {
        Outcome::Runbook(r) => Value::Object(r.outputs.clone()),
        Outcome::Legacy(m) => m.get("Outputs").cloned().unwrap_or_else(|| json!({})),
        Outcome::Pending | Outcome::Step(_) => json!({}),
    };
    let current = if row.status.is_terminal() {
        None
    } else {
        st.store
            .steps(&row.id)
            .await
            .map_err(SsmError::internal)?
            .into_iter()
            .rev()
            .find(|s| is_running_step(&s.step_status))
    };
    let status = aws_status_with(row, current.as_ref().map(|c| c.step_status.as_str()));
    for (k, vals) in fs {
        let ok = match k.as_str() {
            "DocumentNamePrefix" => vals.iter().any(|v| name.starts_with(v.as_str())),
            "ExecutionStatus" => vals
                .iter()
                .any(|v| v == status || ExecStatus::parse(v) == Some(row.status)),
            "ExecutionId" => vals.iter().any(|v| v == &row.id),
            "CurrentAction" => current.as_ref().is_some_and(|c| vals.contains(&c.action)),
            "StartTimeBefore" => start <= time_filter(k, vals)?,
            "StartTimeAfter" => start >= time_filter(k, vals)?,
            "AutomationType" => vals.iter().any(|v| v == "Local"),
            // No execution has a parent, tags, a resource group, a subtype or an OpsItem.
            _ => false,
        };
        if !ok {
            return Ok(None);
        }
    }
    let ssm = Some(ssm);
    let mut m = json!({
        "AutomationExecutionId": row.id,
        "DocumentName": name,
        "AutomationExecutionStatus": status,
        "ExecutionStartTime": start,
        "LogFile": "",
        "Outputs": outputs,
        "Mode": "Auto",
        "AutomationType": "Local",
        "__seq": row.seq,
    });
    if let Some(t) = row.ended {
        m["ExecutionEndTime"] = json!(t.epoch_secs());
    }
    if let Some(s) = &ssm {
        m["DocumentVersion"] = json!(s.document_version);
        if let Some(by) = &s.executed_by {
            m["ExecutedBy"] = json!(by);
        }
    }
    if let Some(c) = &current {
        m["CurrentStepName"] = json!(c.step_name);
        m["CurrentAction"] = json!(c.action);
    }
    if let Some(f) = &row.failure_message {
        m["FailureMessage"] = json!(f);
    }
    Ok(Some(m))
}

const STEP_FILTERS: [&str; 9] = [
    "StartTimeBefore",
    "StartTimeAfter",
    "StepExecutionStatus",
    "StepExecutionId",
    "StepName",
    "Action",
    "ParentStepExecutionId",
    "ParentStepIteration",
    "ParentStepIteratorValue",
];

/// DescribeAutomationStepExecutions.
pub async fn describe_steps(
    st: &SsmState,
    caller: &Caller,
    req: &Value,
) -> Result<Value, SsmError> {
    let id = req_str(req, "AutomationExecutionId")?.to_string();
    let fs = filters(req, &STEP_FILTERS)?;
    let max = max_results(req)?;
    let offset = match opt_str(req, "NextToken")? {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| {
            SsmError::client("InvalidNextToken", "The specified token is not valid.")
        })?,
    };
    let exec = execution(st, caller, &id).await?;
    let mut steps: Vec<Value> = exec["StepExecutions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if req.get("ReverseOrder").and_then(Value::as_bool) == Some(true) {
        steps.reverse();
    }
    let mut kept = Vec::new();
    for s in steps {
        let mut ok = true;
        for (k, vals) in &fs {
            let field = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or("").to_string();
            let start = s
                .get("ExecutionStartTime")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            ok &= match k.as_str() {
                "StepExecutionStatus" => vals.contains(&field("StepStatus")),
                "StepExecutionId" => vals.contains(&field("StepExecutionId")),
                "StepName" => vals.contains(&field("StepName")),
                "Action" => vals.contains(&field("Action")),
                "StartTimeBefore" => start <= time_filter(k, vals)?,
                "StartTimeAfter" => start >= time_filter(k, vals)?,
                _ => false,
            };
        }
        if ok {
            kept.push(s);
        }
    }
    let page: Vec<Value> = kept.iter().skip(offset).take(max).cloned().collect();
    let mut body = json!({"StepExecutions": page});
    if offset + max < kept.len() {
        body["NextToken"] = json!((offset + max).to_string());
    }
    Ok(body)
}

/// StopAutomationExecution: cancels through the scheduler (the container is killed); the
/// status reads `Cancelling` until the execution is recorded `Cancelled`.
pub async fn stop(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let id = req_str(req, "AutomationExecutionId")?.to_string();
    if let Some(t) = opt_str(req, "Type")?
        && t != "Cancel"
        && t != "Complete"
    {
        return Err(SsmError::validation(format!(
            "Type {t}: must be Complete or Cancel"
        )));
    }
    runbook_row(st, caller, &id).await?;
    match st.scheduler.cancel(&id).await {
        CancelOutcome::NotFound => Err(SsmError::no_execution(&id)),
        CancelOutcome::AlreadyFinished(status) => Err(SsmError::client(
            "InvalidAutomationStatusUpdateException",
            format!(
                "Automation execution {id} cannot be stopped: it is already {}",
                status.as_str()
            ),
        )),
        CancelOutcome::CancelledQueued => Ok(json!({})),
        CancelOutcome::Cancelling => Ok(json!({})),
    }
}

/// SendAutomationSignal: delivers a signal to the caller's tenant's execution when a step waits
/// for it (`runbook::signals` says what is taken); else `InvalidAutomationSignalException`. The
/// sender is the caller's access key id (the tenant's name without one) **(ours)**.
pub async fn send_signal(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    use crate::runbook::signals::{Signal, SignalKind, check_payload};
    let id = req_str(req, "AutomationExecutionId")?.to_string();
    let kind_text = req_str(req, "SignalType")?;
    let Some(kind) = SignalKind::parse(kind_text) else {
        let names: Vec<&str> = SignalKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '{kind_text}' at 'signalType' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            names.join(", ")
        )));
    };
    let payload =
        check_payload(req.get("Payload")).map_err(|e| SsmError::validation(e.to_string()))?;
    runbook_row(st, caller, &id).await?;
    let sender = caller
        .access_key
        .clone()
        .unwrap_or_else(|| caller.tenant.clone());
    let invalid = |m: String| SsmError::client("InvalidAutomationSignalException", m);
    match st
        .scheduler
        .signal(&id, Signal::new(kind, payload, sender))
        .await
    {
        SignalOutcome::Delivered(_) => Ok(json!({})),
        SignalOutcome::NotFound => Err(SsmError::no_execution(&id)),
        SignalOutcome::AlreadyFinished(status) => Err(invalid(format!(
            "Automation execution {id} has already ended: {}",
            status.as_str()
        ))),
        SignalOutcome::Queued => Err(invalid(format!(
            "Automation execution {id} is Pending: no step waits for {kind} yet"
        ))),
        SignalOutcome::Refused(e) => Err(invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SSM's `Cancelling` comes from the stored request (so every reader, and a daemon after a
    /// restart, sees it), not from one daemon's memory; it ends when the execution does.
    #[tokio::test]
    async fn cancelling_is_read_from_the_store_across_reopening() {
        use crate::store::{ExecutionStore as _, NewExecution, Store};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .insert(NewExecution {
                    id: "r1".into(),
                    kind: ExecKind::Runbook,
                    runtime: None,
                    document_name: Some("doc".into()),
                    request: "{}".into(),
                    submitted: Timestamp::now(),
                })
                .await
                .unwrap();
            assert!(
                store
                    .claim("r1", "me", std::time::Duration::from_secs(30))
                    .await
                    .unwrap()
            );
            let running = store.get("r1").await.unwrap().unwrap();
            assert_eq!(aws_status(&running), "InProgress");
            store.request_cancel("r1", Timestamp::now()).await.unwrap();
            store.close();
        }
        let store = Store::open(dir.path()).unwrap();
        let record = store.get("r1").await.unwrap().unwrap();
        assert_eq!(aws_status(&record), "Cancelling");
        let ended = ExecutionRecord {
            status: ExecStatus::Cancelled,
            ..record
        };
        assert_eq!(aws_status(&ended), "Cancelled");
    }

    #[test]
    fn times_become_epoch_seconds() {
        assert_eq!(epoch("2026-01-02T03:04:05.250Z"), Some(1_767_323_045.25));
        assert_eq!(epoch("yesterday"), None);
    }

    #[test]
    fn step_records_keep_only_the_models_fields() {
        let s = step_execution(&json!({
            "StepName": "a",
            "Action": "aws:executeScript",
            "StepStatus": "Success",
            "ExecutionStartTime": "2026-01-02T03:04:05.000Z",
            "Outputs": {"X": ["1"]},
            "ScriptboxLog": [],
            "ScriptboxAttempts": 1,
        }));
        assert_eq!(
            s,
            json!({
                "StepName": "a",
                "Action": "aws:executeScript",
                "StepStatus": "Success",
                "ExecutionStartTime": 1_767_323_045.0,
                "Outputs": {"X": ["1"]},
            })
        );
    }
}
