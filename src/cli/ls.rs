//! `scriptbox ls`: the daemon's executions, newest first.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::connect::{refused, unreachable_daemon};
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
    if args.output == OutputFormat::Json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    // A closed pipe (`scriptbox ls | head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<36}  {:<9}  {:<7}  {:<24}  SUBMITTED",
        "ID", "STATUS", "KIND", "RUNTIME/DOCUMENT"
    );
    for e in v["Executions"].as_array().into_iter().flatten() {
        let what = e["Runtime"]
            .as_str()
            .or(e["DocumentName"].as_str())
            .unwrap_or("");
        if writeln!(
            out,
            "{:<36}  {:<9}  {:<7}  {:<24}  {}",
            e["Id"].as_str().unwrap_or(""),
            e["Status"].as_str().unwrap_or(""),
            e["Kind"].as_str().unwrap_or(""),
            what,
            e["SubmittedTime"].as_str().unwrap_or("")
        )
        .is_err()
        {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(t) = v["NextToken"].as_str() {
        let _ = writeln!(out, "(more: --next-token {t})");
    }
    Ok(ExitCode::SUCCESS)
}
