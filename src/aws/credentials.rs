//! The credentials a step gets, as the real service gives them: STS `AssumeRole` of the runbook's
//! role with the operator's credentials (the official AWS SDK for Rust), or, without a role,
//! nothing (the step runs "without any permissions") unless the operator passes its own
//! credentials, always as session credentials: the operator's long-term secret never reaches a
//! step. In `emulator` mode the same path runs against `[aws] endpoint` (moto), STS included.
//!
//! Secrets are never logged: [`StepCredentials`]'s `Debug` redacts them, no error message holds
//! one, and nothing here traces credentials.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use aws_sdk_sts::error::{DisplayErrorContext, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::{AwsConfig, AwsMode};

/// The margin STS sessions get beyond the step's lifetime, so credentials never lapse during the
/// last seconds of a step (clock skew, the time between issue and start).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// STS's shortest session (`DurationSeconds` >= 900).
pub const MIN_SESSION_SECONDS: u64 = 900;
/// The longest session scriptbox asks for (`AssumeRole`'s ceiling for a role whose
/// `MaxSessionDuration` allows it): a lifetime needing more is refused before any call.
pub const MAX_SESSION_SECONDS: u64 = 43_200;
/// The key emulator mode signs with when the operator's environment and profile hold none
/// (moto and LocalStack accept any key).
pub const EMULATOR_FALLBACK_KEY: &str = "test";
/// Bound on the ARNs and endpoints accepted (and the longest quoted back in an error).
const MAX_INPUT_CHARS: usize = 2048;
const QUOTE_CHARS: usize = 120;
/// Longest `RoleSessionName` STS accepts.
const MAX_SESSION_NAME_CHARS: usize = 64;

/// Temporary credentials for one step. `Debug` redacts the secret and the token.
#[derive(Clone, PartialEq, Eq)]
pub struct StepCredentials {
    /// `ASIA...` for STS session credentials.
    pub access_key_id: String,
    /// Never logged.
    pub secret_access_key: String,
    /// Present for every credential STS issues; never logged.
    pub session_token: Option<String>,
    /// When STS says they lapse (always at least the step's lifetime away when issued).
    pub expiration: Option<SystemTime>,
}

impl StepCredentials {
    /// The step's environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (when present), as Lambda gives them.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                self.secret_access_key.clone(),
            ),
        ];
        if let Some(token) = &self.session_token {
            env.push(("AWS_SESSION_TOKEN".to_owned(), token.clone()));
        }
        env
    }

    fn from_sdk(credentials: &Credentials) -> StepCredentials {
        StepCredentials {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: credentials.secret_access_key().to_owned(),
            session_token: credentials.session_token().map(str::to_owned),
            expiration: credentials.expiry(),
        }
    }

    fn from_sts(credentials: &aws_sdk_sts::types::Credentials) -> StepCredentials {
        StepCredentials {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: credentials.secret_access_key().to_owned(),
            session_token: Some(credentials.session_token().to_owned()),
            expiration: SystemTime::try_from(*credentials.expiration()).ok(),
        }
    }
}

impl fmt::Debug for StepCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration.map(format_time))
            .finish()
    }
}

/// What one step asks for.
#[derive(Debug, Clone, Copy)]
pub struct CredentialRequest<'a> {
    /// The runbook's `assumeRole` (already checked with [`check_role_arn`], or checked here).
    pub role_arn: Option<&'a str>,
    /// `RoleSessionName`, normally [`session_name`] of the execution id.
    pub session_name: &'a str,
    /// How long the step may run: the credentials must stay valid that long.
    pub lifetime: Duration,
}

/// Where the operator's own credentials are looked up in `emulator` mode (environment variables
/// and the profile files they point at). `aws` mode always uses the SDK's default chain, which
/// reads the process environment.
#[derive(Debug, Clone, Default)]
pub enum OperatorEnvironment {
    /// The daemon's own environment.
    #[default]
    Process,
    /// These variables instead (tests, embedding): nothing is read from the process environment.
    Given(HashMap<String, String>),
}

impl OperatorEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            OperatorEnvironment::Process => std::env::var(name).ok(),
            OperatorEnvironment::Given(vars) => vars.get(name).cloned(),
        }
        .filter(|value| !value.is_empty())
    }

    fn sdk_env(&self) -> aws_types::os_shim_internal::Env {
        match self {
            OperatorEnvironment::Process => aws_types::os_shim_internal::Env::real(),
            OperatorEnvironment::Given(vars) => {
                let pairs: Vec<(&str, &str)> =
                    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                aws_types::os_shim_internal::Env::from_slice(&pairs)
            }
        }
    }
}

