//! A runbook and its inputs, as `run`, `validate` and `submit DOCUMENT` read them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{CliError, OutputFormat};
use crate::config::Settings;
use crate::report::problems_json;
use crate::runbook::{self as rb, Refused};
use crate::runtimes::Catalog;

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

/// The load options of a runbook: the catalog, the timeout ceiling, where its files are.
pub(super) fn load_options<'a>(
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
        let bytes = super::read_file("--parameters-file", path)?;
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

/// Reports a refused runbook (text on stderr, or the JSON verdict) and returns exit code 2.
pub(super) fn refuse(doc: &Path, what: &str, refused: &Refused, format: OutputFormat) -> ExitCode {
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
pub(super) type LoadedInput = (
    rb::document::Runbook,
    Vec<(String, rb::parameters::Supplied)>,
);

/// Reads a runbook input: the parameter values given, and the document loaded and checked.
/// An invalid document is reported (every problem) and comes back as its exit code.
pub(super) fn load_runbook_input(
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
