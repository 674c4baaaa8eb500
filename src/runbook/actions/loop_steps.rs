//! `aws:loop`: runs its inner `Steps` once per item of `Iterators` (for each), or again while
//! `LoopCondition` holds after them (do while), at most `MaxIterations` times.
//!
//! This module reads the loop at load ([`LoopSpec`]; the document reads `Steps` with the same
//! step checker as `mainSteps`) and plans its iterations ([`plan`], [`again`],
//! [`iteration_outputs`]); the executor runs the inner steps as steps of the execution (their
//! retries, onFailure, records, events, cancellation, the run deadline and the step-execution
//! bound are the ones of every step).
//!
//! As AWS documents: at most 100 iterations and 100 iterators; `IteratorDataType` Boolean,
//! Integer, String (default) or StringMap; the condition is checked after the inner steps;
//! `onCancel` is refused on the loop itself; inner steps read `{{ loop.CurrentIteratorValue }}`
//! and `{{ loop.CurrentIteration }}` (from 1). Decisions where AWS is silent **(ours)**:
//! - `MaxIterations` defaults to 100 (the documented maximum).
//! - `CurrentIteratorValue` keeps the `IteratorDataType` (an Integer iterator is a number, a
//!   StringMap a map), so a map can be passed whole into an InputPayload.
//! - Inner steps are recorded under their own names (names are unique in the whole document),
//!   in the order they end; the loop's record comes after its inner steps'.
//! - Inside the loop, `nextStep` and aws:branch go to inner steps of the same loop; `isEnd` (or
//!   the last inner step) ends the iteration. An inner step's `onFailure` is the loop's: `Abort`
//!   ends the loop `Failed` and the execution; `Continue` goes on in the iteration; `step:X`
//!   goes to X, an inner step (the iteration goes on) or a main step (the loop ends `Failed` and
//!   the execution goes on at X). The loop's own `onFailure` applies when the loop itself fails
//!   (its Iterators or LoopCondition cannot be evaluated).
//! - Reaching `MaxIterations` while the condition still holds ends the loop `Success` (its
//!   record's log says so). A loop over no iterators runs no iteration (`CurrentIteration` 0).
//! - After the loop, later steps read the last iteration's outputs of the inner steps and the
//!   loop's `CurrentIteration` / `CurrentIteratorValue`.
//! - A loop inside a loop is refused at load; `timeoutSeconds` on the loop bounds nothing (each
//!   inner step has its own, and the run deadline bounds the whole).

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::branch::{self, BranchError, Cond};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate::{self, Scope};
use crate::runbook::parameters::{self, CoerceError};
use crate::runbook::selector::{ValueType, short};
use crate::runbook::yaml::{Kind, Node};

/// The most iterations of one loop, and the largest `MaxIterations` (AWS's limit).
pub const MAX_ITERATIONS: u32 = 100;

/// The most items `Iterators` may hold (AWS's limit).
pub const MAX_ITERATORS: usize = 100;

/// The most inner steps one loop may hold **(ours: AWS documents no limit)**.
pub const MAX_INNER_STEPS: usize = 100;

/// The output holding the 1-based number of the running (after the loop: the last) iteration.
pub const CURRENT_ITERATION: &str = "CurrentIteration";

/// The output holding the running (after the loop: the last) iterator's value.
pub const CURRENT_ITERATOR_VALUE: &str = "CurrentIteratorValue";

/// What a loop step's check read: the inner steps (filled by the document) and how it repeats.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// The inner steps, read by the document's step checker.
    pub steps: Vec<StepDecl>,
    /// The type of `Iterators`' items (`IteratorDataType`, String by default).
    pub data_type: ValueType,
    /// `LoopCondition`, for a do-while loop; `None` for a for-each loop (`Iterators`).
    pub condition: Option<Cond>,
}

impl LoopSpec {
    /// Every `{{ }}`-bearing value of `LoopCondition` (for the document's reference check).
    pub fn condition_values(&self) -> Vec<&Value> {
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
        if let Some(c) = &self.condition {
            walk(c, &mut out);
        }
        out
    }
}

/// How a loop repeats, once its inputs are resolved at its start.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The iterators, typed; `None` for a do-while loop.
    pub items: Option<Vec<Value>>,
    /// `MaxIterations` (default [`MAX_ITERATIONS`]).
    pub max: u32,
}

