//! Durable execution records in an embedded SQLite database (`<data_dir>/scriptbox.db`).
//!
//! - WAL journal with `synchronous=FULL`: a write the store acknowledged survives a crash of the
//!   process or of the machine.
//! - One writer thread owns the writing connection and commits in groups: every operation that
//!   arrived while the previous commit was in flight goes into the next transaction, so a burst
//!   of submissions costs a few fsyncs, not one each. Operations that must be durable before the
//!   caller answers (a submission, an execution's end) carry a reply sent after the commit.
//! - Reads use a second connection (WAL readers never block the writer) on `spawn_blocking`.
//! - Schema migrations by `PRAGMA user_version`.
//! - After each commit a counter is bumped on a `watch` channel: log followers wake and read
//!   what was committed, so a follower never sees a line that could still be lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

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
    fn as_str(self) -> &'static str {
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

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Op {
    Insert(NewExecution, Reply<()>),
    Start {
        id: String,
        at: String,
        reply: Reply<()>,
    },
    Log {
        id: String,
        step: Option<String>,
        stream: &'static str,
        text: String,
    },
    Step {
        id: String,
        index: i64,
        name: String,
        status: String,
        record: String,
    },
    Finish(Finish, Option<Reply<()>>),
    /// Cancelled while queued: only if still `Queued`; replies whether it was.
    CancelQueued(Finish, Reply<bool>),
    Flush(Reply<()>),
}

/// The store: a writer thread and a reading connection.
pub struct Store {
    path: PathBuf,
    tx: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
    reader: Arc<Mutex<Connection>>,
    committed: watch::Receiver<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const MIGRATIONS: &[&str] = &[
    // 1: executions, step records, log lines.
    "CREATE TABLE executions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        runtime TEXT,
        document_name TEXT,
        request TEXT NOT NULL,
        result TEXT,
        failure_message TEXT,
        submitted_at TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT
    );
    CREATE INDEX executions_status ON executions(status, seq);
    CREATE TABLE steps (
        execution_id TEXT NOT NULL REFERENCES executions(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (execution_id, idx)
    );
    CREATE TABLE log_lines (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL,
        step TEXT,
        stream TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX log_lines_execution ON log_lines(execution_id, seq);",
];

fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

const ROW_COLUMNS: &str = "seq, id, kind, status, runtime, document_name, request, result, failure_message, submitted_at, started_at, ended_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    let kind: String = r.get(2)?;
    let status: String = r.get(3)?;
    Ok(ExecutionRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: if kind == "Runbook" {
            ExecKind::Runbook
        } else {
            ExecKind::Step
        },
        status: ExecStatus::parse(&status).unwrap_or(ExecStatus::Failed),
        runtime: r.get(4)?,
        document_name: r.get(5)?,
        request: r.get(6)?,
        result: r.get(7)?,
        failure_message: r.get(8)?,
        submitted_at: r.get(9)?,
        started_at: r.get(10)?,
        ended_at: r.get(11)?,
    })
}

