//! Runbook parameters: declarations, the values given for a run, and their rules.
//!
//! Every value is checked before any step runs; every problem is reported.
//!
//! Decisions where AWS is silent **(ours)**:
//! - `allowedPattern` is searched in the value (like Java's `Matcher.find`), so anchor it with
//!   `^...$` to constrain the whole value, as AWS's own documents do. Lookarounds are supported
//!   (fancy-regex), as in Java.
//! - Types `AWS::...` (e.g. `AWS::IAM::Role::Arn`) are Strings locally: nothing checks that the
//!   resource exists.
//! - Bounds, checked before a value is converted or matched: a value at most
//!   [`MAX_VALUE_BYTES`], a list at most [`MAX_LIST_ITEMS`] items, an `allowedPattern` at most
//!   [`MAX_PATTERN_CHARS`] characters. A pattern without lookarounds or backreferences runs on
//!   the linear-time `regex` crate (fancy-regex hands it over whole); one with them runs on
//!   fancy-regex's backtracking, at most [`BACKTRACK_LIMIT`] steps per value and
//!   [`PATTERN_TIME_BUDGET`] for all the values of one run. Past either, the value is refused.
//! - From the command line every value is text: a StringList is a JSON list or comma-separated;
//!   a StringMap / MapList is JSON. From a parameters file values may be typed, or lists of
//!   strings as AWS's API takes them (`{"Name": ["v"]}`).

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::executor::{RunContext, StepRunner};
use super::selector::{ValueType, short};
use super::yaml::{Kind, Node, Pos};
use super::{Problem, interpolate};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::step::json_type_name;

/// The largest parameter value, bytes (as text, or as JSON when typed) **(ours)**: as large as
/// an InputPayload may be.
pub const MAX_VALUE_BYTES: usize = crate::step::MAX_PAYLOAD_BYTES;

/// The most items of a StringList or MapList value **(ours)**.
pub const MAX_LIST_ITEMS: usize = 1000;

/// The longest `allowedPattern`, characters **(ours)**.
pub const MAX_PATTERN_CHARS: usize = 1024;

/// Backtracking steps one `allowedPattern` may take on one value (patterns with lookarounds or
/// backreferences; others run in linear time).
pub const BACKTRACK_LIMIT: usize = 100_000;

/// The time all `allowedPattern` checks of one run may take together.
pub const PATTERN_TIME_BUDGET: Duration = Duration::from_secs(2);

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct ParamDecl {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub pos: Pos,
    /// Its type (AWS resource types are Strings).
    pub ty: ValueType,
    /// The type as written.
    pub type_name: String,
    /// `description`.
    pub description: Option<String>,
    /// `default`, typed (or a `{{ssm:...}}` string).
    pub default: Option<Value>,
    /// `allowedValues`.
    pub allowed_values: Option<Vec<Value>>,
    /// `allowedPattern`, compiled.
    pub allowed_pattern: Option<(String, fancy_regex::Regex)>,
    /// `minItems`.
    pub min_items: Option<u64>,
    /// `maxItems`.
    pub max_items: Option<u64>,
    /// `minChars`.
    pub min_chars: Option<u64>,
    /// `maxChars`.
    pub max_chars: Option<u64>,
    /// `displayType`.
    pub display_type: Option<String>,
}

const KEYS: [&str; 10] = [
    "type",
    "description",
    "default",
    "allowedValues",
    "allowedPattern",
    "minItems",
    "maxItems",
    "minChars",
    "maxChars",
    "displayType",
];

/// Reads one declaration, reporting every problem.
pub fn declare(
    name: &str,
    name_pos: Pos,
    node: &Node,
    problems: &mut Vec<Problem>,
) -> Option<ParamDecl> {
    let ctx = format!("parameters.{name}");
    let before = problems.len();
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
        problems.push(Problem::invalid(
            name_pos,
            &ctx,
            "a parameter name may hold only letters, digits and underscores",
        ));
    }
    let Kind::Map(entries) = &node.kind else {
        problems.push(Problem::invalid(
            node.pos,
            &ctx,
            format!(
                "must be a map with at least `type`, not {} (check the indentation under `parameters:`)",
                node.type_name()
            ),
        ));
        return None;
    };
    for (k, kpos, _) in entries {
        if !KEYS.contains(&k.as_str()) {
            problems.push(Problem::invalid(
                *kpos,
                &ctx,
                format!("unknown key {k:?}; known keys: {}", KEYS.join(", ")),
            ));
        }
    }
    let (type_name, ty) = param_type(node, &ctx, problems);
    let string = |key: &str, problems: &mut Vec<Problem>| prop_string(node, &ctx, key, problems);
    let count = |key: &str, problems: &mut Vec<Problem>| prop_count(node, &ctx, key, problems);
    let description = string("description", problems);
    let display_type = string("displayType", problems);
    let allowed_pattern = allowed_pattern(node, &ctx, problems);
    let allowed_values = node.get("allowedValues").and_then(|n| match &n.kind {
        Kind::Seq(items) => Some(items.iter().map(Node::to_json).collect()),
        _ => {
            problems.push(Problem::invalid(
                n.pos,
                format!("{ctx}.allowedValues"),
                format!("must be a list, not {}", n.type_name()),
            ));
            None
        }
    });
    let min_items = count("minItems", problems);
    let max_items = count("maxItems", problems);
    let min_chars = count("minChars", problems);
    let max_chars = count("maxChars", problems);
    let mut decl = ParamDecl {
        name: name.to_string(),
        pos: name_pos,
        ty: ty.unwrap_or(ValueType::String),
        type_name,
        description,
        default: None,
        allowed_values,
        allowed_pattern,
        min_items,
        max_items,
        min_chars,
        max_chars,
        display_type,
    };
    if let (Some(ty), Some(d)) = (ty, node.get("default")) {
        let raw = d.to_json();
        if is_external_reference(&raw) {
            decl.default = Some(raw);
        } else {
            match coerce(ty, &raw) {
                Ok(v) => decl.default = Some(v),
                Err(e) => problems.push(Problem::invalid(
                    d.pos,
                    format!("{ctx}.default"),
                    format!("is not a valid {ty}: {e}"),
                )),
            }
        }
    }
    if problems.len() > before || ty.is_none() {
        return None;
    }
    Some(decl)
}

