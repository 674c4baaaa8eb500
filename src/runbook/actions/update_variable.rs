//! `aws:updateVariable`: sets a runbook variable (declared under the document's top-level
//! `variables`) to a value of its type.
//!
//! As AWS documents: `Name` is `variable:NAME`; `Value` must be of the variable's type, with no
//! conversion; MapList at most 200 items, StringList at most 50, strings 1 to 512 characters,
//! map keys 1 to 50; no outputs; `onCancel` is refused. Decisions where AWS is silent
//! **(ours)**: the same rules hold for a variable's `default`; a StringList's items and a
//! StringMap's values are held to the string rule only for their length (at most 512); `Name`
//! must be written as it is (no `{{ }}`), so that it is checked against the declarations at load.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Action, ActionSpec, Attempt, CheckCx, DocFacts, RunCx, StepFailure, StepHead};
use crate::result::{LogLine, LogStream, StepStatus};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate;
use crate::runbook::selector::{ValueType, short};
use crate::runbook::step_context;

/// The prefix of `Name`.
pub const NAME_PREFIX: &str = "variable:";

/// The most items of a MapList value.
pub const MAX_MAPLIST_ITEMS: usize = 200;

/// The most items of a StringList value.
pub const MAX_STRINGLIST_ITEMS: usize = 50;

/// The most characters of a string value.
pub const MAX_STRING_CHARS: usize = 512;

/// The most characters of a map key.
pub const MAX_KEY_CHARS: usize = 50;

/// Why a value does not fit a variable; `Display` names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    /// Not of the type (no conversion is made).
    #[error(
        "is {found}, not of type {ty} (the value must be of the variable's type; no conversion is made)"
    )]
    WrongType {
        /// The declared type.
        ty: ValueType,
        /// The JSON type found.
        found: &'static str,
    },
    /// A string outside 1 to 512 characters.
    #[error("a string of {0} characters; strings are 1 to {max} characters", max = MAX_STRING_CHARS)]
    StringLength(usize),
    /// Too many list items.
    #[error("{found} items; a {ty} holds at most {max}")]
    TooManyItems {
        /// The type.
        ty: ValueType,
        /// Items found.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// A map key outside 1 to 50 characters.
    #[error("key {0:?} is not 1 to {max} characters", max = MAX_KEY_CHARS)]
    KeyLength(String),
    /// `Name` is not `variable:NAME`.
    #[error("{0} is not variable:NAME")]
    BadName(String),
    /// `Name` names no declared variable.
    #[error("variable {0:?} is not declared in the document's `variables`")]
    Undeclared(String),
}

fn keys_fit(m: &Map<String, Value>) -> Result<(), VariableError> {
    match m
        .keys()
        .find(|k| k.is_empty() || k.chars().count() > MAX_KEY_CHARS)
    {
        Some(k) => Err(VariableError::KeyLength(k.clone())),
        None => Ok(()),
    }
}

fn at_most(ty: ValueType, found: usize, max: usize) -> Result<(), VariableError> {
    if found > max {
        return Err(VariableError::TooManyItems { ty, found, max });
    }
    Ok(())
}

/// Checks that `v` is a value of `ty` within AWS's limits.
pub fn check_value(ty: ValueType, v: &Value) -> Result<(), VariableError> {
    let wrong = || VariableError::WrongType {
        ty,
        found: crate::step::json_type_name(v),
    };
    match (ty, v) {
        (ValueType::String, Value::String(s)) => {
            let n = s.chars().count();
            if n == 0 || n > MAX_STRING_CHARS {
                return Err(VariableError::StringLength(n));
            }
            Ok(())
        }
        (ValueType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        (ValueType::Boolean, Value::Bool(_)) => Ok(()),
        (ValueType::StringList, Value::Array(items)) => {
            at_most(ty, items.len(), MAX_STRINGLIST_ITEMS)?;
            for i in items {
                let Value::String(s) = i else {
                    return Err(wrong());
                };
                let n = s.chars().count();
                if n > MAX_STRING_CHARS {
                    return Err(VariableError::StringLength(n));
                }
            }
            Ok(())
        }
        (ValueType::StringMap, Value::Object(m)) => keys_fit(m),
        (ValueType::MapList, Value::Array(items)) => {
            at_most(ty, items.len(), MAX_MAPLIST_ITEMS)?;
            for i in items {
                let Value::Object(m) = i else {
                    return Err(wrong());
                };
                keys_fit(m)?;
            }
            Ok(())
        }
        _ => Err(wrong()),
    }
}

/// The variable `Name` names (`variable:NAME` → `NAME`).
pub fn variable_name(name: &Value) -> Result<&str, VariableError> {
    name.as_str()
        .and_then(|s| s.strip_prefix(NAME_PREFIX))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| VariableError::BadName(short(name)))
}

