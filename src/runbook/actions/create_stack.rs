//! `aws:createStack`: a CloudFormation stack (CreateStack), waited for until its status is
//! terminal (DescribeStacks). `CREATE_COMPLETE` succeeds; any other terminal status fails the
//! step with the stack's reason. Outputs `StackId`, `StackStatus` and, when CloudFormation
//! gives one, `StackStatusReason` (String).
//!
//! Inputs as AWS's page lists them: `TemplateBody` or `TemplateURL` (one of them), `OnFailure`
//! (default `ROLLBACK`) or `DisableRollback` (not both), `StackPolicyBody` or `StackPolicyURL`
//! (not both), `Parameters` (`{ParameterKey, ParameterValue}`), `Tags` (`{Key, Value}`),
//! `Capabilities`. A `TemplateBody` written as a map is sent as its JSON text **(ours:
//! CloudFormation takes a string)**. Default timeout 3600 s **(ours: AWS's page gives none)**.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed, poll_until_logged};
use super::resources::{self, Deadline, Input, InputError, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::selector::ValueType;

/// The default timeout of the stack actions' waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// CloudFormation's longest TemplateBody, bytes.
pub const MAX_TEMPLATE_BODY: usize = 51_200;

/// CloudFormation's limits: tags per stack, notification topics.
const MAX_TAGS: usize = 50;
const MAX_NOTIFICATION_ARNS: usize = 5;

const CAPABILITIES: &[&str] = &[
    "CAPABILITY_IAM",
    "CAPABILITY_NAMED_IAM",
    "CAPABILITY_AUTO_EXPAND",
];

const SPEC: &[Input] = &[
    opt("Capabilities", Ty::StrList).at_most(3),
    opt("ClientRequestToken", Ty::Str),
    opt("DisableRollback", Ty::Bool),
    opt("NotificationARNs", Ty::StrList).at_most(MAX_NOTIFICATION_ARNS),
    opt(
        "OnFailure",
        Ty::OneOf(&["DO_NOTHING", "ROLLBACK", "DELETE"]),
    ),
    opt("Parameters", Ty::MapList),
    opt("ResourceTypes", Ty::StrList),
    opt("RoleARN", Ty::Str),
    req("StackName", Ty::Str),
    opt("StackPolicyBody", Ty::Str),
    opt("StackPolicyURL", Ty::Str),
    opt("Tags", Ty::MapList).at_most(MAX_TAGS),
    opt("TemplateBody", Ty::Any),
    opt("TemplateURL", Ty::Str),
    opt("TimeoutInMinutes", Ty::Int),
];

/// `aws:createStack`.
pub(crate) struct CreateStack;

impl ActionSpec for CreateStack {
    const ACTION: Action = Action::CreateStack;
    const INPUT_KEYS: &'static [&'static str] = &[
        "Capabilities",
        "ClientRequestToken",
        "DisableRollback",
        "NotificationARNs",
        "OnFailure",
        "Parameters",
        "ResourceTypes",
        "RoleARN",
        "StackName",
        "StackPolicyBody",
        "StackPolicyURL",
        "Tags",
        "TemplateBody",
        "TemplateURL",
        "TimeoutInMinutes",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] =
        &["StackId", "StackStatus", "StackStatusReason"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    /// Types, then the rules between inputs (which of each pair is given is known at load even
    /// when the values hold `{{ }}`); the values' own rules when written literally.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        let pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
        if let Err(e) = pairs(step.inputs) {
            cx.invalid(pos, step.ctx, e.to_string());
        } else if !crate::runbook::interpolate::has_refs(&Value::Object(step.inputs.clone())) {
            if let Ok(read) = resources::read(step.inputs, SPEC) {
                if let Err(e) = parameters(&read) {
                    cx.invalid(pos, step.ctx, e.to_string());
                }
            }
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// CreateStack's parameters from the resolved inputs.
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        pairs(inputs).map_err(|e| e.failure())?;
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        parameters(&read).map_err(|e| e.failure())
    }

    /// CreateStack, then DescribeStacks until a terminal status.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        params: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let parent = cx.cancel;
            let deadline = Deadline::new(parent, resources::step_timeout(step, DEFAULT_TIMEOUT));
            let mut sub = deadline.narrow(cx);
            deadline
                .run(
                    parent,
                    "the stack reached a final status",
                    create(&mut sub, step, params),
                )
                .await
        })
    }
}

