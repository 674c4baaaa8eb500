//! AWS in the loop (issue 13), hermetically: steps that call AWS through scriptbox's egress,
//! against a real moto server on 127.0.0.1, on the real engine with the real runtime images.
//! Every verdict comes from moto's own state or the record, not from what the script says it did.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::moto::Moto;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");
const ROLE: &str = "arn:aws:iam::123456789012:role/scriptbox-tagger";

/// The operator's own (long-term) key in these tests: it must never reach a container.
fn operator_canary() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    (format!("AKIA{}", &id[..16]), format!("canary-secret-{id}"))
}

/// `scriptbox ARGS` with the operator's credentials in its environment and the test's runtime.
fn scriptbox(args: &[&str], operator: &(String, String)) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", &operator.0)
        .env("AWS_SECRET_ACCESS_KEY", &operator.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    if let Ok(rt) = std::env::var("SCRIPTBOX_TEST_RUNTIME") {
        cmd.env("SCRIPTBOX_SANDBOX_CONTAINER_RUNTIME", rt);
    }
    cmd.output().expect("scriptbox runs")
}

/// An instance created in moto beforehand; its id.
fn moto_instance(moto: &Moto) -> String {
    moto.python(
        "import boto3\n\
         ec2 = boto3.client('ec2')\n\
         image = ec2.describe_images()['Images'][0]['ImageId']\n\
         r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t2.micro')\n\
         print(r['Instances'][0]['InstanceId'])\n",
    )
    .trim()
    .to_string()
}

/// The tags moto holds for `instance`, as `{Key: Value}`.
fn moto_tags(moto: &Moto, instance: &str) -> Value {
    let out = moto.python(&format!(
        "import boto3, json\n\
         ec2 = boto3.client('ec2')\n\
         tags = ec2.describe_tags(Filters=[{{'Name': 'resource-id', 'Values': ['{instance}']}}])['Tags']\n\
         print(json.dumps({{t['Key']: t['Value'] for t in tags}}))\n"
    ));
    serde_json::from_str(out.trim()).expect("moto's tags as JSON")
}

/// The project's "Tag an instance" runbook with `runtime` in place of python3.8.
fn tag_runbook(dir: &Path, runtime: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tag-an-instance.yaml"),
    )
    .expect("examples/tag-an-instance.yaml");
    let path = dir.join(format!("tag-{runtime}.yaml"));
    std::fs::write(
        &path,
        text.replace("Runtime: python3.8", &format!("Runtime: {runtime}")),
    )
    .expect("write the runbook");
    path
}

