//! The daemon's child runbooks from the SSM facade's documents ([`SsmChildren`], the
//! scheduler's [`ChildDocuments`] source), and the answers to a runbook's own SSM automation
//! calls when the endpoint is an emulator that lacks them.
//!
//! Decisions where AWS is silent **(ours)**:
//! - A child's document is its parent's tenant's; its SSM facts (tenant, version, `ExecutedBy`)
//!   are its parent's, so the SSM API shows it to that tenant with its
//!   `ParentAutomationExecutionId`.
//! - A native submission belongs to no tenant: its children's documents are the default
//!   tenant's, and the children, like their parent, are seen on the native API only. Its own
//!   SSM calls are answered as the default tenant's.
//! - Answers are rendered as boto3 renders a response: timestamps as ISO 8601
//!   (`2026-01-02T03:04:05.250000+00:00`); an SSM error is the call's failure, its type the
//!   exception's name and its message botocore's (`An error occurred (X) when calling ...`).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::SsmState;
use super::automation;
use super::documents::{self, ExecRow};
use super::errors::SsmError;
use super::sigv4::{Caller, DEFAULT_TENANT};
use crate::aws::api::{AwsCall, AwsCallError};
use crate::runbook::children::ChildError;
use crate::server::children::{ChildDocument, ChildDocuments, ssm_automation_operation};

/// Children's documents from the SSM document store.
pub struct SsmChildren {
    st: SsmState,
}

impl SsmChildren {
    /// The source over the daemon's SSM state.
    pub fn new(st: SsmState) -> Arc<SsmChildren> {
        Arc::new(SsmChildren { st })
    }

    /// The parent's SSM facts, if it was started through the SSM API (or is such a child).
    async fn parent_row(&self, parent_id: &str) -> Option<ExecRow> {
        automation::ssm_row(&self.st, parent_id)
            .await
            .ok()
            .flatten()
    }

    /// Whom the parent's calls are made as: its tenant and caller, else the default tenant.
    async fn caller_of(&self, parent_id: &str) -> Caller {
        match self.parent_row(parent_id).await {
            Some(row) => Caller {
                access_key: row.executed_by,
                tenant: row.tenant,
            },
            None => Caller {
                access_key: None,
                tenant: DEFAULT_TENANT.to_string(),
            },
        }
    }

    async fn answer(&self, op: &str, call: &AwsCall, parent_id: &str) -> Result<Value, SsmError> {
        let caller = self.caller_of(parent_id).await;
        let req = Value::Object(call.parameters.clone());
        let answer = match op {
            "StartAutomationExecution" => {
                automation::start_with_parent(&self.st, &caller, &req, Some(parent_id)).await?
            }
            "GetAutomationExecution" => automation::get(&self.st, &caller, &req).await?,
            _ => automation::describe_executions(&self.st, &caller, &req).await?,
        };
        Ok(as_boto3_renders(answer))
    }
}

/// A JSON 1.1 answer as boto3 renders it: every `...Time` number (epoch seconds) as ISO 8601.
pub fn as_boto3_renders(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (&v, k.ends_with("Time")) {
                        (Value::Number(n), true) => n
                            .as_f64()
                            .and_then(iso_8601)
                            .map(Value::String)
                            .unwrap_or(v),
                        _ => as_boto3_renders(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(as_boto3_renders).collect()),
        other => other,
    }
}

/// Epoch seconds as Python's `datetime.isoformat()` of an aware UTC datetime.
fn iso_8601(epoch: f64) -> Option<String> {
    if !epoch.is_finite() {
        return None;
    }
    let micros = (epoch * 1e6).round();
    // Within chrono's range (and i64's) before the conversion, which saturates otherwise.
    if micros.abs() > 1e17 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // Reason: bounded to ±1e17 just above.
    let micros = micros as i64;
    let t = chrono::DateTime::from_timestamp_micros(micros)?;
    Some(t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
}

fn call_failure(op: &str, e: SsmError) -> AwsCallError {
    AwsCallError::Failed {
        kind: e.code,
        message: format!(
            "An error occurred ({}) when calling the {op} operation: {}",
            e.code, e.message
        ),
    }
}

impl ChildDocuments for SsmChildren {
    fn find<'a>(
        &'a self,
        parent_id: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ChildDocument, ChildError>> {
        Box::pin(async move {
            let caller = self.caller_of(parent_id).await;
            let mut req = json!({ "DocumentName": name });
            if let Some(v) = version {
                req["DocumentVersion"] = json!(v);
            }
            match documents::runnable(&self.st, &caller, &req).await {
                Ok(found) => Ok(ChildDocument {
                    name: name.to_string(),
                    version: found.version.to_string(),
                    content: found.content,
                    files: found.files,
                }),
                Err(e) if e.code.starts_with("AutomationDefinition") => {
                    Err(ChildError::NotFound(e.message))
                }
                Err(e) => Err(ChildError::Refused(format!("{}: {}", e.code, e.message))),
            }
        })
    }

    fn started<'a>(
        &'a self,
        child_id: &'a str,
        parent_id: &'a str,
        doc: &'a ChildDocument,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(parent) = self.parent_row(parent_id).await else {
                return;
            };
            let row = ExecRow {
                document_name: doc.name.clone(),
                document_version: doc.version.clone(),
                executed_by: parent.executed_by,
                tenant: parent.tenant,
            };
            let id = child_id.to_string();
            match self
                .st
                .docs
                .with(move |c| documents::insert_execution(c, &id, &row))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("cannot record the SSM facts of {child_id}: {e}"),
                Err(e) => tracing::error!("cannot record the SSM facts of {child_id}: {e}"),
            }
        })
    }

    fn answer_ssm_call<'a>(
        &'a self,
        call: &'a AwsCall,
        parent_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<Value, AwsCallError>>> {
        let op = ssm_automation_operation(call)?;
        Some(Box::pin(async move {
            self.answer(op, call, parent_id)
                .await
                .map_err(|e| call_failure(op, e))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rendered_as_boto3_renders_them() {
        let v = as_boto3_renders(json!({
            "AutomationExecution": {
                "ExecutionStartTime": 1_767_323_045.25,
                "StepExecutions": [{"ExecutionEndTime": 1_767_323_046.0, "StepName": "a"}],
                "DocumentName": "d",
            },
            "Count": 3,
            "BadTime": 1e300,
        }));
        assert_eq!(
            v["AutomationExecution"]["ExecutionStartTime"],
            "2026-01-02T03:04:05.250000+00:00"
        );
        assert_eq!(
            v["AutomationExecution"]["StepExecutions"][0]["ExecutionEndTime"],
            "2026-01-02T03:04:06.000000+00:00"
        );
        assert_eq!(v["AutomationExecution"]["DocumentName"], "d");
        assert_eq!(v["Count"], 3);
        assert_eq!(v["BadTime"], 1e300);
    }
}
