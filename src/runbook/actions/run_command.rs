//! `aws:runCommand`: sends a Run Command (SSM SendCommand), polls it until it ends, then reads
//! the first instance's invocation. Outputs `CommandId`, `Status` (String), and from the
//! invocation `ResponseCode` (Integer) and `Output` (its standard output, String).
//!
//! The wait polls `ListCommands` for the command's status rather than `ListCommandInvocations`
//! **(ours: moto, the emulator scriptbox is tested against, lacks ListCommandInvocations; the
//! command's status is the invocations' summary)**; the invocation is read with
//! `GetCommandInvocation`. A command that ends Failed, TimedOut or Cancelled fails the step.
//! Of several instances, the first one's invocation gives `ResponseCode` and `Output` (AWS
//! says Automation supports the output of one invocation). Default timeout 3600 s **(ours)**.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed, poll_until_logged};
use super::resources::{self, Deadline, Input, InputError, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::selector::ValueType;

/// The default timeout **(ours)**.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// SendCommand's limits: 50 instance ids, 5 targets.
const MAX_INSTANCE_IDS: usize = 50;
const MAX_TARGETS: usize = 5;

const SPEC: &[Input] = &[
    req("DocumentName", Ty::Str),
    opt("InstanceIds", Ty::StrList).at_most(MAX_INSTANCE_IDS),
    opt("Targets", Ty::MapList).at_most(MAX_TARGETS),
    opt("Parameters", Ty::Map),
    opt("CloudWatchOutputConfig", Ty::Map),
    opt("Comment", Ty::Str),
    opt("DocumentHash", Ty::Str),
    opt("DocumentHashType", Ty::OneOf(&["Sha256", "Sha1"])),
    opt("DocumentVersion", Ty::Str),
    opt("NotificationConfig", Ty::Map),
    opt("OutputS3BucketName", Ty::Str),
    opt("OutputS3KeyPrefix", Ty::Str),
    opt("OutputS3Region", Ty::Str),
    opt("ServiceRoleArn", Ty::Str),
    opt("TimeoutSeconds", Ty::Int),
    opt("MaxConcurrency", Ty::Str),
    opt("MaxErrors", Ty::Str),
    opt("AlarmConfiguration", Ty::Map),
];

/// `aws:runCommand`.
pub(crate) struct RunCommand;

impl ActionSpec for RunCommand {
    const ACTION: Action = Action::RunCommand;
    const INPUT_KEYS: &'static [&'static str] = &[
        "DocumentName",
        "InstanceIds",
        "Targets",
        "Parameters",
        "CloudWatchOutputConfig",
        "Comment",
        "DocumentHash",
        "DocumentHashType",
        "DocumentVersion",
        "NotificationConfig",
        "OutputS3BucketName",
        "OutputS3KeyPrefix",
        "OutputS3Region",
        "ServiceRoleArn",
        "TimeoutSeconds",
        "MaxConcurrency",
        "MaxErrors",
        "AlarmConfiguration",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] =
        &["CommandId", "Status", "ResponseCode", "Output"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    /// Types; InstanceIds or Targets (which one is known at load).
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        if let Err(e) = targets(step.inputs) {
            let pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
            cx.invalid(pos, step.ctx, e.to_string());
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// SendCommand's parameters (the inputs under their own names).
    fn prepare(
        _cx: &RunCx<'_>,
        _step: &StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        targets(inputs).map_err(|e| e.failure())?;
        let mut params = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        if let Some(Value::Object(p)) = params.get_mut("Parameters") {
            as_string_lists(p);
        }
        Ok(params)
    }

    /// SendCommand, ListCommands until it ends, GetCommandInvocation.
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
                .run(parent, "the command ended", run(&mut sub, step, params))
                .await
        })
    }
}

/// SendCommand's `Parameters` are lists of strings; AWS's own runbooks write scalars
/// (`Operation: Install`, `timeoutSeconds: 600`), which the service takes as one-item lists
/// **(ours: AWS's user guide writes both forms)**. A list's scalar items become strings.
fn as_string_lists(parameters: &mut Map<String, Value>) {
    let text = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    };
    for value in parameters.values_mut() {
        let wrapped = match &*value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Object(_) | Value::Array(_) => i.clone(),
                        scalar => text(scalar),
                    })
                    .collect(),
            ),
            Value::Object(_) => continue,
            scalar => Value::Array(vec![text(scalar)]),
        };
        *value = wrapped;
    }
}

