//! `aws:executeAutomation`: a child runbook execution, its outputs flowing back.
//!
//! The child is a real execution with its own id and record, linked to its parent
//! (`ParentAutomationExecutionId`), started and awaited through the execution's
//! [`ChildRunbooks`](crate::runbook::children::ChildRunbooks) port (the daemon's document store,
//! or `scriptbox run --documents DIR`). Outputs, as AWS's reference page gives them: `Output`
//! (StringList, the child's outputs), `ExecutionId` (String) and `Status` (String).
//!
//! Decisions where AWS is silent **(ours)**:
//! - Targets and rate control (`TargetParameterName`, `Targets`, `TargetMaps`,
//!   `TargetLocations`, `MaxConcurrency`, `MaxErrors`) are refused at load as unsupported.
//! - `Tags` is checked (a list of `Key`/`Value` maps) and otherwise ignored: local executions
//!   have no tags.
//! - `Output` lists the child's document outputs in the order the child declares them, each as
//!   its list of strings (an output whose step did not succeed shows AWS's placeholder text).
//! - The step fails unless the child ends `Success`; cancelling the parent (or the step's
//!   `timeoutSeconds`) cancels the child and waits for it to end.
//! - The step is not retried (`maxAttempts` does not start a second child).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::{StepStatus, aws_plain_failure};
use crate::runbook::children::{
    ChildError, ChildOutcome, ChildRequest, MAX_CHILD_DEPTH, MAX_RUNTIME_PARAMETERS,
    document_name_of,
};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate;
use crate::runbook::selector::ValueType;
use crate::runbook::yaml::Pos;

/// The inputs scriptbox refuses: targets and rate control **(ours: out of scope)**.
const TARGET_KEYS: [&str; 6] = [
    "TargetParameterName",
    "Targets",
    "TargetMaps",
    "TargetLocations",
    "MaxConcurrency",
    "MaxErrors",
];

/// The longest `DocumentName` (an ARN included) accepted **(ours: AWS's ARNs stay well within)**.
pub const MAX_DOCUMENT_NAME_CHARS: usize = 1024;

/// Why an input of aws:executeAutomation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteAutomationError {
    /// `DocumentName` is not a valid name or ARN.
    #[error(
        "{0:?} is not a document name (3 to 128 of A-Z a-z 0-9 _ - .) or a document ARN ending in document/NAME"
    )]
    BadName(String),
    /// `DocumentVersion` is not `$DEFAULT`, `$LATEST` or a version number.
    #[error("{0:?} is not a document version: use $DEFAULT, $LATEST or a number from 1")]
    BadVersion(String),
    /// `RuntimeParameters` is not a map.
    #[error("must be a map of parameter name to value, not {0}")]
    NotAMap(&'static str),
    /// Too many runtime parameters.
    #[error("has {0} parameters; at most {MAX_RUNTIME_PARAMETERS} are allowed")]
    TooMany(usize),
    /// A parameter's value is neither a string, a number, a boolean, a list nor a map.
    #[error("parameter {0:?} must be a string, a number, a boolean, a list or a map, not null")]
    NullValue(String),
    /// A required input is not a string.
    #[error("must be a string, not {0}")]
    NotAString(&'static str),
}

/// Checks a document name or ARN as written (no `{{ }}` left).
pub fn check_document_name(s: &str) -> Result<(), ExecuteAutomationError> {
    let bad = || ExecuteAutomationError::BadName(s.chars().take(200).collect());
    if s.chars().count() > MAX_DOCUMENT_NAME_CHARS {
        return Err(bad());
    }
    let name = document_name_of(s);
    let len = name.chars().count();
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=128).contains(&len) || !plain {
        return Err(bad());
    }
    Ok(())
}

/// Checks a document version as written: `$DEFAULT`, `$LATEST` or a number from 1.
pub fn check_document_version(v: &Value) -> Result<Option<String>, ExecuteAutomationError> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(ExecuteAutomationError::NotAString(type_name(other))),
    };
    let number = !text.is_empty()
        && !text.starts_with('0')
        && text.len() <= 18
        && text.chars().all(|c| c.is_ascii_digit());
    if text == "$DEFAULT" || text == "$LATEST" || number {
        Ok(Some(text))
    } else {
        Err(ExecuteAutomationError::BadVersion(
            text.chars().take(100).collect(),
        ))
    }
}

