//! `scriptbox cancel`: a queued execution never runs; a running one's container is killed.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::connect::{id_path, refused, unreachable_daemon};
use super::{CliError, ConnectArgs};

/// `scriptbox cancel`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The execution id.
    pub id: String,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `scriptbox cancel`
pub(super) async fn cancel(args: CancelArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let path = id_path(&args.id)?;
    let answer = client
        .post(&format!("{path}/cancel"), &json!({}))
        .await
        .map_err(unreachable_daemon)?;
    match answer.status {
        202 => {
            let v = answer.json();
            if v["Status"] == "Cancelled" {
                println!("{} cancelled (it was queued)", args.id);
            } else {
                println!("{} cancelling: its container is being killed", args.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        409 => {
            eprintln!("{}", answer.error_message());
            Ok(ExitCode::from(1))
        }
        _ => refused(&answer, "the cancel"),
    }
}