/// Every way getting credentials fails. No message ever holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `assumeRole` is not an IAM role ARN.
    #[error("assumeRole {value:?} is not an IAM role ARN: {rule}")]
    RoleArn { value: String, rule: &'static str },
    /// `[aws] endpoint` is missing or not an acceptable URL.
    #[error("[aws] endpoint {value:?} is refused: {rule}")]
    Endpoint { value: String, rule: &'static str },
    /// The operator's credential chain found nothing or failed.
    #[error("the operator's AWS credentials could not be obtained: {message}")]
    NoOperatorCredentials { message: String },
    /// STS AssumeRole failed.
    #[error("STS AssumeRole of {role} failed: {message}")]
    AssumeRole { role: String, message: String },
    /// STS GetSessionToken failed.
    #[error("STS GetSessionToken for the operator's credentials failed: {message}")]
    SessionToken { message: String },
    /// STS answered without credentials.
    #[error("STS {operation} answered without credentials")]
    EmptyAnswer { operation: &'static str },
    /// Credentials would lapse before the step ends (or the step needs longer than STS gives).
    #[error("{what} expire at {expires}, before {needed}")]
    ExpiresTooSoon {
        what: String,
        expires: String,
        needed: String,
    },
    /// An operation did not finish within `credential_timeout_seconds`.
    #[error("{operation} did not finish within {seconds} s (credential_timeout_seconds)")]
    Deadline {
        operation: &'static str,
        seconds: u64,
    },
    /// The role is not one of `[aws] allowed_roles`.
    #[error("assumeRole {role:?} is not in aws.allowed_roles, the roles this scriptbox may assume")]
    RoleNotAllowed { role: String },
}

/// Gets each step its credentials. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct CredentialBroker {
    inner: Arc<Inner>,
}

enum Inner {
    /// `mode = none`: nothing was built, nothing is ever called.
    Disabled,
    Ready(Box<Ready>),
}

struct Ready {
    sts: aws_sdk_sts::Client,
    operator: SharedCredentialsProvider,
    pass_operator_credentials: bool,
    timeout: Duration,
}

impl fmt::Debug for CredentialBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner {
            Inner::Disabled => "disabled",
            Inner::Ready(_) => "ready",
        };
        f.debug_struct("CredentialBroker")
            .field("state", &state)
            .finish()
    }
}

impl CredentialBroker {
    /// From `[aws]` and the region: builds the SDK configuration (HTTPS client with rustls and
    /// ring, the operator's chain, STS) and calls nothing yet. In `aws` mode the chain is the
    /// SDK's default one (environment, profile `config.profile` or `AWS_PROFILE`, web identity,
    /// ECS/EKS container metadata, EC2 instance metadata). In `emulator` mode STS goes to
    /// `config.endpoint` and the chain is only the environment and the profile (never instance
    /// metadata: that would leave loopback); when they hold no key, the static key
    /// [`EMULATOR_FALLBACK_KEY`] / [`EMULATOR_FALLBACK_KEY`] is used, which emulators accept.
    pub async fn new(
        config: &AwsConfig,
        region: &str,
    ) -> Result<CredentialBroker, CredentialError> {
        Self::with_environment(config, region, OperatorEnvironment::Process).await
    }

    /// [`CredentialBroker::new`] with the operator's environment for `emulator` mode given
    /// explicitly rather than read from the process (`aws` mode still uses the SDK's default chain
    /// on the process environment).
    pub async fn with_environment(
        config: &AwsConfig,
        region: &str,
        environment: OperatorEnvironment,
    ) -> Result<CredentialBroker, CredentialError> {
        let ready = match config.mode {
            AwsMode::None => return Ok(Self::wrap(Inner::Disabled)),
            AwsMode::Aws => {
                if let Some(endpoint) = &config.endpoint {
                    check_endpoint(endpoint)?;
                }
                build_ready(config, region, None, environment).await?
            }
            AwsMode::Emulator => {
                let endpoint = config
                    .endpoint
                    .as_deref()
                    .ok_or(CredentialError::Endpoint {
                        value: String::new(),
                        rule: "emulator mode needs [aws] endpoint",
                    })?;
                check_endpoint(endpoint)?;
                build_ready(config, region, Some(endpoint), environment).await?
            }
        };
        Ok(Self::wrap(Inner::Ready(Box::new(ready))))
    }

