//! A recording test double of [`Backend`], in the manner of youki's `Syscall` test double: it
//! runs no containers, records every call, and answers runs from a script of [`Reply`]s by
//! writing real protocol frames to the observer. The scheduler's unit tests run on it; it is
//! compiled always (and hidden from the docs) so that integration tests may use it too.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, ContainerJob, ContainerOutcome, ExitFacts, HeldContainer, LABEL_EXECUTION,
    LABEL_OWNER, OutputObserver, OutputStream, PrestartedContainer, Removal, SandboxConfig,
    SandboxError, SweepReport,
};
use crate::protocol::{FRAME_RESULT, encode_frame};
use crate::result::KillReason;

/// The owner label of every fake container.
pub const FAKE_OWNER: &str = "fake-host:1:1";

/// One call the backend received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Backend::ping`].
    Ping,
    /// [`Backend::prestart`] of a container for this execution id.
    Prestart {
        /// The job's execution id.
        execution_id: String,
    },
    /// [`Backend::run`].
    Run {
        /// The job's execution id.
        execution_id: String,
        /// Whether it ran in a pre-started container.
        prestarted: bool,
    },
    /// [`Backend::remove`] of a container id.
    Remove {
        /// The container id.
        id: String,
    },
    /// [`Backend::held`].
    Held,
    /// [`Backend::sweep`].
    Sweep,
}

/// How the next run answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// After `after` (cut short by a cancel, which kills), writes `result` as the `R` frame
    /// (the bootstrap's JSON: `{"ok":true,"payload":…}`) and exits with `exit_code`.
    Result {
        /// The `R` frame's body.
        result: Value,
        /// The container's exit code.
        exit_code: i64,
        /// How long the script takes.
        after: Duration,
    },
    /// Runs until its execution is cancelled; then it is killed (exit 137).
    HangUntilCancel,
    /// The backend fails the run (a Docker error) with this message.
    Fail(String),
    /// The backend panics, as a bug would.
    Panic,
}

impl Reply {
    /// A handler that returns `payload` at once.
    pub fn returns(payload: Value) -> Self {
        Reply::Result {
            result: serde_json::json!({ "ok": true, "payload": payload }),
            exit_code: 0,
            after: Duration::ZERO,
        }
    }
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Call>,
    script: VecDeque<Reply>,
    live: BTreeSet<String>,
    most_live: usize,
    created: u64,
}

/// The recording backend. Clones made by [`Backend::with_sandbox`] share its record.
#[derive(Debug)]
pub struct FakeBackend {
    config: SandboxConfig,
    record: Arc<Mutex<Recorded>>,
}

impl FakeBackend {
    /// A backend with these settings, no scripted replies (a run then returns `null` at once).
    pub fn new(config: SandboxConfig) -> Arc<Self> {
        Arc::new(FakeBackend {
            config,
            record: Arc::default(),
        })
    }

