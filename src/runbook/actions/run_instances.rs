//! `aws:runInstances`: launches instances (EC2 RunInstances), then waits until every one is
//! `running`. Outputs `InstanceIds` and `InstanceStates` (StringList, in launch order).
//!
//! The inputs are AWS's page's, plus the other RunInstances members real runbooks pass
//! (`MetadataOptions`, `LaunchTemplate`...), since the page says the action "supports most API
//! parameters". Names the action renames: `MinInstanceCount` / `MaxInstanceCount` (MinCount /
//! MaxCount, default 1), `IamInstanceProfileName` / `IamInstanceProfileArn`
//! (IamInstanceProfile), `Monitoring` (a boolean: Monitoring.Enabled), `UserData` (base64, as
//! the page requires; decoded here because boto3 encodes it again).

use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed, poll_until_logged};
use super::change_instance_state::instance_states;
use super::resources::{self, Deadline, Input, InputError, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::selector::ValueType;

/// The default timeout **(ours: AWS's page gives none; 3600 s as the other waits)**.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most instances one step launches **(ours: it bounds the wait and the outputs)**.
pub const MAX_COUNT: i64 = 1000;

/// Inputs passed to RunInstances under their own names.
const PASSED: &[&str] = &[
    "ImageId",
    "InstanceType",
    "AdditionalInfo",
    "BlockDeviceMappings",
    "ClientToken",
    "DisableApiTermination",
    "EbsOptimized",
    "InstanceInitiatedShutdownBehavior",
    "KernelId",
    "KeyName",
    "NetworkInterfaces",
    "Placement",
    "PrivateIpAddress",
    "RamdiskId",
    "SecurityGroupIds",
    "SecurityGroups",
    "SubnetId",
    "TagSpecifications",
    "MetadataOptions",
    "CpuOptions",
    "CreditSpecification",
    "HibernationOptions",
    "LaunchTemplate",
    "LicenseSpecifications",
    "Ipv6AddressCount",
    "Ipv6Addresses",
    "PrivateDnsNameOptions",
    "MaintenanceOptions",
    "EnclaveOptions",
    "CapacityReservationSpecification",
    "InstanceMarketOptions",
    "DisableApiStop",
];

const SPEC: &[Input] = &[
    req("ImageId", Ty::Str),
    opt("InstanceType", Ty::Str),
    opt("MinInstanceCount", Ty::Int),
    opt("MaxInstanceCount", Ty::Int),
    opt("AdditionalInfo", Ty::Str),
    opt("BlockDeviceMappings", Ty::MapList),
    opt("ClientToken", Ty::Str),
    opt("DisableApiTermination", Ty::Bool),
    opt("EbsOptimized", Ty::Bool),
    opt("IamInstanceProfileArn", Ty::Str),
    opt("IamInstanceProfileName", Ty::Str),
    opt(
        "InstanceInitiatedShutdownBehavior",
        Ty::OneOf(&["stop", "terminate"]),
    ),
    opt("KernelId", Ty::Str),
    opt("KeyName", Ty::Str),
    opt("Monitoring", Ty::Bool),
    opt("NetworkInterfaces", Ty::MapList),
    opt("Placement", Ty::Map),
    opt("PrivateIpAddress", Ty::Str),
    opt("RamdiskId", Ty::Str),
    opt("SecurityGroupIds", Ty::StrList),
    opt("SecurityGroups", Ty::StrList),
    opt("SubnetId", Ty::Str),
    opt("TagSpecifications", Ty::MapList),
    opt("UserData", Ty::Str),
    opt("MetadataOptions", Ty::Map),
    opt("CpuOptions", Ty::Map),
    opt("CreditSpecification", Ty::Map),
    opt("HibernationOptions", Ty::Map),
    opt("LaunchTemplate", Ty::Map),
    opt("LicenseSpecifications", Ty::MapList),
    opt("Ipv6AddressCount", Ty::Int),
    opt("Ipv6Addresses", Ty::MapList),
    opt("PrivateDnsNameOptions", Ty::Map),
    opt("MaintenanceOptions", Ty::Map),
    opt("EnclaveOptions", Ty::Map),
    opt("CapacityReservationSpecification", Ty::Map),
    opt("InstanceMarketOptions", Ty::Map),
    opt("DisableApiStop", Ty::Bool),
];

/// `aws:runInstances`.
pub(crate) struct RunInstances;

impl ActionSpec for RunInstances {
    const ACTION: Action = Action::RunInstances;
    const INPUT_KEYS: &'static [&'static str] = &[
        "ImageId",
        "InstanceType",
        "MinInstanceCount",
        "MaxInstanceCount",
        "AdditionalInfo",
        "BlockDeviceMappings",
        "ClientToken",
        "DisableApiTermination",
        "EbsOptimized",
        "IamInstanceProfileArn",
        "IamInstanceProfileName",
        "InstanceInitiatedShutdownBehavior",
        "KernelId",
        "KeyName",
        "Monitoring",
        "NetworkInterfaces",
        "Placement",
        "PrivateIpAddress",
        "RamdiskId",
        "SecurityGroupIds",
        "SecurityGroups",
        "SubnetId",
        "TagSpecifications",
        "UserData",
        "MetadataOptions",
        "CpuOptions",
        "CreditSpecification",
        "HibernationOptions",
        "LaunchTemplate",
        "LicenseSpecifications",
        "Ipv6AddressCount",
        "Ipv6Addresses",
        "PrivateDnsNameOptions",
        "MaintenanceOptions",
        "EnclaveOptions",
        "CapacityReservationSpecification",
        "InstanceMarketOptions",
        "DisableApiStop",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["InstanceIds", "InstanceStates"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    /// The inputs' types; counts, the instance profile and UserData when written literally.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        let literal = !crate::runbook::interpolate::has_refs(&Value::Object(step.inputs.clone()));
        if literal {
            if let Ok(read) = resources::read(step.inputs, SPEC) {
                if let Err(e) = parameters(&read) {
                    let pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
                    cx.invalid(pos, step.ctx, e.to_string());
                }
            }
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// RunInstances' parameters from the resolved inputs.
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        parameters(&read).map_err(|e| e.failure())
    }

    /// RunInstances, then DescribeInstances until every instance runs.
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
                    "the instances were running",
                    launch(&mut sub, step, params),
                )
                .await
        })
    }
}

