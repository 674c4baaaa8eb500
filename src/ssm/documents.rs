//! SSM documents: CreateDocument, UpdateDocument, DeleteDocument, GetDocument,
//! DescribeDocument, ListDocuments, UpdateDocumentDefaultVersion.
//!
//! Documents live in the daemon's database (`scriptbox.db`) in tables of their own, created by
//! [`DocStore::open`] (`CREATE TABLE IF NOT EXISTS`, apart from the execution store's numbered
//! migrations): each version keeps its content, format, SHA-256, a description computed when it
//! was stored, and the bytes of its attachments (read from a local folder at CreateDocument /
//! UpdateDocument time and verified against the document's `files`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::SsmState;
use super::errors::SsmError;
use crate::runbook as rb;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ssm_documents (
    name TEXT PRIMARY KEY,
    document_type TEXT NOT NULL,
    created REAL NOT NULL,
    default_version INTEGER NOT NULL,
    latest_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ssm_document_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    version_name TEXT,
    display_name TEXT,
    content TEXT NOT NULL,
    format TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS ssm_attachments (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (name, version, file)
);
CREATE TABLE IF NOT EXISTS ssm_executions (
    execution_id TEXT PRIMARY KEY,
    document_name TEXT NOT NULL,
    document_version TEXT NOT NULL,
    executed_by TEXT
);";

/// Attachments: file name and bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// A document.
#[derive(Debug, Clone)]
pub struct DocRow {
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
}

/// The documents' tables, on a connection of their own.
pub struct DocStore {
    conn: Arc<Mutex<Connection>>,
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
    })
}

const DOC_COLUMNS: &str = "name, document_type, created, default_version, latest_version";

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
    /// Opens `<data_dir>/scriptbox.db` and creates the documents' tables if missing.
    pub fn open(data_dir: &Path) -> Result<DocStore, String> {
        let path = data_dir.join("scriptbox.db");
        let conn = Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| format!("{}: SSM tables: {e}", path.display()))?;
        Ok(DocStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, SsmError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().expect("ssm db lock");
            f(&mut c)
        })
        .await
        .map_err(SsmError::internal)
    }
}

/// A document by name.
pub fn get_doc(c: &Connection, name: &str) -> rusqlite::Result<Option<DocRow>> {
    c.query_row(
        &format!("SELECT {DOC_COLUMNS} FROM ssm_documents WHERE name = ?1"),
        params![name],
        doc_row,
    )
    .optional()
}

/// One version.
pub fn get_version(c: &Connection, name: &str, v: i64) -> rusqlite::Result<Option<VersionRow>> {
    c.query_row(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM ssm_document_versions WHERE name = ?1 AND version = ?2"
        ),
        params![name, v],
        version_row,
    )
    .optional()
}

fn version_by_name(c: &Connection, name: &str, vn: &str) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT version FROM ssm_document_versions WHERE name = ?1 AND version_name = ?2",
        params![name, vn],
        |r| r.get(0),
    )
    .optional()
}

/// A version's attachments.
pub fn attachments(c: &Connection, name: &str, v: i64) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = c.prepare(
        "SELECT file, bytes FROM ssm_attachments WHERE name = ?1 AND version = ?2 ORDER BY file",
    )?;
    let rows = stmt.query_map(params![name, v], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn insert_version(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    v: &VersionRow,
    files: &[(String, Vec<u8>)],
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO ssm_document_versions (name, version, version_name, display_name, content, format, hash, created, meta)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            name,
            v.version,
            v.version_name,
            v.display_name,
            v.content,
            v.format,
            v.hash,
            v.created,
            v.meta.to_string()
        ],
    )?;
    for (file, bytes) in files {
        tx.execute(
            "INSERT INTO ssm_attachments (name, version, file, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![name, v.version, file, bytes],
        )?;
    }
    Ok(())
}

/// Records which document version an execution runs.
pub fn insert_execution(c: &Connection, id: &str, e: &ExecRow) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO ssm_executions (execution_id, document_name, document_version, executed_by)
         VALUES (?1, ?2, ?3, ?4)",
        params![id, e.document_name, e.document_version, e.executed_by],
    )?;
    Ok(())
}

