//! SSM documents: CreateDocument, UpdateDocument, DeleteDocument, GetDocument,
//! DescribeDocument, ListDocuments, UpdateDocumentDefaultVersion.
//!
//! Documents live in the daemon's database (`scriptbox.db`) in tables of their own, created by
//! the store's one migration list ([`crate::store::migrations`]) and used through the store's
//! connection ([`crate::store::DocumentsDb`]): each version keeps its content, format, SHA-256,
//! a description computed when it was stored, and the bytes of its attachments (read from a
//! local folder at CreateDocument / UpdateDocument time and verified against the document's
//! `files`).

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::DocumentsDb;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::SsmState;
use super::errors::SsmError;
use super::sigv4::Caller;
use crate::runbook as rb;

/// Attachments: file name and bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// A document.
#[derive(Debug, Clone)]
pub struct DocRow {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// `Automation`.
    pub document_type: String,
    /// Epoch seconds.
    pub created: f64,
    /// The default version.
    pub default_version: i64,
    /// The latest version.
    pub latest_version: i64,
}

/// One version of a document.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// The version number.
    pub version: i64,
    /// `VersionName`.
    pub version_name: Option<String>,
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// The text.
    pub content: String,
    /// `YAML` or `JSON`.
    pub format: String,
    /// SHA-256 of the content, hex.
    pub hash: String,
    /// Epoch seconds.
    pub created: f64,
    /// `Description`, `Parameters`, `SchemaVersion`, `AttachmentsInformation`, `Attachments`.
    pub meta: Value,
}

/// What an SSM execution adds to the daemon's record.
#[derive(Debug, Clone)]
pub struct ExecRow {
    /// The document's name.
    pub document_name: String,
    /// The version that ran.
    pub document_version: String,
    /// The caller's access key id.
    pub executed_by: Option<String>,
    /// The caller's tenant: only its callers see the execution.
    pub tenant: String,
}

/// The documents' tables, on the store's connection.
pub struct DocStore {
    db: DocumentsDb,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocStore")
    }
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let meta: String = r.get(8)?;
    Ok(VersionRow {
        version: r.get(0)?,
        version_name: r.get(1)?,
        display_name: r.get(2)?,
        content: r.get(3)?,
        format: r.get(4)?,
        hash: r.get(5)?,
        created: r.get(6)?,
        meta: serde_json::from_str(&meta).unwrap_or(Value::Null),
    })
}

const VERSION_COLUMNS: &str =
    "version, version_name, display_name, content, format, hash, created, name, meta";

fn doc_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocRow> {
    Ok(DocRow {
        name: r.get(0)?,
        document_type: r.get(1)?,
        created: r.get(2)?,
        default_version: r.get(3)?,
        latest_version: r.get(4)?,
        tenant: r.get(5)?,
    })
}

const DOC_COLUMNS: &str = "name, document_type, created, default_version, latest_version, tenant";

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    /// CreateDocument of an existing name.
    Exists,
    /// UpdateDocument of a document that is gone.
    Missing,
    /// Another version became the latest meanwhile.
    Conflict,
    /// SQLite.
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Db(e)
    }
}

impl DocStore {
    /// The documents on the store's database.
    pub fn new(db: DocumentsDb) -> DocStore {
        DocStore { db }
    }

    /// Runs `f` on the database, off the async workers.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, SsmError> {
        self.db.with(f).await.map_err(SsmError::internal)
    }
}

/// A document by name.
pub fn get_doc(c: &Connection, tenant: &str, name: &str) -> rusqlite::Result<Option<DocRow>> {
    c.query_row(
        &format!("SELECT {DOC_COLUMNS} FROM ssm_documents WHERE tenant = ?2 AND name = ?1"),
        params![name, tenant],
        doc_row,
    )
    .optional()
}

/// One version.
pub fn get_version(
    c: &Connection,
    tenant: &str,
    name: &str,
    v: i64,
) -> rusqlite::Result<Option<VersionRow>> {
    c.query_row(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM ssm_document_versions WHERE tenant = ?3 AND name = ?1 AND version = ?2"
        ),
        params![name, v, tenant],
        version_row,
    )
    .optional()
}

fn version_by_name(
    c: &Connection,
    tenant: &str,
    name: &str,
    vn: &str,
) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT version FROM ssm_document_versions WHERE tenant = ?3 AND name = ?1 AND version_name = ?2",
        params![name, vn, tenant],
        |r| r.get(0),
    )
    .optional()
}

/// A version's attachments.
pub fn attachments(
    c: &Connection,
    tenant: &str,
    name: &str,
    v: i64,
) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = c.prepare(
        "SELECT file, bytes FROM ssm_attachments WHERE tenant = ?3 AND name = ?1 AND version = ?2 ORDER BY file",
    )?;
    let rows = stmt.query_map(params![name, v, tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn insert_version(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    name: &str,
    v: &VersionRow,
    files: &[(String, Vec<u8>)],
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO ssm_document_versions (name, version, version_name, display_name, content, format, hash, created, meta, tenant)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            name,
            v.version,
            v.version_name,
            v.display_name,
            v.content,
            v.format,
            v.hash,
            v.created,
            v.meta.to_string(),
            tenant
        ],
    )?;
    for (file, bytes) in files {
        tx.execute(
            "INSERT INTO ssm_attachments (name, version, file, bytes, tenant) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, v.version, file, bytes, tenant],
        )?;
    }
    Ok(())
}

