//! Operator settings: the sandbox, the context values, output limits, request limits and the
//! daemon (`[server]`).
//!
//! Loaded from a TOML file (`--config`); every key is optional and unknown keys are refused.
//! Every key can also be set by an environment variable `SCRIPTBOX_<SECTION>_<KEY>` (for example
//! `SCRIPTBOX_SERVER_CONCURRENCY=4`) and by `--set section.key=value`; see [`Settings::apply_env`]
//! and [`Settings::apply_override`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws::{AwsConfig, AwsSettingError};
use crate::context::AwsContext;
use crate::egress::EgressLimits;
use crate::execute::OutputLimits;
use crate::pool::PoolConfig;
use crate::sandbox::SandboxConfig;
use crate::step::DEFAULT_TIMEOUT_SECS;

/// The longest step timeout and pool idle time an operator may set (7 days): every deadline
/// computed from them stays far inside what the clocks can represent.
pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;
/// The most containers an operator may let run at once.
pub const MAX_CONCURRENCY: usize = 4096;

/// Errors while loading settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("configuration {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A value breaks a rule.
    #[error("configuration: {key} {rule}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The rule.
        rule: String,
    },
}

/// Every operator setting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Container settings (`[sandbox]`).
    pub sandbox: SandboxConfig,
    /// Values of the context dict (`[context]`).
    pub context: AwsContext,
    /// Output limits (`[output]`).
    pub output: OutputLimits,
    /// Limits on what a step may ask for (`[limits]`).
    pub limits: StepLimits,
    /// The daemon (`[server]`).
    pub server: ServerConfig,
    /// The warm pool of pre-started containers (`[pool]`, used by the daemon).
    pub pool: PoolConfig,
    /// How steps reach AWS (`[aws]`: mode, endpoint, profile, extra hosts).
    pub aws: AwsConfig,
    /// Caps on each execution's AWS egress (`[egress]`).
    pub egress: EgressLimits,
}

/// Ceilings on what a step may ask for, and the defaults a request gets when it asks for nothing.
///
/// The maxima of memory, CPU, processes and output are the `[sandbox]` values; a request can
/// only lower them. The defaults (absent: the maximum) are what a daemon request gets when it
/// does not say.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepLimits {
    /// The largest `timeoutSeconds` accepted (AWS: 600).
    pub max_timeout_seconds: u64,
    /// The timeout of a step that sets none (AWS: 600), and the per-step ceiling of a daemon
    /// execution that does not ask for another one.
    pub default_timeout_seconds: u64,
    /// The longest a whole runbook execution may run, seconds (default a day); past it the
    /// running step is stopped and the execution ends `TimedOut`.
    pub max_runbook_seconds: u64,
    /// Memory of a daemon execution that does not ask (default: `sandbox.memory_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_memory_bytes: Option<i64>,
    /// CPU quota of a daemon execution that does not ask (default: `sandbox.nano_cpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_nano_cpus: Option<i64>,
    /// Process limit of a daemon execution that does not ask (default: `sandbox.pids_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pids_limit: Option<i64>,
    /// Output bytes of a daemon execution that does not ask (default: `sandbox.output_limit_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_output_limit_bytes: Option<u64>,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            max_timeout_seconds: DEFAULT_TIMEOUT_SECS,
            default_timeout_seconds: DEFAULT_TIMEOUT_SECS,
            max_runbook_seconds: 86_400,
            default_memory_bytes: None,
            default_nano_cpus: None,
            default_pids_limit: None,
            default_output_limit_bytes: None,
        }
    }
}