/// A declaration's `type` as written, and as a type (an `AWS::…` type is a String).
fn param_type(node: &Node, ctx: &str, problems: &mut Vec<Problem>) -> (String, Option<ValueType>) {
    let type_node = node.get("type");
    let type_name = type_node.and_then(Node::as_str).unwrap_or("").to_string();
    let ty = match type_node {
        None => {
            problems.push(Problem::invalid(node.pos, ctx, "`type` is required"));
            None
        }
        Some(t) => match ValueType::parse(&type_name) {
            Some(ty) => Some(ty),
            None if type_name.starts_with("AWS::") => Some(ValueType::String),
            None => {
                problems.push(Problem::invalid(
                    t.pos,
                    format!("{ctx}.type"),
                    format!(
                        "unknown type {}; known types: {}",
                        short(&t.to_json()),
                        ValueType::NAMES.join(", ")
                    ),
                ));
                None
            }
        },
    };
    (type_name, ty)
}

/// A string key of a declaration, if present.
fn prop_string(node: &Node, ctx: &str, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let n = node.get(key)?;
    match &n.kind {
        Kind::Str(s) => Some(s.clone()),
        _ => {
            problems.push(Problem::invalid(
                n.pos,
                format!("{ctx}.{key}"),
                format!("must be a string, not {}", n.type_name()),
            ));
            None
        }
    }
}

/// A whole-number (≥ 0) key of a declaration, if present.
fn prop_count(node: &Node, ctx: &str, key: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    let n = node.get(key)?;
    if let Kind::Int(i) = &n.kind {
        if let Ok(count) = u64::try_from(*i) {
            return Some(count);
        }
    }
    problems.push(Problem::invalid(
        n.pos,
        format!("{ctx}.{key}"),
        format!("must be a whole number ≥ 0, not {}", short(&n.to_json())),
    ));
    None
}

/// `allowedPattern`, bounded in length, compiled.
fn allowed_pattern(
    node: &Node,
    ctx: &str,
    problems: &mut Vec<Problem>,
) -> Option<(String, fancy_regex::Regex)> {
    let p = prop_string(node, ctx, "allowedPattern", problems)?;
    let pos = node
        .get("allowedPattern")
        .map(|n| n.pos)
        .unwrap_or_default();
    if p.chars().count() > MAX_PATTERN_CHARS {
        problems.push(Problem::invalid(
            pos,
            format!("{ctx}.allowedPattern"),
            format!("is longer than {MAX_PATTERN_CHARS} characters"),
        ));
        return None;
    }
    match compile_pattern(&p) {
        Ok(re) => Some((p, re)),
        Err(e) => {
            problems.push(Problem::unsupported(
                pos,
                format!("{ctx}.allowedPattern"),
                "allowedPattern syntax",
                format!("the regular expression {p:?} cannot be compiled by scriptbox: {e}"),
            ));
            None
        }
    }
}

/// Compiles an allowedPattern with Java's meaning: `\w` and `\d` are ASCII (as in Java, and
/// small: a Unicode `\w{1,253}` is too large to compile), and a `-` right after a class escape
/// inside `[...]` (`[\w-_]`) is a literal.
/// Backtracking is bounded by [`BACKTRACK_LIMIT`] steps per match.
pub fn compile_pattern(p: &str) -> Result<fancy_regex::Regex, PatternError> {
    fancy_regex::RegexBuilder::new(&java_to_rust(p))
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map_err(|e| PatternError(Box::new(e)))
}

/// An allowedPattern the regex engine cannot compile; Display is the engine's reason.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PatternError(Box<fancy_regex::Error>);

/// Why a value cannot be converted to its parameter's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoerceError {
    /// A JSON number with decimals for an Integer.
    #[error("{0} is not an integer (decimals are not allowed)")]
    NumberWithDecimals(serde_json::Number),
    /// Text with decimals for an Integer.
    #[error("{0:?} is not an integer (decimals are not allowed)")]
    TextWithDecimals(String),
    /// Text that is not an integer.
    #[error("{0:?} is not an integer")]
    NotAnInteger(String),
    /// Text that is not true or false.
    #[error("{0:?} is not a Boolean (only true or false)")]
    NotABoolean(String),
    /// A StringList item that is not a string (its JSON type).
    #[error("a StringList holds strings only, found {0}")]
    StringListItem(&'static str),
    /// A MapList item that is a string but not a JSON map.
    #[error("a MapList holds maps, found the string {0:?}")]
    MapListString(String),
    /// A MapList item of another JSON type.
    #[error("a MapList holds maps, found {0}")]
    MapListItem(&'static str),
    /// A value of another JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The parameter's type.
        expected: ValueType,
        /// The JSON type found.
        found: &'static str,
    },
    /// A StringList written as a broken JSON list.
    #[error("{text:?} is not a JSON list: {reason}")]
    NotAJsonList {
        /// As written.
        text: String,
        /// serde_json's reason.
        reason: String,
    },
    /// A StringMap or MapList that is not JSON.
    #[error("{text:?} is not JSON: {reason}")]
    NotJson {
        /// As written.
        text: String,
        /// serde_json's reason.
        reason: String,
    },
    /// A StringMap or MapList given as a JSON string.
    #[error("expected {0} as JSON, found a string")]
    JsonString(ValueType),
}

