//! LEAD STUB: replaced by helper B's implementation at merge.
use std::time::{Duration, SystemTime};

use super::AwsConfig;

/// Stub.
pub struct StepCredentials {
    /// Stub.
    pub access_key_id: String,
    /// Stub.
    pub secret_access_key: String,
    /// Stub.
    pub session_token: Option<String>,
    /// Stub.
    pub expiration: Option<SystemTime>,
}
impl StepCredentials {
    /// Stub.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![]
    }
}
/// Stub.
pub struct CredentialRequest<'a> {
    /// Stub.
    pub role_arn: Option<&'a str>,
    /// Stub.
    pub session_name: &'a str,
    /// Stub.
    pub lifetime: Duration,
}
/// Stub.
#[derive(Clone, Debug)]
pub struct CredentialBroker;
impl CredentialBroker {
    /// Stub.
    pub async fn new(_config: &AwsConfig, _region: &str) -> Result<CredentialBroker, CredentialError> {
        Ok(CredentialBroker)
    }
    /// Stub.
    pub async fn for_step(
        &self,
        _request: CredentialRequest<'_>,
    ) -> Result<Option<StepCredentials>, CredentialError> {
        Ok(None)
    }
}
/// Stub.
pub fn check_role_arn(_value: &str) -> Result<(), CredentialError> {
    Ok(())
}
/// Stub.
pub fn session_name(execution_id: &str) -> String {
    format!("scriptbox-{execution_id}")
}
/// Stub.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Stub.
    #[error("stub")]
    Stub,
}
