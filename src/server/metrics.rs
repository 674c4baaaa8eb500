//! Prometheus metrics, written by hand in the text exposition format (version 0.0.4): a few
//! counters and gauges do not need a metrics library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds of the duration histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The daemon's metrics.
#[derive(Default)]
pub struct Metrics {
    executions: Mutex<BTreeMap<(String, String), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    /// Executions accepted and waiting for a container permit.
    pub queue_depth: AtomicI64,
    /// Executions holding a container permit: a container exists only while one is held.
    pub containers_alive: AtomicI64,
    /// The most containers alive at once since start.
    pub containers_peak: AtomicI64,
    /// Submissions refused with 429.
    pub refused: AtomicU64,
    /// Submissions accepted.
    pub accepted: AtomicU64,
}

impl Metrics {
    /// Counts a finished execution and its duration (permit to end).
    pub fn finished(&self, status: &str, runtime: &str, seconds: f64) {
        *self
            .executions
            .lock()
            .expect("metrics lock")
            .entry((status.to_string(), runtime.to_string()))
            .or_default() += 1;
        let mut d = self.durations.lock().expect("metrics lock");
        let h = d.entry(runtime.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A container permit was taken.
    pub fn container_started(&self) {
        let now = self.containers_alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.containers_peak.fetch_max(now, Ordering::SeqCst);
    }

    /// A container permit was released (after the container was removed).
    pub fn container_removed(&self) {
        self.containers_alive.fetch_sub(1, Ordering::SeqCst);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP scriptbox_executions_total Executions finished, by final status and runtime (\"runbook\" for runbooks)."
        );
        let _ = writeln!(out, "# TYPE scriptbox_executions_total counter");
        for ((status, runtime), n) in self.executions.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "scriptbox_executions_total{{status=\"{}\",runtime=\"{}\"}} {n}",
                escape(status),
                escape(runtime)
            );
        }
        let _ = writeln!(
            out,
            "# HELP scriptbox_execution_duration_seconds Time from getting a container permit to the end, by runtime."
        );
        let _ = writeln!(out, "# TYPE scriptbox_execution_duration_seconds histogram");
        for (runtime, h) in self.durations.lock().expect("metrics lock").iter() {
            let rt = escape(runtime);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "scriptbox_execution_duration_seconds_bucket{{runtime=\"{rt}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "scriptbox_execution_duration_seconds_bucket{{runtime=\"{rt}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "scriptbox_execution_duration_seconds_sum{{runtime=\"{rt}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "scriptbox_execution_duration_seconds_count{{runtime=\"{rt}\"}} {}",
                h.count
            );
        }
        let gauges = [
            (
                "scriptbox_queue_depth",
                "Executions accepted and waiting for a container.",
                self.queue_depth.load(Ordering::SeqCst),
            ),
            (
                "scriptbox_containers_alive",
                "Executions holding a container permit (a permit is released only after its container is removed).",
                self.containers_alive.load(Ordering::SeqCst),
            ),
            (
                "scriptbox_containers_alive_peak",
                "The most containers alive at once since the daemon started.",
                self.containers_peak.load(Ordering::SeqCst),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        let counters = [
            (
                "scriptbox_submissions_accepted_total",
                "Submissions accepted (stored and queued).",
                self.accepted.load(Ordering::SeqCst),
            ),
            (
                "scriptbox_submissions_refused_total",
                "Submissions refused with 429 because the queue was full.",
                self.refused.load(Ordering::SeqCst),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::default();
        m.container_started();
        m.container_started();
        m.container_removed();
        m.finished("Success", "python3.11", 0.3);
        let text = m.render();
        assert!(
            text.contains(
                "scriptbox_executions_total{status=\"Success\",runtime=\"python3.11\"} 1"
            )
        );
        assert!(text.contains(
            "scriptbox_execution_duration_seconds_bucket{runtime=\"python3.11\",le=\"0.5\"} 1"
        ));
        assert!(text.contains(
            "scriptbox_execution_duration_seconds_bucket{runtime=\"python3.11\",le=\"0.25\"} 0"
        ));
        assert!(text.contains("scriptbox_containers_alive 1"));
        assert!(text.contains("scriptbox_containers_alive_peak 2"));
        assert!(text.contains("scriptbox_queue_depth 0"));
    }
}
