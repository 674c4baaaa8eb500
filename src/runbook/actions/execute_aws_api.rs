//! `aws:executeAwsApi`: one AWS API call, outputs selected from its response.
//!
//! `Service` and `Api` name the call; every other input is a parameter of the operation,
//! passed through as written. The call goes through the AWS API worker (boto3, as AWS makes
//! it); declared `outputs` select from the response (`$` is the response) exactly as
//! executeScript's select from its payload.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::aws_call::{self, ApiCall};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::StepStatus;
use crate::runbook::document::{StepDecl, StepKind};

/// `aws:executeAwsApi`.
pub(crate) struct ExecuteAwsApi;

impl ActionSpec for ExecuteAwsApi {
    const ACTION: Action = Action::ExecuteAwsApi;
    // Every other key is a parameter of the operation.
    const INPUT_KEYS: &'static [&'static str] = &["Service", "Api"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = true;
    const RETRIES: bool = false;
    type Ready<'s> = ApiCall;

    /// `Service` and `Api` required strings; other keys are parameters, never refused.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        aws_call::check_service_api(cx, step);
        Some(StepKind::Checked(Self::ACTION))
    }

    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<ApiCall, StepFailure> {
        aws_call::api_call(inputs, &[])
    }

    /// One call; the declared outputs from its response.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        call: &'a ApiCall,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut log = Vec::new();
            let response = aws_call::call_in_step(
                cx,
                step,
                &mut log,
                &call.service,
                &call.api,
                call.parameters.clone(),
            )
            .await;
            let mut attempt = match response.and_then(|r| aws_call::select_outputs(step, &r)) {
                Ok(outputs) => {
                    let mut a = Attempt::ended(StepStatus::Success, None);
                    a.outputs = outputs;
                    a
                }
                Err(f) => aws_call::failed(f),
            };
            attempt.log = log;
            attempt
        })
    }
}
