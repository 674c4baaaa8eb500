//! `aws:copyImage`: copies an AMI from a Region into the execution's (EC2 CopyImage), waited
//! for until `available`, as createImage's. Outputs `ImageId` and `ImageState`.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::create_image::{make_image, rename};
use super::resources::{self, Input, Ty, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};

const SPEC: &[Input] = &[
    req("SourceRegion", Ty::Str),
    req("SourceImageId", Ty::Str),
    req("ImageName", Ty::Str),
    opt("ImageDescription", Ty::Str),
    opt("Encrypted", Ty::Bool),
    opt("KmsKeyId", Ty::Str),
    opt("ClientToken", Ty::Str),
];

/// `aws:copyImage`.
pub(crate) struct CopyImage;

impl ActionSpec for CopyImage {
    const ACTION: Action = Action::CopyImage;
    const INPUT_KEYS: &'static [&'static str] = &[
        "SourceRegion",
        "SourceImageId",
        "ImageName",
        "ImageDescription",
        "Encrypted",
        "KmsKeyId",
        "ClientToken",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["ImageId", "ImageState"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        Some(StepKind::Checked(Self::ACTION))
    }

    /// CopyImage's parameters: ImageName is `Name`, ImageDescription `Description`.
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
                "SourceRegion",
                "SourceImageId",
                "Encrypted",
                "KmsKeyId",
                "ClientToken",
            ],
        );
        rename(&mut p, &read);
        Ok(p)
    }

    /// CopyImage, then DescribeImages until the copy is available.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        params: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move { make_image(cx, step, "CopyImage", params).await })
    }
}
