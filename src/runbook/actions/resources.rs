//! What the ten resource actions built on AWS calls share (changeInstanceState, createTags,
//! runInstances, createImage, copyImage, deleteImage, createStack, deleteStack,
//! invokeLambdaFunction, runCommand): a table of each action's inputs and their types, checked
//! at load for what is written literally and again at run time once `{{ }}` is substituted; and
//! a deadline for the whole step across the several waits an action makes.
//!
//! Every input is bounded before it gets here: the document's reader bounds its size and depth,
//! and substitution bounds what a `{{ }}` may expand to; lists are further held to their
//! action's item limits ([`Input::at_most`]).

use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{Action, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::{LogLine, LogStream, StepStatus, aws_plain_failure};
use crate::runbook::document::StepDecl;
use crate::runbook::interpolate;
use crate::runbook::selector::ValueType;
use crate::step::json_type_name;

/// The type an input must have, as AWS's page for the action gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A string; a number or boolean is taken as its text, a one-item list as its item **(ours:
    /// AWS's own tutorial passes `{{ startInstances.InstanceIds }}` to createImage's InstanceId)**.
    Str,
    /// A string that is one of these values.
    OneOf(&'static [&'static str]),
    /// A list of strings; nested lists are flattened one level **(ours: AWS's documents write
    /// `InstanceIds: ["{{ step.InstanceIds }}"]`)**; at run time a lone string is a one-item list.
    StrList,
    /// A whole number, or a string of one.
    Int,
    /// `true` / `false`, or those words in any case.
    Bool,
    /// A map.
    Map,
    /// A list of maps.
    MapList,
    /// Anything (passed through as written).
    Any,
}

impl Ty {
    fn expected(self) -> String {
        match self {
            Ty::Str => "a string".into(),
            Ty::OneOf(values) => format!("one of {}", values.join(", ")),
            Ty::StrList => "a list of strings".into(),
            Ty::Int => "a whole number".into(),
            Ty::Bool => "a boolean (true or false)".into(),
            Ty::Map => "a map".into(),
            Ty::MapList => "a list of maps".into(),
            Ty::Any => "any value".into(),
        }
    }
}

/// One input of an action: its key, its type, whether it is required, how many items a list
/// may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input {
    /// The key under `inputs`.
    pub key: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Whether the step must give it.
    pub required: bool,
    /// The most items a list may hold.
    pub max_items: Option<usize>,
}

/// A required input.
pub(crate) const fn req(key: &'static str, ty: Ty) -> Input {
    Input {
        key,
        ty,
        required: true,
        max_items: None,
    }
}

/// An optional input.
pub(crate) const fn opt(key: &'static str, ty: Ty) -> Input {
    Input {
        key,
        ty,
        required: false,
        max_items: None,
    }
}

impl Input {
    /// The same input, a list of at most `n` items.
    pub(crate) const fn at_most(self, n: usize) -> Input {
        Input {
            max_items: Some(n),
            ..self
        }
    }
}

/// Why an input is refused, at load or at run time; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not of the input's type.
    #[error("inputs.{key}: must be {expected}, not {found}")]
    Type {
        /// The input.
        key: String,
        /// What it must be.
        expected: String,
        /// What it is.
        found: &'static str,
    },
    /// Not one of the allowed values.
    #[error("inputs.{key}: {value:?} is not one of {allowed}")]
    NotOneOf {
        /// The input.
        key: String,
        /// As given.
        value: String,
        /// The allowed values.
        allowed: String,
    },
    /// A required input is missing.
    #[error("inputs.{0} is required")]
    Missing(String),
    /// A list with too many items.
    #[error("inputs.{key}: at most {max} items, not {count}")]
    TooMany {
        /// The input.
        key: String,
        /// The limit.
        max: usize,
        /// How many there are.
        count: usize,
    },
    /// An action's own rule (one of two inputs, a length...).
    #[error("{0}")]
    Rule(String),
}

impl InputError {
    /// The step's failure of type `InvalidInput`.
    pub(crate) fn failure(&self) -> StepFailure {
        StepFailure::new("InvalidInput", self.to_string())
    }
}