/// Checks `RuntimeParameters` (resolved, or as written): a map of at most
/// [`MAX_RUNTIME_PARAMETERS`] entries, no value null.
pub fn check_runtime_parameters(v: &Value) -> Result<Map<String, Value>, ExecuteAutomationError> {
    let m = match v {
        Value::Null => return Ok(Map::new()),
        Value::Object(m) => m,
        other => return Err(ExecuteAutomationError::NotAMap(type_name(other))),
    };
    if m.len() > MAX_RUNTIME_PARAMETERS {
        return Err(ExecuteAutomationError::TooMany(m.len()));
    }
    if let Some((k, _)) = m.iter().find(|(_, v)| v.is_null()) {
        return Err(ExecuteAutomationError::NullValue(k.clone()));
    }
    Ok(m.clone())
}

fn type_name(v: &Value) -> &'static str {
    crate::step::json_type_name(v)
}

/// What a step of aws:executeAutomation resolved before it starts its child.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    request: ChildRequest,
}

/// `aws:executeAutomation`.
pub(crate) struct ExecuteAutomation;

impl ExecuteAutomation {
    /// Checks one input's literal value at load; `{{ }}` values wait for the run.
    fn check_literals(cx: &mut CheckCx<'_>, step: &StepHead<'_>, pos: &dyn Fn(&str) -> Pos) {
        let (ctx, inputs) = (step.ctx, step.inputs);
        match inputs.get("DocumentName") {
            None => cx.invalid(
                step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos),
                format!("{ctx}: inputs"),
                "DocumentName is required",
            ),
            Some(v) if interpolate::has_refs(v) => {}
            Some(Value::String(s)) => {
                if let Err(e) = check_document_name(s) {
                    cx.invalid(
                        pos("DocumentName"),
                        format!("{ctx}: inputs.DocumentName"),
                        e.to_string(),
                    );
                }
            }
            Some(other) => cx.invalid(
                pos("DocumentName"),
                format!("{ctx}: inputs.DocumentName"),
                ExecuteAutomationError::NotAString(type_name(other)).to_string(),
            ),
        }
        if let Some(v) = inputs.get("DocumentVersion")
            && !interpolate::has_refs(v)
            && let Err(e) = check_document_version(v)
        {
            cx.invalid(
                pos("DocumentVersion"),
                format!("{ctx}: inputs.DocumentVersion"),
                e.to_string(),
            );
        }
        if let Some(v) = inputs.get("RuntimeParameters") {
            // A whole map through `{{ }}` (a StringMap parameter) is known only at run time.
            let whole_ref = matches!(v, Value::String(_)) && interpolate::has_refs(v);
            if !whole_ref && let Err(e) = check_runtime_parameters(v) {
                cx.invalid(
                    pos("RuntimeParameters"),
                    format!("{ctx}: inputs.RuntimeParameters"),
                    e.to_string(),
                );
            }
        }
        if let Some(v) = inputs.get("Tags")
            && !interpolate::has_refs(v)
            && !v.as_array().is_some_and(|tags| {
                tags.iter().all(|t| {
                    t.as_object().is_some_and(|m| {
                        m.keys().all(|k| k == "Key" || k == "Value") && m.contains_key("Key")
                    })
                })
            })
        {
            cx.invalid(
                pos("Tags"),
                format!("{ctx}: inputs.Tags"),
                "must be a list of maps with Key and Value",
            );
        }
    }
}

