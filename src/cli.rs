//! The command line: argument parsing, reading the user's files, printing results, exit codes.
//!
//! Exit codes: 0 the step succeeded; 1 it failed, timed out or was cancelled; 2 invalid input
//! (the message names the field and the rule); 3 the environment is not ready (no Docker engine,
//! image missing, a build failed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::execute::{ExecuteOptions, execute_step};
use crate::images::{self, BuildOutcome, Progress};
use crate::result::{LogLine, LogStream, StepResult, StepStatus};
use crate::runtimes::Catalog;
use crate::sandbox::{Engine, SandboxError};
use crate::step::{self, Attachment, StepInputs};

/// Run AWS Systems Manager Automation aws:executeScript steps in fresh, hardened containers.
#[derive(Debug, Parser)]
#[command(name = "scriptbox", version, about, long_about = None)]
pub struct Cli {
    /// Operator settings (TOML): sandbox limits, context values, output caps.
    #[arg(long, global = true, env = "SCRIPTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A runtime catalog to use instead of the built-in runtimes.toml.
    #[arg(
        long = "runtimes-file",
        global = true,
        env = "SCRIPTBOX_RUNTIMES",
        value_name = "FILE"
    )]
    pub runtimes_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one aws:executeScript step in a fresh container and print its result.
    Invoke(InvokeArgs),
    /// List the runtimes, their images, whether each image is present, and AWS's status.
    Runtimes(RuntimesArgs),
    /// Build runtime images.
    Images {
        /// What to do with images.
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Remove containers left behind by a scriptbox that died (decided by labels alone).
    Sweep,
    /// Print the settings in force (the defaults, or --config merged over them) as TOML.
    Config,
}

/// `scriptbox images ...`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build runtime images: from the Dockerfile where its base can be pulled, else offline.
    Build {
        /// Runtimes to build (default: every runtime).
        runtimes: Vec<String>,
        /// Rebuild even when the image is current.
        #[arg(long)]
        force: bool,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object on stdout.
    Json,
}

/// `scriptbox invoke`
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The Runtime, e.g. python3.11 or "PowerShell 7.0".
    #[arg(long)]
    pub runtime: String,
    /// The Handler (Python): `function`, or `file.function` for an attachment.
    #[arg(long)]
    pub handler: Option<String>,
    /// The inline Script, read from a file.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// An attachment (.py or .zip); repeat for several.
    #[arg(long = "attachment", value_name = "FILE")]
    pub attachments: Vec<PathBuf>,
    /// The InputPayload as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// The InputPayload from a JSON file.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// timeoutSeconds (1..600 unless the operator raised the ceiling).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<i64>,
    /// A lower memory limit, in MiB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `scriptbox runtimes`
#[derive(Debug, Args)]
pub struct RuntimesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// A failure of the CLI itself, with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad input: exit 2.
    Invalid(String),
    /// The environment is not ready: exit 3.
    Environment(anyhow::Error),
}

impl From<SandboxError> for CliError {
    fn from(e: SandboxError) -> Self {
        CliError::Environment(e.into())
    }
}

