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
    /// Override one setting, `section.key=value` (e.g. `server.concurrency=4`); repeatable.
    /// Environment variables `SCRIPTBOX_<SECTION>_<KEY>` do the same, below this flag.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Reason: parsed once per process; boxing buys nothing.
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
    /// Run an Automation runbook (schema 0.3, YAML or JSON) locally, each executeScript step in a
    /// fresh container.
    Run(RunArgs),
    /// Check a runbook: exit 0 when it is valid and everything in it can run, 2 otherwise,
    /// listing every problem.
    Validate(ValidateArgs),
    /// Validate every runbook of a folder and print a tally: file, verdict, reason.
    Conformance(ConformanceArgs),
    /// Run the daemon: an HTTP+JSON API on a Unix socket (and optionally TCP), durable
    /// execution records, a bounded queue, recovery after a crash.
    Serve(crate::daemon_cli::ServeArgs),
    /// Submit a step (the flags of `invoke`) or a runbook (as `run`) to the daemon.
    Submit(crate::daemon_cli::SubmitArgs),
    /// Print one execution of the daemon (the JSON of `invoke` / `run`, plus Id and Status).
    Get(crate::daemon_cli::GetArgs),
    /// List the daemon's executions, newest first.
    Ls(crate::daemon_cli::LsArgs),
    /// Print (or with -f follow) an execution's log.
    Logs(crate::daemon_cli::LogsArgs),
    /// Cancel an execution: a queued one never runs; a running one's container is killed.
    Cancel(crate::daemon_cli::CancelArgs),
}

