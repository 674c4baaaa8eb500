//! The HTTP+JSON API (described in `docs/openapi.yaml`).
//!
//! Errors are `{"Error": {"Code", "Message", "Field"?}}`; a 429 carries `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::Token;
use super::metrics::Metrics;
use super::scheduler::{CancelOutcome, Scheduler, SignalOutcome, SubmitError};
use super::types::{self, parse_submit};
use crate::report::{self, RuntimeRow, problems_json};
use crate::runtimes::Catalog;
use crate::sandbox::Engine;
use crate::store::{ExecStatus, ExecutionRecord, ExecutionStore, ListFilter, Outcome};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler.
    pub scheduler: Arc<Scheduler>,
    /// The records.
    pub store: Arc<dyn ExecutionStore>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The runtimes.
    pub catalog: Arc<Catalog>,
    /// The engine (health, runtimes).
    pub engine: Engine,
    /// Fires when the daemon shuts down: log streams end.
    pub shutdown: CancellationToken,
    /// The largest request body.
    pub max_request_bytes: usize,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    problems: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            problems: None,
        }
    }

    fn not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no execution {id:?}"),
        )
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"Code": self.code, "Message": self.message});
        if let Some(f) = self.field {
            error["Field"] = json!(f);
        }
        if let Some(p) = self.problems {
            error["Problems"] = p;
        }
        let mut resp = (self.status, Json(json!({ "Error": error }))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// The routes (without authentication).
pub fn router(state: AppState) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/v1/executions", post(submit).get(list))
        .route("/v1/executions/{id}", get(get_one))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/signal", post(signal))
        .route("/v1/executions/{id}/log", get(log))
        .route("/v1/runtimes", get(runtimes))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Refuses requests without the bearer token (the TCP listener).
pub async fn require_token(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token.accepts(header) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "this listener needs `Authorization: Bearer <token>`",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"scriptbox\""),
    );
    resp
}

/// Refuses every request: a TCP listener without a token file serves only the SSM API.
pub async fn refuse_without_token(_req: Request, _next: Next) -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "this listener serves only the SSM API (no server.token_file is configured for the native API)",
    )
    .into_response()
}

async fn submit(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "RequestTooLarge",
                format!(
                    "the request body is larger than server.max_request_bytes ({} bytes)",
                    st.max_request_bytes
                ),
            )
        } else {
            ApiError::new(status, "InvalidRequest", rej.body_text())
        }
    })?;
    let req = parse_submit(&body).map_err(invalid)?;
    match st.scheduler.submit(&req).await {
        Ok(id) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/v1/executions/{id}"))],
            Json(json!({"Id": id, "Status": "Queued"})),
        )
            .into_response()),
        Err(SubmitError::Invalid(i)) => Err(invalid(i)),
        Err(SubmitError::Busy { retry_after }) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Busy",
                format!(
                    "every container slot and queue place is taken; retry after {retry_after} s"
                ),
            );
            e.retry_after = Some(retry_after);
            Err(e)
        }
        Err(SubmitError::ShuttingDown) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ShuttingDown",
            "the daemon is shutting down",
        )),
        Err(SubmitError::Store(e)) => Err(ApiError::internal(e)),
    }
}

fn invalid(i: types::Invalid) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, i.code, i.message);
    e.field = i.field;
    if !i.problems.is_empty() {
        e.problems = Some(problems_json(&i.problems));
    }
    e
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ListQuery {
    status: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn query_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidRequest",
        format!("query: {e}"),
    )
}

