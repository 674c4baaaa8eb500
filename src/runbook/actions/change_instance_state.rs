//! `aws:changeInstanceState`: starts, stops or terminates instances, then waits until every one
//! is in the desired state (`running` also waits for the instance and system status checks to
//! be `ok`, as AWS's page says). With `CheckStateOnly` it only waits. No outputs.
//!
//! Default timeout 3600 s (AWS's page); the step's `timeoutSeconds` bounds the whole of it,
//! the change and every wait.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, poll_until_logged};
use super::resources::{self, Deadline, Input, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};

/// AWS's default timeout of the action.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most instances one step changes **(ours: EC2's StartInstances takes up to 1000 ids)**.
pub const MAX_INSTANCES: usize = 1000;

const STATES: &[&str] = &["running", "stopped", "terminated"];

const SPEC: &[Input] = &[
    req("InstanceIds", Ty::StrList).at_most(MAX_INSTANCES),
    opt("CheckStateOnly", Ty::Bool),
    req("DesiredState", Ty::OneOf(STATES)),
    opt("Force", Ty::Bool),
    opt("AdditionalInfo", Ty::Str),
];

/// `aws:changeInstanceState`.
pub(crate) struct ChangeInstanceState;

impl ActionSpec for ChangeInstanceState {
    const ACTION: Action = Action::ChangeInstanceState;
    const INPUT_KEYS: &'static [&'static str] = &[
        "InstanceIds",
        "CheckStateOnly",
        "DesiredState",
        "Force",
        "AdditionalInfo",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    /// The inputs' keys and types; DesiredState one of running, stopped, terminated.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        Some(StepKind::Checked(Self::ACTION))
    }

    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        if resources::strings(&read, "InstanceIds").is_empty() {
            return Err(StepFailure::new(
                "InvalidInput",
                "inputs.InstanceIds: at least one instance id is required",
            ));
        }
        Ok(read)
    }

    /// The change (unless CheckStateOnly), then the waits, within the step's deadline.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        inputs: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let parent = cx.cancel;
            let deadline = Deadline::new(parent, resources::step_timeout(step, DEFAULT_TIMEOUT));
            let desired = resources::text(inputs, "DesiredState").unwrap_or("running");
            let what = format!("the instances were {desired}");
            let mut sub = deadline.narrow(cx);
            deadline
                .run(parent, &what, change(&mut sub, step, inputs))
                .await
        })
    }
}

/// The API that brings instances to `desired`.
fn change_api(desired: &str) -> &'static str {
    match desired {
        "stopped" => "StopInstances",
        "terminated" => "TerminateInstances",
        _ => "StartInstances",
    }
}

async fn change(cx: &mut RunCx<'_>, step: &StepDecl, inputs: &Map<String, Value>) -> Attempt {
    let ids = resources::strings(inputs, "InstanceIds");
    let desired = resources::text(inputs, "DesiredState")
        .unwrap_or("running")
        .to_string();
    let mut log = Vec::new();
    let check_only = inputs
        .get("CheckStateOnly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !check_only {
        let api = change_api(&desired);
        let mut params = Map::new();
        params.insert("InstanceIds".into(), json!(ids));
        match api {
            "StopInstances" => resources::pass(&mut params, inputs, &["Force"]),
            "StartInstances" => resources::pass(&mut params, inputs, &["AdditionalInfo"]),
            _ => {}
        }
        if let Err(f) = call_in_step(cx, step, &mut log, "ec2", api, params).await {
            return resources::with_log(super::aws_call::failed(f), log);
        }
    }
    note(
        &mut log,
        format!("waiting for {} to be {desired}", ids.join(", ")),
    );
    let mut params = Map::new();
    params.insert("InstanceIds".into(), json!(ids));
    let want = desired.clone();
    let done = move |r: &Value| states_reached(r, &want);
    if let Err(a) = poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "ec2",
        "DescribeInstances",
        &params,
        &done,
    )
    .await
    {
        return resources::with_log(a, log);
    }
    if desired == "running" {
        note(
            &mut log,
            "waiting for the instance and system status to be ok",
        );
        params.insert("IncludeAllInstances".into(), Value::Bool(true));
        let count = ids.len();
        let done = move |r: &Value| status_ok(r, count);
        if let Err(a) = poll_until_logged(
            cx,
            step,
            &mut log,
            DEFAULT_TIMEOUT,
            "ec2",
            "DescribeInstanceStatus",
            &params,
            &done,
        )
        .await
        {
            return resources::with_log(a, log);
        }
    }
    resources::succeeded(Vec::new(), log)
}

