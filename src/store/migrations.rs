//! The one list of schema migrations of `scriptbox.db`, applied in order by `PRAGMA user_version`.
//!
//! Every table of the database is here, the SSM documents' too, so one owner (the store's writer
//! connection) creates and changes them. An entry is never edited once released: a database made
//! by an older scriptbox is at some `user_version` and runs only the entries after it.

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

/// One migration: SQL, or a step in Rust for what SQL alone cannot decide.
pub enum Migration {
    /// Run as one batch.
    Sql(&'static str),
    /// Run with the transaction.
    Rust(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}

/// The migrations, in order; entry `i` brings the database to `user_version` `i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    // 1: executions, step records, log lines.
    Migration::Sql(
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
    ),
    // 2: the SSM documents' tables. Daemons before this entry created them from a connection of
    // their own (`CREATE TABLE IF NOT EXISTS`), and before that without tenants: such a
    // database keeps its tables, moved to the tenant-scoped ones as the default tenant's.
    Migration::Rust(ssm_tables),
    // 3: a stored cancel request (SSM's `Cancelling`), the lease of the owner running an
    // execution (a shared store hands executions to many hosts), and the typed outcome and late
    // exit fact (`record::Outcome`, `record::ExitFact`, serde JSON) that replace `result`; rows
    // from before keep their `result`, shown as stored.
    Migration::Sql(
        "ALTER TABLE executions ADD COLUMN cancel_requested_at TEXT;
    ALTER TABLE executions ADD COLUMN lease_owner TEXT;
    ALTER TABLE executions ADD COLUMN lease_until TEXT;
    ALTER TABLE executions ADD COLUMN outcome TEXT;
    ALTER TABLE executions ADD COLUMN exit_fact TEXT;",
    ),
    // 4: the parent of a child execution (aws:executeAutomation, or a runbook's own
    // StartAutomationExecution): SSM's `ParentAutomationExecutionId`.
    Migration::Sql(
        "ALTER TABLE executions ADD COLUMN parent_id TEXT;
    CREATE INDEX executions_parent ON executions(parent_id);",
    ),
];

const SSM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ssm_documents (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    document_type TEXT NOT NULL,
    created REAL NOT NULL,
    default_version INTEGER NOT NULL,
    latest_version INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS ssm_document_versions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    version_name TEXT,
    display_name TEXT,
    content TEXT NOT NULL,
    format TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS ssm_attachments (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (tenant, name, version, file)
);
CREATE TABLE IF NOT EXISTS ssm_executions (
    execution_id TEXT PRIMARY KEY,
    document_name TEXT NOT NULL,
    document_version TEXT NOT NULL,
    executed_by TEXT,
    tenant TEXT NOT NULL DEFAULT 'default'
);";

/// Tables of a database written before documents had tenants: renamed, copied into the
/// tenant-scoped tables as the default tenant's, then dropped.
const TENANT_MIGRATION: &str = "
ALTER TABLE ssm_documents RENAME TO ssm_documents_v1;
ALTER TABLE ssm_document_versions RENAME TO ssm_document_versions_v1;
ALTER TABLE ssm_attachments RENAME TO ssm_attachments_v1;
";

const TENANT_COPY: &str = "
INSERT INTO ssm_documents (tenant, name, document_type, created, default_version, latest_version)
    SELECT 'default', name, document_type, created, default_version, latest_version FROM ssm_documents_v1;
INSERT INTO ssm_document_versions (tenant, name, version, version_name, display_name, content, format, hash, created, meta)
    SELECT 'default', name, version, version_name, display_name, content, format, hash, created, meta FROM ssm_document_versions_v1;
INSERT INTO ssm_attachments (tenant, name, version, file, bytes)
    SELECT 'default', name, version, file, bytes FROM ssm_attachments_v1;
DROP TABLE ssm_documents_v1;
DROP TABLE ssm_document_versions_v1;
DROP TABLE ssm_attachments_v1;
";

fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

fn table_exists(c: &Connection, table: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        params![table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Creates the SSM tables, moving those of a database of before tenants.
fn ssm_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let old_docs =
        table_exists(tx, "ssm_documents")? && !has_column(tx, "ssm_documents", "tenant")?;
    if old_docs {
        tx.execute_batch(TENANT_MIGRATION)?;
    }
    if table_exists(tx, "ssm_executions")? && !has_column(tx, "ssm_executions", "tenant")? {
        tx.execute_batch(
            "ALTER TABLE ssm_executions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
        )?;
    }
    tx.execute_batch(SSM_SCHEMA)?;
    if old_docs {
        tx.execute_batch(TENANT_COPY)?;
    }
    Ok(())
}

/// Applies the migrations after the database's `user_version`, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(0);
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Rust(step) => step(&tx)?,
        }
        let next = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", next)?;
        tx.commit()?;
    }
    Ok(())
}