/// Why a loop cannot start or go on; `Display` is what the loop's record says.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoopError {
    /// `Iterators` did not resolve to a list.
    #[error("Iterators must be a list (a StringList), not {0}")]
    NotAList(&'static str),
    /// More than [`MAX_ITERATORS`] iterators.
    #[error("Iterators holds {0} items; at most {max} are allowed", max = MAX_ITERATORS)]
    TooManyIterators(usize),
    /// An iterator is not of `IteratorDataType`.
    #[error("Iterators[{index}] is not a valid {ty}: {source}")]
    Iterator {
        /// Its index.
        index: usize,
        /// `IteratorDataType`.
        ty: ValueType,
        /// Why.
        source: CoerceError,
    },
    /// `MaxIterations` is not a whole number from 1 to 100.
    #[error("MaxIterations must be a whole number from 1 to {max}, not {0}", max = MAX_ITERATIONS)]
    MaxIterations(String),
    /// `LoopCondition` cannot be evaluated.
    #[error("LoopCondition: {0}")]
    Condition(#[from] BranchError),
}

/// The `IteratorDataType`s AWS allows.
const DATA_TYPES: [(&str, ValueType); 4] = [
    ("Boolean", ValueType::Boolean),
    ("Integer", ValueType::Integer),
    ("String", ValueType::String),
    ("StringMap", ValueType::StringMap),
];

/// `MaxIterations` as a number, if it is a whole number from 1 to 100.
fn max_iterations(v: &Value) -> Option<u32> {
    let n = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_ITERATIONS).contains(n))
}

/// The iterators, typed by `ty` (items of AWS's API form, text, convert as parameters do).
fn typed_iterators(v: &Value, ty: ValueType) -> Result<Vec<Value>, LoopError> {
    let Value::Array(items) = v else {
        return Err(LoopError::NotAList(crate::step::json_type_name(v)));
    };
    if items.len() > MAX_ITERATORS {
        return Err(LoopError::TooManyIterators(items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            parameters::coerce(ty, item).map_err(|source| LoopError::Iterator { index, ty, source })
        })
        .collect()
}

/// The plan of a loop from its resolved inputs (`Iterators`, `MaxIterations`).
pub fn plan(spec: &LoopSpec, inputs: &Map<String, Value>) -> Result<Plan, LoopError> {
    let max = match inputs.get("MaxIterations") {
        None => MAX_ITERATIONS,
        Some(v) => max_iterations(v).ok_or_else(|| LoopError::MaxIterations(short(v)))?,
    };
    let items = match (&spec.condition, inputs.get("Iterators")) {
        (None, Some(v)) => Some(typed_iterators(v, spec.data_type)?),
        (None, None) => Some(Vec::new()),
        (Some(_), _) => None,
    };
    Ok(Plan { items, max })
}

/// Whether the loop runs another iteration after `done` of them: a for-each loop while
/// iterators remain, a do-while loop first always and then while its condition holds; never
/// past `MaxIterations`.
pub fn again(spec: &LoopSpec, plan: &Plan, done: u32, scope: &Scope) -> Result<bool, LoopError> {
    if done >= plan.max {
        return Ok(false);
    }
    match (&plan.items, &spec.condition) {
        (Some(items), _) => Ok(usize::try_from(done).is_ok_and(|d| d < items.len())),
        (None, Some(_)) if done == 0 => Ok(true),
        (None, Some(c)) => Ok(branch::eval(c, scope)?),
        (None, None) => Ok(false),
    }
}

/// The loop's outputs during (and after) iteration `n` (1-based; 0 when none ran).
pub fn iteration_outputs(spec: &LoopSpec, plan: &Plan, n: u32) -> Vec<(String, ValueType, Value)> {
    let mut out = vec![(
        CURRENT_ITERATION.to_string(),
        ValueType::Integer,
        Value::from(n),
    )];
    let current = n
        .checked_sub(1)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| plan.items.as_ref()?.get(i));
    if let Some(v) = current {
        out.push((
            CURRENT_ITERATOR_VALUE.to_string(),
            spec.data_type,
            v.clone(),
        ));
    }
    out
}

/// `aws:loop`.
pub(crate) struct Loop;