/// `aws:updateVariable`.
pub(crate) struct UpdateVariable;

impl ActionSpec for UpdateVariable {
    const ACTION: Action = Action::UpdateVariable;
    const INPUT_KEYS: &'static [&'static str] = &["Name", "Value"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    /// The variable's name and its new value.
    type Ready<'s> = (String, Value);

    /// `Name` (`variable:NAME`, as written) and `Value` are required; no other input, no
    /// `onCancel`. The variable and the value's type are checked against the document's
    /// `variables` in `check_in_document`.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        let (ctx, inputs, node) = (step.ctx, step.inputs, step.inputs_node);
        let pos = |key: &str| {
            node.and_then(|n| n.get(key))
                .map(|n| n.pos)
                .unwrap_or(step.node.pos)
        };
        for k in inputs.keys() {
            if !Self::INPUT_KEYS.contains(&k.as_str()) {
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
        if let Some(n) = step.node.get("onCancel") {
            cx.invalid(
                n.pos,
                format!("{ctx}: onCancel"),
                format!(
                    "{} does not take onCancel (AWS refuses it)",
                    Self::ACTION.name()
                ),
            );
        }
        match inputs.get("Name") {
            None => cx.invalid(pos("Name"), format!("{ctx}: inputs"), "Name is required"),
            Some(v) => {
                if let Err(e) = variable_name(v) {
                    cx.invalid(pos("Name"), format!("{ctx}: inputs.Name"), e.to_string());
                }
            }
        }
        if !inputs.contains_key("Value") {
            cx.invalid(pos("Value"), format!("{ctx}: inputs"), "Value is required");
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// The variable is declared; a `Value` written without `{{ }}` is of its type.
    fn check_in_document(cx: &mut CheckCx<'_>, step: &StepDecl, doc: &DocFacts<'_>) {
        let Some(Ok(name)) = step.inputs.get("Name").map(variable_name) else {
            return;
        };
        let node = doc.nodes.get(step.index).and_then(|n| n.get("inputs"));
        let pos = |key: &str| {
            node.and_then(|n| n.get(key))
                .map(|n| n.pos)
                .unwrap_or(step.pos)
        };
        let ctx = step_context(step.index, &step.name);
        let Some(ty) = doc.variables.get(name) else {
            let mut declared: Vec<&str> = doc.variables.keys().map(String::as_str).collect();
            declared.sort_unstable();
            cx.invalid(
                pos("Name"),
                format!("{ctx}: inputs.Name"),
                format!(
                    "{} (declared: {})",
                    VariableError::Undeclared(name.to_string()),
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
            return;
        };
        if let Some(v) = step.inputs.get("Value") {
            if !interpolate::has_refs(v) {
                if let Err(e) = check_value(*ty, v) {
                    cx.invalid(
                        pos("Value"),
                        format!("{ctx}: inputs.Value"),
                        format!("for variable {name:?} ({ty}): {e}"),
                    );
                }
            }
        }
    }

    /// The resolved value must be of the variable's type (a `{{ }}` value is known only now).
    fn prepare<'s>(
        cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<(String, Value), StepFailure> {
        let invalid = |m: String| StepFailure::new("InvalidInput", m);
        let name = inputs
            .get("Name")
            .ok_or_else(|| invalid("Name is required".into()))
            .and_then(|n| variable_name(n).map_err(|e| invalid(format!("Name: {e}"))))?;
        let ty =
            cx.scope.variables.get(name).map(|v| v.ty).ok_or_else(|| {
                invalid(format!("Name: {}", VariableError::Undeclared(name.into())))
            })?;
        let value = inputs
            .get("Value")
            .cloned()
            .ok_or_else(|| invalid("Value is required".into()))?;
        check_value(ty, &value)
            .map_err(|e| invalid(format!("Value for variable {name:?} ({ty}) {e}")))?;
        Ok((name.to_string(), value))
    }

    /// Sets the variable in the execution's scope.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        _step: &'s StepDecl,
        ready: &'a (String, Value),
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let (name, value) = ready;
            match cx.scope.variables.get_mut(name) {
                Some(var) => {
                    var.value = Some(value.clone());
                    let mut a = Attempt::ended(StepStatus::Success, None);
                    a.log.push(LogLine {
                        stream: LogStream::Scriptbox,
                        text: format!("variable {name} = {}", short(value)),
                    });
                    a
                }
                None => Attempt::ended(
                    StepStatus::Failed,
                    Some(crate::result::aws_plain_failure(
                        "InvalidInput",
                        &VariableError::Undeclared(name.clone()).to_string(),
                    )),
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_must_be_of_the_type_without_conversion() {
        assert_eq!(check_value(ValueType::String, &json!("x")), Ok(()));
        assert_eq!(check_value(ValueType::Integer, &json!(3)), Ok(()));
        assert_eq!(check_value(ValueType::Boolean, &json!(false)), Ok(()));
        assert_eq!(
            check_value(ValueType::StringList, &json!(["1", "2"])),
            Ok(())
        );
        assert_eq!(
            check_value(ValueType::StringMap, &json!({"k": "v"})),
            Ok(())
        );
        assert_eq!(check_value(ValueType::MapList, &json!([{"k": 1}])), Ok(()));
        let e = check_value(ValueType::Integer, &json!("3")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "is a string, not of type Integer (the value must be of the variable's type; no conversion is made)"
        );
        assert!(check_value(ValueType::Integer, &json!(1.5)).is_err());
        assert!(check_value(ValueType::Boolean, &json!("true")).is_err());
        assert!(check_value(ValueType::StringList, &json!(["a", 1])).is_err());
        assert!(check_value(ValueType::MapList, &json!(["a"])).is_err());
    }

    #[test]
    fn aws_limits_hold() {
        assert_eq!(
            check_value(ValueType::String, &json!("")),
            Err(VariableError::StringLength(0))
        );
        assert!(check_value(ValueType::String, &json!("x".repeat(512))).is_ok());
        assert!(check_value(ValueType::String, &json!("x".repeat(513))).is_err());
        let list = vec![json!("a"); 51];
        assert_eq!(
            check_value(ValueType::StringList, &json!(list)),
            Err(VariableError::TooManyItems {
                ty: ValueType::StringList,
                found: 51,
                max: 50
            })
        );
        assert!(check_value(ValueType::StringList, &json!(Vec::<String>::new())).is_ok());
        let maps = vec![json!({"k": "v"}); 201];
        assert!(check_value(ValueType::MapList, &json!(maps)).is_err());
        let long_key = "k".repeat(51);
        assert_eq!(
            check_value(ValueType::StringMap, &json!({ long_key.clone(): "v" })),
            Err(VariableError::KeyLength(long_key))
        );
    }

    #[test]
    fn names_are_variable_colon_name() {
        assert_eq!(variable_name(&json!("variable:Count")), Ok("Count"));
        for bad in [
            json!("Count"),
            json!("variable:"),
            json!("variable:a b"),
            json!(3),
        ] {
            assert!(variable_name(&bad).is_err(), "{bad}");
        }
    }
}
