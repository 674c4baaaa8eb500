//! The SSM API (`scriptbox serve --ssm-api`) driven by the real AWS clients, installed from PyPI
//! into `target/ssm-venv` on first use: boto3 (`tests/ssm/boto3_flow.py`) and the AWS CLI.
//! Skips (with the reason) without an engine, image or PyPI; fails instead under
//! `SCRIPTBOX_REQUIRE_ENGINE=1`.

mod common;

use common::daemon::Daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use scriptbox::client::{Client, Endpoint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// A daemon with the SSM API on a loopback TCP port.
fn ssm_daemon(dir: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec!["--listen", "127.0.0.1:0", "--ssm-api"];
    args.extend_from_slice(extra);
    Daemon::start(dir, &args)
}

static VENV: Mutex<()> = Mutex::new(());

fn skip(why: &str) -> Option<PathBuf> {
    if common::required() {
        panic!("SCRIPTBOX_REQUIRE_ENGINE=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// `target/ssm-venv` with boto3 and awscli from PyPI (installed once, then reused).
fn venv() -> Option<PathBuf> {
    let _guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ssm-venv");
    let python = dir.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import boto3, awscli"])
            .output()
            .is_ok_and(|o| o.status.success())
            && dir.join("bin/aws").exists()
    };
    if ready() {
        return Some(dir);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return skip(&format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Err(e) => return skip(&format!("no python3 to make the venv: {e}")),
    }
    let pip = Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "boto3",
            "awscli",
        ])
        .output();
    match pip {
        Ok(o) if o.status.success() && ready() => Some(dir),
        Ok(o) => skip(&format!(
            "pip could not install boto3 and awscli from PyPI: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => skip(&format!("pip did not run: {e}")),
    }
}

/// Engine, image and clients, or skip.
async fn ready() -> Option<PathBuf> {
    let engine = common::engine().await?;
    if !common::require_image(&engine, "python3.11").await {
        return None;
    }
    tokio::task::spawn_blocking(venv).await.unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn aws_env(cmd: &mut Command, key: &str, secret: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
}

/// Runs python code (or a file) in the venv with these credentials.
fn python(venv: &Path, args: &[&str], key: &str, secret: &str) -> Output {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(args);
    aws_env(&mut cmd, key, secret);
    cmd.output().expect("run python")
}

fn aws(venv: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv.join("bin/aws"));
    cmd.arg("ssm").args(args).args([
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
        "--output",
        "json",
    ]);
    aws_env(&mut cmd, "test", "test");
    cmd.output().expect("run aws")
}

fn aws_json(venv: &Path, endpoint: &str, args: &[&str]) -> Value {
    let o = aws(venv, endpoint, args);
    assert!(o.status.success(), "aws ssm {args:?}: {}", show(&o));
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)))
}

#[tokio::test]
async fn boto3_documents_executions_and_errors() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "n4tive-token\n").unwrap();
    // With a token file the native API shares the TCP listener (behind the token); SSM requests
    // need no token.
    let d = ssm_daemon(dir.path(), &["--token-file", token.to_str().unwrap()]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(
        files.join("helper.py"),
        "def run(events, context):\n    return {'doubled': int(events['n']) * 2}\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssm/boto3_flow.py");
    let (endpoint, folder) = (d.endpoint().clone(), files.to_str().unwrap().to_string());
    let o = tokio::task::spawn_blocking(move || {
        python(
            &venv,
            &[script.to_str().unwrap(), &endpoint, &folder],
            "test",
            "test",
        )
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("OK"), "{}", show(&o));
    let ids: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("IDS "))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();

    // The same executions as the native API's.
    let native = Client::new(Endpoint::Unix(d.socket.clone()));
    let a = native.get("/v1/executions?MaxResults=100").await.unwrap();
    assert_eq!(a.status, 200);
    let listed: Vec<Value> = a.json()["Executions"].as_array().unwrap().clone();
    for id in &ids {
        let row = listed
            .iter()
            .find(|e| e["Id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in GET /v1/executions: {listed:?}"));
        assert_eq!(row["Kind"], "Runbook");
    }
    let one = native
        .get(&format!("/v1/executions/{}", ids[0]))
        .await
        .unwrap()
        .json();
    assert_eq!(one["Status"], "Success", "{one}");
    assert_eq!(one["DocumentName"], "Greeter");
    // Over TCP too, with the bearer token.
    let tcp = Client::new(Endpoint::Tcp {
        addr: d.endpoint().trim_start_matches("http://").to_string(),
        token: Some("n4tive-token".into()),
    });
    let a = tcp
        .get(&format!("/v1/executions/{}", ids[2]))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["Status"], "Failed");
    let anon = Client::new(Endpoint::Tcp {
        addr: d.endpoint().trim_start_matches("http://").to_string(),
        token: None,
    });
    assert_eq!(anon.get("/v1/executions").await.unwrap().status, 401);
    // Its log is the daemon's log.
    let log = native
        .get(&format!("/v1/executions/{}/log", ids[0]))
        .await
        .unwrap()
        .json();
    let text = log["Lines"].to_string();
    assert!(text.contains("greeting bob"), "{log}");
}