impl ActionSpec for ExecuteAutomation {
    const ACTION: Action = Action::ExecuteAutomation;
    const INPUT_KEYS: &'static [&'static str] = &[
        "DocumentName",
        "DocumentVersion",
        "RuntimeParameters",
        "Tags",
        "TargetParameterName",
        "Targets",
        "TargetMaps",
        "TargetLocations",
        "MaxConcurrency",
        "MaxErrors",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["Output", "ExecutionId", "Status"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Ready;

    /// `DocumentName` required; a literal name, version and parameter map checked now; targets
    /// and rate control refused as unsupported.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        let (ctx, inputs, node) = (step.ctx, step.inputs, step.inputs_node);
        let pos = |key: &str| {
            node.and_then(|n| n.get(key))
                .map(|n| n.pos)
                .unwrap_or_default()
        };
        for k in inputs.keys() {
            if TARGET_KEYS.contains(&k.as_str()) {
                cx.problems.push(crate::runbook::Problem::unsupported(
                    pos(k),
                    format!("{ctx}: inputs.{k}"),
                    format!("{} {k}", Self::ACTION.name()),
                    format!(
                        "{k}: targets and rate control of {} are not supported by scriptbox; the child runs once, with RuntimeParameters",
                        Self::ACTION.name()
                    ),
                ));
            } else if !Self::INPUT_KEYS.contains(&k.as_str()) {
                cx.invalid(
                    pos(k),
                    format!("{ctx}: inputs"),
                    format!(
                        "unknown input {k:?} of {} (known: {})",
                        Self::ACTION.name(),
                        Self::INPUT_KEYS.join(", ")
                    ),
                );
            }
        }
        Self::check_literals(cx, step, &pos);
        Some(StepKind::Checked(Self::ACTION))
    }

    /// The child's request from the resolved inputs.
    fn prepare(
        cx: &RunCx<'_>,
        _step: &StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Ready, StepFailure> {
        let invalid = |field: &str, e: ExecuteAutomationError| {
            StepFailure::new("InvalidInput", format!("inputs.{field}: {e}"))
        };
        let name = match inputs.get("DocumentName") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(invalid(
                    "DocumentName",
                    ExecuteAutomationError::NotAString(type_name(other)),
                ));
            }
            None => {
                return Err(StepFailure::new(
                    "InvalidInput",
                    "inputs.DocumentName is required",
                ));
            }
        };
        check_document_name(&name).map_err(|e| invalid("DocumentName", e))?;
        let version = check_document_version(inputs.get("DocumentVersion").unwrap_or(&Value::Null))
            .map_err(|e| invalid("DocumentVersion", e))?;
        let params =
            check_runtime_parameters(inputs.get("RuntimeParameters").unwrap_or(&Value::Null))
                .map_err(|e| invalid("RuntimeParameters", e))?;
        Ok(Ready {
            request: ChildRequest {
                document_name: name,
                document_version: version,
                runtime_parameters: params,
                parent_execution_id: cx.automation_id.to_string(),
                depth: cx.options.depth.saturating_add(1),
                assume_role: cx.assume_role.clone(),
            },
        })
    }

    /// Starts the child and waits for it, within the step's `timeoutSeconds`, until cancelled.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        ready: &'a Ready,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let request = ready.request.clone();
            let failed = |kind: &str, message: &str| {
                Attempt::ended(StepStatus::Failed, Some(aws_plain_failure(kind, message)))
            };
            if request.depth > MAX_CHILD_DEPTH {
                return failed("AutomationNestingTooDeep", &ChildError::TooDeep.to_string());
            }
            let Some(children) = cx.options.children else {
                return failed(
                    "ChildRunbooksUnavailable",
                    "aws:executeAutomation needs a document store: run the runbook with scriptbox run --documents DIR (documents named NAME.yaml, NAME.yml or NAME.json) or submit it to the daemon",
                );
            };
            let timeout = step
                .timeout_seconds
                .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
            // The child's own token: the step's timeout cancels the child without cancelling
            // the parent; the parent's cancel reaches it through the step's token.
            let child_token = cx.cancel.child_token();
            let run = children.run_child(request, &child_token);
            tokio::pin!(run);
            let mut timed_out = false;
            let ended = match timeout {
                Some(t) => tokio::select! {
                    r = &mut run => r,
                    _ = tokio::time::sleep(t) => {
                        timed_out = true;
                        child_token.cancel();
                        run.await
                    }
                },
                None => run.await,
            };
            match ended {
                Err(e) => failed(error_kind(&e), &e.to_string()),
                Ok(outcome) => ended_attempt(&outcome, timed_out, cx.cancel.is_cancelled(), step),
            }
        })
    }
}

