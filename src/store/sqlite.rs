//! [`SqliteStore`]: the one owner of `<data_dir>/scriptbox.db`.
//!
//! - One writer thread owns the writing connection and commits in groups: every operation that
//!   arrived while the previous commit was in flight goes into the next transaction, so a burst
//!   of submissions costs a few fsyncs, not one each. Operations that must be durable before the
//!   caller answers (a submission, an execution's end) carry a reply sent after the commit.
//! - The SSM documents' work ([`DocumentsDb::with`]) runs on that same writer connection,
//!   between groups: there is no second connection writing, so no `SQLITE_BUSY` between them.
//! - Reads use a second connection (WAL readers never block the writer) on `spawn_blocking`.
//! - After each commit a counter is bumped on a `watch` channel: log followers wake and read
//!   what was committed, so a follower never sees a line that could still be lost.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};

use super::api::{CancelRequest, ExecutionStore, ListFilter};
use super::migrations::migrate;
use super::{
    ExecKind, ExecStatus, ExecutionRecord, ExitFact, Finish, LogRow, NewExecution, Outcome,
    StepExecution, StoreError, Timestamp,
};
use crate::result::LogStream;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work run on the writer connection between group commits.
type OnWriter = Box<dyn FnOnce(&mut Connection) + Send>;

enum Op {
    Insert(NewExecution, Reply<()>),
    Claim {
        id: String,
        at: Timestamp,
        owner: String,
        lease_until: String,
        reply: Reply<bool>,
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
    Finish(Finish, Option<Reply<bool>>),
    Exit {
        id: String,
        exit: ExitFact,
        reply: Reply<bool>,
    },
    /// Cancelled while queued: only if still `Queued`; replies whether it was.
    CancelQueued(Finish, Reply<bool>),
    Flush(Reply<bool>),
    /// Runs alone, outside any group's transaction.
    Run(OnWriter),
}

/// The sending side of the writer thread, shared by the store and its [`DocumentsDb`] handles.
struct Writer {
    tx: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
}

impl Writer {
    fn send(&self, op: Op) -> Result<(), StoreError> {
        let guard = self.tx.lock().map_err(|_| StoreError::Closed)?;
        match guard.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Runs `f` on the writer connection and returns its value.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Run(Box::new(move |c| {
            let _ = reply.send(f(c));
        })))?;
        // A panic inside `f` drops the reply: the caller gets an error, the writer goes on.
        rx.await.map_err(|_| StoreError::Closed)
    }
}

/// The SQLite execution store: a writer thread and a reading connection.
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Writer>,
    reader: Arc<Mutex<Connection>>,
    committed: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The SSM documents' handle on the database: their work runs on the store's writer connection.
#[derive(Clone)]
pub struct DocumentsDb {
    writer: Arc<Writer>,
}

impl std::fmt::Debug for DocumentsDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocumentsDb")
    }
}

impl DocumentsDb {
    /// Runs `f` on the database (off the async workers, on the writer thread, between group
    /// commits); `f` makes its own transactions.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.run(f).await
    }
}

fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

const ROW_COLUMNS: &str = "seq, id, kind, status, runtime, document_name, request, result, failure_message, submitted_at, started_at, ended_at, cancel_requested_at, outcome, exit_fact, parent_id";

fn time(t: Option<String>) -> Option<Timestamp> {
    t.as_deref().and_then(Timestamp::parse)
}

