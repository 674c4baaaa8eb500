//! The CLI verbs of the daemon: `serve`, and the client verbs `submit`, `get`, `ls`, `logs`,
//! `cancel` that use its API.
//!
//! Exit codes as the other verbs: 0 ok (for `submit --wait`: the execution succeeded); 1 the
//! execution failed / timed out / was cancelled, or a cancel found it already finished; 2 invalid
//! input (the daemon's 400, an unknown id); 3 no daemon answered or it failed; 4 the daemon
//! refused the submission for now (429; the message gives Retry-After).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::{
    CliError, InvokeArgs, OutputFormat, print_result, step_inputs, supplied_parameters,
};
use crate::client::{Answer, Client, Endpoint};
use crate::config::Settings;
use crate::result::StepResult;
use crate::runbook as rb;
use crate::runtimes::Catalog;
use crate::server::types::{
    LimitsRequest, RunbookRequest, StepRequest, SubmitRequest, attachment_requests, base64_of,
};

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
    fn client(&self) -> Result<Client, CliError> {
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

/// `scriptbox submit`
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A runbook to run (as `scriptbox run`); without it, the step flags (as `scriptbox invoke`).
    #[arg(value_name = "DOCUMENT", conflicts_with_all = ["runtime", "handler", "script"])]
    pub document: Option<PathBuf>,
    /// The Runtime of a step.
    #[arg(long)]
    pub runtime: Option<String>,
    /// The Handler (Python).
    #[arg(long)]
    pub handler: Option<String>,
    /// The inline Script, read from a file.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// A step attachment (.py or .zip); repeat for several.
    #[arg(long = "attachment", value_name = "FILE")]
    pub attachment_files: Vec<PathBuf>,
    /// The InputPayload as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// The InputPayload from a JSON file.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// The step's timeoutSeconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<i64>,
    /// A runbook parameter, `Name=Value`; repeat for several.
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Runbook parameter values from a JSON or YAML map.
    #[arg(long, value_name = "FILE")]
    pub parameters_file: Option<PathBuf>,
    /// Where the runbook's `files` are (default: the document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
    /// A lower memory limit, MiB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// A lower CPU limit, thousandths of a CPU.
    #[arg(long, value_name = "N")]
    pub milli_cpus: Option<u64>,
    /// A lower process limit.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// A lower output limit, bytes.
    #[arg(long, value_name = "BYTES")]
    pub output_bytes: Option<u64>,
    /// A lower per-step timeout ceiling, seconds.
    #[arg(long, value_name = "SECS")]
    pub max_step_timeout: Option<u64>,
    /// Block until the execution ends; print its result (the log goes to stderr in text).
    #[arg(long)]
    pub wait: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

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

/// `scriptbox cancel`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The execution id.
    pub id: String,
    /// Where the daemon is.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn unreachable_daemon(e: crate::client::ClientError) -> CliError {
    CliError::Environment(anyhow::anyhow!(e))
}

/// Maps an error answer to the CLI's exit codes.
fn refused(answer: &Answer, what: &str) -> Result<ExitCode, CliError> {
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

fn id_path(id: &str) -> Result<String, CliError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CliError::Invalid(format!("{id:?} is not an execution id")));
    }
    Ok(format!("/v1/executions/{id}"))
}

fn build_request(
    args: &SubmitArgs,
    catalog: &Catalog,
    settings: &Settings,
) -> Result<SubmitRequest, CliError> {
    let limits = LimitsRequest {
        timeout_seconds: args.max_step_timeout,
        memory_mb: args.memory,
        milli_cpus: args.milli_cpus,
        pids_limit: args.pids_limit,
        output_bytes: args.output_bytes,
    };
    let limits = (limits != LimitsRequest::default()).then_some(limits);
    if let Some(doc_path) = &args.document {
        // Read locally as `run` does: errors early, and the `files` are found where `run`
        // finds them; the daemon checks everything again.
        let options = rb::document::LoadOptions {
            catalog,
            max_timeout_secs: settings.limits.max_timeout_seconds,
            attachments_dir: args.attachments.clone(),
        };
        let doc = rb::document::load_file(doc_path, &options).map_err(|refused| {
            CliError::Invalid(format!("{} is not valid:\n{refused}", doc_path.display()))
        })?;
        let text = std::fs::read_to_string(doc_path)
            .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", doc_path.display())))?;
        let mut parameters = serde_json::Map::new();
        for (name, value) in supplied_parameters(&args.parameters, &args.parameters_file)? {
            let v = match value {
                rb::parameters::Supplied::Text(t) => Value::String(t),
                rb::parameters::Supplied::Typed(v) => v,
            };
            parameters.insert(name, v);
        }
        return Ok(SubmitRequest {
            step: None,
            runbook: Some(RunbookRequest {
                document: text,
                document_name: Some(doc.name.clone()),
                parameters,
                attachments: attachment_requests(&doc.attachments),
            }),
            limits,
        });
    }
    let Some(runtime) = &args.runtime else {
        return Err(CliError::Invalid(
            "give a runbook DOCUMENT, or a step with --runtime (and --handler, --script...)".into(),
        ));
    };
    let invoke = InvokeArgs {
        runtime: runtime.clone(),
        handler: args.handler.clone(),
        script: args.script.clone(),
        attachments: args.attachment_files.clone(),
        payload: args.payload.clone(),
        payload_file: args.payload_file.clone(),
        timeout: args.timeout,
        memory: None,
        output: args.output,
    };
    let inputs = step_inputs(&invoke)?;
    Ok(SubmitRequest {
        step: Some(StepRequest {
            runtime: runtime.clone(),
            handler: inputs.handler,
            script: inputs.script.and_then(|s| s.as_str().map(str::to_string)),
            attachments: inputs
                .attachments
                .iter()
                .map(|a| crate::server::types::AttachmentRequest {
                    name: a.name.clone(),
                    content: base64_of(&a.bytes),
                })
                .collect(),
            input_payload: inputs.input_payload,
            timeout_seconds: inputs.timeout_seconds,
        }),
        runbook: None,
        limits,
    })
}

