//! The warm pool: fresh containers, created with the full sandbox and already started, their
//! bootstraps blocked reading a request on stdin. An execution takes one, uses it once, and it is
//! removed; the pool refills in the background. A container is never reused.
//!
//! Per runtime image: a pool fills after that runtime's first use (size 2 by default), never
//! grows past its size, and a runtime nobody uses keeps no containers after an idle time-out.
//! Pool containers are labelled like any other (execution, owner, deadline), so a crash leaves
//! nothing a sweep cannot find.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::{AwsContext, container_env};
use crate::sandbox::{Backend, ContainerJob, Engine, PrestartedContainer};
use crate::step::ValidatedStep;

/// Pool settings (`[pool]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Pre-started containers kept per runtime once it has been used; 0 turns the pool off.
    pub size: usize,
    /// A runtime unused this long gives its containers back; a pooled container older than
    /// this is replaced rather than used.
    pub idle_timeout_secs: u64,
    /// Modules the Python bootstrap imports before it waits for its request.
    pub python_preimport: Vec<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: 2,
            idle_timeout_secs: 300,
            python_preimport: vec!["json".into(), "boto3".into()],
        }
    }
}

/// What identifies interchangeable pooled containers: the image and its bootstrap command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    image: String,
    command: Vec<String>,
}

/// A waiting container and, in the daemon, the concurrency permit it holds: a waiting
/// container is alive, so it counts against the limit of containers alive at once.
#[derive(Debug)]
struct Waiting {
    container: PrestartedContainer,
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
struct Slot {
    runtime: String,
    python: bool,
    ready: VecDeque<Waiting>,
    filling: usize,
    last_used: Instant,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: PoolConfig,
    env: Vec<String>,
    max_timeout: Duration,
    permits: Option<Arc<Semaphore>>,
    slots: Mutex<HashMap<PoolKey, Slot>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// A warm pool; cheap to clone.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("config", &self.inner.config)
            .field("ready", &self.ready_count())
            .finish()
    }
}

impl WarmPool {
    /// Creates a pool and starts its idle reaper. `max_timeout` is the longest step timeout a
    /// pooled container may serve (it sets the container's deadline label).
    pub fn new(
        engine: Engine,
        config: PoolConfig,
        context: &AwsContext,
        max_timeout: Duration,
    ) -> Self {
        Self::with_permits(engine, config, context, max_timeout, None)
    }

    /// A pool whose waiting containers each hold a permit of `permits` (the daemon's limit of
    /// containers alive at once): the pool only fills with permits nobody else needs, hands a
    /// container's permit back when an execution takes it (the execution holds its own), and
    /// gives a container up ([`WarmPool::evict_one`]) when an execution waits for a permit.
    pub fn with_permits(
        engine: Engine,
        config: PoolConfig,
        context: &AwsContext,
        max_timeout: Duration,
        permits: Option<Arc<Semaphore>>,
    ) -> Self {
        Self::with_backend(Arc::new(engine), config, context, max_timeout, permits)
    }