/// `scriptbox images ...`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build runtime images. Sources, in order: the Dockerfile (where its base image can be
    /// pulled), the Debian recipe (where Debian ships exactly that CPython), a CPython
    /// installation on this machine (pyenv, uv, /usr/local, /opt/python*).
    Build {
        /// Runtimes to build (default: every runtime; with --python-from, the one it provides).
        runtimes: Vec<String>,
        /// Rebuild even when the image is current.
        #[arg(long)]
        force: bool,
        /// Build from this CPython installation prefix only (it must hold bin/pythonX.Y of the
        /// runtime's exact minor version); no other source is tried.
        #[arg(long, value_name = "PREFIX")]
        python_from: Option<PathBuf>,
        /// A runtime no source can build here is reported in one `SKIPPED:` line instead of
        /// failing the command (a source that exists but fails still fails it).
        #[arg(long)]
        skip_unbuildable: bool,
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

/// The settings: defaults, the --config file, `SCRIPTBOX_<SECTION>_<KEY>` variables, `--set`.
pub fn load_settings(cli: &Cli) -> Result<Settings, CliError> {
    let mut settings = match &cli.config {
        Some(path) => {
            Settings::load(path).map_err(|e| CliError::Invalid(format!("--config: {e}")))?
        }
        None => Settings::default(),
    };
    settings
        .apply_env()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    for assignment in &cli.set {
        settings
            .apply_override(assignment)
            .map_err(|e| CliError::Invalid(e.to_string()))?;
    }
    settings
        .check()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(settings)
}

/// The Docker engine address from the settings (`server.docker_host`, or serve's
/// `--docker-host`), to be put in `DOCKER_HOST` before any thread starts.
pub fn docker_host(cli: &Cli) -> Option<String> {
    if let Command::Serve(args) = &cli.command
        && let Some(h) = &args.docker_host
    {
        return Some(h.clone());
    }
    load_settings(cli).ok()?.server.docker_host
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
            command:
                ImagesCommand::Build {
                    runtimes,
                    force,
                    python_from,
                    skip_unbuildable,
                },
        } => {
            let options = images::BuildOptions { force, python_from };
            build_images(runtimes, options, skip_unbuildable, settings, catalog).await
        }
        Command::Run(args) => run_runbook(args, settings, catalog, shutdown).await,
        Command::Validate(args) => validate_runbook(args, settings, catalog).await,
        Command::Conformance(args) => conformance(args, settings, catalog),
        Command::Serve(args) => crate::daemon_cli::serve(args, settings, catalog, shutdown).await,
        Command::Submit(args) => crate::daemon_cli::submit(args, settings, catalog).await,
        Command::Get(args) => crate::daemon_cli::get(args).await,
        Command::Ls(args) => crate::daemon_cli::ls(args).await,
        Command::Logs(args) => crate::daemon_cli::logs(args).await,
        Command::Cancel(args) => crate::daemon_cli::cancel(args).await,
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
pub(crate) fn step_inputs(args: &InvokeArgs) -> Result<StepInputs, CliError> {
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
            // Checked: a huge value must be refused, never wrap into a negative limit.
            let bytes = i64::try_from(mb)
                .ok()
                .and_then(|m| m.checked_mul(1024 * 1024))
                .filter(|b| *b <= settings.sandbox.memory_bytes);
            match bytes {
                Some(bytes) => Some(bytes),
                None => {
                    return Err(CliError::Invalid(format!(
                        "--memory: {mb} MiB is above the configured limit of {} MiB; a request can only lower it",
                        settings.sandbox.memory_bytes / (1024 * 1024)
                    )));
                }
            }
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
        let facts = match &engine {
            Some(engine) if state != "missing" => images::image_facts(engine, &rt).await,
            _ => None,
        }
        .unwrap_or_default();
        rows.push(serde_json::json!({
            "Name": rt.runtime.name,
            "Aliases": rt.runtime.aliases,
            "Language": rt.language().as_str(),
            "Image": rt.runtime.image,
            "ImageState": state,
            "CPythonVersion": facts.cpython_version,
            "CPythonSource": facts.cpython_source,
            "ImageSizeBytes": facts.size_bytes,
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
        "{:<36} {:<33} {:<9} {:<8} {:<10} {:<40} NOTE",
        "RUNTIME", "IMAGE", "IMAGE?", "CPYTHON", "AWS", "SOURCE"
    )
    .map_err(io)?;
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let mut name = s("Name");
        if let Some(aliases) = r["Aliases"].as_array().filter(|a| !a.is_empty()) {
            let list: Vec<&str> = aliases.iter().filter_map(Value::as_str).collect();
            name = format!("{name} ({})", list.join(", "));
        }
        let version = r["CPythonVersion"].as_str().unwrap_or("-");
        let source = r["CPythonSource"].as_str().unwrap_or("-");
        writeln!(
            out,
            "{:<36} {:<33} {:<9} {:<8} {:<10} {:<40} {}",
            name,
            s("Image"),
            s("ImageState"),
            version,
            s("AwsStatus"),
            source,
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
    options: images::BuildOptions,
    skip_unbuildable: bool,
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
    if let Some(prefix) = &options.python_from {
        if selected.len() > 1 {
            return Err(CliError::Invalid(format!(
                "--python-from names one installation, so it builds one runtime; {} were given",
                selected.len()
            )));
        }
        if selected.is_empty() {
            // The runtime the installation provides: its bin/pythonX.Y names the minor version.
            let found: Vec<_> = catalog
                .runtimes()
                .filter(|rt| {
                    rt.language() == crate::runtimes::Language::Python
                        && rt.runtime.build.get("PYTHON_VERSION").is_some_and(|minor| {
                            prefix.join("bin").join(format!("python{minor}")).is_file()
                        })
                })
                .collect();
            match found.as_slice() {
                [one] => selected.push(*one),
                [] => {
                    return Err(CliError::Invalid(format!(
                        "--python-from {}: no bin/pythonX.Y of any runtime in the catalog ({})",
                        prefix.display(),
                        catalog.names().join(", ")
                    )));
                }
                _ => {
                    return Err(CliError::Invalid(format!(
                        "--python-from {} holds several runtimes' interpreters; name the runtime to build",
                        prefix.display()
                    )));
                }
            }
        }
    }
    if selected.is_empty() {
        selected = catalog.runtimes().collect();
    }
    let engine = Engine::connect(settings.sandbox).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut progress = SpinnerProgress { bar };
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for rt in selected {
        match images::build_runtime(&engine, &rt, &options, &mut progress).await {
            Ok(outcome) => {
                let how = match outcome {
                    BuildOutcome::UpToDate => "up to date".to_string(),
                    BuildOutcome::BuiltFromDockerfile => "built from its Dockerfile".to_string(),
                    BuildOutcome::BuiltOffline => {
                        "built offline from Debian's packages".to_string()
                    }
                    BuildOutcome::BuiltFromLocalCpython { version, source } => {
                        format!("built from CPython {version} ({source})")
                    }
                };
                progress.phase(&format!("{}: {} {how}", rt.runtime.name, rt.runtime.image));
            }
            Err(e @ images::ImageError::NoSource { .. }) if skip_unbuildable => {
                skipped.push(e.to_string());
            }
            Err(e) => {
                progress.phase(&format!("error: {e}"));
                failures.push(e.to_string());
            }
        }
    }
    progress.bar.finish_and_clear();
    for why in skipped {
        // One line per runtime: the reasons joined, so a log shows it whole.
        let one_line: Vec<&str> = why.lines().map(str::trim).collect();
        eprintln!("SKIPPED: {}", one_line.join(" "));
    }
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

// ---------------------------------------------------------------------------------------------
// Runbooks: `scriptbox run`, `scriptbox validate`, `scriptbox conformance`.

/// A runbook and its inputs, as `run` and `validate` take them.
#[derive(Debug, Args)]
pub struct RunbookInput {
    /// The runbook (.yaml, .yml or .json).
    pub document: PathBuf,
    /// A parameter value, `Name=Value`; repeat for several (`validate` checks those given).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Parameter values from a JSON or YAML map (typed values, or lists of strings as AWS's API).
    #[arg(long, value_name = "FILE")]
    pub parameters_file: Option<PathBuf>,
    /// Where the document's `files` are (default: the document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
}

/// `scriptbox run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook and its inputs.
    #[command(flatten)]
    pub input: RunbookInput,
    /// Output format: text (live progress on stderr) or one GetAutomationExecution-shaped JSON object.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `scriptbox validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The runbook and its inputs (without parameter values, required ones are not reported).
    #[command(flatten)]
    pub input: RunbookInput,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `scriptbox conformance`
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// A folder of runbooks (INDEX.tsv and other non-runbook files are skipped).
    pub folder: PathBuf,
    /// Where attachments are (default: each document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
}

use crate::runbook::{self as rb, Problem, ProblemKind, Refused};

fn load_options<'a>(
    settings: &Settings,
    catalog: &'a Catalog,
    attachments: &Option<PathBuf>,
) -> rb::document::LoadOptions<'a> {
    rb::document::LoadOptions {
        catalog,
        max_timeout_secs: settings.limits.max_timeout_seconds,
        attachments_dir: attachments.clone(),
    }
}

/// Reads `-p Name=Value` flags and a parameters file.
pub fn supplied_parameters(
    flags: &[String],
    file: &Option<PathBuf>,
) -> Result<Vec<(String, rb::parameters::Supplied)>, CliError> {
    use rb::parameters::Supplied;
    let mut out = Vec::new();
    if let Some(path) = file {
        let bytes = read_file("--parameters-file", path)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            CliError::Invalid(format!(
                "--parameters-file: {} is not UTF-8",
                path.display()
            ))
        })?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (node, problems) = rb::yaml::read(&text, rb::yaml::Format::detect(name, &text));
        if let Some(p) = problems.first() {
            return Err(CliError::Invalid(format!(
                "--parameters-file {}: {}: {}",
                path.display(),
                p.pos,
                p.message
            )));
        }
        match node.map(|n| n.to_json()) {
            Some(Value::Object(m)) => {
                out.extend(m.into_iter().map(|(k, v)| (k, Supplied::Typed(v))));
            }
            _ => {
                return Err(CliError::Invalid(format!(
                    "--parameters-file {}: must be a map of parameter name → value",
                    path.display()
                )));
            }
        }
    }
    for flag in flags {
        let (name, value) = flag
            .split_once('=')
            .ok_or_else(|| CliError::Invalid(format!("-p {flag:?}: expected Name=Value")))?;
        out.retain(|(n, _)| n != name);
        out.push((name.trim().to_string(), Supplied::Text(value.to_string())));
    }
    Ok(out)
}