/// Records which document version an execution runs.
pub fn insert_execution(c: &Connection, id: &str, e: &ExecRow) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO ssm_executions (execution_id, document_name, document_version, executed_by, tenant)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, e.document_name, e.document_version, e.executed_by, e.tenant],
    )?;
    Ok(())
}

/// The SSM facts of an execution.
pub fn get_execution(c: &Connection, id: &str) -> rusqlite::Result<Option<ExecRow>> {
    c.query_row(
        "SELECT document_name, document_version, executed_by, tenant FROM ssm_executions WHERE execution_id = ?1",
        params![id],
        |r| {
            Ok(ExecRow {
                document_name: r.get(0)?,
                document_version: r.get(1)?,
                executed_by: r.get(2)?,
                tenant: r.get(3)?,
            })
        },
    )
    .optional()
}

// ---------------------------------------------------------------------------------------------
// Request helpers.

/// A string field.
pub fn opt_str<'a>(req: &'a Value, field: &str) -> Result<Option<&'a str>, SsmError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SsmError::client(
            "SerializationException",
            format!("{field}: expected a string"),
        )),
    }
}

/// A required string field.
pub fn req_str<'a>(req: &'a Value, field: &str) -> Result<&'a str, SsmError> {
    opt_str(req, field)?.ok_or_else(|| {
        SsmError::validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(field)
        ))
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Checks a document name against the model's pattern and AWS's reserved prefixes.
pub fn check_name(name: &str) -> Result<(), SsmError> {
    let ok = (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.]{{3,128}}$"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "amazon", "amzn"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(SsmError::validation(format!(
            "Document name {name} is reserved: names may not start with aws, amazon or amzn"
        )));
    }
    Ok(())
}

/// `$LATEST`, `$DEFAULT`, a number, or absent (the default).
pub enum Selector {
    /// The default version.
    Default,
    /// The latest version.
    Latest,
    /// A number.
    Number(i64),
    /// A `VersionName`.
    Named(String),
}

/// Reads `DocumentVersion` / `VersionName`.
pub fn selector(req: &Value) -> Result<Selector, SsmError> {
    if let Some(v) = opt_str(req, "DocumentVersion")? {
        return match v {
            "$LATEST" => Ok(Selector::Latest),
            "$DEFAULT" => Ok(Selector::Default),
            n => match n.parse::<i64>() {
                // The model's pattern: ^[1-9][0-9]*$.
                Ok(n) if n >= 1 && v.starts_with(|c: char| c.is_ascii_digit() && c != '0') => {
                    Ok(Selector::Number(n))
                }
                _ => Err(SsmError::client(
                    "InvalidDocumentVersion",
                    format!(
                        "The document version {v} is not valid: use $LATEST, $DEFAULT or a version number"
                    ),
                )),
            },
        };
    }
    if let Some(n) = opt_str(req, "VersionName")? {
        return Ok(Selector::Named(n.to_string()));
    }
    Ok(Selector::Default)
}

/// Resolves a selector to a version number; `None` when that version does not exist.
pub fn resolve(c: &Connection, doc: &DocRow, sel: &Selector) -> rusqlite::Result<Option<i64>> {
    Ok(match sel {
        Selector::Default => Some(doc.default_version),
        Selector::Latest => Some(doc.latest_version),
        Selector::Number(n) => get_version(c, &doc.tenant, &doc.name, *n)?.map(|v| v.version),
        Selector::Named(vn) => version_by_name(c, &doc.tenant, &doc.name, vn)?,
    })
}

fn now_secs() -> f64 {
    crate::record::Timestamp::now().epoch_secs()
}

/// What checking a document needs, owned so that it runs off the async workers.
struct BuildContext {
    catalog: Arc<crate::runtimes::Catalog>,
    max_timeout_secs: u64,
    scratch: PathBuf,
    policy: super::attachments::Policy,
}

/// Checks the content and builds the version off the async workers, under the attachment
/// deadline (`server.ssm_attachment_read_seconds`).
async fn build_version(
    st: &SsmState,
    req: &Value,
    name: &str,
    version: i64,
    previous_files: Files,
) -> Result<(VersionRow, Files), SsmError> {
    let srv = &st.settings.server;
    let ctx = BuildContext {
        catalog: st.catalog.clone(),
        max_timeout_secs: st.settings.limits.max_timeout_seconds,
        scratch: st.scratch.clone(),
        policy: super::attachments::Policy {
            roots: srv.ssm_attachment_roots.clone(),
            max_bytes: srv.ssm_attachment_max_bytes,
            anonymous: st.keys.is_none(),
        },
    };
    let deadline = std::time::Duration::from_secs(srv.ssm_attachment_read_seconds);
    let (req, name) = (req.clone(), name.to_string());
    let checks = st.checks.clone();
    let work = async move {
        let place = checks.acquire_owned().await.map_err(SsmError::internal)?;
        tokio::task::spawn_blocking(move || {
            // The place is held until the blocking work ends, even past the deadline.
            let _place = place;
            build_version_blocking(&ctx, &req, &name, version, previous_files)
        })
        .await
        .map_err(SsmError::internal)?
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(built) => built,
        Err(_) => Err(SsmError::validation(format!(
            "Attachments: reading and checking the document took longer than {} s (server.ssm_attachment_read_seconds)",
            deadline.as_secs()
        ))),
    }
}

