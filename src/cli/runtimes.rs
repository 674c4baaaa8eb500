//! `scriptbox runtimes`: the catalog, each runtime's image state and facts, AWS's status.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{CliError, OutputFormat};
use crate::config::Settings;
use crate::report::{self, RuntimeRow};
use crate::runtimes::Catalog;
use crate::sandbox::Engine;

/// `scriptbox runtimes`
#[derive(Debug, Args)]
pub struct RuntimesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub(super) async fn runtimes(
    args: RuntimesArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    // The table is useful without an engine too: image state then says "no engine".
    let engine = Engine::connect(settings.sandbox).await.ok();
    let rows = report::runtime_rows(&catalog, engine.as_ref()).await;
    let io = |e: std::io::Error| CliError::Environment(e.into());
    if args.output == OutputFormat::Json {
        let json = Value::Array(rows.iter().map(RuntimeRow::to_json).collect());
        writeln!(std::io::stdout().lock(), "{json}").map_err(io)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&rows, engine.is_none()).map_err(io)?;
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[RuntimeRow], no_engine: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36} {:<33} {:<9} {:<8} {:<10} {:<40} NOTE",
        "RUNTIME", "IMAGE", "IMAGE?", "CPYTHON", "AWS", "SOURCE"
    )?;
    for r in rows {
        let name = if r.aliases.is_empty() {
            r.name.clone()
        } else {
            format!("{} ({})", r.name, r.aliases.join(", "))
        };
        writeln!(
            out,
            "{:<36} {:<33} {:<9} {:<8} {:<10} {:<40} {}",
            name,
            r.image,
            r.image_state,
            r.cpython_version.as_deref().unwrap_or("-"),
            r.aws_status,
            r.cpython_source.as_deref().unwrap_or("-"),
            r.aws_note.as_deref().unwrap_or("")
        )?;
    }
    if no_engine {
        writeln!(out, "\n(no Docker engine answered: image state unknown)")?;
    }
    Ok(())
}
