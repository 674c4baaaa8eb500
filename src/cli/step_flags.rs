//! The flags of one aws:executeScript step, declared once: `invoke` and `submit` flatten them.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::{CliError, read_file};
use crate::step::{Attachment, StepInputs};

/// The step flags (`--runtime`, `--handler`, `--script`, `--attachment`, `--payload`,
/// `--payload-file`, `--timeout`, `--memory`). `invoke` requires `--runtime`; `submit` takes
/// either these or a runbook.
#[derive(Debug, Clone, Default, Args)]
pub struct StepFlags {
    /// The Runtime, e.g. python3.11 or "PowerShell 7.0".
    #[arg(long)]
    pub runtime: Option<String>,
    /// The Handler (Python): `function`, or `file.function` for an attachment.
    #[arg(long)]
    pub handler: Option<String>,
    /// The inline Script, read from a file.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// An attachment (.py or .zip); repeat for several.
    #[arg(long = "attachment", value_name = "FILE")]
    pub attachment_files: Vec<PathBuf>,
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
}

impl StepFlags {
    /// Turns the flags into step inputs, reading every file (errors name the flag).
    pub fn step_inputs(&self) -> Result<StepInputs, CliError> {
        let script = match &self.script {
            Some(path) => {
                let bytes = read_file("--script", path)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    CliError::Invalid(format!("--script: {} is not UTF-8 text", path.display()))
                })?;
                Some(Value::String(text))
            }
            None => None,
        };
        let mut attachments = Vec::new();
        for path in &self.attachment_files {
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
            runtime: self.runtime.clone(),
            handler: self.handler.clone(),
            input_payload: self.input_payload()?,
            script,
            attachments,
            timeout_seconds: self.timeout,
        })
    }

    /// The InputPayload of `--payload` or `--payload-file`, parsed.
    fn input_payload(&self) -> Result<Option<Value>, CliError> {
        let payload_text = match (&self.payload, &self.payload_file) {
            (Some(text), _) => Some(("--payload", text.clone())),
            (None, Some(path)) => {
                let bytes = read_file("--payload-file", path)?;
                Some((
                    "--payload-file",
                    String::from_utf8(bytes).map_err(|_| {
                        CliError::Invalid(format!(
                            "--payload-file: {} is not UTF-8",
                            path.display()
                        ))
                    })?,
                ))
            }
            (None, None) => None,
        };
        match payload_text {
            Some((flag, text)) => serde_json::from_str::<Value>(&text).map(Some).map_err(|e| {
                CliError::Invalid(format!("{flag}: InputPayload is not valid JSON: {e}"))
            }),
            None => Ok(None),
        }
    }
}