/// A supplied value beyond scriptbox's bounds, refused before it is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Beyond [`MAX_VALUE_BYTES`].
    #[error("is larger than {max} bytes", max = MAX_VALUE_BYTES)]
    TooLarge,
    /// A list beyond [`MAX_LIST_ITEMS`].
    #[error("has more than {max} items", max = MAX_LIST_ITEMS)]
    TooManyItems,
}

fn java_to_rust(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let e = chars[i + 1];
            i += 2;
            match (e, in_class) {
                ('w', true) => out.push_str("A-Za-z0-9_"),
                ('w', false) => out.push_str("[A-Za-z0-9_]"),
                ('d', true) => out.push_str("0-9"),
                ('d', false) => out.push_str("[0-9]"),
                ('/', _) => out.push('/'),
                _ => {
                    out.push('\\');
                    out.push(e);
                }
            }
            let class_escape = "wWdDsS".contains(e);
            if in_class
                && class_escape
                && chars.get(i) == Some(&'-')
                && chars.get(i + 1) != Some(&']')
            {
                out.push_str("\\-");
                i += 1;
            }
            continue;
        }
        if c == '[' && !in_class {
            in_class = true;
            out.push(c);
            // A `]` or `^]` right after `[` is a literal.
            if chars.get(i + 1) == Some(&'^') {
                out.push('^');
                i += 1;
            }
            i += 1;
            continue;
        } else if c == ']' && in_class {
            in_class = false;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// True when a default reads Parameter Store or another external source (`{{ssm:...}}`).
pub fn is_external_reference(v: &Value) -> bool {
    interpolate::refs_in(v)
        .iter()
        .any(|f| matches!(&f.parsed, Err(e) if e.unsupported.is_some()))
}

/// The longest Parameter Store name read for a default, bytes (AWS's own limit is 2048 with
/// its path).
pub const MAX_PARAMETER_NAME_BYTES: usize = 2048;

/// How long reading one `{{ssm:NAME}}` default may take, the AWS call included **(ours)**.
pub const PARAMETER_STORE_DEADLINE: Duration = Duration::from_secs(60);

/// The Parameter Store name of a default written `{{ssm:NAME}}` (spaces inside the braces
/// allowed), when that is the whole value; `None` for anything else (`{{ssm-secure:...}}`, a
/// reference inside other text, a name longer than [`MAX_PARAMETER_NAME_BYTES`]).
pub fn parameter_store_name(v: &Value) -> Option<&str> {
    let s = v.as_str()?;
    if s.len() > MAX_PARAMETER_NAME_BYTES + 16 {
        return None;
    }
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("ssm:")?.trim();
    let ok = !name.is_empty()
        && name.len() <= MAX_PARAMETER_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-:".contains(c));
    ok.then_some(name)
}

/// Why a `{{ssm:NAME}}` default could not be given its value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParameterStoreError {
    /// The GetParameter call failed (AWS access off, the parameter missing, the endpoint...).
    #[error(
        "parameter {param}: its default {{{{ssm:{name}}}}} reads Parameter Store, and ssm GetParameter {name:?} failed: {source}"
    )]
    Call {
        /// The runbook parameter.
        param: String,
        /// The Parameter Store name.
        name: String,
        /// The call's failure.
        source: AwsCallError,
    },
    /// The call did not answer in time.
    #[error("parameter {param}: its default {{{{ssm:{name}}}}} reads Parameter Store, and ssm GetParameter {name:?} did not answer within {} s", PARAMETER_STORE_DEADLINE.as_secs())]
    TimedOut {
        /// The runbook parameter.
        param: String,
        /// The Parameter Store name.
        name: String,
    },
    /// The response holds no `Parameter.Value` string.
    #[error(
        "parameter {param}: ssm GetParameter {name:?} answered without a Parameter.Value string"
    )]
    NoValue {
        /// The runbook parameter.
        param: String,
        /// The Parameter Store name.
        name: String,
    },
    /// The value read breaks the parameter's type or rules.
    #[error("parameter {param}: the value of Parameter Store {name:?} (its default) {rule}")]
    Invalid {
        /// The runbook parameter.
        param: String,
        /// The Parameter Store name.
        name: String,
        /// What is wrong with it.
        rule: String,
    },
}

/// Gives each parameter whose value is still a `{{ssm:NAME}}` default (see [`resolve`]) the
/// value of Parameter Store's `NAME`, read through the runner's AWS call (ssm GetParameter, as
/// the operator's identity: AWS resolves parameters when the execution starts, before any
/// role is assumed), then converts and checks it as a given value. A StringList parameter
/// splits the stored text at commas, as Parameter Store's StringList is stored.
pub async fn resolve_parameter_store(
    decls: &[ParamDecl],
    values: &mut Map<String, Value>,
    runner: &dyn StepRunner,
    execution_id: &str,
    cancel: &CancellationToken,
) -> Result<(), ParameterStoreError> {
    for d in decls {
        let Some(name) = values.get(&d.name).and_then(parameter_store_name) else {
            continue;
        };
        let name = name.to_string();
        let text = read_parameter(runner, &d.name, &name, execution_id, cancel).await?;
        let invalid = |rule: String| ParameterStoreError::Invalid {
            param: d.name.clone(),
            name: name.clone(),
            rule,
        };
        let value = coerce_text(d.ty, &text)
            .map_err(|e| invalid(format!("is not a valid {}: {e}", d.ty)))?;
        // The pattern budget starts after the call: the wait for AWS is not the pattern's time.
        if let Some(rule) = check_rules(d, &value).into_iter().next() {
            return Err(invalid(rule));
        }
        values.insert(d.name.clone(), value);
    }
    Ok(())
}