fn problems_json(problems: &[Problem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "Line": p.pos.line,
                    "Column": p.pos.col,
                    "Context": p.context,
                    "Message": p.message,
                    "Kind": format!("{:?}", p.kind),
                    "Unsupported": p.what,
                    "Text": p.to_string(),
                })
            })
            .collect(),
    )
}

fn refuse(doc: &Path, what: &str, refused: &Refused, format: OutputFormat) -> ExitCode {
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({ "Valid": false, "Document": doc.display().to_string(), "Problems": problems_json(&refused.problems) })
        );
    } else {
        eprintln!(
            "error: {} {what} ({} problem{}):",
            doc.display(),
            refused.problems.len(),
            if refused.problems.len() == 1 { "" } else { "s" }
        );
        for p in &refused.problems {
            eprintln!("  {p}");
        }
    }
    ExitCode::from(2)
}

/// A loaded runbook and the parameter values given for it.
type LoadedInput = (
    rb::document::Runbook,
    Vec<(String, rb::parameters::Supplied)>,
);

/// Reads a runbook input: the parameter values given, and the document loaded and checked.
/// An invalid document is reported (every problem) and comes back as its exit code.
fn load_runbook_input(
    input: &RunbookInput,
    settings: &Settings,
    catalog: &Catalog,
    output: OutputFormat,
) -> Result<Result<LoadedInput, ExitCode>, CliError> {
    let options = load_options(settings, catalog, &input.attachments);
    let supplied = supplied_parameters(&input.parameters, &input.parameters_file)?;
    Ok(match rb::document::load_file(&input.document, &options) {
        Ok(doc) => Ok((doc, supplied)),
        Err(refused) => Err(refuse(&input.document, "is not valid", &refused, output)),
    })
}

