//! `{{ }}` references: parameters, system variables, runbook variables (`{{ variable:NAME }}`)
//! and earlier steps' outputs.
//!
//! A reference that is the whole string keeps the referenced value's type (a StringMap stays a
//! map); inside a longer string it is replaced by text: strings as they are, numbers and
//! booleans as written, lists and maps as compact JSON **(ours)**. The substituted text is not
//! scanned again (no nested expansion).

use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Map, Value};

use super::selector::ValueType;

/// The system variables a runbook may read.
pub const SYSTEM_VARIABLES: [&str; 6] = [
    "global:ACCOUNT_ID",
    "global:REGION",
    "global:AWS_PARTITION",
    "global:DATE",
    "global:DATE_TIME",
    "automation:EXECUTION_ID",
];

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `{{ Name }}`: a parameter.
    Param(String),
    /// `{{ global:REGION }}`: a system variable.
    System(String),
    /// `{{ variable:NAME }}`: a runbook variable (top-level `variables`).
    Variable(String),
    /// `{{ step.Output }}`: an output of an earlier step.
    Output {
        /// The step's name.
        step: String,
        /// The output's name.
        output: String,
    },
}

/// Why a reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    /// The reference as written, with its braces.
    pub text: String,
    /// Why.
    pub message: String,
    /// For something AWS supports and scriptbox cannot (Parameter Store...), its name.
    pub unsupported: Option<String>,
}

/// One `{{ ... }}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Byte range of the whole `{{ ... }}`.
    pub range: Range<usize>,
    /// The reference, or why it is not one.
    pub parsed: Result<Ref, RefError>,
}

/// Every `{{ ... }}` of a string, in order. An opening `{{` without a closing `}}` is text.
pub fn find(s: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = s[at..].find("{{").map(|i| i + at) {
        let Some(close) = s[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        let text = &s[open..close + 2];
        // Only what could be a reference is one: `{{{}}` or `{{ x['k'] }}` in a script's code
        // is text (ours; AWS leaves such text alone).
        let looks_like_ref =
            s[open + 2..close].trim().chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-' | ' ')
            }) && !s[open + 2..close].trim().is_empty();
        if !looks_like_ref {
            at = open + 1;
            continue;
        }
        out.push(Found {
            range: open..close + 2,
            parsed: parse(text, &s[open + 2..close]),
        });
        at = close + 2;
    }
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse(text: &str, inner: &str) -> Result<Ref, RefError> {
    let expr = inner.trim();
    let err = |message: String, unsupported: Option<&str>| RefError {
        text: text.to_string(),
        message,
        unsupported: unsupported.map(str::to_string),
    };
    if expr.contains("{{") {
        return Err(err("nested references are not supported".into(), None));
    }
    if let Some((prefix, rest)) = expr.split_once(':') {
        return match prefix {
            "global" | "automation" => {
                if SYSTEM_VARIABLES.contains(&expr) {
                    Ok(Ref::System(expr.to_string()))
                } else {
                    Err(err(
                        format!(
                            "unknown system variable {expr:?}; known: {}",
                            SYSTEM_VARIABLES.join(", ")
                        ),
                        None,
                    ))
                }
            }
            "variable" if is_name(rest) => Ok(Ref::Variable(rest.to_string())),
            "variable" => Err(err(
                format!("{rest:?} is not a variable name (letters, digits, `_` and `-`)"),
                None,
            )),
            "ssm" | "ssm-secure" | "secretsmanager" | "resolve" => Err(err(
                format!(
                    "reads {prefix}:{rest}, which scriptbox cannot reach locally (no AWS account); pass the value as a parameter instead"
                ),
                Some("{{ssm:...}}"),
            )),
            _ => Err(err(format!("unknown reference prefix {prefix:?}"), None)),
        };
    }
    let parts: Vec<&str> = expr.split('.').collect();
    match parts.as_slice() {
        [name] if is_name(name) => Ok(Ref::Param(name.to_string())),
        [step, output] if is_name(step) && is_name(output) => Ok(Ref::Output {
            step: step.to_string(),
            output: output.to_string(),
        }),
        [step, output, ..] if is_name(step) && is_name(output) => Err(err(
            format!(
                "drilling into an output is not supported; declare an output with a Selector for the field instead of {{{{ {step}.{output} }}}}"
            ),
            None,
        )),
        _ => Err(err(
            format!("{expr:?} is not a parameter name, a step.Output or a system variable"),
            None,
        )),
    }
}

