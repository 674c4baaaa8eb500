//! The result of one step: status, payload rules, AWS-shaped failure messages, the log.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::ScriptError;

/// AWS's payload cap: 100 KB of serialized JSON.
pub const MAX_PAYLOAD_BYTES: usize = 102_400;
/// AWS returns at most this many items of a top-level list.
pub const MAX_PAYLOAD_ITEMS: usize = 100;

/// The start of every AWS failure message of an executeScript step.
const AWS_FAILURE_PREFIX: &str = "Step fails when it is Poll action status for completion.";
/// The end of every AWS failure message of an executeScript step.
const AWS_FAILURE_SUFFIX: &str =
    "Please refer to Automation Service Troubleshooting Guide for more diagnosis details.";
/// The message of a timed-out step (ours; AWS does not document one).
pub const TIMEOUT_MESSAGE: &str =
    "Step timed out while step is verifying the script execution status.";

/// The status of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// The handler returned and its payload fits the rules.
    Success,
    /// The handler raised, the payload broke a rule, or the sandbox killed it (OOM, output cap).
    Failed,
    /// The deadline passed; the container was killed.
    TimedOut,
    /// Somebody cancelled it; the container was killed.
    Cancelled,
}

impl StepStatus {
    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Success => "Success",
            StepStatus::Failed => "Failed",
            StepStatus::TimedOut => "TimedOut",
            StepStatus::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why scriptbox (or the kernel) killed a container before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillReason {
    /// The step's timeout passed.
    Timeout,
    /// The kernel's OOM killer ended it (from Docker inspect's `OOMKilled`).
    OutOfMemory,
    /// It wrote more output than allowed.
    OutputLimit,
    /// The execution was cancelled.
    Cancelled,
    /// Someone other than scriptbox killed the container (`docker kill`, `docker stop`,
    /// `docker rm -f`): Docker's event log shows a kill that scriptbox did not send.
    External,
}

/// The signal behind a container exit code of `128 + n` (how Docker reports a process killed by
/// signal `n`), with its name when it is a common one.
pub fn signal_of_exit_code(code: i64) -> Option<(i64, &'static str)> {
    let signal = code.checked_sub(128).filter(|n| (1..=64).contains(n))?;
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "a signal",
    };
    Some((signal, name))
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The handler's stdout.
    Stdout,
    /// The handler's stderr.
    Stderr,
    /// A note from scriptbox itself (for example that a list was cut to 100 items).
    Scriptbox,
}

/// One line of a step's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogLine {
    /// The stream.
    pub stream: LogStream,
    /// The text, invalid UTF-8 replaced.
    pub text: String,
}

/// The structured form of a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorDetail {
    /// Exception type (`KeyError`), or scriptbox's name for a sandbox failure
    /// (`OutOfMemory`, `OutputLimitExceeded`, `PayloadTooLarge`, `Timeout`...).
    pub error_type: String,
    /// The message.
    pub message: String,
    /// The customer's stack, outermost first, each `File "f", line n, in fn`.
    pub stack_trace: Vec<String>,
}

/// The result of one executeScript step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StepResult {
    /// The execution's id (also the container's `scriptbox.execution` label).
    pub execution_id: String,
    /// The canonical runtime.
    pub runtime: String,
    /// The status.
    pub status: StepStatus,
    /// The handler's return value as JSON; null when it returned None or did not succeed.
    pub payload: Value,
    /// The AWS-shaped failure message; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// The failure, structured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The log: the handler's stdout and stderr lines, in arrival order.
    pub log: Vec<LogLine>,
    /// True when the log was cut at its cap.
    pub log_truncated: bool,
    /// Why the container was killed, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<KillReason>,
    /// The container's exit code, from Docker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The Docker id of the (removed) container that ran the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Wall time from container creation to its result, milliseconds.
    pub duration_ms: u64,
    /// What the step's AWS egress did (absent when AWS access is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressCounts>,
}

impl StepResult {
    /// The result of a step that failed before any container ran it: `error_type` names why
    /// (`EngineError`, `CredentialsError`).
    pub fn not_run(
        execution_id: &str,
        runtime: &str,
        error_type: &str,
        message: &str,
    ) -> StepResult {
        StepResult {
            execution_id: execution_id.to_string(),
            runtime: runtime.to_string(),
            status: StepStatus::Failed,
            payload: Value::Null,
            failure_message: Some(message.to_string()),
            error: Some(ErrorDetail {
                error_type: error_type.into(),
                message: message.to_string(),
                stack_trace: vec![],
            }),
            log: vec![],
            log_truncated: false,
            kill_reason: None,
            exit_code: None,
            container_id: None,
            duration_ms: 0,
            egress: None,
        }
    }
}

/// Formats a handler's error the way the real service does, so tools parsing it keep working.
pub fn aws_failure_message(error: &ScriptError) -> String {
    let mut out = String::from(AWS_FAILURE_PREFIX);
    if !error.frames.is_empty() {
        out.push_str(" Traceback (most recent call last):\n");
        for f in &error.frames {
            out.push_str(&format!(
                "  File \"{}\", line {}, in {}\n",
                f.file, f.line, f.function
            ));
            if !f.code.is_empty() {
                out.push_str(&format!("    {}\n", f.code));
            }
        }
        out.push('\n');
    } else {
        out.push(' ');
    }
    let message = error.message.trim_end_matches('.');
    out.push_str(&format!(
        "{} - {}. {AWS_FAILURE_SUFFIX}",
        error.error_type, message
    ));
    out
}