/// Notes on the runtimes a valid document uses whose images are not built here (the document is
/// still valid: building the image is the operator's step, and `run` would exit 3 naming it).
async fn image_notes(
    doc: &rb::document::Runbook,
    settings: &Settings,
    catalog: &Catalog,
) -> Vec<String> {
    let mut runtimes: Vec<&str> = doc
        .steps
        .iter()
        .filter(|s| s.action_kind() == crate::runbook::actions::Action::ExecuteScript)
        .filter_map(|s| s.inputs.get("Runtime").and_then(Value::as_str))
        .collect();
    runtimes.sort_unstable();
    runtimes.dedup();
    let Ok(engine) = Engine::connect(settings.sandbox.clone()).await else {
        return vec![
            "no Docker engine answered: whether the runtimes' images are built was not checked"
                .into(),
        ];
    };
    let mut notes = Vec::new();
    for name in runtimes {
        let Some(rt) = catalog.resolve(name) else {
            continue;
        };
        match images::image_state(&engine, &rt).await {
            Ok(images::ImageState::Current) => {}
            Ok(state) => notes.push(format!(
                "runtime {name}: image {} is {}; build it with `scriptbox images build {:?}`",
                rt.runtime.image,
                state.as_str(),
                rt.runtime.name
            )),
            Err(e) => notes.push(format!("runtime {name}: image state unknown ({e})")),
        }
    }
    notes
}

