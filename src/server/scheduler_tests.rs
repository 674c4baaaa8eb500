//! The scheduler on a fake backend ([`FakeBackend`]): admission, permits, FIFO order, cancel,
//! recovery, pool eviction and panics, judged from the store's records and the backend's calls
//! and live containers. No Docker.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::context::AwsContext;
use crate::execute::OutputLimits;
use crate::pool::PoolConfig;
use crate::sandbox::fake::{Call, FakeBackend, Reply};
use crate::sandbox::{Backend, SandboxConfig};
use crate::server::types::StepRequest;
use crate::store::{ExecutionRecord, Store};

/// A scheduler of `concurrency` permits and `queue` places on a fresh fake backend and store.
struct Rig {
    sched: Arc<Scheduler>,
    store: Arc<Store>,
    fake: Arc<FakeBackend>,
    _dir: tempfile::TempDir,
}

fn rig(concurrency: usize, queue: usize) -> Rig {
    rig_with_pool(concurrency, queue, 0)
}

/// As [`rig`], with a warm pool of `pool_size` per runtime sharing the permits.
fn rig_with_pool(concurrency: usize, queue: usize, pool_size: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.concurrency = concurrency;
    settings.server.queue_length = queue;
    settings.pool.size = pool_size;
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let fake = FakeBackend::new(SandboxConfig::default());
    let backend: Arc<dyn Backend> = fake.clone();
    let permits = Arc::new(Semaphore::new(settings.server.effective_concurrency()));
    let pool = (pool_size > 0).then(|| {
        WarmPool::with_backend(
            backend.clone(),
            PoolConfig {
                size: pool_size,
                idle_timeout_secs: 300,
                python_preimport: vec![],
            },
            &AwsContext::default(),
            Duration::from_secs(600),
            Some(permits.clone()),
        )
    });
    let runner = Arc::new(Runner::new(
        backend,
        pool.clone(),
        AwsContext::default(),
        OutputLimits::default(),
    ));
    let sched = Scheduler::new(
        Arc::new(settings),
        Arc::new(Catalog::builtin()),
        store.clone(),
        Arc::new(Metrics::default()),
        runner,
        dir.path().join("scratch"),
        ContainerCapacity { permits, pool },
    );
    sched.start();
    Rig {
        sched,
        store,
        fake,
        _dir: dir,
    }
}

