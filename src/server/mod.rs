//! `scriptbox serve`: the daemon.
//!
//! Start-up, in order: lock the data directory (one daemon per directory), open the database,
//! connect to the engine, recover (executions left `Running` by a dead daemon are finished
//! `Failed`, their containers removed; `Queued` ones are queued again), listen on the Unix
//! socket (mode 0660) and, if configured, on TCP behind a bearer token. Each listener bounds
//! its connections ([`listen`]): a cap on open ones, header-read, idle and request timeouts.
//!
//! [`services`] opens and starts what the daemon runs on, [`bind`] binds its listeners and
//! [`run`] serves them: tests may pass listeners and a shutdown token of their own
//! (`crate::daemon::serve` wires them for `scriptbox serve`, with the SSM API as extra routes;
//! this module does not know the SSM API).
//!
//! Shutdown (the token passed to [`run`], fired by SIGTERM or Ctrl-C): stop accepting
//! connections and submissions, let running executions finish for up to
//! `server.shutdown_grace_seconds`, then cancel them (their containers are killed) and record
//! them; flush the database.

pub mod api;
pub mod auth;
pub mod listen;
pub mod metrics;
pub mod scheduler;
pub mod types;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::runtimes::Catalog;
use crate::sandbox::{Engine, SandboxError};
use crate::store::{ExecStatus, ExecutionStore, ExitFact, Finish, Store, Timestamp};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is unusable (exit 2).
    #[error("{0}")]
    Config(String),
    /// The environment is not ready (exit 3).
    #[error(transparent)]
    Engine(#[from] SandboxError),
    /// The database or the listeners failed (exit 3).
    #[error("{0}")]
    Io(String),
}

/// Holds the data directory's lock for the daemon's life.
struct DirLock {
    _file: std::fs::File,
}

fn lock_data_dir(dir: &Path) -> Result<DirLock, ServeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ServeError::Io(format!("data directory {}: {e}", dir.display())))?;
    let path = dir.join("scriptbox.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServeError::Io(format!("{}: {e}", path.display())))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(ServeError::Io(format!(
            "another scriptbox daemon uses the data directory {} (it holds {})",
            dir.display(),
            path.display()
        )));
    }
    Ok(DirLock { _file: file })
}

/// Binds the Unix socket with mode 0660, replacing a stale socket file but never a live one.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ServeError::Io(format!("socket folder {}: {e}", parent.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::Io(format!(
                "{} is in use: another daemon answers there",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| ServeError::Io(format!("stale socket {}: {e}", path.display())))?;
    }
    // The umask makes the socket 0660 from its creation: no window where others could connect.
    // SAFETY: umask only swaps the process's file-creation mask; restored right after.
    let old = unsafe { libc::umask(0o117) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| ServeError::Io(format!("bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| ServeError::Io(format!("chmod {}: {e}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tokio::net::UnixListener::from_std(listener).map_err(|e| ServeError::Io(e.to_string()))
}

/// Ends executions a dead daemon left `Running`: `Failed`, with the restart message. Holding
/// the data directory's lock proves their owner dead, so their leases are not waited out.
async fn recover_running(store: &dyn ExecutionStore) -> Result<usize, ServeError> {
    let running = store
        .with_status(ExecStatus::Running)
        .await
        .map_err(|e| ServeError::Io(e.to_string()))?;
    let n = running.len();
    for record in running {
        let steps = store.steps(&record.id).await.unwrap_or_default();
        let logs = store.logs(&record.id, 0, 100_000).await.unwrap_or_default();
        let outcome = record.provisional(
            steps,
            &logs,
            Some(types::RESTARTED_MESSAGE),
            ExecStatus::Failed,
        );
        store
            .finish(Finish {
                id: record.id.clone(),
                status: ExecStatus::Failed,
                outcome,
                failure_message: Some(types::RESTARTED_MESSAGE.into()),
                ended: Timestamp::now(),
                exit: ExitFact::NotApplicable,
            })
            .await
            .map_err(|e| ServeError::Io(e.to_string()))?;
    }
    Ok(n)
}

/// Removes every container of the previous daemon of this data directory. Holding the
/// directory's lock proves that daemon is dead (a lock dies with its process), even when its
/// pid still looks alive (a zombie not reaped yet); the label sweep alone would keep those.
async fn remove_previous_daemons_containers(engine: &Engine, data_dir: &Path) {
    let file = data_dir.join("owner");
    if let Ok(previous) = std::fs::read_to_string(&file) {
        let previous = previous.trim();
        if let Ok(list) = engine.labelled_containers().await {
            for c in list {
                let owned = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::sandbox::LABEL_OWNER))
                    .map(String::as_str)
                    == Some(previous);
                if let (true, Some(id)) = (owned, c.id) {
                    match engine.remove(&id).await {
                        Ok(()) => tracing::warn!(
                            "removed container {id} of the previous daemon ({previous})"
                        ),
                        Err(e) => tracing::warn!("could not remove container {id}: {e}"),
                    }
                }
            }
        }
    }
    let me = crate::sandbox::OwnerId::current().label();
    if let Err(e) = std::fs::write(&file, me) {
        tracing::warn!("cannot write {}: {e}", file.display());
    }
}

