//! Output selectors (a JSONPath subset: `.name`, `..name`, `[n]`, `['name']`) and output types.

use std::fmt;

use serde_json::{Map, Value};

use crate::step::json_type_name;

/// The declared `Type` of an output (and of a parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `String`.
    String,
    /// `Integer`.
    Integer,
    /// `Boolean`.
    Boolean,
    /// `StringList`.
    StringList,
    /// `StringMap`.
    StringMap,
    /// `MapList`.
    MapList,
}

impl ValueType {
    /// Every type, as AWS spells them.
    pub const NAMES: [&'static str; 6] = [
        "String",
        "StringList",
        "Integer",
        "Boolean",
        "StringMap",
        "MapList",
    ];

    /// Parses AWS's spelling.
    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "String" => ValueType::String,
            "Integer" => ValueType::Integer,
            "Boolean" => ValueType::Boolean,
            "StringList" => ValueType::StringList,
            "StringMap" => ValueType::StringMap,
            "MapList" => ValueType::MapList,
            _ => return None,
        })
    }

    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "String",
            ValueType::Integer => "Integer",
            ValueType::Boolean => "Boolean",
            ValueType::StringList => "StringList",
            ValueType::StringMap => "StringMap",
            ValueType::MapList => "MapList",
        }
    }

    /// Checks a JSON value is of this type (no conversion): the step fails otherwise.
    pub fn check(self, v: &Value) -> Result<(), SelectorError> {
        let ok = match self {
            ValueType::String => v.is_string(),
            ValueType::Integer => v.as_i64().is_some(),
            ValueType::Boolean => v.is_boolean(),
            ValueType::StringList => v
                .as_array()
                .map(|a| a.iter().all(Value::is_string))
                .unwrap_or(false),
            ValueType::StringMap => v.is_object(),
            ValueType::MapList => v
                .as_array()
                .map(|a| a.iter().all(Value::is_object))
                .unwrap_or(false),
        };
        if ok {
            return Ok(());
        }
        let found = match v {
            Value::Array(items) if matches!(self, ValueType::StringList | ValueType::MapList) => {
                let bad = items
                    .iter()
                    .find(|i| {
                        if self == ValueType::StringList {
                            !i.is_string()
                        } else {
                            !i.is_object()
                        }
                    })
                    .map(json_type_name)
                    .unwrap_or("?");
                format!("a list holding {bad}")
            }
            Value::Number(_) if self == ValueType::Integer => "a number with decimals".into(),
            other => json_type_name(other).into(),
        };
        Err(SelectorError::WrongType {
            expected: self,
            found,
            value: short(v),
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value shortened for a message.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Child(String),
    Descend(String),
    Index(usize),
    All,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// As written.
    pub text: String,
    segs: Vec<Seg>,
    /// `$` is `{"Payload": payload}` (executeScript); else `$` is the value itself (an AWS
    /// API action's response).
    payload_rooted: bool,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Parses `$.Payload...`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let segs = Self::segments(text)?;
        // `$` alone is the step's whole output object, `{"Payload": ...}` (ours).
        if !segs.is_empty() && segs.first() != Some(&Seg::Child("Payload".into())) {
            return Err(SelectorError::NotPayload(text.to_string()));
        }
        Ok(Selector {
            text: text.into(),
            segs,
            payload_rooted: true,
        })
    }

    /// Parses a selector of an AWS API action's response (`$.Reservations..InstanceId`):
    /// `$` is the response itself.
    pub fn parse_response(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector {
            text: text.into(),
            segs: Self::segments(text)?,
            payload_rooted: false,
        })
    }

    fn segments(text: &str) -> Result<Vec<Seg>, SelectorError> {
        let rest = text
            .strip_prefix('$')
            .ok_or_else(|| SelectorError::NoDollar(text.to_string()))?;
        let b = rest.as_bytes();
        let mut i = 0;
        let mut segs = Vec::new();
        let name_end = |from: usize| {
            let mut j = from;
            while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                j += 1;
            }
            j
        };
        while i < b.len() {
            if rest[i..].starts_with("..") {
                let end = name_end(i + 2);
                let name = &rest[i + 2..end];
                if name.is_empty() {
                    return Err(SelectorError::DescendWithoutName(text.to_string()));
                }
                segs.push(if name == "*" {
                    Seg::All
                } else {
                    Seg::Descend(name.into())
                });
                i = end;
            } else if b[i] == b'.' {
                let end = name_end(i + 1);
                let name = &rest[i + 1..end];
                if name.is_empty() {
                    return Err(SelectorError::EmptyName(text.to_string()));
                }
                segs.push(if name == "*" {
                    Seg::All
                } else {
                    Seg::Child(name.into())
                });
                i = end;
            } else if b[i] == b'[' {
                let close = rest[i..]
                    .find(']')
                    .map(|j| j + i)
                    .ok_or_else(|| SelectorError::Unclosed(text.to_string()))?;
                let inner = rest[i + 1..close].trim();
                if inner == "*" {
                    segs.push(Seg::All);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    segs.push(Seg::Child(q.into()));
                } else {
                    let n: usize = inner.parse().map_err(|_| SelectorError::Bracket {
                        text: text.to_string(),
                        inner: inner.to_string(),
                    })?;
                    segs.push(Seg::Index(n));
                }
                i = close + 1;
            } else {
                return Err(SelectorError::Unexpected {
                    text: text.to_string(),
                    found: char::from(b[i]),
                    at: i + 1,
                });
            }
        }
        Ok(segs)
    }

    /// True when the selector can match several values (`..`, `*`): the result is a list.
    pub fn is_multi(&self) -> bool {
        self.segs
            .iter()
            .any(|s| matches!(s, Seg::Descend(_) | Seg::All))
    }

    /// Evaluates against a step's payload. `None`: nothing matched (never for a multi selector,
    /// which gives a list, possibly empty).
    pub fn select(&self, payload: &Value) -> Option<Value> {
        let wrapped;
        let root = if self.payload_rooted {
            let mut root = Map::new();
            root.insert("Payload".into(), payload.clone());
            wrapped = Value::Object(root);
            &wrapped
        } else {
            payload
        };
        let mut current: Vec<&Value> = vec![root];
        for seg in &self.segs {
            let mut next = Vec::new();
            for v in current {
                match seg {
                    Seg::Child(name) => next.extend(v.get(name.as_str())),
                    Seg::Index(n) => next.extend(v.as_array().and_then(|a| a.get(*n))),
                    Seg::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Seg::Descend(name) => descend(v, name, &mut next),
                }
            }
            current = next;
        }
        if self.is_multi() {
            Some(Value::Array(current.into_iter().cloned().collect()))
        } else {
            current.first().map(|v| (*v).clone())
        }
    }
}

