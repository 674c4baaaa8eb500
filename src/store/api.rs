//! The execution store's seam: what the scheduler, the API and the SSM facade need of it.
//!
//! SQLite ([`super::SqliteStore`]) implements it today. The shape is one a store shared by many
//! hosts can implement too (PostgreSQL with `FOR UPDATE SKIP LOCKED` claims and `LISTEN/NOTIFY`
//! for [`ExecutionStore::follow`]): a running execution belongs to the owner whose lease on it is
//! current, and every state change is a conditional update, never a read-then-write in the caller.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    ExecStatus, ExecutionRecord, ExitFact, Finish, LogRow, NewExecution, StepExecution, StoreError,
    Timestamp,
};
use crate::result::LogStream;

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRequest {
    /// It is `Running`: the request is stored (SSM shows `Cancelling` until it ends).
    Requested,
    /// It is still `Queued`: nothing was stored; the caller ends it (it holds the queue).
    Queued,
    /// It had already ended.
    AlreadyFinished(ExecStatus),
    /// No such execution.
    NotFound,
}

/// Which executions [`ExecutionStore::list`] returns, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<ExecStatus>,
    /// Only older than this `seq` (the paging cursor).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// The execution store.
pub trait ExecutionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new `Queued` execution; returns once it is durable.
    fn insert(&self, new: NewExecution) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks the oldest `Queued` execution (by `seq`) `Running` for `owner`, leased for `lease`,
    /// and returns it; `None` when nothing is queued.
    fn claim_next<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<ExecutionRecord>, StoreError>>;

    /// Marks the execution `id` `Running` for `owner`, leased for `lease`, if it is still
    /// `Queued` (the caller chose it from its own queue); true when it did.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Extends `owner`'s lease on a running execution; false when it no longer holds it.
    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records (or replaces) a runbook step's record at `index`; batched, never waits.
    fn step(&self, id: &str, index: i64, step: &StepExecution);

    /// Appends a log line; batched, never waits.
    fn append_log(&self, id: &str, step: Option<&str>, stream: LogStream, text: &str);

    /// Records the end of an execution; returns once it is durable.
    fn finish(&self, finish: Finish) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A late fact: Docker's exit, after the result was recorded.
    fn record_exit<'a>(
        &'a self,
        id: &'a str,
        exit: ExitFact,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records the end of a queued execution, only if it is still `Queued`; true when it was.
    fn cancel_queued(&self, finish: Finish) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Stores a cancel request for a running execution.
    fn request_cancel<'a>(
        &'a self,
        id: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<CancelRequest, StoreError>>;

    /// One execution.
    fn get<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<ExecutionRecord>, StoreError>>;

    /// Executions, newest first.
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<ExecutionRecord>, StoreError>>;

    /// Executions with a status, oldest first (recovery).
    fn with_status(
        &self,
        status: ExecStatus,
    ) -> BoxFuture<'_, Result<Vec<ExecutionRecord>, StoreError>>;

    /// Count of executions per status.
    fn counts(&self) -> BoxFuture<'_, Result<Vec<(ExecStatus, i64)>, StoreError>>;

    /// A runbook execution's step records so far, in order.
    fn steps<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<StepExecution>, StoreError>>;

    /// Log lines after `after` (a log `seq`), at most `limit`.
    fn logs<'a>(
        &'a self,
        id: &'a str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>>;

    /// Changes after every commit: a log follower reads [`ExecutionStore::logs`] after each.
    fn follow(&self) -> watch::Receiver<u64>;

    /// Waits until everything sent so far is durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Stops writing after everything sent so far is durable.
    fn close(&self);
}