fn build_version_blocking(
    ctx: &BuildContext,
    req: &Value,
    name: &str,
    version: i64,
    previous_files: Files,
) -> Result<(VersionRow, Files), SsmError> {
    let content = req_str(req, "Content")?;
    if content.is_empty() {
        return Err(SsmError::validation("Content must not be empty"));
    }
    let format = document_format(req, content)?;
    let declared = super::attachments::declared_files(content, format);
    let files = super::attachments::read(req, &declared, &ctx.policy)?.unwrap_or(previous_files);
    let mut doc = checked(ctx, content, name, format, &files)?;
    let mut files: Vec<(String, Vec<u8>)> =
        std::mem::take(&mut doc.attachments).into_iter().collect();
    files.sort();
    let v = VersionRow {
        version,
        version_name: opt_str(req, "VersionName")?.map(str::to_string),
        display_name: opt_str(req, "DisplayName")?.map(str::to_string),
        content: content.to_string(),
        format: match format {
            rb::yaml::Format::Json => "JSON".into(),
            rb::yaml::Format::Yaml => "YAML".into(),
        },
        hash: hex(&Sha256::digest(content.as_bytes())),
        created: now_secs(),
        meta: version_meta(&doc, &files),
    };
    Ok((v, files))
}

/// `DocumentFormat`: YAML or JSON, detected when absent.
fn document_format(req: &Value, content: &str) -> Result<rb::yaml::Format, SsmError> {
    match opt_str(req, "DocumentFormat")? {
        None => Ok(rb::yaml::Format::detect("", content)),
        Some("JSON") => Ok(rb::yaml::Format::Json),
        Some("YAML") => Ok(rb::yaml::Format::Yaml),
        Some(other) => Err(SsmError::client(
            "InvalidDocumentContent",
            format!(
                "DocumentFormat {other} is not valid for an Automation document: use YAML or JSON"
            ),
        )),
    }
}

