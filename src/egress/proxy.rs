//! LEAD STUB: replaced by helper A's implementation at merge.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{EgressCounts, EgressLimits, EgressPolicy};

/// Stub.
#[derive(Debug)]
pub struct EgressBudget {
    limits: EgressLimits,
}
impl EgressBudget {
    /// Stub.
    pub fn new(limits: EgressLimits) -> Arc<EgressBudget> {
        Arc::new(EgressBudget { limits })
    }
    /// Stub.
    pub fn counts(&self) -> EgressCounts {
        let _ = &self.limits;
        EgressCounts::default()
    }
}
/// Stub.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Stub.
    #[error("stub")]
    Stub,
}
/// Stub.
#[derive(Debug)]
pub struct EgressSession {
    dir: PathBuf,
}
impl EgressSession {
    /// Stub.
    pub fn start(
        parent: &Path,
        _socket_owner: Option<(u32, u32)>,
        _policy: Arc<EgressPolicy>,
        _budget: Arc<EgressBudget>,
    ) -> Result<EgressSession, EgressError> {
        Ok(EgressSession {
            dir: parent.join("x"),
        })
    }
    /// Stub.
    pub fn host_dir(&self) -> &Path {
        &self.dir
    }
    /// Stub.
    pub fn take_log_lines(&self) -> Vec<String> {
        Vec::new()
    }
    /// Stub.
    pub async fn finish(self) -> EgressCounts {
        EgressCounts::default()
    }
}
/// Stub.
pub fn default_egress_dir() -> PathBuf {
    PathBuf::from("/run/scriptbox/egress")
}
