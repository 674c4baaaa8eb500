//! Signals end to end: a real `scriptbox serve` (native API, `scriptbox signal`, `scriptbox get`,
//! and SSM's SendAutomationSignal through boto3), and a real `scriptbox run` listening on its own
//! socket. aws:pause and aws:approve run no container, but the daemon needs the engine: skips
//! (with the reason) without one, and fails instead under `SCRIPTBOX_REQUIRE_ENGINE=1`.

mod common;

use common::daemon::Daemon;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use scriptbox::client::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

const PAUSE: &str = "schemaVersion: '0.3'
mainSteps:
  - name: hold
    action: aws:pause
    inputs: {}
    onCancel: step:cleanup
  - name: after
    action: aws:sleep
    inputs: {Duration: PT0S}
    isEnd: true
  - name: cleanup
    action: aws:sleep
    inputs: {Duration: PT0S}
";

fn approve_doc(approvers: &str, extra: &str) -> String {
    format!(
        "schemaVersion: '0.3'
outputs:
  - gate.ApprovalStatus
mainSteps:
  - name: gate
    action: aws:approve
    inputs:
      Approvers: {approvers}
      Message: Ship it?
      NotificationArn: arn:aws:sns:us-east-1:123456789012:Automation-Approvals
{extra}  - name: after
    action: aws:sleep
    inputs: {{Duration: PT0S}}
"
    )
}

fn me() -> String {
    scriptbox::runbook::signals::local_user()
}

async fn ready() -> bool {
    common::engine().await.is_some()
}

fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SCRIPTBOX_SOCKET", socket)
        .output()
        .expect("run scriptbox")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn submit(c: &Client, doc: &str) -> String {
    let a = c
        .post(
            "/v1/executions",
            &json!({"Runbook": {"Document": doc, "DocumentName": "Signalled"}}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    a.json()["Id"].as_str().unwrap().to_string()
}

async fn get(c: &Client, id: &str) -> Value {
    let a = c.get(&format!("/v1/executions/{id}")).await.unwrap();
    assert_eq!(a.status, 200);
    a.json()
}

/// Polls until `done` holds of the execution object.
async fn until(c: &Client, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let began = Instant::now();
    loop {
        let v = get(c, id).await;
        if done(&v) {
            return v;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{id} never {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn waiting(c: &Client, id: &str) -> Value {
    until(c, id, "Waiting", |v| {
        v["AutomationExecutionStatus"] == "Waiting"
    })
    .await
}

async fn ended(c: &Client, id: &str) -> Value {
    until(c, id, "ended", |v| {
        ["Success", "Failed", "TimedOut", "Cancelled"].contains(&v["Status"].as_str().unwrap_or(""))
    })
    .await
}

fn step_statuses(v: &Value) -> Vec<String> {
    v["StepExecutions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}:{}",
                s["StepName"].as_str().unwrap_or(""),
                s["StepStatus"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test]
async fn pause_and_approve_wait_and_go_on_when_signalled_through_the_daemon() {
    if !ready().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--concurrency", "4"]);
    let c = d.client();
    let s = d.socket.clone();

    // aws:pause: Waiting (execution and step), `scriptbox get` says so, then Resume.
    let id = submit(&c, PAUSE).await;
    let v = waiting(&c, &id).await;
    assert_eq!(v["Status"], "Running", "{v}");
    assert_eq!(step_statuses(&v), ["hold:Waiting"], "{v}");
    let shown = cli(&s, &["get", &id]);
    let shown_text = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown_text.starts_with("Waiting (runbook Signalled"),
        "{}",
        text(&shown)
    );
    assert!(
        shown_text.contains("  Waiting hold (aws:pause)"),
        "{}",
        text(&shown)
    );
    // Not what it waits for: refused (exit 1), and it still waits.
    let wrong = cli(&s, &["signal", &id, "--type", "Approve"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("is waiting for Resume, not Approve"),
        "{}",
        text(&wrong)
    );
    let interactive = cli(
        &s,
        &["signal", &id, "--type", "StartStep", "--step-name", "hold"],
    );
    assert_eq!(interactive.status.code(), Some(1), "{}", text(&interactive));
    assert!(
        text(&interactive).contains("Interactive mode"),
        "{}",
        text(&interactive)
    );
    let ok = cli(&s, &["signal", &id, "--type", "Resume"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains("Resume delivered to step hold"),
        "{}",
        text(&ok)
    );
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(step_statuses(&v), ["hold:Success", "after:Success"], "{v}");
    // Ended: refused, exit 1.
    let late = cli(&s, &["signal", &id, "--type", "Resume"]);
    assert_eq!(late.status.code(), Some(1), "{}", text(&late));
    assert!(
        text(&late).contains("already ended: Success"),
        "{}",
        text(&late)
    );

    // aws:approve by the local user (the daemon's user is the native API's sender).
    let who = format!("['arn:aws:iam::123456789012:user/{}']", me());
    let id = submit(&c, &approve_doc(&who, "")).await;
    waiting(&c, &id).await;
    let ok = cli(
        &s,
        &[
            "signal",
            &id,
            "--type",
            "Approve",
            "--comment",
            "looks good",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "Success", "{v}");
    let gate = &v["StepExecutions"][0];
    assert_eq!(
        gate["Outputs"]["ApprovalStatus"],
        json!(["Approved"]),
        "{v}"
    );
    let decisions = gate["Outputs"]["ApproverDecisions"][0]
        .as_str()
        .unwrap_or("");
    assert!(decisions.contains("looks good"), "{v}");
    assert_eq!(
        v["Outputs"]["gate.ApprovalStatus"],
        json!(["Approved"]),
        "{v}"
    );
    let log = c.get(&format!("/v1/executions/{id}/log")).await.unwrap();
    assert!(
        String::from_utf8_lossy(&log.body)
            .contains("not notified (scriptbox publishes to no SNS topic)"),
        "{}",
        String::from_utf8_lossy(&log.body)
    );

    // Reject: the step and the execution end Failed.
    let id = submit(&c, &approve_doc(&who, "")).await;
    waiting(&c, &id).await;
    let no = cli(
        &s,
        &["signal", &id, "--type", "Reject", "--comment", "not today"],
    );
    assert_eq!(no.status.code(), Some(0), "{}", text(&no));
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "Failed", "{v}");
    assert_eq!(step_statuses(&v), ["gate:Failed"], "{v}");
    assert!(
        v["FailureMessage"]
            .as_str()
            .unwrap_or("")
            .contains("rejected by"),
        "{v}"
    );

    // Someone else's approval step: the local user is no approver.
    let id = submit(
        &c,
        &approve_doc("[somebody-else]", "    timeoutSeconds: 30\n"),
    )
    .await;
    waiting(&c, &id).await;
    let not_me = cli(&s, &["signal", &id, "--type", "Approve"]);
    assert_eq!(not_me.status.code(), Some(1), "{}", text(&not_me));
    assert!(
        text(&not_me).contains("is not one of step \"gate\"'s approvers"),
        "{}",
        text(&not_me)
    );
    let a = c
        .post(&format!("/v1/executions/{id}/cancel"), &json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 202);
    assert_eq!(ended(&c, &id).await["Status"], "Cancelled");

    // An approval timeout: TimedOut, as AWS says; onFailure: Continue goes on, not critical.
    let id = submit(&c, &approve_doc(&who, "    timeoutSeconds: 1\n")).await;
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "TimedOut", "{v}");
    assert_eq!(step_statuses(&v), ["gate:TimedOut"], "{v}");
    let id = submit(
        &c,
        &approve_doc(&who, "    timeoutSeconds: 1\n    onFailure: Continue\n"),
    )
    .await;
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(step_statuses(&v), ["gate:TimedOut", "after:Success"], "{v}");

    // Cancelling a waiting execution: the step is Cancelled, onCancel's step runs.
    let id = submit(&c, PAUSE).await;
    waiting(&c, &id).await;
    let cancel = cli(&s, &["cancel", &id]);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel));
    let v = ended(&c, &id).await;
    assert_eq!(v["Status"], "Cancelled", "{v}");
    assert_eq!(
        step_statuses(&v),
        ["hold:Cancelled", "cleanup:Success"],
        "{v}"
    );

    // An unknown execution: exit 2; a bad body: 400.
    let unknown = cli(&s, &["signal", "no-such-execution", "--type", "Resume"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    let a = c
        .post(
            &format!("/v1/executions/{id}/signal"),
            &json!({"SignalType": "Wave"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(&a.body));
}

fn boto3_python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    for venv in ["moto/venv", "ssm-venv"] {
        let p = target.join(venv).join("bin/python");
        if Command::new(&p)
            .args(["-c", "import boto3"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(p);
        }
    }
    None
}

const BOTO3: &str = r#"
import sys, time
import boto3
from botocore.exceptions import ClientError

def client(key):
    return boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=key + "-secret")

ssm, other = client("alice"), client("eve")
ssm.create_document(Name="Gate", DocumentType="Automation", DocumentFormat="YAML", Content="""
schemaVersion: '0.3'
mainSteps:
  - name: hold
    action: aws:pause
    inputs: {}
  - name: gate
    action: aws:approve
    inputs:
      Approvers: [alice, arn:aws:iam::123456789012:user/bob]
      MinRequiredApprovals: 1
""")

def code(f):
    try:
        f()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]
    return None, None

def wait_status(id, want):
    for _ in range(300):
        x = ssm.get_automation_execution(AutomationExecutionId=id)["AutomationExecution"]
        if x["AutomationExecutionStatus"] == want:
            return x
        time.sleep(0.1)
    raise AssertionError(f"{id} never {want}: {x}")

id = ssm.start_automation_execution(DocumentName="Gate")["AutomationExecutionId"]
x = wait_status(id, "Waiting")
assert x["CurrentStepName"] == "hold" and x["CurrentAction"] == "aws:pause", x
assert x["StepExecutions"][0]["StepStatus"] == "Waiting", x
listed = ssm.describe_automation_executions(
    Filters=[{"Key": "ExecutionStatus", "Values": ["Waiting"]}])["AutomationExecutionMetadataList"]
assert [m["AutomationExecutionId"] for m in listed] == [id], listed

c, m = code(lambda: ssm.send_automation_signal(AutomationExecutionId="00000000-0000-0000-0000-000000000000", SignalType="Resume"))
assert c == "AutomationExecutionNotFoundException", (c, m)
# Another tenant's caller does not see it.
c, m = code(lambda: other.send_automation_signal(AutomationExecutionId=id, SignalType="Resume"))
assert c == "AutomationExecutionNotFoundException", (c, m)
c, m = code(lambda: ssm.send_automation_signal(AutomationExecutionId=id, SignalType="Approve"))
assert c == "InvalidAutomationSignalException" and "waiting for Resume" in m, (c, m)
c, m = code(lambda: ssm.send_automation_signal(AutomationExecutionId=id, SignalType="Resume",
                                               Payload={"StepName": ["gate"]}))
assert c == "InvalidAutomationSignalException", (c, m)
ssm.send_automation_signal(AutomationExecutionId=id, SignalType="Resume", Payload={"StepName": ["hold"]})

for _ in range(300):
    x = ssm.get_automation_execution(AutomationExecutionId=id)["AutomationExecution"]
    if x.get("CurrentStepName") == "gate" and x["AutomationExecutionStatus"] == "Waiting":
        break
    time.sleep(0.1)
assert x["CurrentAction"] == "aws:approve" and x["AutomationExecutionStatus"] == "Waiting", x
ssm.send_automation_signal(AutomationExecutionId=id, SignalType="Approve", Payload={"Comment": ["ok"]})
x = wait_status(id, "Success")
gate = x["StepExecutions"][1]
assert gate["Outputs"]["ApprovalStatus"] == ["Approved"], gate
c, m = code(lambda: ssm.send_automation_signal(AutomationExecutionId=id, SignalType="Resume"))
assert c == "InvalidAutomationSignalException" and "already ended" in m, (c, m)
print("boto3 signals ok")
"#;

#[tokio::test]
async fn send_automation_signal_through_boto3() {
    if !ready().await {
        return;
    }
    let Some(python) = boto3_python() else {
        if common::required() {
            panic!("SCRIPTBOX_REQUIRE_ENGINE=1 but no venv with boto3 (target/moto/venv)");
        }
        eprintln!("SKIPPED: no venv with boto3 (target/moto/venv or target/ssm-venv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "alice alice-secret\neve eve-secret other\n").unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--ssm-api",
            "--ssm-access-keys-file",
            keys.to_str().unwrap(),
        ],
    );
    let out = Command::new(python)
        .arg("-c")
        .arg(BOTO3)
        .arg(d.endpoint())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("boto3 signals ok"), "{}", text(&out));
}

/// `scriptbox run` listens on its own owner-only socket; `scriptbox signal` finds it.
#[tokio::test]
async fn scriptbox_run_is_signalled_on_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    let doc = dir.path().join("pause.yaml");
    std::fs::write(&doc, PAUSE).unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(&doc)
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let id = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no waiting line: {seen:?}"));
        if let Some(rest) = line.split("scriptbox signal ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        seen.push(line);
    };
    // As `config::default_socket` says: `/run/scriptbox` as root, else `$XDG_RUNTIME_DIR`.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let runs = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/run/scriptbox/scriptbox-runs")
    } else {
        runtime.join("scriptbox-runs")
    };
    let socket = runs.join(format!("{id}.sock"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let signal = |t: &str| {
        Command::new(BIN)
            .args(["signal", &id, "--type", t])
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("SCRIPTBOX_SOCKET", dir.path().join("no-daemon.sock"))
            .output()
            .unwrap()
    };
    let wrong = signal("Reject");
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    let ok = signal("Resume");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Success (2 steps run"),
        "{}",
        text(&out)
    );
    assert!(!socket.exists(), "the run's socket is removed when it ends");
    // No run of that id any more, and no daemon: exit 3.
    let gone = signal("Resume");
    assert_eq!(gone.status.code(), Some(3), "{}", text(&gone));
}