/// The outcome: the typed one, else the object an older scriptbox stored, else pending.
fn outcome(typed: Option<String>, legacy: Option<String>) -> Outcome {
    if let Some(o) = typed.and_then(|t| serde_json::from_str::<Outcome>(&t).ok()) {
        return o;
    }
    match legacy.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok()) {
        Some(serde_json::Value::Object(m)) => Outcome::Legacy(m),
        _ => Outcome::Pending,
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let kind: String = r.get(2)?;
    let status: String = r.get(3)?;
    let exit: Option<String> = r.get(14)?;
    Ok(ExecutionRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: ExecKind::parse(&kind).unwrap_or(ExecKind::Step),
        status: ExecStatus::parse(&status).unwrap_or(ExecStatus::Failed),
        runtime: r.get(4)?,
        document_name: r.get(5)?,
        request: r.get(6)?,
        outcome: outcome(r.get(13)?, r.get(7)?),
        failure_message: r.get(8)?,
        // Written by the store itself, always RFC 3339.
        submitted: time(r.get(9)?).unwrap_or(Timestamp::from_utc(chrono::DateTime::UNIX_EPOCH)),
        started: time(r.get(10)?),
        ended: time(r.get(11)?),
        cancel_requested: time(r.get(12)?),
        exit: exit
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        parent_id: r.get(15)?,
    })
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn lease_until(lease: Duration) -> String {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let until = chrono::Utc::now()
        .checked_add_signed(lease)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    Timestamp::from_utc(until).rfc3339()
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating) `<dir>/scriptbox.db`, migrates it and starts the writer thread.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
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
        Ok(SqliteStore {
            path,
            writer: Arc::new(Writer {
                tx: Mutex::new(Some(tx)),
            }),
            reader: Arc::new(Mutex::new(reader)),
            committed,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// The SSM documents' handle on this database.
    pub fn documents(&self) -> DocumentsDb {
        DocumentsDb {
            writer: self.writer.clone(),
        }
    }

    async fn acked<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(make(reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Write(e.to_string()))?
    }

    /// Stops the writer after it committed everything sent so far.
    pub fn close(&self) {
        if let Ok(mut tx) = self.writer.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn claim_next_blocking(
    c: &mut Connection,
    owner: &str,
    lease: Duration,
) -> rusqlite::Result<Option<ExecutionRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM executions WHERE status = 'Queued' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE executions SET status = 'Running', started_at = ?2, lease_owner = ?3, lease_until = ?4
         WHERE id = ?1 AND status = 'Queued'",
        params![id, Timestamp::now().rfc3339(), owner, lease_until(lease)],
    )?;
    let claimed = tx.query_row(
        &format!("SELECT {ROW_COLUMNS} FROM executions WHERE id = ?1"),
        params![id],
        row,
    )?;
    tx.commit()?;
    Ok(Some(claimed))
}

fn request_cancel_blocking(
    c: &mut Connection,
    id: &str,
    at: Timestamp,
) -> rusqlite::Result<CancelRequest> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let status: Option<String> = tx
        .query_row(
            "SELECT status FROM executions WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    let found = match status.as_deref().map(ExecStatus::parse) {
        None => CancelRequest::NotFound,
        Some(None) => CancelRequest::AlreadyFinished(ExecStatus::Failed),
        Some(Some(ExecStatus::Queued)) => CancelRequest::Queued,
        Some(Some(ExecStatus::Running)) => {
            // The first request's time is kept.
            tx.execute(
                "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, ?2)
                 WHERE id = ?1 AND status = 'Running'",
                params![id, at.rfc3339()],
            )?;
            CancelRequest::Requested
        }
        Some(Some(done)) => CancelRequest::AlreadyFinished(done),
    };
    tx.commit()?;
    Ok(found)
}

impl ExecutionStore for SqliteStore {
    fn insert(&self, new: NewExecution) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.acked(|r| Op::Insert(new, r)))
    }

    fn claim_next<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<ExecutionRecord>, StoreError>> {
        let owner = owner.to_string();
        Box::pin(async move {
            self.writer
                .run(move |c| claim_next_blocking(c, &owner, lease))
                .await?
                .map_err(StoreError::from)
        })
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.acked(move |reply| Op::Claim {
            id: id.to_string(),
            at: Timestamp::now(),
            owner: owner.to_string(),
            lease_until: lease_until(lease),
            reply,
        }))
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (id, owner) = (id.to_string(), owner.to_string());
        Box::pin(async move {
            self.writer
                .run(move |c| {
                    c.execute(
                        "UPDATE executions SET lease_until = ?3
                         WHERE id = ?1 AND lease_owner = ?2 AND status = 'Running'",
                        params![id, owner, lease_until(lease)],
                    )
                })
                .await?
                .map(|n| n == 1)
                .map_err(StoreError::from)
        })
    }

    fn step(&self, id: &str, index: i64, step: &StepExecution) {
        let _ = self.writer.send(Op::Step {
            id: id.to_string(),
            index,
            name: step.step_name.clone(),
            status: step.step_status.clone(),
            record: json_text(step),
        });
    }

    fn append_log(&self, id: &str, step: Option<&str>, stream: LogStream, text: &str) {
        let stream = match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Scriptbox => "scriptbox",
        };
        let _ = self.writer.send(Op::Log {
            id: id.to_string(),
            step: step.map(str::to_string),
            stream,
            text: text.to_string(),
        });
    }

    fn finish(&self, finish: Finish) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.acked(|r| Op::Finish(finish, Some(r))).await?;
            Ok(())
        })
    }

    fn record_exit<'a>(
        &'a self,
        id: &'a str,
        exit: ExitFact,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.acked(|reply| Op::Exit {
                id: id.to_string(),
                exit,
                reply,
            })
            .await?;
            Ok(())
        })
    }

    fn cancel_queued(&self, finish: Finish) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.acked(|r| Op::CancelQueued(finish, r)))
    }

    fn request_cancel<'a>(
        &'a self,
        id: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<CancelRequest, StoreError>> {
        let id = id.to_string();
        Box::pin(async move {
            self.writer
                .run(move |c| request_cancel_blocking(c, &id, at))
                .await?
                .map_err(StoreError::from)
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExecutionRecord>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |c| {
            c.query_row(
                &format!("SELECT {ROW_COLUMNS} FROM executions WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
        }))
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<ExecutionRecord>, StoreError>> {
        Box::pin(self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM executions
                 WHERE (?1 IS NULL OR status = ?1) AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![
                    filter.status.map(ExecStatus::as_str),
                    filter.before.unwrap_or(i64::MAX),
                    sql_limit(filter.limit)
                ],
                row,
            )?;
            rows.collect()
        }))
    }

    fn with_status(
        &self,
        status: ExecStatus,
    ) -> BoxFuture<'_, Result<Vec<ExecutionRecord>, StoreError>> {
        Box::pin(self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM executions WHERE status = ?1 ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![status.as_str()], row)?;
            rows.collect()
        }))
    }

    fn counts(&self) -> BoxFuture<'_, Result<Vec<(ExecStatus, i64)>, StoreError>> {
        Box::pin(self.read(|c| {
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
        }))
    }

    fn steps<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<StepExecution>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT record FROM steps WHERE execution_id = ?1 ORDER BY idx")?;
            let rows = stmt.query_map(params![id], |r| r.get::<_, String>(0))?;
            let texts: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
            // A record that does not read (none should) is left out, as before.
            Ok(texts
                .iter()
                .filter_map(|t| serde_json::from_str(t).ok())
                .collect())
        }))
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, step, stream, text FROM log_lines
                 WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after, sql_limit(limit)], |r| {
                Ok(LogRow {
                    seq: r.get(0)?,
                    step: r.get(1)?,
                    stream: r.get(2)?,
                    text: r.get(3)?,
                })
            })?;
            rows.collect()
        }))
    }

    fn follow(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.acked(Op::Flush).await?;
            Ok(())
        })
    }

    fn close(&self) {
        SqliteStore::close(self);
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
    let mut next: Option<Op> = None;
    loop {
        let first = match next.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
        };
        if let Op::Run(f) = first {
            // A panic in the work ends that work only (its reply is dropped).
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn))).is_err() {
                tracing::error!("a database task panicked");
            }
        } else {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Op::Run(f)) => {
                        next = Some(Op::Run(f));
                        break;
                    }
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            commit_group(&mut conn, group);
        }
        commits += 1;
        committed.send_replace(commits);
    }
}

