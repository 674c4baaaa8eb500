//! `scriptbox submit`: a step (the flags of `invoke`) or a runbook (as `run`) to the daemon;
//! with `--wait`, the result as soon as the daemon records it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::connect::{exit_for, follow, id_path, print_log_line, refused, unreachable_daemon};
use super::render::{Answered, print_execution};
use super::{CliError, ConnectArgs, OutputFormat, StepFlags, supplied_parameters};
use crate::config::Settings;
use crate::runbook as rb;
use crate::runtimes::Catalog;
use crate::server::types::{
    AttachmentRequest, LimitsRequest, RunbookRequest, StepRequest, SubmitRequest,
    attachment_requests, base64_of,
};

/// `scriptbox submit`
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A runbook to run (as `scriptbox run`); without it, the step flags (as `scriptbox invoke`).
    #[arg(value_name = "DOCUMENT", conflicts_with_all = ["runtime", "handler", "script"])]
    pub document: Option<PathBuf>,
    /// The step (its `--memory` also lowers a runbook's limit).
    #[command(flatten)]
    pub step: StepFlags,
    /// A runbook parameter, `Name=Value`; repeat for several.
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Runbook parameter values from a JSON or YAML map.
    #[arg(long, value_name = "FILE")]
    pub parameters_file: Option<PathBuf>,
    /// Where the runbook's `files` are (default: the document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
    /// A lower CPU limit, thousandths of a CPU.
    #[arg(long, value_name = "N")]
    pub milli_cpus: Option<u64>,
    /// A lower process limit.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// A lower output limit, bytes.
    #[arg(long, value_name = "BYTES")]
    pub output_bytes: Option<u64>,
    /// A lower per-step timeout ceiling, seconds.
    #[arg(long, value_name = "SECS")]
    pub max_step_timeout: Option<u64>,
    /// Block until the execution ends; print its result (the log goes to stderr in text).
    #[arg(long)]
    pub wait: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The request's lower limits, `None` when no flag lowers one.
fn limits(args: &SubmitArgs) -> Option<LimitsRequest> {
    let limits = LimitsRequest {
        timeout_seconds: args.max_step_timeout,
        memory_mb: args.step.memory,
        milli_cpus: args.milli_cpus,
        pids_limit: args.pids_limit,
        output_bytes: args.output_bytes,
    };
    (limits != LimitsRequest::default()).then_some(limits)
}

/// A runbook request: the document read and checked locally as `run` does (errors early, and
/// the `files` are found where `run` finds them); the daemon checks everything again.
fn runbook_request(
    args: &SubmitArgs,
    doc_path: &std::path::Path,
    catalog: &Catalog,
    settings: &Settings,
) -> Result<RunbookRequest, CliError> {
    let options = rb::document::LoadOptions {
        catalog,
        max_timeout_secs: settings.limits.max_timeout_seconds,
        attachments_dir: args.attachments.clone(),
    };
    let doc = rb::document::load_file(doc_path, &options).map_err(|refused| {
        CliError::Invalid(format!("{} is not valid:\n{refused}", doc_path.display()))
    })?;
    let text = std::fs::read_to_string(doc_path)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", doc_path.display())))?;
    let mut parameters = serde_json::Map::new();
    for (name, value) in supplied_parameters(&args.parameters, &args.parameters_file)? {
        let v = match value {
            rb::parameters::Supplied::Text(t) => Value::String(t),
            rb::parameters::Supplied::Typed(v) => v,
        };
        parameters.insert(name, v);
    }
    Ok(RunbookRequest {
        document: text,
        document_name: Some(doc.name.clone()),
        parameters,
        attachments: attachment_requests(&doc.attachments),
    })
}

/// A step request from the step flags (the files read here; the daemon validates).
fn step_request(step: &StepFlags) -> Result<StepRequest, CliError> {
    let Some(runtime) = &step.runtime else {
        return Err(CliError::Invalid(
            "give a runbook DOCUMENT, or a step with --runtime (and --handler, --script...)".into(),
        ));
    };
    let inputs = step.step_inputs()?;
    Ok(StepRequest {
        runtime: runtime.clone(),
        handler: inputs.handler,
        script: inputs.script.and_then(|s| s.as_str().map(str::to_string)),
        attachments: inputs
            .attachments
            .iter()
            .map(|a| AttachmentRequest {
                name: a.name.clone(),
                content: base64_of(&a.bytes),
            })
            .collect(),
        input_payload: inputs.input_payload,
        timeout_seconds: inputs.timeout_seconds,
    })
}

fn build_request(
    args: &SubmitArgs,
    catalog: &dyn Fn() -> Result<Catalog, CliError>,
    settings: &Settings,
) -> Result<SubmitRequest, CliError> {
    let limits = limits(args);
    if let Some(doc_path) = &args.document {
        let runbook = runbook_request(args, doc_path, &catalog()?, settings)?;
        return Ok(SubmitRequest {
            step: None,
            runbook: Some(runbook),
            limits,
        });
    }
    Ok(SubmitRequest {
        step: Some(step_request(&args.step)?),
        runbook: None,
        limits,
    })
}

/// `scriptbox submit`; the catalog is read only for a runbook (the daemon checks a step).
pub(super) async fn submit(
    args: SubmitArgs,
    settings: Settings,
    catalog: &dyn Fn() -> Result<Catalog, CliError>,
) -> Result<ExitCode, CliError> {
    let req = build_request(&args, catalog, &settings)?;
    let client = args.connect.client()?;
    let body = serde_json::to_value(&req).map_err(|e| CliError::Environment(e.into()))?;
    let answer = client
        .post("/v1/executions", &body)
        .await
        .map_err(unreachable_daemon)?;
    if answer.status != 202 {
        return refused(&answer, "the submission");
    }
    let accepted = answer.json();
    let id = accepted["Id"].as_str().unwrap_or_default().to_string();
    if !args.wait {
        if args.output == OutputFormat::Json {
            println!("{accepted}");
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait(&client, &id_path(&id)?, args.output).await
}

/// Follows the execution's log until its end, then prints the execution. The `end` event
/// carries the execution object as recorded at its result, so nothing more is asked; a daemon
/// whose `end` has no object (or a stream cut short) is asked with a GET.
async fn wait(
    client: &crate::client::Client,
    path: &str,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let text = output == OutputFormat::Text;
    loop {
        let ended = follow(client, path, |data| {
            if text {
                print_log_line(&mut std::io::stderr().lock(), data);
            }
        })
        .await;
        let object = match ended
            .as_ref()
            .ok()
            .and_then(|end| end.as_ref()?.execution.clone())
        {
            Some(object) => object,
            None => {
                let answer = client.get(path).await.map_err(unreachable_daemon)?;
                if answer.status != 200 {
                    return refused(&answer, "the execution");
                }
                answer.json()
            }
        };
        let status = object["Status"].as_str().unwrap_or("").to_string();
        if !matches!(status.as_str(), "Queued" | "Running") {
            print_execution(&Answered::execution(object), output)?;
            let _ = std::io::stdout().flush();
            return Ok(exit_for(&status));
        }
        ended?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
