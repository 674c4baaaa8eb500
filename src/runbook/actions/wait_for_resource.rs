//! `aws:waitForAwsResourceProperty`: calls until a selected value is one of the desired ones.
//!
//! Polls every `[aws] poll_interval_seconds` (2 s by default, **ours**: AWS does not document
//! its interval) within the step's `timeoutSeconds`, 3600 s by default (AWS's).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::aws_call::{self, PropertyCheck};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::StepStatus;
use crate::runbook::document::{StepDecl, StepKind};

/// AWS's default timeout of the wait.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// `aws:waitForAwsResourceProperty`.
pub(crate) struct WaitForAwsResourceProperty;

impl ActionSpec for WaitForAwsResourceProperty {
    const ACTION: Action = Action::WaitForAwsResourceProperty;
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

    /// Polls until the value is desired, the timeout passes, or the step is cancelled.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        check: &'a PropertyCheck,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut log = Vec::new();
            let done = |r: &Value| -> Result<bool, StepFailure> {
                Ok(aws_call::is_desired(
                    check.selector.select(r).as_ref(),
                    &check.desired,
                ))
            };
            let call = &check.call;
            match aws_call::poll_until_logged(
                cx,
                step,
                &mut log,
                DEFAULT_TIMEOUT,
                &call.service,
                &call.api,
                &call.parameters,
                &done,
            )
            .await
            {
                Ok(_) => {
                    let mut a = Attempt::ended(StepStatus::Success, None);
                    a.log = log;
                    a
                }
                Err(a) => a,
            }
        })
    }
}