/// Every reference inside a JSON value (strings at any depth; keys are not templates).
pub fn refs_in(v: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    walk(v, &mut |s| out.extend(find(s)));
    out
}

fn walk(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|i| walk(i, f)),
        Value::Object(m) => m.values().for_each(|i| walk(i, f)),
        _ => {}
    }
}

/// True when a value holds at least one `{{ }}`.
pub fn has_refs(v: &Value) -> bool {
    !refs_in(v).is_empty()
}

/// What references resolve against at run time.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Parameter values, typed.
    pub params: Map<String, Value>,
    /// System variables.
    pub system: Map<String, Value>,
    /// Outputs of steps that succeeded: step → output → typed value.
    pub outputs: HashMap<String, Map<String, Value>>,
    /// Steps that ran but did not succeed (their outputs are not available).
    pub unsuccessful: HashMap<String, String>,
    /// Runbook variables: declared type and current value (aws:updateVariable sets them).
    pub variables: HashMap<String, Variable>,
}

/// A runbook variable at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Its declared type: aws:updateVariable's value must be of it (no conversion, as AWS).
    pub ty: ValueType,
    /// Its value; `None` until set when declared without a default.
    pub value: Option<Value>,
}

/// The most bytes one substitution may produce (a step's inputs, a branch's operand): room
/// for the largest Script (`step::MAX_SCRIPT_BYTES`) and InputPayload (`step::MAX_PAYLOAD_BYTES`)
/// together **(ours)**. Checked before each value is copied, so `'{{P}}'` a thousand times with
/// a large `P` is refused, not built.
pub const MAX_SUBSTITUTED_BYTES: usize = 8 * 1024 * 1024;

/// Why a `{{ }}` cannot be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// The result would pass [`MAX_SUBSTITUTED_BYTES`]; names what was being substituted.
    #[error(
        "substituting {0} would make the value larger than {max} bytes; the substitution is refused",
        max = MAX_SUBSTITUTED_BYTES
    )]
    TooLarge(String),
    /// An undeclared parameter.
    #[error("parameter {0:?} is not defined")]
    NoParameter(String),
    /// A system variable without a value.
    #[error("system variable {0:?} has no value")]
    NoSystemValue(String),
    /// An undeclared runbook variable.
    #[error("variable {0:?} is not declared in `variables`")]
    NoVariable(String),
    /// A variable declared without a default and not set yet **(ours)**.
    #[error(
        "variable {0:?} has no value yet: it has no default and no aws:updateVariable step has set it"
    )]
    VariableUnset(String),
    /// A step that ran but has no such output.
    #[error("step {step:?} has no output {output:?}")]
    NoOutput {
        /// The step.
        step: String,
        /// The output.
        output: String,
    },
    /// The step did not succeed.
    #[error("output {step}.{output} is not available: step {step:?} ended {status}")]
    StepEnded {
        /// The step.
        step: String,
        /// The output.
        output: String,
        /// How it ended.
        status: String,
    },
    /// The step has not run.
    #[error("output {step}.{output} is not available: step {step:?} has not run in this execution")]
    NotRun {
        /// The step.
        step: String,
        /// The output.
        output: String,
    },
    /// A `{{ }}` that does not parse.
    #[error("{text}: {message}")]
    BadReference {
        /// As written.
        text: String,
        /// Why.
        message: String,
    },
}

/// What is left of [`MAX_SUBSTITUTED_BYTES`] during one substitution.
struct Budget {
    left: usize,
}

impl Budget {
    /// Takes `n` bytes, or explains why the substitution is refused.
    fn take(&mut self, n: usize, what: &str) -> Result<(), SubstituteError> {
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(SubstituteError::TooLarge(what.to_string())),
        }
    }
}