/// AWS-style failure type of a child that could not start **(ours)**.
fn error_kind(e: &ChildError) -> &'static str {
    match e {
        ChildError::NotFound(_) => "AutomationDefinitionNotFound",
        ChildError::Refused(_) => "InvalidInput",
        ChildError::TooDeep => "AutomationNestingTooDeep",
        ChildError::Unavailable(_) => "ChildRunbooksUnavailable",
    }
}

/// The step's end from the child's.
fn ended_attempt(
    outcome: &ChildOutcome,
    timed_out: bool,
    parent_cancelled: bool,
    step: &StepDecl,
) -> Attempt {
    if parent_cancelled {
        return Attempt::ended(
            StepStatus::Cancelled,
            Some(format!(
                "The step was cancelled; its child execution {} ended {}.",
                outcome.execution_id, outcome.status
            )),
        );
    }
    if timed_out {
        return Attempt::ended(
            StepStatus::TimedOut,
            Some(format!(
                "Step timed out: timeoutSeconds {} passed before the child execution {} ended; it was cancelled and ended {}.",
                step.timeout_seconds.unwrap_or_default(),
                outcome.execution_id,
                outcome.status
            )),
        );
    }
    if outcome.status != StepStatus::Success {
        let why = outcome
            .failure_message
            .as_deref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default();
        return Attempt::ended(
            StepStatus::Failed,
            Some(aws_plain_failure(
                "ChildAutomationFailed",
                &format!(
                    "The child execution {} ended {}{why}",
                    outcome.execution_id, outcome.status
                ),
            )),
        );
    }
    let mut a = Attempt::ended(StepStatus::Success, None);
    a.outputs = vec![
        (
            "Output".into(),
            ValueType::StringList,
            Value::Array(
                outcome
                    .output_values
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        ),
        (
            "ExecutionId".into(),
            ValueType::String,
            Value::String(outcome.execution_id.clone()),
        ),
        (
            "Status".into(),
            ValueType::String,
            Value::String(outcome.status.as_str().into()),
        ),
    ];
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_versions_and_parameters() {
        for ok in [
            "child-1",
            "AWS-CreateSnapshot",
            "AWSConfigRemediation-EnableEnhancedMonitoringOnRDSInstance",
            "arn:aws:ssm:eu-west-1:111122223333:document/child_2.v",
        ] {
            check_document_name(ok).unwrap();
        }
        for bad in [
            "ab",
            "has space",
            "a/b",
            "",
            &"x".repeat(129),
            &"y".repeat(2000),
        ] {
            let e = check_document_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not a document name"), "{bad}: {e}");
        }
        assert_eq!(
            check_document_version(&json!("$LATEST")).unwrap(),
            Some("$LATEST".into())
        );
        assert_eq!(check_document_version(&json!(3)).unwrap(), Some("3".into()));
        assert_eq!(check_document_version(&Value::Null).unwrap(), None);
        for bad in [json!("0"), json!("v1"), json!("01"), json!(true), json!(-1)] {
            assert!(check_document_version(&bad).is_err(), "{bad}");
        }
        assert!(check_runtime_parameters(&json!({"A": "x", "B": ["y"]})).is_ok());
        assert!(
            check_runtime_parameters(&json!("x"))
                .unwrap_err()
                .to_string()
                .contains("must be a map")
        );
        assert!(
            check_runtime_parameters(&json!({"A": null}))
                .unwrap_err()
                .to_string()
                .contains("\"A\"")
        );
        let many: Map<String, Value> = (0..=MAX_RUNTIME_PARAMETERS)
            .map(|i| (format!("P{i}"), json!("v")))
            .collect();
        assert!(
            check_runtime_parameters(&Value::Object(many))
                .unwrap_err()
                .to_string()
                .contains("at most 200")
        );
    }
}
