//! `scriptbox serve`: the daemon, its flags laid over the settings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::Settings;
use crate::runtimes::Catalog;

/// `scriptbox serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Unix socket to listen on (mode 0660) [server.socket].
    #[arg(long, env = "SCRIPTBOX_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also listen on TCP (`127.0.0.1:8080`, port 0 for any); requires --token-file [server.tcp_listen].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The bearer token for TCP, read from this file [server.token_file].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where the database lives [server.data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Docker engine, e.g. unix:///var/run/docker.sock [server.docker_host].
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
    /// Containers alive at once [server.concurrency].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Executions waiting for a container before submissions get 429 [server.queue_length].
    #[arg(long, value_name = "N")]
    pub queue_length: Option<usize>,
    /// Seconds running executions get on SIGTERM before they are cancelled [server.shutdown_grace_seconds].
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace: Option<u64>,
    /// Largest request body, bytes [server.max_request_bytes].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// runc or runsc [sandbox.container_runtime].
    #[arg(long, value_name = "RUNTIME")]
    pub container_runtime: Option<String>,
    /// Serve the AWS SSM API on the TCP listener, for `aws ssm --endpoint-url` and boto3 [server.ssm_api].
    #[arg(long)]
    pub ssm_api: bool,
    /// SigV4 access keys (`ACCESS_KEY_ID SECRET TENANT` lines) for the SSM API [server.ssm_access_keys_file].
    #[arg(long, value_name = "FILE")]
    pub ssm_access_keys_file: Option<PathBuf>,
    /// Serve the SSM API without keys, on a loopback address only; no file-system attachments [server.ssm_anonymous].
    #[arg(long)]
    pub ssm_anonymous: bool,
    /// A folder SSM attachments may be read from (repeatable) [server.ssm_attachment_roots].
    #[arg(long, value_name = "DIR")]
    pub ssm_attachment_root: Vec<PathBuf>,
}

impl ServeArgs {
    /// Applies the flags over the settings.
    pub fn apply(&self, s: &mut Settings) {
        let srv = &mut s.server;
        if let Some(v) = &self.socket {
            srv.socket = Some(v.clone());
        }
        if let Some(v) = &self.listen {
            srv.tcp_listen = Some(v.clone());
        }
        if let Some(v) = &self.token_file {
            srv.token_file = Some(v.clone());
        }
        if self.ssm_api {
            srv.ssm_api = true;
        }
        if let Some(v) = &self.ssm_access_keys_file {
            srv.ssm_access_keys_file = Some(v.clone());
        }
        if self.ssm_anonymous {
            srv.ssm_anonymous = true;
        }
        if !self.ssm_attachment_root.is_empty() {
            srv.ssm_attachment_roots = self.ssm_attachment_root.clone();
        }
        if let Some(v) = &self.data_dir {
            srv.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.docker_host {
            srv.docker_host = Some(v.clone());
        }
        if let Some(v) = self.concurrency {
            srv.concurrency = v;
        }
        if let Some(v) = self.queue_length {
            srv.queue_length = v;
        }
        if let Some(v) = self.shutdown_grace {
            srv.shutdown_grace_seconds = v;
        }
        if let Some(v) = self.max_request_bytes {
            srv.max_request_bytes = v;
        }
        if let Some(v) = &self.container_runtime {
            s.sandbox.container_runtime = v.clone();
        }
    }
}

/// `scriptbox serve`
pub(super) async fn serve(
    args: ServeArgs,
    mut settings: Settings,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    args.apply(&mut settings);
    settings
        .check()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    match crate::daemon::serve(settings, catalog, shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::server::ServeError::Config(m)) => Err(CliError::Invalid(m)),
        Err(e) => Err(CliError::Environment(anyhow::anyhow!(e))),
    }
}
