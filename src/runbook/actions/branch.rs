//! `aws:branch`: `Choices` evaluated in order, the first true one names the next step;
//! otherwise `Default`; with neither, the next step of the document (as AWS documents).

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::{StepStatus, aws_plain_failure};
use crate::runbook::Problem;
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate::{Scope, SubstituteError, as_text};
use crate::runbook::selector::short;
use crate::runbook::yaml::{Kind, Node, Pos};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Exact string equality.
    StringEquals,
    /// Case-insensitive string equality.
    EqualsIgnoreCase,
    /// String prefix.
    StartsWith,
    /// String suffix.
    EndsWith,
    /// Substring of a string, or an item of a StringList.
    Contains,
    /// Numbers equal.
    NumericEquals,
    /// Variable > operand.
    NumericGreater,
    /// Variable < operand.
    NumericLesser,
    /// Variable ≥ operand.
    NumericGreaterOrEquals,
    /// Variable ≤ operand.
    NumericLesserOrEquals,
    /// Booleans equal.
    BooleanEquals,
}

const OPS: [(&str, Op); 11] = [
    ("StringEquals", Op::StringEquals),
    ("EqualsIgnoreCase", Op::EqualsIgnoreCase),
    ("StartsWith", Op::StartsWith),
    ("EndsWith", Op::EndsWith),
    ("Contains", Op::Contains),
    ("NumericEquals", Op::NumericEquals),
    ("NumericGreater", Op::NumericGreater),
    ("NumericLesser", Op::NumericLesser),
    ("NumericGreaterOrEquals", Op::NumericGreaterOrEquals),
    ("NumericLesserOrEquals", Op::NumericLesserOrEquals),
    ("BooleanEquals", Op::BooleanEquals),
];

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `Variable` compared with an operand.
    Compare {
        /// The `Variable` (usually a `{{ }}` reference).
        variable: Value,
        /// The operator.
        op: Op,
        /// The operand.
        operand: Value,
    },
    /// Every condition true.
    And(Vec<Cond>),
    /// Any condition true.
    Or(Vec<Cond>),
    /// The condition false.
    Not(Box<Cond>),
}

/// One choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The step to go to when the condition holds.
    pub next_step: String,
    /// Where `NextStep` is written.
    pub pos: Pos,
    /// The condition.
    pub cond: Cond,
}

/// The inputs of a branch step.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchSpec {
    /// The choices, in order.
    pub choices: Vec<Choice>,
    /// `Default`, and where it is written.
    pub default: Option<(String, Pos)>,
}

impl BranchSpec {
    /// Every `{{ }}`-bearing value of the spec (variables and operands), for reference checks.
    pub fn values(&self) -> Vec<&Value> {
        fn walk<'a>(c: &'a Cond, out: &mut Vec<&'a Value>) {
            match c {
                Cond::Compare {
                    variable, operand, ..
                } => {
                    out.push(variable);
                    out.push(operand);
                }
                Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| walk(c, out)),
                Cond::Not(c) => walk(c, out),
            }
        }
        let mut out = Vec::new();
        for c in &self.choices {
            walk(&c.cond, &mut out);
        }
        out
    }

    /// Every step named (choices' NextStep and Default), with positions.
    pub fn targets(&self) -> Vec<(&str, Pos)> {
        let mut t: Vec<(&str, Pos)> = self
            .choices
            .iter()
            .map(|c| (c.next_step.as_str(), c.pos))
            .collect();
        if let Some((d, pos)) = &self.default {
            t.push((d, *pos));
        }
        t
    }
}

