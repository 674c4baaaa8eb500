//! `aws:executeScript`: a Python or PowerShell script, run in a fresh container through the
//! [`StepRunner`](crate::runbook::executor::StepRunner); its return value is the `Payload`, from
//! which declared outputs are selected.
//!
//! At load, the inputs' shape is checked, the attachment must be declared under `files`, and
//! when Runtime, Handler, Script and Attachment hold no `{{ }}` the whole step is validated
//! (`step::validate`), so a bad step refuses the document before anything runs.

use std::borrow::Cow;
use std::collections::HashMap;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Action, ActionSpec, Attempt, CheckCx, DocFacts, RunCx, StepFailure, StepHead};
use crate::result::{StepStatus, aws_plain_failure};
use crate::runbook::Problem;
use crate::runbook::document::{Note, StepDecl, StepKind};
use crate::runbook::executor::RunContext;
use crate::runbook::interpolate;
use crate::runbook::selector::output_value;
use crate::runbook::step_context;
use crate::runbook::yaml::Format;
use crate::step::{self, Attachment, StepInputs, ValidatedStep};

/// `aws:executeScript`.
pub(crate) struct ExecuteScript;

/// Inputs that must be known at load for the step to be validated then.
const FIXED_INPUTS: [&str; 4] = ["Runtime", "Handler", "Script", "Attachment"];