/// A string holding a `{{ }}`: only run time knows what it becomes (any type).
fn unresolved(v: &Value) -> bool {
    matches!(v, Value::String(_)) && interpolate::has_refs(v)
}

fn type_error(key: &str, ty: Ty, v: &Value) -> InputError {
    InputError::Type {
        key: key.to_string(),
        expected: ty.expected(),
        found: json_type_name(v),
    }
}

/// `v` as input `input` takes it. At load (`at_load`), a string holding `{{ }}` stands for any
/// value and is left as it is; at run time nothing is left unresolved.
pub(crate) fn conform(input: &Input, v: &Value, at_load: bool) -> Result<Value, InputError> {
    let key = input.key;
    if at_load && unresolved(v) {
        return Ok(v.clone());
    }
    let out = match input.ty {
        Ty::Any => v.clone(),
        Ty::Str => string(key, v, at_load)?,
        Ty::OneOf(allowed) => {
            let s = string(key, v, at_load)?;
            match &s {
                Value::String(text) if !allowed.contains(&text.as_str()) && !unresolved(&s) => {
                    return Err(InputError::NotOneOf {
                        key: key.to_string(),
                        value: text.clone(),
                        allowed: allowed.join(", "),
                    });
                }
                _ => s,
            }
        }
        Ty::StrList => string_list(input, v, at_load)?,
        Ty::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| type_error(key, Ty::Int, v))?,
            _ => return Err(type_error(key, Ty::Int, v)),
        },
        Ty::Bool => match v {
            Value::Bool(_) => v.clone(),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(type_error(key, Ty::Bool, v)),
        },
        Ty::Map => match v {
            Value::Object(_) => v.clone(),
            _ => return Err(type_error(key, Ty::Map, v)),
        },
        Ty::MapList => match v {
            Value::Array(items)
                if items
                    .iter()
                    .all(|i| i.is_object() || (at_load && unresolved(i))) =>
            {
                v.clone()
            }
            _ => return Err(type_error(key, Ty::MapList, v)),
        },
    };
    if let (Some(max), Value::Array(items)) = (input.max_items, &out) {
        if items.len() > max {
            return Err(InputError::TooMany {
                key: key.to_string(),
                max,
                count: items.len(),
            });
        }
    }
    Ok(out)
}

fn string(key: &str, v: &Value, at_load: bool) -> Result<Value, InputError> {
    match v {
        Value::String(_) => Ok(v.clone()),
        Value::Number(n) => Ok(Value::String(n.to_string())),
        Value::Bool(b) => Ok(Value::String(b.to_string())),
        Value::Array(items) if items.len() == 1 => match &items[0] {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => string(key, &items[0], at_load),
            _ => Err(type_error(key, Ty::Str, v)),
        },
        _ => Err(type_error(key, Ty::Str, v)),
    }
}

fn string_list(input: &Input, v: &Value, at_load: bool) -> Result<Value, InputError> {
    let key = input.key;
    let mut out = Vec::new();
    let mut push = |item: &Value| -> Result<(), InputError> {
        match item {
            Value::String(_) => out.push(item.clone()),
            Value::Number(n) => out.push(Value::String(n.to_string())),
            _ => return Err(type_error(key, Ty::StrList, v)),
        }
        Ok(())
    };
    match v {
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Array(inner) => inner.iter().try_for_each(&mut push)?,
                    other => push(other)?,
                }
            }
        }
        // A String parameter substituted whole is a one-item list; written literally, a lone
        // string is refused (it is not a list).
        Value::String(_) if !at_load => push(v)?,
        _ => return Err(type_error(key, Ty::StrList, v)),
    }
    Ok(Value::Array(out))
}