/// What the daemon runs on, opened, recovered and started by [`services`].
pub struct Services {
    /// The settings.
    pub settings: Arc<Settings>,
    /// The runtimes.
    pub catalog: Arc<Catalog>,
    /// The execution store (and the SSM documents' database).
    pub store: Arc<Store>,
    /// The engine.
    pub engine: Engine,
    /// The scheduler, dispatching.
    pub scheduler: Arc<scheduler::Scheduler>,
    /// The metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The bearer token of the TCP listener's native API.
    pub token: Option<Arc<auth::Token>>,
    _lock: DirLock,
}

/// The sockets the daemon serves on; tests may bind their own.
pub struct Listeners {
    /// The Unix socket: the native API, no token.
    pub unix: tokio::net::UnixListener,
    /// Removed at shutdown (the socket file of `unix`).
    pub unix_path: Option<PathBuf>,
    /// The TCP listener: the native API behind the bearer token, and the extra routes (SSM).
    pub tcp: Option<tokio::net::TcpListener>,
}

/// The TCP listener's bearer token, as the settings ask.
pub fn bearer_token(settings: &Settings) -> Result<Option<Arc<auth::Token>>, ServeError> {
    match (&settings.server.tcp_listen, &settings.server.token_file) {
        (Some(_), Some(file)) => Ok(Some(Arc::new(
            auth::Token::from_file(file).map_err(|e| ServeError::Config(e.to_string()))?,
        ))),
        (Some(_), None) if settings.server.ssm_api => Ok(None),
        (Some(_), None) => Err(ServeError::Config(
            "server.tcp_listen needs server.token_file (--token-file): requests over TCP need a bearer token".into(),
        )),
        _ => Ok(None),
    }
}