/// One of TemplateBody / TemplateURL; not both of OnFailure / DisableRollback, nor of
/// StackPolicyBody / StackPolicyURL.
fn pairs(inputs: &Map<String, Value>) -> Result<(), InputError> {
    let has = |k: &str| inputs.contains_key(k);
    match (has("TemplateBody"), has("TemplateURL")) {
        (false, false) => {
            return Err(InputError::Rule(
                "inputs: TemplateBody or TemplateURL is required".into(),
            ));
        }
        (true, true) => {
            return Err(InputError::Rule(
                "inputs: give TemplateBody or TemplateURL, not both".into(),
            ));
        }
        _ => {}
    }
    for (a, b) in [
        ("OnFailure", "DisableRollback"),
        ("StackPolicyBody", "StackPolicyURL"),
    ] {
        if has(a) && has(b) {
            return Err(InputError::Rule(format!(
                "inputs: give {a} or {b}, not both"
            )));
        }
    }
    Ok(())
}

/// A CloudFormation stack name: letters, digits and hyphens, starting with a letter, at most
/// 128 characters.
fn stack_name_ok(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Each item of `key` a map of only `fields`, with `first` a string.
fn items_of(
    read: &Map<String, Value>,
    key: &str,
    first: &str,
    fields: &[&str],
) -> Result<(), InputError> {
    for (i, item) in read
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(m) = item.as_object() else { continue };
        if !m.get(first).is_some_and(Value::is_string)
            || !m.keys().all(|k| fields.contains(&k.as_str()))
        {
            return Err(InputError::Rule(format!(
                "inputs.{key}[{i}]: must be a map with {first} (fields: {})",
                fields.join(", ")
            )));
        }
    }
    Ok(())
}

/// CreateStack's parameters for read inputs (OnFailure defaults to ROLLBACK).
fn parameters(read: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
    let name = resources::text(read, "StackName").unwrap_or_default();
    if !stack_name_ok(name) {
        return Err(InputError::Rule(format!(
            "inputs.StackName: {name:?} must be letters, digits and hyphens, start with a letter, and be at most 128 characters"
        )));
    }
    for cap in resources::strings(read, "Capabilities") {
        if !CAPABILITIES.contains(&cap.as_str()) {
            return Err(InputError::Rule(format!(
                "inputs.Capabilities: {cap:?} is not one of {}",
                CAPABILITIES.join(", ")
            )));
        }
    }
    items_of(
        read,
        "Parameters",
        "ParameterKey",
        &[
            "ParameterKey",
            "ParameterValue",
            "UsePreviousValue",
            "ResolvedValue",
        ],
    )?;
    items_of(read, "Tags", "Key", &["Key", "Value"])?;
    if let Some(t) = read.get("TimeoutInMinutes").and_then(Value::as_i64) {
        if t < 1 {
            return Err(InputError::Rule(format!(
                "inputs.TimeoutInMinutes: must be at least 1, not {t}"
            )));
        }
    }
    let mut p = Map::new();
    resources::pass(
        &mut p,
        read,
        &[
            "Capabilities",
            "ClientRequestToken",
            "DisableRollback",
            "NotificationARNs",
            "OnFailure",
            "Parameters",
            "ResourceTypes",
            "RoleARN",
            "StackName",
            "StackPolicyBody",
            "StackPolicyURL",
            "Tags",
            "TemplateURL",
            "TimeoutInMinutes",
        ],
    );
    if !p.contains_key("DisableRollback") {
        p.entry("OnFailure").or_insert_with(|| json!("ROLLBACK"));
    }
    if let Some(body) = read.get("TemplateBody") {
        let text = match body {
            Value::String(s) => s.clone(),
            Value::Object(_) => body.to_string(),
            other => {
                return Err(InputError::Rule(format!(
                    "inputs.TemplateBody: must be a string (or a map), not {}",
                    crate::step::json_type_name(other)
                )));
            }
        };
        if text.is_empty() || text.len() > MAX_TEMPLATE_BODY {
            return Err(InputError::Rule(format!(
                "inputs.TemplateBody: must be 1 to {MAX_TEMPLATE_BODY} bytes, not {}",
                text.len()
            )));
        }
        p.insert("TemplateBody".into(), Value::String(text));
    }
    Ok(p)
}

