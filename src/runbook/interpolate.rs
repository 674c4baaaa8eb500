//! `{{ }}` references: parameters, system variables and earlier steps' outputs.
//!
//! A reference that is the whole string keeps the referenced value's type (a StringMap stays a
//! map); inside a longer string it is replaced by text: strings as they are, numbers and
//! booleans as written, lists and maps as compact JSON **(ours)**. The substituted text is not
//! scanned again (no nested expansion).

use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Map, Value};

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
}

impl Scope {
    /// The value of a reference.
    pub fn lookup(&self, r: &Ref) -> Result<Value, String> {
        match r {
            Ref::Param(name) => self
                .params
                .get(name)
                .cloned()
                .ok_or_else(|| format!("parameter {name:?} is not defined")),
            Ref::System(name) => self
                .system
                .get(name)
                .cloned()
                .ok_or_else(|| format!("system variable {name:?} has no value")),
            Ref::Output { step, output } => match self.outputs.get(step) {
                Some(outputs) => outputs
                    .get(output)
                    .cloned()
                    .ok_or_else(|| format!("step {step:?} has no output {output:?}")),
                None => Err(match self.unsuccessful.get(step) {
                    Some(status) => format!(
                        "output {step}.{output} is not available: step {step:?} ended {status}"
                    ),
                    None => format!(
                        "output {step}.{output} is not available: step {step:?} has not run in this execution"
                    ),
                }),
            },
        }
    }

    /// Substitutes every reference in a value (recursively through lists and maps).
    pub fn substitute(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => self.substitute_str(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.substitute(i))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    out.insert(k.clone(), self.substitute(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Substitutes in one string: a whole-value reference keeps its type, otherwise text.
    pub fn substitute_str(&self, s: &str) -> Result<Value, String> {
        let found = find(s);
        if found.is_empty() {
            return Ok(Value::String(s.to_string()));
        }
        let resolve = |f: &Found| -> Result<Value, String> {
            match &f.parsed {
                Ok(r) => self.lookup(r),
                Err(e) => Err(format!("{}: {}", e.text, e.message)),
            }
        };
        if found.len() == 1 && found[0].range == (0..s.len()) {
            return resolve(&found[0]);
        }
        let mut out = String::new();
        let mut at = 0;
        for f in &found {
            out.push_str(&s[at..f.range.start]);
            out.push_str(&as_text(&resolve(f)?));
            at = f.range.end;
        }
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
    fn missing_values_are_errors() {
        let s = scope();
        assert!(
            s.substitute_str("{{ Nope }}")
                .unwrap_err()
                .contains("not defined")
        );
        assert!(
            s.substitute_str("{{ broken.X }}")
                .unwrap_err()
                .contains("ended Failed")
        );
        assert!(
            s.substitute_str("{{ later.X }}")
                .unwrap_err()
                .contains("has not run")
        );
        assert!(
            s.substitute_str("x {{ a.b.c }}")
                .unwrap_err()
                .contains("drilling")
        );
    }
}
