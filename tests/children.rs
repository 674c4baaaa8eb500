//! Child runbooks (`aws:executeAutomation`) with `scriptbox run --documents DIR`, against the
//! real Docker engine and runtime images: outputs that flow back, a failing child and the
//! parent's onFailure, a missing document, the depth limit, and the real malekmaciej runbooks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn run(doc: &Path, documents: &Path, extra: &[&str]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .arg("run")
        .arg(doc)
        .arg("--documents")
        .arg(documents)
        .args(["--output", "json"])
        .args(extra)
        .output()
        .expect("run scriptbox");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn folder(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scriptbox-children-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

fn step<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["StepExecutions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["StepName"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {json:#}"))
}

const CHILD: &str = r#"schemaVersion: '0.3'
parameters:
  Who: {type: String}
  Times: {type: Integer, default: 1}
mainSteps:
  - name: greet
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      InputPayload: {who: '{{ Who }}', times: '{{ Times }}'}
      Script: |-
        def h(e, c):
            return {"greeting": "hello " + e["who"], "n": e["times"] * 2}
    outputs:
      - {Name: Greeting, Selector: $.Payload.greeting, Type: String}
      - {Name: Doubled, Selector: $.Payload.n, Type: Integer}
outputs:
  - greet.Greeting
  - greet.Doubled
"#;

const FAILING: &str = r#"schemaVersion: '0.3'
mainSteps:
  - name: boom
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |-
        def h(e, c):
            raise ValueError("the child broke")
"#;

const PARENT: &str = r#"schemaVersion: '0.3'
mainSteps:
  - name: Child
    action: aws:executeAutomation
    inputs:
      DocumentName: child
      RuntimeParameters:
        Who: world
        Times: '21'
  - name: Use
    action: aws:branch
    inputs:
      Choices:
        - NextStep: Bad
          Variable: '{{ Child.Status }}'
          StringEquals: Failed
      Default: Broken
  - name: Broken
    action: aws:executeAutomation
    onFailure: step:Recover
    inputs:
      DocumentName: failing
  - name: Bad
    action: aws:sleep
    inputs: {Duration: PT0S}
    isEnd: true
  - name: Recover
    action: aws:executeAutomation
    inputs:
      DocumentName: nowhere
outputs:
  - Child.Output
  - Child.ExecutionId
"#;