/// The SSM facts of an execution.
pub fn get_execution(c: &Connection, id: &str) -> rusqlite::Result<Option<ExecRow>> {
    c.query_row(
        "SELECT document_name, document_version, executed_by FROM ssm_executions WHERE execution_id = ?1",
        params![id],
        |r| {
            Ok(ExecRow {
                document_name: r.get(0)?,
                document_version: r.get(1)?,
                executed_by: r.get(2)?,
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
        Selector::Number(n) => get_version(c, &doc.name, *n)?.map(|v| v.version),
        Selector::Named(vn) => version_by_name(c, &doc.name, vn)?,
    })
}

fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// The attachments a request names, read into a fresh folder (the local extension of
/// `Attachments`): `SourceUrl` → a folder (`file:///abs/dir` or `/abs/dir`) whose files the
/// document's `files` name; `S3FileUrl` → one file (`file:///abs/f.py`), stored under `Name` or
/// its own file name.
fn gather_attachments(req: &Value, into: &Path) -> Result<Vec<PathBuf>, SsmError> {
    let mut folders = Vec::new();
    let Some(list) = req.get("Attachments") else {
        return Ok(folders);
    };
    let list = list.as_array().ok_or_else(|| {
        SsmError::client("SerializationException", "Attachments: expected a list")
    })?;
    for (i, a) in list.iter().enumerate() {
        let key = opt_str(a, "Key")?.unwrap_or("");
        let values: Vec<&str> = a
            .get("Values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let [value] = values.as_slice() else {
            return Err(SsmError::validation(format!(
                "Attachments[{i}].Values must hold exactly one value"
            )));
        };
        let local = value.strip_prefix("file://").unwrap_or(value).to_string();
        let path = PathBuf::from(&local);
        if !path.is_absolute() {
            return Err(SsmError::validation(format!(
                "Attachments[{i}]: scriptbox reads attachments from a local absolute path (file:///abs/folder or /abs/folder), not {value:?}; S3 URLs and AttachmentReference are not supported"
            )));
        }
        match key {
            "SourceUrl" => {
                if !path.is_dir() {
                    return Err(SsmError::validation(format!(
                        "Attachments[{i}]: SourceUrl {value:?} is not a folder the daemon can read"
                    )));
                }
                folders.push(path);
            }
            "S3FileUrl" => {
                let name = match opt_str(a, "Name")? {
                    Some(n) => n.to_string(),
                    None => path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string(),
                };
                if name.is_empty() || name.contains('/') {
                    return Err(SsmError::validation(format!(
                        "Attachments[{i}]: no file name for {value:?}"
                    )));
                }
                std::fs::copy(&path, into.join(&name)).map_err(|e| {
                    SsmError::validation(format!("Attachments[{i}]: cannot read {value:?}: {e}"))
                })?;
            }
            other => {
                return Err(SsmError::validation(format!(
                    "Attachments[{i}].Key {other:?}: scriptbox supports SourceUrl (a local folder) and S3FileUrl (a local file)"
                )));
            }
        }
    }
    Ok(folders)
}

/// [`build_version`] on a blocking thread: reading and checking a document is CPU work (bounded
/// by the runbook reader's limits), never done on the async workers.
async fn build_version_off_workers(
    st: &SsmState,
    req: &Value,
    name: &str,
    version: i64,
    previous_files: Vec<(String, Vec<u8>)>,
) -> Result<(VersionRow, Files), SsmError> {
    let (st, req, name) = (st.clone(), req.clone(), name.to_string());
    let work = tokio::task::spawn_blocking(move || {
        build_version(&st, &req, &name, version, previous_files)
    });
    let deadline = crate::server::scheduler::VALIDATION_DEADLINE;
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(built)) => built,
        Ok(Err(e)) => Err(SsmError::internal(e)),
        Err(_) => Err(SsmError::validation(format!(
            "checking the document took longer than {} s; it is refused",
            deadline.as_secs()
        ))),
    }
}