impl Store {
    /// Opens (creating) `<dir>/scriptbox.db`, migrates it and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("scriptbox.db");
        let mut writer = open_connection(&path)?;
        migrate(&mut writer)?;
        let reader = open_connection(&path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Op>();
        let (commit_tx, committed) = watch::channel(0u64);
        let handle = std::thread::Builder::new()
            .name("scriptbox-db-writer".into())
            .spawn(move || writer_loop(writer, rx, commit_tx))
            .map_err(|source| StoreError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Store {
            path,
            tx: Mutex::new(Some(tx)),
            reader: Arc::new(Mutex::new(reader)),
            committed,
            writer: Mutex::new(Some(handle)),
        })
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let guard = self.tx.lock().expect("store sender lock");
        match guard.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    async fn acked<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Write)
    }

    /// Stores a new `Queued` execution; returns once it is durable.
    pub async fn insert(&self, new: NewExecution) -> Result<(), StoreError> {
        self.acked(|r| Op::Insert(new, r)).await
    }

    /// Marks an execution `Running`; returns once it is durable.
    pub async fn start(&self, id: &str, at: String) -> Result<(), StoreError> {
        self.acked(|reply| Op::Start {
            id: id.to_string(),
            at,
            reply,
        })
        .await
    }

    /// Appends a log line (committed with the next group).
    pub fn log(&self, id: &str, step: Option<&str>, stream: crate::result::LogStream, text: &str) {
        use crate::result::LogStream as L;
        let stream = match stream {
            L::Stdout => "stdout",
            L::Stderr => "stderr",
            L::Scriptbox => "scriptbox",
        };
        let _ = self.send(Op::Log {
            id: id.to_string(),
            step: step.map(str::to_string),
            stream,
            text: text.to_string(),
        });
    }

    /// Records (or replaces) a runbook step's record (committed with the next group).
    pub fn step(&self, id: &str, index: i64, name: &str, status: &str, record: String) {
        let _ = self.send(Op::Step {
            id: id.to_string(),
            index,
            name: name.to_string(),
            status: status.to_string(),
            record,
        });
    }

    /// Records the end of an execution; returns once it is durable.
    pub async fn finish(&self, finish: Finish) -> Result<(), StoreError> {
        self.acked(|r| Op::Finish(finish, Some(r))).await
    }

    /// Records the end of a queued execution, only if it is still queued.
    pub async fn cancel_queued(&self, finish: Finish) -> Result<bool, StoreError> {
        self.acked(|r| Op::CancelQueued(finish, r)).await
    }

    /// Waits until everything sent so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.acked(Op::Flush).await
    }

    /// A receiver that changes after every commit.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Write(e.to_string()))?
        .map_err(StoreError::from)
    }

    /// One execution.
    pub async fn get(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {ROW_COLUMNS} FROM executions WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
        })
        .await
    }

    /// Executions, newest first: at most `limit`, older than the cursor `before` (a `seq`).
    pub async fn list(
        &self,
        status: Option<ExecStatus>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<ExecutionRow>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM executions
                 WHERE (?1 IS NULL OR status = ?1) AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![
                    status.map(ExecStatus::as_str),
                    before.unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                row,
            )?;
            rows.collect()
        })
        .await
    }

    /// Executions with a status, oldest first (recovery).
    pub async fn with_status(&self, status: ExecStatus) -> Result<Vec<ExecutionRow>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM executions WHERE status = ?1 ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![status.as_str()], row)?;
            rows.collect()
        })
        .await
    }

    /// Count of executions per status.
    pub async fn counts(&self) -> Result<Vec<(ExecStatus, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT status, COUNT(*) FROM executions GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for r in rows {
                let (s, n) = r?;
                if let Some(s) = ExecStatus::parse(&s) {
                    out.push((s, n));
                }
            }
            Ok(out)
        })
        .await
    }

    /// A runbook execution's step records so far, in order (JSON texts).
    pub async fn steps(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT record FROM steps WHERE execution_id = ?1 ORDER BY idx")?;
            let rows = stmt.query_map(params![id], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    /// Log lines after `after` (a seq), at most `limit`.
    pub async fn logs(
        &self,
        id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LogRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, step, stream, text FROM log_lines
                 WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![id, after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(LogRow {
                        seq: r.get(0)?,
                        step: r.get(1)?,
                        stream: r.get(2)?,
                        text: r.get(3)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    /// Stops the writer after it committed everything sent so far.
    pub fn close(&self) {
        self.tx.lock().expect("store sender lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The largest group of operations committed in one transaction.
const MAX_GROUP: usize = 2000;

fn writer_loop(
    mut conn: Connection,
    rx: std::sync::mpsc::Receiver<Op>,
    committed: watch::Sender<u64>,
) {
    let mut commits = 0u64;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut outcomes: Vec<Result<bool, String>> = Vec::with_capacity(group.len());
        let result = (|| -> rusqlite::Result<()> {
            // IMMEDIATE: the write lock is taken (waiting under the busy timeout) before any
            // read, so a write by the SSM documents' connection meanwhile cannot make the
            // group's first write fail with SQLITE_BUSY (a deferred read-then-write does).
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for op in &group {
                // One operation's failure (a duplicate id...) fails that operation only.
                tx.execute_batch("SAVEPOINT op")?;
                match apply(&tx, op) {
                    Ok(v) => {
                        tx.execute_batch("RELEASE op")?;
                        outcomes.push(Ok(v));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                        outcomes.push(Err(e.to_string()));
                    }
                }
            }
            tx.commit()
        })();
        if let Err(e) = &result {
            tracing::error!("database commit failed: {e}");
        }
        for (op, outcome) in group.into_iter().zip(
            outcomes
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        ) {
            let outcome = match (&result, outcome) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(()), Some(o)) => o,
                (Ok(()), None) => Err("not applied".into()),
            };
            match op {
                Op::Insert(_, r) | Op::Start { reply: r, .. } | Op::Flush(r) => {
                    let _ = r.send(outcome.map(|_| ()));
                }
                Op::Finish(_, Some(r)) => {
                    let _ = r.send(outcome.map(|_| ()));
                }
                Op::CancelQueued(_, r) => {
                    let _ = r.send(outcome);
                }
                Op::Finish(_, None) | Op::Log { .. } | Op::Step { .. } => {}
            }
        }
        commits += 1;
        committed.send_replace(commits);
    }
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &Op) -> rusqlite::Result<bool> {
    match op {
        Op::Insert(n, _) => {
            tx.execute(
                "INSERT INTO executions (id, kind, status, runtime, document_name, request, submitted_at)
                 VALUES (?1, ?2, 'Queued', ?3, ?4, ?5, ?6)",
                params![
                    n.id,
                    n.kind.as_str(),
                    n.runtime,
                    n.document_name,
                    n.request,
                    n.submitted_at
                ],
            )?;
        }
        Op::Start { id, at, .. } => {
            tx.execute(
                "UPDATE executions SET status = 'Running', started_at = ?2 WHERE id = ?1 AND status = 'Queued'",
                params![id, at],
            )?;
        }
        Op::Log {
            id,
            step,
            stream,
            text,
        } => {
            tx.execute(
                "INSERT INTO log_lines (execution_id, step, stream, text) VALUES (?1, ?2, ?3, ?4)",
                params![id, step, stream, text],
            )?;
        }
        Op::Step {
            id,
            index,
            name,
            status,
            record,
        } => {
            tx.execute(
                "INSERT INTO steps (execution_id, idx, name, status, record) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (execution_id, idx) DO UPDATE SET name = ?3, status = ?4, record = ?5",
                params![id, index, name, status, record],
            )?;
        }
        Op::Finish(f, _) => {
            tx.execute(
                "UPDATE executions SET status = ?2, result = ?3, failure_message = ?4, ended_at = ?5 WHERE id = ?1",
                params![f.id, f.status.as_str(), f.result, f.failure_message, f.ended_at],
            )?;
        }
        Op::CancelQueued(f, _) => {
            let n = tx.execute(
                "UPDATE executions SET status = ?2, result = ?3, failure_message = ?4, ended_at = ?5
                 WHERE id = ?1 AND status = 'Queued'",
                params![f.id, f.status.as_str(), f.result, f.failure_message, f.ended_at],
            )?;
            return Ok(n == 1);
        }
        Op::Flush(_) => {}
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::LogStream;

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
            store.start("a", "t1".into()).await.unwrap();
            store.log("a", None, LogStream::Stdout, "hello");
            store.log("a", Some("s1"), LogStream::Stderr, "oops");
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
        assert_eq!(a.started_at.as_deref(), Some("t1"));
        let logs = store.logs("a", 0, 100).await.unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1].step.as_deref(), Some("s1"));
        assert_eq!(store.logs("a", logs[0].seq, 100).await.unwrap().len(), 1);
        let queued = store.with_status(ExecStatus::Queued).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, "b");
        let page = store.list(None, 1, None).await.unwrap();
        assert_eq!(page[0].id, "b");
        let next = store.list(None, 1, Some(page[0].seq)).await.unwrap();
        assert_eq!(next[0].id, "a");
        let only = store
            .list(Some(ExecStatus::Success), 10, None)
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
    }
}
