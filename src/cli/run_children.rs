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
use crate::config::Settings;
use crate::runbook::children::{
    self, ChildError, ChildOutcome, ChildRequest, ChildRunbooks, LocalChild, MAX_CHILD_DEPTH,
};
use crate::runbook::executor::{ExecOptions, Execution, RunEvent, StepRunner};
use crate::runbook::{self as rb, document::Runbook};
use crate::runtimes::Catalog;

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
    ) -> DirChildren<'a> {
        DirChildren {
            dir,
            runner,
            base,
            settings,
            catalog,
            verbose,
            ran: Mutex::new(Vec::new()),
        }
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