    fn wrap(inner: Inner) -> CredentialBroker {
        CredentialBroker {
            inner: Arc::new(inner),
        }
    }

    /// The credentials of one step: `None` in mode `none`, or without a role when the operator
    /// does not pass its own; else STS session credentials valid at least `lifetime` from now
    /// (`AssumeRole` of the role, or the operator's session credentials / `GetSessionToken`).
    /// Each call to the chain or STS runs under `credential_timeout_seconds`.
    pub async fn for_step(
        &self,
        request: CredentialRequest<'_>,
    ) -> Result<Option<StepCredentials>, CredentialError> {
        let ready = match &*self.inner {
            Inner::Disabled => return Ok(None),
            Inner::Ready(ready) => ready,
        };
        match request.role_arn {
            Some(role) => ready.assume_role(role, &request).await.map(Some),
            None if ready.pass_operator_credentials => {
                ready.operator_session(request.lifetime).await.map(Some)
            }
            None => Ok(None),
        }
    }

    /// The credentials of an AWS action's call (`aws:executeAwsApi`...): the role's when the
    /// runbook names one, else the operator's own as session credentials, always (AWS: such
    /// actions run as whoever started the automation), whatever `pass_operator_credentials`
    /// says of executeScript steps. `None` only in mode `none`.
    pub async fn for_action(
        &self,
        request: CredentialRequest<'_>,
    ) -> Result<Option<StepCredentials>, CredentialError> {
        let ready = match &*self.inner {
            Inner::Disabled => return Ok(None),
            Inner::Ready(ready) => ready,
        };
        match request.role_arn {
            Some(role) => ready.assume_role(role, &request).await.map(Some),
            None => ready.operator_session(request.lifetime).await.map(Some),
        }
    }
}

impl Ready {
    async fn assume_role(
        &self,
        role: &str,
        request: &CredentialRequest<'_>,
    ) -> Result<StepCredentials, CredentialError> {
        check_role_arn(role)?;
        let seconds = session_seconds(request.lifetime)?;
        let started = SystemTime::now();
        let call = self
            .sts
            .assume_role()
            .role_arn(role)
            .role_session_name(request.session_name)
            .duration_seconds(seconds)
            .send();
        let output = self.deadline("STS AssumeRole", call).await?.map_err(|e| {
            CredentialError::AssumeRole {
                role: role.to_owned(),
                message: DisplayErrorContext(&e).to_string(),
            }
        })?;
        let credentials = output.credentials().ok_or(CredentialError::EmptyAnswer {
            operation: "AssumeRole",
        })?;
        let credentials = StepCredentials::from_sts(credentials);
        covers(
            "the role's credentials",
            &credentials,
            started,
            request.lifetime,
        )?;
        Ok(credentials)
    }

    async fn operator_session(
        &self,
        lifetime: Duration,
    ) -> Result<StepCredentials, CredentialError> {
        let started = SystemTime::now();
        let operator = self
            .deadline(
                "the operator's credential chain",
                self.operator.provide_credentials(),
            )
            .await?
            .map_err(|e| CredentialError::NoOperatorCredentials {
                message: DisplayErrorContext(&e).to_string(),
            })?;
        if operator.session_token().is_some() {
            // Already session credentials (an assumed role, instance or container credentials):
            // passed as they are; STS refuses GetSessionToken for them anyway.
            let credentials = StepCredentials::from_sdk(&operator);
            covers(
                "the operator's session credentials",
                &credentials,
                started,
                lifetime,
            )?;
            return Ok(credentials);
        }
        let seconds = session_seconds(lifetime)?;
        let call = self
            .sts
            .get_session_token()
            .duration_seconds(seconds)
            .send();
        let output = self
            .deadline("STS GetSessionToken", call)
            .await?
            .map_err(|e| {
                self.sdk_failure("STS GetSessionToken", e, |message| {
                    CredentialError::SessionToken { message }
                })
            })?;
        let credentials = output.credentials().ok_or(CredentialError::EmptyAnswer {
            operation: "GetSessionToken",
        })?;
        let credentials = StepCredentials::from_sts(credentials);
        covers("the session credentials", &credentials, started, lifetime)?;
        Ok(credentials)
    }