/// The AWS page's "Tag an instance" runbook tags an instance created in moto, on python3.6
/// (boto3 1.23, which predates AWS_ENDPOINT_URL), python3.8 and python3.11; moto's describe_tags
/// then shows the tag. The execution's record counts its egress.
#[tokio::test]
async fn tag_an_instance_runbook_tags_a_moto_instance() {
    let Some(engine) = engine().await else { return };
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_canary();
    for runtime in ["python3.6", "python3.8", "python3.11"] {
        if !require_image(&engine, runtime).await {
            continue;
        }
        let instance = moto_instance(&moto);
        assert_eq!(moto_tags(&moto, &instance), json!({}));
        let doc = tag_runbook(dir.path(), runtime);
        let out = scriptbox(
            &[
                "run",
                doc.to_str().unwrap(),
                "--aws-endpoint",
                &moto.url(),
                "-p",
                &format!("InstanceId={instance}"),
                "-p",
                &format!("AutomationAssumeRole={ROLE}"),
                "--output",
                "json",
            ],
            &operator,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        assert_eq!(
            moto_tags(&moto, &instance),
            json!({"Env": "Example"}),
            "{runtime}: moto does not show the tag; the run: {stdout}"
        );
        let v: Value = serde_json::from_str(&stdout).expect("run's JSON");
        assert_eq!(v["AutomationExecutionStatus"], "Success", "{v}");
        let egress = &v["ScriptboxEgress"];
        assert!(
            egress["Connections"].as_u64().unwrap_or(0) >= 1,
            "{runtime}: {v}"
        );
        assert_eq!(egress["Refused"], 0, "{runtime}: {v}");
        assert!(!stdout.contains(&operator.1) && !stderr.contains(&operator.1));
    }
}

/// The step's view of AWS, as JSON: its credential variables (shape only), the region, and
/// who STS says it is.
const WHO_AM_I: &str = r#"
import os, json

def h(e, c):
    import boto3
    out = {
        'key_prefix': os.environ.get('AWS_ACCESS_KEY_ID', '')[:4],
        'key': os.environ.get('AWS_ACCESS_KEY_ID'),
        'has_secret': bool(os.environ.get('AWS_SECRET_ACCESS_KEY')),
        'has_token': bool(os.environ.get('AWS_SESSION_TOKEN')),
        'region': os.environ.get('AWS_REGION'),
        'default_region': os.environ.get('AWS_DEFAULT_REGION'),
        'egress_dir': sorted(os.listdir('/run')) if os.path.isdir('/run') else [],
        'proxy': os.environ.get('HTTPS_PROXY'),
        'endpoint': os.environ.get('AWS_ENDPOINT_URL'),
    }
    try:
        out['arn'] = boto3.client('sts').get_caller_identity()['Arn']
    except Exception as exc:
        out['error'] = type(exc).__name__
    return out
"#;

fn invoke_who_am_i(dir: &Path, extra: &[&str], operator: &(String, String)) -> (Value, String) {
    let script = dir.join("who.py");
    std::fs::write(&script, WHO_AM_I).unwrap();
    let mut args = vec![
        "invoke",
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--timeout",
        "120",
        "--output",
        "json",
        "--script",
        script.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = scriptbox(&args, operator);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stdout.contains(&operator.1) && !stderr.contains(&operator.1),
        "the operator's secret leaked"
    );
    assert!(
        !stdout.contains(&operator.0) && !stderr.contains(&operator.0),
        "the operator's key id leaked"
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("invoke's JSON ({e}): {stdout}\n{stderr}"));
    (v, stderr)
}

/// A step with a role gets the role's session credentials (an ASIA key and a session token,
/// from moto's STS) and the region, never the operator's key; STS says it is the assumed role.
#[tokio::test]
async fn a_step_with_a_role_sees_session_credentials_only() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_canary();
    let url = moto.url();
    let (v, stderr) = invoke_who_am_i(
        dir.path(),
        &[
            "--aws-endpoint",
            &url,
            "--assume-role",
            ROLE,
            "--region",
            "eu-west-1",
        ],
        &operator,
    );
    assert_eq!(v["Status"], "Success", "{v}\n{stderr}");
    let p = &v["Payload"];
    assert_eq!(p["key_prefix"], "ASIA", "{p}");
    assert_ne!(p["key"], json!(operator.0));
    assert_eq!(p["has_secret"], true);
    assert_eq!(p["has_token"], true);
    assert_eq!(p["region"], "eu-west-1");
    assert_eq!(p["default_region"], "eu-west-1");
    let arn = p["arn"].as_str().unwrap_or_default();
    assert!(
        arn.contains(":assumed-role/scriptbox-tagger/scriptbox-"),
        "STS says the step is {arn:?}: {p}"
    );
}

/// Without a role the step runs "without any permissions", as AWS says: no credentials at
/// all, so its AWS calls fail for lack of them; the operator's never stand in.
#[tokio::test]
async fn a_step_without_a_role_has_no_credentials() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_canary();
    let (v, stderr) = invoke_who_am_i(dir.path(), &["--aws-endpoint", &moto.url()], &operator);
    assert_eq!(v["Status"], "Success", "{v}\n{stderr}");
    let p = &v["Payload"];
    assert_eq!(p["key"], Value::Null, "{p}");
    assert_eq!(p["has_token"], false);
    assert_eq!(p["error"], "NoCredentialsError", "{p}");
    assert!(
        p["endpoint"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://127.0.0.1:")
    );
}

/// Mode `none` (the default) is exactly the sandbox without AWS: no socket, no mount, no proxy,
/// no endpoint, no credentials.
#[tokio::test]
async fn mode_none_gives_no_egress_and_no_credentials() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_canary();
    let (v, stderr) = invoke_who_am_i(dir.path(), &[], &operator);
    assert_eq!(v["Status"], "Success", "{v}\n{stderr}");
    let p = &v["Payload"];
    assert_eq!(p["key"], Value::Null, "{p}");
    assert_eq!(p["proxy"], Value::Null, "{p}");
    assert_eq!(p["endpoint"], Value::Null, "{p}");
    assert!(
        !p["egress_dir"]
            .as_array()
            .unwrap()
            .contains(&json!("scriptbox-egress")),
        "{p}"
    );
    assert!(v.get("Egress").is_none(), "{v}");
}