impl ActionSpec for ExecuteScript {
    const ACTION: Action = Action::ExecuteScript;
    const INPUT_KEYS: &'static [&'static str] =
        &["Runtime", "Handler", "InputPayload", "Script", "Attachment"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["Payload"];
    const DECLARES_OUTPUTS: bool = true;
    const RETRIES: bool = true;
    type Ready<'s> = Cow<'s, ValidatedStep>;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        let ctx = step.ctx;
        let inputs = step.inputs;
        let step_pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
        let pos_of = |key: &str| {
            step.inputs_node
                .and_then(|n| n.get(key))
                .map(|n| n.pos)
                .unwrap_or(step_pos)
        };
        if let Some(crate::runbook::yaml::Kind::Map(entries)) = step.inputs_node.map(|n| &n.kind) {
            for (k, kpos, _) in entries {
                if !Self::INPUT_KEYS.contains(&k.as_str()) {
                    cx.invalid(
                        *kpos,
                        format!("{ctx}: inputs"),
                        format!(
                            "unknown input {k:?} of {} (known: {})",
                            Self::ACTION.name(),
                            Self::INPUT_KEYS.join(", ")
                        ),
                    );
                }
            }
        }
        // AWS's reference page forbids Script in JSON, yet AWS's own published JSON documents
        // use it: accepted, and the rule noted **(ours)**.
        if cx.format == Format::Json && inputs.contains_key("Script") {
            cx.notes.push(Note {
                pos: pos_of("Script"),
                context: format!("{ctx}: inputs.Script"),
                message: format!(
                    "Script in a JSON runbook: the {} reference page says a JSON runbook must provide the script as an Attachment; AWS's own JSON documents use Script all the same, so it is accepted",
                    Self::ACTION.name()
                ),
            });
        }
        if let Some(Value::String(s)) = inputs.get("Script") {
            if let Some(start) = s.find("%%SCRIPT=") {
                let end = s
                    .get(start + 2..)
                    .and_then(|rest| rest.find("%%"))
                    .map(|e| e + start + 4)
                    .unwrap_or(s.len());
                cx.problems.push(Problem::unsupported(
                    pos_of("Script"),
                    format!("{ctx}: inputs.Script"),
                    "%%SCRIPT=...%% build placeholder",
                    format!("is a build-time placeholder {:?}: substitute the script's text before running the document", s.get(start..end).unwrap_or_default()),
                ));
            }
        }
        match inputs.get("Attachment") {
            None | Some(Value::String(_)) => {}
            Some(other) => cx.invalid(
                pos_of("Attachment"),
                format!("{ctx}: inputs.Attachment"),
                format!(
                    "must be a file name (a string), not {}",
                    step::json_type_name(other)
                ),
            ),
        }
        for key in ["Runtime", "Handler"] {
            if let Some(v) = inputs.get(key) {
                if !v.is_string() {
                    cx.invalid(
                        pos_of(key),
                        format!("{ctx}: inputs.{key}"),
                        format!("must be a string, not {}", step::json_type_name(v)),
                    );
                }
            }
        }
        Some(StepKind::ExecuteScript { validated: None })
    }

    /// The attachment must be declared under `files`.
    fn check_in_document(cx: &mut CheckCx<'_>, s: &StepDecl, doc: &DocFacts<'_>) {
        let Some(Value::String(a)) = s.inputs.get("Attachment") else {
            return;
        };
        if interpolate::has_refs(&Value::String(a.clone())) {
            return;
        }
        let p = doc
            .nodes
            .get(s.index)
            .and_then(|n| n.get("inputs"))
            .and_then(|n| n.get("Attachment"))
            .map(|n| n.pos)
            .unwrap_or(s.pos);
        if !doc.files.iter().any(|f| &f.name == a) && !doc.declared_files.contains(a) {
            cx.invalid(
                p,
                format!("{}: inputs.Attachment", step_context(s.index, &s.name)),
                format!("{a:?} is not declared in the document's `files` section"),
            );
        }
        // A declared attachment that could not be read reports its own problem under `files`.
    }

    /// Validates the step's inputs with `step::validate` when they are known now (no `{{ }}`
    /// in Runtime, Handler, Script, Attachment; refs inside InputPayload stand in as null).
    fn complete(cx: &mut CheckCx<'_>, s: &mut StepDecl, doc: &DocFacts<'_>) {
        let fixed = FIXED_INPUTS
            .iter()
            .all(|k| s.inputs.get(*k).is_none_or(|v| !interpolate::has_refs(v)));
        if !fixed {
            return;
        }
        if let Some(Value::String(a)) = s.inputs.get("Attachment") {
            if !doc.attachments.contains_key(a) {
                return;
            }
        }
        let payload_has_refs = s
            .inputs
            .get("InputPayload")
            .is_some_and(interpolate::has_refs);
        let mut inputs = s.inputs.clone();
        if let Some(p) = inputs.get_mut("InputPayload") {
            *p = blank_refs(p);
        }
        let Ok(step_inputs) = script_step_inputs(&inputs, s.timeout_seconds, doc.attachments)
        else {
            return;
        };
        let Some(node) = doc.nodes.get(s.index) else {
            return;
        };
        let ctx = step_context(s.index, &s.name);
        match step::validate(
            &step_inputs,
            cx.options.catalog,
            cx.options.max_timeout_secs,
        ) {
            Ok(v) => {
                if !payload_has_refs {
                    s.kind = StepKind::ExecuteScript {
                        validated: Some(Box::new(v)),
                    };
                }
            }
            Err(invalid) => {
                for p in invalid.problems {
                    let (field, pos) = if p.field == "timeoutSeconds" {
                        (
                            "timeoutSeconds".to_string(),
                            node.get("timeoutSeconds").map(|n| n.pos),
                        )
                    } else {
                        (
                            format!("inputs.{}", p.field),
                            node.get("inputs")
                                .and_then(|i| i.get(&p.field))
                                .map(|n| n.pos),
                        )
                    };
                    cx.invalid(pos.unwrap_or(node.pos), format!("{ctx}: {field}"), p.rule);
                }
            }
        }
    }

    /// The step validated at load, or validated now that its inputs are resolved.
    fn prepare<'s>(
        cx: &RunCx<'_>,
        step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Self::Ready<'s>, StepFailure> {
        if let StepKind::ExecuteScript { validated: Some(v) } = &step.kind {
            return Ok(Cow::Borrowed(&**v));
        }
        script_step_inputs(inputs, step.timeout_seconds, cx.attachments)
            .map_err(|e| e.to_string())
            .and_then(|i| {
                step::validate(&i, cx.options.catalog, cx.options.max_timeout_secs)
                    .map_err(|e| e.to_string().replace('\n', "; "))
            })
            .map(Cow::Owned)
            .map_err(|e| {
                StepFailure::new(
                    "InvalidInput",
                    format!("The step's inputs, once resolved, are invalid: {e}"),
                )
            })
    }

    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        ready: &'a Self::Ready<'s>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let observer = &mut *cx.observer;
            let mut on_log = |line: &crate::result::LogLine| {
                observer(crate::runbook::executor::RunEvent::Log { step, line });
            };
            let ctx = RunContext {
                automation_execution_id: cx.automation_id,
                step_execution_id: cx.step_execution_id.to_string(),
                on_log: &mut on_log,
                cancel: cx.cancel,
                assume_role: cx.assume_role.as_deref(),
            };
            let result = match cx.runner.run(ready.as_ref(), ctx).await {
                Ok(r) => r,
                Err(e) => {
                    let mut a = Attempt::ended(
                        StepStatus::Failed,
                        Some(aws_plain_failure(
                            "EngineFailure",
                            &format!("The container engine failed: {e}"),
                        )),
                    );
                    a.engine_failed = true;
                    return a;
                }
            };
            let mut attempt = Attempt::ended(result.status, result.failure_message.clone());
            attempt.log = result.log;
            attempt.egress = result.egress;
            if result.status == StepStatus::Success {
                let mut outputs = Vec::new();
                let mut problems = Vec::new();
                for o in &step.outputs {
                    match output_value(&o.name, &o.selector, o.ty, &result.payload) {
                        Ok(v) => outputs.push((o.name.clone(), o.ty, v)),
                        Err(e) => problems.push(e),
                    }
                }
                if problems.is_empty() {
                    attempt.outputs = outputs;
                } else {
                    attempt.status = StepStatus::Failed;
                    attempt.failure = Some(aws_plain_failure(
                        "InvalidOutput",
                        &problems
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    ));
                }
                attempt.payload = Some(result.payload);
            }
            attempt
        })
    }
}