async fn validate_runbook(
    args: ValidateArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let (doc, supplied) = match load_runbook_input(&args.input, &settings, &catalog, args.output)? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(refused),
    };
    if !supplied.is_empty() {
        if let Err(problems) = rb::parameters::resolve(&doc.parameters, &supplied) {
            // Without every value, only the values given are judged.
            let problems: Vec<Problem> = problems
                .into_iter()
                .filter(|p| !p.message.starts_with("is required"))
                .collect();
            if !problems.is_empty() {
                return Ok(refuse(
                    &args.input.document,
                    "parameters are not valid",
                    &Refused { problems },
                    args.output,
                ));
            }
        }
    }
    let notes = image_notes(&doc, &settings, &catalog).await;
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({ "Valid": true, "Document": args.input.document.display().to_string(), "Problems": [], "Notes": notes })
        );
    } else {
        for note in &notes {
            eprintln!("note: {note}");
        }
        println!(
            "{} is valid: {} step{}, {} parameter{}",
            args.input.document.display(),
            doc.steps.len(),
            if doc.steps.len() == 1 { "" } else { "s" },
            doc.parameters.len(),
            if doc.parameters.len() == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A runner for documents without executeScript steps (no engine needed).
struct NoEngine;

impl rb::executor::StepRunner for NoEngine {
    fn run<'a>(
        &'a self,
        _step: &'a step::ValidatedStep,
        _ctx: rb::executor::RunContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<StepResult, String>> {
        Box::pin(async { Err("no container engine is connected".to_string()) })
    }
}

async fn run_runbook(
    args: RunArgs,
    settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let (doc, supplied) = match load_runbook_input(&args.input, &settings, &catalog, args.output)? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(refused),
    };
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
    let needs_engine = doc
        .steps
        .iter()
        .any(|s| s.action_kind() == crate::runbook::actions::Action::ExecuteScript);
    let engine = if needs_engine {
        let engine = Engine::connect(settings.sandbox.clone()).await?;
        if let Err(e) = engine.sweep_leftovers().await {
            tracing::warn!("sweep of leftover containers failed: {e}");
        }
        Some(engine)
    } else {
        None
    };
    let text = args.output == OutputFormat::Text;
    let mut started = std::time::Instant::now();
    let mut observer = |event: rb::executor::RunEvent<'_>| {
        if !text {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match event {
            rb::executor::RunEvent::StepStarted { step, attempt } => {
                started = std::time::Instant::now();
                if attempt > 1 {
                    writeln!(
                        err,
                        "▶ {} ({}) attempt {attempt} of {}",
                        step.name, step.action, step.max_attempts
                    )
                } else {
                    writeln!(err, "▶ {} ({})", step.name, step.action)
                }
            }
            rb::executor::RunEvent::Log { line, .. } => match line.stream {
                LogStream::Stdout => writeln!(err, "    | {}", line.text),
                LogStream::Stderr => writeln!(err, "    ! {}", line.text),
                LogStream::Scriptbox => writeln!(err, "    * {}", line.text),
            },
            rb::executor::RunEvent::StepFinished { record } => {
                let ms = (record.end - record.start).num_milliseconds().max(0);
                let _ = started;
                let mark = if record.status == StepStatus::Success {
                    "✔"
                } else {
                    "✘"
                };
                let mut line = format!("{mark} {} {} ms", record.status, ms);
                if let Some(next) = &record.next_step {
                    if record.action_kind == crate::runbook::actions::Action::Branch {
                        line.push_str(&format!(" → {next}"));
                    }
                }
                let r = writeln!(err, "{line}");
                if let Some(f) = &record.failure_message {
                    for l in f.lines() {
                        let _ = writeln!(err, "    {l}");
                    }
                }
                r
            }
        };
    };
    let exec_options = rb::executor::ExecOptions {
        execution_id: None,
        context: &settings.context,
        catalog: &catalog,
        max_timeout_secs: settings.limits.max_timeout_seconds,
        max_run_secs: settings.limits.max_runbook_seconds,
    };
    let execution = match &engine {
        Some(engine) => {
            let runner = rb::executor::EngineRunner {
                engine,
                settings: &settings,
            };
            rb::executor::execute(
                &doc,
                params,
                &runner,
                &exec_options,
                &mut observer,
                &shutdown,
            )
            .await
        }
        None => {
            rb::executor::execute(
                &doc,
                params,
                &NoEngine,
                &exec_options,
                &mut observer,
                &shutdown,
            )
            .await
        }
    };
    if let Some(engine) = &engine {
        engine.finish_cleanup(Duration::from_secs(30)).await;
    }
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::Environment(e.into());
    if args.output == OutputFormat::Json {
        writeln!(out, "{}", rb::output::execution_json(&execution)).map_err(io)?;
    } else {
        writeln!(
            out,
            "{} ({} step{} run, execution {})",
            execution.status,
            execution.steps.len(),
            if execution.steps.len() == 1 { "" } else { "s" },
            execution.id
        )
        .map_err(io)?;
        if let Some(f) = &execution.failure_message {
            writeln!(out, "{f}").map_err(io)?;
        }
        if !execution.outputs.is_empty() {
            writeln!(out, "Outputs:").map_err(io)?;
            for (name, v) in &execution.outputs {
                let shown = match v {
                    Some(v) => serde_json::to_string(&rb::output::strings(v)).unwrap_or_default(),
                    None => format!("[{:?}]", rb::output::NO_OUTPUT),
                };
                writeln!(out, "  {name} = {shown}").map_err(io)?;
            }
        }
    }
    if let Some(e) = execution.engine_error {
        return Err(CliError::Environment(anyhow::anyhow!(e)));
    }
    Ok(if execution.status == StepStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The verdict of one conformance document.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The file name.
    pub file: String,
    /// True when the document validated.
    pub valid: bool,
    /// Every problem (empty when valid).
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// A one-line reason: the unsupported features named, else the first problem.
    pub fn reason(&self) -> String {
        let mut whats: Vec<String> = Vec::new();
        for p in &self.problems {
            if let Some(w) = &p.what {
                if !whats.contains(w) {
                    whats.push(w.clone());
                }
            }
        }
        let others = self
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::Unsupported)
            .count();
        let mut reason = if whats.is_empty() {
            String::new()
        } else {
            format!("unsupported: {}", whats.join(", "))
        };
        if others > 0 {
            let first = self
                .problems
                .iter()
                .find(|p| p.kind != ProblemKind::Unsupported)
                .map(|p| p.to_string())
                .unwrap_or_default();
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&first);
            if others > 1 {
                reason.push_str(&format!(" (+{} more)", others - 1));
            }
        }
        reason
    }
}

