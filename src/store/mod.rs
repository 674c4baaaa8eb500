//! Durable execution records: the store's seam ([`ExecutionStore`]) and its SQLite
//! implementation ([`SqliteStore`], `<data_dir>/scriptbox.db`), the one owner of the database.
//!
//! - WAL journal with `synchronous=FULL`: a write the store acknowledged survives a crash of the
//!   process or of the machine.
//! - Every table, the SSM documents' too, comes from one list of migrations ([`migrations`]),
//!   applied by `PRAGMA user_version`.
//! - A running execution carries its owner's lease (`claim`, `heartbeat`) and a stored cancel
//!   request, so its state is in the store, not in one daemon's memory.

pub mod api;
pub mod migrations;
pub mod sqlite;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use api::{CancelRequest, ExecutionStore, ListFilter};
pub use sqlite::{DocumentsDb, SqliteStore};

/// The store the daemon opens (SQLite).
pub type Store = SqliteStore;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread is gone (the store was closed).
    #[error("database writer stopped")]
    Closed,
    /// A write failed inside a group commit.
    #[error("database write failed: {0}")]
    Write(String),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An execution's status. `Queued` and `Running` are the daemon's; the rest are a step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecStatus {
    /// Accepted, waiting for a container permit.
    Queued,
    /// Holding a permit.
    Running,
    /// Ended well.
    Success,
    /// Ended badly (including "scriptbox restarted while this execution was running").
    Failed,
    /// A step's timeout passed.
    TimedOut,
    /// Cancelled (by a client, or by a shutdown past its grace period).
    Cancelled,
}

impl ExecStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExecStatus; 6] = [
        ExecStatus::Queued,
        ExecStatus::Running,
        ExecStatus::Success,
        ExecStatus::Failed,
        ExecStatus::TimedOut,
        ExecStatus::Cancelled,
    ];

    /// The spelling in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "Queued",
            ExecStatus::Running => "Running",
            ExecStatus::Success => "Success",
            ExecStatus::Failed => "Failed",
            ExecStatus::TimedOut => "TimedOut",
            ExecStatus::Cancelled => "Cancelled",
        }
    }

    /// Parses the spelling.
    pub fn parse(s: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True once the execution can no longer change.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::Running)
    }
}

impl From<crate::result::StepStatus> for ExecStatus {
    fn from(s: crate::result::StepStatus) -> Self {
        use crate::result::StepStatus as S;
        match s {
            S::Success => ExecStatus::Success,
            S::Failed => ExecStatus::Failed,
            S::TimedOut => ExecStatus::TimedOut,
            S::Cancelled => ExecStatus::Cancelled,
        }
    }
}

/// What was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecKind {
    /// One executeScript step.
    Step,
    /// A whole runbook.
    Runbook,
}

impl ExecKind {
    /// The spelling in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecKind::Step => "Step",
            ExecKind::Runbook => "Runbook",
        }
    }
}

/// One execution as stored.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    /// Submission order (the paging cursor).
    pub seq: i64,
    /// The id.
    pub id: String,
    /// Step or runbook.
    pub kind: ExecKind,
    /// The status.
    pub status: ExecStatus,
    /// The step's runtime (steps only).
    pub runtime: Option<String>,
    /// The document's name (runbooks only).
    pub document_name: Option<String>,
    /// The submitted request, JSON (re-read to run a queued execution after a restart).
    pub request: String,
    /// The final object (`invoke` / `run` JSON), once finished.
    pub result: Option<String>,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
    /// RFC 3339 times.
    pub submitted_at: String,
    /// When it got a permit.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// When a cancel was requested while it was running (SSM shows it `Cancelling`).
    pub cancel_requested_at: Option<String>,
}

/// A new execution.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// The id.
    pub id: String,
    /// Step or runbook.
    pub kind: ExecKind,
    /// The step's runtime.
    pub runtime: Option<String>,
    /// The document's name.
    pub document_name: Option<String>,
    /// The request JSON.
    pub request: String,
    /// Submission time.
    pub submitted_at: String,
}

/// One stored log line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogRow {
    /// Increasing within an execution (not contiguous).
    pub seq: i64,
    /// The runbook step the line belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// stdout, stderr or scriptbox.
    pub stream: String,
    /// The text.
    pub text: String,
}