/// Loads the document as `scriptbox run` would, with `files` as its attachments: its
/// problems, if any, are the refusal (scratch paths and content hashes left out).
fn checked(
    ctx: &BuildContext,
    content: &str,
    name: &str,
    format: rb::yaml::Format,
    files: &Files,
) -> Result<rb::document::Runbook, SsmError> {
    // The checked bytes go to a fresh folder of the daemon's, which the document check reads.
    let dir = ctx.scratch.join(uuid::Uuid::new_v4().to_string());
    let loaded = (|| {
        std::fs::create_dir_all(&dir).map_err(SsmError::internal)?;
        for (f, bytes) in files {
            std::fs::write(dir.join(f), bytes).map_err(SsmError::internal)?;
        }
        let options = rb::document::LoadOptions {
            catalog: &ctx.catalog,
            max_timeout_secs: ctx.max_timeout_secs,
            attachments_dir: None,
        };
        let scratch_prefix = format!("{}/", dir.display());
        rb::document::load_str(content, name, format, &dir, &options).map_err(|refused| {
            let text: Vec<String> = refused
                .problems
                .iter()
                .map(|p| {
                    let text = p.to_string().replace(
                        "(give the folder with --attachments DIR)",
                        "(give the folder in Attachments: Key SourceUrl, Values [\"file:///abs/folder\"])",
                    );
                    super::attachments::redact_hashes(&text.replace(&scratch_prefix, ""))
                })
                .collect();
            SsmError::client("InvalidDocumentContent", text.join("\n"))
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

/// What DescribeDocument shows of a version beyond its row: parameters and attachments.
fn version_meta(doc: &rb::document::Runbook, files: &[(String, Vec<u8>)]) -> Value {
    let parameters: Vec<Value> = doc
        .parameters
        .iter()
        .map(|p| {
            let mut m = json!({"Name": p.name, "Type": p.type_name});
            if let Some(d) = &p.description {
                m["Description"] = json!(d);
            }
            if let Some(d) = &p.default {
                m["DefaultValue"] = json!(match d {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
            m
        })
        .collect();
    let mut meta = json!({
        "SchemaVersion": "0.3",
        "Parameters": parameters,
        "AttachmentsInformation": files.iter().map(|(f, _)| json!({"Name": f})).collect::<Vec<_>>(),
        "Attachments": files.iter().map(|(f, b)| json!({
            "Name": f,
            "Size": b.len(),
            "Hash": hex(&Sha256::digest(b)),
            "HashType": "Sha256",
        })).collect::<Vec<_>>(),
    });
    if let Some(d) = &doc.description {
        meta["Description"] = json!(d);
    }
    meta
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `DocumentDescription` of a version.
pub fn description(st: &SsmState, doc: &DocRow, v: &VersionRow) -> Value {
    let mut m = json!({
        "Hash": v.hash,
        "HashType": "Sha256",
        "Name": doc.name,
        "Owner": st.settings.context.account_id,
        "CreatedDate": v.created,
        "Status": "Active",
        "DocumentVersion": v.version.to_string(),
        "Parameters": v.meta["Parameters"],
        "PlatformTypes": ["Windows", "Linux", "MacOS"],
        "DocumentType": doc.document_type,
        "SchemaVersion": "0.3",
        "LatestVersion": doc.latest_version.to_string(),
        "DefaultVersion": doc.default_version.to_string(),
        "DocumentFormat": v.format,
        "Tags": [],
    });
    if let Some(d) = v.meta.get("Description") {
        m["Description"] = d.clone();
    }
    if let Some(a) = v
        .meta
        .get("AttachmentsInformation")
        .and_then(Value::as_array)
        && !a.is_empty()
    {
        m["AttachmentsInformation"] = json!(a);
    }
    if let Some(n) = &v.version_name {
        m["VersionName"] = json!(n);
    }
    if let Some(n) = &v.display_name {
        m["DisplayName"] = json!(n);
    }
    m
}

fn db(e: rusqlite::Error) -> SsmError {
    SsmError::internal(format!("database: {e}"))
}

/// CreateDocument.
pub async fn create(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    check_name(&name)?;
    let ty = opt_str(req, "DocumentType")?
        .unwrap_or("Automation")
        .to_string();
    if ty != "Automation" {
        return Err(SsmError::validation(format!(
            "DocumentType {ty}: scriptbox stores and runs Automation documents only"
        )));
    }
    let (v, files) = build_version(st, req, &name, 1, vec![]).await?;
    let doc = DocRow {
        tenant: caller.tenant.clone(),
        name: name.clone(),
        document_type: ty,
        created: v.created,
        default_version: 1,
        latest_version: 1,
    };
    let (d2, v2) = (doc.clone(), v.clone());
    let r = st
        .docs
        .with(move |c| -> Result<(), WriteError> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if get_doc(&tx, &d2.tenant, &d2.name)?.is_some() {
                return Err(WriteError::Exists);
            }
            tx.execute(
                "INSERT INTO ssm_documents (name, document_type, created, default_version, latest_version, tenant) VALUES (?1, ?2, ?3, 1, 1, ?4)",
                params![d2.name, d2.document_type, d2.created, d2.tenant],
            )?;
            insert_version(&tx, &d2.tenant, &d2.name, &v2, &files)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    match r {
        Ok(()) => Ok(json!({"DocumentDescription": description(st, &doc, &v)})),
        Err(WriteError::Exists) => Err(SsmError::client(
            "DocumentAlreadyExists",
            "Document with same name already exists",
        )),
        Err(WriteError::Db(e)) => Err(db(e)),
        Err(_) => Err(SsmError::internal("unexpected")),
    }
}

/// UpdateDocument: a new version (of the latest).
pub async fn update(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let sel = selector(req)?;
    let n2 = name.clone();
    let t2 = caller.tenant.clone();
    let (doc, latest, files) = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &t2, &n2)? else {
                return Ok(None);
            };
            let latest = get_version(c, &t2, &n2, doc.latest_version)?;
            let files = attachments(c, &t2, &n2, doc.latest_version)?;
            Ok(Some((doc, latest, files)))
        })
        .await?
        .map_err(db)?
        .ok_or_else(|| SsmError::no_document(&name))?;
    let latest = latest.ok_or_else(|| SsmError::internal("latest version missing"))?;
    // Only the latest version can be updated.
    let ok = match &sel {
        Selector::Latest => true,
        Selector::Default => {
            req.get("DocumentVersion").is_none() || doc.default_version == doc.latest_version
        }
        Selector::Number(n) => *n == doc.latest_version,
        Selector::Named(_) => true,
    };
    if !ok {
        return Err(SsmError::client(
            "InvalidDocumentVersion",
            format!(
                "The document version is not valid or does not exist: only the latest version ({}) can be updated",
                doc.latest_version
            ),
        ));
    }
    let (mut v, files) = build_version(st, req, &name, doc.latest_version + 1, files).await?;
    if v.hash == latest.hash {
        return Err(SsmError::client(
            "DuplicateDocumentContent",
            "The content of the association document matches another document. Change the content of the document and try again.",
        ));
    }
    if v.display_name.is_none() {
        v.display_name = latest.display_name.clone();
    }
    if let Some(vn) = v.version_name.clone() {
        let n2 = name.clone();
        let t2 = caller.tenant.clone();
        let taken = st
            .docs
            .with(move |c| version_by_name(c, &t2, &n2, &vn))
            .await?
            .map_err(db)?;
        if taken.is_some() {
            return Err(SsmError::client(
                "DuplicateDocumentVersionName",
                "The version name has already been used in this document. Specify a different version name, and then try again.",
            ));
        }
    }
    let expected = doc.latest_version;
    let (n2, v2, t2) = (name.clone(), v.clone(), caller.tenant.clone());
    let r = st
        .docs
        .with(move |c| -> Result<DocRow, WriteError> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let doc = get_doc(&tx, &t2, &n2)?.ok_or(WriteError::Missing)?;
            if doc.latest_version != expected {
                return Err(WriteError::Conflict);
            }
            insert_version(&tx, &t2, &n2, &v2, &files)?;
            tx.execute(
                "UPDATE ssm_documents SET latest_version = ?2 WHERE tenant = ?3 AND name = ?1",
                params![n2, v2.version, t2],
            )?;
            let doc = get_doc(&tx, &t2, &n2)?.ok_or(WriteError::Missing)?;
            tx.commit()?;
            Ok(doc)
        })
        .await?;
    match r {
        Ok(doc) => Ok(json!({"DocumentDescription": description(st, &doc, &v)})),
        Err(WriteError::Missing) => Err(SsmError::no_document(&name)),
        Err(WriteError::Conflict) => Err(SsmError::client(
            "TooManyUpdates",
            "Another update of this document is in progress; try again",
        )),
        Err(WriteError::Db(e)) => Err(db(e)),
        Err(WriteError::Exists) => Err(SsmError::internal("unexpected")),
    }
}

/// Finds the document and the version a request selects (GetDocument, DescribeDocument).
async fn selected(
    st: &SsmState,
    caller: &Caller,
    req: &Value,
) -> Result<(DocRow, VersionRow), SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let sel = selector(req)?;
    let n2 = name.clone();
    let t2 = caller.tenant.clone();
    let found = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &t2, &n2)? else {
                return Ok(None);
            };
            let v = match resolve(c, &doc, &sel)? {
                Some(n) => get_version(c, &t2, &n2, n)?,
                None => None,
            };
            Ok(Some((doc, v)))
        })
        .await?
        .map_err(db)?;
    match found {
        None => Err(SsmError::no_document(&name)),
        Some((_, None)) => Err(SsmError::client(
            "InvalidDocumentVersion",
            "The document version is not valid or does not exist.",
        )),
        Some((doc, Some(v))) => Ok((doc, v)),
    }
}

/// GetDocument.
pub async fn get(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let (doc, v) = selected(st, caller, req).await?;
    if let Some(f) = opt_str(req, "DocumentFormat")?
        && f != v.format
    {
        return Err(SsmError::client(
            "InvalidDocumentOperation",
            format!(
                "scriptbox returns a document in the format it was stored in ({}), not {f}",
                v.format
            ),
        ));
    }
    let mut m = json!({
        "Name": doc.name,
        "CreatedDate": v.created,
        "DocumentVersion": v.version.to_string(),
        "Status": "Active",
        "Content": v.content,
        "DocumentType": doc.document_type,
        "DocumentFormat": v.format,
    });
    if let Some(a) = v.meta.get("Attachments").and_then(Value::as_array)
        && !a.is_empty()
    {
        m["AttachmentsContent"] = json!(a);
    }
    if let Some(n) = &v.version_name {
        m["VersionName"] = json!(n);
    }
    if let Some(n) = &v.display_name {
        m["DisplayName"] = json!(n);
    }
    Ok(m)
}

/// DescribeDocument.
pub async fn describe(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let (doc, v) = selected(st, caller, req).await?;
    Ok(json!({"Document": description(st, &doc, &v)}))
}

/// DeleteDocument: the whole document, or one version (not the default one).
pub async fn delete(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let one = if req.get("DocumentVersion").is_some() || req.get("VersionName").is_some() {
        Some(selector(req)?)
    } else {
        None
    };
    let n2 = name.clone();
    let t2 = caller.tenant.clone();
    let r = st
        .docs
        .with(move |c| -> rusqlite::Result<Result<(), SsmError>> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(doc) = get_doc(&tx, &t2, &n2)? else {
                return Ok(Err(SsmError::no_document(&n2)));
            };
            match one {
                None => {
                    for table in ["ssm_attachments", "ssm_document_versions", "ssm_documents"] {
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE tenant = ?2 AND name = ?1"),
                            params![n2, t2],
                        )?;
                    }
                }
                Some(sel) => {
                    let Some(n) = resolve(&tx, &doc, &sel)? else {
                        return Ok(Err(SsmError::client(
                            "InvalidDocumentVersion",
                            "The document version is not valid or does not exist.",
                        )));
                    };
                    if n == doc.default_version {
                        return Ok(Err(SsmError::client(
                            "InvalidDocumentOperation",
                            "You attempted to delete the default version of the document. Delete the whole document, or make another version the default first.",
                        )));
                    }
                    tx.execute(
                        "DELETE FROM ssm_attachments WHERE tenant = ?3 AND name = ?1 AND version = ?2",
                        params![n2, n, t2],
                    )?;
                    tx.execute(
                        "DELETE FROM ssm_document_versions WHERE tenant = ?3 AND name = ?1 AND version = ?2",
                        params![n2, n, t2],
                    )?;
                    let latest: i64 = tx.query_row(
                        "SELECT MAX(version) FROM ssm_document_versions WHERE tenant = ?2 AND name = ?1",
                        params![n2, t2],
                        |r| r.get(0),
                    )?;
                    tx.execute(
                        "UPDATE ssm_documents SET latest_version = ?2 WHERE tenant = ?3 AND name = ?1",
                        params![n2, latest, t2],
                    )?;
                }
            }
            tx.commit()?;
            Ok(Ok(()))
        })
        .await?
        .map_err(db)?;
    r.map(|()| json!({}))
}

