//! `scriptbox images build`: the runtime images, from the first source this machine has.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::CliError;
use crate::config::Settings;
use crate::images::{self, BuildOutcome, Progress};
use crate::runtimes::{Catalog, Language, ResolvedRuntime};
use crate::sandbox::Engine;

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

pub(super) async fn build_images(
    names: Vec<String>,
    options: images::BuildOptions,
    skip_unbuildable: bool,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let selected = select(&names, options.python_from.as_deref(), &catalog)?;
    let engine = Engine::connect(settings.sandbox).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut progress = SpinnerProgress { bar };
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for rt in selected {
        match images::build_runtime(&engine, &rt, &options, &mut progress).await {
            Ok(outcome) => {
                let how = describe(outcome);
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

fn describe(outcome: BuildOutcome) -> String {
    match outcome {
        BuildOutcome::UpToDate => "up to date".to_string(),
        BuildOutcome::BuiltFromDockerfile => "built from its Dockerfile".to_string(),
        BuildOutcome::BuiltOffline => "built offline from Debian's packages".to_string(),
        BuildOutcome::BuiltFromLocalCpython { version, source } => {
            format!("built from CPython {version} ({source})")
        }
    }
}

/// The runtimes to build: those named, else the one `--python-from` provides, else every one.
fn select<'c>(
    names: &[String],
    python_from: Option<&Path>,
    catalog: &'c Catalog,
) -> Result<Vec<ResolvedRuntime<'c>>, CliError> {
    let mut selected = Vec::new();
    for name in names {
        let rt = catalog.resolve(name).ok_or_else(|| {
            CliError::Invalid(format!(
                "unknown runtime {name:?}; known runtimes: {}",
                catalog.names().join(", ")
            ))
        })?;
        selected.push(rt);
    }
    if let Some(prefix) = python_from {
        if selected.len() > 1 {
            return Err(CliError::Invalid(format!(
                "--python-from names one installation, so it builds one runtime; {} were given",
                selected.len()
            )));
        }
        if selected.is_empty() {
            selected.push(provided_by(prefix, catalog)?);
        }
    }
    if selected.is_empty() {
        selected = catalog.runtimes().collect();
    }
    Ok(selected)
}

/// The runtime a CPython installation provides: its bin/pythonX.Y names the minor version.
fn provided_by<'c>(prefix: &Path, catalog: &'c Catalog) -> Result<ResolvedRuntime<'c>, CliError> {
    let found: Vec<_> = catalog
        .runtimes()
        .filter(|rt| {
            rt.language() == Language::Python
                && rt.runtime.build.get("PYTHON_VERSION").is_some_and(|minor| {
                    prefix.join("bin").join(format!("python{minor}")).is_file()
                })
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::Invalid(format!(
            "--python-from {}: no bin/pythonX.Y of any runtime in the catalog ({})",
            prefix.display(),
            catalog.names().join(", ")
        ))),
        _ => Err(CliError::Invalid(format!(
            "--python-from {} holds several runtimes' interpreters; name the runtime to build",
            prefix.display()
        ))),
    }
}