/// Validates every runbook file of a folder, sorted by name.
pub fn conformance_verdicts(
    folder: &Path,
    options: &rb::document::LoadOptions<'_>,
) -> std::io::Result<Vec<Verdict>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy().to_ascii_lowercase();
            n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json")
        })
        .collect();
    files.sort();
    Ok(files
        .iter()
        .map(|path| {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match rb::document::load_file(path, options) {
                Ok(_) => Verdict {
                    file,
                    valid: true,
                    problems: vec![],
                },
                Err(r) => Verdict {
                    file,
                    valid: false,
                    problems: r.problems,
                },
            }
        })
        .collect())
}

fn conformance(
    args: ConformanceArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let options = load_options(&settings, &catalog, &args.attachments);
    let verdicts = conformance_verdicts(&args.folder, &options)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", args.folder.display())))?;
    let width = verdicts
        .iter()
        .map(|v| v.file.len())
        .max()
        .unwrap_or(4)
        .min(100);
    println!("{:<width$}  {:<7}  REASON", "FILE", "VERDICT");
    for v in &verdicts {
        println!(
            "{:<width$}  {:<7}  {}",
            v.file,
            if v.valid { "valid" } else { "refused" },
            v.reason()
        );
    }
    let valid = verdicts.iter().filter(|v| v.valid).count();
    println!(
        "\n{} documents: {valid} valid, {} refused",
        verdicts.len(),
        verdicts.len() - valid
    );
    let mut by_reason: Vec<(String, usize)> = Vec::new();
    for v in verdicts.iter().filter(|v| !v.valid) {
        let mut reasons: Vec<String> = v.problems.iter().filter_map(|p| p.what.clone()).collect();
        if v.problems
            .iter()
            .any(|p| p.kind != ProblemKind::Unsupported)
        {
            reasons.push("a document defect (see its reason)".into());
        }
        reasons.sort();
        reasons.dedup();
        for r in reasons {
            match by_reason.iter_mut().find(|(k, _)| *k == r) {
                Some((_, n)) => *n += 1,
                None => by_reason.push((r, 1)),
            }
        }
    }
    by_reason.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("refusals by reason (a document may have several):");
    for (r, n) in by_reason {
        println!("  {n:>3}  {r}");
    }
    Ok(ExitCode::SUCCESS)
}