    /// The SDK's own timeout (the same deadline, set on the client) is reported as
    /// [`CredentialError::Deadline`]; any other failure through `other` with the whole cause chain.
    fn sdk_failure<E, R>(
        &self,
        operation: &'static str,
        error: SdkError<E, R>,
        other: impl FnOnce(String) -> CredentialError,
    ) -> CredentialError
    where
        E: std::error::Error + 'static,
        R: fmt::Debug,
    {
        match error {
            SdkError::TimeoutError(_) => CredentialError::Deadline {
                operation,
                seconds: self.timeout.as_secs(),
            },
            error => other(DisplayErrorContext(&error).to_string()),
        }
    }

    async fn deadline<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = T>,
    ) -> Result<T, CredentialError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| CredentialError::Deadline {
                operation,
                seconds: self.timeout.as_secs(),
            })
    }
}

/// Builds the HTTPS client, the SDK configuration and the STS client; calls nothing.
async fn build_ready(
    config: &AwsConfig,
    region: &str,
    emulator_endpoint: Option<&str>,
    environment: OperatorEnvironment,
) -> Result<Ready, CredentialError> {
    let timeout = Duration::from_secs(config.credential_timeout_seconds.max(1));
    // Proxy settings stay off: scriptbox's own calls go straight to STS or the emulator.
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new(region.to_owned()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        );
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if emulator_endpoint.is_some() {
        let chain = EmulatorOperatorChain {
            environment,
            profile: config.profile.clone(),
        };
        loader = loader.credentials_provider(chain);
    }
    let sdk = tokio::time::timeout(timeout, loader.load())
        .await
        .map_err(|_| CredentialError::Deadline {
            operation: "loading the AWS configuration",
            seconds: timeout.as_secs(),
        })?;
    let operator = sdk
        .credentials_provider()
        .ok_or(CredentialError::NoOperatorCredentials {
            message: "the SDK configuration has no credential chain".to_owned(),
        })?;
    let mut sts = aws_sdk_sts::config::Builder::from(&sdk);
    if let Some(endpoint) = emulator_endpoint {
        // Set on STS itself: AWS_ENDPOINT_URL_STS in the environment would otherwise win.
        sts = sts.endpoint_url(endpoint);
    }
    Ok(Ready {
        sts: aws_sdk_sts::Client::from_conf(sts.build()),
        operator,
        pass_operator_credentials: config.pass_operator_credentials,
        timeout,
    })
}

/// The operator's chain in emulator mode: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
/// (`AWS_SESSION_TOKEN`), then the static keys of the profile (`[aws] profile`, `AWS_PROFILE`
/// or `default`; a profile's `role_arn`, `credential_process` or SSO settings are not followed,
/// as they would reach beyond the emulator), then the static key "test"/"test".
#[derive(Debug)]
struct EmulatorOperatorChain {
    environment: OperatorEnvironment,
    profile: Option<String>,
}

impl EmulatorOperatorChain {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let env = &self.environment;
        if let (Some(key), Some(secret)) = (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            let token = env.var("AWS_SESSION_TOKEN");
            return Ok(Credentials::new(key, secret, token, None, "environment"));
        }
        if let Some(credentials) = self.profile_credentials().await? {
            return Ok(credentials);
        }
        Ok(Credentials::new(
            EMULATOR_FALLBACK_KEY,
            EMULATOR_FALLBACK_KEY,
            None,
            None,
            "emulator-fallback",
        ))
    }

    async fn profile_credentials(&self) -> Result<Option<Credentials>, CredentialsError> {
        let name = self
            .profile
            .clone()
            .or_else(|| self.environment.var("AWS_PROFILE"));
        let fs = aws_types::os_shim_internal::Fs::real();
        let set = aws_config::profile::load(
            &fs,
            &self.environment.sdk_env(),
            // The standard files (~/.aws/config, ~/.aws/credentials, AWS_CONFIG_FILE, ...).
            &Default::default(),
            name.map(std::borrow::Cow::Owned),
        )
        .await
        .map_err(CredentialsError::invalid_configuration)?;
        let Some(profile) = set.get_profile(set.selected_profile()) else {
            return Ok(None);
        };
        let key = profile.get("aws_access_key_id");
        let secret = profile.get("aws_secret_access_key");
        Ok(match (key, secret) {
            (Some(key), Some(secret)) => Some(Credentials::new(
                key,
                secret,
                profile.get("aws_session_token").map(str::to_owned),
                None,
                "profile",
            )),
            _ => None,
        })
    }
}

