//! `aws:invokeLambdaFunction`: one Lambda Invoke. Outputs `StatusCode` (Integer) and, when
//! Lambda gives them, `FunctionError`, `LogResult` (String) and `Payload` (the function's JSON:
//! a StringMap when it is an object, else its text as a String). Declared `outputs` select
//! from `{StatusCode, FunctionError, LogResult, Payload}` (`$.Payload.resultCode`), as AWS
//! Solutions' runbooks write them.
//!
//! `InputPayload` (a map, JSON-encoded) wins over `Payload` (JSON text, or a map encoded)
//! **(ours: AWS's page names Payload; AWS-owned documents use InputPayload)**. The step runs
//! at most 300 s (AWS's page): a longer `timeoutSeconds` is held to it. A function that
//! returns an error still succeeds, with `FunctionError` set **(ours: AWS documents it as an
//! output)**.

use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::aws_call::{call_in_step, failed, select_outputs};
use super::resources::{self, Deadline, Input, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::selector::ValueType;

/// AWS's longest run of the action.
pub const MAX_DURATION: Duration = Duration::from_secs(300);

const SPEC: &[Input] = &[
    req("FunctionName", Ty::Str),
    opt("Qualifier", Ty::Str),
    opt(
        "InvocationType",
        Ty::OneOf(&["Event", "RequestResponse", "DryRun"]),
    ),
    opt("LogType", Ty::OneOf(&["None", "Tail"])),
    opt("ClientContext", Ty::Str),
    opt("Payload", Ty::Any),
    opt("InputPayload", Ty::Map),
];

/// `aws:invokeLambdaFunction`.
pub(crate) struct InvokeLambdaFunction;

impl ActionSpec for InvokeLambdaFunction {
    const ACTION: Action = Action::InvokeLambdaFunction;
    const INPUT_KEYS: &'static [&'static str] = &[
        "FunctionName",
        "Qualifier",
        "InvocationType",
        "LogType",
        "ClientContext",
        "Payload",
        "InputPayload",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] =
        &["StatusCode", "FunctionError", "LogResult", "Payload"];
    const DECLARES_OUTPUTS: bool = true;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        if let Some(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_))) =
            step.inputs.get("Payload")
        {
            let pos = step
                .inputs_node
                .and_then(|n| n.get("Payload"))
                .map_or(step.node.pos, |n| n.pos);
            cx.invalid(
                pos,
                step.ctx,
                format!(
                    "inputs.Payload: must be JSON text or a map, not {}",
                    crate::step::json_type_name(v)
                ),
            );
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// Invoke's parameters: the payload as JSON text.
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        parameters(&read)
    }

    /// One Invoke, within 300 s.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        params: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let parent = cx.cancel;
            let total = resources::step_timeout(step, MAX_DURATION).min(MAX_DURATION);
            let deadline = Deadline::new(parent, total);
            let mut sub = deadline.narrow(cx);
            deadline
                .run(
                    parent,
                    "the function returned",
                    invoke(&mut sub, step, params),
                )
                .await
        })
    }
}

/// Invoke's parameters for read inputs: the payload as JSON text.
fn parameters(read: &Map<String, Value>) -> Result<Map<String, Value>, StepFailure> {
    let mut p = Map::new();
    resources::pass(
        &mut p,
        read,
        &[
            "FunctionName",
            "Qualifier",
            "InvocationType",
            "LogType",
            "ClientContext",
        ],
    );
    let payload = match (read.get("InputPayload"), read.get("Payload")) {
        (Some(m), _) => Some(m.to_string()),
        (None, Some(Value::String(s))) => Some(s.clone()),
        (None, Some(m @ Value::Object(_))) => Some(m.to_string()),
        (None, Some(other)) => {
            return Err(StepFailure::new(
                "InvalidInput",
                format!(
                    "inputs.Payload: must be JSON text or a map, not {}",
                    crate::step::json_type_name(other)
                ),
            ));
        }
        (None, None) => None,
    };
    if let Some(text) = payload {
        p.insert("Payload".into(), Value::String(text));
    }
    Ok(p)
}