/// UpdateDocumentDefaultVersion.
pub async fn set_default(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let version = req_str(req, "DocumentVersion")?;
    let n: i64 = version.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        SsmError::client(
            "InvalidDocumentVersion",
            format!("{version} is not a version number"),
        )
    })?;
    let n2 = name.clone();
    let t2 = caller.tenant.clone();
    st.docs
        .with(move |c| -> rusqlite::Result<Result<Value, SsmError>> {
            let Some(_) = get_doc(c, &t2, &n2)? else {
                return Ok(Err(SsmError::no_document(&n2)));
            };
            let Some(v) = get_version(c, &t2, &n2, n)? else {
                return Ok(Err(SsmError::client(
                    "InvalidDocumentVersion",
                    "The document version is not valid or does not exist.",
                )));
            };
            c.execute(
                "UPDATE ssm_documents SET default_version = ?2 WHERE tenant = ?3 AND name = ?1",
                params![n2, n, t2],
            )?;
            let mut d = json!({"Name": n2, "DefaultVersion": n.to_string()});
            if let Some(vn) = v.version_name {
                d["DefaultVersionName"] = json!(vn);
            }
            Ok(Ok(json!({"Description": d})))
        })
        .await?
        .map_err(db)?
}

/// `MaxResults`: 1 to 50, 50 when absent.
pub fn max_results(req: &Value) -> Result<usize, SsmError> {
    match req.get("MaxResults") {
        None | Some(Value::Null) => Ok(50),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=50).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| SsmError::validation("MaxResults must be between 1 and 50")),
    }
}

