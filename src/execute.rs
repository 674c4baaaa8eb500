//! Runs one validated step in the sandbox and turns what came back into a [`StepResult`].
//!
//! Data flows one way: validated step → request bytes → container → frames and log → result.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::pool::WarmPool;
use crate::protocol::{
    BootstrapLimits, BootstrapResult, FrameDecoder, FrameEvent, PROTOCOL_VERSION, RequestHeader,
    encode_request, parse_result,
};
use crate::result::{
    ErrorDetail, KillReason, LogLine, LogStream, PayloadVerdict, StepResult, StepStatus,
    TIMEOUT_MESSAGE, apply_payload_rules, aws_failure_message, aws_plain_failure, error_detail,
    payload_too_large_message, signal_of_exit_code,
};
use crate::sandbox::{
    ContainerJob, Engine, Flow, OutputObserver, OutputStream, Removal, SandboxError,
};
use crate::step::ValidatedStep;

/// Values of the context dict and the AWS environment of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsContext {
    /// `global:ACCOUNT_ID`.
    pub account_id: String,
    /// `global:REGION`, and `AWS_REGION` / `AWS_DEFAULT_REGION` in the container.
    pub region: String,
    /// `global:AWS_PARTITION`.
    pub partition: String,
}

impl Default for AwsContext {
    fn default() -> Self {
        Self {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
        }
    }
}

/// Limits of what the executor keeps of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputLimits {
    /// Bytes of log kept per stream; past it the container is killed and the log marked truncated.
    pub log_bytes_per_stream: usize,
    /// Longest log line kept whole; longer lines are split.
    pub line_bytes: usize,
    /// Lines of log kept per stream; past it the container is killed and the log marked truncated.
    pub log_lines_per_stream: usize,
    /// Bytes zip attachments may expand to inside the sandbox.
    pub unzip_bytes: u64,
    /// Entries zip attachments may hold.
    pub unzip_entries: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            log_bytes_per_stream: 1024 * 1024,
            line_bytes: 16 * 1024,
            log_lines_per_stream: 20_000,
            unzip_bytes: 64 * 1024 * 1024,
            unzip_entries: 10_000,
        }
    }
}

/// Per-execution options.
pub struct ExecuteOptions<'a> {
    /// The execution id; a fresh UUID when `None`.
    pub execution_id: Option<String>,
    /// A lower memory limit than the sandbox's.
    pub memory_bytes: Option<i64>,
    /// The context values.
    pub context: &'a AwsContext,
    /// Output limits.
    pub limits: &'a OutputLimits,
    /// Called with each log line as soon as it is complete.
    pub on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>,
    /// `automation:EXECUTION_ID` when the step is part of a runbook execution.
    pub automation_execution_id: Option<String>,
}

/// Builds the context dict a handler receives.
pub fn context_dict(
    ctx: &AwsContext,
    execution_id: &str,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("automation:EXECUTION_ID".into(), execution_id.into());
    m.insert("global:ACCOUNT_ID".into(), ctx.account_id.clone().into());
    m.insert("global:REGION".into(), ctx.region.clone().into());
    m.insert("global:AWS_PARTITION".into(), ctx.partition.clone().into());
    m.insert(
        "global:DATE".into(),
        now.format("%Y-%m-%d").to_string().into(),
    );
    m.insert(
        "global:DATE_TIME".into(),
        now.format("%Y-%m-%d_%H.%M.%S").to_string().into(),
    );
    m
}

/// Collects the container's output: frames, the log with its caps, and live delivery.
struct StepObserver<'a> {
    decoder: FrameDecoder,
    limits: &'a OutputLimits,
    log: Vec<LogLine>,
    partial: [Vec<u8>; 2],
    kept: [usize; 2],
    lines: [usize; 2],
    truncated: bool,
    result: Option<Vec<u8>>,
    result_too_large: Option<u64>,
    unframed: bool,
    /// The handler's stderr is the container's raw stderr (PowerShell), not `E` frames: it is a
    /// separate stream from the frames, so its lines may arrive after the result frame.
    raw_stderr_log: bool,
    on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>,
}

