//! Where the client verbs find the daemon, and what they share: error answers mapped to exit
//! codes, execution paths, following a log stream.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::CliError;
use crate::client::{Answer, Client, Endpoint};

/// Where the client finds the daemon.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The daemon's Unix socket (default: serve's default socket).
    #[arg(long, env = "SCRIPTBOX_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Talk to the daemon over TCP instead (`127.0.0.1:8080`); needs --token-file.
    #[arg(
        long,
        env = "SCRIPTBOX_TCP",
        value_name = "ADDR",
        conflicts_with = "socket"
    )]
    pub tcp: Option<String>,
    /// The bearer token for --tcp, read from a file.
    #[arg(long, env = "SCRIPTBOX_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The client of the daemon these flags name (the token file is read here).
    pub(super) fn client(&self) -> Result<Client, CliError> {
        if let Some(addr) = &self.tcp {
            let token = match &self.token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| {
                            CliError::Invalid(format!(
                                "--token-file: cannot read {}: {e}",
                                f.display()
                            ))
                        })?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            return Ok(Client::new(Endpoint::Tcp {
                addr: addr.clone(),
                token,
            }));
        }
        Ok(Client::new(Endpoint::Unix(
            self.socket
                .clone()
                .unwrap_or_else(crate::config::default_socket),
        )))
    }
}

/// No daemon answered: exit 3.
pub(super) fn unreachable_daemon(e: crate::client::ClientError) -> CliError {
    CliError::Environment(anyhow::anyhow!(e))
}

/// Maps an error answer to the CLI's exit codes.
pub(super) fn refused(answer: &Answer, what: &str) -> Result<ExitCode, CliError> {
    let message = answer.error_message();
    match answer.status {
        429 => {
            let after = answer.retry_after.clone().unwrap_or_else(|| "?".into());
            eprintln!(
                "error: the daemon refused {what}: 429 Too Many Requests (Retry-After: {after} s): {message}"
            );
            Ok(ExitCode::from(4))
        }
        400 | 404 | 413 => Err(CliError::Invalid(format!(
            "the daemon refused {what} ({}): {message}",
            answer.status
        ))),
        s => Err(CliError::Environment(anyhow::anyhow!(
            "the daemon answered {s} to {what}: {message}"
        ))),
    }
}

/// The API path of an execution; refuses an id that is not one.
pub(super) fn id_path(id: &str) -> Result<String, CliError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CliError::Invalid(format!("{id:?} is not an execution id")));
    }
    Ok(format!("/v1/executions/{id}"))
}

/// Prints one log line event (`Stream`, `Step`, `Text`) as `invoke` prints its lines.
pub(super) fn print_log_line(out: &mut dyn Write, data: &str) {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let text = v["Text"].as_str().unwrap_or("");
    let mark = match v["Stream"].as_str() {
        Some("stderr") => "!",
        Some("scriptbox") => "*",
        _ => "|",
    };
    let _ = match v["Step"].as_str() {
        Some(step) => writeln!(out, "  {mark} [{step}] {text}"),
        None => writeln!(out, "  {mark} {text}"),
    };
}

/// The `end` event of a log stream.
#[derive(Debug, Clone)]
pub(super) struct End {
    /// The execution's final status.
    pub status: String,
    /// The execution object as recorded at its end, when the daemon sends it.
    pub execution: Option<Value>,
}

/// Follows the log until the execution ends; returns its `end` event (None if the stream
/// ended early, e.g. the daemon shut down).
pub(super) async fn follow(
    client: &Client,
    path: &str,
    mut on_line: impl FnMut(&str),
) -> Result<Option<End>, CliError> {
    let mut end = None;
    let (status, answer) = client
        .events(&format!("{path}/log?Follow=true"), |event, data| {
            match event {
                "log" => on_line(data),
                "end" => {
                    let mut v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    let execution = v
                        .get_mut("Execution")
                        .map(Value::take)
                        .filter(Value::is_object);
                    end = v["Status"].as_str().map(|status| End {
                        status: status.to_string(),
                        execution,
                    });
                    return false;
                }
                _ => {}
            }
            true
        })
        .await
        .map_err(unreachable_daemon)?;
    if status != 200
        && let Some(a) = answer
    {
        refused(&a, "the log")?;
    }
    Ok(end)
}

/// Exit 0 for `Success`, else 1.
pub(super) fn exit_for(status: &str) -> ExitCode {
    if status == "Success" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