/// ListDocuments' `Filters` and `DocumentFilterList` as (key, values); unknown keys refused.
fn list_filters(req: &Value) -> Result<Vec<(String, Vec<String>)>, SsmError> {
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(list) = req.get("Filters").and_then(Value::as_array) {
        for f in list {
            let key = opt_str(f, "Key")?.unwrap_or("").to_string();
            let values = f
                .get("Values")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            filters.push((key, values));
        }
    }
    if let Some(list) = req.get("DocumentFilterList").and_then(Value::as_array) {
        for f in list {
            let key = opt_str(f, "key")?.unwrap_or("").to_string();
            let value = opt_str(f, "value")?.unwrap_or("").to_string();
            filters.push((key, vec![value]));
        }
    }
    for (k, _) in &filters {
        if ![
            "Name",
            "DocumentType",
            "Owner",
            "SearchKeyword",
            "PlatformTypes",
        ]
        .contains(&k.as_str())
            && !k.starts_with("tag:")
        {
            return Err(SsmError::client(
                "InvalidFilterKey",
                format!("The filter key {k} is not valid"),
            ));
        }
    }
    Ok(filters)
}

/// A document's `DocumentIdentifier`.
fn identifier(st: &SsmState, d: &DocRow, v: &VersionRow) -> Value {
    let mut m = json!({
        "Name": d.name,
        "CreatedDate": d.created,
        "Owner": st.settings.context.account_id,
        "PlatformTypes": ["Windows", "Linux", "MacOS"],
        "DocumentVersion": v.version.to_string(),
        "DocumentType": d.document_type,
        "SchemaVersion": "0.3",
        "DocumentFormat": v.format,
        "Tags": [],
    });
    if let Some(n) = &v.version_name {
        m["VersionName"] = json!(n);
    }
    if let Some(n) = &v.display_name {
        m["DisplayName"] = json!(n);
    }
    m
}

