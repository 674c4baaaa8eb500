//! Benchmark: one trivial execution end to end, next to `docker run --rm -i` of the same image
//! with the same sandbox flags and the same request on stdin.
//!
//! Run with `make bench` (release build). `BENCH_N` sets the number of runs (default 30).
//! Prints a Markdown table of p50 / p95 / mean in milliseconds, then one row per Python runtime
//! whose image is here (`BENCH_RUNTIME_N` runs each, default 10): its exact CPython, the image's
//! size, cold p50 through the library and `docker run --rm -i` of the same image, measured in the
//! same run, interleaved.

// Benchmark statistics: sample counts, sizes and indexes become floating point and back, well
// inside f64's exact range; not code a request can reach.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scriptbox::config::Settings;
use scriptbox::execute::{ExecuteOptions, execute_step, execute_step_pooled};
use scriptbox::pool::{PoolConfig, WarmPool};
use scriptbox::protocol::{
    BootstrapLimits, Entry, PROTOCOL_VERSION, RequestHeader, encode_request,
};
use scriptbox::runtimes::Catalog;
use scriptbox::sandbox::{Engine, docker_run_equivalent};
use scriptbox::step::{self, StepInputs};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const RUNTIME: &str = "python3.11";
const SCRIPT: &str = "def handler(events, context):\n    return {'ok': True}\n";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn summarize(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let mean =
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1000.0;
    format!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        mean
    )
}

fn request_bytes() -> Vec<u8> {
    let header = RequestHeader {
        v: PROTOCOL_VERSION,
        task_dir: format!("/tmp/{}-2026-01-01-00-00-00", uuid::Uuid::new_v4()),
        language: "python",
        entry: Some(Entry {
            module: "customer_script".into(),
            function: "handler".into(),
        }),
        payload: Map::new(),
        context: Map::new(),
        zips: vec![],
        limits: BootstrapLimits {
            unzip_bytes: 1 << 20,
            unzip_entries: 100,
            payload_items: 100,
        },
        archive_bytes: 0,
        aws: None,
    };
    encode_request(
        header,
        &[("customer_script.py".into(), SCRIPT.as_bytes().to_vec())],
    )
    .expect("request")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let settings = Settings::default();
    let catalog = Catalog::builtin();
    let image = catalog
        .resolve(RUNTIME)
        .expect("runtime")
        .runtime
        .image
        .clone();
    let engine = Engine::connect(settings.sandbox.clone()).await?;
    let inputs = StepInputs {
        runtime: Some(RUNTIME.into()),
        handler: Some("handler".into()),
        script: Some(Value::String(SCRIPT.into())),
        input_payload: Some(json!({})),
        ..Default::default()
    };
    let step = step::validate(&inputs, &catalog, 600).map_err(|e| anyhow::anyhow!("{e}"))?;
    let exe = std::env::current_exe()?;
    let cli = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("scriptbox"))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("build the scriptbox binary first (cargo build --release)")
        })?;
    let script_file = std::env::temp_dir().join("scriptbox-bench-handler.py");
    std::fs::write(&script_file, SCRIPT)?;

    let pool = WarmPool::new(
        engine.clone(),
        PoolConfig::default(),
        &settings.context,
        Duration::from_secs(600),
    );
    // Warm the engine and page cache once for each path.
    let mut library = Vec::new();
    let mut warm = Vec::new();
    let mut through_cli = Vec::new();
    let mut docker_run = Vec::new();
    let run_args = docker_run_equivalent(
        &settings.sandbox,
        &image,
        &["python3".into(), "/opt/scriptbox/bootstrap.py".into()],
    );
    let stdin = request_bytes();
    for i in 0..=n {
        let began = Instant::now();
        let options = ExecuteOptions {
            execution_id: None,
            memory_bytes: None,
            context: &settings.context,
            limits: &settings.output,
            on_log: None,
            automation_execution_id: None,
            aws: None,
        };
        let r = execute_step(&engine, &step, options, &CancellationToken::new()).await?;
        anyhow::ensure!(
            r.payload == json!({"ok": true}),
            "library run failed: {r:?}"
        );
        let library_time = began.elapsed();

        // Warm: a pre-started container from the pool (refilled in the background meanwhile).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        let options = ExecuteOptions {
            execution_id: None,
            memory_bytes: None,
            context: &settings.context,
            limits: &settings.output,
            on_log: None,
            automation_execution_id: None,
            aws: None,
        };
        let (r, removal) = execute_step_pooled(
            &engine,
            Some(&pool),
            &step,
            options,
            &CancellationToken::new(),
        )
        .await?;
        let warm_time = began.elapsed();
        anyhow::ensure!(r.payload == json!({"ok": true}), "warm run failed: {r:?}");
        removal.finish().await?;

        let began = Instant::now();
        let out = Command::new(&cli)
            .args([
                "invoke",
                "--runtime",
                RUNTIME,
                "--handler",
                "handler",
                "--output",
                "json",
                "--script",
            ])
            .arg(&script_file)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "cli run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli_time = began.elapsed();

        let began = Instant::now();
        let mut child = Command::new("docker")
            .args(&run_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("stdin").write_all(&stdin)?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success() && out.stdout.windows(4).any(|w| w == b"true"),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docker_time = began.elapsed();
        if i > 0 {
            library.push(library_time);
            warm.push(warm_time);
            through_cli.push(cli_time);
            docker_run.push(docker_time);
        }
    }
    println!("Trivial {RUNTIME} handler, {n} runs each, interleaved; milliseconds.\n");
    println!("| path | runs | p50 | p95 | mean |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summarize(
            "scriptbox library, cold (create → result → removed)",
            library
        )
    );
    println!(
        "{}",
        summarize(
            "scriptbox library, warm pool (take → result; removal in background)",
            warm
        )
    );
    println!(
        "{}",
        summarize("`scriptbox invoke` CLI, whole process", through_cli)
    );
    println!(
        "{}",
        summarize(
            "`docker run --rm -i`, same image, flags and request",
            docker_run
        )
    );
    pool.shutdown(Duration::from_secs(30)).await;
    per_runtime(&engine, &settings, &catalog).await
}

