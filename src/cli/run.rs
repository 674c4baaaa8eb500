//! `scriptbox run`: a runbook here, each executeScript step in a fresh container.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Map;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::aws_flags::AwsFlags;
use super::run_children::DirChildren;
use super::runbook_input::{load_runbook_input, refuse};
use super::{CliError, OutputFormat, RunbookInput, TextProgress};
use crate::config::Settings;
use crate::execute::Runner;
use crate::result::StepStatus;
use crate::runbook::actions::Action;
use crate::runbook::{self as rb, Refused};
use crate::runtimes::Catalog;
use crate::sandbox::{Backend, Engine, Unavailable};

/// `scriptbox run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook and its inputs.
    #[command(flatten)]
    pub input: RunbookInput,
    /// Output format: text (live progress on stderr) or one GetAutomationExecution-shaped JSON object.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How the runbook's steps reach AWS.
    #[command(flatten)]
    pub aws: AwsFlags,
    /// Where aws:executeAutomation finds its child documents: NAME.yaml, NAME.yml or NAME.json.
    #[arg(long, value_name = "DIR")]
    pub documents: Option<std::path::PathBuf>,
}

pub(super) async fn run_runbook(
    args: RunArgs,
    mut settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let aws = args.aws.access(&mut settings).await?;
    let (doc, supplied) = match load_runbook_input(&args.input, &settings, &catalog, args.output)? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(refused),
    };
    for note in &doc.notes {
        eprintln!("note: {note}");
    }
    let params = match rb::parameters::resolve(&doc.parameters, &supplied) {
        Ok(p) => p,
        Err(problems) => {
            return Ok(refuse(
                &args.input.document,
                "cannot run with these parameters",
                &Refused { problems },
                args.output,
            ));
        }
    };
    if let Some(dir) = &args.documents
        && !dir.is_dir()
    {
        return Err(CliError::Invalid(format!(
            "--documents {}: is not a folder",
            dir.display()
        )));
    }
    // With AWS access on, the AWS actions' calls run in the worker's container too; a child
    // document may run scripts: with --documents the engine is connected for it too.
    let needs_engine = aws.is_some()
        || doc.steps.iter().any(|s| {
            let action = s.action_kind();
            action == Action::ExecuteScript
                || (action == Action::ExecuteAutomation && args.documents.is_some())
        });
    let engine = if needs_engine {
        let engine = Engine::connect(settings.sandbox.clone()).await?;
        if let Err(e) = engine.sweep_leftovers().await {
            tracing::warn!("sweep of leftover containers failed: {e}");
        }
        Some(engine)
    } else {
        None
    };
    let mut progress = TextProgress::new(std::io::stderr(), args.output == OutputFormat::Text);
    let worker = match (&aws, &engine) {
        (Some(_), Some(engine)) => crate::aws::worker::AwsWorker::resolve(
            &catalog,
            settings.aws.api_runtime.as_deref(),
            engine,
        )
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?,
        _ => None,
    };
    let runner = runner_of(engine.as_ref(), aws, &settings).with_aws_worker(worker);
    let documents = args.documents.clone();
    let run = Run {
        runner: &runner,
        settings: &settings,
        catalog: &catalog,
        documents,
        verbose: args.output == OutputFormat::Text,
    };
    let (execution, children) = execute(&doc, params, &run, &mut progress, &shutdown).await;
    if let Some(engine) = &engine {
        engine.finish_cleanup(Duration::from_secs(30)).await;
    }
    print_execution(&execution, &children, args.output)
        .map_err(|e| CliError::Environment(e.into()))?;
    if let Some(e) = execution.engine_error {
        return Err(CliError::Environment(anyhow::anyhow!(e)));
    }
    Ok(if execution.status == StepStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The one runner of this execution: over the engine, or, for a document that needs none (no
/// executeScript step), over [`Unavailable`], which fails any container call; with the AWS
/// access of the settings and flags.
fn runner_of(
    engine: Option<&Engine>,
    aws: Option<Arc<crate::aws::AwsAccess>>,
    settings: &Settings,
) -> Runner {
    let backend: Arc<dyn Backend> = match engine {
        Some(engine) => Arc::new(engine.clone()),
        None => Arc::new(Unavailable::new(settings.sandbox.clone())),
    };
    Runner::new(
        backend,
        None,
        settings.context.clone(),
        settings.output.clone(),
    )
    .with_aws(aws)
    .for_execution()
}

/// What a run uses besides the document.
struct Run<'a> {
    runner: &'a Runner,
    settings: &'a Settings,
    catalog: &'a Catalog,
    /// `--documents DIR`: where children come from.
    documents: Option<std::path::PathBuf>,
    /// Whether the children's progress is shown.
    verbose: bool,
}

/// Runs the document on `run.runner`; returns it and its children's records (as JSON).
async fn execute(
    doc: &rb::document::Runbook,
    params: Map<String, Value>,
    run: &Run<'_>,
    progress: &mut TextProgress<impl Write + Send>,
    shutdown: &CancellationToken,
) -> (rb::executor::Execution, Vec<Value>) {
    let settings = run.settings;
    let id = uuid::Uuid::new_v4().to_string();
    let (sender, inbox) = rb::signals::inbox();
    // A document that can wait for a signal listens for it on an owner-only socket, for as long
    // as it runs (`scriptbox signal ID` finds it); without one its waiting steps fail.
    let listening = if waits_for_signals(doc) {
        match super::signal::listen(&super::signal::runs_dir(), &id, sender) {
            Ok(socket) => {
                tracing::debug!("listening for signals on {}", socket.path().display());
                Some(socket)
            }
            Err(e) => {
                tracing::warn!("cannot listen for this execution's signals: {e}");
                None
            }
        }
    } else {
        None
    };
    let options = || rb::executor::ExecOptions {
        execution_id: Some(id.clone()),
        context: &settings.context,
        catalog: run.catalog,
        max_timeout_secs: settings.limits.max_timeout_seconds,
        max_run_secs: settings.limits.max_runbook_seconds,
        children: None,
        signals: listening.as_ref().map(|_| &inbox),
        depth: 0,
    };
    // Children get ids of their own and no signals (their waiting steps fail at once).
    let base = rb::executor::ExecOptions {
        execution_id: None,
        signals: None,
        ..options()
    };
    let children = run.documents.clone().map(|dir| {
        let emulator = run.runner.aws().is_some_and(|a| a.endpoint_via_relay());
        DirChildren::new(
            dir,
            run.runner,
            &base,
            settings,
            run.catalog,
            run.verbose,
            emulator,
        )
    });
    let exec_options = rb::executor::ExecOptions {
        children: children
            .as_ref()
            .map(|c| c as &dyn crate::runbook::children::ChildRunbooks),
        ..options()
    };
    let mut observer = |event: rb::executor::RunEvent<'_>| progress.on_event(event);
    let execution = rb::executor::execute(
        doc,
        params,
        run.runner,
        &exec_options,
        &mut observer,
        shutdown,
    )
    .await;
    let ran = children.map(|c| c.executions_json()).unwrap_or_default();
    (execution, ran)
}

/// Whether a step of the document may wait for a signal (aws:pause, aws:approve, or inside an
/// aws:loop).
fn waits_for_signals(doc: &rb::document::Runbook) -> bool {
    use crate::runbook::actions::Action;
    doc.steps.iter().any(|s| {
        matches!(
            s.action_kind(),
            Action::Pause | Action::Approve | Action::Loop
        )
    })
}

/// Prints the execution: its GetAutomationExecution-shaped JSON (with its children's records
/// under `ScriptboxChildExecutions`), or a summary and its outputs.
fn print_execution(
    execution: &rb::executor::Execution,
    children: &[Value],
    format: OutputFormat,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        let mut json = rb::output::execution_json(execution);
        if !children.is_empty() {
            json["ScriptboxChildExecutions"] = Value::Array(children.to_vec());
        }
        return writeln!(out, "{json}");
    }
    writeln!(
        out,
        "{} ({} step{} run, execution {})",
        execution.status,
        execution.steps.len(),
        if execution.steps.len() == 1 { "" } else { "s" },
        execution.id
    )?;
    if let Some(f) = &execution.failure_message {
        writeln!(out, "{f}")?;
    }
    if !execution.outputs.is_empty() {
        writeln!(out, "Outputs:")?;
        for (name, v) in &execution.outputs {
            let shown = match v {
                Some(v) => serde_json::to_string(&rb::output::strings(v)).unwrap_or_default(),
                None => format!("[{:?}]", rb::output::NO_OUTPUT),
            };
            writeln!(out, "  {name} = {shown}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "schemaVersion: '0.3'
parameters:
  N: {type: Integer, default: 3}
mainSteps:
  - name: check
    action: aws:branch
    inputs:
      Choices:
        - NextStep: big
          Variable: '{{ N }}'
          NumericGreater: 10
      Default: small
  - name: big
    action: aws:sleep
    inputs: {Duration: PT0S}
    isEnd: true
  - name: small
    action: aws:sleep
    inputs: {Duration: PT0.01S}
";

    /// Runs DOC without an engine and returns what the progress wrote.
    async fn progress_of(verbose: bool) -> String {
        let catalog = Catalog::builtin();
        let settings = Settings::default();
        let options = super::super::runbook_input::load_options(&settings, &catalog, &None);
        let doc = rb::document::load_str(
            DOC,
            "Branchy.yaml",
            rb::yaml::Format::Yaml,
            std::path::Path::new("."),
            &options,
        )
        .expect("the document is valid");
        let params = rb::parameters::resolve(&doc.parameters, &[]).expect("defaults");
        let mut progress = TextProgress::new(Vec::new(), verbose);
        let runner = runner_of(None, None, &settings);
        let run = Run {
            runner: &runner,
            settings: &settings,
            catalog: &catalog,
            documents: None,
            verbose,
        };
        let (execution, _) =
            execute(&doc, params, &run, &mut progress, &CancellationToken::new()).await;
        assert_eq!(execution.status, StepStatus::Success);
        String::from_utf8(progress.into_inner()).expect("UTF-8")
    }

    #[tokio::test]
    async fn text_progress_shows_each_step_its_outcome_and_the_branch_taken() {
        let text = progress_of(true).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "▶ check (aws:branch)");
        assert!(
            lines[1].starts_with("✔ Success ") && lines[1].ends_with(" ms → small"),
            "{text}"
        );
        assert_eq!(lines[2], "▶ small (aws:sleep)");
        assert!(
            lines[3].starts_with("✔ Success ") && lines[3].ends_with(" ms"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn text_progress_is_quiet_for_json_output() {
        assert_eq!(progress_of(false).await, "");
    }
}
