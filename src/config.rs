//! Operator settings: the sandbox, the context values, output limits and the timeout ceiling.
//!
//! Loaded from a TOML file (`--config`); every key is optional and unknown keys are refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::execute::{AwsContext, OutputLimits};
use crate::pool::PoolConfig;
use crate::sandbox::SandboxConfig;
use crate::step::DEFAULT_TIMEOUT_SECS;

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
    /// The warm pool of pre-started containers (`[pool]`, used by the daemon).
    pub pool: PoolConfig,
}

/// Ceilings on what a step may ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepLimits {
    /// The largest `timeoutSeconds` accepted (AWS: 600).
    pub max_timeout_seconds: u64,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            max_timeout_seconds: DEFAULT_TIMEOUT_SECS,
        }
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

    /// Checks the rules that types alone do not express.
    pub fn check(&self) -> Result<(), ConfigError> {
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
        if self.limits.max_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_timeout_seconds",
                rule: "must be at least 1".into(),
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
}
