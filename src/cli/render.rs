//! How the client verbs print an execution object of the daemon: as it came (JSON), or as
//! `invoke` / `run` print theirs (text).

use std::io::Write;

use serde_json::Value;

use super::invoke::print_result;
use super::{CliError, OutputFormat};
use crate::result::StepResult;

/// Prints an execution object (`GET /v1/executions/{id}`).
pub(super) fn print_execution(v: &Value, format: OutputFormat) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Environment(e.into());
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        writeln!(out, "{v}").map_err(io)?;
        return Ok(());
    }
    let status = v["Status"].as_str().unwrap_or("?");
    let id = v["Id"].as_str().unwrap_or("?");
    let terminal = !matches!(status, "Queued" | "Running");
    if v["Kind"] == "Step" && terminal {
        if let Ok(result) = serde_json::from_value::<StepResult>(v.clone()) {
            writeln!(out, "execution {id}").map_err(io)?;
            drop(out);
            print_result(&result, OutputFormat::Text).map_err(CliError::Environment)?;
            return Ok(());
        }
    }
    let what = match v["Kind"].as_str() {
        Some("Runbook") => format!("runbook {}", v["DocumentName"].as_str().unwrap_or("")),
        _ => format!("step {}", v["Runtime"].as_str().unwrap_or("")),
    };
    writeln!(out, "{status} ({what}, execution {id})").map_err(io)?;
    if let Some(steps) = v["StepExecutions"].as_array() {
        for s in steps {
            writeln!(
                out,
                "  {} {} ({})",
                s["StepStatus"].as_str().unwrap_or(""),
                s["StepName"].as_str().unwrap_or(""),
                s["Action"].as_str().unwrap_or("")
            )
            .map_err(io)?;
        }
    }
    if let Some(f) = v["FailureMessage"].as_str() {
        writeln!(out, "{f}").map_err(io)?;
    }
    if let Some(outputs) = v["Outputs"].as_object().filter(|o| !o.is_empty()) {
        writeln!(out, "Outputs:").map_err(io)?;
        for (k, val) in outputs {
            writeln!(out, "  {k} = {val}").map_err(io)?;
        }
    }
    Ok(())
}