    /// Scripts the answer of the next run that has none yet.
    pub fn push(&self, reply: Reply) {
        self.lock().script.push_back(reply);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The containers alive now (created or pre-started, not removed).
    pub fn live(&self) -> Vec<String> {
        self.lock().live.iter().cloned().collect()
    }

    /// The most containers that were alive at once.
    pub fn most_live(&self) -> usize {
        self.lock().most_live
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A test that panicked while holding it leaves only a record behind.
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn create(&self) -> String {
        let mut r = self.lock();
        r.created = r.created.saturating_add(1);
        let id = format!("fake-{}", r.created);
        r.live.insert(id.clone());
        r.most_live = r.most_live.max(r.live.len());
        id
    }

    fn gone(&self, id: &str) {
        self.lock().live.remove(id);
    }

    async fn run_job(
        &self,
        prestarted: Option<PrestartedContainer>,
        job: ContainerJob,
        observer: &mut dyn OutputObserver,
        cancel: &CancellationToken,
        defer_removal: bool,
    ) -> Result<(ContainerOutcome, Removal), SandboxError> {
        let began = Instant::now();
        let reply = {
            let mut r = self.lock();
            r.calls.push(Call::Run {
                execution_id: job.execution_id.clone(),
                prestarted: prestarted.is_some(),
            });
            r.script
                .pop_front()
                .unwrap_or_else(|| Reply::returns(Value::Null))
        };
        let id = match (&reply, prestarted) {
            (Reply::Panic, _) => panic!("the fake backend was told to panic"),
            (Reply::Fail(message), prestarted) => {
                if let Some(c) = prestarted {
                    self.gone(&c.id);
                }
                return Err(SandboxError::Refused(message.clone()));
            }
            (_, Some(c)) => c.id,
            (_, None) => self.create(),
        };
        let mut outcome = ContainerOutcome {
            container_id: id.clone(),
            ..Default::default()
        };
        let timeout = tokio::time::sleep(job.timeout);
        match reply {
            Reply::Result {
                result,
                exit_code,
                after,
            } => {
                tokio::select! {
                    _ = tokio::time::sleep(after) => {
                        let frame = encode_frame(FRAME_RESULT, result.to_string().as_bytes());
                        outcome.output_bytes = u64::try_from(frame.len()).unwrap_or(u64::MAX);
                        observer.on_output(OutputStream::Stdout, &frame);
                        outcome.exit_code = Some(exit_code);
                    }
                    _ = cancel.cancelled() => outcome.kill_reason = Some(KillReason::Cancelled),
                    _ = timeout => outcome.kill_reason = Some(KillReason::Timeout),
                }
            }
            Reply::HangUntilCancel => {
                tokio::select! {
                    _ = cancel.cancelled() => outcome.kill_reason = Some(KillReason::Cancelled),
                    _ = timeout => outcome.kill_reason = Some(KillReason::Timeout),
                }
            }
            Reply::Fail(_) | Reply::Panic => {}
        }
        if outcome.kill_reason.is_some() {
            outcome.exit_code = Some(137);
        }
        outcome.run = began.elapsed();
        outcome.total = began.elapsed();
        if defer_removal && outcome.kill_reason.is_none() {
            let record = self.record.clone();
            let facts = ExitFacts {
                exit_code: outcome.exit_code,
                oom_killed: false,
            };
            let handle = tokio::spawn(async move {
                let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                r.calls.push(Call::Remove { id: id.clone() });
                r.live.remove(&id);
                Ok(Some(facts))
            });
            return Ok((outcome, Removal(Some(handle))));
        }
        {
            let mut r = self.lock();
            r.calls.push(Call::Remove { id: id.clone() });
            r.live.remove(&id);
        }
        Ok((outcome, Removal(None)))
    }
}

impl Backend for FakeBackend {
    fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn with_sandbox(&self, config: SandboxConfig) -> Arc<dyn Backend> {
        Arc::new(FakeBackend {
            config,
            record: self.record.clone(),
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        self.lock().calls.push(Call::Ping);
        Box::pin(async { Ok(()) })
    }

    fn prestart<'a>(
        &'a self,
        job: &'a ContainerJob,
    ) -> BoxFuture<'a, Result<PrestartedContainer, SandboxError>> {
        Box::pin(async move {
            self.lock().calls.push(Call::Prestart {
                execution_id: job.execution_id.clone(),
            });
            Ok(PrestartedContainer {
                id: self.create(),
                execution_id: job.execution_id.clone(),
                created_at: Instant::now(),
            })
        })
    }

    fn run<'a>(
        &'a self,
        prestarted: Option<PrestartedContainer>,
        job: ContainerJob,
        observer: &'a mut dyn OutputObserver,
        cancel: &'a CancellationToken,
        defer_removal: bool,
    ) -> BoxFuture<'a, Result<(ContainerOutcome, Removal), SandboxError>> {
        Box::pin(self.run_job(prestarted, job, observer, cancel, defer_removal))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let mut r = self.lock();
            r.calls.push(Call::Remove { id: id.to_string() });
            r.live.remove(id);
            Ok(())
        })
    }

    fn held<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<HeldContainer>, SandboxError>> {
        Box::pin(async move {
            let mut r = self.lock();
            r.calls.push(Call::Held);
            if owner.is_some_and(|o| o != FAKE_OWNER) {
                return Ok(vec![]);
            }
            Ok(r.live
                .iter()
                .map(|id| HeldContainer {
                    id: id.clone(),
                    execution_id: None,
                    owner: Some(FAKE_OWNER.into()),
                    labels: [
                        (LABEL_OWNER.to_string(), FAKE_OWNER.to_string()),
                        (LABEL_EXECUTION.to_string(), String::new()),
                    ]
                    .into(),
                })
                .collect())
        })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<SweepReport, SandboxError>> {
        self.lock().calls.push(Call::Sweep);
        Box::pin(async { Ok(SweepReport::default()) })
    }
}
