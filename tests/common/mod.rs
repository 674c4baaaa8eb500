//! Shared fixtures for tests that run real containers on the real Docker engine.
//!
//! A test that needs the engine or an image calls [`engine`] / [`require_image`]. When the
//! engine or image is missing they print why and skip — unless `SCRIPTBOX_REQUIRE_ENGINE=1`
//! (set by `make test`), where a missing engine or image is a failure, never a silent pass.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

pub mod daemon;
pub mod egress;
pub mod moto;
pub mod ssm;

use std::time::Duration;

use scriptbox::config::Settings;
use scriptbox::execute::{ExecuteOptions, execute_step};
use scriptbox::images::{self, ImageState};
use scriptbox::result::StepResult;
use scriptbox::runtimes::Catalog;
use scriptbox::sandbox::Engine;
use scriptbox::step::{self, Attachment, StepInputs};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// True when `make test` demands the engine and images.
pub fn required() -> bool {
    std::env::var("SCRIPTBOX_REQUIRE_ENGINE").as_deref() == Ok("1")
}

/// Settings for tests: the defaults, with the container runtime from `SCRIPTBOX_TEST_RUNTIME`.
pub fn settings() -> Settings {
    let mut s = Settings::default();
    if let Ok(rt) = std::env::var("SCRIPTBOX_TEST_RUNTIME") {
        s.sandbox.container_runtime = rt;
    }
    s
}

/// Connects to the engine, or explains the skip (or fails under `make test`).
pub async fn engine() -> Option<Engine> {
    engine_with(settings()).await
}

/// Connects with explicit settings.
pub async fn engine_with(settings: Settings) -> Option<Engine> {
    match Engine::connect(settings.sandbox).await {
        Ok(e) => Some(e),
        Err(e) if required() => panic!("SCRIPTBOX_REQUIRE_ENGINE=1 but no Docker engine: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: no Docker engine answered ({e}); run `make test` to set one up");
            None
        }
    }
}

/// Whether this machine has a source for a runtime besides a registry (the Debian recipe or a
/// CPython installation): `Ok(source)` or `Err(why not)`.
pub async fn offline_source_here(runtime: &str) -> Result<String, String> {
    let name = runtime.to_string();
    tokio::task::spawn_blocking(move || {
        let catalog = Catalog::builtin();
        let rt = catalog.resolve(&name).expect("known runtime");
        images::offline_source_here(&rt).map_err(|e| e.to_string())
    })
    .await
    .expect("the source check runs")
}

/// True when the runtime's image is present and current; otherwise explains the skip. Under
/// `SCRIPTBOX_REQUIRE_ENGINE=1` a missing image of a runtime this machine can build (Debian
/// recipe or local CPython) is a failure.
pub async fn require_image(engine: &Engine, runtime: &str) -> bool {
    let catalog = Catalog::builtin();
    let rt = catalog.resolve(runtime).expect("known runtime");
    let state = images::image_state(engine, &rt)
        .await
        .expect("inspect image");
    if state == ImageState::Current {
        return true;
    }
    let why = format!(
        "image {} for {runtime} is {} (build it with `scriptbox images build {runtime:?}`)",
        rt.runtime.image,
        state.as_str()
    );
    match offline_source_here(runtime).await {
        Ok(source) if required() => {
            panic!("SCRIPTBOX_REQUIRE_ENGINE=1 but {why}, and this machine can build it ({source})")
        }
        Ok(source) => eprintln!("SKIPPED: {why}; this machine can build it from {source}"),
        Err(no) => eprintln!(
            "SKIPPED: {why}; this machine cannot build it (only where a container registry is reachable): {no}"
        ),
    }
    false
}

/// One Python runtime whose image is here, with what its image says of itself.
#[derive(Debug, Clone)]
pub struct PyRuntime {
    /// The runtime name (`python3.8`).
    pub name: String,
    /// Its minor version as numbers (`(3, 8)`).
    pub minor: (u32, u32),
    /// The pinned boto3.
    pub boto3: String,
    /// The exact CPython the image records (label, or the official image's PYTHON_VERSION).
    pub cpython_version: Option<String>,
    /// Where that CPython came from.
    pub cpython_source: Option<String>,
}

