//! What the AWS actions share: one call through the runner's worker (`StepRunner::call_aws`),
//! polling until a condition within the step's timeout, and outputs selected from a response
//! exactly as executeScript's are from its payload.
//!
//! Not an action (no variant); issue 14 builds it. The signatures are the seam the actions
//! are written against.

#![allow(dead_code)] // Reason: the skeleton of issue 14; the AWS actions use these.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Attempt, RunCx, StepFailure};
use crate::runbook::document::StepDecl;
use crate::runbook::selector::ValueType;

/// The polling interval of waits when the operator sets none **(ours: AWS does not document it)**.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Makes one call as the step's role; the response as AWS renders it (datetimes ISO 8601,
/// bytes base64). A failure carries AWS's failure type.
pub(crate) async fn call(
    cx: &mut RunCx<'_>,
    service: &str,
    api: &str,
    parameters: Map<String, Value>,
) -> Result<Value, StepFailure> {
    let _ = (cx, service, api, parameters);
    Err(StepFailure::new("InvalidInput", "not built yet"))
}

/// Calls `service`/`api` every poll interval until `done` says the response is the one waited
/// for, within the step's `timeoutSeconds` (else `default_timeout`), honouring cancellation.
/// `Ok` is the last response; `Err` the attempt that ended the wait (TimedOut, Cancelled, a
/// failed call, or `done`'s own failure).
pub(crate) async fn poll_until(
    cx: &mut RunCx<'_>,
    step: &StepDecl,
    default_timeout: Duration,
    service: &str,
    api: &str,
    parameters: &Map<String, Value>,
    done: &(dyn Fn(&Value) -> Result<bool, StepFailure> + Send + Sync),
) -> Result<Value, Attempt> {
    let _ = (cx, step, default_timeout, service, api, parameters, done);
    Err(Attempt::ended(crate::result::StepStatus::Failed, None))
}

/// The step's declared `outputs` selected from `response` and typed.
pub(crate) fn select_outputs(
    step: &StepDecl,
    response: &Value,
) -> Result<Vec<(String, ValueType, Value)>, StepFailure> {
    let _ = (step, response);
    Ok(Vec::new())
}

/// A failed attempt of `failure` (AWS-shaped message).
pub(crate) fn failed(failure: StepFailure) -> Attempt {
    Attempt::ended(
        crate::result::StepStatus::Failed,
        Some(crate::result::aws_plain_failure(
            failure.kind,
            &failure.message,
        )),
    )
}
