//! The credentials a step gets, against a real moto server on 127.0.0.1 (`make moto`), judged
//! from the outside: what moto says of the returned keys (GetCallerIdentity with them), and what
//! a loopback listener saw. Every broker is built in emulator mode with the operator's
//! environment given explicitly (never the process's), `AWS_EC2_METADATA_DISABLED=true` in it,
//! and emulator mode's chain never asks instance metadata: no traffic leaves loopback.

mod common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant, SystemTime};

use common::moto::Moto;
use scriptbox::aws::credentials::{
    CredentialBroker, CredentialError, CredentialRequest, OperatorEnvironment, StepCredentials,
    session_name,
};
use scriptbox::aws::{AwsConfig, AwsMode};

/// The operator's long-term key: it must never reach a step.
const CANARY_KEY: &str = "AKIAOPERATORCANARY01";
const CANARY_SECRET: &str = "operator-canary-secret-never-in-a-step";
const LIFETIME: Duration = Duration::from_secs(1800);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn emulator(endpoint: &str, pass_operator_credentials: bool, timeout: u64) -> AwsConfig {
    AwsConfig {
        mode: AwsMode::Emulator,
        endpoint: Some(endpoint.to_owned()),
        pass_operator_credentials,
        credential_timeout_seconds: timeout,
        ..AwsConfig::default()
    }
}

/// The operator's environment: the canary key (or none), metadata disabled, no profile files
/// of this machine (HOME points nowhere).
fn operator_env(with_key: bool) -> OperatorEnvironment {
    let mut vars = HashMap::from([
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("HOME".to_owned(), "/nonexistent".to_owned()),
    ]);
    if with_key {
        vars.insert("AWS_ACCESS_KEY_ID".to_owned(), CANARY_KEY.to_owned());
        vars.insert("AWS_SECRET_ACCESS_KEY".to_owned(), CANARY_SECRET.to_owned());
    }
    OperatorEnvironment::Given(vars)
}

fn broker(config: &AwsConfig, env: OperatorEnvironment) -> CredentialBroker {
    runtime()
        .block_on(CredentialBroker::with_environment(config, "us-east-1", env))
        .expect("broker")
}

fn for_step(
    broker: &CredentialBroker,
    role: Option<&str>,
    lifetime: Duration,
) -> Result<Option<StepCredentials>, CredentialError> {
    let name = session_name("exec-0001");
    runtime().block_on(broker.for_step(CredentialRequest {
        role_arn: role,
        session_name: &name,
        lifetime,
    }))
}

/// Creates a role in moto and returns its ARN.
fn create_role(moto: &Moto, name: &str) -> String {
    let code = format!(
        r#"
import boto3, json
iam = boto3.client("iam")
trust = {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow",
  "Principal": {{"AWS": "*"}}, "Action": "sts:AssumeRole"}}]}}
print(iam.create_role(RoleName="{name}", AssumeRolePolicyDocument=json.dumps(trust),
  MaxSessionDuration=43200)["Role"]["Arn"])
"#
    );
    moto.python(&code).trim().to_owned()
}

/// GetCallerIdentity with these credentials, as moto sees them: the caller's ARN.
fn caller_arn(moto: &Moto, credentials: &StepCredentials) -> String {
    let token = credentials.session_token.as_deref().unwrap_or("");
    let code = format!(
        r#"
import boto3
sts = boto3.client("sts", aws_access_key_id={key:?}, aws_secret_access_key={secret:?},
  aws_session_token={token:?} or None)
print(sts.get_caller_identity()["Arn"])
"#,
        key = credentials.access_key_id,
        secret = credentials.secret_access_key,
    );
    moto.python(&code).trim().to_owned()
}

fn assert_session_credentials(credentials: &StepCredentials, lifetime: Duration) {
    assert_ne!(credentials.access_key_id, CANARY_KEY);
    assert_ne!(credentials.secret_access_key, CANARY_SECRET);
    assert!(
        credentials
            .session_token
            .as_deref()
            .is_some_and(|t| !t.is_empty()),
        "no session token: {credentials:?}"
    );
    let expiration = credentials.expiration.expect("an expiration");
    assert!(
        expiration >= SystemTime::now() + lifetime,
        "expires too soon: {credentials:?}"
    );
    let env = credentials.env();
    assert!(
        env.iter()
            .all(|(_, v)| v != CANARY_SECRET && v != CANARY_KEY)
    );
}

#[test]
fn a_role_gives_the_step_its_temporary_credentials() {
    let Some(moto) = Moto::start() else { return };
    let role = create_role(&moto, "automation-role");
    let broker = broker(&emulator(&moto.url(), false, 20), operator_env(true));
    let credentials = for_step(&broker, Some(&role), LIFETIME)
        .expect("AssumeRole")
        .expect("credentials");
    assert!(
        credentials.access_key_id.starts_with("ASIA"),
        "{credentials:?}"
    );
    assert_session_credentials(&credentials, LIFETIME);
    // Moto, asked with the returned keys, says who they are: the role's session.
    let arn = caller_arn(&moto, &credentials);
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/automation-role/scriptbox-exec-0001"
    );
}

#[test]
fn without_a_role_the_step_gets_nothing() {
    let Some(moto) = Moto::start() else { return };
    let broker = broker(&emulator(&moto.url(), false, 20), operator_env(true));
    assert!(matches!(for_step(&broker, None, LIFETIME), Ok(None)));
}

