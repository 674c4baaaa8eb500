//! The child runbooks of `scriptbox run --documents DIR`: `aws:executeAutomation`'s
//! `DocumentName` is a file `DIR/NAME.yaml`, `NAME.yml` or `NAME.json` (by its stem), checked as
//! any runbook is and run in this process with the parent's runner (its limits, its AWS access).
//!
//! Each child is a real execution with its own id; its progress is shown indented under its
//! parent's step, and `--output json` lists every child's record
//! (`ScriptboxChildExecutions`, each with its `ParentAutomationExecutionId`).
//!
//! Decisions where AWS is silent **(ours)**: a file is one version, `1`: `DocumentVersion`
//! `$DEFAULT`, `$LATEST` or `1` names it, another number is not found; a document file is at
//! most [`MAX_CHILD_DOCUMENT_BYTES`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::TextProgress;
use crate::aws::api::{AwsCall, AwsCallError};
use crate::config::Settings;
use crate::runbook::children::{
    self, ChildError, ChildOutcome, ChildRequest, ChildRunbooks, LocalChild, MAX_CHILD_DEPTH,
};
use crate::runbook::executor::{ExecOptions, Execution, RunEvent, StepRunner};
use crate::runbook::{self as rb, document::Runbook};
use crate::runtimes::Catalog;
use crate::timestamp::Timestamp;

/// The largest child document file read **(ours)**.
pub const MAX_CHILD_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// The extensions a child document may have, in the order they are looked for.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Children from a folder of documents.
pub(super) struct DirChildren<'a> {
    /// The folder.
    dir: PathBuf,
    /// Runs the children's steps.
    runner: &'a dyn StepRunner,
    /// The parent's options (context, catalog, limits).
    base: &'a ExecOptions<'a>,
    settings: &'a Settings,
    catalog: &'a Catalog,
    /// Whether progress is shown (text output).
    verbose: bool,
    /// Whether the endpoint is an emulator: then a runbook's own SSM automation calls are
    /// answered here.
    emulator: bool,
    /// The depth of each child started so far (top-level executions are 0).
    depths: Mutex<Vec<(String, u32)>>,
    /// Every child that ran, with its parent's id, in the order they ended.
    ran: Mutex<Vec<(String, Execution)>>,
}

