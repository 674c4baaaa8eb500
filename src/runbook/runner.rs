//! The runbook's port to the container runner: [`crate::execute::Runner`] runs each
//! `aws:executeScript` step of a runbook, one at a time, with the runner's runbook limits
//! ([`crate::execute::Runner::with_runbook_limits`]; none outside the daemon), and each AWS
//! action's call through the AWS API worker ([`crate::aws::worker`]).

use futures::future::BoxFuture;
use serde_json::Value;

use super::executor::{RunContext, StepRunner};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::aws::worker;
use crate::execute::{ExecuteError, Runner, StepJob};
use crate::result::StepResult;
use crate::step::ValidatedStep;

impl StepRunner for Runner {
    fn gives_credentials(&self) -> bool {
        self.aws().is_some()
    }

    fn run<'a>(
        &'a self,
        step: &'a ValidatedStep,
        ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<StepResult, ExecuteError>> {
        Box::pin(async move {
            let job = StepJob {
                execution_id: ctx.step_execution_id,
                automation_execution_id: Some(ctx.automation_execution_id.to_string()),
                limits: self.runbook_limits().clone(),
                on_log: Some(ctx.on_log),
                cancel: ctx.cancel,
                assume_role: ctx.assume_role.map(str::to_string),
            };
            let (result, removal) = Runner::run(self, step, job).await?;
            // Steps run one at a time: the next one starts after this container is gone.
            removal.finish().await?;
            Ok(result)
        })
    }

    /// One call in a fresh worker container of this execution (labelled with the step
    /// execution's id), as the runbook's role or else the operator.
    fn call_aws<'a>(
        &'a self,
        call: &'a AwsCall,
        ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, AwsCallError>> {
        Box::pin(async move {
            let Some(access) = self.aws() else {
                return Err(AwsCallError::NoAccess);
            };
            let Some(worker) = self.aws_worker() else {
                return Err(AwsCallError::Failed {
                    kind: "NoWorkerRuntime",
                    message: "no Python runtime image is built to make AWS calls in: build one (scriptbox images build python3.12) or set [aws] api_runtime".into(),
                });
            };
            let step = worker.step(call, access.endpoint_via_relay())?;
            let job = StepJob {
                execution_id: ctx.step_execution_id,
                automation_execution_id: Some(ctx.automation_execution_id.to_string()),
                limits: self.runbook_limits().clone(),
                on_log: Some(ctx.on_log),
                cancel: ctx.cancel,
                assume_role: ctx.assume_role.map(str::to_string),
            };
            let engine = |e: ExecuteError| AwsCallError::Failed {
                kind: "EngineFailure",
                message: format!("The container engine failed: {e}"),
            };
            let (result, removal) = self.run_worker(&step, job).await.map_err(engine)?;
            removal
                .finish()
                .await
                .map_err(|e| engine(ExecuteError::Sandbox(e)))?;
            worker::reply(&result, call, access.endpoint_name())
        })
    }

    fn poll_interval(&self) -> std::time::Duration {
        self.aws()
            .map(|a| a.poll_interval())
            .unwrap_or(crate::runbook::actions::aws_call::DEFAULT_POLL_INTERVAL)
    }
}
