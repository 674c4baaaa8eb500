//! One AWS API call of a runbook action (`aws:executeAwsApi` and the actions built on it), made
//! through boto3 in a sandboxed container of scriptbox's own, under the step's egress and the
//! execution's credentials.
//!
//! Issue 14 builds the worker; this file holds the request and the failure shapes the actions
//! are written against.

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

/// Why a call did not return a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AwsCallError {
    /// AWS access is off (`[aws] mode = none` and no `--aws` / `--aws-endpoint`).
    #[error(
        "AWS access is off: run with --aws-endpoint URL (an emulator) or --aws, or set [aws] mode"
    )]
    NoAccess,
    /// The call failed; `kind` is AWS's failure type, `message` what the user sees.
    #[error("{message}")]
    Failed {
        /// AWS's failure type (`InvalidInput`, `ClientError`, `EmulatorLacksOperation`...).
        kind: &'static str,
        /// The message.
        message: String,
    },
    /// The step was cancelled during the call.
    #[error("The step was cancelled.")]
    Cancelled,
}