/// One of InstanceIds or Targets.
fn targets(inputs: &Map<String, Value>) -> Result<(), InputError> {
    match (
        inputs.contains_key("InstanceIds"),
        inputs.contains_key("Targets"),
    ) {
        (false, false) => Err(InputError::Rule(
            "inputs: InstanceIds or Targets is required".into(),
        )),
        (true, true) => Err(InputError::Rule(
            "inputs: give InstanceIds or Targets, not both".into(),
        )),
        _ => Ok(()),
    }
}

/// A command's status once it ended (`None` while it is pending or running).
fn ended(r: &Value) -> Option<&str> {
    let status = r
        .get("Commands")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| resources::str_at(c, &["Status"]))?;
    matches!(status, "Success" | "Failed" | "TimedOut" | "Cancelled").then_some(status)
}

async fn run(cx: &mut RunCx<'_>, step: &StepDecl, params: &Map<String, Value>) -> Attempt {
    let mut log = Vec::new();
    let document = resources::text(params, "DocumentName").unwrap_or_default();
    let sent = match call_in_step(cx, step, &mut log, "ssm", "SendCommand", params.clone()).await {
        Ok(r) => r,
        Err(f) => return resources::with_log(failed(f), log),
    };
    let Some(id) = resources::str_at(&sent, &["Command", "CommandId"]).map(str::to_string) else {
        return resources::failed_with("InvalidResponse", "SendCommand returned no CommandId", log);
    };
    let instances: Vec<String> = sent
        .pointer("/Command/InstanceIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_string))
        .chain(resources::strings(params, "InstanceIds"))
        .collect();
    note(&mut log, format!("command {id}; waiting until it ends"));
    let mut list = Map::new();
    list.insert("CommandId".into(), json!(id));
    let done = |r: &Value| Ok(ended(r).is_some());
    let last = match poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "ssm",
        "ListCommands",
        &list,
        &done,
    )
    .await
    {
        Ok(r) => r,
        Err(a) => return resources::with_log(a, log),
    };
    let status = ended(&last).unwrap_or("Success").to_string();
    if status != "Success" {
        return resources::failed_with(
            "CommandFailed",
            &format!("command {id} ({document}) ended {status}"),
            log,
        );
    }
    let mut outputs = vec![
        ("CommandId".into(), ValueType::String, json!(id)),
        ("Status".into(), ValueType::String, json!(status)),
    ];
    if let Some(instance) = instances.first() {
        let mut get = Map::new();
        get.insert("CommandId".into(), json!(id));
        get.insert("InstanceId".into(), json!(instance));
        match call_in_step(cx, step, &mut log, "ssm", "GetCommandInvocation", get).await {
            Ok(inv) => {
                if let Some(code) = inv.get("ResponseCode").filter(|c| c.is_i64()) {
                    outputs.push(("ResponseCode".into(), ValueType::Integer, code.clone()));
                }
                let out = resources::str_at(&inv, &["StandardOutputContent"]).unwrap_or_default();
                outputs.push(("Output".into(), ValueType::String, json!(out)));
            }
            Err(f) => return resources::with_log(failed(f), log),
        }
    }
    resources::succeeded(outputs, log)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scalar_command_parameters_become_one_item_string_lists() {
        let mut p = serde_json::json!({"Operation": "Install", "timeout": 600, "List": ["a", 1], "Keep": {"k": "v"}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        super::as_string_lists(&mut p);
        assert_eq!(
            serde_json::Value::Object(p),
            serde_json::json!({"Operation": ["Install"], "timeout": ["600"], "List": ["a", "1"], "Keep": {"k": "v"}})
        );
    }

    use super::*;

    #[test]
    fn instance_ids_or_targets() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert!(targets(&m(json!({"InstanceIds": ["i-1"]}))).is_ok());
        assert!(targets(&m(json!({"Targets": []}))).is_ok());
        assert!(
            targets(&m(json!({})))
                .unwrap_err()
                .to_string()
                .contains("InstanceIds or Targets is required")
        );
        assert!(targets(&m(json!({"InstanceIds": [], "Targets": []}))).is_err());
    }

    #[test]
    fn ended_statuses() {
        let r = |s: &str| json!({"Commands": [{"CommandId": "c", "Status": s}]});
        assert_eq!(ended(&r("InProgress")), None);
        assert_eq!(ended(&r("Pending")), None);
        assert_eq!(ended(&r("Success")), Some("Success"));
        assert_eq!(ended(&r("Failed")), Some("Failed"));
    }
}