impl ActionSpec for Loop {
    const ACTION: Action = Action::Loop;
    const INPUT_KEYS: &'static [&'static str] = &[
        "Iterators",
        "IteratorDataType",
        "LoopCondition",
        "MaxIterations",
        "Steps",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[CURRENT_ITERATION, CURRENT_ITERATOR_VALUE];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = ();

    /// `Steps` a non-empty list (the document reads them); `Iterators` or `LoopCondition`, not
    /// both; `IteratorDataType` one of AWS's four; `MaxIterations` from 1 to 100; no `onCancel`.
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
                    "{} does not take onCancel (AWS refuses it); give onCancel to the steps inside the loop",
                    Self::ACTION.name()
                ),
            );
        }
        match node.and_then(|n| n.get("Steps")).map(|n| (n, &n.kind)) {
            Some((_, Kind::Seq(items))) if !items.is_empty() && items.len() <= MAX_INNER_STEPS => {}
            Some((n, _)) => cx.invalid(
                n.pos,
                format!("{ctx}: inputs.Steps"),
                format!("must be a list of 1 to {MAX_INNER_STEPS} steps"),
            ),
            None => cx.invalid(pos("Steps"), format!("{ctx}: inputs"), "Steps is required"),
        }
        let data_type = data_type(cx, step);
        let condition = match (
            inputs.get("Iterators"),
            node.and_then(|n| n.get("LoopCondition")),
        ) {
            (Some(_), Some(_)) => {
                cx.invalid(
                    pos("LoopCondition"),
                    format!("{ctx}: inputs"),
                    "give Iterators or LoopCondition, not both",
                );
                None
            }
            (None, None) => {
                cx.invalid(
                    pos("Steps"),
                    format!("{ctx}: inputs"),
                    "Iterators (for each) or LoopCondition (do while) is required",
                );
                None
            }
            (Some(v), None) => {
                check_iterators(cx, step, v, data_type);
                None
            }
            (None, Some(c)) => {
                if inputs.contains_key("IteratorDataType") {
                    cx.invalid(
                        pos("IteratorDataType"),
                        format!("{ctx}: inputs.IteratorDataType"),
                        "goes with Iterators, not with LoopCondition",
                    );
                }
                branch::condition(
                    c,
                    &format!("{ctx}: inputs.LoopCondition"),
                    false,
                    cx.problems,
                )
            }
        };
        if let Some(v) = inputs.get("MaxIterations") {
            let known_later = v.is_string() && interpolate::has_refs(v);
            if !known_later && max_iterations(v).is_none() {
                cx.invalid(
                    pos("MaxIterations"),
                    format!("{ctx}: inputs.MaxIterations"),
                    format!(
                        "must be a whole number from 1 to {MAX_ITERATIONS}, not {}",
                        short(v)
                    ),
                );
            }
        }
        Some(StepKind::Loop(Box::new(LoopSpec {
            steps: Vec::new(),
            data_type,
            condition,
        })))
    }

    /// Never reached: the executor runs a loop's inner steps itself (a loop inside a loop is
    /// refused at load).
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        _inputs: &Map<String, Value>,
    ) -> Result<(), StepFailure> {
        Err(StepFailure::new(
            "InvalidInput",
            format!(
                "a {} step runs only among the runbook's mainSteps, not inside another loop",
                Self::ACTION.name()
            ),
        ))
    }

    fn attempt<'a, 's: 'a>(
        _cx: &'a mut RunCx<'_>,
        _step: &'s StepDecl,
        _ready: &'a (),
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async { Attempt::ended(crate::result::StepStatus::Failed, None) })
    }
}

