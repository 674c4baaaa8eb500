//! The API's JSON: submission bodies (unknown fields refused), their validation into something
//! runnable (the execution objects `get` returns are `record::ExecutionRecord`'s).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{EffectiveLimits, RequestedLimits, Settings};
use crate::runbook::{self as rb, Problem};
use crate::runtimes::Catalog;
use crate::step::{self, Attachment, StepInputs, ValidatedStep};
use crate::store::ExecKind;

/// `POST /v1/executions`: exactly one of `Step` or `Runbook`, and optional `Limits`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct SubmitRequest {
    /// One executeScript step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepRequest>,
    /// A whole runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<RunbookRequest>,
    /// Lower limits than the configured defaults (never above the maxima).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsRequest>,
}

/// The inputs of one `aws:executeScript` step, as in a runbook (PascalCase like AWS).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct StepRequest {
    /// `python3.11`, `PowerShell 7.0`...
    pub runtime: String,
    /// The handler (Python).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The inline script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Attachments (.py or .zip), base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRequest>,
    /// The InputPayload object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_payload: Option<Value>,
    /// `timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

/// A file sent with the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct AttachmentRequest {
    /// The file name.
    pub name: String,
    /// Its bytes, base64 (standard alphabet, padded).
    pub content: String,
}

/// A runbook with its parameters and attachments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct RunbookRequest {
    /// The document text (YAML or JSON, schema 0.3).
    pub document: String,
    /// Its name (default `runbook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_name: Option<String>,
    /// Parameter values: a string is read as `-p Name=Value` text; other JSON is typed.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// The document's `files`, base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRequest>,
}

/// Limits a request may lower.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct LimitsRequest {
    /// Per-step timeout ceiling, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU in thousandths of a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milli_cpus: Option<u64>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// Bytes of stdout plus stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// A request refused before anything ran: the field and the rule.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// A code: `InvalidRequest`, `InvalidStep`, `InvalidRunbook`, `InvalidLimits`.
    pub code: &'static str,
    /// The field, when one is to blame.
    pub field: Option<String>,
    /// What is wrong, naming fields and rules.
    pub message: String,
    /// A runbook's problems, each with its place.
    pub problems: Vec<Problem>,
}

impl Invalid {
    fn new(code: &'static str, field: Option<&str>, message: impl Into<String>) -> Invalid {
        Invalid {
            code,
            field: field.map(str::to_string),
            message: message.into(),
            problems: vec![],
        }
    }
}

/// What runs.
#[derive(Debug)]
pub enum Work {
    /// One step.
    Step(Box<ValidatedStep>),
    /// A runbook with resolved parameters.
    Runbook(Box<rb::document::Runbook>, Map<String, Value>),
}

/// A validated submission.
#[derive(Debug)]
pub struct Prepared {
    /// What runs.
    pub work: Work,
    /// With which limits.
    pub limits: EffectiveLimits,
}

impl Prepared {
    /// Step or runbook.
    pub fn kind(&self) -> ExecKind {
        match self.work {
            Work::Step(_) => ExecKind::Step,
            Work::Runbook(..) => ExecKind::Runbook,
        }
    }

    /// The runtime label for metrics and lists: the step's runtime, or `runbook`.
    pub fn runtime(&self) -> Option<String> {
        match &self.work {
            Work::Step(s) => Some(s.runtime.clone()),
            Work::Runbook(..) => None,
        }
    }

    /// The document's name.
    pub fn document_name(&self) -> Option<String> {
        match &self.work {
            Work::Step(_) => None,
            Work::Runbook(rb, _) => Some(rb.name.clone()),
        }
    }
}

fn decode(field: &str, attachments: &[AttachmentRequest]) -> Result<Vec<Attachment>, Invalid> {
    attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.content.as_bytes())
                .map_err(|e| {
                    Invalid::new(
                        "InvalidRequest",
                        Some(&format!("{field}[{i}].Content")),
                        format!("{field}[{i}].Content: is not valid base64: {e}"),
                    )
                })?;
            Ok(Attachment {
                name: a.name.clone(),
                bytes,
            })
        })
        .collect()
}

