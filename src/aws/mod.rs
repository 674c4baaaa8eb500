//! AWS access for steps (issue 13): the operator's mode (`[aws]`), the credentials a step gets
//! ([`credentials`]) and, through [`crate::egress`], its guarded way out of the sandbox.
//! A request never widens the mode: it only names a role (the runbook's `assumeRole`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::AwsContext;
use crate::egress::{
    EgressBudget, EgressError, EgressLimits, EgressPolicy, EgressSession, HostPort,
    default_egress_dir,
};
use credentials::{
    CredentialBroker, CredentialError, CredentialRequest, StepCredentials, session_name,
};

pub mod api;
pub mod credentials;
pub mod worker;

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
    /// The roles a runbook (or `--assume-role`) may name: exact ARNs, or prefixes ending in
    /// `*`. Empty: any role the operator's credentials may assume. A daemon that serves
    /// several tenants should list them: a tenant's runbook names its role, and scriptbox
    /// assumes it with the operator's credentials.
    pub allowed_roles: Vec<String>,
    /// Deadline of each call for credentials (the operator's chain, STS).
    pub credential_timeout_seconds: u64,
    /// Parent folder of the per-execution socket folders (default: `/run/scriptbox/egress` as
    /// root, else under `$XDG_RUNTIME_DIR` or `/tmp`).
    pub egress_dir: Option<PathBuf>,
    /// The Python runtime whose image runs the AWS API worker of the AWS actions (default: the
    /// newest Python runtime of the catalog whose image is built).
    pub api_runtime: Option<String>,
    /// Seconds between two calls of a wait (`aws:waitForAwsResourceProperty`...), 1 to 300
    /// **(ours: AWS does not document its interval; 2 by default)**.
    pub poll_interval_seconds: u64,
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
            allowed_roles: Vec::new(),
            credential_timeout_seconds: 30,
            egress_dir: None,
            api_runtime: None,
            poll_interval_seconds: 2,
        }
    }
}