async fn list(
    State(st): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| query_error(e.body_text()))?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(ExecStatus::parse(s).ok_or_else(|| {
            let mut e = query_error(format!(
                "Status: must be one of Queued, Running, Success, Failed, TimedOut, Cancelled; got {s:?}"
            ));
            e.field = Some("Status".into());
            e
        })?),
    };
    let limit = q.max_results.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        let mut e = query_error(format!(
            "MaxResults: must be between 1 and 1000, got {limit}"
        ));
        e.field = Some("MaxResults".into());
        return Err(e);
    }
    let before = match &q.next_token {
        None => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| {
            let mut e = query_error("NextToken: not a token this daemon gave");
            e.field = Some("NextToken".into());
            e
        })?),
    };
    let rows = st
        .store
        .list(ListFilter {
            status,
            before,
            limit: limit + 1,
        })
        .await
        .map_err(ApiError::internal)?;
    let more = rows.len() > limit;
    let page: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(ExecutionRecord::summary_json)
        .collect();
    let mut body = json!({ "Executions": page });
    if more {
        body["NextToken"] = json!(rows[limit - 1].seq.to_string());
    }
    Ok(Json(body))
}

/// The execution object: the stored result once finished, else what is known so far.
pub async fn execution_object(
    store: &dyn ExecutionStore,
    id: &str,
) -> Result<Option<Value>, ApiError> {
    Ok(execution_record(store, id)
        .await?
        .map(|record| record.native_json()))
}

/// The record, its outcome filled with what is known so far when it has none yet.
pub async fn execution_record(
    store: &dyn ExecutionStore,
    id: &str,
) -> Result<Option<ExecutionRecord>, ApiError> {
    let Some(mut record) = store.get(id).await.map_err(ApiError::internal)? else {
        return Ok(None);
    };
    if record.outcome == Outcome::Pending {
        let steps = store.steps(id).await.map_err(ApiError::internal)?;
        let logs = store
            .logs(id, 0, 100_000)
            .await
            .map_err(ApiError::internal)?;
        record.outcome = record.provisional(
            steps,
            &logs,
            record.failure_message.as_deref(),
            record.status,
        );
    }
    Ok(Some(record))
}

async fn get_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match execution_object(st.store.as_ref(), &id).await? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::not_found(&id)),
    }
}

async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match st.scheduler.cancel(&id).await {
        CancelOutcome::NotFound => Err(ApiError::not_found(&id)),
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyFinished",
            format!("the execution already ended: {}", status.as_str()),
        )),
        CancelOutcome::CancelledQueued => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"Id": id, "Status": "Cancelled"})),
        )
            .into_response()),
        CancelOutcome::Cancelling => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"Id": id, "Status": "Running", "Cancelling": true})),
        )
            .into_response()),
    }
}

