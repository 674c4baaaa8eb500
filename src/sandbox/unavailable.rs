//! The backend of a process with no container engine: every call fails with
//! [`SandboxError::Unavailable`]. It lets work that may need no container (a runbook of
//! `aws:sleep` and `aws:branch` steps) run on the one runner when Docker is not reachable.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, ContainerJob, ContainerOutcome, HeldContainer, OutputObserver, PrestartedContainer,
    Removal, SandboxConfig, SandboxError, SweepReport,
};

/// A [`Backend`] with no engine behind it.
#[derive(Debug, Default)]
pub struct Unavailable {
    config: SandboxConfig,
}

impl Unavailable {
    /// The backend, reporting `config` as its settings.
    pub fn new(config: SandboxConfig) -> Self {
        Unavailable { config }
    }
}

impl Backend for Unavailable {
    fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn with_sandbox(&self, config: SandboxConfig) -> Arc<dyn Backend> {
        Arc::new(Unavailable { config })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }

    fn prestart<'a>(
        &'a self,
        _job: &'a ContainerJob,
    ) -> BoxFuture<'a, Result<PrestartedContainer, SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }

    fn run<'a>(
        &'a self,
        _prestarted: Option<PrestartedContainer>,
        _job: ContainerJob,
        _observer: &'a mut dyn OutputObserver,
        _cancel: &'a CancellationToken,
        _defer_removal: bool,
    ) -> BoxFuture<'a, Result<(ContainerOutcome, Removal), SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }

    fn remove<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }

    fn held<'a>(
        &'a self,
        _owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<HeldContainer>, SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<SweepReport, SandboxError>> {
        Box::pin(async { Err(SandboxError::Unavailable) })
    }
}