/// A problem with the `[aws]` / `[egress]` settings, naming the key and the rule.
#[derive(Debug, thiserror::Error)]
pub enum AwsSettingError {
    /// A value breaks a rule.
    #[error("{key} {rule}")]
    Invalid {
        /// The setting (`aws.endpoint`...).
        key: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The credential broker could not be built.
    #[error("AWS credentials: {0}")]
    Credentials(#[from] CredentialError),
}

/// The longest role pattern accepted (as long as a role ARN may be).
const MAX_PATTERN_CHARS: usize = 2048;

/// The emulator's address from `[aws] endpoint`: a URL as [`credentials::check_endpoint`]
/// accepts it, and `http://` (the relay forwards plain HTTP; an emulator behind TLS is not
/// supported).
pub fn emulator_address(endpoint: &str) -> Result<HostPort, AwsSettingError> {
    let invalid = |rule: String| AwsSettingError::Invalid {
        key: "aws.endpoint",
        rule,
    };
    credentials::check_endpoint(endpoint).map_err(|e| invalid(e.to_string()))?;
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|_| invalid(format!("{endpoint:?} is not a URL")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(format!(
            "must be an http:// URL such as http://127.0.0.1:5000, got {endpoint:?} (the egress \
             relays plain HTTP to the emulator)"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("{endpoint:?} has no host")))?;
    HostPort::parse(authority.as_str(), 80).map_err(|e| invalid(e.to_string()))
}

/// Checks `[aws]` and `[egress]` without building anything that calls out (configuration load).
pub fn check_settings(
    aws: &AwsConfig,
    egress: &EgressLimits,
    context: &AwsContext,
) -> Result<(), AwsSettingError> {
    check_values(aws, egress)?;
    policy_of(aws, context).map(|_| ())
}

/// The rules of `[aws]` and `[egress]` that do not need the egress policy: positive and bounded
/// numbers, role patterns, no endpoint without a mode that uses it.
fn check_values(aws: &AwsConfig, egress: &EgressLimits) -> Result<(), AwsSettingError> {
    let positive = [
        ("egress.max_connections", egress.max_connections),
        (
            "egress.max_concurrent_connections",
            egress.max_concurrent_connections,
        ),
        ("egress.max_bytes", egress.max_bytes),
        (
            "egress.max_connection_seconds",
            egress.max_connection_seconds,
        ),
        (
            "egress.connect_timeout_seconds",
            egress.connect_timeout_seconds,
        ),
        (
            "aws.credential_timeout_seconds",
            aws.credential_timeout_seconds,
        ),
        ("aws.poll_interval_seconds", aws.poll_interval_seconds),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(AwsSettingError::Invalid {
                key,
                rule: "must be positive".into(),
            });
        }
    }
    let bounded = [
        (
            "egress.max_connection_seconds",
            egress.max_connection_seconds,
            7 * 24 * 3600,
        ),
        (
            "egress.connect_timeout_seconds",
            egress.connect_timeout_seconds,
            300,
        ),
        (
            "aws.credential_timeout_seconds",
            aws.credential_timeout_seconds,
            300,
        ),
        (
            "egress.max_concurrent_connections",
            egress.max_concurrent_connections,
            1024,
        ),
        ("egress.max_connections", egress.max_connections, 1_000_000),
        ("aws.poll_interval_seconds", aws.poll_interval_seconds, 300),
    ];
    for (key, value, max) in bounded {
        if value > max {
            return Err(AwsSettingError::Invalid {
                key,
                rule: format!("must be at most {max}, got {value}"),
            });
        }
    }
    check_allowed_roles(&aws.allowed_roles)?;
    if aws.mode == AwsMode::None && aws.endpoint.is_some() {
        return Err(AwsSettingError::Invalid {
            key: "aws.endpoint",
            rule: "is set but aws.mode is none: set aws.mode = \"emulator\" (or --aws-endpoint)"
                .into(),
        });
    }
    Ok(())
}

/// The most patterns `aws.allowed_roles` may hold.
const MAX_ALLOWED_ROLES: usize = 1000;

/// `aws.allowed_roles`: at most 1000 non-empty patterns of at most 2048 characters, `*` only
/// at the end.
fn check_allowed_roles(patterns: &[String]) -> Result<(), AwsSettingError> {
    let invalid = |rule: String| AwsSettingError::Invalid {
        key: "aws.allowed_roles",
        rule,
    };
    if patterns.len() > MAX_ALLOWED_ROLES {
        return Err(invalid(format!(
            "must hold at most {MAX_ALLOWED_ROLES} patterns, got {}",
            patterns.len()
        )));
    }
    for pattern in patterns {
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        if body.is_empty() || body.len() > MAX_PATTERN_CHARS || body.contains('*') {
            return Err(invalid(format!(
                "patterns are role ARNs, or prefixes ending in one `*` (at most {MAX_PATTERN_CHARS} characters); got {:?}",
                pattern.chars().take(120).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// True when `role` matches one of `patterns` (an empty list allows every role).
fn role_allowed(patterns: &[String], role: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => role.starts_with(prefix),
            None => role == p,
        })
}

/// The egress rules of the configured mode; `None` in mode `none`.
fn policy_of(
    aws: &AwsConfig,
    context: &AwsContext,
) -> Result<Option<EgressPolicy>, AwsSettingError> {
    match aws.mode {
        AwsMode::None => Ok(None),
        AwsMode::Emulator => {
            let endpoint = aws.endpoint.as_deref().ok_or(AwsSettingError::Invalid {
                key: "aws.endpoint",
                rule: "is required when aws.mode is emulator (--aws-endpoint URL)".into(),
            })?;
            Ok(Some(EgressPolicy::emulator(emulator_address(endpoint)?)))
        }
        AwsMode::Aws => {
            let mut extra = Vec::with_capacity(aws.allow_hosts.len());
            for host in &aws.allow_hosts {
                extra.push(
                    HostPort::parse(host, 443).map_err(|e| AwsSettingError::Invalid {
                        key: "aws.allow_hosts",
                        rule: e.to_string(),
                    })?,
                );
            }
            let mut regions = vec![context.region.clone()];
            regions.extend(aws.extra_regions.iter().cloned());
            let policy = EgressPolicy::aws(&context.partition, regions, extra).map_err(|e| {
                AwsSettingError::Invalid {
                    key: "aws.extra_regions",
                    rule: format!("(with context.region and context.partition): {e}"),
                }
            })?;
            Ok(Some(policy))
        }
    }
}

/// Everything a runner needs to give steps AWS access in the configured mode: the egress rules,
/// where the sockets live, the caps, and the credential broker.
#[derive(Debug)]
pub struct AwsAccess {
    mode: AwsMode,
    allowed_roles: Vec<String>,
    policy: Arc<EgressPolicy>,
    broker: CredentialBroker,
    egress_dir: PathBuf,
    limits: EgressLimits,
    socket_owner: Option<(u32, u32)>,
    endpoint: Option<String>,
    poll_interval: Duration,
}

impl AwsAccess {
    /// Builds the access of `[aws]`; `None` in mode `none`. `sandbox_user` (`uid:gid`) owns the
    /// sockets, so only the container's user may connect to them.
    pub async fn from_settings(
        aws: &AwsConfig,
        egress: &EgressLimits,
        context: &AwsContext,
        sandbox_user: &str,
    ) -> Result<Option<Arc<AwsAccess>>, AwsSettingError> {
        check_values(aws, egress)?;
        let Some(policy) = policy_of(aws, context)? else {
            return Ok(None);
        };
        let broker = CredentialBroker::new(aws, &context.region).await?;
        let socket_owner = sandbox_user
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        Ok(Some(Arc::new(AwsAccess {
            mode: aws.mode,
            allowed_roles: aws.allowed_roles.clone(),
            policy: Arc::new(policy),
            broker,
            egress_dir: aws.egress_dir.clone().unwrap_or_else(default_egress_dir),
            limits: egress.clone(),
            socket_owner,
            endpoint: aws.endpoint.clone(),
            poll_interval: Duration::from_secs(aws.poll_interval_seconds.clamp(1, 300)),
        })))
    }

    /// A fresh budget for one execution's egress.
    pub fn new_budget(&self) -> Arc<EgressBudget> {
        EgressBudget::new(self.limits.clone())
    }

    /// The credentials of one step run: the role's, the operator's session ones, or none.
    pub async fn credentials(
        &self,
        role_arn: Option<&str>,
        execution_id: &str,
        lifetime: Duration,
    ) -> Result<Option<StepCredentials>, CredentialError> {
        if let Some(role) = role_arn.filter(|r| !role_allowed(&self.allowed_roles, r)) {
            return Err(CredentialError::RoleNotAllowed {
                role: role.chars().take(120).collect(),
            });
        }
        let name = session_name(execution_id);
        self.broker
            .for_step(CredentialRequest {
                role_arn,
                session_name: &name,
                lifetime,
            })
            .await
    }

    /// The credentials of one AWS action's call: the role's, else the operator's own (AWS
    /// actions run as whoever started the automation when the runbook names no role).
    pub async fn action_credentials(
        &self,
        role_arn: Option<&str>,
        execution_id: &str,
        lifetime: Duration,
    ) -> Result<Option<StepCredentials>, CredentialError> {
        if let Some(role) = role_arn.filter(|r| !role_allowed(&self.allowed_roles, r)) {
            return Err(CredentialError::RoleNotAllowed {
                role: role.chars().take(120).collect(),
            });
        }
        let name = session_name(execution_id);
        self.broker
            .for_action(CredentialRequest {
                role_arn,
                session_name: &name,
                lifetime,
            })
            .await
    }

    /// The endpoint AWS calls go to: the emulator's URL, or `AWS` for AWS itself.
    pub fn endpoint_name(&self) -> &str {
        match self.mode {
            AwsMode::Emulator => self.endpoint.as_deref().unwrap_or("the emulator"),
            _ => self.endpoint.as_deref().unwrap_or("AWS"),
        }
    }

    /// Seconds between two calls of a wait (`[aws] poll_interval_seconds`).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Opens the egress socket of one step run, counted against `budget`.
    pub fn open_egress(&self, budget: Arc<EgressBudget>) -> Result<EgressSession, EgressError> {
        EgressSession::start(
            &self.egress_dir,
            self.socket_owner,
            Arc::clone(&self.policy),
            budget,
        )
    }

    /// True when the step's AWS calls go to the emulator (`AWS_ENDPOINT_URL` on the relay).
    pub fn endpoint_via_relay(&self) -> bool {
        self.mode == AwsMode::Emulator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator(endpoint: &str) -> AwsConfig {
        AwsConfig {
            mode: AwsMode::Emulator,
            endpoint: Some(endpoint.into()),
            ..AwsConfig::default()
        }
    }

    #[test]
    fn emulator_endpoints_are_http_host_port_only() {
        let ok = emulator_address("http://127.0.0.1:5000").unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("127.0.0.1", 5000));
        let ok = emulator_address("http://localhost:4566/").unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("localhost", 4566));
        for bad in [
            "https://127.0.0.1:5000",
            "127.0.0.1:5000",
            "http://",
            "http://user@127.0.0.1:5000",
            "http://127.0.0.1:5000/path",
            "http://127.0.0.1:5000?x=1",
            "ftp://127.0.0.1",
        ] {
            let e = emulator_address(bad).unwrap_err().to_string();
            assert!(e.starts_with("aws.endpoint "), "{bad}: {e}");
        }
        let long = format!("http://{}:1", "a".repeat(3000));
        assert!(emulator_address(&long).is_err());
    }

    #[test]
    fn allowed_roles_are_exact_or_prefixes() {
        let patterns = vec![
            "arn:aws:iam::123456789012:role/automation-*".to_string(),
            "arn:aws:iam::123456789012:role/tagger".to_string(),
        ];
        assert!(check_allowed_roles(&patterns).is_ok());
        for (role, allowed) in [
            ("arn:aws:iam::123456789012:role/automation-x", true),
            ("arn:aws:iam::123456789012:role/tagger", true),
            ("arn:aws:iam::123456789012:role/tagger2", false),
            ("arn:aws:iam::999999999999:role/automation-x", false),
        ] {
            assert_eq!(role_allowed(&patterns, role), allowed, "{role}");
        }
        assert!(role_allowed(&[], "arn:aws:iam::123456789012:role/any"));
        for bad in ["", "*", "arn:*:iam::1:role/x", "a**"] {
            let e = check_allowed_roles(&[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("aws.allowed_roles "), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_name_the_key_and_the_rule() {
        let context = AwsContext::default();
        let limits = EgressLimits::default();
        assert!(check_settings(&AwsConfig::default(), &limits, &context).is_ok());
        assert!(check_settings(&emulator("http://127.0.0.1:5000"), &limits, &context).is_ok());
        let cases: Vec<(AwsConfig, EgressLimits, &str)> = vec![
            (
                AwsConfig {
                    mode: AwsMode::Emulator,
                    ..AwsConfig::default()
                },
                limits.clone(),
                "aws.endpoint is required",
            ),
            (
                AwsConfig {
                    endpoint: Some("http://127.0.0.1:1".into()),
                    ..AwsConfig::default()
                },
                limits.clone(),
                "aws.endpoint is set but aws.mode is none",
            ),
            (
                AwsConfig::default(),
                EgressLimits {
                    max_bytes: 0,
                    ..limits.clone()
                },
                "egress.max_bytes must be positive",
            ),
            (
                AwsConfig::default(),
                EgressLimits {
                    max_connection_seconds: u64::MAX,
                    ..limits.clone()
                },
                "egress.max_connection_seconds must be at most",
            ),
            (
                AwsConfig {
                    credential_timeout_seconds: 0,
                    ..AwsConfig::default()
                },
                limits.clone(),
                "aws.credential_timeout_seconds must be positive",
            ),
        ];
        for (aws, limits, want) in cases {
            let e = check_settings(&aws, &limits, &context)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
