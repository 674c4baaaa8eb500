//! The warm pool against the real engine: fresh pre-started containers, used once, refilled,
//! emptied when idle, with the same sandbox as a cold container.

mod common;

use std::time::{Duration, Instant};

use common::*;
use scriptbox::execute::{ExecuteOptions, execute_step_pooled};
use scriptbox::pool::{PoolConfig, WarmPool};
use scriptbox::result::{StepResult, StepStatus};
use scriptbox::runtimes::Catalog;
use scriptbox::sandbox::Engine;
use scriptbox::step;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PY: &str = "python3.11";

fn pool(engine: &Engine, size: usize, idle_secs: u64) -> WarmPool {
    let s = settings();
    WarmPool::new(
        engine.clone(),
        PoolConfig {
            size,
            idle_timeout_secs: idle_secs,
            ..Default::default()
        },
        &s.context,
        Duration::from_secs(600),
    )
}

async fn run_pooled(
    engine: &Engine,
    pool: &WarmPool,
    script: &str,
    timeout: Option<i64>,
) -> StepResult {
    let s = settings();
    let mut inputs = py_step(PY, "h", script, json!({}));
    inputs.timeout_seconds = timeout;
    let step = step::validate(&inputs, &Catalog::builtin(), 600).unwrap();
    let options = ExecuteOptions {
        execution_id: None,
        memory_bytes: None,
        context: &s.context,
        limits: &s.output,
        on_log: None,
        automation_execution_id: None,
        aws: None,
    };
    let (result, removal) = execute_step_pooled(
        engine,
        Some(pool),
        &step,
        options,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let facts = removal.finish().await.unwrap();
    if result.status == StepStatus::Success && result.exit_code.is_none() {
        // A warm run returned at its result frame; Docker's exit facts arrive with the removal.
        let facts = facts.expect("exit facts after an early result");
        assert_eq!(facts.exit_code, Some(0), "{facts:?}");
        assert!(!facts.oom_killed);
    }
    result
}

async fn wait_until_ready(pool: &WarmPool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.ready_count() < n {
        assert!(Instant::now() < deadline, "the pool did not fill to {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! engine_or_skip {
    () => {{
        let Some(engine) = engine().await else { return };
        if !require_image(&engine, PY).await {
            return;
        }
        engine
    }};
}

#[tokio::test]
async fn a_runtime_fills_after_first_use_each_container_serves_once_and_it_refills() {
    let engine = engine_or_skip!();
    let pool = pool(&engine, 2, 300);
    assert_eq!(
        pool.ready_count(),
        0,
        "nothing is started before a runtime is used"
    );
    let first = run_pooled(&engine, &pool, "def h(e, c):\n    return 1\n", None).await;
    assert_eq!(first.status, StepStatus::Success);
    wait_until_ready(&pool, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pool.ready_count(),
        2,
        "an idle pool does not grow past its size"
    );

    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = run_pooled(
            &engine,
            &pool,
            "import os\n\ndef h(e, c):\n    return os.uname().nodename\n",
            None,
        )
        .await;
        assert_eq!(r.status, StepStatus::Success, "{r:?}");
        let container = r.container_id.clone().unwrap();
        assert!(!seen.contains(&container), "a container was reused");
        seen.push(container);
        // Used once, then removed.
        assert!(containers_of(&engine, &r.execution_id).await.is_empty());
    }
    wait_until_ready(&pool, 2).await;
    let waiting = pool.ready_container_ids();
    assert_eq!(waiting.len(), 2);
    pool.shutdown(Duration::from_secs(30)).await;
    for id in waiting {
        assert!(
            engine.docker().inspect_container(&id, None).await.is_err(),
            "shutdown left {id}"
        );
    }
}

#[tokio::test]
async fn pooled_containers_have_the_cold_sandbox_labels_and_timeout() {
    let engine = engine_or_skip!();
    let pool = pool(&engine, 1, 300);
    run_pooled(&engine, &pool, "def h(e, c):\n    return 1\n", None).await;
    wait_until_ready(&pool, 1).await;
    // Inspect the waiting container: same hardening as a cold one.
    let me = format!(":{}:", std::process::id());
    let c = engine
        .labelled_containers()
        .await
        .unwrap()
        .into_iter()
        .find(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("scriptbox.daemon"))
                .is_some_and(|o| o.contains(&me))
                && c.state.as_ref().map(|s| s.to_string()) == Some("running".into())
        })
        .expect("a waiting pooled container");
    let seen = engine
        .docker()
        .inspect_container(c.id.as_ref().unwrap(), None)
        .await
        .unwrap();
    let host = seen.host_config.unwrap();
    let config = seen.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.memory, Some(engine.config().memory_bytes));
    assert_eq!(host.memory, host.memory_swap);
    assert_eq!(
        host.pids_limit,
        Some(engine.config().effective_pids_limit())
    );
    assert_eq!(host.init, Some(true));
    let labels = config.labels.unwrap();
    for l in [
        "scriptbox.execution",
        "scriptbox.daemon",
        "scriptbox.deadline",
    ] {
        assert!(labels.contains_key(l), "{l}");
    }
    // The step's own timeout applies from the moment the request is delivered.
    let began = Instant::now();
    let r = run_pooled(
        &engine,
        &pool,
        "import time\n\ndef h(e, c):\n    time.sleep(60)\n",
        Some(2),
    )
    .await;
    assert_eq!(r.status, StepStatus::TimedOut);
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    pool.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn nothing_crosses_between_pooled_runs() {
    let engine = engine_or_skip!();
    let pool = pool(&engine, 2, 300);
    run_pooled(&engine, &pool, "def h(e, c):\n    return 1\n", None).await;
    wait_until_ready(&pool, 2).await;
    let plant = run_pooled(
        &engine,
        &pool,
        "import subprocess\n\ndef h(e, c):\n    open('/tmp/planted', 'w').write('x')\n    subprocess.Popen(['sleep', '1000'])\n    return 1\n",
        None,
    )
    .await;
    assert_eq!(plant.status, StepStatus::Success);
    let look = run_pooled(
        &engine,
        &pool,
        "import os\n\ndef h(e, c):\n    procs = [open('/proc/%s/cmdline' % p, 'rb').read() for p in os.listdir('/proc') if p.isdigit()]\n    return {'planted': os.path.exists('/tmp/planted'), 'sleepers': [p.decode() for p in procs if b'sleep' in p]}\n",
        None,
    )
    .await;
    assert_eq!(
        look.payload,
        json!({"planted": false, "sleepers": []}),
        "{look:?}"
    );
    assert_ne!(plant.container_id, look.container_id);
    pool.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn an_unused_runtime_gives_its_containers_back_and_size_zero_is_off() {
    let engine = engine_or_skip!();
    let pool = pool(&engine, 2, 1);
    run_pooled(&engine, &pool, "def h(e, c):\n    return 1\n", None).await;
    wait_until_ready(&pool, 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.ready_count() > 0 {
        assert!(Instant::now() < deadline, "idle pool not emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.shutdown(Duration::from_secs(30)).await;

    let off = self::pool(&engine, 0, 300);
    let r = run_pooled(&engine, &off, "def h(e, c):\n    return 2\n", None).await;
    assert_eq!(r.payload, json!(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(off.ready_count(), 0);
    off.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pooled_container_that_died_is_replaced_by_a_cold_run() {
    let engine = engine_or_skip!();
    let pool = pool(&engine, 1, 300);
    run_pooled(&engine, &pool, "def h(e, c):\n    return 1\n", None).await;
    wait_until_ready(&pool, 1).await;
    // Kill the waiting container behind the pool's back.
    let me = format!(":{}:", std::process::id());
    for c in engine.labelled_containers().await.unwrap() {
        if c.labels
            .as_ref()
            .and_then(|l| l.get("scriptbox.daemon"))
            .is_some_and(|o| o.contains(&me))
            && c.state.as_ref().map(|s| s.to_string()) == Some("running".into())
        {
            let _ = engine
                .docker()
                .kill_container(
                    c.id.as_ref().unwrap(),
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = run_pooled(
        &engine,
        &pool,
        "def h(e, c):\n    return 'cold after all'\n",
        None,
    )
    .await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload, json!("cold after all"));
    pool.shutdown(Duration::from_secs(30)).await;
}