impl<'a> StepObserver<'a> {
    fn new(limits: &'a OutputLimits, on_log: Option<&'a mut (dyn FnMut(&LogLine) + Send)>) -> Self {
        Self {
            decoder: FrameDecoder::default(),
            limits,
            log: Vec::new(),
            partial: [Vec::new(), Vec::new()],
            kept: [0, 0],
            lines: [0, 0],
            truncated: false,
            result: None,
            result_too_large: None,
            unframed: false,
            raw_stderr_log: false,
            on_log,
        }
    }

    /// Records one complete line; returns false once the stream's line cap is passed.
    fn push_line(&mut self, stream: LogStream, bytes: &[u8]) -> bool {
        let idx = usize::from(stream == LogStream::Stderr);
        if stream != LogStream::Scriptbox {
            if self.lines[idx] >= self.limits.log_lines_per_stream {
                self.truncated = true;
                return false;
            }
            self.lines[idx] += 1;
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        let line = LogLine { stream, text };
        if let Some(cb) = self.on_log.as_mut() {
            cb(&line);
        }
        self.log.push(line);
        true
    }

    /// Appends log bytes of one stream; returns false once its cap is passed.
    fn log_bytes(&mut self, stream: LogStream, mut bytes: &[u8]) -> bool {
        let idx = usize::from(stream == LogStream::Stderr);
        if self.kept[idx] >= self.limits.log_bytes_per_stream {
            self.truncated = true;
            return false;
        }
        let room = self.limits.log_bytes_per_stream - self.kept[idx];
        let mut within = bytes.len() <= room;
        if !within {
            bytes = &bytes[..room];
            self.truncated = true;
        }
        self.kept[idx] += bytes.len();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, newline) = match rest.iter().position(|b| *b == b'\n') {
                Some(p) => (&rest[..p], true),
                None => (rest, false),
            };
            rest = &rest[(piece.len() + usize::from(newline)).min(rest.len())..];
            let mut pending = std::mem::take(&mut self.partial[idx]);
            pending.extend_from_slice(piece);
            // Split very long lines so one line can't hold the whole log hostage.
            while pending.len() > self.limits.line_bytes {
                let tail = pending.split_off(self.limits.line_bytes);
                within &= self.push_line(stream, &pending);
                pending = tail;
            }
            if newline {
                within &= self.push_line(stream, &pending);
                if !within {
                    return false;
                }
            } else {
                self.partial[idx] = pending;
            }
        }
        within
    }

    fn flush_partials(&mut self) {
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let pending = std::mem::take(&mut self.partial[idx]);
            if !pending.is_empty() {
                self.push_line(stream, &pending);
            }
        }
    }
}

impl OutputObserver for StepObserver<'_> {
    fn on_output(&mut self, stream: OutputStream, bytes: &[u8]) -> Flow {
        // The first R frame is the result: no frame after it (a forged second result, late log
        // lines, a flood) may change the payload, the status or the log. Only a raw stderr log
        // (PowerShell's) may still deliver lines written before the result, within its caps.
        if self.result.is_some() {
            if stream == OutputStream::Stderr && self.raw_stderr_log {
                self.log_bytes(LogStream::Stderr, bytes);
            }
            return Flow::ResultComplete;
        }
        if self.result_too_large.is_some() {
            return Flow::Continue;
        }
        let mut within = true;
        match stream {
            OutputStream::Stderr => within = self.log_bytes(LogStream::Stderr, bytes),
            OutputStream::Stdout => {
                let mut events = Vec::new();
                self.decoder.feed(bytes, &mut |e| events.push(e));
                for event in events {
                    if self.result.is_some() || self.result_too_large.is_some() {
                        break;
                    }
                    match event {
                        FrameEvent::Stdout(b) => within &= self.log_bytes(LogStream::Stdout, &b),
                        FrameEvent::Stderr(b) => within &= self.log_bytes(LogStream::Stderr, &b),
                        FrameEvent::Unframed(b) => {
                            self.unframed = true;
                            within &= self.log_bytes(LogStream::Stdout, &b);
                        }
                        FrameEvent::Result(body) => self.result = Some(body),
                        FrameEvent::ResultTooLarge(n) => {
                            // The verdict is known from the frame header: stop the container
                            // rather than read megabytes that will be thrown away.
                            self.result_too_large = Some(n);
                            within = false;
                        }
                    }
                }
            }
        }
        if !within {
            Flow::Kill(KillReason::OutputLimit)
        } else if self.result.is_some() {
            // The R frame is the bootstrap's last frame: everything before it has arrived.
            Flow::ResultComplete
        } else {
            Flow::Continue
        }
    }
}

