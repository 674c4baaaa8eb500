//! What the AWS actions share: one call through the runner's worker (`StepRunner::call_aws`),
//! polling until a condition within the step's timeout, and outputs selected from a response
//! exactly as executeScript's are from its payload.
//!
//! Each call logs one Scriptbox line, `AWS call: SERVICE.API as ROLE` **(ours)**: the service,
//! the operation as written and who makes it (the role ARN, or "the operator"), never a
//! parameter value, which may hold a secret.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Attempt, RunCx, StepFailure};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::result::{LogLine, LogStream, StepStatus};
use crate::runbook::document::StepDecl;
use crate::runbook::executor::{RunContext, RunEvent};
use crate::runbook::selector::{ValueType, output_value};

/// The polling interval of waits when the operator sets none **(ours: AWS does not document it)**.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The most Scriptbox lines a wait keeps of its polls: the first calls and the last one
/// **(ours: a wait of an hour at 2 s would log 1800)**.
const MAX_POLL_LINES: usize = 20;

/// Makes one call as the step's role; the response as AWS renders it (datetimes ISO 8601,
/// bytes base64). A failure carries AWS's failure type. Its log line goes to the daemon's log
/// only (use [`call_in_step`] to keep it in the step's log).
#[allow(dead_code)] // Reason: the seam of the other AWS actions (issue 14), built beside this.
pub(crate) async fn call(
    cx: &mut RunCx<'_>,
    service: &str,
    api: &str,
    parameters: Map<String, Value>,
) -> Result<Value, StepFailure> {
    let cancel = cx.cancel.clone();
    call_inner(cx, None, &mut Vec::new(), &cancel, service, api, parameters).await
}

/// [`call`], with its Scriptbox line (and the worker's egress lines) pushed to `log` and shown
/// live as the step's.
pub(crate) async fn call_in_step(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    log: &mut Vec<LogLine>,
    service: &str,
    api: &str,
    parameters: Map<String, Value>,
) -> Result<Value, StepFailure> {
    let cancel = cx.cancel.clone();
    call_inner(cx, Some(step), log, &cancel, service, api, parameters).await
}

/// Pushes a Scriptbox line to `log` and to the observer.
fn log_line(cx: &mut RunCx<'_>, step: Option<&StepDecl>, log: &mut Vec<LogLine>, text: String) {
    let line = LogLine {
        stream: LogStream::Scriptbox,
        text,
    };
    if let Some(step) = step {
        (cx.observer)(RunEvent::Log { step, line: &line });
    }
    log.push(line);
}

/// One call under `cancel` (the step's token, or a wait's child of it).
async fn call_inner(
    cx: &mut RunCx<'_>,
    step: Option<&StepDecl>,
    log: &mut Vec<LogLine>,
    cancel: &CancellationToken,
    service: &str,
    api: &str,
    parameters: Map<String, Value>,
) -> Result<Value, StepFailure> {
    let request = AwsCall {
        service: service.to_string(),
        api: api.to_string(),
        parameters,
    };
    let who = cx.assume_role.as_deref().unwrap_or("the operator");
    let text = format!(
        "AWS call: {}.{} as {who}",
        clip(service, 128),
        clip(api, 128)
    );
    tracing::info!(execution = cx.automation_id, "{text}");
    log_line(cx, step, log, text);
    let answered = match cx
        .options
        .children
        .and_then(|c| c.answer_ssm_call(&request, cx.automation_id))
    {
        Some(answer) => tokio::select! {
            r = answer => r,
            _ = cancel.cancelled() => Err(AwsCallError::Cancelled),
        },
        None => {
            let mut lines = Vec::new();
            let mut on_log = |l: &LogLine| lines.push(l.clone());
            let ctx = RunContext {
                automation_execution_id: cx.automation_id,
                step_execution_id: cx.step_execution_id.to_string(),
                on_log: &mut on_log,
                cancel,
                assume_role: cx.assume_role.as_deref(),
            };
            let r = cx.runner.call_aws(&request, ctx).await;
            for l in lines {
                log_line(cx, step, log, l.text);
            }
            r
        }
    };
    answered.map_err(|e| StepFailure::new(e.kind(), e.to_string()))
}

