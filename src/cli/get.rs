//! `scriptbox get`: one execution of the daemon.

use std::process::ExitCode;

use clap::Args;

use super::connect::{id_path, refused, unreachable_daemon};
use super::render::{Answered, print_execution};
use super::{CliError, ConnectArgs, OutputFormat};

/// `scriptbox get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The execution id.
    pub id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `scriptbox get`
pub(super) async fn get(args: GetArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let answer = client
        .get(&id_path(&args.id)?)
        .await
        .map_err(unreachable_daemon)?;
    if answer.status != 200 {
        return refused(&answer, "the lookup");
    }
    print_execution(&Answered::execution(answer.json()), args.output)?;
    Ok(ExitCode::SUCCESS)
}