/// Commits `group` in one transaction; one operation's failure (a duplicate id...) fails that
/// operation only. Each reply is sent after the commit.
fn commit_group(conn: &mut Connection, group: Vec<Op>) {
    let mut outcomes: Vec<Result<bool, String>> = Vec::with_capacity(group.len());
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in &group {
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
    let mut outcomes = outcomes.into_iter();
    for op in group {
        let outcome = match (&result, outcomes.next()) {
            (Err(e), _) => Err(StoreError::Write(e.to_string())),
            (Ok(()), Some(o)) => o.map_err(StoreError::Write),
            (Ok(()), None) => Err(StoreError::Write("not applied".into())),
        };
        match op {
            Op::Insert(_, r) => {
                let _ = r.send(outcome.map(|_| ()));
            }
            Op::Claim { reply: r, .. }
            | Op::Flush(r)
            | Op::Finish(_, Some(r))
            | Op::Exit { reply: r, .. }
            | Op::CancelQueued(_, r) => {
                let _ = r.send(outcome);
            }
            Op::Finish(_, None) | Op::Log { .. } | Op::Step { .. } | Op::Run(_) => {}
        }
    }
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &Op) -> rusqlite::Result<bool> {
    match op {
        Op::Insert(n, _) => {
            tx.execute(
                "INSERT INTO executions (id, kind, status, runtime, document_name, request, submitted_at, parent_id)
                 VALUES (?1, ?2, 'Queued', ?3, ?4, ?5, ?6, ?7)",
                params![
                    n.id,
                    n.kind.as_str(),
                    n.runtime,
                    n.document_name,
                    n.request,
                    n.submitted.rfc3339(),
                    n.parent_id
                ],
            )?;
        }
        Op::Claim {
            id,
            at,
            owner,
            lease_until,
            ..
        } => {
            let n = tx.execute(
                "UPDATE executions SET status = 'Running', started_at = ?2, lease_owner = ?3, lease_until = ?4
                 WHERE id = ?1 AND status = 'Queued'",
                params![id, at.rfc3339(), owner, lease_until],
            )?;
            return Ok(n == 1);
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
                "UPDATE executions SET status = ?2, outcome = ?3, failure_message = ?4, ended_at = ?5,
                 exit_fact = ?6, result = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                params![
                    f.id,
                    f.status.as_str(),
                    json_text(&f.outcome),
                    f.failure_message,
                    f.ended.rfc3339(),
                    json_text(&f.exit)
                ],
            )?;
        }
        Op::Exit { id, exit, .. } => {
            tx.execute(
                "UPDATE executions SET exit_fact = ?2 WHERE id = ?1",
                params![id, json_text(exit)],
            )?;
        }
        Op::CancelQueued(f, _) => {
            let n = tx.execute(
                "UPDATE executions SET status = ?2, outcome = ?3, failure_message = ?4, ended_at = ?5
                 WHERE id = ?1 AND status = 'Queued'",
                params![
                    f.id,
                    f.status.as_str(),
                    json_text(&f.outcome),
                    f.failure_message,
                    f.ended.rfc3339()
                ],
            )?;
            return Ok(n == 1);
        }
        Op::Flush(_) | Op::Run(_) => {}
    }
    Ok(true)
}