/// Every instance's `State.Name` in a DescribeInstances response.
pub(crate) fn instance_states(r: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for res in r
        .get("Reservations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for i in res
            .get("Instances")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = resources::str_at(i, &["InstanceId"]).unwrap_or_default();
            let state = resources::str_at(i, &["State", "Name"]).unwrap_or_default();
            out.push((id.to_string(), state.to_string()));
        }
    }
    out
}

/// Whether every instance is `desired`; a failure when one can no longer get there (a
/// terminated instance never runs or stops again) **(ours: AWS would wait out the timeout)**.
fn states_reached(r: &Value, desired: &str) -> Result<bool, StepFailure> {
    let states = instance_states(r);
    if states.is_empty() {
        return Err(StepFailure::new(
            "InvalidInstanceState",
            "DescribeInstances returned none of the instances",
        ));
    }
    for (id, state) in &states {
        let gone = matches!(state.as_str(), "terminated" | "shutting-down");
        if gone && desired != "terminated" {
            return Err(StepFailure::new(
                "InvalidInstanceState",
                format!("instance {id} is {state}: it cannot become {desired}"),
            ));
        }
    }
    Ok(states.iter().all(|(_, s)| s == desired))
}

/// Whether `count` instances have both status checks `ok`.
fn status_ok(r: &Value, count: usize) -> Result<bool, StepFailure> {
    let statuses = r
        .get("InstanceStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ok = statuses
        .iter()
        .filter(|s| {
            resources::str_at(s, &["InstanceStatus", "Status"]) == Some("ok")
                && resources::str_at(s, &["SystemStatus", "Status"]) == Some("ok")
        })
        .count();
    Ok(ok >= count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_statuses() {
        let r = json!({"Reservations": [{"Instances": [
            {"InstanceId": "i-1", "State": {"Name": "stopped"}},
            {"InstanceId": "i-2", "State": {"Name": "pending"}}]}]});
        assert_eq!(states_reached(&r, "stopped"), Ok(false));
        let r = json!({"Reservations": [{"Instances": [
            {"InstanceId": "i-1", "State": {"Name": "running"}}]}]});
        assert_eq!(states_reached(&r, "running"), Ok(true));
        let r = json!({"Reservations": [{"Instances": [
            {"InstanceId": "i-1", "State": {"Name": "terminated"}}]}]});
        assert!(
            states_reached(&r, "running")
                .unwrap_err()
                .message
                .contains("i-1 is terminated")
        );
        assert_eq!(states_reached(&r, "terminated"), Ok(true));
        assert!(states_reached(&json!({"Reservations": []}), "running").is_err());
        let s = json!({"InstanceStatuses": [
            {"InstanceStatus": {"Status": "ok"}, "SystemStatus": {"Status": "initializing"}}]});
        assert_eq!(status_ok(&s, 1), Ok(false));
        let s = json!({"InstanceStatuses": [
            {"InstanceStatus": {"Status": "ok"}, "SystemStatus": {"Status": "ok"}}]});
        assert_eq!(status_ok(&s, 1), Ok(true));
        assert_eq!(change_api("stopped"), "StopInstances");
        assert_eq!(change_api("terminated"), "TerminateInstances");
        assert_eq!(change_api("running"), "StartInstances");
    }
}
