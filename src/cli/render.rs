//! How the client verbs print what the daemon answers: an execution (`get`, `submit --wait`)
//! or a list row (`ls`), read into the one [`ExecutionRecord`] and rendered from it, as JSON
//! (`native_json` / `summary_json`) or as `invoke` / `run` print theirs (text).

use std::io::Write;

use serde_json::Value;

use super::invoke::print_result;
use super::{CliError, OutputFormat};
use crate::record::{ExecKind, ExecutionRecord, Outcome};

/// A daemon's execution object or list row, read into the record type.
pub(super) struct Answered {
    /// The record, when the object is one.
    pub record: Option<ExecutionRecord>,
    /// What the JSON output prints: the record rendered, or the daemon's own object when the
    /// record does not render it back exactly.
    pub json: Value,
}

impl Answered {
    /// An execution object (`GET /v1/executions/{id}`, an `end` event's `Execution`).
    pub fn execution(v: Value) -> Answered {
        Answered::read(v, ExecutionRecord::native_json)
    }

    /// A row of `GET /v1/executions`.
    pub fn summary(v: Value) -> Answered {
        Answered::read(v, ExecutionRecord::summary_json)
    }

    fn read(v: Value, render: fn(&ExecutionRecord) -> Value) -> Answered {
        let record = ExecutionRecord::from_native_json(&v);
        match record.as_ref().map(render) {
            Some(json) if json == v => Answered { record, json },
            // Not every object round-trips: a record stored before typed outcomes is served as
            // it was stored (`Outcome::Legacy`), and a newer daemon may add keys. The JSON output
            // then prints the daemon's object unchanged, so it never loses a key.
            _ => Answered { record, json: v },
        }
    }
}

/// Prints an execution object (`GET /v1/executions/{id}`).
pub(super) fn print_execution(answered: &Answered, format: OutputFormat) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Environment(e.into());
    let mut out = std::io::stdout().lock();
    let record = match (&answered.record, format) {
        (Some(record), OutputFormat::Text) => record,
        // JSON, or not an execution object at all: shown as it came.
        _ => {
            writeln!(out, "{}", answered.json).map_err(io)?;
            return Ok(());
        }
    };
    let id = &record.id;
    if let Outcome::Step(result) = &record.outcome
        && record.status.is_terminal()
    {
        writeln!(out, "execution {id}").map_err(io)?;
        drop(out);
        print_result(result, OutputFormat::Text).map_err(CliError::Environment)?;
        return Ok(());
    }
    // The runbook's own status while it runs shows a step waiting for a signal (`Waiting`).
    let status = match &record.outcome {
        Outcome::Runbook(r)
            if !record.status.is_terminal() && r.automation_execution_status == "Waiting" =>
        {
            "Waiting"
        }
        _ => record.status.as_str(),
    };
    let what = match record.kind {
        ExecKind::Runbook => format!("runbook {}", record.document_name.as_deref().unwrap_or("")),
        ExecKind::Step => format!("step {}", record.runtime.as_deref().unwrap_or("")),
    };
    writeln!(out, "{status} ({what}, execution {id})").map_err(io)?;
    let runbook = match &record.outcome {
        Outcome::Runbook(r) => Some(r),
        _ => None,
    };
    for s in runbook.iter().flat_map(|r| &r.step_executions) {
        writeln!(out, "  {} {} ({})", s.step_status, s.step_name, s.action).map_err(io)?;
    }
    if let Some(f) = &record.failure_message {
        writeln!(out, "{f}").map_err(io)?;
    }
    if let Some(outputs) = runbook.map(|r| &r.outputs).filter(|o| !o.is_empty()) {
        writeln!(out, "Outputs:").map_err(io)?;
        for (k, val) in outputs {
            writeln!(out, "  {k} = {val}").map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> serde_json::Map<String, Value> {
        let all: Value =
            serde_json::from_str(include_str!("../../tests/golden/records.json")).unwrap();
        all.as_object().unwrap().clone()
    }

    #[test]
    fn the_daemons_objects_are_read_into_records_and_rendered_back_unchanged() {
        for (name, v) in golden() {
            let answered = if name.starts_with("summary_") {
                Answered::summary(v.clone())
            } else {
                Answered::execution(v.clone())
            };
            assert_eq!(answered.json, v, "{name}: the output changed");
            let record = answered.record.expect(&name);
            let rendered = if name.starts_with("summary_") {
                record.summary_json()
            } else {
                record.native_json()
            };
            assert_eq!(rendered, v, "{name}: not rendered from the record");
        }
    }

    #[test]
    fn an_object_the_record_cannot_render_exactly_is_printed_as_it_came() {
        let mut v = golden()["cold"].clone();
        v["AddedByANewerDaemon"] = Value::from(1);
        let answered = Answered::execution(v.clone());
        assert!(answered.record.is_some());
        assert_eq!(answered.json, v);
    }
}