/// The size of a value as JSON text (about: numbers count 24), or `None` as soon as it is
/// larger than `limit` (so a large value is not walked in full).
pub fn size_within(v: &Value, limit: usize) -> Option<usize> {
    fn walk(v: &Value, total: &mut usize, limit: usize) -> bool {
        let own = match v {
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                *total += 2 + items.len();
                if *total > limit {
                    return false;
                }
                return items.iter().all(|i| walk(i, total, limit));
            }
            Value::Object(m) => {
                *total += 2 + m.len() * 2;
                if *total > limit {
                    return false;
                }
                return m.iter().all(|(k, i)| {
                    *total += k.len() + 2;
                    walk(i, total, limit)
                });
            }
            Value::Null => 4,
            Value::Bool(_) => 5,
            // At most 20 digits, a sign and an exponent.
            Value::Number(_) => 24,
        };
        *total += own;
        *total <= limit
    }
    let mut total = 0;
    walk(v, &mut total, limit).then_some(total)
}

impl Scope {
    /// The value of a reference, borrowed (measured before it is copied).
    fn get(&self, r: &Ref) -> Result<&Value, SubstituteError> {
        match r {
            Ref::Param(name) => self
                .params
                .get(name)
                .ok_or_else(|| SubstituteError::NoParameter(name.clone())),
            Ref::System(name) => self
                .system
                .get(name)
                .ok_or_else(|| SubstituteError::NoSystemValue(name.clone())),
            Ref::Variable(name) => match self.variables.get(name) {
                Some(Variable { value: Some(v), .. }) => Ok(v),
                Some(Variable { value: None, .. }) => {
                    Err(SubstituteError::VariableUnset(name.clone()))
                }
                None => Err(SubstituteError::NoVariable(name.clone())),
            },
            Ref::Output { step, output } => match self.outputs.get(step) {
                Some(outputs) => outputs
                    .get(output)
                    .ok_or_else(|| SubstituteError::NoOutput {
                        step: step.clone(),
                        output: output.clone(),
                    }),
                None => Err(match self.unsuccessful.get(step) {
                    Some(status) => SubstituteError::StepEnded {
                        step: step.clone(),
                        output: output.clone(),
                        status: status.clone(),
                    },
                    None => SubstituteError::NotRun {
                        step: step.clone(),
                        output: output.clone(),
                    },
                }),
            },
        }
    }

    /// The value of a reference.
    pub fn lookup(&self, r: &Ref) -> Result<Value, SubstituteError> {
        self.get(r).cloned()
    }

    /// Substitutes every reference in a value (recursively through lists and maps). The result
    /// is at most [`MAX_SUBSTITUTED_BYTES`] as JSON; past that it is refused before it is built.
    pub fn substitute(&self, v: &Value) -> Result<Value, SubstituteError> {
        self.substitute_within(
            v,
            &mut Budget {
                left: MAX_SUBSTITUTED_BYTES,
            },
        )
    }

