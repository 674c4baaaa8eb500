//! AWS access for steps (issue 13): the operator's mode (`[aws]`), the credentials a step gets
//! ([`credentials`]) and, through [`crate::egress`], its guarded way out of the sandbox.
//! A request never widens the mode: it only names a role (the runbook's `assumeRole`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod credentials;

/// How steps reach AWS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AwsMode {
    /// No socket, no mount, no proxy, no credentials: exactly the sandbox without AWS.
    #[default]
    None,
    /// Every AWS call goes to `[aws] endpoint` (moto, LocalStack).
    Emulator,
    /// Real AWS, through the CONNECT allowlist.
    Aws,
}

/// `[aws]`: the operator's AWS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// `none` (default), `emulator` or `aws`.
    pub mode: AwsMode,
    /// The emulator's URL (`http://127.0.0.1:5000`), required in `emulator` mode.
    pub endpoint: Option<String>,
    /// The operator's profile for its own credentials (`aws` mode).
    pub profile: Option<String>,
    /// Regions the egress allows besides `[context] region`.
    pub extra_regions: Vec<String>,
    /// Hosts CONNECT may reach besides AWS's (`host` for 443, or `host:port`).
    pub allow_hosts: Vec<String>,
    /// Give a step without a role the operator's own credentials, as session credentials
    /// (off by default: such a step runs without any permissions, as on AWS).
    pub pass_operator_credentials: bool,
    /// Deadline of each call for credentials (the operator's chain, STS).
    pub credential_timeout_seconds: u64,
    /// Parent folder of the per-execution socket folders (default: `/run/scriptbox/egress` as
    /// root, else under `$XDG_RUNTIME_DIR` or `/tmp`).
    pub egress_dir: Option<PathBuf>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            mode: AwsMode::None,
            endpoint: None,
            profile: None,
            extra_regions: Vec::new(),
            allow_hosts: Vec::new(),
            pass_operator_credentials: false,
            credential_timeout_seconds: 30,
            egress_dir: None,
        }
    }
}