/// Formats a failure that has no traceback (sandbox kills, payload rules) in the same shape.
pub fn aws_plain_failure(error_type: &str, message: &str) -> String {
    aws_failure_message(&ScriptError {
        error_type: error_type.into(),
        message: message.into(),
        frames: vec![],
    })
}

/// The structured detail of a script error.
pub fn error_detail(error: &ScriptError) -> ErrorDetail {
    ErrorDetail {
        error_type: error.error_type.clone(),
        message: error.message.clone(),
        stack_trace: error
            .frames
            .iter()
            .map(|f| format!("File \"{}\", line {}, in {}", f.file, f.line, f.function))
            .collect(),
    }
}

/// What the payload rules decided.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadVerdict {
    /// Keep this payload; the note (if any) goes to the log.
    Keep(Value, Option<String>),
    /// The payload breaks the size cap.
    TooLarge(usize),
}

/// Applies AWS's payload rules: a top-level list keeps its first 100 items (the log says so);
/// over 100 KB serialized, the step fails (cutting JSON would corrupt it).
///
/// `original_items` is the length the bootstrap saw before it cut the list.
pub fn apply_payload_rules(payload: Value, original_items: Option<u64>) -> PayloadVerdict {
    let mut note = None;
    let payload = match payload {
        Value::Array(mut items) => {
            let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
            let original = original_items.unwrap_or(len).max(len);
            items.truncate(MAX_PAYLOAD_ITEMS);
            if original > u64::try_from(MAX_PAYLOAD_ITEMS).unwrap_or(u64::MAX) {
                note = Some(format!(
                    "The payload is a list of {original} items; only the first {MAX_PAYLOAD_ITEMS} are returned, as AWS does."
                ));
            }
            Value::Array(items)
        }
        other => other,
    };
    let size = serde_json::to_vec(&payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        PayloadVerdict::TooLarge(size)
    } else {
        PayloadVerdict::Keep(payload, note)
    }
}

/// The message of a payload over the cap.
pub fn payload_too_large_message(size: usize, exact: bool) -> String {
    let qualifier = if exact { "" } else { "at least " };
    format!(
        "The script's output payload is {qualifier}{size} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes (100 KB)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TraceFrame;
    use serde_json::json;

    #[test]
    fn failure_message_matches_the_services_shape() {
        let e = ScriptError {
            error_type: "KeyError".into(),
            message: "'x'".into(),
            frames: vec![TraceFrame {
                file: "/tmp/abc/customer_script.py".into(),
                line: 3,
                function: "script_handler".into(),
                code: "return events['x']".into(),
            }],
        };
        assert_eq!(
            aws_failure_message(&e),
            "Step fails when it is Poll action status for completion. Traceback (most recent call last):\n  File \"/tmp/abc/customer_script.py\", line 3, in script_handler\n    return events['x']\n\nKeyError - 'x'. Please refer to Automation Service Troubleshooting Guide for more diagnosis details."
        );
        assert_eq!(
            error_detail(&e).stack_trace,
            vec!["File \"/tmp/abc/customer_script.py\", line 3, in script_handler"]
        );
    }

    #[test]
    fn signal_exit_codes_name_their_signal() {
        assert_eq!(signal_of_exit_code(137), Some((9, "SIGKILL")));
        assert_eq!(signal_of_exit_code(143), Some((15, "SIGTERM")));
        assert_eq!(signal_of_exit_code(128 + 40), Some((40, "a signal")));
        for not_a_signal in [0, 1, 2, 127, 128, 193, -1, i64::MIN, i64::MAX] {
            assert_eq!(signal_of_exit_code(not_a_signal), None, "{not_a_signal}");
        }
    }

    #[test]
    fn lists_keep_their_first_hundred_items() {
        let long: Vec<Value> = (0..250).map(Value::from).collect();
        match apply_payload_rules(Value::Array(long), None) {
            PayloadVerdict::Keep(Value::Array(v), Some(note)) => {
                assert_eq!(v.len(), 100);
                assert_eq!(v[99], json!(99));
                assert!(note.contains("250 items"));
            }
            other => panic!("{other:?}"),
        }
        // The bootstrap already cut it: the note still tells the original length.
        let cut: Vec<Value> = (0..100).map(Value::from).collect();
        assert!(matches!(
            apply_payload_rules(Value::Array(cut), Some(1000)),
            PayloadVerdict::Keep(_, Some(n)) if n.contains("1000 items")
        ));
        assert!(matches!(
            apply_payload_rules(json!([1, 2]), None),
            PayloadVerdict::Keep(_, None)
        ));
    }

    #[test]
    fn payload_over_100_kb_fails_with_its_size() {
        let exactly = Value::String("x".repeat(MAX_PAYLOAD_BYTES - 2));
        assert!(matches!(
            apply_payload_rules(exactly, None),
            PayloadVerdict::Keep(..)
        ));
        let over = Value::String("x".repeat(MAX_PAYLOAD_BYTES - 1));
        assert_eq!(
            apply_payload_rules(over, None),
            PayloadVerdict::TooLarge(MAX_PAYLOAD_BYTES + 1)
        );
    }
}
