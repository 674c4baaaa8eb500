//! The runbook's port to the container runner: [`crate::execute::Runner`] runs each
//! `aws:executeScript` step of a runbook, one at a time, with the runner's runbook limits
//! ([`crate::execute::Runner::with_runbook_limits`]; none outside the daemon).

use futures::future::BoxFuture;

use super::executor::{RunContext, StepRunner};
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
}