/// RunInstances' parameters for read inputs, with the action's renamings.
fn parameters(read: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
    let mut p = Map::new();
    resources::pass(&mut p, read, PASSED);
    let count = |k: &str| read.get(k).and_then(Value::as_i64).unwrap_or(1);
    let (min, max) = (count("MinInstanceCount"), count("MaxInstanceCount"));
    if !(1..=MAX_COUNT).contains(&min) || !(1..=MAX_COUNT).contains(&max) || min > max {
        return Err(InputError::Rule(format!(
            "inputs.MinInstanceCount / MaxInstanceCount: 1 ≤ MinInstanceCount ≤ MaxInstanceCount ≤ {MAX_COUNT}, not {min} and {max}"
        )));
    }
    p.insert("MinCount".into(), json!(min));
    p.insert("MaxCount".into(), json!(max));
    match (
        resources::text(read, "IamInstanceProfileName"),
        resources::text(read, "IamInstanceProfileArn"),
    ) {
        (Some(_), Some(_)) => {
            return Err(InputError::Rule(
                "give IamInstanceProfileName or IamInstanceProfileArn, not both".into(),
            ));
        }
        (Some(name), None) if !name.is_empty() => {
            p.insert("IamInstanceProfile".into(), json!({"Name": name}));
        }
        (None, Some(arn)) if !arn.is_empty() => {
            p.insert("IamInstanceProfile".into(), json!({"Arn": arn}));
        }
        _ => {}
    }
    if let Some(on) = read.get("Monitoring").and_then(Value::as_bool) {
        p.insert("Monitoring".into(), json!({"Enabled": on}));
    }
    if let Some(data) = resources::text(read, "UserData") {
        p.insert("UserData".into(), Value::String(user_data(data)?));
    }
    Ok(p)
}

/// The script in a base64 `UserData` (boto3 encodes it again on the way out).
fn user_data(b64: &str) -> Result<String, InputError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| InputError::Rule(format!("inputs.UserData: must be base64 ({e})")))?;
    String::from_utf8(bytes).map_err(|_| {
        InputError::Rule("inputs.UserData: the decoded script must be UTF-8 text".into())
    })
}

