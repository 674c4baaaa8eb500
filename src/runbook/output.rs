//! The report of an execution, shaped like AWS's `GetAutomationExecution` response.
//!
//! Times are [`Timestamp`](crate::timestamp::Timestamp)s, RFC 3339 UTC with milliseconds.
//! Outputs are maps of name → list of strings (maps JSON-encoded inside the list); step
//! `Inputs` are name → JSON-encoded string, as AWS shows them. scriptbox adds, under its own
//! `Scriptbox*` keys, the step's log, the attempts made and the step's execution id.

use serde_json::{Map, Value, json};

use super::executor::{Execution, StepRecord};
use super::interpolate::as_text;

/// What AWS shows for an output of a step that did not succeed.
pub const NO_OUTPUT: &str = "No output available yet because the step is not successfully executed";

/// A typed value as AWS's list of strings.
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(as_text).collect(),
        other => vec![as_text(other)],
    }
}

fn string_list(v: &Value) -> Value {
    Value::Array(strings(v).into_iter().map(Value::String).collect())
}

/// One step execution.
pub fn step_json(s: &StepRecord) -> Value {
    let mut inputs = Map::new();
    for (k, v) in &s.inputs {
        inputs.insert(k.clone(), Value::String(v.to_string()));
    }
    let mut outputs = Map::new();
    if s.status == crate::result::StepStatus::Success {
        for (name, _, v) in &s.outputs {
            outputs.insert(name.clone(), string_list(v));
        }
        if let Some(p) = &s.payload {
            outputs.insert(
                "OutputPayload".into(),
                json!([json!({ "Payload": p }).to_string()]),
            );
        }
    }
    let mut m = json!({
        "StepName": s.name,
        "Action": s.action_kind.name(),
        "StepExecutionId": s.step_execution_id,
        "StepStatus": s.status.as_str(),
        "ExecutionStartTime": s.start.rfc3339(),
        "ExecutionEndTime": s.end.rfc3339(),
        "Inputs": inputs,
        "Outputs": outputs,
        "OnFailure": s.on_failure,
        "MaxAttempts": s.max_attempts,
        "IsCritical": s.is_critical,
        "IsEnd": s.is_end,
        "ScriptboxAttempts": s.attempts,
        "ScriptboxLog": s.log,
    });
    if let Some(t) = s.timeout_seconds {
        m["TimeoutSeconds"] = json!(t);
    }
    if let Some(n) = &s.next_step {
        m["NextStep"] = json!(n);
    }
    if let Some(f) = &s.failure_message {
        m["FailureMessage"] = json!(f);
    }
    if let Some(egress) = &s.egress {
        m["ScriptboxEgress"] = json!(egress);
    }
    m
}

/// The execution's egress: the sum of its steps' (absent when no step had AWS access).
fn execution_egress(e: &Execution) -> Option<crate::egress::EgressCounts> {
    let mut total: Option<crate::egress::EgressCounts> = None;
    for counts in e.steps.iter().filter_map(|s| s.egress.as_ref()) {
        total.get_or_insert_with(Default::default).add(counts);
    }
    total
}

/// The whole execution.
pub fn execution_json(e: &Execution) -> Value {
    let mut params = Map::new();
    for (k, v) in &e.parameters {
        params.insert(k.clone(), string_list(v));
    }
    let mut outputs = Map::new();
    for (name, v) in &e.outputs {
        outputs.insert(
            name.clone(),
            match v {
                Some(v) => string_list(v),
                None => json!([NO_OUTPUT]),
            },
        );
    }
    let mut m = json!({
        "AutomationExecutionId": e.id,
        "DocumentName": e.document_name,
        "AutomationExecutionStatus": e.status.as_str(),
        "ExecutionStartTime": e.start.rfc3339(),
        "ExecutionEndTime": e.end.rfc3339(),
        "Parameters": params,
        "Outputs": outputs,
        "StepExecutions": e.steps.iter().map(step_json).collect::<Vec<_>>(),
    });
    if let Some(f) = &e.failure_message {
        m["FailureMessage"] = json!(f);
    }
    if let Some(egress) = execution_egress(e) {
        m["ScriptboxEgress"] = json!(egress);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_lists_of_strings() {
        assert_eq!(strings(&json!("a")), vec!["a"]);
        assert_eq!(strings(&json!(3)), vec!["3"]);
        assert_eq!(strings(&json!(true)), vec!["true"]);
        assert_eq!(strings(&json!(["x", "y"])), vec!["x", "y"]);
        assert_eq!(strings(&json!({"k": 1})), vec!["{\"k\":1}"]);
        assert_eq!(
            strings(&json!([{"k": 1}, {"j": 2}])),
            vec!["{\"k\":1}", "{\"j\":2}"]
        );
    }
}