fn step_request() -> SubmitRequest {
    SubmitRequest {
        step: Some(StepRequest {
            runtime: "python3.11".into(),
            handler: Some("h".into()),
            script: Some("def h(e, c): return 1".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits (bounded) until `ok` holds.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let began = Instant::now();
    while !ok() {
        assert!(began.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the execution has ended; returns its row.
async fn ended(store: &Store, id: &str) -> ExecutionRecord {
    let began = Instant::now();
    loop {
        let row = store.get(id).await.unwrap().unwrap();
        if row.status.is_terminal() {
            return row;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{id} is still {:?}",
            row.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the execution has this status.
async fn reaches(store: &Store, id: &str, status: ExecStatus) {
    let began = Instant::now();
    loop {
        let row = store.get(id).await.unwrap().unwrap();
        if row.status == status {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{id} is {:?}, not {status:?}",
            row.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The execution ids of the runs, in the order the backend saw them.
fn runs(fake: &FakeBackend) -> Vec<String> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Run { execution_id, .. } => Some(execution_id),
            _ => None,
        })
        .collect()
}

fn payload_of(row: &ExecutionRecord) -> Value {
    let result: Value = row.native_json();
    result["Payload"].clone()
}

#[tokio::test]
async fn a_panic_ends_the_execution_failed_and_returns_its_place() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 0);
    // One place in all: each submission is accepted only if the one before gave it back.
    for _ in 0..3 {
        fake.push(Reply::Panic);
        let id = sched
            .submit(&step_request())
            .await
            .expect("a place is free");
        let row = ended(&store, &id).await;
        assert_eq!(row.status, ExecStatus::Failed);
        let failure = row.failure_message.unwrap_or_default();
        assert!(
            failure.contains("scriptbox failed internally")
                && failure.contains("the fake backend was told to panic"),
            "{failure}"
        );
        eventually("its place is given back", || sched.load() == (0, 0)).await;
    }
    assert_eq!(runs(&fake).len(), 3);
    // Three runs with one permit: each panic gave it back (the dispatcher now holds it,
    // waiting for the next job).
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_full_queue_refuses_before_anything_is_stored() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 1);
    fake.push(Reply::HangUntilCancel);
    let running = sched.submit(&step_request()).await.unwrap();
    reaches(&store, &running, ExecStatus::Running).await;
    let queued = sched.submit(&step_request()).await.unwrap();
    let refused = sched.submit(&step_request()).await;
    assert!(
        matches!(refused, Err(SubmitError::Busy { retry_after }) if retry_after >= 1),
        "{refused:?}"
    );
    let stored = store.counts().await.unwrap();
    let total: i64 = stored.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total, 2,
        "the refused submission was not stored: {stored:?}"
    );
    assert_eq!(sched.load(), (1, 1));
    // A place comes back when one ends: the next submission is accepted.
    assert_eq!(sched.cancel(&queued).await, CancelOutcome::CancelledQueued);
    let again = sched
        .submit(&step_request())
        .await
        .expect("a place came back");
    sched.cancel(&running).await;
    assert_eq!(ended(&store, &running).await.status, ExecStatus::Cancelled);
    assert_eq!(ended(&store, &again).await.status, ExecStatus::Success);
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn no_more_containers_than_permits_run_at_once() {
    let Rig {
        sched, store, fake, ..
    } = rig(2, 10);
    for i in 0..6 {
        fake.push(Reply::Result {
            result: json!({"ok": true, "payload": i}),
            exit_code: 0,
            after: Duration::from_millis(60),
        });
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(sched.submit(&step_request()).await.unwrap());
    }
    eventually("two run at once", || fake.live().len() == 2).await;
    assert_eq!(sched.load().1, 2);
    for id in &ids {
        assert_eq!(ended(&store, id).await.status, ExecStatus::Success);
    }
    assert_eq!(runs(&fake).len(), 6);
    assert!(fake.most_live() <= 2, "{} alive at once", fake.most_live());
    eventually("every container removed", || fake.live().is_empty()).await;
    eventually("nothing left", || sched.load() == (0, 0)).await;
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn queued_executions_run_in_submission_order() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 10);
    for i in 0..5 {
        fake.push(Reply::Result {
            result: json!({"ok": true, "payload": i}),
            exit_code: 0,
            after: Duration::from_millis(20),
        });
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(sched.submit(&step_request()).await.unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        let row = ended(&store, id).await;
        assert_eq!(row.status, ExecStatus::Success);
        // The i-th scripted reply went to the i-th submission.
        assert_eq!(payload_of(&row), json!(i));
    }
    assert_eq!(runs(&fake), ids, "runs in FIFO order");
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancelling_a_queued_execution_never_runs_it() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 5);
    fake.push(Reply::HangUntilCancel);
    let running = sched.submit(&step_request()).await.unwrap();
    reaches(&store, &running, ExecStatus::Running).await;
    let queued = sched.submit(&step_request()).await.unwrap();
    assert_eq!(sched.cancel(&queued).await, CancelOutcome::CancelledQueued);
    let row = ended(&store, &queued).await;
    assert_eq!(row.status, ExecStatus::Cancelled);
    assert_eq!(
        row.failure_message.as_deref(),
        Some(CANCELLED_QUEUED_MESSAGE)
    );
    assert_eq!(
        sched.cancel(&queued).await,
        CancelOutcome::AlreadyFinished(ExecStatus::Cancelled)
    );
    assert_eq!(sched.cancel("no-such-id").await, CancelOutcome::NotFound);
    sched.cancel(&running).await;
    ended(&store, &running).await;
    assert!(!runs(&fake).contains(&queued), "a cancelled queued one ran");
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancelling_a_running_execution_kills_and_removes_its_container() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 0);
    fake.push(Reply::HangUntilCancel);
    let id = sched.submit(&step_request()).await.unwrap();
    reaches(&store, &id, ExecStatus::Running).await;
    eventually("its container is alive", || fake.live().len() == 1).await;
    let container = fake.live()[0].clone();
    assert_eq!(sched.cancel(&id).await, CancelOutcome::Cancelling);
    let row = ended(&store, &id).await;
    assert_eq!(row.status, ExecStatus::Cancelled);
    assert!(fake.live().is_empty(), "{:?}", fake.live());
    assert!(fake.calls().contains(&Call::Remove { id: container }));
    eventually("its place is given back", || sched.load() == (0, 0)).await;
    // The permit came back: the next one runs.
    let next = sched.submit(&step_request()).await.unwrap();
    assert_eq!(ended(&store, &next).await.status, ExecStatus::Success);
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn executions_queued_before_a_restart_run_after_it() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 5);
    // What the previous daemon acknowledged: one runnable request, one it can no longer run.
    for (id, request) in [
        ("kept", serde_json::to_string(&step_request()).unwrap()),
        (
            "unrunnable",
            r#"{"Step": {"Runtime": "no-such-runtime"}}"#.into(),
        ),
    ] {
        store
            .insert(NewExecution {
                id: id.into(),
                kind: ExecKind::Step,
                runtime: Some("python3.11".into()),
                document_name: None,
                request,
                submitted: now(),
                parent_id: None,
            })
            .await
            .unwrap();
    }
    fake.push(Reply::returns(json!("after the restart")));
    let queued = store.with_status(ExecStatus::Queued).await.unwrap();
    assert_eq!(queued.len(), 2);
    sched.requeue(queued).await;
    let kept = ended(&store, "kept").await;
    assert_eq!(kept.status, ExecStatus::Success);
    assert_eq!(payload_of(&kept), json!("after the restart"));
    let unrunnable = ended(&store, "unrunnable").await;
    assert_eq!(unrunnable.status, ExecStatus::Failed);
    assert!(
        unrunnable
            .failure_message
            .unwrap_or_default()
            .contains("scriptbox restarted and could no longer run this queued execution"),
    );
    assert_eq!(runs(&fake), vec!["kept".to_string()]);
    sched.shutdown(Duration::from_secs(5)).await;
}

/// A step request with a lower memory limit than the sandbox's: it never takes a pooled
/// container.
fn lowered_request() -> SubmitRequest {
    SubmitRequest {
        limits: Some(crate::server::types::LimitsRequest {
            memory_mb: Some(256),
            ..Default::default()
        }),
        ..step_request()
    }
}

#[tokio::test]
async fn a_waiting_pool_container_gives_its_permit_to_a_queued_execution() {
    let Rig {
        sched, store, fake, ..
    } = rig_with_pool(2, 5, 1);
    // The first use of the runtime runs cold; the pool then fills with the free permit (the
    // dispatcher holds the other one, waiting for the next job).
    let first = sched.submit(&step_request()).await.unwrap();
    assert_eq!(ended(&store, &first).await.status, ExecStatus::Success);
    eventually("the pool filled", || fake.live().len() == 1).await;
    let waiting = fake.live()[0].clone();
    fake.push(Reply::HangUntilCancel);
    let hanging = sched.submit(&lowered_request()).await.unwrap();
    reaches(&store, &hanging, ExecStatus::Running).await;
    // Every permit is held now: by `hanging` and by the waiting pool container.
    fake.push(Reply::HangUntilCancel);
    let second = sched.submit(&lowered_request()).await.unwrap();
    let third = sched.submit(&lowered_request()).await.unwrap();
    assert_eq!(sched.load(), (2, 1));
    // `hanging` ends: `second` takes its permit, and with `third` still queued and no permit
    // free, the dispatcher makes the pool give its waiting container up for `third`.
    sched.cancel(&hanging).await;
    reaches(&store, &second, ExecStatus::Running).await;
    assert_eq!(ended(&store, &third).await.status, ExecStatus::Success);
    assert!(
        fake.calls().contains(&Call::Remove {
            id: waiting.clone()
        }),
        "{:?}",
        fake.calls()
    );
    assert!(fake.most_live() <= 2, "{} alive at once", fake.most_live());
    sched.cancel(&second).await;
    assert_eq!(ended(&store, &second).await.status, ExecStatus::Cancelled);
    sched.shutdown(Duration::from_secs(5)).await;
    assert!(fake.live().is_empty(), "{:?}", fake.live());
}

#[tokio::test]
async fn a_warm_run_records_its_result_then_its_exit_code() {
    let Rig {
        sched, store, fake, ..
    } = rig_with_pool(2, 5, 1);
    let first = sched.submit(&step_request()).await.unwrap();
    ended(&store, &first).await;
    eventually("the pool filled", || fake.live().len() == 1).await;
    fake.push(Reply::returns(json!("warm")));
    let second = sched.submit(&step_request()).await.unwrap();
    let row = ended(&store, &second).await;
    assert_eq!(row.status, ExecStatus::Success);
    assert_eq!(payload_of(&row), json!("warm"));
    assert!(
        fake.calls().iter().any(|c| matches!(
            c,
            Call::Run {
                prestarted: true,
                ..
            }
        )),
        "{:?}",
        fake.calls()
    );
    // Docker's exit code arrives with the removal, after the result.
    let began = Instant::now();
    loop {
        let row = store.get(&second).await.unwrap().unwrap();
        let result: Value = row.native_json();
        if result["ExitCode"] == json!(0) {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{result}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sched.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_engine_failure_ends_the_execution_failed() {
    let Rig {
        sched, store, fake, ..
    } = rig(1, 0);
    fake.push(Reply::Fail("the engine is gone".into()));
    let id = sched.submit(&step_request()).await.unwrap();
    let row = ended(&store, &id).await;
    assert_eq!(row.status, ExecStatus::Failed);
    let failure = row.failure_message.unwrap_or_default();
    assert!(
        failure.contains("the container engine failed: the engine is gone"),
        "{failure}"
    );
    eventually("its place is given back", || sched.load() == (0, 0)).await;
    sched.shutdown(Duration::from_secs(5)).await;
}
