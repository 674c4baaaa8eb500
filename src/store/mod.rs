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

pub use crate::record::{
    ExecKind, ExecStatus, ExecutionRecord, ExitFact, LogRow, Outcome, StepExecution, Timestamp,
};

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
    pub submitted: Timestamp,
    /// The execution that started it (a child runbook's parent).
    pub parent_id: Option<String>,
}

/// The end of an execution.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The id.
    pub id: String,
    /// Its final status.
    pub status: ExecStatus,
    /// What it produced.
    pub outcome: Outcome,
    /// Why it did not succeed.
    pub failure_message: Option<String>,
    /// End time.
    pub ended: Timestamp,
    /// Docker's exit facts: `Pending` when they come later ([`ExecutionStore::record_exit`]).
    pub exit: ExitFact,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::LogStream;
    use std::time::Duration;

    fn at(t: &str) -> Timestamp {
        Timestamp::parse(t).unwrap()
    }

    fn outcome() -> Outcome {
        Outcome::Runbook(Box::new(crate::record::RunbookOutcome {
            automation_execution_id: "a".into(),
            automation_execution_status: "Success".into(),
            ..Default::default()
        }))
    }

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
            submitted: at("2026-01-01T00:00:00.000Z"),
            parent_id: None,
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
                    outcome: outcome(),
                    failure_message: None,
                    ended: at("2026-01-01T00:00:02.000Z"),
                    exit: ExitFact::NotApplicable,
                })
                .await
                .unwrap();
            let cancelled = Finish {
                id: "a".into(),
                status: ExecStatus::Cancelled,
                outcome: Outcome::Pending,
                failure_message: None,
                ended: at("2026-01-01T00:00:03.000Z"),
                exit: ExitFact::NotApplicable,
            };
            assert!(!store.cancel_queued(cancelled).await.unwrap());
            store.close();
        }
        let store = Store::open(dir.path()).unwrap();
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!(a.status, ExecStatus::Success);
        assert_eq!(a.outcome, outcome());
        assert_eq!(a.ended, Some(at("2026-01-01T00:00:02.000Z")));
        assert!(a.started.is_some());
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
                store
                    .request_cancel("q3", at("2026-01-01T00:00:04.000Z"))
                    .await
                    .unwrap(),
                CancelRequest::Queued
            );
            assert_eq!(
                store
                    .request_cancel("q1", at("2026-01-01T00:00:05.000Z"))
                    .await
                    .unwrap(),
                CancelRequest::Requested
            );
            assert_eq!(
                store
                    .request_cancel("nope", at("2026-01-01T00:00:04.000Z"))
                    .await
                    .unwrap(),
                CancelRequest::NotFound
            );
            store.close();
        }
        let store = Store::open(dir.path()).unwrap();
        let q1 = store.get("q1").await.unwrap().unwrap();
        assert_eq!(q1.cancel_requested, Some(at("2026-01-01T00:00:05.000Z")));
        assert!(
            store
                .get("q2")
                .await
                .unwrap()
                .unwrap()
                .cancel_requested
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
                outcome: Outcome::Pending,
                failure_message: None,
                ended: at("2026-01-01T00:00:06.000Z"),
                exit: ExitFact::NotApplicable,
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .request_cancel("q1", at("2026-01-01T00:00:07.000Z"))
                .await
                .unwrap(),
            CancelRequest::AlreadyFinished(ExecStatus::Cancelled)
        );
    }
}