/// At most `n` characters of `s`.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The step's timeout, else `default`.
fn timeout_of(step: &StepDecl, default: Duration) -> Duration {
    step.timeout_seconds
        .and_then(|t| u64::try_from(t).ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// Calls `service`/`api` every poll interval until `done` says the response is the one waited
/// for, within the step's `timeoutSeconds` (else `default_timeout`), honouring cancellation.
/// `Ok` is the last response; `Err` the attempt that ended the wait (TimedOut, Cancelled, a
/// failed call, or `done`'s own failure).
#[allow(dead_code)] // Reason: the seam of the other AWS actions (issue 14), built beside this.
pub(crate) async fn poll_until(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    default_timeout: Duration,
    service: &str,
    api: &str,
    parameters: &Map<String, Value>,
    done: &(dyn Fn(&Value) -> Result<bool, StepFailure> + Send + Sync),
) -> Result<Value, Attempt> {
    let mut log = Vec::new();
    poll_until_logged(
        cx,
        step,
        &mut log,
        default_timeout,
        service,
        api,
        parameters,
        done,
    )
    .await
}

/// [`poll_until`] keeping its log lines in `log` (the first polls' and the last one's).
#[allow(clippy::too_many_arguments)] // Reason: poll_until's arguments plus the log it fills.
pub(crate) async fn poll_until_logged(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    log: &mut Vec<LogLine>,
    default_timeout: Duration,
    service: &str,
    api: &str,
    parameters: &Map<String, Value>,
    done: &(dyn Fn(&Value) -> Result<bool, StepFailure> + Send + Sync),
) -> Result<Value, Attempt> {
    let timeout = timeout_of(step, default_timeout);
    let deadline = Instant::now() + timeout;
    let interval = cx.runner.poll_interval();
    let timed_out = |polls: u32, log: &mut Vec<LogLine>| {
        let mut a = Attempt::ended(
            StepStatus::TimedOut,
            Some(format!(
                "Step timed out: timeoutSeconds {} passed while waiting on {service}.{api} ({polls} calls).",
                timeout.as_secs()
            )),
        );
        a.log = std::mem::take(log);
        a
    };
    let mut polls: u32 = 0;
    loop {
        // A call that outlives the deadline is cancelled (its container killed), then awaited.
        let call_cancel = cx.cancel.child_token();
        let mut scratch = Vec::new();
        let keep = usize::try_from(polls).unwrap_or(usize::MAX) < MAX_POLL_LINES;
        let target = if keep { &mut *log } else { &mut scratch };
        let (response, past_deadline) = {
            let call = call_inner(
                cx,
                keep.then_some(step),
                target,
                &call_cancel,
                service,
                api,
                parameters.clone(),
            );
            tokio::pin!(call);
            tokio::select! {
                r = &mut call => (r, false),
                _ = tokio::time::sleep_until(deadline) => {
                    call_cancel.cancel();
                    (call.await, true)
                }
            }
        };
        polls = polls.saturating_add(1);
        if past_deadline && !cx.cancel.is_cancelled() {
            return Err(timed_out(polls, log));
        }
        let response = match response {
            Ok(v) => v,
            Err(f) => {
                let mut a = failed(f);
                a.log = std::mem::take(log);
                return Err(a);
            }
        };
        match done(&response) {
            Ok(true) => {
                if !keep {
                    log.push(LogLine {
                        stream: LogStream::Scriptbox,
                        text: format!("AWS call: {service}.{api}: {polls} calls in all"),
                    });
                }
                return Ok(response);
            }
            Ok(false) => {}
            Err(f) => {
                let mut a = failed(f);
                a.log = std::mem::take(log);
                return Err(a);
            }
        }
        let wake = (Instant::now() + interval).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = cx.cancel.cancelled() => {
                let mut a = cancelled();
                a.log = std::mem::take(log);
                return Err(a);
            }
        }
        if Instant::now() >= deadline {
            return Err(timed_out(polls, log));
        }
    }
}

/// The step's declared `outputs` selected from `response` and typed.
pub(crate) fn select_outputs(
    step: &StepDecl,
    response: &Value,
) -> Result<Vec<(String, ValueType, Value)>, StepFailure> {
    let mut outputs = Vec::new();
    let mut problems = Vec::new();
    for o in &step.outputs {
        match output_value(&o.name, &o.selector, o.ty, response) {
            Ok(v) => outputs.push((o.name.clone(), o.ty, v)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(outputs)
    } else {
        Err(StepFailure::new("InvalidOutput", problems.join("; ")))
    }
}

/// A cancelled attempt.
fn cancelled() -> Attempt {
    Attempt::ended(
        StepStatus::Cancelled,
        Some("The step was cancelled.".into()),
    )
}

/// A failed attempt of `failure` (AWS-shaped message); a `Cancelled` one is a cancelled attempt.
pub(crate) fn failed(failure: StepFailure) -> Attempt {
    if failure.kind == "Cancelled" {
        return cancelled();
    }
    Attempt::ended(
        crate::result::StepStatus::Failed,
        Some(crate::result::aws_plain_failure(
            failure.kind,
            &failure.message,
        )),
    )
}

/// The most `DesiredValues` an action takes **(ours)**.
pub(crate) const MAX_DESIRED_VALUES: usize = 100;

/// The load-time checks the AWS API actions share: `Service` and `Api` are required strings
/// (a `{{ }}` value is known only at run time); every other key but `own` is a parameter of the
/// operation, passed through as written, so no key is refused as unknown.
pub(crate) fn check_service_api(cx: &mut super::CheckCx<'_>, step: &super::StepHead<'_>) {
    let ctx = step.ctx;
    let at = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
    for key in ["Service", "Api"] {
        let pos = step
            .inputs_node
            .and_then(|n| n.get(key))
            .map(|n| n.pos)
            .unwrap_or(at);
        match step.inputs.get(key) {
            None => cx.invalid(
                at,
                format!("{ctx}: inputs"),
                format!("{key} is required (a string)"),
            ),
            Some(Value::String(s)) if s.is_empty() => {
                cx.invalid(pos, format!("{ctx}: inputs.{key}"), "must not be empty")
            }
            Some(Value::String(s)) if s.chars().count() > 128 => cx.invalid(
                pos,
                format!("{ctx}: inputs.{key}"),
                "must be at most 128 characters",
            ),
            Some(Value::String(_)) => {}
            Some(other) => cx.invalid(
                pos,
                format!("{ctx}: inputs.{key}"),
                format!(
                    "must be a string, not {}",
                    crate::step::json_type_name(other)
                ),
            ),
        }
    }
}

/// A call read from resolved inputs: `Service`, `Api`, and every key but those and `own` as a
/// parameter.
#[derive(Debug, Clone)]
pub(crate) struct ApiCall {
    /// `Service`.
    pub service: String,
    /// `Api`.
    pub api: String,
    /// The operation's parameters.
    pub parameters: Map<String, Value>,
}

/// The call of resolved `inputs` (`own`: the action's keys that are not parameters).
pub(crate) fn api_call(inputs: &Map<String, Value>, own: &[&str]) -> Result<ApiCall, StepFailure> {
    let string = |key: &str| match inputs.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(StepFailure::new(
            "InvalidInput",
            format!(
                "inputs.{key} must be a non-empty string once resolved, not {}",
                crate::step::json_type_name(other)
            ),
        )),
        None => Err(StepFailure::new(
            "InvalidInput",
            format!("inputs.{key} is required"),
        )),
    };
    let parameters = inputs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "Service" | "Api") && !own.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(ApiCall {
        service: string("Service")?,
        api: string("Api")?,
        parameters,
    })
}

/// A value as `DesiredValues` compares it: strings as they are, Booleans `True` / `False` (as
/// AWS writes them), numbers in JSON; `None` for null, lists and maps.
pub(crate) fn compared(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True when the selected value is one of `desired`. A list (a `..` selector's) matches when it
/// is not empty and each of its items is one of them **(ours)**.
pub(crate) fn is_desired(selected: Option<&Value>, desired: &[String]) -> bool {
    match selected {
        Some(Value::Array(items)) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| compared(i).is_some_and(|c| desired.contains(&c)))
        }
        Some(v) => compared(v).is_some_and(|c| desired.contains(&c)),
        None => false,
    }
}

/// Checks `PropertySelector` and `DesiredValues` at load (wait and assert).
pub(crate) fn check_property(cx: &mut super::CheckCx<'_>, step: &super::StepHead<'_>) {
    let ctx = step.ctx;
    let at = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
    let pos = |key: &str| {
        step.inputs_node
            .and_then(|n| n.get(key))
            .map(|n| n.pos)
            .unwrap_or(at)
    };
    match step.inputs.get("PropertySelector") {
        None => cx.invalid(
            at,
            format!("{ctx}: inputs"),
            "PropertySelector is required (a selector such as $.Volumes[0].State)",
        ),
        Some(v @ Value::String(_)) if crate::runbook::interpolate::has_refs(v) => {}
        Some(Value::String(s)) => {
            if let Err(e) = crate::runbook::selector::Selector::parse_response(s) {
                cx.invalid(
                    pos("PropertySelector"),
                    format!("{ctx}: inputs.PropertySelector"),
                    e.to_string(),
                );
            }
        }
        Some(other) => cx.invalid(
            pos("PropertySelector"),
            format!("{ctx}: inputs.PropertySelector"),
            format!(
                "must be a string, not {}",
                crate::step::json_type_name(other)
            ),
        ),
    }
    let key = "DesiredValues";
    match step.inputs.get(key) {
        None => cx.invalid(
            at,
            format!("{ctx}: inputs"),
            "DesiredValues is required (a list of strings)",
        ),
        // A `{{ }}` reference to a StringList parameter.
        Some(v @ Value::String(_)) if crate::runbook::interpolate::has_refs(v) => {}
        Some(v) => {
            if let Err(e) = desired_values(v) {
                cx.invalid(pos(key), format!("{ctx}: inputs.{key}"), e.message);
            }
        }
    }
}

/// `DesiredValues` as strings: a non-empty list of at most [`MAX_DESIRED_VALUES`] strings,
/// Booleans or numbers.
pub(crate) fn desired_values(v: &Value) -> Result<Vec<String>, StepFailure> {
    let invalid = |m: String| StepFailure::new("InvalidInput", m);
    let Value::Array(items) = v else {
        return Err(invalid(format!(
            "must be a list of strings, not {}",
            crate::step::json_type_name(v)
        )));
    };
    if items.is_empty() || items.len() > MAX_DESIRED_VALUES {
        return Err(invalid(format!(
            "must hold 1 to {MAX_DESIRED_VALUES} values, not {}",
            items.len()
        )));
    }
    items
        .iter()
        .map(|i| {
            compared(i).ok_or_else(|| {
                invalid(format!(
                    "each value must be a string, not {}",
                    crate::step::json_type_name(i)
                ))
            })
        })
        .collect()
}

/// What wait and assert resolve once: the call, the selector and the desired values.
#[derive(Debug, Clone)]
pub(crate) struct PropertyCheck {
    /// The call.
    pub call: ApiCall,
    /// `PropertySelector`.
    pub selector: crate::runbook::selector::Selector,
    /// `DesiredValues`, as compared.
    pub desired: Vec<String>,
}

/// The [`PropertyCheck`] of resolved inputs.
pub(crate) fn property_check(inputs: &Map<String, Value>) -> Result<PropertyCheck, StepFailure> {
    let call = api_call(inputs, &["PropertySelector", "DesiredValues"])?;
    let selector = match inputs.get("PropertySelector") {
        Some(Value::String(s)) => crate::runbook::selector::Selector::parse_response(s)
            .map_err(|e| StepFailure::new("InvalidInput", format!("PropertySelector: {e}")))?,
        _ => {
            return Err(StepFailure::new(
                "InvalidInput",
                "inputs.PropertySelector must be a string",
            ));
        }
    };
    let desired = desired_values(inputs.get("DesiredValues").unwrap_or(&Value::Null))
        .map_err(|f| StepFailure::new(f.kind, format!("DesiredValues {}", f.message)))?;
    Ok(PropertyCheck {
        call,
        selector,
        desired,
    })
}

/// The selected value, shortened, for a message.
pub(crate) fn shown(v: Option<&Value>) -> String {
    v.map(crate::runbook::selector::short)
        .unwrap_or_else(|| "nothing".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_compare_as_aws_writes_them() {
        let desired = vec!["True".to_string(), "running".to_string()];
        assert!(is_desired(Some(&json!(true)), &desired));
        assert!(!is_desired(Some(&json!(false)), &desired));
        assert!(is_desired(Some(&json!("running")), &desired));
        assert!(is_desired(Some(&json!(["running", "running"])), &desired));
        assert!(!is_desired(Some(&json!(["running", "stopped"])), &desired));
        assert!(!is_desired(Some(&json!([])), &desired));
        assert!(!is_desired(None, &desired));
        assert!(is_desired(Some(&json!(3)), &["3".to_string()]));
    }

    #[test]
    fn desired_values_are_a_bounded_list_of_scalars() {
        assert_eq!(
            desired_values(&json!(["a", true, 1])).unwrap(),
            vec!["a", "True", "1"]
        );
        assert!(desired_values(&json!([])).is_err());
        assert!(desired_values(&json!("a")).is_err());
        assert!(desired_values(&json!([{"a": 1}])).is_err());
        let many: Vec<Value> = (0..=MAX_DESIRED_VALUES).map(|i| json!(i)).collect();
        assert!(desired_values(&Value::Array(many)).is_err());
    }

    #[test]
    fn every_key_but_the_actions_own_is_a_parameter() {
        let inputs = json!({"Service": "ec2", "Api": "describe-snapshots",
            "OwnerIds": ["self"], "PropertySelector": "$.x", "DesiredValues": ["a"]});
        let c = property_check(inputs.as_object().unwrap()).unwrap();
        assert_eq!(c.call.api, "describe-snapshots");
        assert_eq!(
            c.call.parameters.keys().collect::<Vec<_>>(),
            vec!["OwnerIds"]
        );
        let c = api_call(inputs.as_object().unwrap(), &[]).unwrap();
        assert_eq!(c.parameters.len(), 3);
        let no_api = json!({"Service": "ec2"});
        assert!(api_call(no_api.as_object().unwrap(), &[]).is_err());
    }
}
