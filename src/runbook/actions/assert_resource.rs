//! `aws:assertAwsResourceProperty`: one call; fails unless the selected value is a desired one.
//!
//! Inputs as `aws:waitForAwsResourceProperty`'s: `Service`, `Api`, the operation's parameters,
//! `PropertySelector` (`$` is the response) and `DesiredValues` (Booleans written `True` /
//! `False`).

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::aws_call::{self, PropertyCheck};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::{StepStatus, aws_plain_failure};
use crate::runbook::document::{StepDecl, StepKind};

/// `aws:assertAwsResourceProperty`.
pub(crate) struct AssertAwsResourceProperty;

impl ActionSpec for AssertAwsResourceProperty {
    const ACTION: Action = Action::AssertAwsResourceProperty;
    // Every other key is a parameter of the operation.
    const INPUT_KEYS: &'static [&'static str] =
        &["Service", "Api", "PropertySelector", "DesiredValues"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = PropertyCheck;

    /// `Service`, `Api`, a valid `PropertySelector`, 1 to 100 `DesiredValues`.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        aws_call::check_service_api(cx, step);
        aws_call::check_property(cx, step);
        Some(StepKind::Checked(Self::ACTION))
    }

    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<PropertyCheck, StepFailure> {
        aws_call::property_check(inputs)
    }

    /// One call, then the comparison.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        check: &'a PropertyCheck,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut log = Vec::new();
            let call = &check.call;
            let response = aws_call::call_in_step(
                cx,
                step,
                &mut log,
                &call.service,
                &call.api,
                call.parameters.clone(),
            )
            .await;
            let mut attempt = match response {
                Err(f) => aws_call::failed(f),
                Ok(r) => {
                    let selected = check.selector.select(&r);
                    if aws_call::is_desired(selected.as_ref(), &check.desired) {
                        Attempt::ended(StepStatus::Success, None)
                    } else {
                        Attempt::ended(
                            StepStatus::Failed,
                            Some(aws_plain_failure(
                                "AssertionFailed",
                                &format!(
                                    "{} of {}.{} is {}, not one of the desired values [{}]",
                                    check.selector,
                                    call.service,
                                    call.api,
                                    aws_call::shown(selected.as_ref()),
                                    check.desired.join(", ")
                                ),
                            )),
                        )
                    }
                }
            };
            attempt.log = log;
            attempt
        })
    }
}