fn descend<'v>(v: &'v Value, name: &str, out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(name) {
                out.push(x);
            }
            for child in m.values() {
                descend(child, name, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| descend(i, name, out)),
        _ => {}
    }
}

/// Why a selector is refused, or why it gives no output of the declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Does not start with `$`.
    #[error("{0:?} must start with `$.Payload`")]
    NoDollar(String),
    /// `..` at the end.
    #[error("{0:?}: `..` must be followed by a name")]
    DescendWithoutName(String),
    /// `.` with no name.
    #[error("{0:?}: empty name after `.`")]
    EmptyName(String),
    /// `[` with no `]`.
    #[error("{0:?}: `[` without `]`")]
    Unclosed(String),
    /// A bracket other than `[n]`, `[*]` and `['name']`.
    #[error("{text:?}: `[{inner}]` is not supported (only `[n]` with n ≥ 0, `[*]` and `['name']`)")]
    Bracket {
        /// The selector.
        text: String,
        /// Inside the brackets.
        inner: String,
    },
    /// A character where none is expected.
    #[error("{text:?}: unexpected {found:?} at {at}")]
    Unexpected {
        /// The selector.
        text: String,
        /// The character.
        found: char,
        /// Its 1-based place after the `$`.
        at: usize,
    },
    /// Not under `$.Payload`.
    #[error("{0:?} must start with `$.Payload` (an executeScript step's output is its Payload)")]
    NotPayload(String),
    /// A value not of the declared type.
    #[error("expected {expected}, found {found}: {value}")]
    WrongType {
        /// The declared type.
        expected: ValueType,
        /// What was found.
        found: String,
        /// The value, shortened.
        value: String,
    },
    /// The selector matched nothing.
    #[error("output {name:?}: selector {selector} matched nothing in the payload {payload}")]
    MatchedNothing {
        /// The output.
        name: String,
        /// The selector.
        selector: String,
        /// The payload, shortened.
        payload: String,
    },
    /// The selected value is not of the declared type.
    #[error("output {name:?}: selector {selector}: {source}")]
    Output {
        /// The output.
        name: String,
        /// The selector.
        selector: String,
        /// Why.
        source: Box<SelectorError>,
    },
}

