//! The AWS Systems Manager API (JSON 1.1 protocol) on the daemon's TCP listener, so that
//! `aws ssm ... --endpoint-url http://127.0.0.1:PORT` and `boto3.client("ssm", endpoint_url=...)`
//! drive scriptbox: `POST /` with `X-Amz-Target: AmazonSSM.<Operation>` and a JSON body; answers
//! `application/x-amz-json-1.1`, errors `{"__type", "message"}` ([`errors`]).
//!
//! Documents ([`documents`]) are stored in the daemon's database; automation executions
//! ([`automation`]) are the daemon's runbook executions. Authentication is SigV4 ([`sigv4`]),
//! verified against `server.ssm_access_keys_file`; each key belongs to a tenant, and documents
//! and executions are scoped to it (another tenant's look as if they did not exist). Only with
//! an explicit `server.ssm_anonymous` are credentials not checked (loopback listeners only,
//! every caller the default tenant, no attachments from the file system).

pub mod attachments;
pub mod automation;
pub mod documents;
pub mod errors;
pub mod sigv4;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::config::Settings;
use crate::runtimes::Catalog;
use crate::server::scheduler::Scheduler;
use crate::store::{DocumentsDb, ExecutionStore};
use errors::{CONTENT_TYPE, SsmError};

/// What the SSM handler needs.
#[derive(Clone)]
pub struct SsmState {
    /// The daemon's scheduler (submissions, cancel).
    pub scheduler: Arc<Scheduler>,
    /// The daemon's execution records.
    pub store: Arc<dyn ExecutionStore>,
    /// The documents.
    pub docs: Arc<documents::DocStore>,
    /// The settings.
    pub settings: Arc<Settings>,
    /// The runtimes (checking documents).
    pub catalog: Arc<Catalog>,
    /// Access keys; `None`: `--ssm-anonymous` (no credentials checked, no file attachments).
    pub keys: Option<Arc<sigv4::AccessKeys>>,
    /// A folder for attachments while a document is checked.
    pub scratch: PathBuf,
    /// Places for documents being checked with their attachments in memory: at most
    /// [`CONCURRENT_DOCUMENT_CHECKS`] × 5 attachments × `ssm_attachment_max_bytes` are held.
    pub checks: Arc<tokio::sync::Semaphore>,
}

/// Documents checked at once (each holds at most 5 attachments in memory).
pub const CONCURRENT_DOCUMENT_CHECKS: usize = 4;

impl SsmState {
    /// The state; the documents live in the store's database (`documents`).
    pub fn new(
        scheduler: Arc<Scheduler>,
        store: Arc<dyn ExecutionStore>,
        documents: DocumentsDb,
        settings: Arc<Settings>,
        catalog: Arc<Catalog>,
        keys: Option<sigv4::AccessKeys>,
    ) -> SsmState {
        let data_dir = settings.server.data_dir_path();
        let docs = documents::DocStore::new(documents);
        SsmState {
            scheduler,
            store,
            docs: Arc::new(docs),
            settings,
            catalog,
            keys: keys.map(Arc::new),
            scratch: data_dir.join("scratch").join("ssm"),
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DOCUMENT_CHECKS)),
        }
    }
}

/// The operations served.
pub const OPERATIONS: [&str; 13] = [
    "CreateDocument",
    "UpdateDocument",
    "UpdateDocumentDefaultVersion",
    "DeleteDocument",
    "GetDocument",
    "DescribeDocument",
    "ListDocuments",
    "StartAutomationExecution",
    "GetAutomationExecution",
    "DescribeAutomationExecutions",
    "DescribeAutomationStepExecutions",
    "StopAutomationExecution",
    "SendAutomationSignal",
];

/// Checks the settings for the SSM API: the access keys, or a loopback listener.
pub fn access_keys(settings: &Settings) -> Result<Option<sigv4::AccessKeys>, sigv4::KeysError> {
    match &settings.server.ssm_access_keys_file {
        Some(f) => sigv4::AccessKeys::from_file(f).map(Some),
        None => Ok(None),
    }
}

/// `POST /`.
pub fn router(state: SsmState) -> Router {
    let limit = state.settings.server.max_request_bytes;
    Router::new()
        .route("/", post(handle))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

async fn handle(
    State(st): State<SsmState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = match answer(&st, &method, &uri, &headers, body).await {
        Ok(v) => ok(v),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!("SSM API: {e}");
            }
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-RequestId", v);
    }
    resp
}

async fn answer(
    st: &SsmState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, SsmError> {
    let body = body.map_err(|rej| SsmError {
        status: rej.status(),
        code: if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestEntityTooLarge"
        } else {
            "SerializationException"
        },
        message: rej.body_text(),
    })?;
    let caller = match &st.keys {
        Some(keys) => sigv4::verify(
            keys,
            &sigv4::Expect {
                region: &st.settings.context.region,
            },
            method,
            uri.path(),
            uri.query().unwrap_or(""),
            headers,
            &body,
            chrono::Utc::now().timestamp(),
        )?,
        // `--ssm-anonymous`: nothing is checked; every caller is the default tenant, named
        // (for `ExecutedBy`) by whatever key its header shows.
        None => sigv4::Caller {
            access_key: sigv4::parse_authorization(headers)
                .ok()
                .flatten()
                .map(|a| a.access_key),
            tenant: sigv4::DEFAULT_TENANT.to_string(),
        },
    };
    let caller = &caller;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(op) = target.strip_prefix("AmazonSSM.") else {
        return Err(SsmError::client(
            "UnknownOperationException",
            format!("X-Amz-Target {target:?}: expected AmazonSSM.<Operation>"),
        ));
    };
    let req: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            SsmError::client(
                "SerializationException",
                format!("the body is not JSON: {e}"),
            )
        })?
    };
    if !req.is_object() {
        return Err(SsmError::client(
            "SerializationException",
            "the body must be a JSON object",
        ));
    }
    match op {
        "CreateDocument" => documents::create(st, caller, &req).await,
        "UpdateDocument" => documents::update(st, caller, &req).await,
        "UpdateDocumentDefaultVersion" => documents::set_default(st, caller, &req).await,
        "DeleteDocument" => documents::delete(st, caller, &req).await,
        "GetDocument" => documents::get(st, caller, &req).await,
        "DescribeDocument" => documents::describe(st, caller, &req).await,
        "ListDocuments" => documents::list(st, caller, &req).await,
        "StartAutomationExecution" => automation::start(st, caller, &req).await,
        "GetAutomationExecution" => automation::get(st, caller, &req).await,
        "DescribeAutomationExecutions" => automation::describe_executions(st, caller, &req).await,
        "DescribeAutomationStepExecutions" => automation::describe_steps(st, caller, &req).await,
        "StopAutomationExecution" => automation::stop(st, caller, &req).await,
        "SendAutomationSignal" => automation::send_signal(st, caller, &req).await,
        other => Err(SsmError::client(
            "UnknownOperationException",
            format!(
                "scriptbox does not implement {other}; it serves {}",
                OPERATIONS.join(", ")
            ),
        )),
    }
}