/// `POST /v1/executions/{id}/signal`: `{"SignalType": "Resume", "Payload": {"Comment": ["…"]}}`.
/// The sender is the daemon's own OS user **(ours)**: the native API's callers are its owner (the
/// Unix socket is owner-only; TCP needs the operator's token).
async fn signal(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::runbook::signals::{Signal, SignalKind, check_payload, local_user};
    let bad = |field: &str, message: String| {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message);
        e.field = Some(field.to_string());
        e
    };
    let body =
        body.map_err(|rej| ApiError::new(rej.status(), "InvalidRequest", rej.body_text()))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| bad("body", format!("the body is not JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(bad("body", "the body must be a JSON object".into()));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["SignalType", "Payload"].contains(&k.as_str()))
    {
        return Err(bad(
            k,
            format!("unknown field {k:?} (known: SignalType, Payload)"),
        ));
    }
    let names: Vec<&str> = SignalKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = obj
        .get("SignalType")
        .and_then(Value::as_str)
        .and_then(SignalKind::parse)
        .ok_or_else(|| {
            bad(
                "SignalType",
                format!("SignalType is required: one of {}", names.join(", ")),
            )
        })?;
    let payload = check_payload(obj.get("Payload")).map_err(|e| bad("Payload", e.to_string()))?;
    let outcome = st
        .scheduler
        .signal(&id, Signal::new(kind, payload, local_user()))
        .await;
    match outcome {
        SignalOutcome::Delivered(step) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"Id": id, "SignalType": kind.as_str(), "StepName": step})),
        )
            .into_response()),
        SignalOutcome::NotFound => Err(ApiError::not_found(&id)),
        SignalOutcome::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "InvalidSignal",
            format!("the execution already ended: {}", status.as_str()),
        )),
        SignalOutcome::Queued => Err(ApiError::new(
            StatusCode::CONFLICT,
            "InvalidSignal",
            format!("the execution is queued: no step waits for {kind} yet"),
        )),
        SignalOutcome::Refused(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "InvalidSignal",
            e.to_string(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct LogQuery {
    follow: Option<bool>,
    after: Option<i64>,
}

async fn log(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| query_error(e.body_text()))?;
    let Some(row) = st.store.get(&id).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(&id));
    };
    // A reconnecting EventSource resumes after the last line it saw.
    let after = q.after.unwrap_or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if q.follow != Some(true) {
        let lines = st
            .store
            .logs(&id, after, 100_000)
            .await
            .map_err(ApiError::internal)?;
        return Ok(Json(json!({
            "Id": id,
            "Status": row.status.as_str(),
            "Lines": lines,
        }))
        .into_response());
    }
    Ok(Sse::new(follow(st, id, after))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Replays the stored lines, then follows new ones as they are committed; ends with an `end`
/// event carrying the final status and the execution object (or when the daemon shuts down).
fn follow(
    st: AppState,
    id: String,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    struct S {
        st: AppState,
        id: String,
        after: i64,
        pending: std::collections::VecDeque<Event>,
        commits: tokio::sync::watch::Receiver<u64>,
        done: bool,
    }
    let commits = st.store.follow();
    let s = S {
        st,
        id,
        after,
        pending: Default::default(),
        commits,
        done: false,
    };
    futures::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok(e), s));
            }
            if s.done {
                return None;
            }
            // Mark the commit counter seen before reading, so no commit is missed.
            s.commits.borrow_and_update();
            // The status first: lines are committed no later than the status that ends them.
            let status = match s.st.store.get(&s.id).await {
                Ok(Some(row)) => row.status,
                _ => ExecStatus::Failed,
            };
            let lines =
                s.st.store
                    .logs(&s.id, s.after, 1000)
                    .await
                    .unwrap_or_default();
            let got = !lines.is_empty();
            for l in lines {
                s.after = l.seq;
                let data = serde_json::to_string(&l).unwrap_or_default();
                s.pending.push_back(
                    Event::default()
                        .event("log")
                        .id(l.seq.to_string())
                        .data(data),
                );
            }
            if got {
                continue;
            }
            if status.is_terminal() {
                s.done = true;
                // The execution as recorded, so a client need not ask for it again.
                let execution = execution_object(s.st.store.as_ref(), &s.id)
                    .await
                    .ok()
                    .flatten();
                s.pending.push_back(
                    Event::default().event("end").data(
                        json!({"Id": s.id, "Status": status.as_str(), "Execution": execution})
                            .to_string(),
                    ),
                );
                continue;
            }
            tokio::select! {
                _ = s.commits.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = s.st.shutdown.cancelled() => {
                    s.done = true;
                    s.pending.push_back(
                        Event::default()
                            .event("shutdown")
                            .data(json!({"Id": s.id, "Status": status.as_str()}).to_string()),
                    );
                }
            }
        }
    })
}

async fn runtimes(State(st): State<AppState>) -> Json<Value> {
    let rows = report::runtime_rows(&st.catalog, Some(&st.engine)).await;
    let rows: Vec<Value> = rows.iter().map(RuntimeRow::to_json).collect();
    Json(json!({ "Runtimes": rows }))
}

async fn health(State(st): State<AppState>) -> Response {
    let engine_ok = tokio::time::timeout(Duration::from_secs(5), st.engine.ping())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let (queued, running) = st.scheduler.load();
    let body = json!({
        "Status": if engine_ok { "Ok" } else { "EngineUnreachable" },
        "Version": env!("CARGO_PKG_VERSION"),
        "Engine": if engine_ok { "Ok" } else { "Unreachable" },
        "Concurrency": st.scheduler.concurrency(),
        "Queued": queued,
        "Running": running,
    });
    let status = if engine_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
