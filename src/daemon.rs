//! `scriptbox serve`: the settings checked, the services started, the listeners bound, the SSM
//! API added to the TCP listener when it is on, then [`crate::server::run`] until `shutdown`.

use std::io::Write as _;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::runtimes::Catalog;
use crate::server::{self, ServeError};
use crate::ssm;

/// Runs the daemon until `shutdown` fires; returns after the graceful shutdown.
pub async fn serve(
    settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    settings
        .check()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let token = server::bearer_token(&settings)?;
    let ssm_keys = if settings.server.ssm_api {
        ssm::access_keys(&settings).map_err(|e| ServeError::Config(e.to_string()))?
    } else {
        None
    };
    let ssm_on = settings.server.ssm_api;
    let services = server::services(settings, catalog, token).await?;
    let state = ssm::SsmState::new(
        services.scheduler.clone(),
        services.store.clone(),
        services.store.documents(),
        services.settings.clone(),
        services.catalog.clone(),
        ssm_keys.clone(),
    );
    // aws:executeAutomation's children come from the SSM documents, served or not.
    services
        .scheduler
        .set_child_documents(ssm::children::SsmChildren::new(state.clone()));
    let extra = ssm_on.then(|| ssm::router(state));
    let (listeners, listening) =
        server::bind(&services.settings, ssm_on && ssm_keys.is_none()).await?;
    // One line on stdout when ready: scripts and tests wait for it.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "scriptbox serve: listening on {listening}");
        let _ = out.flush();
    }
    server::run(listeners, services, extra, shutdown).await
}