    /// [`WarmPool::with_permits`] on any [`Backend`] (the scheduler's tests use a fake one).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: PoolConfig,
        context: &AwsContext,
        max_timeout: Duration,
        permits: Option<Arc<Semaphore>>,
    ) -> Self {
        let pool = WarmPool {
            inner: Arc::new(Inner {
                backend,
                config,
                env: container_env(context),
                max_timeout,
                permits,
                slots: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        };
        let reaper = pool.clone();
        pool.inner
            .tasks
            .spawn(async move { reaper.reap_idle().await });
        pool
    }

    /// Whether the pool is on.
    pub fn enabled(&self) -> bool {
        self.inner.config.size > 0
    }

    /// Pre-started containers waiting, over all runtimes.
    pub fn ready_count(&self) -> usize {
        self.lock().values().map(|s| s.ready.len()).sum()
    }

    /// The Docker ids of the containers waiting in the pool.
    pub fn ready_container_ids(&self) -> Vec<String> {
        self.lock()
            .values()
            .flat_map(|s| s.ready.iter().map(|w| w.container.id.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Slot>> {
        // A panic while holding this lock leaves only counters behind: keep going.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a pre-started container for this step, if one is ready, and starts a refill.
    /// The first use of a runtime returns `None` (the caller runs cold) and fills its pool.
    pub fn take(&self, step: &ValidatedStep) -> Option<PrestartedContainer> {
        if !self.enabled() || self.inner.shutdown.is_cancelled() {
            return None;
        }
        let key = PoolKey {
            image: step.image.clone(),
            command: step.command.clone(),
        };
        let max_age = Duration::from_secs(self.inner.config.idle_timeout_secs);
        let mut too_old = Vec::new();
        let taken = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                runtime: step.runtime.clone(),
                python: step.language == crate::runtimes::Language::Python,
                ready: VecDeque::new(),
                filling: 0,
                last_used: Instant::now(),
            });
            slot.last_used = Instant::now();
            let mut taken = None;
            while let Some(w) = slot.ready.pop_front() {
                if w.container.created_at.elapsed() > max_age {
                    too_old.push(w);
                } else {
                    // The taker holds its own permit for this container: the pool's goes back.
                    taken = Some(w.container);
                    break;
                }
            }
            taken
        };
        for old in too_old {
            self.remove_in_background(old);
        }
        self.refill(&key);
        taken
    }

    /// Starts containers until the slot holds `size` (ready plus being started), each with a
    /// free permit when the pool shares the daemon's limit (none free: it stays smaller).
    fn refill(&self, key: &PoolKey) {
        let (missing, runtime, python) = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(key) else {
                return;
            };
            let have = slot.ready.len() + slot.filling;
            let missing = self.inner.config.size.saturating_sub(have);
            slot.filling += missing;
            (missing, slot.runtime.clone(), slot.python)
        };
        for _ in 0..missing {
            let permit = match &self.inner.permits {
                None => None,
                Some(permits) => match permits.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        if let Some(slot) = self.lock().get_mut(key) {
                            slot.filling = slot.filling.saturating_sub(1);
                        }
                        continue;
                    }
                },
            };
            let pool = self.clone();
            let key = key.clone();
            let runtime = runtime.clone();
            self.inner.tasks.spawn(async move {
                let started = pool.start_one(&key, &runtime, python).await;
                let mut leftover = None;
                {
                    let mut slots = pool.lock();
                    match slots.get_mut(&key) {
                        Some(slot) => {
                            slot.filling = slot.filling.saturating_sub(1);
                            match started {
                                Ok(container) if !pool.inner.shutdown.is_cancelled() => {
                                    slot.ready.push_back(Waiting { container, permit })
                                }
                                Ok(container) => leftover = Some(Waiting { container, permit }),
                                Err(e) => tracing::warn!("warm pool for {runtime}: {e}"),
                            }
                        }
                        None => {
                            leftover = started.ok().map(|container| Waiting { container, permit })
                        }
                    }
                }
                if let Some(w) = leftover {
                    pool.remove_in_background(w);
                }
            });
        }
    }

    /// Gives up the oldest waiting container (its permit is released once it is removed), for
    /// an execution that waits for a permit. Returns false when nothing is waiting.
    pub fn evict_one(&self) -> bool {
        let oldest = {
            let mut slots = self.lock();
            let key = slots
                .iter()
                .filter_map(|(k, s)| s.ready.front().map(|w| (k.clone(), w.container.created_at)))
                .min_by_key(|(_, at)| *at)
                .map(|(k, _)| k);
            key.and_then(|k| slots.get_mut(&k).and_then(|s| s.ready.pop_front()))
        };
        match oldest {
            Some(w) => {
                self.remove_in_background(w);
                true
            }
            None => false,
        }
    }

    async fn start_one(
        &self,
        key: &PoolKey,
        runtime: &str,
        python: bool,
    ) -> Result<PrestartedContainer, crate::sandbox::SandboxError> {
        let mut env = self.inner.env.clone();
        if python && !self.inner.config.python_preimport.is_empty() {
            env.push(format!(
                "SCRIPTBOX_PREIMPORT={}",
                self.inner.config.python_preimport.join(",")
            ));
        }
        // The deadline label must outlive the wait in the pool plus the longest step.
        let wait = Duration::from_secs(self.inner.config.idle_timeout_secs);
        let job = ContainerJob {
            execution_id: uuid::Uuid::new_v4().to_string(),
            image: key.image.clone(),
            runtime: runtime.to_string(),
            command: key.command.clone(),
            env,
            stdin: Vec::new(),
            timeout: wait + self.inner.max_timeout,
            memory_bytes: None,
            egress_dir: None,
        };
        self.inner.backend.prestart(&job).await
    }

    /// Removes a waiting container; its permit (if any) is released only once it is gone.
    fn remove_in_background(&self, w: Waiting) {
        let backend = self.inner.backend.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = backend.remove(&w.container.id).await {
                tracing::warn!("warm pool: could not remove {}: {e}", w.container.id);
            }
            drop(w.permit);
        });
    }

    /// Every 200 ms: empties the pools of runtimes unused for the idle time-out, and tops up
    /// the others (a refill skipped for want of a free permit is retried here).
    async fn reap_idle(&self) {
        let idle = Duration::from_secs(self.inner.config.idle_timeout_secs);
        let tick = Duration::from_millis(200)
            .min(idle)
            .max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let retired: Vec<Waiting> = {
                let mut slots = self.lock();
                let stale: Vec<PoolKey> = slots
                    .iter()
                    .filter(|(_, s)| s.last_used.elapsed() >= idle)
                    .map(|(k, _)| k.clone())
                    .collect();
                stale
                    .into_iter()
                    .filter_map(|k| slots.remove(&k))
                    .flat_map(|s| s.ready)
                    .collect()
            };
            for c in retired {
                self.remove_in_background(c);
            }
            let short: Vec<PoolKey> = {
                let slots = self.lock();
                slots
                    .iter()
                    .filter(|(_, s)| s.ready.len() + s.filling < self.inner.config.size)
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            for key in short {
                self.refill(&key);
            }
        }
    }

    /// Stops refilling and removes every waiting container (bounded by `limit`).
    pub async fn shutdown(&self, limit: Duration) {
        self.inner.shutdown.cancel();
        let waiting: Vec<Waiting> = {
            let mut slots = self.lock();
            slots.drain().flat_map(|(_, s)| s.ready).collect()
        };
        for c in waiting {
            self.remove_in_background(c);
        }
        self.inner.tasks.close();
        let _ = tokio::time::timeout(limit, self.inner.tasks.wait()).await;
    }
}
