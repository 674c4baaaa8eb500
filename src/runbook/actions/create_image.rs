//! `aws:createImage`: an AMI from an instance (EC2 CreateImage), waited for until `available`.
//! Outputs `ImageId` and `ImageState` (String). An image that becomes `failed` (or is
//! deregistered) fails the step.
//!
//! Default timeout 3600 s **(ours: AWS's page gives none; the same as changeInstanceState's)**.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed, poll_until_logged};
use super::resources::{self, Deadline, Input, Ty, note, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::LogLine;
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::selector::ValueType;

/// The default timeout of the image actions' wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

const SPEC: &[Input] = &[
    req("InstanceId", Ty::Str),
    req("ImageName", Ty::Str),
    opt("ImageDescription", Ty::Str),
    opt("NoReboot", Ty::Bool),
    opt("BlockDeviceMappings", Ty::MapList),
    opt("TagSpecifications", Ty::MapList),
];

/// `aws:createImage`.
pub(crate) struct CreateImage;

impl ActionSpec for CreateImage {
    const ACTION: Action = Action::CreateImage;
    const INPUT_KEYS: &'static [&'static str] = &[
        "InstanceId",
        "ImageName",
        "ImageDescription",
        "NoReboot",
        "BlockDeviceMappings",
        "TagSpecifications",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["ImageId", "ImageState"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        Some(StepKind::Checked(Self::ACTION))
    }

    /// CreateImage's parameters: ImageName is `Name`, ImageDescription `Description`.
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        let mut p = Map::new();
        resources::pass(
            &mut p,
            &read,
            &[
                "InstanceId",
                "NoReboot",
                "BlockDeviceMappings",
                "TagSpecifications",
            ],
        );
        rename(&mut p, &read);
        Ok(p)
    }

    /// CreateImage, then DescribeImages until the image is available.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        params: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move { make_image(cx, step, "CreateImage", params).await })
    }
}

/// `ImageName` → `Name`, `ImageDescription` → `Description`.
pub(crate) fn rename(p: &mut Map<String, Value>, read: &Map<String, Value>) {
    if let Some(n) = read.get("ImageName") {
        p.insert("Name".into(), n.clone());
    }
    if let Some(d) = read.get("ImageDescription") {
        p.insert("Description".into(), d.clone());
    }
}

/// `api` (CreateImage or CopyImage) with `params`, then the wait for the image, within the
/// step's deadline; the outputs ImageId and ImageState.
pub(crate) async fn make_image(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    api: &'static str,
    params: &Map<String, Value>,
) -> Attempt {
    let parent = cx.cancel;
    let deadline = Deadline::new(parent, resources::step_timeout(step, DEFAULT_TIMEOUT));
    let mut sub = deadline.narrow(cx);
    deadline
        .run(
            parent,
            "the image was available",
            make_and_wait(&mut sub, step, api, params),
        )
        .await
}

async fn make_and_wait(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    api: &'static str,
    params: &Map<String, Value>,
) -> Attempt {
    let mut log: Vec<LogLine> = Vec::new();
    let response = match call_in_step(cx, step, &mut log, "ec2", api, params.clone()).await {
        Ok(r) => r,
        Err(f) => return resources::with_log(failed(f), log),
    };
    let Some(id) = resources::str_at(&response, &["ImageId"]).map(str::to_string) else {
        return resources::failed_with(
            "InvalidResponse",
            &format!("{api} returned no ImageId"),
            log,
        );
    };
    note(&mut log, format!("image {id}; waiting until available"));
    let mut describe = Map::new();
    describe.insert("ImageIds".into(), json!([id]));
    let done = |r: &Value| available(r);
    match poll_until_logged(
        cx,
        step,
        &mut log,
        DEFAULT_TIMEOUT,
        "ec2",
        "DescribeImages",
        &describe,
        &done,
    )
    .await
    {
        Ok(last) => {
            let state = image_state(&last).unwrap_or("available").to_string();
            resources::succeeded(
                vec![
                    ("ImageId".into(), ValueType::String, json!(id)),
                    ("ImageState".into(), ValueType::String, json!(state)),
                ],
                log,
            )
        }
        Err(a) => resources::with_log(a, log),
    }
}

fn image_state(r: &Value) -> Option<&str> {
    r.get("Images")
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .and_then(|i| resources::str_at(i, &["State"]))
}

/// Whether the image is available; a failure when it failed or is gone. An image not listed
/// yet is waited for (EC2 is eventually consistent).
fn available(r: &Value) -> Result<bool, StepFailure> {
    match image_state(r) {
        Some("available") => Ok(true),
        Some(s @ ("failed" | "invalid" | "deregistered" | "error")) => {
            Err(StepFailure::new("ImageFailed", format!("the image is {s}")))
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_states() {
        let r = |s: &str| json!({"Images": [{"ImageId": "ami-1", "State": s}]});
        assert_eq!(available(&r("pending")), Ok(false));
        assert_eq!(available(&r("available")), Ok(true));
        assert!(available(&r("failed")).is_err());
        assert_eq!(available(&json!({"Images": []})), Ok(false));
    }
}