    fn substitute_within(&self, v: &Value, budget: &mut Budget) -> Result<Value, SubstituteError> {
        Ok(match v {
            Value::String(s) => self.substitute_str_within(s, budget)?,
            Value::Array(items) => {
                budget.take(2 + items.len(), "a list")?;
                // `- "{{ ids }}"` where ids is a list is that list, not a list in a list: AWS's
                // own documents write a StringList / MapList reference so (`InstanceIds:
                // ["{{ listInstances.InstanceIds }}"]`) and their scripts index the items
                // **(ours: AWS documents no rule; a one-item list is spliced, nothing else)**.
                if let [Value::String(only)] = items.as_slice() {
                    if let [f] = find(only).as_slice() {
                        if f.range == (0..only.len()) {
                            if let v @ Value::Array(_) = self.substitute_str_within(only, budget)? {
                                return Ok(v);
                            }
                        }
                    }
                }
                Value::Array(
                    items
                        .iter()
                        .map(|i| self.substitute_within(i, budget))
                        .collect::<Result<_, _>>()?,
                )
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    budget.take(k.len() + 4, "a map")?;
                    out.insert(k.clone(), self.substitute_within(v, budget)?);
                }
                Value::Object(out)
            }
            other => {
                budget.take(24, "a value")?;
                other.clone()
            }
        })
    }

    /// Substitutes in one string: a whole-value reference keeps its type, otherwise text.
    pub fn substitute_str(&self, s: &str) -> Result<Value, SubstituteError> {
        self.substitute_str_within(
            s,
            &mut Budget {
                left: MAX_SUBSTITUTED_BYTES,
            },
        )
    }

    fn substitute_str_within(
        &self,
        s: &str,
        budget: &mut Budget,
    ) -> Result<Value, SubstituteError> {
        let found = find(s);
        if found.is_empty() {
            budget.take(s.len() + 2, "a string")?;
            return Ok(Value::String(s.to_string()));
        }
        let resolve = |f: &Found| -> Result<&Value, SubstituteError> {
            match &f.parsed {
                Ok(r) => self.get(r),
                Err(e) => Err(SubstituteError::BadReference {
                    text: e.text.clone(),
                    message: e.message.clone(),
                }),
            }
        };
        let text_of = |f: &Found| &s[f.range.clone()];
        // Measured before it is copied.
        let measure = |f: &Found, v: &Value, budget: &mut Budget| -> Result<(), SubstituteError> {
            let size = match v {
                Value::String(t) => Some(t.len()),
                Value::Null => Some(0),
                other => size_within(other, budget.left),
            };
            budget.take(size.unwrap_or(usize::MAX), text_of(f))
        };
        if found.len() == 1 && found[0].range == (0..s.len()) {
            let v = resolve(&found[0])?;
            measure(&found[0], v, budget)?;
            return Ok(v.clone());
        }
        let mut out = String::new();
        let mut at = 0;
        for f in &found {
            let literal = &s[at..f.range.start];
            budget.take(literal.len(), "the text")?;
            out.push_str(literal);
            let v = resolve(f)?;
            measure(f, v, budget)?;
            out.push_str(&as_text(v));
            at = f.range.end;
        }
        budget.take(s.len() - at, "the text")?;
        out.push_str(&s[at..]);
        Ok(Value::String(out))
    }
}