/// A role that cannot be assumed, or an unusable setting, is a clear error naming it; nothing
/// runs.
#[tokio::test]
async fn bad_aws_settings_are_refused_with_the_rule() {
    let operator = operator_canary();
    for (args, needle) in [
        (
            vec!["--aws-endpoint", "https://127.0.0.1:1"],
            "aws.endpoint",
        ),
        (
            vec![
                "--aws-endpoint",
                "http://127.0.0.1:5000",
                "--assume-role",
                "not-an-arn",
            ],
            "--assume-role",
        ),
        (vec!["--assume-role", ROLE], "--assume-role"),
        (vec!["--aws-profile", "p"], "--aws-profile"),
    ] {
        let mut all = vec![
            "invoke",
            "--runtime",
            "python3.11",
            "--handler",
            "h",
            "--script",
            "/dev/null",
        ];
        all.extend(args.iter().copied());
        let out = scriptbox(&all, &operator);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The daemon runs its executions in the mode of its configuration: a runbook submitted to a
/// `scriptbox serve` with `[aws] mode = "emulator"` tags a moto instance, and its record
/// carries the egress counts.
#[tokio::test]
async fn the_daemon_runs_in_the_mode_of_its_configuration() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("aws.endpoint={}", moto.url());
    let daemon = common::daemon::Daemon::start(
        dir.path(),
        &["--set", "aws.mode=emulator", "--set", &endpoint],
    );
    let instance = moto_instance(&moto);
    let doc = tag_runbook(dir.path(), "python3.11");
    let operator = operator_canary();
    let out = scriptbox(
        &[
            "submit",
            "--socket",
            daemon.socket.to_str().unwrap(),
            doc.to_str().unwrap(),
            "-p",
            &format!("InstanceId={instance}"),
            "-p",
            &format!("AutomationAssumeRole={ROLE}"),
            "--wait",
            "--output",
            "json",
        ],
        &operator,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        moto_tags(&moto, &instance),
        json!({"Env": "Example"}),
        "{stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).expect("submit's JSON");
    assert!(
        v["ScriptboxEgress"]["Connections"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    // Nothing of the step's credentials is kept in the store.
    for entry in std::fs::read_dir(&daemon.data_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("scriptbox.db") {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("AWS_SESSION_TOKEN") && !text.contains("ASIA"),
                "credentials in {name}"
            );
        }
    }
}

/// The SSM API runs its automations in the daemon's mode too: boto3's
/// `start_automation_execution` of the "Tag an instance" runbook on a daemon in emulator mode
/// tags the moto instance.
#[tokio::test]
async fn the_ssm_api_runs_automations_in_the_daemons_mode() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("aws.endpoint={}", moto.url());
    let daemon = common::daemon::Daemon::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--ssm-api",
            "--ssm-anonymous",
            "--set",
            "aws.mode=emulator",
            "--set",
            &endpoint,
        ],
    );
    let ssm = format!(
        "http://{}",
        daemon.tcp.clone().expect("the daemon's TCP address")
    );
    let instance = moto_instance(&moto);
    let doc = tag_runbook(dir.path(), "python3.11");
    let status = moto.python(&format!(
        "import boto3, time\n\
         ssm = boto3.client('ssm', endpoint_url='{ssm}')\n\
         ssm.create_document(Content=open('{doc}').read(), Name='TagAnInstance', DocumentType='Automation', DocumentFormat='YAML')\n\
         eid = ssm.start_automation_execution(DocumentName='TagAnInstance', Parameters={{'InstanceId': ['{instance}'], 'AutomationAssumeRole': ['{ROLE}']}})['AutomationExecutionId']\n\
         for _ in range(200):\n\
         \x20   e = ssm.get_automation_execution(AutomationExecutionId=eid)['AutomationExecution']\n\
         \x20   if e['AutomationExecutionStatus'] not in ('Pending', 'InProgress', 'Waiting'):\n\
         \x20       break\n\
         \x20   time.sleep(0.25)\n\
         print(e['AutomationExecutionStatus'], e.get('FailureMessage', ''))\n",
        doc = doc.display()
    ));
    assert!(status.starts_with("Success"), "{status}");
    assert_eq!(moto_tags(&moto, &instance), json!({"Env": "Example"}));
}

/// `[aws] allowed_roles` bounds the roles a request may name: another role fails the step with
/// `CredentialsError` before any STS call or container.
#[tokio::test]
async fn a_role_outside_allowed_roles_is_refused() {
    let Some(engine) = engine().await else { return };
    if !require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_canary();
    let url = moto.url();
    let (v, stderr) = invoke_who_am_i(
        dir.path(),
        &[
            "--set",
            "aws.allowed_roles=arn:aws:iam::123456789012:role/other-*",
            "--aws-endpoint",
            &url,
            "--assume-role",
            ROLE,
        ],
        &operator,
    );
    assert_eq!(v["Status"], "Failed", "{v}\n{stderr}");
    assert_eq!(v["Error"]["ErrorType"], "CredentialsError", "{v}");
    assert!(
        v["FailureMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("aws.allowed_roles"),
        "{v}"
    );
    assert!(v.get("ContainerId").is_none(), "a container ran: {v}");
    assert!(!moto.log().contains("POST / HTTP"), "STS was called");
}