/// ListDocuments: our documents, by name; `Filters` on `Name` (prefix: `BeginsWith` key,
/// or exact `Name`), `DocumentType`, `Owner` (`Self`, `Private`, `All` match);
/// `DocumentFilterList` likewise.
pub async fn list(st: &SsmState, caller: &Caller, req: &Value) -> Result<Value, SsmError> {
    let max = max_results(req)?;
    let after = opt_str(req, "NextToken")?.map(str::to_string);
    let filters = list_filters(req)?;
    let t2 = caller.tenant.clone();
    let rows = st
        .docs
        .with(
            move |c| -> rusqlite::Result<Vec<(DocRow, Option<VersionRow>)>> {
                let mut stmt = c.prepare(&format!(
                    "SELECT {DOC_COLUMNS} FROM ssm_documents WHERE tenant = ?2 AND name > ?1 ORDER BY name"
                ))?;
                let docs: Vec<DocRow> = stmt
                    .query_map(params![after.unwrap_or_default(), t2], doc_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let mut out = Vec::new();
                for d in docs {
                    let v = get_version(c, &d.tenant, &d.name, d.default_version)?;
                    out.push((d, v));
                }
                Ok(out)
            },
        )
        .await?
        .map_err(db)?;
    let matches = |d: &DocRow| {
        filters.iter().all(|(k, vals)| match k.as_str() {
            "Name" => vals.iter().any(|v| &d.name == v),
            "DocumentType" => vals.iter().any(|v| v == &d.document_type),
            "Owner" => vals.iter().any(|v| {
                ["Self", "Private", "All"].contains(&v.as_str())
                    || v == &st.settings.context.account_id
            }),
            "SearchKeyword" => vals.iter().any(|v| d.name.contains(v.as_str())),
            "PlatformTypes" => true,
            _ => false,
        })
    };
    let mut out = Vec::new();
    let mut next = None;
    for (d, v) in rows.iter().filter(|(d, _)| matches(d)) {
        if out.len() == max {
            next = out
                .last()
                .and_then(|o: &Value| o["Name"].as_str().map(str::to_string));
            break;
        }
        let Some(v) = v else { continue };
        out.push(identifier(st, d, v));
    }
    let mut body = json!({"DocumentIdentifiers": out});
    if let Some(n) = next {
        body["NextToken"] = json!(n);
    }
    Ok(body)
}

/// What StartAutomationExecution needs of a document.
pub struct Runnable {
    /// The version number.
    pub version: i64,
    /// The text.
    pub content: String,
    /// Its attachments.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The version StartAutomationExecution runs.
pub async fn runnable(st: &SsmState, caller: &Caller, req: &Value) -> Result<Runnable, SsmError> {
    let name = req_str(req, "DocumentName")?.to_string();
    let sel = match selector(req) {
        Ok(s) => s,
        Err(_) => {
            return Err(SsmError::client(
                "AutomationDefinitionVersionNotFoundException",
                format!("Automation document {name} has no such version"),
            ));
        }
    };
    let n2 = name.clone();
    let t2 = caller.tenant.clone();
    let found = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &t2, &n2)? else {
                return Ok(None);
            };
            let Some(n) = resolve(c, &doc, &sel)? else {
                return Ok(Some(None));
            };
            let v = get_version(c, &t2, &n2, n)?;
            let files = attachments(c, &t2, &n2, n)?;
            Ok(Some(v.map(|v| (v, files))))
        })
        .await?
        .map_err(db)?;
    match found {
        None => Err(SsmError::client(
            "AutomationDefinitionNotFoundException",
            format!("Automation document {name} does not exist"),
        )),
        Some(None) => Err(SsmError::client(
            "AutomationDefinitionVersionNotFoundException",
            format!(
                "Automation document {name} has no version {}",
                opt_str(req, "DocumentVersion")?.unwrap_or("")
            ),
        )),
        Some(Some((v, files))) => Ok(Runnable {
            version: v.version,
            content: v.content,
            files,
        }),
    }
}