/// The end of an execution.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The id.
    pub id: String,
    /// Its final status.
    pub status: ExecStatus,
    /// The final object, JSON.
    pub result: String,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
    /// End time.
    pub ended_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::LogStream;
    use std::time::Duration;

    fn filter(status: Option<ExecStatus>, limit: usize, before: Option<i64>) -> ListFilter {
        ListFilter {
            status,
            before,
            limit,
        }
    }

    fn new(id: &str) -> NewExecution {
        NewExecution {
            id: id.into(),
            kind: ExecKind::Step,
            runtime: Some("python3.11".into()),
            document_name: None,
            request: "{}".into(),
            submitted_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert(new("a")).await.unwrap();
            store.insert(new("b")).await.unwrap();
            assert!(
                store.insert(new("a")).await.is_err(),
                "duplicate id refused"
            );
            assert!(
                store
                    .claim("a", "me", Duration::from_secs(30))
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .claim("a", "me", Duration::from_secs(30))
                    .await
                    .unwrap(),
                "claimed once"
            );
            store.append_log("a", None, LogStream::Stdout, "hello");
            store.append_log("a", Some("s1"), LogStream::Stderr, "oops");
            store
                .finish(Finish {
                    id: "a".into(),
                    status: ExecStatus::Success,
                    result: "{\"x\":1}".into(),
                    failure_message: None,
                    ended_at: "t2".into(),
                })
                .await
                .unwrap();
            let cancelled = Finish {
                id: "a".into(),
                status: ExecStatus::Cancelled,
                result: "{}".into(),
                failure_message: None,
                ended_at: "t3".into(),
            };
            assert!(!store.cancel_queued(cancelled).await.unwrap());
            store.close();
        }
        let store = Store::open(dir.path()).unwrap();
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!(a.status, ExecStatus::Success);
        assert_eq!(a.result.as_deref(), Some("{\"x\":1}"));
        assert!(a.started_at.is_some());
        let logs = store.logs("a", 0, 100).await.unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1].step.as_deref(), Some("s1"));
        assert_eq!(store.logs("a", logs[0].seq, 100).await.unwrap().len(), 1);
        let queued = store.with_status(ExecStatus::Queued).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, "b");
        let page = store.list(filter(None, 1, None)).await.unwrap();
        assert_eq!(page[0].id, "b");
        let next = store
            .list(filter(None, 1, Some(page[0].seq)))
            .await
            .unwrap();
        assert_eq!(next[0].id, "a");
        let only = store
            .list(filter(Some(ExecStatus::Success), 10, None))
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
    }

    /// The store hands out the oldest queued execution once, keeps its owner's lease, and keeps
    /// a cancel request across reopening (SSM's `Cancelling` is stored, not in memory).
    #[tokio::test]
    async fn claims_leases_and_cancel_requests_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(30);
        {
            let store = Store::open(dir.path()).unwrap();
            for id in ["q1", "q2", "q3"] {
                store.insert(new(id)).await.unwrap();
            }
            let first = store.claim_next("me", lease).await.unwrap().unwrap();
            assert_eq!(first.id, "q1");
            assert_eq!(first.status, ExecStatus::Running);
            assert_eq!(
                store.claim_next("other", lease).await.unwrap().unwrap().id,
                "q2"
            );
            assert!(store.heartbeat("q1", "me", lease).await.unwrap());
            assert!(
                !store.heartbeat("q1", "other", lease).await.unwrap(),
                "only the owner extends its lease"
            );
            assert_eq!(
                store.request_cancel("q3", "t".into()).await.unwrap(),
                CancelRequest::Queued
            );
            assert_eq!(
                store.request_cancel("q1", "t5".into()).await.unwrap(),
                CancelRequest::Requested
            );
            assert_eq!(
                store.request_cancel("nope", "t".into()).await.unwrap(),
                CancelRequest::NotFound
            );
            store.close();
        }
        let store = Store::open(dir.path()).unwrap();
        let q1 = store.get("q1").await.unwrap().unwrap();
        assert_eq!(q1.cancel_requested_at.as_deref(), Some("t5"));
        assert!(
            store
                .get("q2")
                .await
                .unwrap()
                .unwrap()
                .cancel_requested_at
                .is_none()
        );
        assert_eq!(
            store.claim_next("me", lease).await.unwrap().unwrap().id,
            "q3"
        );
        assert!(store.claim_next("me", lease).await.unwrap().is_none());
        store
            .finish(Finish {
                id: "q1".into(),
                status: ExecStatus::Cancelled,
                result: "{}".into(),
                failure_message: None,
                ended_at: "t6".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            store.request_cancel("q1", "t7".into()).await.unwrap(),
            CancelRequest::AlreadyFinished(ExecStatus::Cancelled)
        );
    }
}
