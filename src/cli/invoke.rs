//! `scriptbox invoke`: one step in a fresh container, here, without the daemon.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::aws_flags::AwsFlags;
use super::{CliError, OutputFormat, StepFlags};
use crate::config::Settings;
use crate::execute::{ExecuteOptions, StepAws, execute_step};
use crate::result::{LogLine, LogStream, StepResult, StepStatus};
use crate::runtimes::Catalog;
use crate::sandbox::Engine;
use crate::step;

/// `scriptbox invoke`
#[derive(Debug, Args)]
#[command(mut_arg("runtime", |a| a.required(true)))]
pub struct InvokeArgs {
    /// The step.
    #[command(flatten)]
    pub step: StepFlags,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How the step reaches AWS.
    #[command(flatten)]
    pub aws: AwsFlags,
    /// The IAM role whose temporary credentials the step gets (as a runbook's assumeRole;
    /// with --aws or --aws-endpoint).
    #[arg(long, value_name = "ARN")]
    pub assume_role: Option<String>,
}

/// The mark a log line gets on the terminal: `|` stdout, `!` stderr, `*` scriptbox's notes.
pub(crate) fn log_mark(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "|",
        LogStream::Stderr => "!",
        LogStream::Scriptbox => "*",
    }
}

/// `--memory` in bytes: at least 6 MiB, and never above the operator's limit (a request can only
/// lower it).
fn memory_limit(mb: Option<u64>, settings: &Settings) -> Result<Option<i64>, CliError> {
    let Some(mb) = mb else {
        return Ok(None);
    };
    if mb < 6 {
        return Err(CliError::Invalid(format!(
            "--memory: must be at least 6 MiB, got {mb}"
        )));
    }
    // Checked: a huge value must be refused, never wrap into a negative limit.
    i64::try_from(mb)
        .ok()
        .and_then(|m| m.checked_mul(1024 * 1024))
        .filter(|b| *b <= settings.sandbox.memory_bytes)
        .map(Some)
        .ok_or_else(|| {
            CliError::Invalid(format!(
                "--memory: {mb} MiB is above the configured limit of {} MiB; a request can only lower it",
                settings.sandbox.memory_bytes / (1024 * 1024)
            ))
        })
}

pub(super) async fn invoke(
    args: InvokeArgs,
    mut settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let aws = args.aws.access(&mut settings).await?;
    if let Some(role) = &args.assume_role {
        if aws.is_none() {
            return Err(CliError::Invalid(
                "--assume-role: needs --aws or --aws-endpoint (AWS access is off)".into(),
            ));
        }
        crate::aws::credentials::check_role_arn(role)
            .map_err(|e| CliError::Invalid(format!("--assume-role: {e}")))?;
    }
    let inputs = args.step.step_inputs()?;
    let memory_bytes = memory_limit(args.step.memory, &settings)?;
    let step = step::validate(&inputs, &catalog, settings.limits.max_timeout_seconds)
        .map_err(|e| CliError::Invalid(format!("invalid step:\n{e}")))?;
    let engine = Engine::connect(settings.sandbox.clone()).await?;
    // Containers of scriptbox processes that died are removed first (by label only).
    if let Err(e) = engine.sweep_leftovers().await {
        tracing::warn!("sweep of leftover containers failed: {e}");
    }
    let text = args.output == OutputFormat::Text;
    let mut live = |line: &LogLine| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "  {} {}", log_mark(line.stream), line.text);
    };
    let options = ExecuteOptions {
        execution_id: None,
        memory_bytes,
        context: &settings.context,
        limits: &settings.output,
        on_log: if text { Some(&mut live) } else { None },
        automation_execution_id: None,
        aws: aws.as_deref().map(|access| StepAws {
            access,
            budget: access.new_budget(),
            role: args.assume_role.clone(),
        }),
    };
    let result = execute_step(&engine, &step, options, &shutdown).await;
    engine.finish_cleanup(Duration::from_secs(30)).await;
    let result = result.map_err(|e| CliError::Environment(e.into()))?;
    print_result(&result, args.output).map_err(CliError::Environment)?;
    Ok(if result.status == StepStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints a step result as `invoke` does (text: status line, payload, failure; json: the object).
pub(crate) fn print_result(result: &StepResult, format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer(&mut out, result).context("writing the result")?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            if let Some(note) = result.log.iter().find(|l| l.stream == LogStream::Scriptbox) {
                eprintln!("  * {}", note.text);
            }
            writeln!(
                out,
                "{} ({}, {} ms)",
                result.status, result.runtime, result.duration_ms
            )?;
            if result.status == StepStatus::Success {
                writeln!(out, "Payload:")?;
                writeln!(out, "{}", serde_json::to_string_pretty(&result.payload)?)?;
            }
            if let Some(message) = &result.failure_message {
                writeln!(out, "{message}")?;
            }
            if result.log_truncated {
                writeln!(out, "(the log was truncated at its limit)")?;
            }
        }
    }
    Ok(())
}