/// For tests and tools: the parameter map of a request as the runbook's typed parameters
/// (each AWS list of strings is given as is; the parameter code reads the API form).
pub fn parameters(req: &Value) -> Result<Map<String, Value>, SsmError> {
    let mut out = Map::new();
    match req.get("Parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(items) = v.as_array().filter(|a| a.iter().all(Value::is_string)) else {
                    return Err(SsmError::client(
                        "SerializationException",
                        format!("Parameters.{k}: expected a list of strings"),
                    ));
                };
                out.insert(k.clone(), Value::Array(items.clone()));
            }
        }
        Some(_) => {
            return Err(SsmError::client(
                "SerializationException",
                "Parameters: expected a map of name to list of strings",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of before tenants: its documents become the default tenant's.
    #[tokio::test]
    async fn documents_of_before_tenants_become_the_default_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("scriptbox.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE ssm_documents (name TEXT PRIMARY KEY, document_type TEXT NOT NULL, created REAL NOT NULL, default_version INTEGER NOT NULL, latest_version INTEGER NOT NULL);
             CREATE TABLE ssm_document_versions (name TEXT NOT NULL, version INTEGER NOT NULL, version_name TEXT, display_name TEXT, content TEXT NOT NULL, format TEXT NOT NULL, hash TEXT NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (name, version));
             CREATE TABLE ssm_attachments (name TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (name, version, file));
             CREATE TABLE ssm_executions (execution_id TEXT PRIMARY KEY, document_name TEXT NOT NULL, document_version TEXT NOT NULL, executed_by TEXT);
             INSERT INTO ssm_documents VALUES ('Old', 'Automation', 1.0, 1, 1);
             INSERT INTO ssm_document_versions VALUES ('Old', 1, NULL, NULL, 'x', 'YAML', 'h', 1.0, '{}');
             INSERT INTO ssm_attachments VALUES ('Old', 1, 'a.py', x'00');
             INSERT INTO ssm_executions VALUES ('e1', 'Old', '1', 'AKID');",
        )
        .unwrap();
        drop(c);
        let check = |c: &mut Connection| {
            assert_eq!(
                get_doc(c, "default", "Old").unwrap().unwrap().tenant,
                "default"
            );
            assert!(get_doc(c, "team-a", "Old").unwrap().is_none());
            assert_eq!(
                get_version(c, "default", "Old", 1)
                    .unwrap()
                    .unwrap()
                    .content,
                "x"
            );
            assert_eq!(attachments(c, "default", "Old", 1).unwrap().len(), 1);
            assert_eq!(get_execution(c, "e1").unwrap().unwrap().tenant, "default");
        };
        {
            let store = crate::store::Store::open(dir.path()).unwrap();
            let docs = DocStore::new(store.documents());
            docs.with(check).await.unwrap();
        }
        // Opening again changes nothing.
        let store = crate::store::Store::open(dir.path()).unwrap();
        let docs = DocStore::new(store.documents());
        docs.with(check).await.unwrap();
    }

    /// A database made by the code before the one migration list: the execution store's
    /// migration 1 on one connection, the SSM tables on a second one. It opens and keeps its
    /// executions and documents.
    #[tokio::test]
    async fn a_database_of_two_connections_keeps_its_executions_and_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scriptbox.db");
        {
            let c = Connection::open(&path).unwrap();
            let crate::store::migrations::Migration::Sql(first) =
                &crate::store::migrations::MIGRATIONS[0]
            else {
                panic!("migration 1 is SQL")
            };
            c.execute_batch(first).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO executions (id, kind, status, request, result, submitted_at, ended_at)
                     VALUES ('x1', 'Runbook', 'Success', '{}', '{\"Status\":\"Success\"}', 't0', 't1');",
            )
            .unwrap();
        }
        {
            // Today's second connection: the tenant-scoped tables, with a document.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS ssm_documents (tenant TEXT NOT NULL, name TEXT NOT NULL, document_type TEXT NOT NULL, created REAL NOT NULL, default_version INTEGER NOT NULL, latest_version INTEGER NOT NULL, PRIMARY KEY (tenant, name));
                 CREATE TABLE IF NOT EXISTS ssm_document_versions (tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, version_name TEXT, display_name TEXT, content TEXT NOT NULL, format TEXT NOT NULL, hash TEXT NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (tenant, name, version));
                 CREATE TABLE IF NOT EXISTS ssm_attachments (tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (tenant, name, version, file));
                 CREATE TABLE IF NOT EXISTS ssm_executions (execution_id TEXT PRIMARY KEY, document_name TEXT NOT NULL, document_version TEXT NOT NULL, executed_by TEXT, tenant TEXT NOT NULL DEFAULT 'default');
                 INSERT INTO ssm_documents VALUES ('team-a', 'Doc', 'Automation', 1.0, 1, 2);
                 INSERT INTO ssm_document_versions VALUES ('team-a', 'Doc', 1, NULL, NULL, 'v1', 'YAML', 'h', 1.0, '{}');
                 INSERT INTO ssm_document_versions VALUES ('team-a', 'Doc', 2, NULL, NULL, 'v2', 'YAML', 'h', 1.0, '{}');
                 INSERT INTO ssm_executions VALUES ('x1', 'Doc', '1', 'AKID', 'team-a');",
            )
            .unwrap();
        }
        let store = crate::store::Store::open(dir.path()).unwrap();
        use crate::store::ExecutionStore as _;
        let row = store.get("x1").await.unwrap().unwrap();
        assert_eq!(row.status, crate::store::ExecStatus::Success);
        assert_eq!(
            row.native_json(),
            serde_json::json!({"Status": "Success"}),
            "a record of before is shown as it was stored"
        );
        let docs = DocStore::new(store.documents());
        docs.with(|c| {
            let doc = get_doc(c, "team-a", "Doc").unwrap().unwrap();
            assert_eq!((doc.default_version, doc.latest_version), (1, 2));
            assert_eq!(
                get_version(c, "team-a", "Doc", 2).unwrap().unwrap().content,
                "v2"
            );
            assert_eq!(get_execution(c, "x1").unwrap().unwrap().tenant, "team-a");
        })
        .await
        .unwrap();
    }

    #[test]
    fn names_follow_the_model() {
        assert!(check_name("My-Doc_1.0").is_ok());
        for bad in ["ab", "has space", "AWS-Thing", "amazonX", &"x".repeat(129)] {
            assert_eq!(
                check_name(bad).unwrap_err().code,
                "ValidationException",
                "{bad}"
            );
        }
    }

    #[test]
    fn versions_are_latest_default_or_numbers() {
        let sel = |v: &str| selector(&json!({"DocumentVersion": v}));
        assert!(matches!(sel("$LATEST"), Ok(Selector::Latest)));
        assert!(matches!(sel("$DEFAULT"), Ok(Selector::Default)));
        assert!(matches!(sel("12"), Ok(Selector::Number(12))));
        for bad in ["0", "01", "-1", "+2", "two", ""] {
            assert_eq!(
                sel(bad).err().map(|e| e.code),
                Some("InvalidDocumentVersion"),
                "{bad}"
            );
        }
        assert!(matches!(selector(&json!({})), Ok(Selector::Default)));
        assert!(matches!(
            selector(&json!({"VersionName": "v"})),
            Ok(Selector::Named(n)) if n == "v"
        ));
    }

    #[test]
    fn parameters_are_lists_of_strings() {
        let p = parameters(&json!({"Parameters": {"A": ["x"], "B": ["1", "2"]}})).unwrap();
        assert_eq!(p["B"], json!(["1", "2"]));
        assert_eq!(
            parameters(&json!({"Parameters": {"A": "x"}}))
                .unwrap_err()
                .code,
            "SerializationException"
        );
    }
}