#[test]
fn passed_operator_keys_become_session_credentials() {
    let Some(moto) = Moto::start() else { return };
    let broker = broker(&emulator(&moto.url(), true, 20), operator_env(true));
    let credentials = for_step(&broker, None, LIFETIME)
        .expect("GetSessionToken")
        .expect("credentials");
    assert_session_credentials(&credentials, LIFETIME);
    eprintln!("{credentials:?}");
    // The GetSessionToken call reached moto (its request log).
    let log = moto.log();
    assert!(log.contains("POST / HTTP"), "moto saw no STS call:\n{log}");
}

#[test]
fn passed_operator_session_credentials_go_as_they_are() {
    let Some(moto) = Moto::start() else { return };
    let mut env = HashMap::from([
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("HOME".to_owned(), "/nonexistent".to_owned()),
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            "ASIAOPERATORSESSION1".to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "session-secret".to_owned(),
        ),
    ]);
    env.insert("AWS_SESSION_TOKEN".to_owned(), "operator-token".to_owned());
    let broker = broker(
        &emulator(&moto.url(), true, 20),
        OperatorEnvironment::Given(env),
    );
    let credentials = for_step(&broker, None, LIFETIME)
        .expect("operator session")
        .expect("credentials");
    assert_eq!(credentials.access_key_id, "ASIAOPERATORSESSION1");
    assert_eq!(credentials.session_token.as_deref(), Some("operator-token"));
    assert!(!moto.log().contains("POST / HTTP"), "an STS call was made");
}

#[test]
fn the_operator_profile_is_read_from_the_given_environment() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[ops]\naws_access_key_id = ASIAPROFILEKEY000001\naws_secret_access_key = s\n\
         aws_session_token = profile-token\n",
    )
    .expect("write credentials file");
    let env = HashMap::from([
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("HOME".to_owned(), "/nonexistent".to_owned()),
        ("AWS_PROFILE".to_owned(), "ops".to_owned()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            file.display().to_string(),
        ),
    ]);
    let broker = broker(
        &emulator(&moto.url(), true, 20),
        OperatorEnvironment::Given(env),
    );
    let credentials = for_step(&broker, None, LIFETIME)
        .expect("profile credentials")
        .expect("credentials");
    assert_eq!(credentials.access_key_id, "ASIAPROFILEKEY000001");
}

#[test]
fn without_operator_keys_the_emulator_gets_the_static_test_key() {
    let Some(moto) = Moto::start() else { return };
    let role = create_role(&moto, "fallback-role");
    let broker = broker(&emulator(&moto.url(), false, 20), operator_env(false));
    let credentials = for_step(&broker, Some(&role), LIFETIME)
        .expect("AssumeRole")
        .expect("credentials");
    assert!(credentials.access_key_id.starts_with("ASIA"));
    // Without any operator key the call was still made (signed with the static "test" key).
    let log = moto.log();
    assert!(log.contains("POST / HTTP"), "{log}");
}

/// A loopback listener standing in for the endpoint; says whether anything connected.
struct Witness(TcpListener);

impl Witness {
    fn new() -> Witness {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        Witness(listener)
    }
    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.0.local_addr().expect("addr").port()
        )
    }
    fn saw_a_connection(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn a_lifetime_over_twelve_hours_is_refused_before_any_call() {
    let witness = Witness::new();
    let role = "arn:aws:iam::123456789012:role/automation";
    for pass in [false, true] {
        let broker = broker(&emulator(&witness.url(), pass, 5), operator_env(true));
        let got = for_step(
            &broker,
            if pass { None } else { Some(role) },
            Duration::from_secs(12 * 3600),
        );
        assert!(
            matches!(got, Err(CredentialError::ExpiresTooSoon { .. })),
            "{got:?}"
        );
    }
    assert!(!witness.saw_a_connection(), "a call was made");
}

#[test]
fn a_bad_role_arn_is_refused_naming_the_rule() {
    let witness = Witness::new();
    let broker = broker(&emulator(&witness.url(), false, 5), operator_env(true));
    let got = for_step(&broker, Some("arn:aws:iam::1234:role/x"), LIFETIME);
    match got {
        Err(e @ CredentialError::RoleArn { .. }) => {
            assert!(e.to_string().contains("12 digits"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!witness.saw_a_connection(), "a call was made");
}

#[test]
fn an_unreachable_endpoint_fails_within_the_deadline() {
    let closed = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = emulator(&format!("http://127.0.0.1:{closed}"), true, 3);
    let broker = broker(&config, operator_env(true));
    let started = Instant::now();
    let got = for_step(&broker, Some("arn:aws:iam::123456789012:role/x"), LIFETIME);
    let elapsed = started.elapsed();
    eprintln!("after {elapsed:?}: {got:?}");
    assert!(
        matches!(
            got,
            Err(CredentialError::AssumeRole { .. } | CredentialError::Deadline { .. })
        ),
        "{got:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn an_endpoint_that_never_answers_hits_the_deadline() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let broker = broker(&emulator(&url, true, 2), operator_env(true));
    let started = Instant::now();
    let got = for_step(&broker, None, LIFETIME);
    let elapsed = started.elapsed();
    eprintln!("after {elapsed:?}: {got:?}");
    assert!(
        matches!(got, Err(CredentialError::Deadline { .. })),
        "{got:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    drop(silent);
}