#[tokio::test]
async fn aws_cli_creates_starts_and_reads_outputs() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = ssm_daemon(dir.path(), &[]);
    let doc = dir.path().join("Echo.yaml");
    std::fs::write(
        &doc,
        "schemaVersion: '0.3'\nparameters:\n  Names:\n    type: StringList\n  Greeting:\n    type: String\n    default: hi\noutputs: [Join.Text]\nmainSteps:\n  - name: Join\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: |\n        def h(e, c):\n            return {'text': e['g'] + ' ' + ','.join(e['names'])}\n      InputPayload:\n        names: '{{ Names }}'\n        g: '{{ Greeting }}'\n    outputs:\n      - {Name: Text, Selector: $.Payload.text, Type: String}\n",
    )
    .unwrap();
    let ep = d.endpoint().clone();
    let venv2 = venv.clone();
    let doc_arg = format!("file://{}", doc.display());
    let result = tokio::task::spawn_blocking(move || {
        let created = aws_json(
            &venv,
            &ep,
            &[
                "create-document",
                "--name",
                "Echo",
                "--content",
                &doc_arg,
                "--document-type",
                "Automation",
                "--document-format",
                "YAML",
            ],
        );
        assert_eq!(created["DocumentDescription"]["Status"], "Active");
        // Timestamps travel as epoch seconds (AWS CLI v1 prints the wire value).
        let when = &created["DocumentDescription"]["CreatedDate"];
        assert!(when.as_f64().is_some_and(|t| t > 1.7e9), "{when}");
        let listed = aws_json(&venv, &ep, &["list-documents"]);
        assert_eq!(listed["DocumentIdentifiers"][0]["Name"], "Echo");
        let described = aws_json(&venv, &ep, &["describe-document", "--name", "Echo"]);
        assert_eq!(described["Document"]["DocumentVersion"], "1");
        let started = aws_json(
            &venv,
            &ep,
            &[
                "start-automation-execution",
                "--document-name",
                "Echo",
                "--parameters",
                "Names=ann,bo,Greeting=hey",
            ],
        );
        let id = started["AutomationExecutionId"]
            .as_str()
            .unwrap()
            .to_string();
        let began = Instant::now();
        loop {
            let got = aws_json(
                &venv,
                &ep,
                &["get-automation-execution", "--automation-execution-id", &id],
            );
            let e = &got["AutomationExecution"];
            let status = e["AutomationExecutionStatus"].as_str().unwrap();
            if !["Pending", "InProgress"].contains(&status) {
                break got;
            }
            assert!(began.elapsed() < Duration::from_secs(90), "{got}");
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .unwrap();
    let e = &result["AutomationExecution"];
    assert_eq!(e["AutomationExecutionStatus"], "Success", "{result}");
    assert_eq!(e["Parameters"]["Names"], serde_json::json!(["ann", "bo"]));
    assert_eq!(e["Outputs"]["Join.Text"], serde_json::json!(["hey ann,bo"]));
    assert_eq!(
        e["StepExecutions"][0]["Outputs"]["Text"],
        serde_json::json!(["hey ann,bo"])
    );

    // An error through the CLI: its exit status and the exception name.
    let venv = venv2;
    let ep = d.endpoint().clone();
    let o = tokio::task::spawn_blocking(move || {
        aws(
            &venv,
            &ep,
            &["start-automation-execution", "--document-name", "Nope"],
        )
    })
    .await
    .unwrap();
    // AWS CLI v1 exits 255 on a service error, v2 254.
    assert!(matches!(o.status.code(), Some(254 | 255)), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AutomationDefinitionNotFoundException"),
        "{}",
        show(&o)
    );
}

const SIGNED: &str = r#"
import sys, boto3
from botocore.exceptions import ClientError
ssm = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1")
try:
    print("OK", len(ssm.list_documents()["DocumentIdentifiers"]))
except ClientError as e:
    print("ERR", e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
"#;

#[tokio::test]
async fn access_keys_verify_signatures_and_loopback_rule() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# id secret\nAKIDSCRIPTBOX s3cr3t/Key+1\n").unwrap();
    let d = ssm_daemon(
        dir.path(),
        &["--ssm-access-keys-file", keys.to_str().unwrap()],
    );
    let ep = d.endpoint().clone();
    let outs = tokio::task::spawn_blocking(move || {
        [
            ("AKIDSCRIPTBOX", "s3cr3t/Key+1"),
            ("AKIDSCRIPTBOX", "wrong"),
            ("SOMEONEELSE", "s3cr3t/Key+1"),
        ]
        .map(|(k, s)| {
            let o = python(&venv, &["-c", SIGNED, &ep], k, s);
            String::from_utf8_lossy(&o.stdout).trim().to_string() + &show(&o)
        })
    })
    .await
    .unwrap();
    assert!(outs[0].starts_with("OK 0"), "{}", outs[0]);
    assert!(
        outs[1].starts_with("ERR InvalidSignatureException 400"),
        "{}",
        outs[1]
    );
    assert!(
        outs[2].starts_with("ERR UnrecognizedClientException 400"),
        "{}",
        outs[2]
    );
    // The native API on this listener still needs the bearer token (none is configured here:
    // the listener serves only the SSM API).
    let tcp = d.endpoint().trim_start_matches("http://").to_string();
    let anon = Client::new(Endpoint::Tcp {
        addr: tcp,
        token: None,
    });
    assert_eq!(anon.get("/v1/executions").await.unwrap().status, 401);
    drop(d);

    // Without access keys, a non-loopback listener is refused at start.
    let o = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--ssm-api", "--socket"])
        .arg(dir.path().join("y.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("y"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{}",
        show(&o)
    );
}