/// One row per Python runtime whose image is current: cold p50 through the library next to
/// `docker run --rm -i` of the same image, and the image's size.
async fn per_runtime(
    engine: &Engine,
    settings: &Settings,
    catalog: &Catalog,
) -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_RUNTIME_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "\nEvery Python runtime: the same trivial handler, {n} runs each, interleaved; milliseconds.\n"
    );
    println!(
        "| runtime | CPython | source | image size (MB) | library cold p50 | `docker run --rm -i` p50 |"
    );
    println!("|---|---|---|---|---|---|");
    let stdin = request_bytes();
    for rt in catalog.runtimes() {
        if rt.language() != scriptbox::runtimes::Language::Python {
            continue;
        }
        let name = rt.runtime.name.clone();
        let state = scriptbox::images::image_state(engine, &rt).await?;
        if state != scriptbox::images::ImageState::Current {
            println!(
                "| {name} | SKIPPED: image {} (`scriptbox images build {name}`) | | | | |",
                state.as_str()
            );
            continue;
        }
        let facts = scriptbox::images::image_facts(engine, &rt)
            .await
            .unwrap_or_default();
        let inputs = StepInputs {
            runtime: Some(name.clone()),
            handler: Some("handler".into()),
            script: Some(Value::String(SCRIPT.into())),
            input_payload: Some(json!({})),
            ..Default::default()
        };
        let step = step::validate(&inputs, catalog, 600).map_err(|e| anyhow::anyhow!("{e}"))?;
        let run_args =
            docker_run_equivalent(&settings.sandbox, &rt.runtime.image, &rt.family.command);
        let (mut library, mut docker_run) = (Vec::new(), Vec::new());
        for i in 0..=n {
            let began = Instant::now();
            let options = ExecuteOptions {
                execution_id: None,
                memory_bytes: None,
                context: &settings.context,
                limits: &settings.output,
                on_log: None,
                automation_execution_id: None,
                aws: None,
            };
            let r = execute_step(engine, &step, options, &CancellationToken::new()).await?;
            anyhow::ensure!(
                r.payload == json!({"ok": true}),
                "{name}: library run failed: {r:?}"
            );
            let library_time = began.elapsed();
            let began = Instant::now();
            let mut child = Command::new("docker")
                .args(&run_args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child.stdin.take().expect("stdin").write_all(&stdin)?;
            let out = child.wait_with_output()?;
            anyhow::ensure!(
                out.status.success() && out.stdout.windows(4).any(|w| w == b"true"),
                "{name}: docker run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if i > 0 {
                library.push(library_time);
                docker_run.push(began.elapsed());
            }
        }
        library.sort();
        docker_run.sort();
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.0} |",
            facts.cpython_version.as_deref().unwrap_or("?"),
            facts.cpython_source.as_deref().unwrap_or("?"),
            facts
                .size_bytes
                .map(|b| (b / 1_000_000).to_string())
                .unwrap_or_else(|| "?".into()),
            percentile(&library, 0.5),
            percentile(&docker_run, 0.5),
        );
    }
    Ok(())
}