/// One GetParameter call, within [`PARAMETER_STORE_DEADLINE`].
async fn read_parameter(
    runner: &dyn StepRunner,
    param: &str,
    name: &str,
    execution_id: &str,
    cancel: &CancellationToken,
) -> Result<String, ParameterStoreError> {
    let mut parameters = Map::new();
    parameters.insert("Name".into(), Value::String(name.to_string()));
    let call = AwsCall {
        service: "ssm".into(),
        api: "GetParameter".into(),
        parameters,
    };
    let mut on_log = |_: &crate::result::LogLine| {};
    let ctx = RunContext {
        automation_execution_id: execution_id,
        step_execution_id: uuid::Uuid::new_v4().to_string(),
        on_log: &mut on_log,
        cancel,
        assume_role: None,
    };
    let response = tokio::time::timeout(PARAMETER_STORE_DEADLINE, runner.call_aws(&call, ctx))
        .await
        .map_err(|_| ParameterStoreError::TimedOut {
            param: param.to_string(),
            name: name.to_string(),
        })?
        .map_err(|source| ParameterStoreError::Call {
            param: param.to_string(),
            name: name.to_string(),
            source,
        })?;
    response
        .pointer("/Parameter/Value")
        .and_then(Value::as_str)
        .filter(|v| v.len() <= MAX_VALUE_BYTES)
        .map(str::to_string)
        .ok_or_else(|| ParameterStoreError::NoValue {
            param: param.to_string(),
            name: name.to_string(),
        })
}

/// A value given for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Supplied {
    /// From `-p Name=Value`: text, converted by the parameter's type.
    Text(String),
    /// From a parameters file: typed, or AWS's list-of-strings form.
    Typed(Value),
}

/// Converts a typed value (a default, a parameters-file value) to the parameter's type.
pub fn coerce(ty: ValueType, v: &Value) -> Result<Value, CoerceError> {
    // AWS's API form: every value is a list of strings; one-item lists hold scalars and maps.
    if let Value::Array(items) = v {
        if items.len() == 1
            && items[0].is_string()
            && matches!(
                ty,
                ValueType::String | ValueType::Integer | ValueType::Boolean | ValueType::StringMap
            )
        {
            return coerce(ty, &items[0]);
        }
    }
    match (ty, v) {
        (_, Value::String(s)) => coerce_text(ty, s),
        (ValueType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (ValueType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (ValueType::Integer, Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .ok_or_else(|| CoerceError::NumberWithDecimals(n.clone())),
        (ValueType::Boolean, Value::Bool(b)) => Ok(Value::Bool(*b)),
        (ValueType::StringList, Value::Array(items)) => {
            if let Some(bad) = items.iter().find(|i| !i.is_string()) {
                return Err(CoerceError::StringListItem(json_type_name(bad)));
            }
            Ok(v.clone())
        }
        (ValueType::StringMap, Value::Object(_)) => Ok(v.clone()),
        (ValueType::MapList, Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::Object(_) => out.push(item.clone()),
                    // The API form: each map JSON-encoded.
                    Value::String(s) => match serde_json::from_str::<Value>(s) {
                        Ok(m @ Value::Object(_)) => out.push(m),
                        _ => return Err(CoerceError::MapListString(s.clone())),
                    },
                    other => {
                        return Err(CoerceError::MapListItem(json_type_name(other)));
                    }
                }
            }
            Ok(Value::Array(out))
        }
        (_, other) => Err(CoerceError::WrongType {
            expected: ty,
            found: json_type_name(other),
        }),
    }
}

/// Converts text (`-p Name=Value`) to the parameter's type.
pub fn coerce_text(ty: ValueType, s: &str) -> Result<Value, CoerceError> {
    match ty {
        ValueType::String => Ok(Value::String(s.to_string())),
        ValueType::Integer => s.trim().parse::<i64>().map(Value::from).map_err(|_| {
            if s.contains('.') {
                CoerceError::TextWithDecimals(s.to_string())
            } else {
                CoerceError::NotAnInteger(s.to_string())
            }
        }),
        ValueType::Boolean => match s.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(CoerceError::NotABoolean(s.to_string())),
        },
        ValueType::StringList => {
            let t = s.trim();
            if t.starts_with('[') {
                let v: Value = serde_json::from_str(t).map_err(|e| CoerceError::NotAJsonList {
                    text: s.to_string(),
                    reason: e.to_string(),
                })?;
                coerce(ty, &v)
            } else if t.is_empty() {
                Ok(Value::Array(vec![]))
            } else {
                Ok(Value::Array(
                    t.split(',')
                        .map(|i| Value::String(i.trim().to_string()))
                        .collect(),
                ))
            }
        }
        ValueType::StringMap | ValueType::MapList => {
            let v: Value = serde_json::from_str(s).map_err(|e| CoerceError::NotJson {
                text: s.to_string(),
                reason: e.to_string(),
            })?;
            if v.is_string() {
                return Err(CoerceError::JsonString(ty));
            }
            coerce(ty, &v)
        }
    }
}

/// What is left of [`PATTERN_TIME_BUDGET`] for one run's pattern checks.
struct PatternBudget {
    ends: Instant,
}

impl PatternBudget {
    fn new() -> PatternBudget {
        PatternBudget {
            ends: Instant::now() + PATTERN_TIME_BUDGET,
        }
    }
}