#[test]
fn a_child_with_outputs_a_failing_child_and_a_missing_document() {
    let dir = folder(&[
        ("child.yaml", CHILD),
        ("failing.yml", FAILING),
        ("parent.yaml", PARENT),
    ]);
    let (out, json) = run(&dir.join("parent.yaml"), &dir, &[]);
    // The last step fails (no such document): the execution ends Failed, exit 1.
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["AutomationExecutionStatus"], "Failed", "{json:#}");

    let child = step(&json, "Child");
    assert_eq!(child["StepStatus"], "Success", "{child:#}");
    assert_eq!(
        child["Outputs"]["Output"],
        serde_json::json!(["hello world", "42"])
    );
    assert_eq!(child["Outputs"]["Status"], serde_json::json!(["Success"]));
    let child_id = child["Outputs"]["ExecutionId"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        json["Outputs"]["Child.ExecutionId"],
        serde_json::json!([child_id])
    );

    // The failing child fails the parent's step; onFailure: step:Recover is honoured.
    let broken = step(&json, "Broken");
    assert_eq!(broken["StepStatus"], "Failed");
    let why = broken["FailureMessage"].as_str().unwrap();
    assert!(
        why.contains("ChildAutomationFailed") && why.contains("the child broke"),
        "{why}"
    );
    assert_eq!(broken["NextStep"], "Recover");
    let missing = step(&json, "Recover");
    let why = missing["FailureMessage"].as_str().unwrap();
    assert!(
        why.contains("Automation document nowhere does not exist"),
        "{why}"
    );

    // Each child is its own execution, linked to its parent.
    let parent_id = json["AutomationExecutionId"].as_str().unwrap();
    let children = json["ScriptboxChildExecutions"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{json:#}");
    assert_eq!(children[0]["AutomationExecutionId"], child_id.as_str());
    assert_eq!(children[0]["DocumentName"], "child");
    assert_eq!(children[0]["AutomationExecutionStatus"], "Success");
    assert_eq!(
        children[0]["Parameters"]["Who"],
        serde_json::json!(["world"])
    );
    assert_eq!(children[1]["AutomationExecutionStatus"], "Failed");
    for c in children {
        assert_eq!(c["ParentAutomationExecutionId"], parent_id);
    }
}

#[test]
fn a_document_that_starts_itself_stops_at_the_depth_limit() {
    let selfish = "schemaVersion: '0.3'
mainSteps:
  - name: again
    action: aws:executeAutomation
    inputs: {DocumentName: selfish}
";
    let dir = folder(&[("selfish.yaml", selfish)]);
    let (out, json) = run(&dir.join("selfish.yaml"), &dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let children = json["ScriptboxChildExecutions"].as_array().unwrap();
    // Five levels below the top; the fifth child's step is refused before a sixth starts.
    assert_eq!(children.len(), 5, "{json:#}");
    let deepest = &children[0];
    let why = deepest["StepExecutions"][0]["FailureMessage"]
        .as_str()
        .unwrap();
    assert!(why.contains("nested deeper than 5 levels"), "{why}");
    assert_eq!(json["AutomationExecutionStatus"], "Failed");
}

#[test]
fn targets_and_rate_control_are_refused_at_load() {
    let doc = "schemaVersion: '0.3'
mainSteps:
  - name: many
    action: aws:executeAutomation
    inputs:
      DocumentName: child
      TargetParameterName: InstanceId
      Targets: [{Key: tag:Env, Values: [prod]}]
      MaxConcurrency: '2'
      Colour: blue
";
    let dir = folder(&[("many.yaml", doc)]);
    let (out, json) = run(&dir.join("many.yaml"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{json:#}");
    let text = json["Problems"].to_string();
    for needle in [
        "TargetParameterName: targets and rate control",
        "Targets: targets and rate control",
        "MaxConcurrency: targets and rate control",
        "unknown input \\\"Colour\\\"",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

/// AWS's published example pair: main runs child-1, passes its outputs to a script, then runs
/// child-2 — which the repository does not publish, so that step fails as a missing document.
#[test]
fn malekmaciej_main_and_child_1() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/runbooks");
    let main = corpus.join("malekmaciej__ssm-automation-outputs__templates-main.yaml");
    let child = corpus.join("malekmaciej__ssm-automation-outputs__templates-child-1.yaml");
    if !main.is_file() || !child.is_file() {
        eprintln!(
            "SKIPPED: the malekmaciej runbooks are not in {}",
            corpus.display()
        );
        return;
    }
    // The documents are read where they are, under the names the main runbook uses.
    let dir = folder(&[]);
    std::os::unix::fs::symlink(&child, dir.join("child-1.yaml")).unwrap();
    let (out, json) = run(&main, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    let child1 = step(&json, "Child1");
    assert_eq!(child1["StepStatus"], "Success", "{json:#}");
    let values = child1["Outputs"]["Output"].as_array().unwrap();
    assert_eq!(values.len(), 2, "{child1:#}");
    let process = step(&json, "ProcessListToJSON");
    assert_eq!(process["StepStatus"], "Success", "{process:#}");
    assert_eq!(process["Outputs"]["CurrentDate"][0], values[0]);
    assert_eq!(process["Outputs"]["RandomString"][0], values[1]);
    let child2 = step(&json, "Child2");
    let why = child2["FailureMessage"].as_str().unwrap();
    assert!(
        why.contains("Automation document child-2 does not exist"),
        "{why}"
    );
}

mod common;

/// The daemon: a child from the SSM documents, started by boto3's StartAutomationExecution of
/// its parent, shown with its ParentAutomationExecutionId by the SSM API and the native API.
#[tokio::test]
async fn daemon_children_come_from_the_ssm_documents() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto/venv/bin/python");
    if !python.is_file() {
        if common::required() {
            panic!("no boto3 at {} (make moto)", python.display());
        }
        eprintln!(
            "SKIPPED: no boto3 at {} (make moto, or copy target/moto)",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = common::daemon::Daemon::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--ssm-api", "--ssm-anonymous"],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/children/daemon_flow.py");
    let endpoint = d.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("OK "))
        .unwrap()
        .split_whitespace()
        .collect();
    let (parent, child) = (ids[0], ids[1]);
    let native = d.client();
    let c = native
        .get(&format!("/v1/executions/{child}"))
        .await
        .unwrap()
        .json();
    assert_eq!(c["ParentAutomationExecutionId"], parent, "{c}");
    assert_eq!(c["Status"], "Success", "{c}");
    let p = native
        .get(&format!("/v1/executions/{parent}"))
        .await
        .unwrap()
        .json();
    assert!(p.get("ParentAutomationExecutionId").is_none(), "{p}");
    // `scriptbox get` shows the parent.
    let got = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(["get", child, "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&got.stdout);
    assert!(
        shown.contains(&format!("child of execution {parent}")),
        "{shown}{}",
        String::from_utf8_lossy(&got.stderr)
    );
}

/// A runbook's own SSM automation calls through aws:executeAwsApi (Start, Get by a wait,
/// Describe), which moto lacks, answered by the daemon itself when the endpoint is an emulator:
/// the started execution is a real one, linked to the runbook that started it.
#[tokio::test]
async fn a_runbooks_own_ssm_automation_calls_are_answered_by_the_daemon() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let Some(moto) = common::moto::Moto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("aws.endpoint={}", moto.url());
    let d = common::daemon::Daemon::start(
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
            "--set",
            "aws.poll_interval_seconds=1",
            "--set",
            "server.concurrency=2",
        ],
    );
    let nap = "schemaVersion: '0.3'\nparameters:\n  For: {type: String}\nmainSteps:\n  - name: nap\n    action: aws:sleep\n    inputs: {Duration: '{{ For }}'}\n";
    let starter = r#"schemaVersion: '0.3'
mainSteps:
  - name: Start
    action: aws:executeAwsApi
    inputs:
      Service: ssm
      Api: StartAutomationExecution
      DocumentName: Nap
      Parameters: {For: [PT1S]}
    outputs:
      - {Name: Id, Selector: $.AutomationExecutionId, Type: String}
  - name: Wait
    action: aws:waitForAwsResourceProperty
    timeoutSeconds: 60
    inputs:
      Service: ssm
      Api: get-automation-execution
      AutomationExecutionId: '{{ Start.Id }}'
      PropertySelector: $.AutomationExecution.AutomationExecutionStatus
      DesiredValues: [Success]
  - name: List
    action: aws:executeAwsApi
    inputs:
      Service: ssm
      Api: DescribeAutomationExecutions
      Filters:
        - {Key: ParentExecutionId, Values: ['{{ automation:EXECUTION_ID }}']}
    outputs:
      - {Name: Ids, Selector: $.AutomationExecutionMetadataList..AutomationExecutionId, Type: StringList}
      - {Name: Started, Selector: '$.AutomationExecutionMetadataList[0].ExecutionStartTime', Type: String}
"#;
    let native = d.client();
    for (name, content) in [("Nap", nap), ("Starter", starter)] {
        let a = common::ssm::call(
            d.tcp.as_deref().unwrap(),
            &common::ssm::Signer::new("test", "test"),
            "CreateDocument",
            &serde_json::json!({"Name": name, "Content": content, "DocumentType": "Automation", "DocumentFormat": "YAML"}),
        )
        .await;
        assert_eq!(a.status, 200, "{name}: {:?}", a.body);
    }
    let a = common::ssm::call(
        d.tcp.as_deref().unwrap(),
        &common::ssm::Signer::new("test", "test"),
        "StartAutomationExecution",
        &serde_json::json!({"DocumentName": "Starter"}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let parent = a.body["AutomationExecutionId"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let record = loop {
        let r = native
            .get(&format!("/v1/executions/{parent}"))
            .await
            .unwrap()
            .json();
        if ["Success", "Failed", "TimedOut", "Cancelled"]
            .contains(&r["Status"].as_str().unwrap_or(""))
        {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(record["Status"], "Success", "{record:#}\n{}", moto.log());
    let started = step(&record, "Start")["Outputs"]["Id"][0]
        .as_str()
        .unwrap()
        .to_string();
    let listed = &step(&record, "List")["Outputs"];
    assert_eq!(listed["Ids"], serde_json::json!([started]), "{listed}");
    // As boto3 renders a timestamp.
    let when = listed["Started"][0].as_str().unwrap();
    assert!(
        when.len() == 32 && when.ends_with("+00:00") && when.contains('T'),
        "{when}"
    );
    let child = native
        .get(&format!("/v1/executions/{started}"))
        .await
        .unwrap()
        .json();
    assert_eq!(
        child["ParentAutomationExecutionId"],
        parent.as_str(),
        "{child}"
    );
    assert_eq!(child["Status"], "Success", "{child}");
    // Moto never saw these calls.
    assert!(
        !moto.log().contains("AutomationExecution"),
        "{}",
        moto.log()
    );
}