/// Parses a body: unknown fields, wrong types and bad JSON are refused with the serde message
/// (it names the field).
pub fn parse_submit(body: &[u8]) -> Result<SubmitRequest, Invalid> {
    serde_json::from_slice(body)
        .map_err(|e| Invalid::new("InvalidRequest", None, format!("request body: {e}")))
}

/// Validates a submission: limits within the maxima, the step or the whole runbook and its
/// parameters. `scratch` is a folder for a runbook's attachments while it is read.
pub fn prepare(
    req: &SubmitRequest,
    settings: &Settings,
    catalog: &Catalog,
    scratch: &Path,
) -> Result<Prepared, Invalid> {
    let l = req.limits.clone().unwrap_or_default();
    let limits = settings
        .resolve_limits(&RequestedLimits {
            timeout_seconds: l.timeout_seconds,
            memory_mb: l.memory_mb,
            milli_cpus: l.milli_cpus,
            pids_limit: l.pids_limit,
            output_bytes: l.output_bytes,
        })
        .map_err(|e| Invalid::new("InvalidLimits", Some(e.field), e.to_string()))?;
    let work = match (&req.step, &req.runbook) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(Invalid::new(
                "InvalidRequest",
                None,
                "request body: give exactly one of Step or Runbook",
            ));
        }
        (Some(s), None) => prepare_step(s, catalog, &limits)?,
        (None, Some(r)) => prepare_runbook(r, settings, catalog, scratch)?,
    };
    Ok(Prepared { work, limits })
}

/// A step request, validated like `scriptbox invoke`'s flags.
fn prepare_step(
    s: &StepRequest,
    catalog: &Catalog,
    limits: &EffectiveLimits,
) -> Result<Work, Invalid> {
    // A step that sets no timeout gets the execution's ceiling (the default).
    let ceiling = i64::try_from(limits.timeout_seconds).unwrap_or(i64::MAX);
    let inputs = StepInputs {
        runtime: Some(s.runtime.clone()),
        handler: s.handler.clone(),
        input_payload: s.input_payload.clone(),
        script: s.script.clone().map(Value::String),
        attachments: decode("Step.Attachments", &s.attachments)?,
        timeout_seconds: Some(s.timeout_seconds.unwrap_or(ceiling)),
    };
    let step = step::validate(&inputs, catalog, limits.timeout_seconds).map_err(|e| {
        let mut inv = Invalid::new("InvalidStep", None, format!("invalid step: {e}"));
        inv.field = e.problems.first().map(|p| format!("Step.{}", p.field));
        inv
    })?;
    Ok(Work::Step(Box::new(step)))
}

/// A runbook request: its attachments in a scratch folder while the document is read, then its
/// parameters resolved.
fn prepare_runbook(
    r: &RunbookRequest,
    settings: &Settings,
    catalog: &Catalog,
    scratch: &Path,
) -> Result<Work, Invalid> {
    let attachments = decode("Runbook.Attachments", &r.attachments)?;
    let dir = scratch.join(uuid::Uuid::new_v4().to_string());
    let loaded = (|| {
        std::fs::create_dir_all(&dir)?;
        for a in &attachments {
            let name = Path::new(&a.name);
            let plain = name.file_name().map(|n| n == name.as_os_str()) == Some(true);
            if !plain {
                return Err(std::io::Error::other(format!(
                    "Runbook.Attachments: {:?} must be a plain file name",
                    a.name
                )));
            }
            std::fs::write(dir.join(name), &a.bytes)?;
        }
        Ok(())
    })();
    let result = loaded
        .map_err(|e| Invalid::new("InvalidRequest", Some("Runbook.Attachments"), e.to_string()))
        .and_then(|()| {
            let options = rb::document::LoadOptions {
                catalog,
                max_timeout_secs: settings.limits.max_timeout_seconds,
                attachments_dir: None,
            };
            let name = r.document_name.clone().unwrap_or_else(|| "runbook".into());
            let format = rb::yaml::Format::detect("", &r.document);
            rb::document::load_str(&r.document, &name, format, &dir, &options).map_err(|refused| {
                Invalid {
                    code: "InvalidRunbook",
                    field: Some("Runbook.Document".into()),
                    message: format!("the runbook is not valid:\n{refused}"),
                    problems: refused.problems,
                }
            })
        });
    let _ = std::fs::remove_dir_all(&dir);
    let doc = result?;
    let supplied: Vec<(String, rb::parameters::Supplied)> = r
        .parameters
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(t) => rb::parameters::Supplied::Text(t.clone()),
                other => rb::parameters::Supplied::Typed(other.clone()),
            };
            (k.clone(), s)
        })
        .collect();
    let params = rb::parameters::resolve(&doc.parameters, &supplied).map_err(|problems| {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Invalid {
            code: "InvalidParameters",
            field: Some("Runbook.Parameters".into()),
            message: format!(
                "the runbook cannot run with these parameters:\n{}",
                text.join("\n")
            ),
            problems,
        }
    })?;
    Ok(Work::Runbook(Box::new(doc), params))
}

