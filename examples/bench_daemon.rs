//! Benchmark of `scriptbox serve`: its memory idle and during a burst of 200 submissions, and
//! how many submissions per second it accepts (each one stored durably before its answer).
//!
//! Run with `make bench-daemon` (release build). It starts `target/release/scriptbox serve`
//! (or `SCRIPTBOX_BIN`) on a temporary socket and data directory with concurrency 2 and a queue
//! long enough for the whole burst, fires 200 concurrent submissions of a trivial python3.11
//! step over the Unix socket, waits until all ran, and prints a Markdown table.
//! `BENCH_N` changes the burst size.

// Benchmark statistics: sample counts, sizes and indexes become floating point and back, well
// inside f64's exact range; not code a request can reach.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scriptbox::client::{Client, Endpoint};
use serde_json::json;

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bin = std::env::var("SCRIPTBOX_BIN").unwrap_or_else(|_| "target/release/scriptbox".into());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut child = Command::new(&bin)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--concurrency",
            "2",
            "--queue-length",
            &(2 * n + 10).to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start scriptbox serve");
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("listening"), "{ready}");
    let pid = child.id();
    let client = Client::new(Endpoint::Unix(socket));
    // Warm up: one execution, so the first burst does not pay for lazy initialisation.
    let warm = json!({"Step": {"Runtime": "python3.11", "Handler": "h",
        "Script": "def h(e, c):\n    return {'ok': True}\n"}});
    let id = client.post("/v1/executions", &warm).await.unwrap().json()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    loop {
        let v = client
            .get(&format!("/v1/executions/{id}"))
            .await
            .unwrap()
            .json();
        if v["Status"] == "Success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid, "VmRSS:");

    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"Step": {"Runtime": "python3.11", "Handler": "h",
                "Script": "def h(e, c):\n    return e\n", "InputPayload": {"i": i}}});
            c.post("/v1/executions", &body).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 202, "{}", a.error_message());
        ids.push(a.json()["Id"].as_str().unwrap().to_string());
    }
    let accept_time = began.elapsed();
    let after_accept = rss_kib(pid, "VmRSS:");
    for id in &ids {
        loop {
            let v = client
                .get(&format!("/v1/executions/{id}"))
                .await
                .unwrap()
                .json();
            if v["Status"] == "Success" {
                break;
            }
            assert!(v["Status"] == "Queued" || v["Status"] == "Running", "{v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let all_time = began.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let hwm = rss_kib(pid, "VmHWM:");

    // One at a time: each submission waits for its own durable commit (no grouping).
    let seq_began = Instant::now();
    let mut seq_ids = Vec::new();
    for i in 0..n {
        let body = json!({"Step": {"Runtime": "python3.11", "Handler": "h",
            "Script": "def h(e, c):\n    return e\n", "InputPayload": {"i": i}}});
        let a = client.post("/v1/executions", &body).await.unwrap();
        assert_eq!(a.status, 202, "{}", a.error_message());
        seq_ids.push(a.json()["Id"].as_str().unwrap().to_string());
    }
    let seq_time = seq_began.elapsed();
    for id in &seq_ids {
        let _ = client
            .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
            .await;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let mib = |k: u64| k as f64 / 1024.0;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| RSS idle (after one execution) | {:.1} MiB |", mib(idle));
    println!(
        "| RSS right after {n} submissions were accepted | {:.1} MiB |",
        mib(after_accept)
    );
    println!(
        "| RSS peak during the burst and its execution (sampled every 10 ms) | {:.1} MiB |",
        mib(peak.load(Ordering::SeqCst))
    );
    println!(
        "| VmHWM (kernel's peak RSS) at the end | {:.1} MiB |",
        mib(hwm)
    );
    println!(
        "| {n} concurrent submissions accepted (stored with fsync) in | {:.0} ms = {:.0} submissions/s |",
        accept_time.as_secs_f64() * 1000.0,
        n as f64 / accept_time.as_secs_f64()
    );
    println!(
        "| {n} submissions one after another (each waits for its answer) in | {:.0} ms = {:.0} submissions/s |",
        seq_time.as_secs_f64() * 1000.0,
        n as f64 / seq_time.as_secs_f64()
    );
    println!(
        "| all {n} executed (concurrency 2) in | {:.1} s = {:.1} executions/s |",
        all_time.as_secs_f64(),
        n as f64 / all_time.as_secs_f64()
    );
}