/// The function's payload as a value: the worker gives Lambda's bytes as base64, decoded and
/// parsed as JSON (else kept as text); a string that is not base64 is parsed as JSON text.
fn payload_value(v: &Value) -> Value {
    let Value::String(s) = v else {
        return v.clone();
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded {
        Some(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        None => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
    }
}

/// The step's outputs from Invoke's response, and the object declared outputs select from.
fn outputs(response: &Value) -> (Vec<(String, ValueType, Value)>, Value) {
    let mut out = Vec::new();
    let mut object = Map::new();
    if let Some(code) = response.get("StatusCode").filter(|c| c.is_i64()) {
        out.push(("StatusCode".into(), ValueType::Integer, code.clone()));
        object.insert("StatusCode".into(), code.clone());
    }
    for key in ["FunctionError", "LogResult"] {
        if let Some(s) = response.get(key).filter(|v| v.is_string()) {
            out.push((key.into(), ValueType::String, s.clone()));
            object.insert(key.into(), s.clone());
        }
    }
    if let Some(p) = response.get("Payload") {
        let value = payload_value(p);
        let (ty, shown) = match &value {
            Value::Object(_) => (ValueType::StringMap, value.clone()),
            Value::String(_) => (ValueType::String, value.clone()),
            other => (ValueType::String, Value::String(other.to_string())),
        };
        out.push(("Payload".into(), ty, shown));
        object.insert("Payload".into(), value);
    }
    (out, Value::Object(object))
}

async fn invoke(cx: &mut RunCx<'_>, step: &StepDecl, params: &Map<String, Value>) -> Attempt {
    let mut log = Vec::new();
    if step.timeout_seconds.is_some_and(|t| t > 300) {
        note(
            &mut log,
            "timeoutSeconds is above aws:invokeLambdaFunction's maximum of 300 s: held to 300 s",
        );
    }
    let response = match call_in_step(cx, step, &mut log, "lambda", "Invoke", params.clone()).await
    {
        Ok(r) => r,
        Err(f) => return resources::with_log(failed(f), log),
    };
    let (mut outs, object) = outputs(&response);
    match select_outputs(step, &object) {
        Ok(declared) => outs.extend(declared),
        Err(f) => return resources::with_log(failed(f), log),
    }
    if let Some(e) = response.get("FunctionError").and_then(Value::as_str) {
        note(&mut log, format!("the function returned an error ({e})"));
    }
    resources::succeeded(outs, log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_renderings() {
        assert_eq!(payload_value(&json!("{\"a\": 1}")), json!({"a": 1}));
        assert_eq!(payload_value(&json!("eyJhIjogMX0=")), json!({"a": 1}));
        assert_eq!(payload_value(&json!("plain")), json!("plain"));
        assert_eq!(payload_value(&json!({"b": 2})), json!({"b": 2}));
    }

    #[test]
    fn outputs_of_a_response() {
        let (outs, object) = outputs(&json!({
            "StatusCode": 200, "FunctionError": "Unhandled", "Payload": "{\"errorMessage\": \"x\"}"
        }));
        let names: Vec<&str> = outs.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["StatusCode", "FunctionError", "Payload"]);
        assert_eq!(outs[2].1, ValueType::StringMap);
        assert_eq!(object["Payload"]["errorMessage"], json!("x"));
        let (outs, _) = outputs(&json!({"StatusCode": 202, "Payload": ""}));
        assert_eq!(outs[1], ("Payload".into(), ValueType::String, json!("")));
    }

    #[test]
    fn input_payload_wins() {
        let inputs =
            json!({"FunctionName": "f", "InputPayload": {"a": 1}, "Payload": "{\"b\": 2}"});
        let read = resources::read(inputs.as_object().unwrap(), SPEC).unwrap();
        let p = parameters(&read).unwrap();
        assert_eq!(p["Payload"], json!("{\"a\":1}"));
        let inputs = json!({"FunctionName": "f", "Payload": {"b": 2}, "LogType": "Tail"});
        let read = resources::read(inputs.as_object().unwrap(), SPEC).unwrap();
        let p = parameters(&read).unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"FunctionName": "f", "LogType": "Tail", "Payload": "{\"b\":2}"})
        );
    }
}
