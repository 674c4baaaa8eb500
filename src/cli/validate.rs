//! `scriptbox validate`: check a runbook and everything it needs, listing every problem.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::runbook_input::{load_runbook_input, refuse};
use super::{CliError, OutputFormat, RunbookInput};
use crate::config::Settings;
use crate::images;
use crate::runbook::{self as rb, Problem, Refused};
use crate::runtimes::Catalog;
use crate::sandbox::Engine;

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

pub(super) async fn validate_runbook(
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
    // The document's own notes (what is accepted against a reference page's rule) first.
    let mut notes: Vec<String> = doc.notes.iter().map(ToString::to_string).collect();
    notes.extend(image_notes(&doc, &settings, &catalog).await);
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            json!({ "Valid": true, "Document": args.input.document.display().to_string(), "Problems": [], "Notes": notes })
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