impl ProvideCredentials for EmulatorOperatorChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// `DurationSeconds` for a step of `lifetime`: lifetime + [`EXPIRY_MARGIN`] rounded up to whole
/// seconds, at least [`MIN_SESSION_SECONDS`]; more than [`MAX_SESSION_SECONDS`] is refused.
pub fn session_seconds(lifetime: Duration) -> Result<i32, CredentialError> {
    let needed = lifetime.saturating_add(EXPIRY_MARGIN);
    let mut seconds = needed.as_secs();
    if needed.subsec_nanos() > 0 {
        seconds = seconds.saturating_add(1);
    }
    if seconds > MAX_SESSION_SECONDS {
        return Err(CredentialError::ExpiresTooSoon {
            what: "the longest STS session scriptbox asks for".to_owned(),
            expires: format!("{MAX_SESSION_SECONDS} s"),
            needed: format!(
                "{seconds} s (the step's lifetime + {} s)",
                EXPIRY_MARGIN.as_secs()
            ),
        });
    }
    let seconds = seconds.max(MIN_SESSION_SECONDS);
    i32::try_from(seconds).map_err(|_| CredentialError::ExpiresTooSoon {
        what: "the longest STS session".to_owned(),
        expires: format!("{MAX_SESSION_SECONDS} s"),
        needed: format!("{seconds} s"),
    })
}

/// Checks `credentials` stay valid from `started` for `lifetime` (when their expiry is known).
fn covers(
    what: &str,
    credentials: &StepCredentials,
    started: SystemTime,
    lifetime: Duration,
) -> Result<(), CredentialError> {
    let Some(expires) = credentials.expiration else {
        return Ok(());
    };
    let needed = started.checked_add(lifetime);
    match needed {
        Some(needed) if expires >= needed => Ok(()),
        _ => Err(CredentialError::ExpiresTooSoon {
            what: what.to_owned(),
            expires: format_time(expires),
            needed: match needed {
                Some(needed) => format!("the step's end ({})", format_time(needed)),
                None => "the step's end (beyond any representable time)".to_owned(),
            },
        }),
    }
}

fn format_time(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn quote(value: &str) -> String {
    value.chars().take(QUOTE_CHARS).collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// Checks an IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<optional path/>name`, at most
/// 2048 characters, the name 1 to 64 characters of `[\w+=,.@-]`, the path printable ASCII. The
/// error names the rule broken.
pub fn check_role_arn(value: &str) -> Result<(), CredentialError> {
    let fail = |rule| CredentialError::RoleArn {
        value: quote(value),
        rule,
    };
    if value.chars().count() > MAX_INPUT_CHARS {
        return Err(fail("at most 2048 characters"));
    }
    let mut parts = value.splitn(6, ':');
    let (Some(arn), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(fail(
            "arn:<partition>:iam::<account>:role/<name> (six ':' fields)",
        ));
    };
    if arn != "arn" {
        return Err(fail("starts with \"arn:\""));
    }
    let partition_ok = partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        });
    if !partition_ok {
        return Err(fail(
            "the partition is aws or aws-<name> (aws-cn, aws-us-gov, ...)",
        ));
    }
    if service != "iam" {
        return Err(fail("the service is iam"));
    }
    if !region.is_empty() {
        return Err(fail("the region field is empty (IAM is global)"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(fail("the account is 12 digits"));
    }
    check_role_resource(resource).map_err(fail)
}

fn check_role_resource(resource: &str) -> Result<(), &'static str> {
    let rest = resource
        .strip_prefix("role/")
        .ok_or("the resource is role/<optional path/>name")?;
    let (path, name) = rest.rsplit_once('/').unwrap_or(("", rest));
    if !path.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the path is printable ASCII");
    }
    if name.is_empty() {
        return Err("the role name is not empty");
    }
    if name.chars().count() > 64 {
        return Err("the role name is at most 64 characters");
    }
    if !name.chars().all(is_name_char) {
        return Err("the role name has only letters, digits and _+=,.@-");
    }
    Ok(())
}