/// A value as text inside a longer string.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.params.insert("Name".into(), json!("web"));
        s.params.insert("Count".into(), json!(3));
        s.params.insert("Tags".into(), json!({"a": "b"}));
        s.params.insert("Ids".into(), json!(["i-1", "i-2"]));
        s.system.insert("global:REGION".into(), json!("eu-west-1"));
        s.system
            .insert("automation:EXECUTION_ID".into(), json!("exec-1"));
        let mut out = Map::new();
        out.insert("Flag".into(), json!(true));
        s.outputs.insert("first".into(), out);
        s.unsuccessful.insert("broken".into(), "Failed".into());
        s
    }

    #[test]
    fn references_parse_with_optional_spaces() {
        let f = find("a {{Name}} b {{ global:REGION }} {{ s.Out }}");
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].parsed, Ok(Ref::Param("Name".into())));
        assert_eq!(f[1].parsed, Ok(Ref::System("global:REGION".into())));
        assert_eq!(
            f[2].parsed,
            Ok(Ref::Output {
                step: "s".into(),
                output: "Out".into()
            })
        );
        assert!(find("no {{ closing").is_empty());
        // Code that only looks like braces is text.
        assert!(find("d = {{{}}; f'{{x[0]}}'").is_empty());
        assert_eq!(find("{{{ Name }}}").len(), 1);
    }

    #[test]
    fn variables_are_read_by_name() {
        assert_eq!(
            find("{{ variable:Count }}")[0].parsed,
            Ok(Ref::Variable("Count".into()))
        );
        assert!(find("{{ variable: }}")[0].parsed.is_err());
        let mut s = scope();
        let var = |value| Variable {
            ty: ValueType::Integer,
            value,
        };
        s.variables.insert("Count".into(), var(Some(json!(2))));
        s.variables.insert("Unset".into(), var(None));
        assert_eq!(s.substitute_str("{{ variable:Count }}").unwrap(), json!(2));
        assert_eq!(
            s.substitute_str("n={{variable:Count}}").unwrap(),
            json!("n=2")
        );
        let unset = s.substitute_str("{{ variable:Unset }}").unwrap_err();
        assert!(unset.to_string().contains("has no value yet"), "{unset}");
        let missing = s.substitute_str("{{ variable:Nope }}").unwrap_err();
        assert_eq!(missing, SubstituteError::NoVariable("Nope".into()));
    }

    #[test]
    fn unsupported_forms_say_why() {
        let msg = |s: &str| find(s)[0].parsed.clone().unwrap_err();
        assert!(
            msg("{{ s.Out.field }}")
                .message
                .contains("drilling into an output is not supported")
        );
        assert!(
            msg("{{ global:NOPE }}")
                .message
                .contains("unknown system variable")
        );
        let ssm = msg("{{ssm:/a/b}}");
        assert_eq!(ssm.unsupported.as_deref(), Some("{{ssm:...}}"));
        assert!(msg("{{ a b }}").message.contains("is not a parameter name"));
    }

    #[test]
    fn whole_value_keeps_its_type_and_text_is_text() {
        let s = scope();
        assert_eq!(s.substitute_str("{{ Count }}").unwrap(), json!(3));
        assert_eq!(s.substitute_str("{{Tags}}").unwrap(), json!({"a": "b"}));
        assert_eq!(s.substitute_str("{{ first.Flag }}").unwrap(), json!(true));
        assert_eq!(
            s.substitute_str("n={{Count}} {{Name}} {{Ids}} {{global:REGION}}")
                .unwrap(),
            json!("n=3 web [\"i-1\",\"i-2\"] eu-west-1")
        );
        assert_eq!(
            s.substitute(&json!({"k": ["{{Ids}}", " {{Name}}"], "n": 1}))
                .unwrap(),
            json!({"k": [["i-1", "i-2"], " web"], "n": 1})
        );
    }

    #[test]
    fn a_list_holding_only_a_list_reference_is_that_list() {
        let s = scope();
        assert_eq!(
            s.substitute(&json!(["{{ Ids }}"])).unwrap(),
            json!(["i-1", "i-2"])
        );
        assert_eq!(
            s.substitute(&json!({"InstanceIds": ["{{Ids}}"]})).unwrap(),
            json!({"InstanceIds": ["i-1", "i-2"]})
        );
        // A scalar stays an item; text around the reference, or a second item, keeps the list.
        assert_eq!(
            s.substitute(&json!(["{{ Name }}"])).unwrap(),
            json!(["web"])
        );
        assert_eq!(
            s.substitute(&json!(["x{{Ids}}"])).unwrap(),
            json!(["x[\"i-1\",\"i-2\"]"])
        );
    }

    #[test]
    fn missing_values_are_errors() {
        let s = scope();
        assert!(
            s.substitute_str("{{ Nope }}")
                .unwrap_err()
                .to_string()
                .contains("not defined")
        );
        assert!(
            s.substitute_str("{{ broken.X }}")
                .unwrap_err()
                .to_string()
                .contains("ended Failed")
        );
        assert!(
            s.substitute_str("{{ later.X }}")
                .unwrap_err()
                .to_string()
                .contains("has not run")
        );
        assert!(
            s.substitute_str("x {{ a.b.c }}")
                .unwrap_err()
                .to_string()
                .contains("drilling")
        );
    }

    #[test]
    fn substitution_is_bounded_before_it_is_built() {
        let mut s = Scope::default();
        s.params.insert("P".into(), json!("x".repeat(1024 * 1024)));
        s.params
            .insert("L".into(), json!(vec!["y".repeat(1024); 1024]));
        // A thousand references to 1 MiB: refused after eight, not a gigabyte built.
        let many = "{{P}}".repeat(1000);
        let e = s.substitute_str(&many).unwrap_err().to_string();
        assert!(
            e.contains("substituting {{P}} would make the value larger than 8388608 bytes"),
            "{e}"
        );
        // Whole-value references (typed copies) count too, in lists and maps.
        let e = s
            .substitute(&json!({"a": vec!["{{ L }}"; 1000]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("{{ L }}"), "{e}");
        // Up to the bound is fine.
        let v = s
            .substitute(&json!(["{{P}}", "{{ L }}", "a {{P}}"]))
            .unwrap();
        assert_eq!(v[0].as_str().unwrap().len(), 1024 * 1024);
        assert_eq!(v[2].as_str().unwrap().len(), 1024 * 1024 + 2);
        assert_eq!(size_within(&json!([1, "ab", {"k": null}]), 100), Some(44));
        assert_eq!(size_within(&json!(vec!["y"; 100]), 10), None);
    }
}
