//! The command line: argument parsing, reading the user's files, printing results, exit codes.
//! One module per verb; `mod.rs` holds the parser, the error type and the dispatch.
//!
//! Exit codes: 0 the step succeeded; 1 it failed, timed out or was cancelled; 2 invalid input
//! (the message names the field and the rule); 3 the environment is not ready (no Docker engine,
//! image missing, a build failed). The client verbs of the daemon (`submit`, `get`, `ls`, `logs`,
//! `cancel`, `signal`) use the same codes: 1 also when a cancel found the execution already finished; 2 the
//! daemon's 400 or an unknown id; 3 no daemon answered or it failed; and 4 the daemon refused the
//! submission for now (429; the message gives Retry-After).

mod aws_flags;
mod cancel;
pub mod conformance;
mod connect;
mod get;
mod images;
mod invoke;
mod logs;
mod ls;
mod progress;
mod render;
mod run;
mod run_children;
mod runbook_input;
mod runtimes;
mod serve;
mod signal;
mod step_flags;
mod submit;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::runtimes::Catalog;
use crate::sandbox::{Engine, SandboxError};

pub use cancel::CancelArgs;
pub use conformance::{
    ConformanceArgs, Expected, HarnessError, Outcome, ReasonKind, RunSetup, Verdict,
    conformance_verdicts, difference, read_expected, run_document,
};
pub use connect::ConnectArgs;
pub use get::GetArgs;
pub use invoke::InvokeArgs;
pub use logs::LogsArgs;
pub use ls::LsArgs;
pub use progress::TextProgress;
pub use run::RunArgs;
pub use runbook_input::{RunbookInput, supplied_parameters};
pub use runtimes::RuntimesArgs;
pub use serve::ServeArgs;
pub use signal::{SignalArgs, runs_dir};
pub use step_flags::StepFlags;
pub use submit::SubmitArgs;
pub use validate::ValidateArgs;

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
    Serve(ServeArgs),
    /// Submit a step (the flags of `invoke`) or a runbook (as `run`) to the daemon.
    Submit(SubmitArgs),
    /// Print one execution of the daemon (the JSON of `invoke` / `run`, plus Id and Status).
    Get(GetArgs),
    /// List the daemon's executions, newest first.
    Ls(LsArgs),
    /// Print (or with -f follow) an execution's log.
    Logs(LogsArgs),
    /// Cancel an execution: a queued one never runs; a running one's container is killed.
    Cancel(CancelArgs),
    /// Send a signal (Approve, Reject, Resume) to an execution's waiting aws:approve or
    /// aws:pause step: a `scriptbox run` of that id on this machine, else the daemon's.
    Signal(SignalArgs),
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

fn load_catalog(runtimes_file: Option<&Path>) -> Result<Catalog, CliError> {
    match runtimes_file {
        Some(path) => {
            Catalog::load(path).map_err(|e| CliError::Invalid(format!("--runtimes-file: {e}")))
        }
        None => Ok(Catalog::builtin()),
    }
}

async fn dispatch(cli: Cli, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
    let settings = load_settings(&cli)?;
    // A --runtimes-file is read (and a bad one refused) by every verb, as before; the built-in
    // catalog is parsed only by the verbs that use it (not the daemon's clients, which keep their
    // start short: the daemon has its own catalog).
    let custom = match &cli.runtimes_file {
        Some(path) => Some(load_catalog(Some(path))?),
        None => None,
    };
    let catalog = || match &custom {
        Some(catalog) => Ok(catalog.clone()),
        None => load_catalog(None),
    };
    match cli.command {
        Command::Invoke(args) => invoke::invoke(args, settings, catalog()?, shutdown).await,
        Command::Runtimes(args) => runtimes::runtimes(args, settings, catalog()?).await,
        Command::Images {
            command:
                ImagesCommand::Build {
                    runtimes,
                    force,
                    python_from,
                    skip_unbuildable,
                },
        } => {
            let options = crate::images::BuildOptions { force, python_from };
            let catalog = catalog()?;
            images::build_images(runtimes, options, skip_unbuildable, settings, catalog).await
        }
        Command::Run(args) => run::run_runbook(args, settings, catalog()?, shutdown).await,
        Command::Validate(args) => validate::validate_runbook(args, settings, catalog()?).await,
        Command::Conformance(args) => conformance::conformance(args, settings, catalog()?),
        Command::Serve(args) => serve::serve(args, settings, catalog()?, shutdown).await,
        Command::Submit(args) => submit::submit(args, settings, &catalog).await,
        Command::Get(args) => get::get(args).await,
        Command::Ls(args) => ls::ls(args).await,
        Command::Logs(args) => logs::logs(args).await,
        Command::Cancel(args) => cancel::cancel(args).await,
        Command::Signal(args) => signal::signal(args).await,
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

/// Reads a file the user named; the error names the flag.
pub(crate) fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Invalid(format!("{field}: cannot read {}: {e}", path.display())))
}