/// `RoleSessionName` for an execution: `scriptbox-` + the id with each character outside
/// `[\w+=,.@-]` replaced by `-`, at most 64 characters (STS's limit), so CloudTrail shows which
/// execution acted.
pub fn session_name(execution_id: &str) -> String {
    let mut name = String::from("scriptbox-");
    let room = MAX_SESSION_NAME_CHARS.saturating_sub(name.len());
    name.extend(
        execution_id
            .chars()
            .take(room)
            .map(|c| if is_name_char(c) { c } else { '-' }),
    );
    name
}

/// Checks `[aws] endpoint`: an `http` or `https` URL with a host and a port, no user info, no
/// path beyond `/`, no query, at most 2048 characters. The error names the rule broken.
pub fn check_endpoint(value: &str) -> Result<(), CredentialError> {
    let fail = |rule| CredentialError::Endpoint {
        value: quote(value),
        rule,
    };
    if value.chars().count() > MAX_INPUT_CHARS {
        return Err(fail("at most 2048 characters"));
    }
    let uri: hyper::Uri = value.parse().map_err(|_| fail("a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(fail("the scheme is http or https")),
    }
    let authority = uri.authority().ok_or(fail("has a host"))?;
    if authority.as_str().contains('@') {
        return Err(fail("no user info"));
    }
    if authority.host().is_empty() {
        return Err(fail("has a host"));
    }
    if authority.port_u16().is_none() {
        return Err(fail("has an explicit port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(fail("no path beyond \"/\" and no query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_ARN: &str = "arn:aws:iam::123456789012:role/automation";

    #[test]
    fn role_arns_follow_the_rules() {
        let long_name = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        let too_long = format!("arn:aws:iam::123456789012:role/p{}/n", "a".repeat(2048));
        let cases: &[(&str, Option<&str>)] = &[
            (OK_ARN, None),
            ("arn:aws-cn:iam::123456789012:role/a/b/c/Name_+=,.@-1", None),
            ("arn:aws-us-gov:iam::123456789012:role/x", None),
            ("", Some("six ':' fields")),
            ("arn:aws:iam::123456789012", Some("six ':' fields")),
            ("urn:aws:iam::123456789012:role/x", Some("starts with")),
            ("arn:gcp:iam::123456789012:role/x", Some("partition")),
            ("arn:aws-:iam::123456789012:role/x", Some("partition")),
            ("arn:aws:sts::123456789012:role/x", Some("service is iam")),
            ("arn:aws:iam:us-east-1:123456789012:role/x", Some("region")),
            ("arn:aws:iam::12345678901:role/x", Some("12 digits")),
            ("arn:aws:iam::12345678901a:role/x", Some("12 digits")),
            ("arn:aws:iam::123456789012:user/x", Some("role/")),
            ("arn:aws:iam::123456789012:role/", Some("not empty")),
            ("arn:aws:iam::123456789012:role/path/", Some("not empty")),
            ("arn:aws:iam::123456789012:role/a b", Some("only letters")),
            ("arn:aws:iam::123456789012:role/p a/x", Some("printable")),
            (long_name.as_str(), Some("64 characters")),
            (too_long.as_str(), Some("2048")),
        ];
        for (arn, want) in cases {
            match (check_role_arn(arn), want) {
                (Ok(()), None) => {}
                (Err(CredentialError::RoleArn { rule, value }), Some(want)) => {
                    assert!(rule.contains(want), "{arn}: rule {rule:?}, wanted {want:?}");
                    assert!(value.chars().count() <= QUOTE_CHARS);
                }
                (got, want) => panic!("{arn}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn endpoints_follow_the_rules() {
        let long = format!("http://127.0.0.1:5000/{}", "a".repeat(2048));
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:5000", None),
            ("http://127.0.0.1:5000/", None),
            ("https://localhost:4566", None),
            ("ftp://127.0.0.1:21", Some("scheme")),
            ("127.0.0.1:5000", Some("scheme")),
            ("http://127.0.0.1", Some("port")),
            ("http://user:pw@127.0.0.1:5000", Some("user info")),
            ("http://127.0.0.1:5000/path", Some("path")),
            ("http://127.0.0.1:5000/?a=b", Some("query")),
            ("not a url", Some("URL")),
            (long.as_str(), Some("2048")),
        ];
        for (endpoint, want) in cases {
            match (check_endpoint(endpoint), want) {
                (Ok(()), None) => {}
                (Err(CredentialError::Endpoint { rule, .. }), Some(want)) => {
                    assert!(rule.contains(want), "{endpoint}: {rule:?}, wanted {want:?}");
                }
                (got, want) => panic!("{endpoint}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn session_names_are_sanitized_and_bounded() {
        assert_eq!(session_name("abc-123"), "scriptbox-abc-123");
        assert_eq!(session_name("a b/c:d€"), "scriptbox-a-b-c-d-");
        let long = session_name(&"x".repeat(200));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("scriptbox-"));
    }

    #[test]
    fn session_durations_add_the_margin_within_sts_bounds() {
        assert_eq!(session_seconds(Duration::ZERO).ok(), Some(900));
        assert_eq!(session_seconds(Duration::from_secs(600)).ok(), Some(900));
        assert_eq!(
            session_seconds(Duration::from_millis(3_600_001)).ok(),
            Some(3_901)
        );
        assert_eq!(
            session_seconds(Duration::from_secs(42_900)).ok(),
            Some(43_200)
        );
        assert!(matches!(
            session_seconds(Duration::from_secs(42_901)),
            Err(CredentialError::ExpiresTooSoon { .. })
        ));
        assert!(session_seconds(Duration::MAX).is_err());
    }

    #[test]
    fn debug_and_errors_hide_secrets() {
        let credentials = StepCredentials {
            access_key_id: "ASIAEXAMPLE".to_owned(),
            secret_access_key: "very-secret".to_owned(),
            session_token: Some("token-secret".to_owned()),
            expiration: Some(SystemTime::UNIX_EPOCH),
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("ASIAEXAMPLE"), "{shown}");
        assert!(!shown.contains("very-secret") && !shown.contains("token-secret"));
        let env = credentials.env();
        assert_eq!(env.len(), 3);
        assert_eq!(env[2].0, "AWS_SESSION_TOKEN");
    }

    #[test]
    fn expiry_must_cover_the_lifetime() {
        let now = SystemTime::now();
        let mut credentials = StepCredentials {
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: None,
            expiration: Some(now + Duration::from_secs(100)),
        };
        assert!(covers("x", &credentials, now, Duration::from_secs(50)).is_ok());
        assert!(matches!(
            covers("x", &credentials, now, Duration::from_secs(150)),
            Err(CredentialError::ExpiresTooSoon { .. })
        ));
        credentials.expiration = None;
        assert!(covers("x", &credentials, now, Duration::from_secs(150)).is_ok());
    }

    #[tokio::test]
    async fn mode_none_builds_and_calls_nothing() {
        let broker = CredentialBroker::new(&AwsConfig::default(), "us-east-1").await;
        let request = CredentialRequest {
            role_arn: Some(OK_ARN),
            session_name: "scriptbox-x",
            lifetime: Duration::from_secs(60),
        };
        let Ok(broker) = broker else {
            panic!("mode none must build: {broker:?}");
        };
        assert!(matches!(broker.for_step(request).await, Ok(None)));
    }

    #[tokio::test]
    async fn aws_mode_builds_without_calling_anything() {
        // Building only assembles the SDK configuration: no chain is asked, no STS call made
        // (the default chain is lazy), so this sends nothing anywhere.
        let config = AwsConfig {
            mode: AwsMode::Aws,
            ..AwsConfig::default()
        };
        let broker = CredentialBroker::new(&config, "eu-west-1").await;
        assert!(broker.is_ok(), "{broker:?}");
        let bad = AwsConfig {
            endpoint: Some("http://127.0.0.1:1/x".to_owned()),
            ..config
        };
        let got = CredentialBroker::new(&bad, "eu-west-1").await;
        assert!(matches!(got, Err(CredentialError::Endpoint { .. })));
    }

    #[tokio::test]
    async fn emulator_mode_needs_a_valid_endpoint() {
        let mut config = AwsConfig {
            mode: AwsMode::Emulator,
            ..AwsConfig::default()
        };
        let got = CredentialBroker::new(&config, "us-east-1").await;
        assert!(matches!(got, Err(CredentialError::Endpoint { .. })));
        config.endpoint = Some("http://127.0.0.1".to_owned());
        let got = CredentialBroker::new(&config, "us-east-1").await;
        assert!(
            matches!(got, Err(CredentialError::Endpoint { rule, .. }) if rule.contains("port"))
        );
    }
}
