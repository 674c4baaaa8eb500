//! `aws:deleteStack`: deletes a CloudFormation stack (DeleteStack), waited for until it is
//! `DELETE_COMPLETE`. No outputs (AWS's page lists none).
//!
//! The stack is first looked up (DescribeStacks) for its id, so the wait follows that stack
//! even once its name is free; a stack that does not exist is already deleted and the step
//! succeeds, as CloudFormation's DeleteStack does for an unknown name. `DELETE_FAILED` fails
//! the step with the stack's reason. Default timeout 3600 s **(ours)**.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed, poll_until_logged};
use super::create_stack::{DEFAULT_TIMEOUT, stack_status, terminal};
use super::resources::{self, Deadline, Input, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};

const SPEC: &[Input] = &[
    opt("ClientRequestToken", Ty::Str),
    opt("RetainResources", Ty::StrList),
    opt("RoleARN", Ty::Str),
    req("StackName", Ty::Str),
];

/// `aws:deleteStack`.
pub(crate) struct DeleteStack;

impl ActionSpec for DeleteStack {
    const ACTION: Action = Action::DeleteStack;
    const INPUT_KEYS: &'static [&'static str] = &[
        "ClientRequestToken",
        "RetainResources",
        "RoleARN",
        "StackName",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        Some(StepKind::Checked(Self::ACTION))
    }

    /// DeleteStack's parameters (the inputs under their own names).
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        if resources::text(&read, "StackName").is_none_or(str::is_empty) {
            return Err(StepFailure::new(
                "InvalidInput",
                "inputs.StackName: must not be empty",
            ));
        }
        Ok(read)
    }

    /// DescribeStacks (the id), DeleteStack, then DescribeStacks until DELETE_COMPLETE.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        params: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let parent = cx.cancel;
            let deadline = Deadline::new(parent, resources::step_timeout(step, DEFAULT_TIMEOUT));
            let mut sub = deadline.narrow(cx);
            deadline
                .run(
                    parent,
                    "the stack was deleted",
                    delete(&mut sub, step, params),
                )
                .await
        })
    }
}

/// Whether a failed call says the stack does not exist (CloudFormation's ValidationError).
fn missing(f: &StepFailure) -> bool {
    f.message.contains("does not exist")
}

async fn delete(cx: &mut RunCx<'_>, step: &StepDecl, params: &Map<String, Value>) -> Attempt {
    let mut log = Vec::new();
    let name = resources::text(params, "StackName")
        .unwrap_or_default()
        .to_string();
    let mut describe = Map::new();
    describe.insert("StackName".into(), json!(name));
    let id = match call_in_step(
        cx,
        step,
        &mut log,
        "cloudformation",
        "DescribeStacks",
        describe,
    )
    .await
    {
        Ok(r) => r
            .get("Stacks")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|s| resources::str_at(s, &["StackId"]))
            .map_or_else(|| name.clone(), str::to_string),
        Err(f) if missing(&f) => {
            note(
                &mut log,
                format!("stack {name} does not exist: nothing to delete"),
            );
            return resources::succeeded(Vec::new(), log);
        }
        Err(f) => return resources::with_log(failed(f), log),
    };
    let mut p = params.clone();
    p.insert("StackName".into(), json!(id));
    if let Err(f) = call_in_step(cx, step, &mut log, "cloudformation", "DeleteStack", p).await {
        return resources::with_log(failed(f), log);
    }
    let mut describe = Map::new();
    describe.insert("StackName".into(), json!(id));
    let done = |r: &Value| Ok(stack_status(r).is_none_or(|(s, _)| terminal(&s)));
    let last = match poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "cloudformation",
        "DescribeStacks",
        &describe,
        &done,
    )
    .await
    {
        Ok(r) => r,
        Err(a)
            if a.failure
                .as_deref()
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            return resources::succeeded(Vec::new(), log);
        }
        Err(a) => return resources::with_log(a, log),
    };
    match stack_status(&last) {
        None => resources::succeeded(Vec::new(), log),
        Some((s, _)) if s == "DELETE_COMPLETE" => resources::succeeded(Vec::new(), log),
        Some((s, reason)) => resources::failed_with(
            "StackDeletionFailed",
            &format!(
                "stack {name} ended {s}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            log,
        ),
    }
}