/// Every Python runtime of the catalog whose image is present and current, in catalog order.
/// Each other one prints one SKIPPED line naming why (and fails under
/// `SCRIPTBOX_REQUIRE_ENGINE=1` when this machine can build it).
pub async fn python_runtimes(engine: &Engine) -> Vec<PyRuntime> {
    let catalog = Catalog::builtin();
    let mut out = Vec::new();
    for rt in catalog.runtimes() {
        if rt.language() != scriptbox::runtimes::Language::Python {
            continue;
        }
        if !require_image(engine, &rt.runtime.name).await {
            continue;
        }
        let minor = rt.runtime.build["PYTHON_VERSION"].clone();
        let (major, minor) = minor.split_once('.').expect("X.Y");
        let facts = images::image_facts(engine, &rt).await.unwrap_or_default();
        out.push(PyRuntime {
            name: rt.runtime.name.clone(),
            minor: (major.parse().unwrap(), minor.parse().unwrap()),
            boto3: rt.runtime.build["BOTO3_VERSION"].clone(),
            cpython_version: facts.cpython_version,
            cpython_source: facts.cpython_source,
        });
    }
    out
}

/// Inputs for an inline Python step.
pub fn py_step(runtime: &str, handler: &str, script: &str, payload: Value) -> StepInputs {
    StepInputs {
        runtime: Some(runtime.into()),
        handler: Some(handler.into()),
        input_payload: Some(payload),
        script: Some(Value::String(script.into())),
        attachments: vec![],
        timeout_seconds: None,
    }
}

/// An attachment from bytes.
pub fn attachment(name: &str, bytes: &[u8]) -> Attachment {
    Attachment {
        name: name.into(),
        bytes: bytes.to_vec(),
    }
}

/// Validates and runs a step with default options.
pub async fn run(engine: &Engine, inputs: &StepInputs) -> StepResult {
    run_with(engine, inputs, None, &CancellationToken::new()).await
}

/// Validates and runs a step with an execution id and a cancellation token.
pub async fn run_with(
    engine: &Engine,
    inputs: &StepInputs,
    execution_id: Option<String>,
    cancel: &CancellationToken,
) -> StepResult {
    run_with_options(engine, inputs, execution_id, cancel, None).await
}

/// Validates and runs a step, with AWS access when `aws` is given.
pub async fn run_with_options(
    engine: &Engine,
    inputs: &StepInputs,
    execution_id: Option<String>,
    cancel: &CancellationToken,
    aws: Option<scriptbox::execute::StepAws<'_>>,
) -> StepResult {
    let settings = settings();
    let step = step::validate(inputs, &Catalog::builtin(), 600).expect("valid step");
    let options = ExecuteOptions {
        execution_id,
        memory_bytes: None,
        context: &settings.context,
        limits: &settings.output,
        on_log: None,
        automation_execution_id: None,
        aws,
    };
    execute_step(engine, &step, options, cancel)
        .await
        .expect("the engine runs the step")
}

/// Runs `inputs` under a fresh execution id starting with `prefix` and inspects its container
/// while it runs (the handler must hold it running for a few seconds). Returns the inspect, the
/// result and the execution id. A container listed at create may be gone before a loaded engine
/// answers the inspect: that run still ends, its result is printed, and a fresh one is tried (at
/// most three), so what is asserted is always a live container's inspect.
pub async fn run_and_inspect(
    engine: &Engine,
    inputs: &StepInputs,
    prefix: &str,
) -> (
    bollard::models::ContainerInspectResponse,
    StepResult,
    String,
) {
    for attempt in 1..=3 {
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let (run_engine, run_inputs, run_id) = (engine.clone(), inputs.clone(), id.clone());
        let task = tokio::spawn(async move {
            run_with(
                &run_engine,
                &run_inputs,
                Some(run_id),
                &CancellationToken::new(),
            )
            .await
        });
        let container = wait_for_container(engine, &id).await;
        let began = std::time::Instant::now();
        let seen = loop {
            let Ok(seen) = engine.docker().inspect_container(&container, None).await else {
                break None;
            };
            let running = seen.state.as_ref().and_then(|s| s.running) == Some(true);
            if running || began.elapsed() > Duration::from_secs(10) {
                break Some(seen);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let result = task.await.expect("the run's task");
        match seen {
            Some(seen) => return (seen, result, id),
            None => eprintln!(
                "attempt {attempt}: container {container} was gone before its inspect; the run: {result:?}"
            ),
        }
    }
    panic!("three runs ended before Docker answered an inspect of their container");
}

/// Containers (any state) carrying `scriptbox.execution=<id>`.
pub async fn containers_of(engine: &Engine, execution_id: &str) -> Vec<String> {
    engine
        .labelled_containers()
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("scriptbox.execution"))
                .map(String::as_str)
                == Some(execution_id)
        })
        .filter_map(|c| c.id)
        .collect()
}

/// Polls until a container of the execution exists; returns its id.
pub async fn wait_for_container(engine: &Engine, execution_id: &str) -> String {
    for _ in 0..200 {
        if let Some(id) = containers_of(engine, execution_id).await.pop() {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no container appeared for execution {execution_id}");
}

/// The joined log text.
pub fn log_text(r: &StepResult) -> String {
    r.log
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