/// Checks a step's inputs at load against `spec`: unknown keys, required ones, and the type
/// of every value written literally. Every problem goes to `cx`, at its key's position.
pub(crate) fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>, action: Action, spec: &[Input]) {
    let ctx = step.ctx;
    let inputs_pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
    let pos_of = |key: &str| {
        step.inputs_node
            .and_then(|n| n.get(key))
            .map(|n| n.pos)
            .unwrap_or(inputs_pos)
    };
    for k in step.inputs.keys() {
        if !spec.iter().any(|i| i.key == k) {
            cx.invalid(
                pos_of(k),
                format!("{ctx}: inputs"),
                format!(
                    "unknown input {k:?} of {} (known: {})",
                    action.name(),
                    spec.iter().map(|i| i.key).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    for input in spec {
        match step.inputs.get(input.key) {
            None if input.required => cx.invalid(
                inputs_pos,
                format!("{ctx}: inputs"),
                format!("{} is required by {}", input.key, action.name()),
            ),
            None => {}
            Some(v) => {
                if let Err(e) = conform(input, v, true) {
                    cx.invalid(pos_of(input.key), ctx, e.to_string());
                }
            }
        }
    }
}

/// The inputs of `spec` read from the resolved `inputs`, each as its type takes it; keys not
/// in `spec` are left out (the load refused them).
pub(crate) fn read(
    inputs: &Map<String, Value>,
    spec: &[Input],
) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for input in spec {
        match inputs.get(input.key) {
            None if input.required => return Err(InputError::Missing(input.key.to_string())),
            None => {}
            Some(v) => {
                out.insert(input.key.to_string(), conform(input, v, false)?);
            }
        }
    }
    Ok(out)
}

/// The string input `key` of read inputs (conformed, so a string when present).
pub(crate) fn text<'v>(inputs: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    inputs.get(key).and_then(Value::as_str)
}

/// The string list input `key` of read inputs.
pub(crate) fn strings(inputs: &Map<String, Value>, key: &str) -> Vec<String> {
    match inputs.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Copies the read inputs `keys` into an API call's parameters under their own names.
pub(crate) fn pass(params: &mut Map<String, Value>, inputs: &Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = inputs.get(*k) {
            params.insert((*k).to_string(), v.clone());
        }
    }
}

/// The step's whole time: its `timeoutSeconds`, else the action's default.
pub(crate) fn step_timeout(step: &StepDecl, default: Duration) -> Duration {
    step.timeout_seconds
        .and_then(|t| u64::try_from(t).ok())
        .map_or(default, Duration::from_secs)
}

/// A deadline over a whole attempt that makes several calls and waits: when it passes, the
/// attempt's own token is cancelled (so a call or a poll in flight ends as on a cancel), and
/// the attempt is reported TimedOut rather than Cancelled.
pub(crate) struct Deadline {
    token: CancellationToken,
    total: Duration,
}

impl Deadline {
    /// A deadline of `total`, below the execution's cancellation.
    pub(crate) fn new(parent: &CancellationToken, total: Duration) -> Deadline {
        Deadline {
            token: parent.child_token(),
            total,
        }
    }

    /// The run context the attempt's calls use: the same as `cx`, with this deadline's token.
    pub(crate) fn narrow<'t>(&'t self, cx: &'t mut RunCx<'_>) -> RunCx<'t> {
        RunCx {
            runner: cx.runner,
            options: cx.options,
            attachments: cx.attachments,
            scope: &mut *cx.scope,
            automation_id: cx.automation_id,
            step_execution_id: cx.step_execution_id,
            observer: &mut *cx.observer,
            cancel: &self.token,
            assume_role: cx.assume_role.clone(),
        }
    }

    /// Runs the attempt; when the deadline passes first, cancels its token and lets it end.
    /// An attempt that ended Cancelled by the deadline (not by the execution) is TimedOut.
    pub(crate) async fn run(
        &self,
        parent: &CancellationToken,
        what: &str,
        attempt: impl std::future::Future<Output = Attempt>,
    ) -> Attempt {
        tokio::pin!(attempt);
        let fired = tokio::select! {
            a = &mut attempt => return a,
            _ = tokio::time::sleep(self.total) => true,
        };
        self.token.cancel();
        let mut a = attempt.await;
        if fired && !parent.is_cancelled() && a.status != StepStatus::Success {
            a.status = StepStatus::TimedOut;
            a.failure = Some(format!(
                "Step timed out: {} s passed before {what}.",
                self.total.as_secs()
            ));
        }
        a
    }
}

/// A successful attempt with `outputs` and the attempt's `log`.
pub(crate) fn succeeded(outputs: Vec<(String, ValueType, Value)>, log: Vec<LogLine>) -> Attempt {
    let mut a = Attempt::ended(StepStatus::Success, None);
    a.outputs = outputs;
    a.log = log;
    a
}

