//! The port through which `aws:executeAutomation` starts a child execution and awaits it: the
//! daemon's scheduler implements it (the child is a real execution in the store), and
//! `scriptbox run` implements it over `--documents DIR`.
//!
//! Issue 14 builds the implementations; this file holds the shapes.

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::aws::api::{AwsCall, AwsCallError};
use crate::result::StepStatus;

/// The most levels of `aws:executeAutomation` below a top-level execution **(ours)**.
pub const MAX_CHILD_DEPTH: u32 = 5;

/// A child execution to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRequest {
    /// `DocumentName` (a name, or an ARN whose last segment is the name).
    pub document_name: String,
    /// `DocumentVersion`, when given.
    pub document_version: Option<String>,
    /// `RuntimeParameters`: each parameter's value as written (a string or a list).
    pub runtime_parameters: Map<String, Value>,
    /// The parent execution's id (`ParentAutomationExecutionId` of the child).
    pub parent_execution_id: String,
    /// The child's depth: 1 for a child of a top-level execution.
    pub depth: u32,
    /// The role the child runs as when its document names none (the parent's).
    pub assume_role: Option<String>,
}

/// How a child execution ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    /// The child's execution id.
    pub execution_id: String,
    /// Its final status.
    pub status: StepStatus,
    /// Its document outputs (`step.Output` → value).
    pub outputs: Map<String, Value>,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
}

/// Why a child could not be started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChildError {
    /// No document of that name (and version) is known.
    #[error("{0}")]
    NotFound(String),
    /// The document or its parameters were refused.
    #[error("{0}")]
    Refused(String),
    /// Past [`MAX_CHILD_DEPTH`].
    #[error(
        "aws:executeAutomation is nested deeper than {MAX_CHILD_DEPTH} levels; recursion is assumed and the child is not started"
    )]
    TooDeep,
    /// No child runner here (a single step, or `scriptbox run` without `--documents`).
    #[error("{0}")]
    Unavailable(String),
}

/// Starts child executions and awaits them.
pub trait ChildRunbooks: Send + Sync {
    /// Starts `request` and waits for the child to end; `cancel` cancels the child too.
    fn run_child<'a>(
        &'a self,
        request: ChildRequest,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<ChildOutcome, ChildError>>;

    /// Answers an SSM automation call a runbook makes itself (`StartAutomationExecution`,
    /// `GetAutomationExecution`, `DescribeAutomationExecutions`) when the endpoint is an
    /// emulator that lacks them; `None` when the call is not one of those or goes to AWS.
    fn answer_ssm_call<'a>(
        &'a self,
        call: &'a AwsCall,
        parent_execution_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<Value, AwsCallError>>> {
        let _ = (call, parent_execution_id);
        None
    }
}