/// The size bounds of a supplied value, checked before it is converted.
fn check_size(given: &Supplied) -> Result<(), SizeError> {
    let bytes = match given {
        Supplied::Text(t) => Some(t.len()).filter(|n| *n <= MAX_VALUE_BYTES),
        Supplied::Typed(v) => interpolate::size_within(v, MAX_VALUE_BYTES),
    };
    if bytes.is_none() {
        return Err(SizeError::TooLarge);
    }
    if let Supplied::Typed(Value::Array(items)) = given {
        if items.len() > MAX_LIST_ITEMS {
            return Err(SizeError::TooManyItems);
        }
    }
    Ok(())
}

/// Checks each item against the allowedPattern `p` within the run's time budget.
fn check_pattern(
    p: &str,
    re: &fancy_regex::Regex,
    items: &[&Value],
    budget: &PatternBudget,
    out: &mut Vec<String>,
) {
    for item in items {
        if Instant::now() >= budget.ends {
            out.push(format!(
                "checking the values against the allowedPattern {p:?} took more than {} s in all (scriptbox's budget for one run); simplify the pattern or give fewer values",
                PATTERN_TIME_BUDGET.as_secs()
            ));
            break;
        }
        let t = interpolate::as_text(item);
        match re.is_match(&t) {
            Ok(true) => {}
            Ok(false) => out.push(format!(
                "{} does not match the allowedPattern {p:?}",
                short(item)
            )),
            Err(fancy_regex::Error::RuntimeError(
                fancy_regex::RuntimeError::BacktrackLimitExceeded,
            )) => out.push(format!(
                "the allowedPattern {p:?} needs more than {BACKTRACK_LIMIT} backtracking steps on {} (scriptbox's bound); simplify the pattern (its lookarounds or backreferences)",
                short(item)
            )),
            Err(e) => out.push(format!("allowedPattern {p:?} could not be applied: {e}")),
        }
    }
}

/// Checks a typed value against the declaration's rules; returns every broken rule.
pub fn check_rules(d: &ParamDecl, v: &Value) -> Vec<String> {
    check_rules_within(d, v, &mut PatternBudget::new())
}

fn check_rules_within(d: &ParamDecl, v: &Value, budget: &mut PatternBudget) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Array(items) = v {
        if items.len() > MAX_LIST_ITEMS {
            // Refused before any rule is applied to its items.
            return vec![format!(
                "has {} items, more than scriptbox's maximum of {MAX_LIST_ITEMS}",
                items.len()
            )];
        }
    }
    let items: Vec<&Value> = match v {
        Value::Array(items) if d.ty == ValueType::StringList => items.iter().collect(),
        _ => vec![v],
    };
    let text = |v: &Value| interpolate::as_text(v);
    if let Some(allowed) = &d.allowed_values {
        if matches!(
            d.ty,
            ValueType::String | ValueType::Integer | ValueType::Boolean | ValueType::StringList
        ) {
            let allowed_text: Vec<String> = allowed.iter().map(text).collect();
            for item in &items {
                if !allowed_text.contains(&text(item)) {
                    out.push(format!(
                        "{} is not one of the allowedValues: {}",
                        short(item),
                        allowed_text.join(", ")
                    ));
                }
            }
        } else if !allowed.contains(v) {
            out.push(format!("{} is not one of the allowedValues", short(v)));
        }
    }
    if let Some((p, re)) = &d.allowed_pattern {
        if matches!(
            d.ty,
            ValueType::String | ValueType::Integer | ValueType::StringList
        ) {
            check_pattern(p, re, &items, budget, &mut out);
        }
    }
    if let Value::Array(list) = v {
        let n = u64::try_from(list.len()).unwrap_or(u64::MAX);
        if let Some(min) = d.min_items {
            if n < min {
                out.push(format!("has {n} items, fewer than minItems {min}"));
            }
        }
        if let Some(max) = d.max_items {
            if n > max {
                out.push(format!("has {n} items, more than maxItems {max}"));
            }
        }
    }
    if matches!(d.ty, ValueType::String | ValueType::StringList) {
        for item in &items {
            let n = u64::try_from(text(item).chars().count()).unwrap_or(u64::MAX);
            if let Some(min) = d.min_chars {
                if n < min {
                    out.push(format!(
                        "{} has {n} characters, fewer than minChars {min}",
                        short(item)
                    ));
                }
            }
            if let Some(max) = d.max_chars {
                if n > max {
                    out.push(format!(
                        "{} has {n} characters, more than maxChars {max}",
                        short(item)
                    ));
                }
            }
        }
    }
    out
}