/// `IteratorDataType` (String when absent or wrong; a wrong one is reported).
fn data_type(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> ValueType {
    let Some(v) = step.inputs.get("IteratorDataType") else {
        return ValueType::String;
    };
    let found = v
        .as_str()
        .and_then(|s| DATA_TYPES.iter().find(|(n, _)| *n == s));
    match found {
        Some((_, ty)) => *ty,
        None => {
            let pos = step
                .inputs_node
                .and_then(|n| n.get("IteratorDataType"))
                .map(|n| n.pos)
                .unwrap_or(step.node.pos);
            cx.invalid(
                pos,
                format!("{}: inputs.IteratorDataType", step.ctx),
                format!(
                    "{} is not one of {}",
                    short(v),
                    DATA_TYPES.map(|(n, _)| n).join(", ")
                ),
            );
            ValueType::String
        }
    }
}

/// `Iterators` as written: a list (each item of the data type, at most 100), or a `{{ }}`
/// reference known at run time.
fn check_iterators(cx: &mut CheckCx<'_>, step: &StepHead<'_>, v: &Value, ty: ValueType) {
    let pos = step
        .inputs_node
        .and_then(|n| n.get("Iterators"))
        .map(|n| n.pos)
        .unwrap_or(step.node.pos);
    let ctx = format!("{}: inputs.Iterators", step.ctx);
    match v {
        Value::String(_) if interpolate::has_refs(v) => {}
        // Items with `{{ }}` are typed at run time.
        Value::Array(items) if items.iter().any(interpolate::has_refs) => {
            if items.len() > MAX_ITERATORS {
                cx.invalid(
                    pos,
                    ctx,
                    LoopError::TooManyIterators(items.len()).to_string(),
                );
            }
        }
        other => {
            if let Err(e) = typed_iterators(other, ty) {
                cx.invalid(pos, ctx, e.to_string());
            }
        }
    }
}

/// Whether a step node's `action` is aws:loop (the document reads such a step's `Steps`).
pub fn is_loop(node: &Node) -> bool {
    node.get("action")
        .and_then(Node::as_str)
        .and_then(Action::from_name)
        == Some(Action::Loop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(condition: Option<Cond>, data_type: ValueType) -> LoopSpec {
        LoopSpec {
            steps: Vec::new(),
            data_type,
            condition,
        }
    }

    fn inputs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn iterators_are_typed_and_bounded() {
        let s = spec(None, ValueType::Integer);
        let p = plan(&s, &inputs(json!({"Iterators": ["1", 2]}))).unwrap();
        assert_eq!(p.items, Some(vec![json!(1), json!(2)]));
        assert_eq!(p.max, MAX_ITERATIONS);
        let e = plan(&s, &inputs(json!({"Iterators": ["x"]}))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Iterators[0] is not a valid Integer"),
            "{e}"
        );
        let e = plan(&s, &inputs(json!({"Iterators": "a"}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Iterators must be a list (a StringList), not a string"
        );
        let many = vec![json!("1"); 101];
        let e = plan(&s, &inputs(json!({ "Iterators": many }))).unwrap_err();
        assert_eq!(e, LoopError::TooManyIterators(101));
        let maps = spec(None, ValueType::StringMap);
        let p = plan(
            &maps,
            &inputs(json!({"Iterators": ["{\"a\":\"b\"}", {"c": "d"}]})),
        )
        .unwrap();
        assert_eq!(p.items, Some(vec![json!({"a": "b"}), json!({"c": "d"})]));
        let bools = spec(None, ValueType::Boolean);
        let p = plan(&bools, &inputs(json!({"Iterators": ["true", false]}))).unwrap();
        assert_eq!(p.items, Some(vec![json!(true), json!(false)]));
    }

    #[test]
    fn max_iterations_is_from_one_to_a_hundred() {
        let s = spec(None, ValueType::String);
        for (v, want) in [(json!(3), Some(3)), (json!("100"), Some(100))] {
            let p = plan(&s, &inputs(json!({"Iterators": [], "MaxIterations": v}))).unwrap();
            assert_eq!(Some(p.max), want);
        }
        for v in [json!(0), json!(101), json!(1.5), json!("x"), json!(true)] {
            let e = plan(&s, &inputs(json!({"Iterators": [], "MaxIterations": v}))).unwrap_err();
            assert!(matches!(e, LoopError::MaxIterations(_)), "{e}");
        }
    }

    #[test]
    fn for_each_stops_at_the_end_or_at_max() {
        let s = spec(None, ValueType::String);
        let p = Plan {
            items: Some(vec![json!("a"), json!("b"), json!("c")]),
            max: 2,
        };
        let scope = Scope::default();
        assert!(again(&s, &p, 0, &scope).unwrap());
        assert!(again(&s, &p, 1, &scope).unwrap());
        assert!(!again(&s, &p, 2, &scope).unwrap());
        let none = Plan {
            items: Some(vec![]),
            max: 100,
        };
        assert!(!again(&s, &none, 0, &scope).unwrap());
        let outs = iteration_outputs(&s, &p, 2);
        assert_eq!(
            outs,
            vec![
                (CURRENT_ITERATION.into(), ValueType::Integer, json!(2)),
                (CURRENT_ITERATOR_VALUE.into(), ValueType::String, json!("b")),
            ]
        );
        assert_eq!(iteration_outputs(&s, &none, 0).len(), 1);
    }

    #[test]
    fn do_while_runs_once_then_while_the_condition_holds() {
        let cond = Cond::Compare {
            variable: json!("{{ check.Retry }}"),
            op: branch::Op::BooleanEquals,
            operand: json!(true),
        };
        let s = spec(Some(cond), ValueType::String);
        let p = Plan {
            items: None,
            max: 3,
        };
        let mut scope = Scope::default();
        // The first iteration runs before the condition is known.
        assert!(again(&s, &p, 0, &scope).unwrap());
        let e = again(&s, &p, 1, &scope).unwrap_err();
        assert!(e.to_string().starts_with("LoopCondition: "), "{e}");
        let mut out = Map::new();
        out.insert("Retry".into(), json!(true));
        scope.outputs.insert("check".into(), out.clone());
        assert!(again(&s, &p, 1, &scope).unwrap());
        assert!(
            !again(&s, &p, 3, &scope).unwrap(),
            "MaxIterations bounds it"
        );
        out.insert("Retry".into(), json!(false));
        scope.outputs.insert("check".into(), out);
        assert!(!again(&s, &p, 1, &scope).unwrap());
        assert_eq!(iteration_outputs(&s, &p, 2).len(), 1, "no iterator value");
        assert_eq!(s.condition_values().len(), 2);
    }
}
