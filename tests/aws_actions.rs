//! The generic AWS API actions (issue 14): `aws:executeAwsApi`, `aws:waitForAwsResourceProperty`
//! and `aws:assertAwsResourceProperty`, run by `scriptbox run` against a real moto server on
//! 127.0.0.1, each call made by scriptbox's AWS API worker in a real container. Resources are
//! created in moto first; verdicts come from the execution's record, checked against moto.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// `scriptbox run DOC --aws-endpoint MOTO --output json ARGS`, with a test key as the operator's
/// and the poll interval at 1 s; the run's JSON.
fn run(moto: &Moto, dir: &Path, doc: &str, args: &[&str]) -> (Value, Output) {
    let path = dir.join(format!("{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, doc).expect("write the runbook");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg(&path)
        .args(["--aws-endpoint", &moto.url(), "--output", "json"])
        .args(["--set", "aws.poll_interval_seconds=1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    if let Ok(rt) = std::env::var("SCRIPTBOX_TEST_RUNTIME") {
        cmd.env("SCRIPTBOX_SANDBOX_CONTAINER_RUNTIME", rt);
    }
    let out = cmd.output().expect("scriptbox runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "run's JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

/// The record of step `name`.
fn step<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["StepExecutions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["StepName"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {v}"))
}

/// Output `name` of `step` (AWS renders each as a list of strings).
fn output<'v>(step: &'v Value, name: &str) -> &'v str {
    step["Outputs"][name][0]
        .as_str()
        .unwrap_or_else(|| panic!("no output {name}: {step}"))
}

/// The engine, moto and a Python image for the worker, or a SKIPPED line.
async fn ready() -> Option<Moto> {
    let engine = engine().await?;
    let moto = Moto::start()?;
    let mut any = false;
    for rt in ["python3.12", "python3.11"] {
        any |= engine
            .image_labels(&format!("scriptbox-runtime:{rt}"))
            .await
            .ok()
            .flatten()
            .is_some();
    }
    if !any && !require_image(&engine, "python3.11").await {
        return None;
    }
    Some(moto)
}

/// An instance in moto, tagged `Name=probe`; its id.
fn moto_instance(moto: &Moto) -> String {
    moto.python(
        "import boto3\n\
         ec2 = boto3.client('ec2')\n\
         image = ec2.describe_images()['Images'][0]['ImageId']\n\
         r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t2.micro',\n\
             TagSpecifications=[{'ResourceType': 'instance', 'Tags': [{'Key': 'Name', 'Value': 'probe'}]}])\n\
         print(r['Instances'][0]['InstanceId'])\n",
    )
    .trim()
    .to_string()
}

/// Outputs of every type from ec2 and ssm responses; `describe-snapshots` spelled as AWS's
/// AFSBP_EC2.1 spells it; datetimes rendered ISO 8601; each call logged without its parameters.
#[tokio::test]
async fn outputs_of_every_type_from_ec2_and_ssm_responses() {
    let Some(moto) = ready().await else { return };
    let instance = moto_instance(&moto);
    let snapshot = moto
        .python(
            "import boto3\n\
             ec2 = boto3.client('ec2')\n\
             v = ec2.create_volume(Size=1, AvailabilityZone='us-east-1a')\n\
             s = ec2.create_snapshot(VolumeId=v['VolumeId'])\n\
             boto3.client('ssm').put_parameter(Name='/probe/secret', Value='s3cr3t-value', Type='String')\n\
             print(s['SnapshotId'])\n",
        )
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let doc = r#"
schemaVersion: '0.3'
parameters:
  InstanceId: {type: String}
mainSteps:
  - name: describe
    action: aws:executeAwsApi
    inputs:
      Service: ec2
      Api: DescribeInstances
      InstanceIds: ['{{ InstanceId }}']
    outputs:
      - {Name: Id, Selector: '$.Reservations[0].Instances[0].InstanceId', Type: String}
      - {Name: Index, Selector: '$.Reservations[0].Instances[0].AmiLaunchIndex', Type: Integer}
      - {Name: Ids, Selector: '$.Reservations..Instances..InstanceId', Type: StringList}
      - {Name: State, Selector: '$.Reservations[0].Instances[0].State', Type: StringMap}
      - {Name: Tags, Selector: '$.Reservations[0].Instances[0].Tags', Type: MapList}
      - {Name: Optimized, Selector: '$.Reservations[0].Instances[0].EbsOptimized', Type: Boolean}
      - {Name: Launched, Selector: '$.Reservations[0].Instances[0].LaunchTime', Type: String}
      - {Name: Status, Selector: '$.ResponseMetadata.HTTPStatusCode', Type: Integer}
  - name: parameter
    action: aws:executeAwsApi
    inputs:
      Service: ssm
      Api: get_parameter
      Name: /probe/secret
    outputs:
      - {Name: Value, Selector: '$.Parameter.Value', Type: String}
      - {Name: Version, Selector: '$.Parameter.Version', Type: Integer}
  - name: snapshots
    action: aws:executeAwsApi
    inputs:
      Service: ec2
      Api: describe-snapshots
      OwnerIds: [self]
    outputs:
      - {Name: Ids, Selector: '$.Snapshots..SnapshotId', Type: StringList}
      - {Name: Started, Selector: '$.Snapshots[0].StartTime', Type: String}
"#;
    let (v, out) = run(
        &moto,
        dir.path(),
        doc,
        &["-p", &format!("InstanceId={instance}")],
    );
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let d = step(&v, "describe");
    assert_eq!(output(d, "Id"), instance);
    assert_eq!(output(d, "Index"), "0");
    assert_eq!(d["Outputs"]["Ids"], serde_json::json!([instance]), "{d}");
    let state: Value = serde_json::from_str(output(d, "State")).expect("a StringMap");
    assert_eq!(state["Name"], "running", "{d}");
    // A MapList is rendered as one JSON string per map.
    assert_eq!(
        d["Outputs"]["Tags"].as_array().map(Vec::len),
        Some(1),
        "{d}"
    );
    let tag: Value = serde_json::from_str(output(d, "Tags")).expect("a MapList item");
    assert_eq!(tag, serde_json::json!({"Key": "Name", "Value": "probe"}));
    assert!(["true", "false"].contains(&output(d, "Optimized")), "{d}");
    assert_eq!(output(d, "Status"), "200", "ResponseMetadata is kept: {d}");
    let iso = |s: &str| {
        s.len() >= 19
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    };
    assert!(
        iso(output(d, "Launched")),
        "LaunchTime: {}",
        output(d, "Launched")
    );
    let p = step(&v, "parameter");
    assert_eq!(output(p, "Value"), "s3cr3t-value");
    assert_eq!(output(p, "Version"), "1");
    let s = step(&v, "snapshots");
    assert!(
        s["Outputs"]["Ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == &Value::String(snapshot.clone())),
        "{s}"
    );
    assert!(iso(output(s, "Started")), "{s}");
    // One Scriptbox line per call, naming the operation and who makes it, no parameter value.
    let log = p["ScriptboxLog"].to_string();
    assert!(
        log.contains("AWS call: ssm.get_parameter as the operator"),
        "{log}"
    );
    assert!(!v.to_string().contains("AWS call: ssm.get_parameter /probe"));
    assert!(!log.contains("/probe/secret"), "{log}");
}

/// Each failure is its own reason, and onFailure Continue / isCritical false let the execution
/// go on: a service error (code and message), botocore's parameter validation, an unknown
/// operation and service, an operation moto lacks (named with the endpoint), an assert that fails.
#[tokio::test]
async fn failures_name_their_reason_and_continue_goes_on() {
    let Some(moto) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let doc = r#"
schemaVersion: '0.3'
mainSteps:
  - name: missing
    action: aws:executeAwsApi
    onFailure: Continue
    inputs: {Service: ec2, Api: DescribeInstances, InstanceIds: [i-0123456789abcdef0]}
  - name: badParameters
    action: aws:executeAwsApi
    onFailure: Continue
    isCritical: false
    inputs: {Service: ec2, Api: DescribeInstances, InstanceIds: not-a-list}
  - name: noSuchOperation
    action: aws:executeAwsApi
    onFailure: Continue
    isCritical: false
    inputs: {Service: ec2, Api: DescribeUnicorns}
  - name: noSuchService
    action: aws:executeAwsApi
    onFailure: Continue
    isCritical: false
    inputs: {Service: unicorns, Api: ListHorns}
  - name: lacks
    action: aws:executeAwsApi
    onFailure: Continue
    isCritical: false
    inputs: {Service: ssm, Api: DescribeInstanceInformation}
  - name: assertDefault
    action: aws:assertAwsResourceProperty
    onFailure: Continue
    isCritical: false
    inputs:
      Service: ec2
      Api: DescribeVpcs
      PropertySelector: $.Vpcs[0].IsDefault
      DesiredValues: ['False']
  - name: assertPasses
    action: aws:assertAwsResourceProperty
    inputs:
      Service: ec2
      Api: DescribeVpcs
      PropertySelector: $.Vpcs[0].IsDefault
      DesiredValues: ['True']
"#;
    let (v, _) = run(&moto, dir.path(), doc, &[]);
    let failed = |name: &str, kind: &str, parts: &[&str]| {
        let s = step(&v, name);
        assert_eq!(s["StepStatus"], "Failed", "{name}: {s}");
        let m = s["FailureMessage"].as_str().unwrap_or_default();
        assert!(m.contains(&format!(" {kind} - ")), "{name}: {m}");
        for p in parts {
            assert!(m.contains(p), "{name}: {p:?} not in {m}");
        }
    };
    failed(
        "missing",
        "ServiceError",
        &[
            "InvalidInstanceID.NotFound",
            "when calling the DescribeInstances operation",
        ],
    );
    failed(
        "badParameters",
        "InvalidParameters",
        &["Parameter validation failed", "InstanceIds"],
    );
    failed("noSuchOperation", "UnknownOperation", &["DescribeUnicorns"]);
    failed("noSuchService", "UnknownService", &["unicorns"]);
    failed(
        "lacks",
        "EmulatorLacksOperation",
        &[
            "ssm.DescribeInstanceInformation",
            &moto.url(),
            "not a defect of the runbook",
        ],
    );
    failed(
        "assertDefault",
        "AssertionFailed",
        &["$.Vpcs[0].IsDefault", "true", "[False]"],
    );
    assert_eq!(step(&v, "assertPasses")["StepStatus"], "Success", "{v}");
    assert_eq!(step(&v, "badParameters")["IsCritical"], false);
}

/// A wait whose value never comes times out at its timeoutSeconds; one whose resource changes
/// during the wait (a tag set by another task) succeeds after it changed.
#[tokio::test]
async fn waits_time_out_or_see_the_resource_change() {
    let Some(moto) = ready().await else { return };
    let instance = moto_instance(&moto);
    let dir = tempfile::tempdir().unwrap();
    let doc = |timeout: u32| {
        format!(
            r#"
schemaVersion: '0.3'
parameters:
  InstanceId: {{type: String}}
mainSteps:
  - name: waitReady
    action: aws:waitForAwsResourceProperty
    timeoutSeconds: {timeout}
    inputs:
      Service: ec2
      Api: DescribeTags
      Filters:
        - {{Name: resource-id, Values: ['{{{{ InstanceId }}}}']}}
        - {{Name: key, Values: [Ready]}}
      PropertySelector: $.Tags[0].Value
      DesiredValues: ['yes']
"#
        )
    };
    let param = format!("InstanceId={instance}");
    let began = Instant::now();
    let (v, _) = run(&moto, dir.path(), &doc(8), &["-p", &param]);
    let w = step(&v, "waitReady");
    assert_eq!(w["StepStatus"], "TimedOut", "{w}");
    assert!(began.elapsed() >= Duration::from_secs(8), "{w}");
    assert!(
        w["FailureMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("timeoutSeconds 8"),
        "{w}"
    );

    // Another task tags the instance a while after the wait has started.
    let delay = Duration::from_secs(10);
    let (v, waited) = std::thread::scope(|s| {
        let tagger = s.spawn(|| {
            std::thread::sleep(delay);
            moto.python(&format!(
                "import boto3\n\
                 boto3.client('ec2').create_tags(Resources=['{instance}'], Tags=[{{'Key': 'Ready', 'Value': 'yes'}}])\n"
            ));
        });
        let began = Instant::now();
        let (v, _) = run(&moto, dir.path(), &doc(300), &["-p", &param]);
        tagger.join().expect("the tagger");
        (v, began.elapsed())
    });
    let w = step(&v, "waitReady");
    assert_eq!(w["StepStatus"], "Success", "{w}");
    assert!(
        waited >= delay,
        "the wait ended before the tag was set: {waited:?}"
    );
    let calls = w["ScriptboxLog"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| {
                    l["Text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("AWS call: ec2.DescribeTags"))
                })
                .count()
        })
        .unwrap_or(0);
    assert!(calls >= 2, "polled once only: {w}");
}

/// Without AWS access an AWS action fails naming how to turn it on; inputs are checked at load.
#[tokio::test]
async fn no_access_fails_clearly_and_bad_inputs_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.yaml");
    std::fs::write(
        &ok,
        "schemaVersion: '0.3'\nmainSteps:\n  - name: d\n    action: aws:executeAwsApi\n    inputs: {Service: ec2, Api: DescribeVpcs, AnyParameter: 1}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", ok.to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("run's JSON");
    let m = step(&v, "d")["FailureMessage"].to_string();
    assert!(
        m.contains("NoAwsAccess") && m.contains("--aws-endpoint"),
        "{m}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"schemaVersion: '0.3'
mainSteps:
  - name: noApi
    action: aws:executeAwsApi
    inputs: {Service: ec2}
  - name: badSelector
    action: aws:waitForAwsResourceProperty
    inputs: {Service: ec2, Api: DescribeVpcs, PropertySelector: 'Vpcs[0]', DesiredValues: [a]}
  - name: noValues
    action: aws:assertAwsResourceProperty
    inputs: {Service: ec2, Api: DescribeVpcs, PropertySelector: '$.Vpcs[0].State', DesiredValues: []}
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    for want in [
        "Api is required",
        "inputs.PropertySelector",
        "inputs.DesiredValues",
        "1 to 100",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}