async fn launch(cx: &mut RunCx<'_>, step: &StepDecl, params: &Map<String, Value>) -> Attempt {
    let mut log = Vec::new();
    let response =
        match call_in_step(cx, step, &mut log, "ec2", "RunInstances", params.clone()).await {
            Ok(r) => r,
            Err(f) => return resources::with_log(failed(f), log),
        };
    let ids: Vec<String> = response
        .get("Instances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| resources::str_at(i, &["InstanceId"]).map(str::to_string))
        .collect();
    if ids.is_empty() {
        return resources::failed_with(
            "InvalidResponse",
            "RunInstances returned no instance ids",
            log,
        );
    }
    note(
        &mut log,
        format!("launched {}; waiting until running", ids.join(", ")),
    );
    let mut describe = Map::new();
    describe.insert("InstanceIds".into(), json!(ids));
    let done = |r: &Value| all_running(r);
    let last = match poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "ec2",
        "DescribeInstances",
        &describe,
        &done,
    )
    .await
    {
        Ok(r) => r,
        Err(a) => return resources::with_log(a, log),
    };
    let states = instance_states(&last);
    let ordered: Vec<String> = ids
        .iter()
        .map(|id| {
            states
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        })
        .collect();
    resources::succeeded(
        vec![
            ("InstanceIds".into(), ValueType::StringList, json!(ids)),
            (
                "InstanceStates".into(),
                ValueType::StringList,
                json!(ordered),
            ),
        ],
        log,
    )
}

/// Whether every launched instance runs; a failure when one ended instead.
fn all_running(r: &Value) -> Result<bool, StepFailure> {
    let states = instance_states(r);
    if let Some((id, s)) = states
        .iter()
        .find(|(_, s)| matches!(s.as_str(), "terminated" | "shutting-down" | "stopped"))
    {
        return Err(StepFailure::new(
            "InvalidInstanceState",
            format!("instance {id} is {s} instead of running"),
        ));
    }
    Ok(!states.is_empty() && states.iter().all(|(_, s)| s == "running"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Result<Map<String, Value>, String> {
        let read = resources::read(v.as_object().unwrap(), SPEC).map_err(|e| e.to_string())?;
        parameters(&read).map_err(|e| e.to_string())
    }

    #[test]
    fn renamed_inputs() {
        let p = params(json!({
            "ImageId": "ami-1", "MinInstanceCount": "1", "MaxInstanceCount": 2,
            "IamInstanceProfileName": "prof", "Monitoring": true,
            "UserData": "ZWNobyBoaQ==", "SecurityGroupIds": ["sg-1"],
            "MetadataOptions": {"HttpTokens": "required"}
        }))
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({
                "ImageId": "ami-1", "MinCount": 1, "MaxCount": 2,
                "IamInstanceProfile": {"Name": "prof"}, "Monitoring": {"Enabled": true},
                "UserData": "echo hi", "SecurityGroupIds": ["sg-1"],
                "MetadataOptions": {"HttpTokens": "required"}
            })
        );
        let p = params(json!({"ImageId": "ami-1"})).unwrap();
        assert_eq!(
            (p["MinCount"].clone(), p["MaxCount"].clone()),
            (json!(1), json!(1))
        );
    }

    #[test]
    fn refused_inputs() {
        assert!(
            params(json!({"ImageId": "a", "MinInstanceCount": 3, "MaxInstanceCount": 2}))
                .unwrap_err()
                .contains("MinInstanceCount ≤ MaxInstanceCount")
        );
        assert!(
            params(
                json!({"ImageId": "a", "IamInstanceProfileName": "n", "IamInstanceProfileArn": "a"})
            )
            .unwrap_err()
            .contains("not both")
        );
        assert!(
            params(json!({"ImageId": "a", "UserData": "not base64!"}))
                .unwrap_err()
                .contains("must be base64")
        );
        assert_eq!(params(json!({})).unwrap_err(), "inputs.ImageId is required");
    }

    #[test]
    fn waits_for_running() {
        let r = |s: &str| json!({"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": s}}]}]});
        assert_eq!(all_running(&r("pending")), Ok(false));
        assert_eq!(all_running(&r("running")), Ok(true));
        assert!(all_running(&r("terminated")).is_err());
    }
}