/// How a container's exit code reads in a message: the signal behind it when there is one.
fn exit_description(exit_code: Option<i64>) -> String {
    match exit_code {
        Some(code) => match signal_of_exit_code(code) {
            Some((signal, name)) => format!("exit code {code}: signal {signal}, {name}"),
            None => format!("exit code {code}"),
        },
        None => "exit code unknown".into(),
    }
}

/// Errors that stop an execution before it has a result (the engine, not the script).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Building the request failed.
    #[error(transparent)]
    Request(#[from] crate::protocol::RequestError),
    /// Docker failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Runs a validated step in a fresh container.
pub async fn execute_step(
    engine: &Engine,
    step: &ValidatedStep,
    options: ExecuteOptions<'_>,
    cancel: &CancellationToken,
) -> Result<StepResult, ExecuteError> {
    let (result, removal) = execute_step_pooled(engine, None, step, options, cancel).await?;
    removal.finish().await?;
    Ok(result)
}

/// The environment of every sandbox: an allowlist, never scriptbox's own environment.
pub fn container_env(context: &AwsContext) -> Vec<String> {
    let region = &context.region;
    vec![
        "HOME=/tmp".into(),
        "LANG=C.UTF-8".into(),
        format!("AWS_REGION={region}"),
        format!("AWS_DEFAULT_REGION={region}"),
    ]
}

/// Runs a validated step, in a pre-started container of `pool` when one fits (same image and
/// limits, no caller-chosen execution id), else in a new one. The result comes back as soon as
/// Docker reports the exit; a pooled container's removal then goes on in the background and the
/// returned [`Removal`] completes when it is gone.
pub async fn execute_step_pooled(
    engine: &Engine,
    pool: Option<&WarmPool>,
    step: &ValidatedStep,
    options: ExecuteOptions<'_>,
    cancel: &CancellationToken,
) -> Result<(StepResult, Removal), ExecuteError> {
    let began = Instant::now();
    // A pooled container already carries its execution id label: the execution adopts it.
    let prestarted = match (pool, &options.execution_id, options.memory_bytes) {
        (Some(pool), None, None) => pool.take(step),
        _ => None,
    };
    let execution_id = prestarted
        .as_ref()
        .map(|c| c.execution_id.clone())
        .or(options.execution_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let now = Utc::now();
    let automation_id = options
        .automation_execution_id
        .unwrap_or_else(|| execution_id.clone());
    let task_dir = format!(
        "/tmp/{}-{}",
        uuid::Uuid::new_v4(),
        now.format("%Y-%m-%d-%H-%M-%S")
    );
    let header = RequestHeader {
        v: PROTOCOL_VERSION,
        task_dir,
        language: step.language.as_str(),
        entry: step.entry.clone(),
        payload: step.payload.clone(),
        context: context_dict(options.context, &automation_id, now),
        zips: step.zips.clone(),
        limits: BootstrapLimits {
            unzip_bytes: options.limits.unzip_bytes,
            unzip_entries: options.limits.unzip_entries,
            payload_items: crate::result::MAX_PAYLOAD_ITEMS,
        },
        archive_bytes: 0,
    };
    let stdin = encode_request(header, &step.files)?;
    let job = ContainerJob {
        execution_id: execution_id.clone(),
        image: step.image.clone(),
        runtime: step.runtime.clone(),
        command: step.command.clone(),
        env: container_env(options.context),
        stdin,
        timeout: step.timeout,
        memory_bytes: options.memory_bytes,
    };
    let mut observer = StepObserver::new(options.limits, options.on_log);
    // Only the Python bootstrap frames the handler's stderr; PowerShell's is the raw stream.
    observer.raw_stderr_log = step.language != crate::runtimes::Language::Python;
    let pooled = prestarted.is_some();
    // Returning at the result frame is safe only where the handler's stderr is framed on the same
    // ordered stream (the Python bootstrap); PowerShell's stderr is raw, so its late lines could
    // arrive after the result: a pooled PowerShell run waits for the exit as a cold one does.
    let defer = pooled && step.language == crate::runtimes::Language::Python;
    let mut ran = engine
        .run_with(prestarted, job.clone(), &mut observer, cancel, defer)
        .await;
    // A pooled container that died while waiting never reads the request and writes nothing
    // (the bootstrap always writes a result): run the execution in a new container instead.
    let stale = match &ran {
        Ok((o, _)) => o.output_bytes == 0 && o.kill_reason.is_none(),
        Err(_) => true,
    };
    if pooled && stale && !cancel.is_cancelled() {
        tracing::warn!(
            "a pooled container for {} was not usable; running cold",
            step.runtime
        );
        ran = engine
            .run_with(None, job, &mut observer, cancel, false)
            .await;
    }
    let (outcome, removal) = ran?;
    observer.flush_partials();

    let mut result = StepResult {
        execution_id,
        runtime: step.runtime.clone(),
        status: StepStatus::Failed,
        payload: Value::Null,
        failure_message: None,
        error: None,
        log: Vec::new(),
        log_truncated: observer.truncated,
        kill_reason: outcome.kill_reason,
        exit_code: outcome.exit_code,
        container_id: Some(outcome.container_id.clone()),
        duration_ms: began.elapsed().as_millis() as u64,
    };
    let fail = |result: &mut StepResult, status: StepStatus, kind: &str, message: String| {
        result.status = status;
        result.failure_message = Some(if status == StepStatus::TimedOut {
            format!("{TIMEOUT_MESSAGE} {message}")
        } else {
            aws_plain_failure(kind, &message)
        });
        result.error = Some(ErrorDetail {
            error_type: kind.into(),
            message,
            stack_trace: vec![],
        });
    };
    let memory_mib = options
        .memory_bytes
        .map(|m| m.min(engine.config().memory_bytes))
        .unwrap_or(engine.config().memory_bytes)
        / (1024 * 1024);
    // A result too large to read was the reason for an output-limit kill: report the payload.
    let kill_reason = match (outcome.kill_reason, observer.result_too_large) {
        (Some(KillReason::OutputLimit), Some(_)) => None,
        (reason, _) => reason,
    };
    result.kill_reason = kill_reason;
    match kill_reason {
        Some(KillReason::Cancelled) => fail(
            &mut result,
            StepStatus::Cancelled,
            "Cancelled",
            "The execution was cancelled; its container was killed.".into(),
        ),
        Some(KillReason::Timeout) => fail(
            &mut result,
            StepStatus::TimedOut,
            "Timeout",
            format!(
                "The step's timeout of {} seconds passed; its container was killed.",
                step.timeout.as_secs()
            ),
        ),
        Some(KillReason::OutputLimit) => fail(
            &mut result,
            StepStatus::Failed,
            "OutputLimitExceeded",
            format!(
                "The script wrote more output than allowed ({} bytes per stream, {} bytes in all); its container was killed and the log truncated.",
                options.limits.log_bytes_per_stream,
                engine.config().output_limit_bytes
            ),
        ),
        Some(KillReason::OutOfMemory) => fail(
            &mut result,
            StepStatus::Failed,
            "OutOfMemory",
            format!("The script ran out of memory (limit {memory_mib} MiB); the kernel killed it."),
        ),
        Some(KillReason::External) => fail(
            &mut result,
            StepStatus::Failed,
            "KilledExternally",
            format!(
                "The container was killed from outside scriptbox ({}), not by its timeout, its limits or a cancellation: someone stopped it through Docker (docker kill, docker stop, docker rm -f) before the script returned a result.",
                exit_description(outcome.exit_code)
            ),
        ),
        None => match (observer.result.take(), observer.result_too_large) {
            (_, Some(size)) => fail(
                &mut result,
                StepStatus::Failed,
                "PayloadTooLarge",
                payload_too_large_message(size as usize, false),
            ),
            (Some(body), None) => match parse_result(&body) {
                Ok(BootstrapResult::Returned {
                    payload,
                    original_items,
                }) => match apply_payload_rules(payload, original_items) {
                    PayloadVerdict::Keep(payload, note) => {
                        result.status = StepStatus::Success;
                        result.payload = payload;
                        if let Some(note) = note {
                            observer.log.push(LogLine {
                                stream: LogStream::Scriptbox,
                                text: note,
                            });
                        }
                    }
                    PayloadVerdict::TooLarge(size) => fail(
                        &mut result,
                        StepStatus::Failed,
                        "PayloadTooLarge",
                        payload_too_large_message(size, true),
                    ),
                },
                Ok(BootstrapResult::Raised(error)) => {
                    result.failure_message = Some(aws_failure_message(&error));
                    result.error = Some(error_detail(&error));
                }
                Err(why) => fail(
                    &mut result,
                    StepStatus::Failed,
                    "ProtocolError",
                    format!("The sandbox's result could not be read: {why}"),
                ),
            },
            (None, None) => {
                let code = outcome
                    .exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown".into());
                let mut why = match outcome.exit_code.and_then(signal_of_exit_code) {
                    Some((signal, name)) => format!(
                        "The script's process ended (exit code {code}: killed by signal {signal}, {name}) without returning a result."
                    ),
                    None => format!(
                        "The script's process ended (exit code {code}) without returning a result."
                    ),
                };
                if outcome.stdin_incomplete {
                    why.push_str(" It did not read its whole request.");
                }
                if observer.unframed {
                    why.push_str(" Its bootstrap wrote unexpected output; is the image built for this version of scriptbox?");
                }
                fail(&mut result, StepStatus::Failed, "ScriptExited", why);
            }
        },
    }
    result.log = observer.log;
    result.duration_ms = began.elapsed().as_millis() as u64;
    Ok((result, removal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FRAME_STDOUT;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn context_has_the_documented_keys_and_formats() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:30:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = context_dict(&AwsContext::default(), "exec-1", now);
        assert_eq!(m["automation:EXECUTION_ID"], "exec-1");
        assert_eq!(m["global:ACCOUNT_ID"], "123456789012");
        assert_eq!(m["global:REGION"], "us-east-1");
        assert_eq!(m["global:AWS_PARTITION"], "aws");
        assert_eq!(m["global:DATE"], "2026-11-27");
        assert_eq!(m["global:DATE_TIME"], "2026-11-27_12.30.05");
    }

    #[test]
    fn nothing_after_the_first_result_frame_counts() {
        use crate::protocol::{FRAME_RESULT, FRAME_STDERR};
        let limits = OutputLimits::default();
        let mut o = StepObserver::new(&limits, None);
        let mut first = frame(FRAME_STDOUT, b"before\n");
        first.extend(frame(FRAME_RESULT, br#"{"ok":true,"payload":"genuine"}"#));
        // In the same chunk, after the result: a forged result, a late line, a huge frame.
        first.extend(frame(FRAME_RESULT, br#"{"ok":true,"payload":"forged"}"#));
        first.extend(frame(FRAME_STDOUT, b"late\n"));
        let mut huge = vec![FRAME_RESULT];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        first.extend(huge.clone());
        assert_eq!(
            o.on_output(OutputStream::Stdout, &first),
            Flow::ResultComplete
        );
        // Later chunks, on both streams: ignored, never a kill.
        let mut later = frame(
            FRAME_RESULT,
            br#"{"ok":false,"error":{"type":"X","message":"m"}}"#,
        );
        later.extend(frame(FRAME_STDERR, b"late err\n"));
        later.extend(huge);
        assert_eq!(
            o.on_output(OutputStream::Stdout, &later),
            Flow::ResultComplete
        );
        assert_eq!(
            o.on_output(OutputStream::Stderr, &[b'x'; 4 * 1024 * 1024]),
            Flow::ResultComplete
        );
        o.flush_partials();
        assert_eq!(
            o.result.as_deref(),
            Some(&br#"{"ok":true,"payload":"genuine"}"#[..])
        );
        assert_eq!(o.result_too_large, None);
        assert!(!o.truncated && !o.unframed);
        let texts: Vec<&str> = o.log.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["before"]);

        // PowerShell's stderr is a raw stream beside the frames: its lines may trail the result
        // and are still logged, but frames after the result are not, and nothing is a kill.
        let mut ps = StepObserver::new(&limits, None);
        ps.raw_stderr_log = true;
        let mut out = frame(FRAME_RESULT, br#"{"ok":true,"payload":1}"#);
        out.extend(frame(FRAME_STDOUT, b"late\n"));
        assert_eq!(
            ps.on_output(OutputStream::Stdout, &out),
            Flow::ResultComplete
        );
        assert_eq!(
            ps.on_output(OutputStream::Stderr, b"written before the result\n"),
            Flow::ResultComplete
        );
        assert_eq!(
            ps.on_output(OutputStream::Stderr, &[b'x'; 4 * 1024 * 1024]),
            Flow::ResultComplete
        );
        assert_eq!(ps.log[0].text, "written before the result");
        assert!(ps.log.iter().all(|l| l.stream == LogStream::Stderr));
    }

    #[test]
    fn log_lines_are_split_capped_and_lossy() {
        let limits = OutputLimits {
            log_bytes_per_stream: 40,
            line_bytes: 8,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut cb = |l: &LogLine| seen.push(l.text.clone());
        let mut o = StepObserver::new(&limits, Some(&mut cb));
        let mut out = frame(FRAME_STDOUT, b"hi\nthere");
        out.extend(frame(FRAME_STDOUT, b" you\n"));
        assert_eq!(o.on_output(OutputStream::Stdout, &out), Flow::Continue);
        assert_eq!(
            o.on_output(OutputStream::Stderr, b"bad \xff\x00 bytes\n"),
            Flow::Continue
        );
        assert_eq!(
            o.on_output(OutputStream::Stderr, &[b'x'; 100]),
            Flow::Kill(KillReason::OutputLimit)
        );
        o.flush_partials();
        assert!(o.truncated);
        let texts: Vec<String> = o.log.iter().map(|l| l.text.clone()).collect();
        assert_eq!(texts[0], "hi");
        assert_eq!(texts[1], "there yo");
        assert_eq!(texts[2], "u");
        assert_eq!(texts[3], "bad \u{fffd}\u{0} b");
        let stderr_kept: usize = o
            .log
            .iter()
            .filter(|l| l.stream == LogStream::Stderr)
            .map(|l| l.text.len())
            .sum();
        assert!(stderr_kept <= 45, "{stderr_kept}");
        drop(o);
        assert_eq!(seen.len(), texts.len());
    }
}
