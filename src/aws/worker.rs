//! The AWS API worker: how an AWS action's call becomes a step of scriptbox's own.
//!
//! AWS says its Automation service makes `aws:executeAwsApi` calls with boto3. scriptbox does
//! the same in a sandboxed container: `images/aws-api/worker.py` (embedded here, never user
//! code) runs as the handler of a step in a Python runtime image chosen by the operator
//! (`[aws] api_runtime`), through the one runner (`execute::Runner`), so it has the same
//! hardening, egress rules and header as any step, and the execution's credentials (the
//! runbook's `assumeRole`, else the operator's own: AWS actions run as whoever started the
//! automation). **(ours)** One container per call, labelled with the step execution's id and
//! carrying the execution's id in its header: a worker serves one call of one execution and is
//! gone after it, so it never serves another execution.

use std::time::Duration;

use serde_json::{Map, Value};

use super::api::{AwsCall, AwsCallError};
use crate::protocol::Entry;
use crate::result::{StepResult, StepStatus};
use crate::runtimes::{Catalog, Language};
use crate::sandbox::Engine;
use crate::step::ValidatedStep;

/// The worker's source (Python 3.6 syntax, so any Python runtime can run it).
pub const WORKER_SOURCE: &str = include_str!("../../images/aws-api/worker.py");
/// Its file name in the task folder.
const WORKER_FILE: &str = "scriptbox_aws_worker.py";
/// The most bytes of JSON a call's parameters may hold **(ours)**.
pub const MAX_PARAMETER_BYTES: usize = 256 * 1024;
/// The most bytes of JSON a response may hold **(ours: AWS documents none; the result frame
/// holds 4 MiB)**.
pub const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// The longest `Service` or `Api` accepted.
const MAX_NAME_CHARS: usize = 128;
/// The longest one call may take, container start included: AWS's 25 s for the call, plus
/// the container's start and boto3's import **(ours)**.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime the worker runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsWorker {
    /// The runtime's name (`python3.12`).
    pub runtime: String,
    /// Its image.
    pub image: String,
    /// Its bootstrap command.
    pub command: Vec<String>,
}

/// Why `[aws] api_runtime` cannot run the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerSettingError {
    /// Not a runtime of the catalog.
    #[error("aws.api_runtime {name:?} is not a runtime of the catalog (Python ones: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// The catalog's Python runtimes.
        known: String,
    },
    /// Not a Python runtime.
    #[error("aws.api_runtime {name:?} is not a Python runtime: the AWS API worker is Python")]
    NotPython {
        /// The name given.
        name: String,
    },
    /// Its image is not built.
    #[error(
        "aws.api_runtime {name:?}: its image {image} is not built (scriptbox images build {name})"
    )]
    NotBuilt {
        /// The runtime.
        name: String,
        /// Its image.
        image: String,
    },
    /// The engine could not be asked.
    #[error("aws.api_runtime: cannot ask the engine for images: {0}")]
    Engine(#[from] crate::sandbox::SandboxError),
}

impl AwsWorker {
    /// The worker in runtime `name` of `catalog` (a Python one), without asking the engine.
    pub fn of_runtime(catalog: &Catalog, name: &str) -> Result<AwsWorker, WorkerSettingError> {
        let Some(resolved) = catalog.resolve(name) else {
            return Err(WorkerSettingError::Unknown {
                name: name.chars().take(MAX_NAME_CHARS).collect(),
                known: python_runtimes(catalog).join(", "),
            });
        };
        if resolved.language() != Language::Python {
            return Err(WorkerSettingError::NotPython {
                name: name.to_string(),
            });
        }
        Ok(AwsWorker {
            runtime: resolved.runtime.name.clone(),
            image: resolved.runtime.image.clone(),
            command: resolved.family.command.clone(),
        })
    }

    /// The operator's `[aws] api_runtime`, which must be a Python runtime whose image is built;
    /// without one, the newest Python runtime of the catalog whose image is built (`None`
    /// when none is: every AWS action then fails naming the fix).
    pub async fn resolve(
        catalog: &Catalog,
        configured: Option<&str>,
        engine: &Engine,
    ) -> Result<Option<AwsWorker>, WorkerSettingError> {
        if let Some(name) = configured {
            let worker = Self::of_runtime(catalog, name)?;
            if engine.image_labels(&worker.image).await?.is_none() {
                return Err(WorkerSettingError::NotBuilt {
                    name: worker.runtime,
                    image: worker.image,
                });
            }
            return Ok(Some(worker));
        }
        // The catalog lists each family's runtimes oldest first.
        for name in python_runtimes(catalog).into_iter().rev() {
            let worker = Self::of_runtime(catalog, &name)?;
            if engine.image_labels(&worker.image).await?.is_some() {
                return Ok(Some(worker));
            }
        }
        Ok(None)
    }

