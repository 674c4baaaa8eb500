//! `scriptbox logs`: an execution's log, or with `-f` its lines as they come.

use std::process::ExitCode;

use clap::Args;

use super::connect::{exit_for, follow, id_path, print_log_line, refused, unreachable_daemon};
use super::{CliError, ConnectArgs};

/// `scriptbox logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The execution id.
    pub id: String,
    /// Follow: print lines as they come until the execution ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `scriptbox logs`
pub(super) async fn logs(args: LogsArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let path = id_path(&args.id)?;
    if args.follow {
        let end = follow(&client, &path, |data| {
            print_log_line(&mut std::io::stdout().lock(), data)
        })
        .await?;
        return Ok(match end {
            Some(end) => {
                eprintln!("{}", end.status);
                exit_for(&end.status)
            }
            None => {
                eprintln!("(the daemon closed the stream before the execution ended)");
                ExitCode::from(3)
            }
        });
    }
    let answer = client
        .get(&format!("{path}/log"))
        .await
        .map_err(unreachable_daemon)?;
    if answer.status != 200 {
        return refused(&answer, "the log");
    }
    let v = answer.json();
    let mut out = std::io::stdout().lock();
    for l in v["Lines"].as_array().into_iter().flatten() {
        print_log_line(&mut out, &l.to_string());
    }
    Ok(ExitCode::SUCCESS)
}