/// The daemon's settings (`[server]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The Unix socket the API listens on (mode 0660). Default: [`default_socket`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// An optional TCP address (`127.0.0.1:8080`); requests there need the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<String>,
    /// The file holding the bearer token for TCP (required with `tcp_listen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Where the database lives. Default: [`default_data_dir`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The Docker engine (`unix:///var/run/docker.sock`, `tcp://...`); default `DOCKER_HOST` or
    /// the local socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// Containers alive at once (0: twice the cores).
    pub concurrency: usize,
    /// Executions waiting for a container; past it submissions get 429.
    pub queue_length: usize,
    /// On SIGTERM, how long running executions may go on before they are cancelled.
    pub shutdown_grace_seconds: u64,
    /// The largest request body accepted (attachments travel base64 inside it).
    pub max_request_bytes: usize,
    /// The `Retry-After` of a 429, seconds.
    pub retry_after_seconds: u64,
    /// Serve the AWS SSM API (JSON 1.1, `POST /` with `X-Amz-Target`) on the TCP listener.
    pub ssm_api: bool,
    /// A file of `ACCESS_KEY_ID SECRET [TENANT]` lines: SigV4 signatures are verified against
    /// them, and each key's tenant scopes what its caller sees. The SSM API needs it unless
    /// `ssm_anonymous` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssm_access_keys_file: Option<PathBuf>,
    /// Serve the SSM API without SigV4 keys (every caller is the `default` tenant): allowed on a
    /// loopback TCP address only, and it turns attachments from the file system off.
    pub ssm_anonymous: bool,
    /// Folders under which SSM `Attachments` (`SourceUrl`, `S3FileUrl`) may be read from the
    /// daemon's file system. Empty (the default): file-system attachments are refused.
    pub ssm_attachment_roots: Vec<PathBuf>,
    /// The largest attachment file the SSM API reads, bytes.
    pub ssm_attachment_max_bytes: u64,
    /// How long reading one request's attachments may take, seconds.
    pub ssm_attachment_read_seconds: u64,
    /// How long a connection may take to send a request's headers (and how long a kept-alive
    /// connection may wait for its next request), seconds.
    pub header_read_timeout_seconds: u64,
    /// A connection on which no byte moves for this long is closed, seconds.
    pub idle_timeout_seconds: u64,
    /// How long handling one request may take (reading its body and producing the response's
    /// head; a log stream's body is not bounded by it), seconds.
    pub request_timeout_seconds: u64,
    /// Connections open at once on each listener; further ones wait in the kernel's backlog
    /// until one closes.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            tcp_listen: None,
            token_file: None,
            data_dir: None,
            docker_host: None,
            concurrency: 0,
            queue_length: 256,
            shutdown_grace_seconds: 30,
            max_request_bytes: 32 * 1024 * 1024,
            retry_after_seconds: 2,
            ssm_api: false,
            ssm_access_keys_file: None,
            ssm_anonymous: false,
            ssm_attachment_roots: Vec::new(),
            ssm_attachment_max_bytes: 8 * 1024 * 1024,
            ssm_attachment_read_seconds: 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 120,
            request_timeout_seconds: 60,
            max_connections: 512,
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The default socket: `/run/scriptbox/scriptbox.sock` as root, else
/// `$XDG_RUNTIME_DIR/scriptbox.sock` (or `/tmp/scriptbox-$UID/scriptbox.sock` without it).
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/scriptbox/scriptbox.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("scriptbox.sock"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => PathBuf::from(format!("/tmp/scriptbox-{}/scriptbox.sock", unsafe {
            libc::getuid()
        })),
    }
}

/// The default data directory: `/var/lib/scriptbox` as root, else
/// `$XDG_DATA_HOME/scriptbox` (`~/.local/share/scriptbox`).
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/scriptbox");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("scriptbox");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/scriptbox")
}

impl ServerConfig {
    /// The socket in force.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket)
    }

    /// The data directory in force.
    pub fn data_dir_path(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The concurrency in force: the setting, or twice the cores when 0.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency > 0 {
            return self.concurrency;
        }
        2 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// What one request asks for; each value can only lower the configured maximum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedLimits {
    /// Per-step timeout ceiling, seconds.
    pub timeout_seconds: Option<u64>,
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
    /// CPU, thousandths of a CPU.
    pub milli_cpus: Option<u64>,
    /// Processes and threads.
    pub pids_limit: Option<u64>,
    /// Bytes of stdout plus stderr.
    pub output_bytes: Option<u64>,
}