/// Replaces each string holding a `{{ }}` by null (a stand-in whose value only run time knows).
fn blank_refs(v: &Value) -> Value {
    match v {
        Value::String(_) if interpolate::has_refs(v) => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(blank_refs).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), blank_refs(v))).collect())
        }
        other => other.clone(),
    }
}

/// Why an executeScript step's resolved inputs are not `StepInputs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptInputsError {
    /// An input that must be a string is not.
    #[error("inputs.{key} must be a string, not {found}")]
    NotAString {
        /// The input.
        key: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// `Attachment` names no verified attachment.
    #[error("inputs.Attachment: {0:?} is not a verified attachment of the document")]
    UnknownAttachment(String),
}

/// The inputs of an executeScript step (after substitution) as `StepInputs`, with the
/// attachment's verified bytes.
pub fn script_step_inputs(
    inputs: &Map<String, Value>,
    timeout_seconds: Option<i64>,
    attachments: &HashMap<String, Vec<u8>>,
) -> Result<StepInputs, ScriptInputsError> {
    let string = |key: &'static str| -> Result<Option<String>, ScriptInputsError> {
        match inputs.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ScriptInputsError::NotAString {
                key,
                found: step::json_type_name(other),
            }),
        }
    };
    let mut files = Vec::new();
    if let Some(name) = string("Attachment")? {
        let Some(bytes) = attachments.get(&name) else {
            return Err(ScriptInputsError::UnknownAttachment(name));
        };
        files.push(Attachment {
            name,
            bytes: bytes.clone(),
        });
    }
    Ok(StepInputs {
        runtime: string("Runtime")?,
        handler: string("Handler")?,
        input_payload: inputs.get("InputPayload").cloned(),
        script: inputs.get("Script").cloned(),
        attachments: files,
        timeout_seconds,
    })
}
