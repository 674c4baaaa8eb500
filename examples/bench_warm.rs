//! Benchmark of the warm pool, in one run on one machine: latency of a trivial python3.11
//! handler end to end through the daemon's API and through the CLI, warm and cold, next to
//! `docker run --rm -i` of the same image with the same flags; throughput with 1, 2, 4 and 8
//! concurrent clients; the daemon's memory.
//!
//! Run with `make bench-warm` (release build). `BENCH_N` scales the sample sizes (default 200
//! warm API runs; the others are derived from it); `BENCH_LATENCY_ONLY=1` stops after the
//! latency table. Prints Markdown tables.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scriptbox::client::{Client, Endpoint};
use scriptbox::config::Settings;
use scriptbox::protocol::{
    BootstrapLimits, Entry, PROTOCOL_VERSION, RequestHeader, encode_request,
};
use scriptbox::sandbox::docker_run_equivalent;
use serde_json::{Map, json};

const SCRIPT: &str = "def h(events, context):\n    return {'ok': True}\n";

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Daemon {
    child: Child,
    client: Client,
    socket: std::path::PathBuf,
}

impl Daemon {
    fn start(bin: &str, dir: &Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("s.sock");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scriptbox serve");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready line");
        assert!(ready.contains("listening"), "{ready}");
        let client = Client::new(Endpoint::Unix(socket.clone()));
        Daemon {
            child,
            client,
            socket,
        }
    }

    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Submit, follow the log stream to its end event, read the execution: one end-to-end run.
async fn run_once(client: &Client) -> Result<Duration, String> {
    let began = Instant::now();
    let body = json!({"Step": {"Runtime": "python3.11", "Handler": "h", "Script": SCRIPT}});
    let accepted = client
        .post("/v1/executions", &body)
        .await
        .map_err(|e| e.to_string())?;
    if accepted.status != 202 {
        return Err(accepted.error_message());
    }
    let id = accepted.json()["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let submitted = began.elapsed();
    // The callback returns false at the `end` event, which closes the stream.
    client
        .events(
            &format!("/v1/executions/{id}/log?Follow=true"),
            |event, _| event != "end",
        )
        .await
        .map_err(|e| e.to_string())?;
    let ended = began.elapsed();
    let v = client
        .get(&format!("/v1/executions/{id}"))
        .await
        .map_err(|e| e.to_string())?
        .json();
    if std::env::var("BENCH_PHASES").is_ok() {
        eprintln!(
            "phases: submit {:?}, end event {:?}, get {:?}; run {}ms",
            submitted,
            ended,
            began.elapsed(),
            v["DurationMs"]
        );
    }
    if v["Status"] != "Success" || v["Payload"] != json!({"ok": true}) {
        return Err(format!("{v}"));
    }
    Ok(began.elapsed())
}

/// The `per_mille`th quantile of sorted samples (nearest rank), in milliseconds.
fn pct(sorted: &[Duration], per_mille: usize) -> f64 {
    let idx = ((sorted.len() - 1) * per_mille + 500) / 1000;
    sorted[idx].as_secs_f64() * 1000.0
}

/// A count as a float, for rates and sizes (counts here are far below 2^32).
fn float(n: impl TryInto<u32>) -> f64 {
    f64::from(n.try_into().unwrap_or(u32::MAX))
}

fn row(name: &str, mut samples: Vec<Duration>) -> (String, f64) {
    samples.sort();
    let p50 = pct(&samples, 500);
    (
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            p50,
            pct(&samples, 950),
            pct(&samples, 990)
        ),
        p50,
    )
}