/// The limits an execution runs with, after defaults and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Per-step timeout ceiling, seconds.
    pub timeout_seconds: u64,
    /// Memory, bytes.
    pub memory_bytes: i64,
    /// CPU, 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Processes and threads.
    pub pids_limit: i64,
    /// Bytes of stdout plus stderr.
    pub output_limit_bytes: u64,
}

impl EffectiveLimits {
    /// The sandbox settings with these limits in place.
    pub fn sandbox(&self, base: &SandboxConfig) -> SandboxConfig {
        SandboxConfig {
            memory_bytes: self.memory_bytes,
            nano_cpus: self.nano_cpus,
            pids_limit: self.pids_limit,
            output_limit_bytes: self.output_limit_bytes,
            ..base.clone()
        }
    }
}

/// A count the configuration holds as `i64` (Docker's type), as `u64`; negative is 0 (the
/// configuration check refuses those).
fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A `u64` as Docker's `i64`, saturated.
fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A request limit that breaks a rule: the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct LimitError {
    /// The request field (`Limits.MemoryMb`).
    pub field: &'static str,
    /// The rule broken, with the values.
    pub rule: String,
}

impl Settings {
    /// The limits for a request: defaults where it says nothing, its values where they are
    /// within the maxima; a value above a maximum is refused, never clamped silently.
    pub fn resolve_limits(&self, req: &RequestedLimits) -> Result<EffectiveLimits, LimitError> {
        let s = &self.sandbox;
        let l = &self.limits;
        fn pick(
            field: &'static str,
            asked: Option<u64>,
            min: u64,
            max: u64,
            default: u64,
            unit: &str,
        ) -> Result<u64, LimitError> {
            match asked {
                None => Ok(default.min(max)),
                Some(v) if v < min => Err(LimitError {
                    field,
                    rule: format!("must be at least {min} {unit}, got {v}"),
                }),
                Some(v) if v > max => Err(LimitError {
                    field,
                    rule: format!(
                        "{v} {unit} is above the configured maximum of {max} {unit}; a request can only lower it"
                    ),
                }),
                Some(v) => Ok(v),
            }
        }
        let mib = 1024 * 1024;
        let timeout = pick(
            "Limits.TimeoutSeconds",
            req.timeout_seconds,
            1,
            l.max_timeout_seconds,
            l.default_timeout_seconds,
            "seconds",
        )?;
        let max_mb = non_negative(s.memory_bytes / mib);
        let memory = match req.memory_mb {
            None => l
                .default_memory_bytes
                .unwrap_or(s.memory_bytes)
                .min(s.memory_bytes),
            Some(_) => saturating_i64(pick(
                "Limits.MemoryMb",
                req.memory_mb,
                6,
                max_mb,
                max_mb,
                "MiB",
            )?)
            .saturating_mul(mib),
        };
        let max_milli = non_negative(s.nano_cpus / 1_000_000);
        let nano_cpus = match req.milli_cpus {
            None => l.default_nano_cpus.unwrap_or(s.nano_cpus).min(s.nano_cpus),
            Some(_) => saturating_i64(pick(
                "Limits.MilliCpus",
                req.milli_cpus,
                10,
                max_milli,
                max_milli,
                "milli-CPUs",
            )?)
            .saturating_mul(1_000_000),
        };
        let pids = match req.pids_limit {
            None => l
                .default_pids_limit
                .unwrap_or(s.pids_limit)
                .min(s.pids_limit),
            Some(_) => saturating_i64(pick(
                "Limits.PidsLimit",
                req.pids_limit,
                8,
                non_negative(s.pids_limit),
                non_negative(s.pids_limit),
                "processes",
            )?),
        };
        let output = match req.output_bytes {
            None => l
                .default_output_limit_bytes
                .unwrap_or(s.output_limit_bytes)
                .min(s.output_limit_bytes),
            Some(_) => pick(
                "Limits.OutputBytes",
                req.output_bytes,
                1024,
                s.output_limit_bytes,
                s.output_limit_bytes,
                "bytes",
            )?,
        };
        Ok(EffectiveLimits {
            timeout_seconds: timeout,
            memory_bytes: memory,
            nano_cpus,
            pids_limit: pids,
            output_limit_bytes: output,
        })
    }