/// Computes one declared output from a payload: the selected value, checked against the Type.
pub fn output_value(
    name: &str,
    selector: &Selector,
    ty: ValueType,
    payload: &Value,
) -> Result<Value, SelectorError> {
    let Some(found) = selector.select(payload) else {
        return Err(SelectorError::MatchedNothing {
            name: name.to_string(),
            selector: selector.to_string(),
            payload: short(payload),
        });
    };
    ty.check(&found).map_err(|e| SelectorError::Output {
        name: name.to_string(),
        selector: selector.to_string(),
        source: Box::new(e),
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn the_subset_selects() {
        let p = json!({"a": {"b": 1}, "list": [{"name": "x"}, {"name": "y", "in": {"name": "z"}}]});
        assert_eq!(sel("$.Payload").select(&p), Some(p.clone()));
        assert_eq!(sel("$.Payload.a.b").select(&p), Some(json!(1)));
        assert_eq!(sel("$.Payload.list[1].name").select(&p), Some(json!("y")));
        assert_eq!(sel("$.Payload['a'].b").select(&p), Some(json!(1)));
        assert_eq!(
            sel("$.Payload..name").select(&p),
            Some(json!(["x", "y", "z"]))
        );
        assert_eq!(sel("$.Payload..nothing").select(&p), Some(json!([])));
        assert_eq!(
            sel("$.Payload.list[*].name").select(&p),
            Some(json!(["x", "y"]))
        );
        assert_eq!(sel("$.Payload.missing").select(&p), None);
        assert_eq!(sel("$.Payload.list[7]").select(&p), None);
        // A bare value returned by the handler.
        assert_eq!(sel("$.Payload").select(&json!(5)), Some(json!(5)));
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert!(
            Selector::parse("Payload.a")
                .unwrap_err()
                .to_string()
                .contains("must start with")
        );
        assert!(
            Selector::parse("$.Reservations..Id")
                .unwrap_err()
                .to_string()
                .contains("$.Payload")
        );
        assert!(
            Selector::parse("$.Payload[-1]")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(Selector::parse("$.Payload.a[0").is_err());
    }

    #[test]
    fn outputs_are_checked_against_their_type() {
        let p = json!({"s": "x", "i": 4, "f": 1.5, "b": false, "l": ["a"], "m": {"k": 1}, "ml": [{"a": 1}], "mix": ["a", 1]});
        let out = |s: &str, t| output_value("O", &sel(s), t, &p);
        assert_eq!(out("$.Payload.s", ValueType::String).unwrap(), json!("x"));
        assert_eq!(out("$.Payload.i", ValueType::Integer).unwrap(), json!(4));
        assert_eq!(
            out("$.Payload.b", ValueType::Boolean).unwrap(),
            json!(false)
        );
        assert_eq!(
            out("$.Payload.l", ValueType::StringList).unwrap(),
            json!(["a"])
        );
        assert_eq!(
            out("$.Payload.m", ValueType::StringMap).unwrap(),
            json!({"k": 1})
        );
        assert_eq!(
            out("$.Payload.ml", ValueType::MapList).unwrap(),
            json!([{"a": 1}])
        );
        let e = out("$.Payload.f", ValueType::Integer)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "output \"O\": selector $.Payload.f: expected Integer, found a number with decimals"
            ),
            "{e}"
        );
        let e = out("$.Payload.mix", ValueType::StringList)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a list holding a number"), "{e}");
        let e = out("$.Payload.zz", ValueType::String)
            .unwrap_err()
            .to_string();
        assert!(e.contains("matched nothing"), "{e}");
        assert!(
            out("$.Payload..s", ValueType::String)
                .unwrap_err()
                .to_string()
                .contains("found a list")
        );
    }
}