    /// The step that makes `call`: the worker as its script, the call as its payload.
    /// `emulator` lets the worker tell an emulator's "not implemented" answer from a service
    /// error.
    pub fn step(&self, call: &AwsCall, emulator: bool) -> Result<ValidatedStep, AwsCallError> {
        let invalid = |message: String| AwsCallError::Failed {
            kind: "InvalidInput",
            message,
        };
        for (key, value) in [("Service", &call.service), ("Api", &call.api)] {
            if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
                return Err(invalid(format!(
                    "{key} must be 1 to {MAX_NAME_CHARS} characters"
                )));
            }
        }
        let size = serde_json::to_vec(&call.parameters)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PARAMETER_BYTES {
            return Err(invalid(format!(
                "the parameters of {}.{} are {size} bytes of JSON, over the limit of {MAX_PARAMETER_BYTES}",
                call.service, call.api
            )));
        }
        let mut payload = Map::new();
        payload.insert("Service".into(), Value::String(call.service.clone()));
        payload.insert("Api".into(), Value::String(call.api.clone()));
        payload.insert("Parameters".into(), Value::Object(call.parameters.clone()));
        payload.insert("MaxResponseBytes".into(), Value::from(MAX_RESPONSE_BYTES));
        payload.insert("Emulator".into(), Value::Bool(emulator));
        Ok(ValidatedStep {
            runtime: self.runtime.clone(),
            language: Language::Python,
            image: self.image.clone(),
            command: self.command.clone(),
            entry: Some(Entry {
                module: "scriptbox_aws_worker".into(),
                function: "handler".into(),
            }),
            payload,
            files: vec![(WORKER_FILE.to_string(), WORKER_SOURCE.as_bytes().to_vec())],
            zips: Vec::new(),
            timeout: CALL_TIMEOUT,
        })
    }
}

/// The catalog's Python runtimes, in its order.
fn python_runtimes(catalog: &Catalog) -> Vec<String> {
    catalog
        .runtimes()
        .filter(|r| r.language() == Language::Python)
        .map(|r| r.runtime.name.clone())
        .collect()
}

/// A string field of the worker's reply.
fn field(reply: &Value, key: &str) -> String {
    reply
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(64 * 1024)
        .collect()
}