fn print_log_line(out: &mut dyn Write, data: &str) {
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

/// Follows the log until the execution ends; returns its final status (None if the stream
/// ended early, e.g. the daemon shut down).
async fn follow(
    client: &Client,
    path: &str,
    mut on_line: impl FnMut(&str),
) -> Result<Option<String>, CliError> {
    let mut end = None;
    let (status, answer) = client
        .events(&format!("{path}/log?Follow=true"), |event, data| {
            match event {
                "log" => on_line(data),
                "end" => {
                    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    end = v["Status"].as_str().map(str::to_string);
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

fn exit_for(status: &str) -> ExitCode {
    if status == "Success" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_execution(v: &Value, format: OutputFormat) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Environment(e.into());
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        writeln!(out, "{v}").map_err(io)?;
        return Ok(());
    }
    let status = v["Status"].as_str().unwrap_or("?");
    let id = v["Id"].as_str().unwrap_or("?");
    let terminal = !matches!(status, "Queued" | "Running");
    if v["Kind"] == "Step" && terminal {
        if let Ok(result) = serde_json::from_value::<StepResult>(v.clone()) {
            writeln!(out, "execution {id}").map_err(io)?;
            drop(out);
            print_result(&result, OutputFormat::Text).map_err(CliError::Environment)?;
            return Ok(());
        }
    }
    let what = match v["Kind"].as_str() {
        Some("Runbook") => format!("runbook {}", v["DocumentName"].as_str().unwrap_or("")),
        _ => format!("step {}", v["Runtime"].as_str().unwrap_or("")),
    };
    writeln!(out, "{status} ({what}, execution {id})").map_err(io)?;
    if let Some(steps) = v["StepExecutions"].as_array() {
        for s in steps {
            writeln!(
                out,
                "  {} {} ({})",
                s["StepStatus"].as_str().unwrap_or(""),
                s["StepName"].as_str().unwrap_or(""),
                s["Action"].as_str().unwrap_or("")
            )
            .map_err(io)?;
        }
    }
    if let Some(f) = v["FailureMessage"].as_str() {
        writeln!(out, "{f}").map_err(io)?;
    }
    if let Some(outputs) = v["Outputs"].as_object().filter(|o| !o.is_empty()) {
        writeln!(out, "Outputs:").map_err(io)?;
        for (k, val) in outputs {
            writeln!(out, "  {k} = {val}").map_err(io)?;
        }
    }
    Ok(())
}

/// `scriptbox submit`
pub async fn submit(
    args: SubmitArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let req = build_request(&args, &catalog, &settings)?;
    let client = args.connect.client()?;
    let body = serde_json::to_value(&req).map_err(|e| CliError::Environment(e.into()))?;
    let answer = client
        .post("/v1/executions", &body)
        .await
        .map_err(unreachable_daemon)?;
    if answer.status != 202 {
        return refused(&answer, "the submission");
    }
    let accepted = answer.json();
    let id = accepted["Id"].as_str().unwrap_or_default().to_string();
    if !args.wait {
        if args.output == OutputFormat::Json {
            println!("{accepted}");
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = id_path(&id)?;
    let text = args.output == OutputFormat::Text;
    loop {
        let ended = follow(&client, &path, |data| {
            if text {
                print_log_line(&mut std::io::stderr().lock(), data);
            }
        })
        .await;
        let object = client.get(&path).await.map_err(unreachable_daemon)?;
        if object.status != 200 {
            return refused(&object, "the execution");
        }
        let mut v = object.json();
        let status = v["Status"].as_str().unwrap_or("").to_string();
        if !matches!(status.as_str(), "Queued" | "Running") {
            // A warm step is recorded at its result, before Docker reports the exit: wait (a
            // few ms, bounded) for the exit code, so the object is complete, as `invoke` prints it.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while v["Kind"] == "Step"
                && v.get("ExitCode").is_some_and(Value::is_null)
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
                v = client.get(&path).await.map_err(unreachable_daemon)?.json();
            }
            print_execution(&v, args.output)?;
            return Ok(exit_for(&status));
        }
        ended?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `scriptbox get`
pub async fn get(args: GetArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let answer = client
        .get(&id_path(&args.id)?)
        .await
        .map_err(unreachable_daemon)?;
    if answer.status != 200 {
        return refused(&answer, "the lookup");
    }
    print_execution(&answer.json(), args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// `scriptbox ls`
pub async fn ls(args: LsArgs) -> Result<ExitCode, CliError> {
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

/// `scriptbox logs`
pub async fn logs(args: LogsArgs) -> Result<ExitCode, CliError> {
    let client = args.connect.client()?;
    let path = id_path(&args.id)?;
    if args.follow {
        let end = follow(&client, &path, |data| {
            print_log_line(&mut std::io::stdout().lock(), data)
        })
        .await?;
        return Ok(match end {
            Some(status) => {
                eprintln!("{status}");
                exit_for(&status)
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

/// `scriptbox cancel`
pub async fn cancel(args: CancelArgs) -> Result<ExitCode, CliError> {
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

/// `scriptbox serve`
pub async fn serve(
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