/// Locks the data directory, opens the database, connects to the engine, recovers (records
/// first, then the dead owner's containers), and starts the scheduler with the queued work.
pub async fn services(
    settings: Settings,
    catalog: Catalog,
    token: Option<Arc<auth::Token>>,
) -> Result<Services, ServeError> {
    let data_dir = settings.server.data_dir_path();
    let lock = lock_data_dir(&data_dir)?;
    let store = Arc::new(Store::open(&data_dir).map_err(|e| ServeError::Io(e.to_string()))?);
    let engine = Engine::connect(settings.sandbox.clone()).await?;
    let failed = recover_running(store.as_ref()).await?;
    remove_previous_daemons_containers(&engine, &data_dir).await;
    match engine.sweep_leftovers().await {
        Ok(r) if !r.removed.is_empty() => tracing::warn!(
            "removed {} container(s) left by a scriptbox that died",
            r.removed.len()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("sweep of leftover containers failed: {e}"),
    }
    if failed > 0 {
        tracing::warn!("{failed} execution(s) were running when scriptbox stopped: now Failed");
    }
    // The operator's AWS mode, for every execution of this daemon (a request never widens it).
    let aws = crate::aws::AwsAccess::from_settings(
        &settings.aws,
        &settings.egress,
        &settings.context,
        &settings.sandbox.user,
    )
    .await
    .map_err(|e| ServeError::Config(format!("AWS access: {e}")))?;
    // The runtime of the AWS actions' worker, checked now (its image must be built).
    let worker = match &aws {
        Some(_) => crate::aws::worker::AwsWorker::resolve(
            &catalog,
            settings.aws.api_runtime.as_deref(),
            &engine,
        )
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?,
        None => None,
    };
    let settings = Arc::new(settings);
    let catalog = Arc::new(catalog);
    let metrics = Arc::new(metrics::Metrics::default());
    let runner = step_runner(engine.clone(), &settings, (aws, worker), &data_dir);
    let scheduler = scheduler_of(&settings, &catalog, &store, &metrics, runner);
    let queued = store
        .with_status(ExecStatus::Queued)
        .await
        .map_err(|e| ServeError::Io(e.to_string()))?;
    scheduler.requeue(queued).await;
    scheduler.start();
    Ok(Services {
        settings,
        catalog,
        store,
        engine,
        scheduler,
        metrics,
        token,
        _lock: lock,
    })
}

/// The daemon's runner and what the scheduler shares with it: the container permits and the
/// warm pool.
struct DaemonRunner {
    runner: Arc<crate::execute::Runner>,
    permits: Arc<tokio::sync::Semaphore>,
    pool: Option<crate::pool::WarmPool>,
    scratch: PathBuf,
}

fn scheduler_of(
    settings: &Arc<Settings>,
    catalog: &Arc<Catalog>,
    store: &Arc<Store>,
    metrics: &Arc<metrics::Metrics>,
    runner: DaemonRunner,
) -> Arc<scheduler::Scheduler> {
    scheduler::Scheduler::new(
        settings.clone(),
        catalog.clone(),
        store.clone(),
        metrics.clone(),
        runner.runner,
        runner.scratch,
        scheduler::ContainerCapacity {
            permits: runner.permits,
            pool: runner.pool,
        },
    )
}

/// Binds the configured listeners: the Unix socket and, if configured, TCP. `loopback_only`
/// refuses a TCP address that is not a loopback one (the SSM API without credentials).
pub async fn bind(
    settings: &Settings,
    loopback_only: bool,
) -> Result<(Listeners, String), ServeError> {
    let socket = settings.server.socket_path();
    let unix = bind_unix(&socket)?;
    let mut listening = format!("unix:{}", socket.display());
    let tcp = match &settings.server.tcp_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Io(format!("bind {addr}: {e}")))?;
            let local = l.local_addr().map_err(|e| ServeError::Io(e.to_string()))?;
            if loopback_only && !local.ip().is_loopback() {
                return Err(ServeError::Config(format!(
                    "server.ssm_anonymous (--ssm-anonymous) accepts any AWS credentials, so it listens on loopback addresses only; {local} is not one: set ssm_access_keys_file (--ssm-access-keys-file) or listen on 127.0.0.1"
                )));
            }
            listening.push_str(&format!(" tcp:{local}"));
            Some(l)
        }
        None => None,
    };
    Ok((
        Listeners {
            unix,
            unix_path: Some(socket),
            tcp,
        },
        listening,
    ))
}