    /// Applies `SCRIPTBOX_<SECTION>_<KEY>` environment variables over these settings (for
    /// example `SCRIPTBOX_SANDBOX_MEMORY_BYTES`, `SCRIPTBOX_SERVER_TCP_LISTEN`).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        let mut overrides = Vec::new();
        for (key, _) in self.keys() {
            let var = format!("SCRIPTBOX_{}", key.replace('.', "_").to_ascii_uppercase());
            if let Ok(value) = std::env::var(&var) {
                overrides.push((key, value, var));
            }
        }
        for (key, value, var) in overrides {
            self.set(&key, &value, &var)?;
        }
        Ok(())
    }

    /// Applies one `section.key=value` override (the `--set` flag).
    pub fn apply_override(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| ConfigError::Parse {
                path: "--set".into(),
                message: format!("{assignment:?}: expected section.key=value"),
            })?;
        self.set(key.trim(), value, "--set")
    }

    /// Every settable key (`section.key`) with its TOML type name.
    pub fn keys(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for (section, table) in Self::schema() {
            for (key, ty) in table {
                out.push((format!("{section}.{key}"), ty));
            }
        }
        out
    }

    /// Sections and keys with their types, from the defaults and the optional keys.
    fn schema() -> Vec<(String, Vec<(String, &'static str)>)> {
        let defaults = toml::Value::try_from(Settings::default()).expect("settings serialize");
        // Keys absent from the defaults (they are `None`) and their types.
        let optional: &[(&str, &str, &'static str)] = &[
            ("limits", "default_memory_bytes", "integer"),
            ("limits", "default_nano_cpus", "integer"),
            ("limits", "default_pids_limit", "integer"),
            ("limits", "default_output_limit_bytes", "integer"),
            ("server", "socket", "string"),
            ("server", "tcp_listen", "string"),
            ("server", "token_file", "string"),
            ("server", "data_dir", "string"),
            ("server", "docker_host", "string"),
            ("server", "ssm_access_keys_file", "string"),
            ("aws", "endpoint", "string"),
            ("aws", "profile", "string"),
            ("aws", "egress_dir", "string"),
            ("aws", "api_runtime", "string"),
        ];
        let mut out = Vec::new();
        if let toml::Value::Table(sections) = defaults {
            for (section, table) in sections {
                let mut keys = Vec::new();
                if let toml::Value::Table(t) = table {
                    for (k, v) in t {
                        keys.push((k, v.type_str()));
                    }
                }
                for (s, k, ty) in optional {
                    if *s == section {
                        keys.push((k.to_string(), *ty));
                    }
                }
                out.push((section, keys));
            }
        }
        out
    }

    fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let ty = self
            .keys()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, ty)| ty)
            .ok_or_else(|| ConfigError::Parse {
                path: origin.into(),
                message: format!(
                    "unknown setting {key:?}; known settings: {}",
                    self.keys()
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let bad = |what: &str| ConfigError::Parse {
            path: origin.into(),
            message: format!("{key}: expected {what}, got {value:?}"),
        };
        let parsed = match ty {
            "integer" => toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?),
            "boolean" => {
                toml::Value::Boolean(value.trim().parse().map_err(|_| bad("true or false"))?)
            }
            "float" => toml::Value::Float(value.trim().parse().map_err(|_| bad("a number"))?),
            // Lists of strings: comma-separated.
            "array" => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_string()))
                    .collect(),
            ),
            _ => toml::Value::String(value.to_string()),
        };
        let mut whole = toml::Value::try_from(&*self).expect("settings serialize");
        let (section, name) = key.split_once('.').expect("keys have a section");
        if let Some(toml::Value::Table(t)) = whole.get_mut(section) {
            t.insert(name.to_string(), parsed);
        }
        let updated: Settings =
            whole
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.into(),
                    message: e.to_string(),
                })?;
        *self = updated;
        Ok(())
    }
}