/// Runs the CLI and returns the process exit code.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> ExitCode {
    let outcome = dispatch(cli, shutdown).await;
    match outcome {
        Ok(code) => code,
        Err(CliError::Invalid(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Environment(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn load_settings(cli: &Cli) -> Result<Settings, CliError> {
    match &cli.config {
        Some(path) => Settings::load(path).map_err(|e| CliError::Invalid(format!("--config: {e}"))),
        None => Ok(Settings::default()),
    }
}

fn load_catalog(cli: &Cli) -> Result<Catalog, CliError> {
    match &cli.runtimes_file {
        Some(path) => {
            Catalog::load(path).map_err(|e| CliError::Invalid(format!("--runtimes-file: {e}")))
        }
        None => Ok(Catalog::builtin()),
    }
}

async fn dispatch(cli: Cli, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
    let settings = load_settings(&cli)?;
    let catalog = load_catalog(&cli)?;
    match cli.command {
        Command::Invoke(args) => invoke(args, settings, catalog, shutdown).await,
        Command::Runtimes(args) => runtimes(args, settings, catalog).await,
        Command::Images {
            command: ImagesCommand::Build { runtimes, force },
        } => build_images(runtimes, force, settings, catalog).await,
        Command::Config => {
            let text =
                toml::to_string_pretty(&settings).map_err(|e| CliError::Environment(e.into()))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep => {
            let engine = Engine::connect(settings.sandbox).await?;
            let report = engine.sweep_leftovers().await?;
            println!(
                "removed {} leftover container(s); {} still owned by a running scriptbox",
                report.removed.len(),
                report.kept
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Invalid(format!("{field}: cannot read {}: {e}", path.display())))
}

/// Turns the flags into step inputs, reading every file (errors name the flag).
fn step_inputs(args: &InvokeArgs) -> Result<StepInputs, CliError> {
    let script = match &args.script {
        Some(path) => {
            let bytes = read_file("--script", path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                CliError::Invalid(format!("--script: {} is not UTF-8 text", path.display()))
            })?;
            Some(Value::String(text))
        }
        None => None,
    };
    let payload_text = match (&args.payload, &args.payload_file) {
        (Some(text), _) => Some(("--payload", text.clone())),
        (None, Some(path)) => {
            let bytes = read_file("--payload-file", path)?;
            Some((
                "--payload-file",
                String::from_utf8(bytes).map_err(|_| {
                    CliError::Invalid(format!("--payload-file: {} is not UTF-8", path.display()))
                })?,
            ))
        }
        (None, None) => None,
    };
    let input_payload = match payload_text {
        Some((flag, text)) => Some(serde_json::from_str::<Value>(&text).map_err(|e| {
            CliError::Invalid(format!("{flag}: InputPayload is not valid JSON: {e}"))
        })?),
        None => None,
    };
    let mut attachments = Vec::new();
    for path in &args.attachments {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                CliError::Invalid(format!("--attachment: {} has no file name", path.display()))
            })?
            .to_string();
        attachments.push(Attachment {
            name,
            bytes: read_file("--attachment", path)?,
        });
    }
    Ok(StepInputs {
        runtime: Some(args.runtime.clone()),
        handler: args.handler.clone(),
        input_payload,
        script,
        attachments,
        timeout_seconds: args.timeout,
    })
}

async fn invoke(
    args: InvokeArgs,
    settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let inputs = step_inputs(&args)?;
    let memory_bytes = match args.memory {
        None => None,
        Some(mb) if mb < 6 => {
            return Err(CliError::Invalid(format!(
                "--memory: must be at least 6 MiB, got {mb}"
            )));
        }
        Some(mb) => {
            let bytes = (mb as i64).saturating_mul(1024 * 1024);
            if bytes > settings.sandbox.memory_bytes {
                return Err(CliError::Invalid(format!(
                    "--memory: {mb} MiB is above the configured limit of {} MiB; a request can only lower it",
                    settings.sandbox.memory_bytes / (1024 * 1024)
                )));
            }
            Some(bytes)
        }
    };
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
        let _ = match line.stream {
            LogStream::Stdout => writeln!(err, "  | {}", line.text),
            LogStream::Stderr => writeln!(err, "  ! {}", line.text),
            LogStream::Scriptbox => writeln!(err, "  * {}", line.text),
        };
    };
    let options = ExecuteOptions {
        execution_id: None,
        memory_bytes,
        context: &settings.context,
        limits: &settings.output,
        on_log: if text { Some(&mut live) } else { None },
        automation_execution_id: None,
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

fn print_result(result: &StepResult, format: OutputFormat) -> anyhow::Result<()> {
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

async fn runtimes(
    args: RuntimesArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    // The table is useful without an engine too: image state then says "no engine".
    let engine = Engine::connect(settings.sandbox).await.ok();
    let mut rows = Vec::new();
    for rt in catalog.runtimes() {
        let state = match &engine {
            Some(engine) => images::image_state(engine, &rt)
                .await
                .map(|s| s.as_str())
                .unwrap_or("unknown"),
            None => "no engine",
        };
        rows.push(serde_json::json!({
            "Name": rt.runtime.name,
            "Aliases": rt.runtime.aliases,
            "Language": rt.language().as_str(),
            "Image": rt.runtime.image,
            "ImageState": state,
            "AwsStatus": rt.runtime.aws_status.to_string(),
            "AwsNote": rt.runtime.aws_note,
            "OfflineRecipe": rt.runtime.offline.as_ref().map(|o| format!("debian {} (CPython {})", o.suite, o.python)),
        }));
    }
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::Environment(e.into());
    if args.output == OutputFormat::Json {
        writeln!(out, "{}", Value::Array(rows)).map_err(io)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<22} {:<30} {:<9} {:<10} NOTE",
        "RUNTIME", "IMAGE", "IMAGE?", "AWS"
    )
    .map_err(io)?;
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let mut name = s("Name");
        if let Some(aliases) = r["Aliases"].as_array().filter(|a| !a.is_empty()) {
            let list: Vec<&str> = aliases.iter().filter_map(Value::as_str).collect();
            name = format!("{name} ({})", list.join(", "));
        }
        writeln!(
            out,
            "{:<22} {:<30} {:<9} {:<10} {}",
            name,
            s("Image"),
            s("ImageState"),
            s("AwsStatus"),
            s("AwsNote")
        )
        .map_err(io)?;
    }
    if engine.is_none() {
        writeln!(out, "\n(no Docker engine answered: image state unknown)").map_err(io)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress on stderr: a spinner on a terminal, plain lines otherwise.
struct SpinnerProgress {
    bar: indicatif::ProgressBar,
}

impl Progress for SpinnerProgress {
    fn phase(&mut self, message: &str) {
        if self.bar.is_hidden() {
            eprintln!("{message}");
        } else {
            self.bar.println(format!("  {}", self.bar.message()));
            self.bar.set_message(message.to_string());
        }
    }
}

async fn build_images(
    names: Vec<String>,
    force: bool,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let mut selected = Vec::new();
    for name in &names {
        let rt = catalog.resolve(name).ok_or_else(|| {
            CliError::Invalid(format!(
                "unknown runtime {name:?}; known runtimes: {}",
                catalog.names().join(", ")
            ))
        })?;
        selected.push(rt);
    }
    if selected.is_empty() {
        selected = catalog.runtimes().collect();
    }
    let engine = Engine::connect(settings.sandbox).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut progress = SpinnerProgress { bar };
    let mut failures = Vec::new();
    for rt in selected {
        match images::build_runtime(&engine, &rt, force, &mut progress).await {
            Ok(outcome) => {
                let how = match outcome {
                    BuildOutcome::UpToDate => "up to date",
                    BuildOutcome::BuiltFromDockerfile => "built from its Dockerfile",
                    BuildOutcome::BuiltOffline => "built offline from Debian's packages",
                };
                progress.phase(&format!("{}: {} {how}", rt.runtime.name, rt.runtime.image));
            }
            Err(e) => {
                progress.phase(&format!("error: {e}"));
                failures.push(e.to_string());
            }
        }
    }
    progress.bar.finish_and_clear();
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Environment(anyhow::anyhow!(
            "{} image(s) could not be built:\n{}",
            failures.len(),
            failures.join("\n")
        )))
    }
}
