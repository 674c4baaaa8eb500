//! The daemon's child runbooks: `aws:executeAutomation` in an execution the scheduler runs.
//!
//! The child's document comes from a [`ChildDocuments`] source (the SSM facade's document
//! store, set by the daemon with [`super::scheduler::Scheduler::set_child_documents`]: `server`
//! never names `ssm`). The child is a real execution: stored with its parent's id
//! (`ParentAutomationExecutionId`), claimed, its steps and log recorded, finished, cancellable
//! by its own id; cancelling the parent cancels it.
//!
//! Limits, and why this cannot deadlock **(ours)**: a parent holds a container permit for its
//! whole run and runs one step at a time, so while it waits for its child it has no container
//! alive. The child runs inline on that permit (and is counted among the daemon's outstanding
//! executions) instead of queueing for a permit of its own: were it to queue, parents holding
//! every permit would each wait for a child that can never get one. So a tree of executions
//! never has more than one container alive, and its depth is bounded by
//! [`MAX_CHILD_DEPTH`](crate::runbook::children::MAX_CHILD_DEPTH).
//!
//! A runbook's own `StartAutomationExecution` (answered by scriptbox when the endpoint is an
//! emulator) is different: the parent goes on, so that child is an ordinary submission, queued
//! for its own permit and counted against the queue, as AWS counts it against the account's
//! concurrent executions.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::aws::api::{AwsCall, AwsCallError};
use crate::runbook::children::ChildError;

/// A child's document, as the document store found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildDocument {
    /// Its name.
    pub name: String,
    /// The version found (`1`, `2`...).
    pub version: String,
    /// Its text (YAML or JSON).
    pub content: String,
    /// Its attachments.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Where the daemon's children come from, and who answers a runbook's own SSM automation calls.
pub trait ChildDocuments: Send + Sync {
    /// The document `name` (at `version`, else its default version) that a child of
    /// `parent_id` runs: from the parent's tenant's documents.
    fn find<'a>(
        &'a self,
        parent_id: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ChildDocument, ChildError>>;

    /// Records what the document store keeps of a started child (its tenant, the version that
    /// ran), so the SSM API shows it to its parent's tenant.
    fn started<'a>(
        &'a self,
        child_id: &'a str,
        parent_id: &'a str,
        doc: &'a ChildDocument,
    ) -> BoxFuture<'a, ()>;

    /// Answers a runbook's own SSM automation call (`StartAutomationExecution`,
    /// `GetAutomationExecution`, `DescribeAutomationExecutions`) as the SSM API would answer
    /// the parent's tenant, the response rendered as boto3 renders it. `None`: not one of those.
    fn answer_ssm_call<'a>(
        &'a self,
        call: &'a AwsCall,
        parent_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<Value, AwsCallError>>>;
}

/// The SSM automation operations scriptbox answers itself, matched as `Api` is (ignoring case,
/// `-` and `_`); `None` for any other call.
pub fn ssm_automation_operation(call: &AwsCall) -> Option<&'static str> {
    if !call.service.eq_ignore_ascii_case("ssm") {
        return None;
    }
    let plain: String = call
        .api
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "StartAutomationExecution",
        "GetAutomationExecution",
        "DescribeAutomationExecutions",
    ]
    .into_iter()
    .find(|op| op.to_ascii_lowercase() == plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_ssm_automation_calls_are_answered() {
        let call = |service: &str, api: &str| AwsCall {
            service: service.into(),
            api: api.into(),
            parameters: Default::default(),
        };
        assert_eq!(
            ssm_automation_operation(&call("ssm", "get-automation-execution")),
            Some("GetAutomationExecution")
        );
        assert_eq!(
            ssm_automation_operation(&call("ssm", "StartAutomationExecution")),
            Some("StartAutomationExecution")
        );
        assert_eq!(
            ssm_automation_operation(&call("SSM", "describe_automation_executions")),
            Some("DescribeAutomationExecutions")
        );
        assert_eq!(ssm_automation_operation(&call("ssm", "GetParameter")), None);
        assert_eq!(
            ssm_automation_operation(&call("ec2", "GetAutomationExecution")),
            None
        );
    }
}