/// A failed attempt of type `kind`, keeping the attempt's `log`.
pub(crate) fn failed_with(kind: &'static str, message: &str, log: Vec<LogLine>) -> Attempt {
    let mut a = Attempt::ended(StepStatus::Failed, Some(aws_plain_failure(kind, message)));
    a.log = log;
    a
}

/// `attempt` with `log` in front of its own lines.
pub(crate) fn with_log(mut attempt: Attempt, mut log: Vec<LogLine>) -> Attempt {
    log.append(&mut attempt.log);
    attempt.log = log;
    attempt
}

/// A note from scriptbox in the step's log (what was called, what is awaited).
pub(crate) fn note(log: &mut Vec<LogLine>, text: impl Into<String>) {
    log.push(LogLine {
        stream: LogStream::Scriptbox,
        text: text.into(),
    });
}

/// The string at `path` (keys) in a response, if there is one.
pub(crate) fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut at = v;
    for k in path {
        at = at.get(*k)?;
    }
    at.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &[Input] = &[
        req("Ids", Ty::StrList).at_most(2),
        opt("Name", Ty::Str),
        opt("State", Ty::OneOf(&["running", "stopped"])),
        opt("N", Ty::Int),
        opt("Flag", Ty::Bool),
        opt("Tags", Ty::MapList),
    ];

    #[test]
    fn run_time_values_conform_to_their_types() {
        let got = read(
            json!({"Ids": [["i-1"], "i-2"], "Name": ["x"], "N": "3", "Flag": "True", "Tags": [{"Key": "a"}]})
                .as_object()
                .unwrap(),
            SPEC,
        )
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"Ids": ["i-1", "i-2"], "Name": "x", "N": 3, "Flag": true, "Tags": [{"Key": "a"}]})
        );
        let lone = read(json!({"Ids": "i-9"}).as_object().unwrap(), SPEC).unwrap();
        assert_eq!(lone["Ids"], json!(["i-9"]));
    }

    #[test]
    fn bad_values_name_the_field_and_the_rule() {
        let err = |v: Value| read(v.as_object().unwrap(), SPEC).unwrap_err().to_string();
        assert_eq!(err(json!({})), "inputs.Ids is required");
        assert_eq!(
            err(json!({"Ids": ["a", "b", "c"]})),
            "inputs.Ids: at most 2 items, not 3"
        );
        assert_eq!(
            err(json!({"Ids": [], "State": "paused"})),
            "inputs.State: \"paused\" is not one of running, stopped"
        );
        assert_eq!(
            err(json!({"Ids": [], "N": "many"})),
            "inputs.N: must be a whole number, not a string"
        );
        assert_eq!(
            err(json!({"Ids": [], "Flag": 1})),
            "inputs.Flag: must be a boolean (true or false), not a number"
        );
        assert_eq!(
            err(json!({"Ids": [], "Tags": ["k"]})),
            "inputs.Tags: must be a list of maps, not a list"
        );
        assert_eq!(
            err(json!({"Ids": [{"a": 1}]})),
            "inputs.Ids: must be a list of strings, not a list"
        );
    }

    #[test]
    fn at_load_a_reference_stands_for_any_value() {
        let ids = &SPEC[0];
        assert!(conform(ids, &json!("{{ Ids }}"), true).is_ok());
        assert!(conform(ids, &json!(["{{ a.Ids }}", "i-1"]), true).is_ok());
        // Written literally, a lone string is not a list.
        assert!(conform(ids, &json!("i-1"), true).is_err());
        assert!(conform(&SPEC[5], &json!(["{{ t }}"]), true).is_ok());
        assert!(conform(&SPEC[2], &json!("{{ s }}"), true).is_ok());
    }

    #[test]
    fn step_timeout_defaults() {
        assert_eq!(
            step_timeout(
                &crate::runbook::actions::resources_tests::bare_step(None),
                Duration::from_secs(3600)
            ),
            Duration::from_secs(3600)
        );
        assert_eq!(
            step_timeout(
                &crate::runbook::actions::resources_tests::bare_step(Some(5)),
                Duration::from_secs(3600)
            ),
            Duration::from_secs(5)
        );
    }
}