/// The TCP listener's routes: the native API needs the bearer token; without one (allowed
/// only with extra routes, the SSM API) it serves only the extra routes, which carry their own
/// authentication (SigV4).
fn tcp_app(
    app: axum::Router,
    token: Option<Arc<auth::Token>>,
    extra: Option<axum::Router>,
) -> axum::Router {
    let native = match token {
        Some(token) => app.layer(axum::middleware::from_fn_with_state(
            token,
            api::require_token,
        )),
        None => app.layer(axum::middleware::from_fn(api::refuse_without_token)),
    };
    match extra {
        Some(extra) => extra.merge(native),
        None => native,
    }
}

/// Serves `listeners` until `shutdown` fires, then shuts down gracefully: stop accepting
/// connections and submissions, let running executions finish for up to
/// `server.shutdown_grace_seconds`, cancel the rest and record them, flush the database.
/// `extra` routes (the SSM API) are served on the TCP listener.
pub async fn run(
    listeners: Listeners,
    services: Services,
    extra: Option<axum::Router>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let stop_http = CancellationToken::new();
    let settings = services.settings.clone();
    let state = api::AppState {
        scheduler: services.scheduler.clone(),
        store: services.store.clone(),
        metrics: services.metrics.clone(),
        catalog: services.catalog.clone(),
        engine: services.engine.clone(),
        shutdown: stop_http.clone(),
        max_request_bytes: settings.server.max_request_bytes,
    };
    let app = api::router(state);
    listen::raise_file_limit();
    let limits = listen::ConnectionLimits::from_settings(&settings.server);
    let unix_server = {
        let stop = stop_http.clone();
        let app = app.clone();
        let unix = listeners.unix;
        tokio::spawn(async move { listen::serve(unix, app, limits, stop).await })
    };
    let tcp_server = listeners.tcp.map(|listener| {
        let stop = stop_http.clone();
        let app = tcp_app(app, services.token.clone(), extra);
        tokio::spawn(async move { listen::serve(listener, app, limits, stop).await })
    });

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    // Stop accepting: listeners close, log streams end, no submission is admitted.
    stop_http.cancel();
    let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
    services.scheduler.shutdown(grace).await;
    let wait_http = async {
        let _ = unix_server.await;
        if let Some(t) = tcp_server {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), wait_http).await;
    if let Err(e) = services.store.flush().await {
        tracing::error!("final database flush failed: {e}");
    }
    services.store.close();
    if let Some(path) = &listeners.unix_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The socket a client uses when none is given.
pub fn default_socket() -> PathBuf {
    crate::config::default_socket()
}

/// The one runner of the daemon's steps: fresh containers of `engine`, pre-started ones from
/// the warm pool when an execution's limits are the pool's (never with AWS access: pooled
/// containers have no egress mount, so the pool is off then), with the operator's AWS access.
fn step_runner(
    engine: Engine,
    settings: &Arc<Settings>,
    (aws, worker): (
        Option<Arc<crate::aws::AwsAccess>>,
        Option<crate::aws::worker::AwsWorker>,
    ),
    data_dir: &Path,
) -> DaemonRunner {
    let scratch = data_dir.join("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    // One limit of containers alive, shared by executions and the warm pool's waiting ones.
    let permits = Arc::new(tokio::sync::Semaphore::new(
        settings.server.effective_concurrency(),
    ));
    if aws.is_some() && settings.pool.size > 0 {
        tracing::info!(
            "the warm pool is off: with AWS access on, every step needs its own egress mount"
        );
    }
    let pool = (settings.pool.size > 0 && aws.is_none()).then(|| {
        crate::pool::WarmPool::with_permits(
            engine.clone(),
            settings.pool.clone(),
            &settings.context,
            Duration::from_secs(settings.limits.max_timeout_seconds),
            Some(permits.clone()),
        )
    });
    let runner = crate::execute::Runner::new(
        Arc::new(engine),
        pool.clone(),
        settings.context.clone(),
        settings.output.clone(),
    )
    .with_aws(aws)
    .with_aws_worker(worker);
    DaemonRunner {
        runner: Arc::new(runner),
        permits,
        pool,
        scratch,
    }
}
