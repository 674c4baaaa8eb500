//! `scriptbox ls`: the daemon's executions, newest first.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::connect::{refused, unreachable_daemon};
use super::render::Answered;
use super::{CliError, ConnectArgs, OutputFormat};

/// `scriptbox ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only executions with this status (Queued, Running, Success, Failed, TimedOut, Cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue after a previous page (its NextToken).
    #[arg(long)]
    pub next_token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `scriptbox ls`
pub(super) async fn ls(args: LsArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let mut query = format!("/v1/executions?MaxResults={}", args.limit);
    if let Some(s) = &args.status {
        query.push_str(&format!("&Status={s}"));
    }
    if let Some(t) = &args.next_token {
        query.push_str(&format!("&NextToken={t}"));
    }
    let answer = client.get(&query).await.map_err(unreachable_daemon)?;
    if answer.status != 200 {
        return refused(&answer, "the listing");
    }
    let v = answer.json();
    let rows: Vec<Answered> = v["Executions"]
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .map(Answered::summary)
        .collect();
    if args.output == OutputFormat::Json {
        // The page as it came (`NextToken`), its rows rendered from the records.
        let mut page = v.clone();
        if let Some(m) = page.as_object_mut() {
            let rows = rows.iter().map(|r| r.json.clone()).collect();
            m.insert("Executions".into(), Value::Array(rows));
        }
        println!("{page}");
        return Ok(ExitCode::SUCCESS);
    }
    // A closed pipe (`scriptbox ls | head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<36}  {:<9}  {:<7}  {:<24}  SUBMITTED",
        "ID", "STATUS", "KIND", "RUNTIME/DOCUMENT"
    );
    for row in &rows {
        let line = match &row.record {
            Some(e) => format!(
                "{:<36}  {:<9}  {:<7}  {:<24}  {}",
                e.id,
                e.status.as_str(),
                e.kind.as_str(),
                e.runtime
                    .as_deref()
                    .or(e.document_name.as_deref())
                    .unwrap_or(""),
                e.submitted.rfc3339()
            ),
            // Not a row this CLI can read (a newer daemon's): its id, as far as it has one.
            None => format!("{:<36}  ?", row.json["Id"].as_str().unwrap_or("?")),
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(t) = v["NextToken"].as_str() {
        let _ = writeln!(out, "(more: --next-token {t})");
    }
    Ok(ExitCode::SUCCESS)
}
