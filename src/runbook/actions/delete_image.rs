//! `aws:deleteImage`: deletes an AMI and all its snapshots, as AWS's page says: DescribeImages
//! (to learn the snapshots), DeregisterImage, then DeleteSnapshot for each EBS snapshot of the
//! image's block device mappings. No outputs.
//!
//! A snapshot that cannot be deleted fails the step after the others were tried, naming it
//! **(ours: AWS does not say)**. The step's `timeoutSeconds` bounds the whole of it (default
//! 3600 s, ours).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed};
use super::resources::{self, Deadline, Input, Ty, note, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};

/// The default bound of the whole step **(ours)**.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

const SPEC: &[Input] = &[req("ImageId", Ty::Str)];

/// `aws:deleteImage`.
pub(crate) struct DeleteImage;

impl ActionSpec for DeleteImage {
    const ACTION: Action = Action::DeleteImage;
    const INPUT_KEYS: &'static [&'static str] = &["ImageId"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = String;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        Some(StepKind::Checked(Self::ACTION))
    }

    /// The image id.
    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<String, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        match resources::text(&read, "ImageId") {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(StepFailure::new(
                "InvalidInput",
                "inputs.ImageId: must not be empty",
            )),
        }
    }

    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        id: &'a String,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let parent = cx.cancel;
            let deadline = Deadline::new(parent, resources::step_timeout(step, DEFAULT_TIMEOUT));
            let mut sub = deadline.narrow(cx);
            deadline
                .run(parent, "the image was deleted", delete(&mut sub, step, id))
                .await
        })
    }
}

/// The EBS snapshots of the first image of a DescribeImages response.
fn snapshots(r: &Value) -> Vec<String> {
    r.get("Images")
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .and_then(|i| i.get("BlockDeviceMappings"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| resources::str_at(m, &["Ebs", "SnapshotId"]).map(str::to_string))
        .collect()
}

async fn delete(cx: &mut RunCx<'_>, step: &StepDecl, id: &str) -> Attempt {
    let mut log = Vec::new();
    let mut describe = Map::new();
    describe.insert("ImageIds".into(), json!([id]));
    let described = match call_in_step(cx, step, &mut log, "ec2", "DescribeImages", describe).await
    {
        Ok(r) => r,
        Err(f) => return resources::with_log(failed(f), log),
    };
    if described
        .get("Images")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return resources::failed_with(
            "InvalidAMIID.NotFound",
            &format!("the image {id} does not exist"),
            log,
        );
    }
    let snaps = snapshots(&described);
    let mut deregister = Map::new();
    deregister.insert("ImageId".into(), json!(id));
    if let Err(f) = call_in_step(cx, step, &mut log, "ec2", "DeregisterImage", deregister).await {
        return resources::with_log(failed(f), log);
    }
    let mut undeleted = Vec::new();
    for snap in &snaps {
        if cx.cancel.is_cancelled() {
            return resources::with_log(
                Attempt::ended(
                    crate::result::StepStatus::Cancelled,
                    Some("The step was cancelled.".into()),
                ),
                log,
            );
        }
        let mut p = Map::new();
        p.insert("SnapshotId".into(), json!(snap));
        if let Err(f) = call_in_step(cx, step, &mut log, "ec2", "DeleteSnapshot", p).await {
            note(&mut log, format!("{snap}: {}", f.message));
            undeleted.push(snap.clone());
        }
    }
    if !undeleted.is_empty() {
        return resources::failed_with(
            "DeleteSnapshotFailed",
            &format!(
                "the image {id} was deregistered, but its snapshots {} could not be deleted",
                undeleted.join(", ")
            ),
            log,
        );
    }
    resources::succeeded(Vec::new(), log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_the_image() {
        let r = json!({"Images": [{"ImageId": "ami-1", "BlockDeviceMappings": [
            {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1"}},
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/sdc", "Ebs": {"SnapshotId": "snap-2"}}]}]});
        assert_eq!(snapshots(&r), ["snap-1", "snap-2"]);
        assert!(snapshots(&json!({"Images": []})).is_empty());
    }
}