impl<'a> DirChildren<'a> {
    /// Children from `dir`, run on `runner` with the parent's `base` options.
    pub fn new(
        dir: PathBuf,
        runner: &'a dyn StepRunner,
        base: &'a ExecOptions<'a>,
        settings: &'a Settings,
        catalog: &'a Catalog,
        verbose: bool,
        emulator: bool,
    ) -> DirChildren<'a> {
        DirChildren {
            dir,
            runner,
            base,
            settings,
            catalog,
            verbose,
            emulator,
            depths: Mutex::new(Vec::new()),
            ran: Mutex::new(Vec::new()),
        }
    }

    /// The depth of execution `id`: 0 unless it is a child started here.
    fn depth_of(&self, id: &str) -> u32 {
        self.depths
            .lock()
            .ok()
            .and_then(|d| d.iter().find(|(i, _)| i == id).map(|(_, n)| *n))
            .unwrap_or(0)
    }

    /// Every child's record, with its parent's id.
    fn ran(&self) -> Vec<(String, Execution)> {
        self.ran.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// StartAutomationExecution: the child runs to its end before the answer **(ours: `run`
    /// runs one execution at a time)**; a runbook that waits for it then finds it ended.
    async fn start_call(&self, call: &AwsCall, parent: &str) -> Result<Value, AwsCallError> {
        let p = &call.parameters;
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        let name = text("DocumentName").ok_or_else(|| {
            ssm_failure(
                "StartAutomationExecution",
                "ValidationException",
                "DocumentName is required",
            )
        })?;
        let runtime_parameters = match p.get("Parameters") {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let request = ChildRequest {
            document_name: name,
            document_version: text("DocumentVersion"),
            runtime_parameters,
            parent_execution_id: parent.to_string(),
            depth: self.depth_of(parent).saturating_add(1),
            assume_role: None,
        };
        let never = CancellationToken::new();
        match self.run_child(request, &never).await {
            Ok(outcome) => Ok(json!({"AutomationExecutionId": outcome.execution_id})),
            Err(ChildError::NotFound(m)) => Err(ssm_failure(
                "StartAutomationExecution",
                "AutomationDefinitionNotFoundException",
                &m,
            )),
            Err(e) => Err(ssm_failure(
                "StartAutomationExecution",
                "InvalidAutomationExecutionParametersException",
                &e.to_string(),
            )),
        }
    }

    /// GetAutomationExecution of a child started here.
    fn get_call(&self, call: &AwsCall) -> Result<Value, AwsCallError> {
        let id = call
            .parameters
            .get("AutomationExecutionId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ran = self.ran();
        let (parent, e) = ran.iter().find(|(_, e)| e.id == id).ok_or_else(|| {
            ssm_failure(
                "GetAutomationExecution",
                "AutomationExecutionNotFoundException",
                &format!("Automation execution {id} not found"),
            )
        })?;
        let mut v = boto3_times(rb::output::execution_json(e));
        v["ParentAutomationExecutionId"] = json!(parent);
        v["Mode"] = json!("Auto");
        Ok(json!({ "AutomationExecution": v }))
    }

    /// DescribeAutomationExecutions of the children started here, newest first; filters
    /// `ExecutionId`, `ParentExecutionId`, `DocumentNamePrefix`, `ExecutionStatus` (any other
    /// matches nothing, as the daemon answers).
    fn describe_call(&self, call: &AwsCall) -> Value {
        let filters: Vec<(String, Vec<String>)> = call
            .parameters
            .get("Filters")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        let key = f["Key"].as_str().unwrap_or("").to_string();
                        let values = f["Values"]
                            .as_array()
                            .map(|v| {
                                v.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (key, values)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut list = Vec::new();
        for (parent, e) in self.ran().iter().rev() {
            let keep = filters.iter().all(|(k, vals)| match k.as_str() {
                "ExecutionId" => vals.contains(&e.id),
                "ParentExecutionId" => vals.contains(parent),
                "DocumentNamePrefix" => vals.iter().any(|v| e.document_name.starts_with(v)),
                "ExecutionStatus" => vals.iter().any(|v| v == e.status.as_str()),
                _ => false,
            });
            if keep {
                let full = rb::output::execution_json(e);
                let mut m = serde_json::Map::new();
                for k in [
                    "AutomationExecutionId",
                    "DocumentName",
                    "AutomationExecutionStatus",
                    "ExecutionStartTime",
                    "ExecutionEndTime",
                    "Outputs",
                    "FailureMessage",
                ] {
                    if let Some(v) = full.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                m.insert("ParentAutomationExecutionId".into(), json!(parent));
                m.insert("Mode".into(), json!("Auto"));
                m.insert("AutomationType".into(), json!("Local"));
                list.push(boto3_times(Value::Object(m)));
            }
        }
        json!({ "AutomationExecutionMetadataList": list })
    }

    /// Every child's record as `--output json` shows it.
    pub fn executions_json(&self) -> Vec<Value> {
        let ran = self.ran.lock().map(|r| r.clone()).unwrap_or_default();
        ran.iter()
            .map(|(parent, e)| {
                let mut v = rb::output::execution_json(e);
                v["ParentAutomationExecutionId"] = json!(parent);
                v
            })
            .collect()
    }

    /// The file of document `name`, if there is one.
    fn find(&self, name: &str) -> Option<PathBuf> {
        EXTENSIONS
            .iter()
            .map(|ext| self.dir.join(format!("{name}.{ext}")))
            .find(|p| p.is_file())
    }

    /// Loads and checks the child's document.
    fn load(&self, request: &ChildRequest) -> Result<Runbook, ChildError> {
        let name = children::document_name_of(&request.document_name);
        let path = self.find(name).ok_or_else(|| {
            ChildError::NotFound(format!(
                "Automation document {name} does not exist in {} (looked for {name}.yaml, {name}.yml, {name}.json)",
                self.dir.display()
            ))
        })?;
        if let Some(v) = request
            .document_version
            .as_deref()
            .filter(|v| !matches!(*v, "$DEFAULT" | "$LATEST" | "1"))
        {
            return Err(ChildError::NotFound(format!(
                "Automation document {name} has no version {v} (a file in --documents is version 1)"
            )));
        }
        check_size(&path)?;
        let options = super::runbook_input::load_options(self.settings, self.catalog, &None);
        rb::document::load_file(&path, &options).map_err(|refused| {
            ChildError::Refused(format!(
                "the child document {} is not valid:\n{refused}",
                path.display()
            ))
        })
    }
}

/// An SSM error as botocore reports it.
fn ssm_failure(op: &str, code: &'static str, message: &str) -> AwsCallError {
    AwsCallError::Failed {
        kind: code,
        message: format!("An error occurred ({code}) when calling the {op} operation: {message}"),
    }
}

/// Every `...Time` value (RFC 3339, as the record renders it) as boto3 renders a timestamp.
fn boto3_times(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match &v {
                        Value::String(s) if k.ends_with("Time") => Timestamp::parse(s)
                            .map_or(v.clone(), |t| {
                                json!(t.utc().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
                            }),
                        _ => boto3_times(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(boto3_times).collect()),
        other => other,
    }
}

fn check_size(path: &Path) -> Result<(), ChildError> {
    let len = std::fs::metadata(path)
        .map_err(|e| ChildError::NotFound(format!("cannot read {}: {e}", path.display())))?
        .len();
    if len > MAX_CHILD_DOCUMENT_BYTES {
        return Err(ChildError::Refused(format!(
            "{} is {len} bytes; a child document is at most {MAX_CHILD_DOCUMENT_BYTES}",
            path.display()
        )));
    }
    Ok(())
}

impl ChildRunbooks for DirChildren<'_> {
    fn run_child<'b>(
        &'b self,
        request: ChildRequest,
        cancel: &'b CancellationToken,
    ) -> BoxFuture<'b, Result<ChildOutcome, ChildError>> {
        Box::pin(async move {
            if request.depth > MAX_CHILD_DEPTH {
                return Err(ChildError::TooDeep);
            }
            let doc = self.load(&request)?;
            let params = children::child_parameters(&doc, &request.runtime_parameters)?;
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(mut d) = self.depths.lock() {
                d.push((id.clone(), request.depth));
            }
            let indent = "  ".repeat(usize::try_from(request.depth).unwrap_or(0));
            let mut progress = TextProgress::new(Indented::new(indent.clone()), self.verbose);
            if self.verbose {
                eprintln!(
                    "{indent}↳ child execution {id} of {} (document {})",
                    request.parent_execution_id, doc.name
                );
            }
            let mut observer = |event: RunEvent<'_>| progress.on_event(event);
            let child = LocalChild {
                execution_id: id,
                runner: self.runner,
                parent_options: self.base,
                children: self,
                observer: &mut observer,
            };
            let execution = children::run_document(doc, params, &request, child, cancel).await;
            if self.verbose {
                eprintln!(
                    "{indent}↳ child execution {} ended {}",
                    execution.id, execution.status
                );
            }
            let outcome = children::outcome_of(&execution);
            if let Ok(mut ran) = self.ran.lock() {
                ran.push((request.parent_execution_id.clone(), execution));
            }
            Ok(outcome)
        })
    }

    fn answer_ssm_call<'b>(
        &'b self,
        call: &'b AwsCall,
        parent_execution_id: &'b str,
    ) -> Option<BoxFuture<'b, Result<Value, AwsCallError>>> {
        let op = children::ssm_automation_operation(call)?;
        if !self.emulator {
            return None;
        }
        Some(Box::pin(async move {
            match op {
                "StartAutomationExecution" => self.start_call(call, parent_execution_id).await,
                "GetAutomationExecution" => self.get_call(call),
                _ => Ok(self.describe_call(call)),
            }
        }))
    }
}

/// Writes lines to stderr with an indent (a child's progress under its parent's step).
struct Indented {
    indent: String,
    line: Vec<u8>,
}

impl Indented {
    fn new(indent: String) -> Indented {
        Indented {
            indent,
            line: Vec::new(),
        }
    }
}

impl std::io::Write for Indented {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for b in buf {
            self.line.push(*b);
            if *b == b'\n' {
                let mut err = std::io::stderr().lock();
                err.write_all(self.indent.as_bytes())?;
                err.write_all(&self.line)?;
                self.line.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
