//! The port through which `aws:executeAutomation` starts a child execution and awaits it: the
//! daemon's scheduler implements it (the child is a real execution in the store), and
//! `scriptbox run` implements it over `--documents DIR`.
//!
//! The shapes live here with what every implementation shares: the child's parameters from
//! `RuntimeParameters`, the parent's role when the child's document names none, and the child's
//! outcome (its document outputs, in order) from its execution; [`run_document`] runs a loaded
//! child in this process (both implementations run children inline, on the parent's place).
//!
//! Decisions where AWS is silent **(ours)**:
//! - A child runs inside its parent's run, one level deeper ([`ChildRequest::depth`]); past
//!   [`MAX_CHILD_DEPTH`] levels the step fails before a child is started (a document that
//!   starts itself is stopped there).
//! - A child whose document has no `assumeRole` runs as its parent's role (AWS: "the secondary
//!   automation runs in the context of the user who initiated the primary automation").

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::document::Runbook;
use super::executor::{self, ExecOptions, Execution, RunEvent, StepRunner};
use super::parameters::{self, Supplied};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::result::StepStatus;

/// The most levels of `aws:executeAutomation` below a top-level execution **(ours)**.
pub const MAX_CHILD_DEPTH: u32 = 5;

/// The most `RuntimeParameters` one child takes (AWS's limit on StartAutomationExecution's
/// `Parameters`: 200 entries).
pub const MAX_RUNTIME_PARAMETERS: usize = 200;

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
    /// Its document outputs (`step.Output` → AWS's list of strings).
    pub outputs: Map<String, Value>,
    /// The same outputs flattened in the child's declaration order: the parent step's
    /// `Output` (StringList).
    pub output_values: Vec<String>,
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

/// The document name of `written`: a name as it is, or the last part of a document ARN
/// (`arn:aws:ssm:REGION:ACCOUNT:document/NAME`).
pub fn document_name_of(written: &str) -> &str {
    if written.starts_with("arn:") {
        written.rsplit_once("document/").map_or(written, |(_, n)| n)
    } else {
        written
    }
}

/// `RuntimeParameters` as the parameter code takes them: a string as `-p Name=Value` text
/// (converted by the parameter's type), anything else typed (a list, a map, a number).
pub fn supplied(runtime_parameters: &Map<String, Value>) -> Vec<(String, Supplied)> {
    runtime_parameters
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(t) => Supplied::Text(t.clone()),
                other => Supplied::Typed(other.clone()),
            };
            (k.clone(), s)
        })
        .collect()
}

/// The child's parameters, checked against its document; refused with every problem.
pub fn child_parameters(
    rb: &Runbook,
    runtime_parameters: &Map<String, Value>,
) -> Result<Map<String, Value>, ChildError> {
    parameters::resolve(&rb.parameters, &supplied(runtime_parameters)).map_err(|problems| {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        ChildError::Refused(format!(
            "the child document {} cannot run with these RuntimeParameters: {}",
            rb.name,
            text.join("; ")
        ))
    })
}

/// Gives the child its parent's role when its document names none.
pub fn with_parent_role(rb: &mut Runbook, parent_role: Option<&str>) {
    let names_none = match &rb.assume_role {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if names_none && let Some(role) = parent_role {
        rb.assume_role = Some(Value::String(role.to_string()));
    }
}

/// The outcome of a child's execution: status, failure, and its document outputs.
pub fn outcome_of(execution: &Execution) -> ChildOutcome {
    let mut outputs = Map::new();
    let mut output_values = Vec::new();
    for (name, value) in &execution.outputs {
        let strings = match value {
            Some(v) => super::output::strings(v),
            None => vec![super::output::NO_OUTPUT.to_string()],
        };
        output_values.extend(strings.iter().cloned());
        outputs.insert(
            name.clone(),
            Value::Array(strings.into_iter().map(Value::String).collect()),
        );
    }
    ChildOutcome {
        execution_id: execution.id.clone(),
        status: execution.status,
        outputs,
        output_values,
        failure_message: execution.failure_message.clone(),
    }
}

/// What [`run_document`] runs a child with besides the document.
pub struct LocalChild<'a> {
    /// The child's execution id.
    pub execution_id: String,
    /// Runs its steps (the parent's runner: the same limits and AWS access).
    pub runner: &'a dyn StepRunner,
    /// The parent's options: context, catalog, limits; depth and children are set here.
    pub parent_options: &'a ExecOptions<'a>,
    /// Starts the child's own children.
    pub children: &'a dyn ChildRunbooks,
    /// Told of the child's events.
    pub observer: &'a mut (dyn FnMut(RunEvent<'_>) + Send),
}

/// Runs a loaded child document with `params` (already checked), one level deeper than its
/// parent, with the parent's role when it names none; `cancel` cancels it.
pub async fn run_document(
    mut rb: Runbook,
    params: Map<String, Value>,
    request: &ChildRequest,
    child: LocalChild<'_>,
    cancel: &CancellationToken,
) -> Execution {
    with_parent_role(&mut rb, request.assume_role.as_deref());
    let options = ExecOptions {
        execution_id: Some(child.execution_id),
        context: child.parent_options.context,
        catalog: child.parent_options.catalog,
        max_timeout_secs: child.parent_options.max_timeout_secs,
        max_run_secs: child.parent_options.max_run_secs,
        children: Some(child.children),
        // Signals are sent to an execution by its id: a child has its own inbox or none.
        signals: None,
        depth: request.depth,
    };
    executor::execute(&rb, params, child.runner, &options, child.observer, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arns_name_their_document() {
        assert_eq!(document_name_of("child-1"), "child-1");
        assert_eq!(
            document_name_of("arn:aws:ssm:eu-west-1:111122223333:document/Shared-Doc"),
            "Shared-Doc"
        );
        let s = supplied(&serde_json::from_value(json!({"A": "x", "B": ["y", "z"]})).unwrap());
        assert!(matches!(&s[0].1, Supplied::Text(t) if t == "x"));
        assert!(matches!(&s[1].1, Supplied::Typed(v) if v == &json!(["y", "z"])));
    }
}