/// The first stack of a DescribeStacks response: `(StackStatus, StackStatusReason)`.
pub(crate) fn stack_status(r: &Value) -> Option<(String, Option<String>)> {
    let s = r.get("Stacks").and_then(Value::as_array)?.first()?;
    Some((
        resources::str_at(s, &["StackStatus"])?.to_string(),
        resources::str_at(s, &["StackStatusReason"]).map(str::to_string),
    ))
}

/// Whether a status is final (nothing more happens without a new request).
pub(crate) fn terminal(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
}

async fn create(cx: &mut RunCx<'_>, step: &StepDecl, params: &Map<String, Value>) -> Attempt {
    let mut log = Vec::new();
    let name = resources::text(params, "StackName").unwrap_or_default();
    let response = match call_in_step(
        cx,
        step,
        &mut log,
        "cloudformation",
        "CreateStack",
        params.clone(),
    )
    .await
    {
        Ok(r) => r,
        Err(f) => return resources::with_log(failed(f), log),
    };
    let Some(id) = resources::str_at(&response, &["StackId"]).map(str::to_string) else {
        return resources::failed_with("InvalidResponse", "CreateStack returned no StackId", log);
    };
    note(&mut log, format!("stack {id}; waiting for a final status"));
    let mut describe = Map::new();
    describe.insert("StackName".into(), json!(id));
    let done = |r: &Value| Ok(stack_status(r).is_some_and(|(s, _)| terminal(&s)));
    let last = match poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "cloudformation",
        "DescribeStacks",
        &describe,
        &done,
    )
    .await
    {
        Ok(r) => r,
        Err(a) => return resources::with_log(a, log),
    };
    let (status, reason) = stack_status(&last).unwrap_or_default();
    if status != "CREATE_COMPLETE" {
        return resources::failed_with(
            "StackCreationFailed",
            &format!(
                "stack {name} ended {status}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            log,
        );
    }
    let mut outputs = vec![
        ("StackId".into(), ValueType::String, json!(id)),
        ("StackStatus".into(), ValueType::String, json!(status)),
    ];
    if let Some(r) = reason {
        outputs.push(("StackStatusReason".into(), ValueType::String, json!(r)));
    }
    resources::succeeded(outputs, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Result<Map<String, Value>, String> {
        let m = v.as_object().unwrap();
        pairs(m).map_err(|e| e.to_string())?;
        let read = resources::read(m, SPEC).map_err(|e| e.to_string())?;
        parameters(&read).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_renderings() {
        let p = params(json!({"StackName": "s-1", "TemplateBody": {"Resources": {}}})).unwrap();
        assert_eq!(p["OnFailure"], json!("ROLLBACK"));
        assert_eq!(p["TemplateBody"], json!("{\"Resources\":{}}"));
        let p =
            params(json!({"StackName": "s", "TemplateURL": "https://x", "DisableRollback": true}))
                .unwrap();
        assert!(!p.contains_key("OnFailure"));
    }

    #[test]
    fn rules() {
        let e = |v| params(v).unwrap_err();
        assert!(e(json!({"StackName": "s"})).contains("TemplateBody or TemplateURL is required"));
        assert!(
            e(json!({"StackName": "s", "TemplateBody": "x", "TemplateURL": "y"}))
                .contains("not both")
        );
        assert!(
            e(json!({"StackName": "s", "TemplateBody": "x", "OnFailure": "DELETE", "DisableRollback": false}))
                .contains("OnFailure or DisableRollback")
        );
        assert!(
            e(json!({"StackName": "1bad", "TemplateBody": "x"})).contains("start with a letter")
        );
        assert!(
            e(json!({"StackName": "s", "TemplateBody": "x", "Capabilities": ["CAPABILITY_ALL"]}))
                .contains("Capabilities")
        );
        assert!(
            e(json!({"StackName": "s", "TemplateBody": "x", "Parameters": [{"Key": "a"}]}))
                .contains("inputs.Parameters[0]")
        );
        assert!(e(json!({"StackName": "s", "TemplateBody": ""})).contains("1 to 51200 bytes"));
    }

    #[test]
    fn statuses() {
        assert!(terminal("CREATE_COMPLETE") && terminal("ROLLBACK_COMPLETE"));
        assert!(!terminal("CREATE_IN_PROGRESS") && !terminal("ROLLBACK_IN_PROGRESS"));
        let r = json!({"Stacks": [{"StackStatus": "CREATE_FAILED", "StackStatusReason": "no"}]});
        assert_eq!(
            stack_status(&r),
            Some(("CREATE_FAILED".into(), Some("no".into())))
        );
    }
}
