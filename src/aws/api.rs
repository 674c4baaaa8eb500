//! One AWS API call of a runbook action (`aws:executeAwsApi` and the actions built on it), made
//! through boto3 in a sandboxed container of scriptbox's own ([`super::worker`]), under the
//! step's egress and the execution's credentials.

use serde_json::{Map, Value};

/// One call: `Service` (boto3's client name), `Api` (the operation, matched ignoring case, `-`
/// and `_`), and the operation's parameters as written.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsCall {
    /// boto3's client name: `ec2`, `ssm`, `s3`...
    pub service: String,
    /// The operation as written: `DescribeInstances`, `describe-snapshots`...
    pub api: String,
    /// The operation's parameters, passed through as written.
    pub parameters: Map<String, Value>,
}

/// Why a call did not return a response. Each reason is its own failure type (the step's
/// `FailureType`-like kind, [`AwsCallError::kind`]):
///
/// | variant | kind |
/// |---|---|
/// | `NoAccess` | `NoAwsAccess` |
/// | `UnknownService` | `UnknownService` |
/// | `UnknownOperation` | `UnknownOperation` |
/// | `InvalidParameters` | `InvalidParameters` (botocore's validation message) |
/// | `ServiceError` | `ServiceError` (AWS's code and message) |
/// | `EmulatorLacksOperation` | `EmulatorLacksOperation`: the emulator does not implement the operation (moto answers 500 with an HTML body, or 404); never a defect of the runbook |
/// | `StreamingNotSupported` | `StreamingNotSupported` |
/// | `ResponseTooLarge` | `ResponseTooLarge` |
/// | `Failed` | its own `kind` (`CallTimedOut`, `EndpointUnreachable`, `CredentialsError`, `WorkerFailed`...) |
/// | `Cancelled` | `Cancelled` |
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AwsCallError {
    /// AWS access is off (`[aws] mode = none` and no `--aws` / `--aws-endpoint`).
    #[error(
        "AWS access is off: run with --aws-endpoint URL (an emulator) or --aws, or set [aws] mode"
    )]
    NoAccess,
    /// `Service` is not a boto3 client name.
    #[error("Unknown service {service:?}: {message}")]
    UnknownService {
        /// The service as written.
        service: String,
        /// The worker's explanation.
        message: String,
    },
    /// `Api` matches no operation of the service.
    #[error("Unknown operation {api:?} of service {service:?}: {message}")]
    UnknownOperation {
        /// The service.
        service: String,
        /// The operation as written.
        api: String,
        /// The worker's explanation.
        message: String,
    },
    /// botocore refused the parameters before sending anything.
    #[error("Invalid parameters for {service}.{operation}: {message}")]
    InvalidParameters {
        /// The service.
        service: String,
        /// The operation's name.
        operation: String,
        /// botocore's message.
        message: String,
    },
    /// The service answered with an error.
    #[error("{message}")]
    ServiceError {
        /// AWS's error code (`InvalidInstanceID.NotFound`).
        code: String,
        /// boto3's message: `An error occurred (CODE) when calling the OP operation: ...`.
        message: String,
    },
    /// The endpoint (an emulator) does not implement the operation.
    #[error(
        "The endpoint {endpoint} does not implement {service}.{operation} (HTTP {status}): the emulator lacks this operation; this is not a defect of the runbook"
    )]
    EmulatorLacksOperation {
        /// The service.
        service: String,
        /// The operation's name.
        operation: String,
        /// The emulator's URL.
        endpoint: String,
        /// The HTTP status it answered.
        status: u16,
    },
    /// The operation returns a streaming body (S3 GetObject), which AWS does not support here.
    #[error("{0}")]
    StreamingNotSupported(String),
    /// The response is larger than scriptbox keeps.
    #[error("{0}")]
    ResponseTooLarge(String),
    /// The call failed for another reason; `kind` is its failure type.
    #[error("{message}")]
    Failed {
        /// The failure type (`CallTimedOut`, `EndpointUnreachable`, `CredentialsError`...).
        kind: &'static str,
        /// The message.
        message: String,
    },
    /// The step was cancelled during the call.
    #[error("The step was cancelled.")]
    Cancelled,
}

impl AwsCallError {
    /// The failure type a step shows for this error (the table above).
    pub fn kind(&self) -> &'static str {
        match self {
            AwsCallError::NoAccess => "NoAwsAccess",
            AwsCallError::UnknownService { .. } => "UnknownService",
            AwsCallError::UnknownOperation { .. } => "UnknownOperation",
            AwsCallError::InvalidParameters { .. } => "InvalidParameters",
            AwsCallError::ServiceError { .. } => "ServiceError",
            AwsCallError::EmulatorLacksOperation { .. } => "EmulatorLacksOperation",
            AwsCallError::StreamingNotSupported(_) => "StreamingNotSupported",
            AwsCallError::ResponseTooLarge(_) => "ResponseTooLarge",
            AwsCallError::Failed { kind, .. } => kind,
            AwsCallError::Cancelled => "Cancelled",
        }
    }
}