/// The message of an execution that was running when scriptbox died.
pub const RESTARTED_MESSAGE: &str = "scriptbox restarted while this execution was running";
/// The message of an execution cancelled before it got a container.
pub const CANCELLED_QUEUED_MESSAGE: &str = "The execution was cancelled before it started.";

/// Reads the `Content` of local files for a request.
pub fn attachment_requests(files: &HashMap<String, Vec<u8>>) -> Vec<AttachmentRequest> {
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| AttachmentRequest {
            name: n.clone(),
            content: base64::engine::general_purpose::STANDARD.encode(&files[n]),
        })
        .collect()
}

/// Encodes bytes for a request.
pub fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_forbidden_choices_are_refused() {
        for body in [
            r#"{"Step": {"Runtime": "python3.11", "Image": "evil"}}"#,
            r#"{"Step": {"Runtime": "python3.11"}, "Network": "host"}"#,
            r#"{"Step": {"Runtime": "python3.11"}, "Limits": {"User": "0:0"}}"#,
            r#"{"Step": {"Runtime": "python3.11"}, "Limits": {"Mounts": []}}"#,
        ] {
            let e = parse_submit(body.as_bytes()).unwrap_err();
            assert!(e.message.contains("unknown field"), "{body}: {}", e.message);
        }
    }

    #[test]
    fn limits_can_be_lowered_never_raised() {
        let settings = Settings::default();
        let catalog = Catalog::builtin();
        let dir = std::env::temp_dir();
        let req = |limits: LimitsRequest| SubmitRequest {
            step: Some(StepRequest {
                runtime: "python3.11".into(),
                handler: Some("h".into()),
                script: Some("def h(e, c):\n    return 1\n".into()),
                ..Default::default()
            }),
            limits: Some(limits),
            ..Default::default()
        };
        let ok = prepare(
            &req(LimitsRequest {
                memory_mb: Some(64),
                timeout_seconds: Some(5),
                ..Default::default()
            }),
            &settings,
            &catalog,
            &dir,
        )
        .unwrap();
        assert_eq!(ok.limits.memory_bytes, 64 * 1024 * 1024);
        match ok.work {
            Work::Step(s) => assert_eq!(s.timeout.as_secs(), 5),
            _ => unreachable!(),
        }
        let e = prepare(
            &req(LimitsRequest {
                memory_mb: Some(4096),
                ..Default::default()
            }),
            &settings,
            &catalog,
            &dir,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Limits.MemoryMb"));
        assert!(
            e.message.contains("above the configured maximum"),
            "{}",
            e.message
        );
        let e = prepare(
            &req(LimitsRequest {
                timeout_seconds: Some(601),
                ..Default::default()
            }),
            &settings,
            &catalog,
            &dir,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Limits.TimeoutSeconds"));
    }
}