/// Reads a branch step's `inputs`.
pub fn parse(inputs: &Node, ctx: &str, problems: &mut Vec<Problem>) -> Option<BranchSpec> {
    let before = problems.len();
    let Kind::Map(entries) = &inputs.kind else {
        problems.push(Problem::invalid(
            inputs.pos,
            format!("{ctx}: inputs"),
            "must be a map",
        ));
        return None;
    };
    for (k, pos, _) in entries {
        if !Branch::INPUT_KEYS.contains(&k.as_str()) {
            problems.push(Problem::invalid(
                *pos,
                format!("{ctx}: inputs"),
                format!(
                    "unknown input {k:?} of {} (known: {})",
                    Branch::ACTION.name(),
                    Branch::INPUT_KEYS.join(", ")
                ),
            ));
        }
    }
    let mut choices = Vec::new();
    match inputs.get("Choices").map(|n| (n, &n.kind)) {
        Some((_, Kind::Seq(items))) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let cctx = format!("{ctx}: inputs.Choices[{i}]");
                let next = match item.get("NextStep") {
                    Some(n) => match n.as_str() {
                        Some(s) => Some((s.to_string(), n.pos)),
                        None => {
                            problems.push(Problem::invalid(
                                n.pos,
                                &cctx,
                                "NextStep must be a step name",
                            ));
                            None
                        }
                    },
                    None => {
                        problems.push(Problem::invalid(item.pos, &cctx, "NextStep is required"));
                        None
                    }
                };
                let cond = condition(item, &cctx, true, problems);
                if let (Some((next_step, pos)), Some(cond)) = (next, cond) {
                    choices.push(Choice {
                        next_step,
                        pos,
                        cond,
                    });
                }
            }
        }
        Some((n, _)) => problems.push(Problem::invalid(
            n.pos,
            format!("{ctx}: inputs.Choices"),
            "must be a non-empty list of choices",
        )),
        None => problems.push(Problem::invalid(
            inputs.pos,
            format!("{ctx}: inputs"),
            "Choices is required",
        )),
    }
    let default = match inputs.get("Default") {
        None => None,
        Some(n) => match n.as_str() {
            Some(s) => Some((s.to_string(), n.pos)),
            None => {
                problems.push(Problem::invalid(
                    n.pos,
                    format!("{ctx}: inputs.Default"),
                    "must be a step name",
                ));
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(BranchSpec { choices, default })
}

/// Reads one condition (`top`: a choice, which also holds `NextStep`); aws:loop's `LoopCondition`
/// is one too.
pub fn condition(node: &Node, ctx: &str, top: bool, problems: &mut Vec<Problem>) -> Option<Cond> {
    let Kind::Map(entries) = &node.kind else {
        problems.push(Problem::invalid(node.pos, ctx, "a condition must be a map"));
        return None;
    };
    let mut ops = Vec::new();
    let mut compound = Vec::new();
    for (k, pos, v) in entries {
        match k.as_str() {
            "NextStep" if top => {}
            "Variable" => {}
            "And" | "Or" | "Not" => compound.push((k.as_str(), v)),
            other => match OPS.iter().find(|(name, _)| *name == other) {
                Some((_, op)) => ops.push((*op, v)),
                None => problems.push(Problem::invalid(
                    *pos,
                    ctx,
                    format!(
                        "unknown key {other:?}; operators: {}, And, Or, Not",
                        OPS.map(|(n, _)| n).join(", ")
                    ),
                )),
            },
        }
    }
    let variable = node.get("Variable");
    match (ops.as_slice(), compound.as_slice()) {
        ([(op, operand)], []) => {
            let Some(variable) = variable else {
                problems.push(Problem::invalid(
                    node.pos,
                    ctx,
                    "Variable is required with an operator",
                ));
                return None;
            };
            Some(Cond::Compare {
                variable: variable.to_json(),
                op: *op,
                operand: operand.to_json(),
            })
        }
        ([], [(kind, v)]) => {
            if variable.is_some() {
                problems.push(Problem::invalid(
                    node.pos,
                    ctx,
                    format!("Variable cannot stand beside {kind}"),
                ));
            }
            match (*kind, &v.kind) {
                ("Not", _) => condition(v, &format!("{ctx}.Not"), false, problems)
                    .map(|c| Cond::Not(Box::new(c))),
                (_, Kind::Seq(items)) if !items.is_empty() => {
                    let mut cs = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        cs.push(condition(
                            item,
                            &format!("{ctx}.{kind}[{i}]"),
                            false,
                            problems,
                        )?);
                    }
                    Some(if *kind == "And" {
                        Cond::And(cs)
                    } else {
                        Cond::Or(cs)
                    })
                }
                _ => {
                    problems.push(Problem::invalid(
                        v.pos,
                        format!("{ctx}.{kind}"),
                        "must be a non-empty list of conditions",
                    ));
                    None
                }
            }
        }
        _ => {
            problems.push(Problem::invalid(
                node.pos,
                ctx,
                "a condition needs exactly one operator (with Variable), or one of And / Or / Not",
            ));
            None
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// Why a branch's choice cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BranchError {
    /// A `{{ }}` of the choice cannot be substituted.
    #[error(transparent)]
    Substitute(#[from] SubstituteError),
    /// A numeric operator on something other than numbers.
    #[error("{op:?} compares numbers; Variable is {variable} and the operand {operand}")]
    NotNumbers {
        /// The operator.
        op: Op,
        /// The Variable, shortened.
        variable: String,
        /// The operand, shortened.
        operand: String,
    },
    /// BooleanEquals on something other than booleans.
    #[error("BooleanEquals compares booleans; Variable is {variable} and the operand {operand}")]
    NotBooleans {
        /// The Variable, shortened.
        variable: String,
        /// The operand, shortened.
        operand: String,
    },
    /// Which choice could not be evaluated.
    #[error("Choices[{index}]: {source}")]
    Choice {
        /// Its index.
        index: usize,
        /// Why.
        source: Box<BranchError>,
    },
}

/// Evaluates one condition.
pub fn eval(c: &Cond, scope: &Scope) -> Result<bool, BranchError> {
    match c {
        Cond::And(cs) => {
            for c in cs {
                if !eval(c, scope)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Cond::Or(cs) => {
            for c in cs {
                if eval(c, scope)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Cond::Not(c) => Ok(!eval(c, scope)?),
        Cond::Compare {
            variable,
            op,
            operand,
        } => {
            let var = scope.substitute(variable)?;
            let operand = scope.substitute(operand)?;
            let numbers = || -> Result<(f64, f64), BranchError> {
                match (number(&var), number(&operand)) {
                    (Some(a), Some(b)) => Ok((a, b)),
                    _ => Err(BranchError::NotNumbers {
                        op: *op,
                        variable: short(&var),
                        operand: short(&operand),
                    }),
                }
            };
            let (a, b) = (as_text(&var), as_text(&operand));
            Ok(match op {
                Op::StringEquals => a == b,
                Op::EqualsIgnoreCase => a.to_lowercase() == b.to_lowercase(),
                Op::StartsWith => a.starts_with(&b),
                Op::EndsWith => a.ends_with(&b),
                Op::Contains => match &var {
                    Value::Array(items) => items.iter().any(|i| as_text(i) == b),
                    _ => a.contains(&b),
                },
                Op::NumericEquals => {
                    let (x, y) = numbers()?;
                    x == y
                }
                Op::NumericGreater => {
                    let (x, y) = numbers()?;
                    x > y
                }
                Op::NumericLesser => {
                    let (x, y) = numbers()?;
                    x < y
                }
                Op::NumericGreaterOrEquals => {
                    let (x, y) = numbers()?;
                    x >= y
                }
                Op::NumericLesserOrEquals => {
                    let (x, y) = numbers()?;
                    x <= y
                }
                Op::BooleanEquals => match (boolean(&var), boolean(&operand)) {
                    (Some(x), Some(y)) => x == y,
                    _ => {
                        return Err(BranchError::NotBooleans {
                            variable: short(&var),
                            operand: short(&operand),
                        });
                    }
                },
            })
        }
    }
}

/// The step a branch goes to: the first true choice's, else `Default`, else `None` (the next
/// step of the document).
pub fn choose(spec: &BranchSpec, scope: &Scope) -> Result<Option<String>, BranchError> {
    for (i, c) in spec.choices.iter().enumerate() {
        let holds = eval(&c.cond, scope).map_err(|e| BranchError::Choice {
            index: i,
            source: Box::new(e),
        })?;
        if holds {
            return Ok(Some(c.next_step.clone()));
        }
    }
    Ok(spec.default.as_ref().map(|(d, _)| d.clone()))
}

/// `aws:branch`.
pub(crate) struct Branch;

impl ActionSpec for Branch {
    const ACTION: Action = Action::Branch;
    const INPUT_KEYS: &'static [&'static str] = &["Choices", "Default"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = &'s BranchSpec;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        step.inputs_node
            .and_then(|n| parse(n, step.ctx, cx.problems))
            .map(StepKind::Branch)
    }

    /// Every choice's `NextStep` and the `Default`.
    fn targets(step: &StepDecl) -> Vec<(String, Pos)> {
        match &step.kind {
            StepKind::Branch(b) => b
                .targets()
                .into_iter()
                .map(|(t, p)| (t.to_string(), p))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn prepare<'s>(
        _cx: &RunCx<'_>,
        step: &'s StepDecl,
        _inputs: &Map<String, Value>,
    ) -> Result<&'s BranchSpec, StepFailure> {
        match &step.kind {
            StepKind::Branch(spec) => Ok(spec),
            _ => Err(StepFailure::new(
                "InvalidChoice",
                "the step was not read as an aws:branch step",
            )),
        }
    }

    /// Evaluates the choices against the scope.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        _step: &'s StepDecl,
        spec: &'a &'s BranchSpec,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match choose(spec, cx.scope) {
                Ok(target) => {
                    let mut a = Attempt::ended(StepStatus::Success, None);
                    a.next = target;
                    a
                }
                Err(e) => Attempt::ended(
                    StepStatus::Failed,
                    Some(aws_plain_failure("InvalidChoice", &e.to_string())),
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::yaml::{Format, read};
    use serde_json::json;

    fn spec(yaml: &str) -> BranchSpec {
        let (n, p) = read(yaml, Format::Yaml);
        assert!(p.is_empty());
        let mut problems = Vec::new();
        let s = parse(&n.unwrap(), "b", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        s.unwrap()
    }

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.params.insert("OS".into(), json!("Windows"));
        s.params.insert("N".into(), json!(5));
        s.params.insert("Flag".into(), json!(true));
        s.params.insert("List".into(), json!(["a", "b"]));
        s.params.insert("Text".into(), json!("10"));
        s
    }

    fn holds(cond: &str) -> Result<bool, String> {
        let s = spec(&format!("Choices:\n- NextStep: x\n  {cond}\n"));
        eval(&s.choices[0].cond, &scope()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_operator() {
        assert!(holds("Variable: '{{OS}}'\n  StringEquals: Windows").unwrap());
        assert!(!holds("Variable: '{{OS}}'\n  StringEquals: windows").unwrap());
        assert!(holds("Variable: '{{OS}}'\n  EqualsIgnoreCase: windows").unwrap());
        assert!(holds("Variable: '{{OS}}'\n  StartsWith: Win").unwrap());
        assert!(holds("Variable: '{{OS}}'\n  EndsWith: dows").unwrap());
        assert!(holds("Variable: '{{OS}}'\n  Contains: ndo").unwrap());
        assert!(holds("Variable: '{{List}}'\n  Contains: b").unwrap());
        assert!(!holds("Variable: '{{List}}'\n  Contains: c").unwrap());
        assert!(holds("Variable: '{{N}}'\n  NumericEquals: 5").unwrap());
        assert!(holds("Variable: '{{N}}'\n  NumericGreater: 4").unwrap());
        assert!(holds("Variable: '{{N}}'\n  NumericLesser: 6").unwrap());
        assert!(holds("Variable: '{{N}}'\n  NumericGreaterOrEquals: 5").unwrap());
        assert!(holds("Variable: '{{N}}'\n  NumericLesserOrEquals: 5").unwrap());
        assert!(holds("Variable: '{{Text}}'\n  NumericGreater: 9").unwrap());
        assert!(holds("Variable: '{{Flag}}'\n  BooleanEquals: true").unwrap());
        assert!(
            holds("Variable: '{{OS}}'\n  NumericEquals: 1")
                .unwrap_err()
                .to_string()
                .contains("compares numbers")
        );
        assert!(holds("Variable: '{{OS}}'\n  BooleanEquals: true").is_err());
    }

    #[test]
    fn and_or_not() {
        let y = "And:\n  - Variable: '{{N}}'\n    NumericGreater: 1\n  - Not:\n      Variable: '{{OS}}'\n      StringEquals: Linux";
        assert!(holds(y).unwrap());
        let y = "Or:\n  - Variable: '{{N}}'\n    NumericGreater: 10\n  - Variable: '{{Flag}}'\n    BooleanEquals: false";
        assert!(!holds(y).unwrap());
    }

    #[test]
    fn choose_default_and_fall_through() {
        let s = spec(
            "Choices:\n- NextStep: win\n  Variable: '{{OS}}'\n  StringEquals: Linux\nDefault: other\n",
        );
        assert_eq!(choose(&s, &scope()).unwrap(), Some("other".into()));
        let s = spec(
            "Choices:\n- NextStep: lin\n  Variable: '{{OS}}'\n  StringEquals: Linux\n- NextStep: win\n  Variable: '{{OS}}'\n  StringEquals: Windows\n",
        );
        assert_eq!(choose(&s, &scope()).unwrap(), Some("win".into()));
        let s = spec("Choices:\n- NextStep: lin\n  Variable: '{{OS}}'\n  StringEquals: Linux\n");
        assert_eq!(choose(&s, &scope()).unwrap(), None);
    }

    #[test]
    fn malformed_choices_are_reported() {
        let (n, _) = read(
            "Choices:\n- Variable: x\n  StringEquals: a\n  NumericEquals: 1\n- NextStep: y\n  Wat: 1\nColour: red\n",
            Format::Yaml,
        );
        let mut problems = Vec::new();
        assert!(parse(&n.unwrap(), "b", &mut problems).is_none());
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains("unknown input \"Colour\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("NextStep is required")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("exactly one operator")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("unknown key \"Wat\"")),
            "{text:?}"
        );
    }
}
