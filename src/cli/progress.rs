//! The text progress of `scriptbox run`: one line per step start and end, the step's log lines
//! indented between them.

use std::io::Write;

use crate::result::StepStatus;
use crate::runbook::executor::RunEvent;

/// Writes a runbook's progress as text to `out` (stderr for `run`); quiet when not `verbose`
/// (`--output json`). Write errors are ignored: progress must never fail the run.
#[derive(Debug)]
pub struct TextProgress<W: Write> {
    out: W,
    verbose: bool,
}

impl<W: Write> TextProgress<W> {
    /// Progress to `out`, or none when `verbose` is false.
    pub fn new(out: W, verbose: bool) -> Self {
        TextProgress { out, verbose }
    }

    /// Reports one event of the executor.
    pub fn on_event(&mut self, event: RunEvent<'_>) {
        if self.verbose {
            let _ = self.write_event(event);
        }
    }

    /// The writer back (tests read what was written).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_event(&mut self, event: RunEvent<'_>) -> std::io::Result<()> {
        let out = &mut self.out;
        match event {
            RunEvent::StepStarted { step, attempt } => {
                if attempt > 1 {
                    writeln!(
                        out,
                        "▶ {} ({}) attempt {attempt} of {}",
                        step.name,
                        step.action_kind().name(),
                        step.max_attempts
                    )
                } else {
                    writeln!(out, "▶ {} ({})", step.name, step.action_kind().name())
                }
            }
            RunEvent::Log { line, .. } => {
                writeln!(
                    out,
                    "    {} {}",
                    super::invoke::log_mark(line.stream),
                    line.text
                )
            }
            RunEvent::Waiting {
                step,
                execution_id,
                accepts,
            } => {
                let types: Vec<&str> = accepts.iter().map(|k| k.as_str()).collect();
                writeln!(
                    out,
                    "⏸ {} is waiting for {}: scriptbox signal {execution_id} --type {}",
                    step.name,
                    types.join(" or "),
                    types.join("|")
                )
            }
            RunEvent::StepFinished { record } => {
                let ms = (record.end.utc() - record.start.utc())
                    .num_milliseconds()
                    .max(0);
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
                let r = writeln!(out, "{line}");
                if let Some(f) = &record.failure_message {
                    for l in f.lines() {
                        let _ = writeln!(out, "    {l}");
                    }
                }
                r
            }
        }
    }
}