/// Checks the content (a schema 0.3 runbook, with its attachments) and builds the version.
fn build_version(
    st: &SsmState,
    req: &Value,
    name: &str,
    version: i64,
    previous_files: Vec<(String, Vec<u8>)>,
) -> Result<(VersionRow, Files), SsmError> {
    let content = req_str(req, "Content")?;
    if content.is_empty() {
        return Err(SsmError::validation("Content must not be empty"));
    }
    let format = match opt_str(req, "DocumentFormat")? {
        None => rb::yaml::Format::detect("", content),
        Some("JSON") => rb::yaml::Format::Json,
        Some("YAML") => rb::yaml::Format::Yaml,
        Some(other) => {
            return Err(SsmError::client(
                "InvalidDocumentContent",
                format!(
                    "DocumentFormat {other} is not valid for an Automation document: use YAML or JSON"
                ),
            ));
        }
    };
    let dir = st.scratch.join(uuid::Uuid::new_v4().to_string());
    let loaded = (|| {
        std::fs::create_dir_all(&dir).map_err(SsmError::internal)?;
        let folders = gather_attachments(req, &dir)?;
        if req.get("Attachments").is_none() {
            for (f, bytes) in &previous_files {
                std::fs::write(dir.join(f), bytes).map_err(SsmError::internal)?;
            }
        }
        let empty = std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        // One folder: the document's `files` are read from it directly. Several sources: their
        // files are gathered into the scratch folder first.
        let source = match folders.as_slice() {
            [only] if empty => only.clone(),
            _ => {
                for folder in &folders {
                    let rd = std::fs::read_dir(folder)
                        .map_err(|e| SsmError::validation(format!("{}: {e}", folder.display())))?;
                    for e in rd.flatten() {
                        if e.path().is_file() {
                            std::fs::copy(e.path(), dir.join(e.file_name()))
                                .map_err(SsmError::internal)?;
                        }
                    }
                }
                dir.clone()
            }
        };
        let options = rb::document::LoadOptions {
            catalog: &st.catalog,
            max_timeout_secs: st.settings.limits.max_timeout_seconds,
            attachments_dir: None,
        };
        rb::document::load_str(content, name, format, &source, &options).map_err(|refused| {
            let text: Vec<String> = refused
                .problems
                .iter()
                .map(|p| {
                    p.to_string().replace(
                        "(give the folder with --attachments DIR)",
                        "(give the folder in Attachments: Key SourceUrl, Values [\"file:///abs/folder\"])",
                    )
                })
                .collect();
            SsmError::client("InvalidDocumentContent", text.join("\n"))
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let doc = loaded?;
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
    let mut files: Vec<(String, Vec<u8>)> = doc.attachments.into_iter().collect();
    files.sort();
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
        meta,
    };
    Ok((v, files))
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
pub async fn create(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
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
    let (v, files) = build_version_off_workers(st, req, &name, 1, vec![]).await?;
    let doc = DocRow {
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
            let tx = c.transaction()?;
            if get_doc(&tx, &d2.name)?.is_some() {
                return Err(WriteError::Exists);
            }
            tx.execute(
                "INSERT INTO ssm_documents (name, document_type, created, default_version, latest_version) VALUES (?1, ?2, ?3, 1, 1)",
                params![d2.name, d2.document_type, d2.created],
            )?;
            insert_version(&tx, &d2.name, &v2, &files)?;
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
pub async fn update(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let sel = selector(req)?;
    let n2 = name.clone();
    let (doc, latest, files) = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &n2)? else {
                return Ok(None);
            };
            let latest = get_version(c, &n2, doc.latest_version)?;
            let files = attachments(c, &n2, doc.latest_version)?;
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
    let (mut v, files) =
        build_version_off_workers(st, req, &name, doc.latest_version + 1, files).await?;
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
        let taken = st
            .docs
            .with(move |c| version_by_name(c, &n2, &vn))
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
    let (n2, v2) = (name.clone(), v.clone());
    let r = st
        .docs
        .with(move |c| -> Result<DocRow, WriteError> {
            let tx = c.transaction()?;
            let doc = get_doc(&tx, &n2)?.ok_or(WriteError::Missing)?;
            if doc.latest_version != expected {
                return Err(WriteError::Conflict);
            }
            insert_version(&tx, &n2, &v2, &files)?;
            tx.execute(
                "UPDATE ssm_documents SET latest_version = ?2 WHERE name = ?1",
                params![n2, v2.version],
            )?;
            let doc = get_doc(&tx, &n2)?.ok_or(WriteError::Missing)?;
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
async fn selected(st: &SsmState, req: &Value) -> Result<(DocRow, VersionRow), SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let sel = selector(req)?;
    let n2 = name.clone();
    let found = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &n2)? else {
                return Ok(None);
            };
            let v = match resolve(c, &doc, &sel)? {
                Some(n) => get_version(c, &n2, n)?,
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
pub async fn get(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let (doc, v) = selected(st, req).await?;
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
pub async fn describe(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let (doc, v) = selected(st, req).await?;
    Ok(json!({"Document": description(st, &doc, &v)}))
}

/// DeleteDocument: the whole document, or one version (not the default one).
pub async fn delete(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let one = if req.get("DocumentVersion").is_some() || req.get("VersionName").is_some() {
        Some(selector(req)?)
    } else {
        None
    };
    let n2 = name.clone();
    let r = st
        .docs
        .with(move |c| -> rusqlite::Result<Result<(), SsmError>> {
            let tx = c.transaction()?;
            let Some(doc) = get_doc(&tx, &n2)? else {
                return Ok(Err(SsmError::no_document(&n2)));
            };
            match one {
                None => {
                    tx.execute("DELETE FROM ssm_attachments WHERE name = ?1", params![n2])?;
                    tx.execute("DELETE FROM ssm_document_versions WHERE name = ?1", params![n2])?;
                    tx.execute("DELETE FROM ssm_documents WHERE name = ?1", params![n2])?;
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
                        "DELETE FROM ssm_attachments WHERE name = ?1 AND version = ?2",
                        params![n2, n],
                    )?;
                    tx.execute(
                        "DELETE FROM ssm_document_versions WHERE name = ?1 AND version = ?2",
                        params![n2, n],
                    )?;
                    let latest: i64 = tx.query_row(
                        "SELECT MAX(version) FROM ssm_document_versions WHERE name = ?1",
                        params![n2],
                        |r| r.get(0),
                    )?;
                    tx.execute(
                        "UPDATE ssm_documents SET latest_version = ?2 WHERE name = ?1",
                        params![n2, latest],
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
pub async fn set_default(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let name = req_str(req, "Name")?.to_string();
    let version = req_str(req, "DocumentVersion")?;
    let n: i64 = version.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        SsmError::client(
            "InvalidDocumentVersion",
            format!("{version} is not a version number"),
        )
    })?;
    let n2 = name.clone();
    st.docs
        .with(move |c| -> rusqlite::Result<Result<Value, SsmError>> {
            let Some(_) = get_doc(c, &n2)? else {
                return Ok(Err(SsmError::no_document(&n2)));
            };
            let Some(v) = get_version(c, &n2, n)? else {
                return Ok(Err(SsmError::client(
                    "InvalidDocumentVersion",
                    "The document version is not valid or does not exist.",
                )));
            };
            c.execute(
                "UPDATE ssm_documents SET default_version = ?2 WHERE name = ?1",
                params![n2, n],
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

/// ListDocuments: our documents, by name; `Filters` on `Name` (prefix: `BeginsWith` key,
/// or exact `Name`), `DocumentType`, `Owner` (`Self`, `Private`, `All` match);
/// `DocumentFilterList` likewise.
pub async fn list(st: &SsmState, req: &Value) -> Result<Value, SsmError> {
    let max = match req.get("MaxResults") {
        None | Some(Value::Null) => 50,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| SsmError::validation("MaxResults must be between 1 and 50"))?
            as usize,
    };
    let after = opt_str(req, "NextToken")?.map(str::to_string);
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
    let rows = st
        .docs
        .with(
            move |c| -> rusqlite::Result<Vec<(DocRow, Option<VersionRow>)>> {
                let mut stmt = c.prepare(&format!(
                    "SELECT {DOC_COLUMNS} FROM ssm_documents WHERE name > ?1 ORDER BY name"
                ))?;
                let docs: Vec<DocRow> = stmt
                    .query_map(params![after.unwrap_or_default()], doc_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let mut out = Vec::new();
                for d in docs {
                    let v = get_version(c, &d.name, d.default_version)?;
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
        out.push(m);
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
pub async fn runnable(st: &SsmState, req: &Value) -> Result<Runnable, SsmError> {
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
    let found = st
        .docs
        .with(move |c| -> rusqlite::Result<_> {
            let Some(doc) = get_doc(c, &n2)? else {
                return Ok(None);
            };
            let Some(n) = resolve(c, &doc, &sel)? else {
                return Ok(Some(None));
            };
            let v = get_version(c, &n2, n)?;
            let files = attachments(c, &n2, n)?;
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