fn docker_run_once(args: &[String]) -> Duration {
    let header = RequestHeader {
        v: PROTOCOL_VERSION,
        task_dir: format!("/tmp/{}-2026-01-01-00-00-00", uuid::Uuid::new_v4()),
        language: "python",
        entry: Some(Entry {
            module: "customer_script".into(),
            function: "h".into(),
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
    let stdin = encode_request(header, &[("customer_script.py".into(), SCRIPT.into())]).unwrap();
    let began = Instant::now();
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker run");
    child.stdin.take().unwrap().write_all(&stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stdout.windows(4).any(|w| w == b"true"));
    began.elapsed()
}

fn cli_once(bin: &str, args: &[&str], script: &Path) -> Duration {
    let began = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .arg("--script")
        .arg(script)
        .output()
        .expect("scriptbox");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    began.elapsed()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bin = std::env::var("SCRIPTBOX_BIN").unwrap_or_else(|_| "target/release/scriptbox".into());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("h.py");
    std::fs::write(&script, SCRIPT).unwrap();

    // Warm daemon: the defaults (pool on, size 2; concurrency 2 × cores).
    let warm_dir = dir.path().join("warm");
    let warm = Daemon::start(&bin, &warm_dir, &[]);
    let pid = warm.child.id();
    for _ in 0..5 {
        run_once(&warm.client).await.expect("warm-up");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid, "VmRSS:");

    // Latency, one client, interleaved paths so load drifts hit all alike.
    let cold_dir = dir.path().join("cold");
    let cold = Daemon::start(&bin, &cold_dir, &["--set", "pool.size=0"]);
    run_once(&cold.client).await.expect("cold warm-up");
    let socket_arg = warm.socket.display().to_string();
    let image = "scriptbox-runtime:python3.11";
    let run_args = docker_run_equivalent(
        &Settings::default().sandbox,
        image,
        &["python3".into(), "/opt/scriptbox/bootstrap.py".into()],
    );
    let (mut api_warm, mut api_cold, mut cli_warm, mut cli_cold, mut docker) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let slow_n = (n / 5).max(10);
    // Warm paths: one execution at a time, with a pause long enough for the pool to refill (a
    // container start under this load), so each run finds a pre-started container.
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(600)).await;
        api_warm.push(run_once(&warm.client).await.expect("warm run"));
        if i < slow_n {
            tokio::time::sleep(Duration::from_millis(600)).await;
            cli_warm.push(cli_once(
                &bin,
                &[
                    "submit",
                    "--socket",
                    &socket_arg,
                    "--wait",
                    "--output",
                    "json",
                    "--runtime",
                    "python3.11",
                    "--handler",
                    "h",
                ],
                &script,
            ));
        }
    }
    // Cold paths, interleaved so that load drifts hit them alike.
    for _ in 0..slow_n {
        api_cold.push(run_once(&cold.client).await.expect("cold run"));
        cli_cold.push(cli_once(
            &bin,
            &[
                "invoke",
                "--output",
                "json",
                "--runtime",
                "python3.11",
                "--handler",
                "h",
            ],
            &script,
        ));
        docker.push(docker_run_once(&run_args));
    }
    cold.stop();
    let (docker_row, docker_p50) = row(
        "`docker run --rm -i`, same image, flags and request",
        docker,
    );
    let (warm_row, warm_p50) = row("daemon API, warm (submit → log stream end → get)", api_warm);
    println!("Latency of a trivial python3.11 handler, one client; milliseconds.\n");
    println!("| path | runs | p50 | p95 | p99 |");
    println!("|---|---|---|---|---|");
    println!("{warm_row}");
    println!("{}", row("daemon API, cold (pool off)", api_cold).0);
    let (cli_warm_row, cli_warm_p50) = row(
        "CLI `scriptbox submit --wait`, warm (whole process)",
        cli_warm,
    );
    println!("{cli_warm_row}");
    println!(
        "{}",
        row("CLI `scriptbox invoke`, cold (whole process)", cli_cold).0
    );
    println!("{docker_row}");
    println!(
        "\nwarm API p50 / docker run p50 = {:.3} (target ≤ 0.1)",
        warm_p50 / docker_p50
    );
    println!(
        "CLI warm p50 / docker run p50 = {:.3} (target ≤ 0.1)\n",
        cli_warm_p50 / docker_p50
    );
    if std::env::var("BENCH_LATENCY_ONLY").is_ok() {
        // A short run: the latency table only.
        warm.stop();
        return;
    }

    // Throughput: k clients, each submitting and waiting in a loop.
    let peak = Arc::new(AtomicU64::new(idle));
    println!("| clients | executions | failures | seconds | executions/s |");
    println!("|---|---|---|---|---|");
    for clients in [1usize, 2, 4, 8] {
        let total = if clients == 4 { 1000 } else { 200 };
        let next = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let began = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (c, next, failures, peak) = (
                warm.client.clone(),
                next.clone(),
                failures.clone(),
                peak.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    if let Err(e) = run_once(&c).await {
                        eprintln!("failure: {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    peak.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "| {clients} | {total} | {} | {secs:.1} | {:.1} |",
            failures.load(Ordering::SeqCst),
            float(total) / secs
        );
    }
    // Reference: how many container lifecycles Docker itself completes here, 4 at a time.
    let lifecycles = 40;
    let began = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let args = run_args.clone();
            std::thread::spawn(move || {
                for _ in (k..lifecycles).step_by(4) {
                    docker_run_once(&args);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "| reference: `docker run --rm -i`, 4 at a time | {lifecycles} | 0 | {secs:.1} | {:.1} |",
        float(lifecycles) / secs
    );
    let hwm = rss_kib(pid, "VmHWM:");
    warm.stop();
    println!(
        "\ndaemon RSS: idle {:.1} MiB, peak sampled under load {:.1} MiB (VmHWM {:.1} MiB)",
        float(idle) / 1024.0,
        float(peak.load(Ordering::SeqCst)) / 1024.0,
        float(hwm) / 1024.0
    );
}