impl Settings {
    /// Loads settings from a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let settings: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// Checks the rules that types alone do not express, section by section (the first
    /// broken rule is reported).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_sandbox()?;
        self.check_limits()?;
        self.check_server()?;
        self.check_ssm()?;
        self.check_server_timeouts()?;
        self.check_aws()
    }

    /// `[aws]` and `[egress]`: a known mode with what it needs (an emulator URL), valid extra
    /// hosts and regions, positive and bounded caps.
    fn check_aws(&self) -> Result<(), ConfigError> {
        crate::aws::check_settings(&self.aws, &self.egress, &self.context).map_err(|e| match e {
            AwsSettingError::Invalid { key, rule } => ConfigError::Invalid { key, rule },
            other => ConfigError::Invalid {
                key: "aws",
                rule: other.to_string(),
            },
        })
    }

    /// `[sandbox]`: positive limits, a non-root numeric user, a known runtime, no host network.
    fn check_sandbox(&self) -> Result<(), ConfigError> {
        let s = &self.sandbox;
        let positive = [
            ("sandbox.memory_bytes", s.memory_bytes),
            ("sandbox.nano_cpus", s.nano_cpus),
            ("sandbox.pids_limit", s.pids_limit),
            ("sandbox.runsc_pids_limit", s.runsc_pids_limit),
            ("sandbox.nofile", s.nofile),
            ("sandbox.fsize_bytes", s.fsize_bytes),
            ("sandbox.shm_bytes", s.shm_bytes),
        ];
        for (key, value) in positive {
            if value <= 0 {
                return Err(ConfigError::Invalid {
                    key,
                    rule: format!("must be positive, got {value}"),
                });
            }
        }
        if s.memory_bytes < 6 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "sandbox.memory_bytes",
                rule: "must be at least 6 MiB (Docker's minimum)".into(),
            });
        }
        let user_ok = s
            .user
            .split_once(':')
            .map(|(u, g)| {
                u.parse::<u32>().map(|u| u != 0).unwrap_or(false) && g.parse::<u32>().is_ok()
            })
            .unwrap_or(false);
        if !user_ok {
            return Err(ConfigError::Invalid {
                key: "sandbox.user",
                rule: format!("must be a numeric non-root uid:gid, got {:?}", s.user),
            });
        }
        if !["runc", "runsc"].contains(&s.container_runtime.as_str()) {
            return Err(ConfigError::Invalid {
                key: "sandbox.container_runtime",
                rule: format!("must be runc or runsc, got {:?}", s.container_runtime),
            });
        }
        if s.network == "host" || s.network.starts_with("container:") {
            return Err(ConfigError::Invalid {
                key: "sandbox.network",
                rule: "may be none or a named network, never host or another container's".into(),
            });
        }
        Ok(())
    }

    /// `[limits]` (and the pool's idle time-out, bounded like them): durations within a week,
    /// defaults within the `[sandbox]` maxima.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let s = &self.sandbox;
        if self.limits.max_timeout_seconds == 0
            || self.limits.max_timeout_seconds > MAX_DURATION_SECS
        {
            return Err(ConfigError::Invalid {
                key: "limits.max_timeout_seconds",
                rule: format!(
                    "must be between 1 and {MAX_DURATION_SECS} seconds (7 days), got {}",
                    self.limits.max_timeout_seconds
                ),
            });
        }
        if self.pool.idle_timeout_secs > MAX_DURATION_SECS {
            return Err(ConfigError::Invalid {
                key: "pool.idle_timeout_secs",
                rule: format!(
                    "must be at most {MAX_DURATION_SECS} seconds (7 days), got {}",
                    self.pool.idle_timeout_secs
                ),
            });
        }
        if self.limits.max_runbook_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_runbook_seconds",
                rule: "must be at least 1".into(),
            });
        }
        if self.limits.default_timeout_seconds == 0
            || self.limits.default_timeout_seconds > self.limits.max_timeout_seconds
        {
            return Err(ConfigError::Invalid {
                key: "limits.default_timeout_seconds",
                rule: format!(
                    "must be between 1 and limits.max_timeout_seconds ({}), got {}",
                    self.limits.max_timeout_seconds, self.limits.default_timeout_seconds
                ),
            });
        }
        let defaults = [
            (
                "limits.default_memory_bytes",
                self.limits.default_memory_bytes,
                s.memory_bytes,
            ),
            (
                "limits.default_nano_cpus",
                self.limits.default_nano_cpus,
                s.nano_cpus,
            ),
            (
                "limits.default_pids_limit",
                self.limits.default_pids_limit,
                s.pids_limit,
            ),
            (
                "limits.default_output_limit_bytes",
                self.limits
                    .default_output_limit_bytes
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                i64::try_from(s.output_limit_bytes).unwrap_or(i64::MAX),
            ),
        ];
        for (key, value, max) in defaults {
            if let Some(v) = value
                && (v <= 0 || v > max)
            {
                return Err(ConfigError::Invalid {
                    key,
                    rule: format!("must be between 1 and its [sandbox] maximum {max}, got {v}"),
                });
            }
        }
        Ok(())
    }

    /// `[server]`: concurrency, queue and request bounds; TCP needs a token.
    fn check_server(&self) -> Result<(), ConfigError> {
        let srv = &self.server;
        if srv.concurrency > MAX_CONCURRENCY {
            return Err(ConfigError::Invalid {
                key: "server.concurrency",
                rule: format!(
                    "must be at most {MAX_CONCURRENCY} containers (0: twice the cores), got {}",
                    srv.concurrency
                ),
            });
        }
        if srv.queue_length > 1_000_000 {
            return Err(ConfigError::Invalid {
                key: "server.queue_length",
                rule: format!("must be at most 1000000, got {}", srv.queue_length),
            });
        }
        if srv.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "server.max_request_bytes",
                rule: format!("must be at least 1024, got {}", srv.max_request_bytes),
            });
        }
        if srv.tcp_listen.is_some() && srv.token_file.is_none() && !srv.ssm_api {
            return Err(ConfigError::Invalid {
                key: "server.token_file",
                rule: "is required with server.tcp_listen: requests over TCP need a bearer token"
                    .into(),
            });
        }
        Ok(())
    }

    /// The SSM API's settings: a TCP listener, keys or an explicit anonymous mode, absolute
    /// attachment roots.
    fn check_ssm(&self) -> Result<(), ConfigError> {
        let srv = &self.server;
        if srv.ssm_api && srv.tcp_listen.is_none() {
            return Err(ConfigError::Invalid {
                key: "server.ssm_api",
                rule: "needs server.tcp_listen (--listen): AWS clients speak HTTP over TCP".into(),
            });
        }
        if srv.ssm_api && srv.ssm_access_keys_file.is_none() && !srv.ssm_anonymous {
            return Err(ConfigError::Invalid {
                key: "server.ssm_access_keys_file",
                rule: "is required with server.ssm_api (--ssm-access-keys-file FILE of `ACCESS_KEY SECRET TENANT` lines); to serve SSM without keys on a loopback address, set server.ssm_anonymous (--ssm-anonymous) explicitly".into(),
            });
        }
        if srv.ssm_anonymous && srv.ssm_access_keys_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "server.ssm_anonymous",
                rule:
                    "cannot be combined with server.ssm_access_keys_file: choose keys or anonymous"
                        .into(),
            });
        }
        for root in &srv.ssm_attachment_roots {
            if !root.is_absolute() {
                return Err(ConfigError::Invalid {
                    key: "server.ssm_attachment_roots",
                    rule: format!("must hold absolute folders, got {}", root.display()),
                });
            }
        }
        Ok(())
    }

    /// The server's time-outs and connection bound.
    fn check_server_timeouts(&self) -> Result<(), ConfigError> {
        let srv = &self.server;
        let positive = [
            (
                "server.ssm_attachment_max_bytes",
                srv.ssm_attachment_max_bytes,
            ),
            (
                "server.ssm_attachment_read_seconds",
                srv.ssm_attachment_read_seconds,
            ),
            (
                "server.header_read_timeout_seconds",
                srv.header_read_timeout_seconds,
            ),
            ("server.idle_timeout_seconds", srv.idle_timeout_seconds),
            (
                "server.request_timeout_seconds",
                srv.request_timeout_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    rule: "must be at least 1".into(),
                });
            }
        }
        if srv.max_connections == 0 || srv.max_connections > 100_000 {
            return Err(ConfigError::Invalid {
                key: "server.max_connections",
                rule: format!("must be between 1 and 100000, got {}", srv.max_connections),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_hardened() {
        let s = Settings::default();
        s.check().unwrap();
        assert_eq!(s.sandbox.network, "none");
        assert_eq!(s.sandbox.user, "10001:10001");
        assert_eq!(s.limits.max_timeout_seconds, 600);
    }

    #[test]
    fn bad_values_name_their_key() {
        let parse = |t: &str| -> Result<Settings, String> {
            let s: Settings = toml::from_str(t).map_err(|e| e.to_string())?;
            s.check().map_err(|e| e.to_string())?;
            Ok(s)
        };
        assert!(
            parse("[sandbox]\nuser = \"0:0\"")
                .unwrap_err()
                .contains("sandbox.user")
        );
        assert!(
            parse("[sandbox]\nnetwork = \"host\"")
                .unwrap_err()
                .contains("sandbox.network")
        );
        assert!(
            parse("[sandbox]\ncontainer_runtime = \"kata\"")
                .unwrap_err()
                .contains("runc or runsc")
        );
        assert!(
            parse("[sandbox]\nprivileged = true")
                .unwrap_err()
                .contains("privileged")
        );
        let raised = parse("[limits]\nmax_timeout_seconds = 3600").unwrap();
        assert_eq!(raised.limits.max_timeout_seconds, 3600);
    }

    #[test]
    fn huge_requested_limits_are_refused_never_wrapped() {
        let s = Settings::default();
        for (req, field) in [
            (
                RequestedLimits {
                    memory_mb: Some(u64::MAX),
                    ..Default::default()
                },
                "Limits.MemoryMb",
            ),
            (
                RequestedLimits {
                    memory_mb: Some(1 << 63),
                    ..Default::default()
                },
                "Limits.MemoryMb",
            ),
            (
                RequestedLimits {
                    milli_cpus: Some(u64::MAX),
                    ..Default::default()
                },
                "Limits.MilliCpus",
            ),
            (
                RequestedLimits {
                    pids_limit: Some(u64::MAX),
                    ..Default::default()
                },
                "Limits.PidsLimit",
            ),
            (
                RequestedLimits {
                    output_bytes: Some(u64::MAX),
                    ..Default::default()
                },
                "Limits.OutputBytes",
            ),
            (
                RequestedLimits {
                    timeout_seconds: Some(u64::MAX),
                    ..Default::default()
                },
                "Limits.TimeoutSeconds",
            ),
        ] {
            let e = s.resolve_limits(&req).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.rule.contains("a request can only lower it"), "{e}");
        }
        let mut huge = Settings::default();
        huge.limits.max_timeout_seconds = u64::MAX;
        assert!(
            huge.check()
                .unwrap_err()
                .to_string()
                .contains("limits.max_timeout_seconds must be between 1 and 604800")
        );
    }

    #[test]
    fn every_key_can_be_overridden_by_name() {
        let mut s = Settings::default();
        let keys: Vec<String> = s.keys().into_iter().map(|(k, _)| k).collect();
        for k in [
            "sandbox.memory_bytes",
            "context.region",
            "output.line_bytes",
            "limits.max_timeout_seconds",
            "limits.default_memory_bytes",
            "server.concurrency",
            "server.socket",
            "server.tcp_listen",
            "server.docker_host",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} not settable: {keys:?}");
        }
        s.apply_override("server.concurrency=3").unwrap();
        s.apply_override("server.socket=/tmp/x.sock").unwrap();
        s.apply_override("context.region=eu-west-1").unwrap();
        s.apply_override("limits.default_memory_bytes=67108864")
            .unwrap();
        assert_eq!(s.server.concurrency, 3);
        assert_eq!(s.server.socket_path(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(s.context.region, "eu-west-1");
        assert_eq!(s.limits.default_memory_bytes, Some(64 * 1024 * 1024));
        s.check().unwrap();
        let e = s.apply_override("server.nope=1").unwrap_err().to_string();
        assert!(e.contains("unknown setting"), "{e}");
        let e = s
            .apply_override("server.concurrency=many")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected an integer"), "{e}");
        // Defaults apply, and never exceed the maxima.
        let l = s.resolve_limits(&RequestedLimits::default()).unwrap();
        assert_eq!(l.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(l.nano_cpus, s.sandbox.nano_cpus);
        let l = s
            .resolve_limits(&RequestedLimits {
                memory_mb: Some(256),
                milli_cpus: Some(500),
                pids_limit: Some(32),
                output_bytes: Some(4096),
                timeout_seconds: Some(10),
            })
            .unwrap();
        assert_eq!(
            (
                l.memory_bytes,
                l.nano_cpus,
                l.pids_limit,
                l.output_limit_bytes,
                l.timeout_seconds
            ),
            (256 << 20, 500_000_000, 32, 4096, 10)
        );
        let e = s
            .resolve_limits(&RequestedLimits {
                pids_limit: Some(100_000),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.field, "Limits.PidsLimit");
        let mut tcp = Settings::default();
        tcp.server.tcp_listen = Some("127.0.0.1:1".into());
        assert!(tcp.check().unwrap_err().to_string().contains("token_file"));
        // The SSM API authenticates by SigV4: TCP without a token is allowed with it...
        tcp.server.ssm_api = true;
        // (issue 10: it needs access keys, or an explicit anonymous mode)
        assert!(
            tcp.check()
                .unwrap_err()
                .to_string()
                .contains("ssm_access_keys_file")
        );
        tcp.server.ssm_anonymous = true;
        tcp.check().unwrap();
        tcp.apply_override("server.ssm_attachment_roots=/srv/a,/srv/b")
            .unwrap();
        assert_eq!(
            tcp.server.ssm_attachment_roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        tcp.apply_override("server.ssm_attachment_roots=relative")
            .unwrap();
        assert!(
            tcp.check()
                .unwrap_err()
                .to_string()
                .contains("ssm_attachment_roots")
        );
        tcp.apply_override("server.ssm_attachment_roots=").unwrap();
        tcp.apply_override("server.max_connections=0").unwrap();
        assert!(
            tcp.check()
                .unwrap_err()
                .to_string()
                .contains("max_connections")
        );
        // ...and it needs a TCP listener.
        let mut ssm = Settings::default();
        ssm.server.ssm_api = true;
        assert!(ssm.check().unwrap_err().to_string().contains("tcp_listen"));
        ssm.apply_override("server.ssm_access_keys_file=/etc/keys")
            .unwrap();
        assert_eq!(
            ssm.server.ssm_access_keys_file,
            Some(PathBuf::from("/etc/keys"))
        );
    }
}