/// Resolves the values of a run: every supplied name declared, every required one given, each
/// value converted to its type and checked against its rules. Every problem is reported.
pub fn resolve(
    decls: &[ParamDecl],
    supplied: &[(String, Supplied)],
) -> Result<Map<String, Value>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut values = Map::new();
    let mut budget = PatternBudget::new();
    for (i, (name, _)) in supplied.iter().enumerate() {
        if supplied[..i].iter().any(|(n, _)| n == name) {
            problems.push(Problem::invalid(
                Pos::default(),
                format!("parameter {name}"),
                "is given more than once",
            ));
        }
        if !decls.iter().any(|d| &d.name == name) {
            let known: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
            problems.push(Problem::invalid(
                Pos::default(),
                format!("parameter {name}"),
                format!(
                    "is not declared by the document (declared: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    for d in decls {
        let ctx = format!("parameter {}", d.name);
        let given = supplied.iter().find(|(n, _)| n == &d.name).map(|(_, v)| v);
        if let Some(Err(e)) = given.map(check_size) {
            problems.push(Problem::invalid(d.pos, &ctx, e.to_string()));
            continue;
        }
        let value = match given {
            Some(Supplied::Text(t)) => coerce_text(d.ty, t),
            Some(Supplied::Typed(v)) => coerce(d.ty, v),
            None => match &d.default {
                None => {
                    problems.push(Problem::invalid(
                        d.pos,
                        &ctx,
                        format!(
                            "is required (it has no default); give it with -p {}=VALUE",
                            d.name
                        ),
                    ));
                    continue;
                }
                // Read from the endpoint's Parameter Store when the execution starts
                // (`resolve_parameter_store`); kept as written until then.
                Some(v) if parameter_store_name(v).is_some() => {
                    values.insert(d.name.clone(), v.clone());
                    continue;
                }
                Some(v) if is_external_reference(v) => {
                    problems.push(Problem::unsupported(
                        d.pos,
                        &ctx,
                        "{{ssm:...}}",
                        format!(
                            "its default {} reads a secret store scriptbox does not read (only {{{{ssm:NAME}}}} is read, from Parameter Store); give the value with -p {}=VALUE",
                            short(v),
                            d.name
                        ),
                    ));
                    continue;
                }
                Some(v) => Ok(v.clone()),
            },
        };
        match value {
            Err(e) => problems.push(Problem::invalid(
                d.pos,
                &ctx,
                format!("is not a valid {}: {e}", d.ty),
            )),
            Ok(v) => {
                let source = if given.is_some() {
                    ""
                } else {
                    " (its default)"
                };
                for rule in check_rules_within(d, &v, &mut budget) {
                    problems.push(Problem::invalid(d.pos, &ctx, format!("{rule}{source}")));
                }
                values.insert(d.name.clone(), v);
            }
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::yaml::{Format, read};
    use serde_json::json;

    fn decls(yaml: &str) -> (Vec<ParamDecl>, Vec<Problem>) {
        let (n, p) = read(yaml, Format::Yaml);
        assert!(p.is_empty(), "{p:?}");
        let n = n.unwrap();
        let mut problems = Vec::new();
        let mut out = Vec::new();
        if let Kind::Map(entries) = &n.kind {
            for (k, pos, v) in entries {
                if let Some(d) = declare(k, *pos, v, &mut problems) {
                    out.push(d);
                }
            }
        }
        (out, problems)
    }

    fn one(yaml: &str, given: Option<Supplied>) -> Result<Value, Vec<String>> {
        let (d, p) = decls(yaml);
        assert!(p.is_empty(), "{p:?}");
        let supplied: Vec<(String, Supplied)> =
            given.into_iter().map(|g| ("P".to_string(), g)).collect();
        resolve(&d, &supplied)
            .map(|m| m["P"].clone())
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    fn text(s: &str) -> Option<Supplied> {
        Some(Supplied::Text(s.into()))
    }

    #[test]
    fn each_type_converts_from_text() {
        assert_eq!(one("P: {type: String}", text("a,b")).unwrap(), json!("a,b"));
        assert_eq!(one("P: {type: Integer}", text("42")).unwrap(), json!(42));
        assert!(
            one("P: {type: Integer}", text("4.2")).unwrap_err()[0]
                .contains("decimals are not allowed")
        );
        assert_eq!(
            one("P: {type: Boolean}", text("false")).unwrap(),
            json!(false)
        );
        assert!(
            one("P: {type: Boolean}", text("yes")).unwrap_err()[0].contains("only true or false")
        );
        assert_eq!(
            one("P: {type: StringList}", text("a, b")).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            one("P: {type: StringList}", text("[\"a\",\"b,c\"]")).unwrap(),
            json!(["a", "b,c"])
        );
        assert_eq!(
            one("P: {type: StringMap}", text("{\"k\":\"v\"}")).unwrap(),
            json!({"k": "v"})
        );
        assert!(one("P: {type: StringMap}", text("k=v")).is_err());
        assert_eq!(
            one("P: {type: MapList}", text("[{\"a\":1}]")).unwrap(),
            json!([{"a": 1}])
        );
        assert!(one("P: {type: MapList}", text("[1]")).is_err());
    }

    #[test]
    fn typed_and_api_forms_are_accepted() {
        let typed = |v: Value| Some(Supplied::Typed(v));
        assert_eq!(
            one("P: {type: Integer}", typed(json!(["7"]))).unwrap(),
            json!(7)
        );
        assert_eq!(
            one("P: {type: String}", typed(json!(["x"]))).unwrap(),
            json!("x")
        );
        assert_eq!(
            one("P: {type: StringList}", typed(json!(["x", "y"]))).unwrap(),
            json!(["x", "y"])
        );
        assert_eq!(
            one("P: {type: MapList}", typed(json!(["{\"a\":1}"]))).unwrap(),
            json!([{"a": 1}])
        );
        assert_eq!(
            one("P: {type: StringMap}", typed(json!({"a": 1}))).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            one("P: {type: Boolean}", typed(json!(true))).unwrap(),
            json!(true)
        );
        assert!(one("P: {type: Integer}", typed(json!(1.5))).is_err());
    }

    #[test]
    fn defaults_required_and_undeclared() {
        assert_eq!(
            one("P: {type: String, default: d}", None).unwrap(),
            json!("d")
        );
        assert!(one("P: {type: String}", None).unwrap_err()[0].contains("is required"));
        let (d, _) = decls("P: {type: String, default: x}");
        let e = resolve(&d, &[("Q".into(), Supplied::Text("1".into()))]).unwrap_err();
        assert!(
            e[0].to_string()
                .contains("parameter Q: is not declared by the document (declared: P)")
        );
        let (_, p) = decls(
            "P: {type: Integer, default: 1.5}\nQ: {type: Wat}\nR: {type: String, colour: red}\nS:\n",
        );
        let p: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("parameters.P.default: is not a valid Integer"));
        assert!(p[1].contains("unknown type \"Wat\""));
        assert!(p[2].contains("unknown key \"colour\""));
        assert!(p[3].contains("must be a map"));
    }

    #[test]
    fn rules_apply() {
        let y = "P: {type: String, allowedValues: [a, b]}";
        assert!(one(y, text("a")).is_ok());
        assert!(one(y, text("c")).unwrap_err()[0].contains("not one of the allowedValues: a, b"));
        let y = "P: {type: StringList, allowedValues: [a, b]}";
        assert!(one(y, text("a,b")).is_ok());
        assert!(one(y, text("a,z")).unwrap_err()[0].contains("\"z\" is not one"));
        let y = "P: {type: Integer, allowedValues: [1, 2]}";
        assert!(one(y, text("2")).is_ok());
        assert!(one(y, text("3")).is_err());
        let y = "P: {type: String, allowedPattern: '^i-[a-f0-9]{8}$'}";
        assert!(one(y, text("i-0123abcd")).is_ok());
        assert!(
            one(y, text("i-0123abcdX")).unwrap_err()[0]
                .contains("does not match the allowedPattern")
        );
        // Unanchored patterns are searched (ours).
        assert!(one("P: {type: String, allowedPattern: 'sg-'}", text("x-sg-1")).is_ok());
        // Java-style lookarounds work.
        let y = "P: {type: String, allowedPattern: '^(?!.*--)[a-z][a-z0-9-]{0,62}(?<!-)$'}";
        assert!(one(y, text("ok-name")).is_ok());
        assert!(one(y, text("bad--name")).is_err());
        assert!(one(y, text("bad-")).is_err());
        let y = "P: {type: StringList, minItems: 2, maxItems: 3}";
        assert!(one(y, text("a")).unwrap_err()[0].contains("fewer than minItems 2"));
        assert!(one(y, text("a,b,c,d")).unwrap_err()[0].contains("more than maxItems 3"));
        assert!(one(y, text("a,b")).is_ok());
        let y = "P: {type: String, minChars: 2, maxChars: 4}";
        assert!(one(y, text("a")).unwrap_err()[0].contains("fewer than minChars 2"));
        assert!(one(y, text("abcde")).unwrap_err()[0].contains("more than maxChars 4"));
        // A default must obey the rules too (when it is used).
        assert!(
            one("P: {type: String, default: c, allowedValues: [a]}", None).unwrap_err()[0]
                .contains("(its default)")
        );
    }

    #[test]
    fn ssm_defaults_wait_for_the_parameter_store() {
        let y = "P: {type: String, default: '{{ssm:/a/b}}'}";
        // Kept as written until the execution reads it; a value given wins.
        assert_eq!(one(y, None).unwrap(), json!("{{ssm:/a/b}}"));
        assert_eq!(one(y, text("given")).unwrap(), json!("given"));
        assert_eq!(parameter_store_name(&json!("{{ ssm:/a/b }}")), Some("/a/b"));
        for other in [
            "{{ssm-secure:/a}}",
            "x {{ssm:/a}}",
            "{{ssm:}}",
            "{{ssm:/a b}}",
            "/a",
        ] {
            assert_eq!(parameter_store_name(&json!(other)), None, "{other}");
        }
        let long = format!("{{{{ssm:/{}}}}}", "a".repeat(MAX_PARAMETER_NAME_BYTES));
        assert_eq!(parameter_store_name(&json!(long)), None);
        // Other secret stores are still refused, naming the parameter.
        let e = one("P: {type: String, default: '{{ssm-secure:/a}}'}", None).unwrap_err();
        assert!(e[0].contains("-p P=VALUE"), "{e:?}");
    }

    /// A runner whose only AWS answer is `answer` (or NoAccess), recording the calls.
    struct Store {
        answer: Option<Value>,
        calls: std::sync::Mutex<Vec<AwsCall>>,
    }

    impl StepRunner for Store {
        fn run<'a>(
            &'a self,
            _: &'a crate::step::ValidatedStep,
            _: RunContext<'a>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<crate::result::StepResult, crate::execute::ExecuteError>,
        > {
            unreachable!("no step runs while parameters are resolved")
        }

        fn call_aws<'a>(
            &'a self,
            call: &'a AwsCall,
            _: RunContext<'a>,
        ) -> futures::future::BoxFuture<'a, Result<Value, AwsCallError>> {
            self.calls.lock().unwrap().push(call.clone());
            let answer = self.answer.clone().ok_or(AwsCallError::NoAccess);
            Box::pin(async move { answer })
        }
    }

    fn from_store(yaml: &str, answer: Option<Value>) -> (Result<Value, String>, Vec<AwsCall>) {
        let (d, p) = decls(yaml);
        assert!(p.is_empty(), "{p:?}");
        let mut values = resolve(&d, &[]).unwrap();
        let store = Store {
            answer,
            calls: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cancel = CancellationToken::new();
        let r = rt.block_on(resolve_parameter_store(
            &d,
            &mut values,
            &store,
            "exec",
            &cancel,
        ));
        let calls = store.calls.into_inner().unwrap();
        (
            r.map(|()| values["P"].clone()).map_err(|e| e.to_string()),
            calls,
        )
    }

    #[test]
    fn ssm_defaults_are_read_through_get_parameter() {
        let answer = json!({"Parameter": {"Name": "/a/b", "Type": "String", "Value": "a, b"}});
        let (v, calls) = from_store(
            "P: {type: StringList, default: '{{ssm:/a/b}}'}",
            Some(answer.clone()),
        );
        assert_eq!(v.unwrap(), json!(["a", "b"]));
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].service.as_str(), calls[0].api.as_str()),
            ("ssm", "GetParameter")
        );
        assert_eq!(
            calls[0].parameters,
            json!({"Name": "/a/b"}).as_object().unwrap().clone()
        );
        // The value read obeys the parameter's rules, named.
        let (v, _) = from_store(
            "P: {type: String, default: '{{ssm:/a/b}}', allowedPattern: '^arn:'}",
            Some(answer),
        );
        let e = v.unwrap_err();
        assert!(
            e.starts_with("parameter P: the value of Parameter Store \"/a/b\" (its default) "),
            "{e}"
        );
        assert!(e.contains("does not match the allowedPattern"), "{e}");
        // No AWS access: a clear error naming the parameter and how to get access.
        let (v, _) = from_store("P: {type: String, default: '{{ssm:/a/b}}'}", None);
        let e = v.unwrap_err();
        assert!(e.starts_with("parameter P: its default {{ssm:/a/b}} reads Parameter Store, and ssm GetParameter \"/a/b\" failed: AWS access is off: run with --aws-endpoint URL"), "{e}");
        // An answer without a value.
        let (v, _) = from_store(
            "P: {type: String, default: '{{ssm:/a/b}}'}",
            Some(json!({})),
        );
        assert!(v.unwrap_err().contains("without a Parameter.Value string"));
        // A plain default makes no call.
        let (v, calls) = from_store("P: {type: String, default: x}", None);
        assert_eq!(v.unwrap(), json!("x"));
        assert!(calls.is_empty());
    }

    #[test]
    fn java_class_dashes_are_literal() {
        let re = compile_pattern(r"^[\w-_+=.@\/]*$").unwrap();
        assert!(re.is_match("a-b_c/d").unwrap());
        assert!(!re.is_match("a b").unwrap());
        let re =
            compile_pattern(r"^arn:aws[a-z0-9-]*:iam::\d{12}:role\/[\w-\/.@+=,]{1,1017}$").unwrap();
        assert!(re.is_match("arn:aws:iam::123456789012:role/a-b/c").unwrap());
        // ASCII \w as in Java, and large repetitions compile.
        let re = compile_pattern(r"^[A-Za-z\d][\w.-]{1,253}[A-Za-z\d]$").unwrap();
        assert!(re.is_match("my-bucket.name").unwrap());
        assert!(!re.is_match("bücket").unwrap());
    }

    const REDOS: &str = "^(?=(a|aa)*$)(a|aa)*c$";

    #[test]
    fn catastrophic_patterns_are_bounded_per_value_and_per_run() {
        let y = format!("P: {{type: StringList, allowedPattern: '{REDOS}'}}");
        let (d, p) = decls(&y);
        assert!(p.is_empty(), "{p:?}");
        // One value: the backtracking bound ends it, with the parameter and the rule named.
        let began = Instant::now();
        let e = one(&y, text(&"a".repeat(40))).unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert!(
            e[0].starts_with("line 1, column 1: parameter P: the allowedPattern"),
            "{e:?}"
        );
        assert!(
            e[0].contains("needs more than 100000 backtracking steps"),
            "{e:?}"
        );
        // A thousand values: the run's time budget ends them all.
        let many = vec![Value::String("a".repeat(40)); MAX_LIST_ITEMS];
        let began = Instant::now();
        let e = resolve(&d, &[("P".into(), Supplied::Typed(Value::Array(many)))]).unwrap_err();
        let took = began.elapsed();
        assert!(
            took < PATTERN_TIME_BUDGET + Duration::from_secs(2),
            "{took:?}"
        );
        let last = e.last().unwrap().to_string();
        assert!(
            last.contains("took more than 2 s in all") || e.len() == MAX_LIST_ITEMS,
            "{last}"
        );
        // A plain pattern is linear: a long value is no problem.
        let y = "P: {type: String, allowedPattern: '^(a|aa)*c$'}";
        let began = Instant::now();
        assert!(one(y, text(&"a".repeat(100_000))).is_err());
        assert!(began.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn values_lists_and_patterns_have_bounds() {
        let y = "P: {type: StringList}";
        let e = one(y, text(&vec!["a"; MAX_LIST_ITEMS + 1].join(","))).unwrap_err();
        assert!(
            e[0].contains("has 1001 items, more than scriptbox's maximum of 1000"),
            "{e:?}"
        );
        let e = one(
            y,
            Some(Supplied::Typed(json!(vec!["a"; MAX_LIST_ITEMS + 1]))),
        )
        .unwrap_err();
        assert!(
            e[0].contains("parameter P: has more than 1000 items"),
            "{e:?}"
        );
        assert!(one(y, text(&vec!["a"; MAX_LIST_ITEMS].join(","))).is_ok());
        let e = one("P: {type: String}", text(&"x".repeat(MAX_VALUE_BYTES + 1))).unwrap_err();
        assert!(
            e[0].contains("parameter P: is larger than 1048576 bytes"),
            "{e:?}"
        );
        let e = one(
            "P: {type: StringMap}",
            Some(Supplied::Typed(json!({"k": "x".repeat(MAX_VALUE_BYTES)}))),
        )
        .unwrap_err();
        assert!(e[0].contains("is larger than 1048576 bytes"), "{e:?}");
        let (_, p) = decls(&format!(
            "P: {{type: String, allowedPattern: '{}'}}",
            "a".repeat(MAX_PATTERN_CHARS + 1)
        ));
        assert!(
            p[0].to_string()
                .contains("parameters.P.allowedPattern: is longer than 1024 characters"),
            "{p:?}"
        );
    }
}