/// The call's response, or why there is none, from the worker step's result. `endpoint` names
/// where the call went (an emulator's URL).
pub fn reply(result: &StepResult, call: &AwsCall, endpoint: &str) -> Result<Value, AwsCallError> {
    match result.status {
        StepStatus::Success => {}
        StepStatus::Cancelled => return Err(AwsCallError::Cancelled),
        StepStatus::TimedOut => {
            return Err(AwsCallError::Failed {
                kind: "CallTimedOut",
                message: format!(
                    "{}.{} did not answer within {} seconds",
                    call.service,
                    call.api,
                    CALL_TIMEOUT.as_secs()
                ),
            });
        }
        _ => {
            let kind = match result.error.as_ref().map(|e| e.error_type.as_str()) {
                Some("CredentialsError") => "CredentialsError",
                _ => "WorkerFailed",
            };
            let why = result
                .failure_message
                .clone()
                .unwrap_or_else(|| "the worker ended without a result".into());
            return Err(AwsCallError::Failed {
                kind,
                message: format!(
                    "scriptbox's AWS API worker could not make {}.{}: {why}",
                    call.service, call.api
                ),
            });
        }
    }
    let reply = &result.payload;
    if reply.get("ok") == Some(&Value::Bool(true)) {
        return Ok(reply.get("response").cloned().unwrap_or(Value::Null));
    }
    let message = field(reply, "message");
    let operation = match field(reply, "operation") {
        op if op.is_empty() => call.api.clone(),
        op => op,
    };
    Err(match field(reply, "kind").as_str() {
        "UnknownService" => AwsCallError::UnknownService {
            service: call.service.clone(),
            message,
        },
        "UnknownOperation" => AwsCallError::UnknownOperation {
            service: call.service.clone(),
            api: call.api.clone(),
            message,
        },
        "InvalidParameters" => AwsCallError::InvalidParameters {
            service: call.service.clone(),
            operation,
            message,
        },
        "ServiceError" => AwsCallError::ServiceError {
            code: field(reply, "code"),
            message,
        },
        "EmulatorLacksOperation" => AwsCallError::EmulatorLacksOperation {
            service: call.service.clone(),
            operation,
            endpoint: endpoint.to_string(),
            status: reply
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
        },
        "StreamingNotSupported" => AwsCallError::StreamingNotSupported(message),
        "ResponseTooLarge" => AwsCallError::ResponseTooLarge(message),
        other => AwsCallError::Failed {
            kind: match other {
                "CallTimedOut" => "CallTimedOut",
                "EndpointUnreachable" => "EndpointUnreachable",
                "NoCredentials" => "CredentialsError",
                "NoRegion" => "NoRegion",
                _ => "CallFailed",
            },
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> AwsCall {
        AwsCall {
            service: "ec2".into(),
            api: "DescribeInstances".into(),
            parameters: Map::new(),
        }
    }

    fn returned(payload: Value) -> StepResult {
        let mut r = StepResult::not_run("x", "python3.12", "X", "m");
        r.status = StepStatus::Success;
        r.failure_message = None;
        r.error = None;
        r.payload = payload;
        r
    }

    #[test]
    fn the_worker_runs_only_in_python_runtimes_of_the_catalog() {
        let catalog = Catalog::builtin();
        let w = AwsWorker::of_runtime(&catalog, "python3.12").unwrap();
        assert_eq!(w.runtime, "python3.12");
        let e = AwsWorker::of_runtime(&catalog, "PowerShell 7.4").unwrap_err();
        assert!(e.to_string().contains("not a Python runtime"), "{e}");
        let e = AwsWorker::of_runtime(&catalog, "python2.7").unwrap_err();
        assert!(e.to_string().contains("python3.12"), "{e}");
    }

    #[test]
    fn the_call_is_the_payload_and_oversized_parameters_are_refused() {
        let w = AwsWorker::of_runtime(&Catalog::builtin(), "python3.11").unwrap();
        let step = w.step(&call(), true).unwrap();
        assert_eq!(step.payload["Service"], "ec2");
        assert_eq!(step.payload["Emulator"], true);
        assert_eq!(step.files[0].0, WORKER_FILE);
        let mut big = call();
        big.parameters
            .insert("X".into(), Value::String("x".repeat(MAX_PARAMETER_BYTES)));
        assert_eq!(w.step(&big, true).unwrap_err().kind(), "InvalidInput");
        let mut unnamed = call();
        unnamed.api.clear();
        assert!(w.step(&unnamed, true).is_err());
    }

    #[test]
    fn each_reply_is_its_own_reason() {
        let ok = returned(serde_json::json!({"ok": true, "response": {"A": 1}}));
        assert_eq!(
            reply(&ok, &call(), "http://e").unwrap(),
            serde_json::json!({"A": 1})
        );
        let lacks = returned(
            serde_json::json!({"ok": false, "kind": "EmulatorLacksOperation",
            "message": "<html>", "operation": "DescribeInstanceInformation", "status": 500}),
        );
        let e = reply(&lacks, &call(), "http://127.0.0.1:5000").unwrap_err();
        assert_eq!(e.kind(), "EmulatorLacksOperation");
        let text = e.to_string();
        assert!(
            text.contains("http://127.0.0.1:5000")
                && text.contains("ec2.DescribeInstanceInformation"),
            "{text}"
        );
        for (kind, want) in [
            ("ServiceError", "ServiceError"),
            ("InvalidParameters", "InvalidParameters"),
            ("UnknownService", "UnknownService"),
            ("UnknownOperation", "UnknownOperation"),
            ("StreamingNotSupported", "StreamingNotSupported"),
            ("ResponseTooLarge", "ResponseTooLarge"),
            ("EndpointUnreachable", "EndpointUnreachable"),
            ("SomethingElse", "CallFailed"),
        ] {
            let r = returned(serde_json::json!({"ok": false, "kind": kind, "message": "m"}));
            assert_eq!(reply(&r, &call(), "e").unwrap_err().kind(), want, "{kind}");
        }
        let mut cancelled = returned(Value::Null);
        cancelled.status = StepStatus::Cancelled;
        assert_eq!(
            reply(&cancelled, &call(), "e").unwrap_err(),
            AwsCallError::Cancelled
        );
        let creds = StepResult::not_run("x", "python3.12", "CredentialsError", "no");
        assert_eq!(
            reply(&creds, &call(), "e").unwrap_err().kind(),
            "CredentialsError"
        );
    }
}
