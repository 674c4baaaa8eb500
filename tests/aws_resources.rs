//! The resource actions (changeInstanceState, createTags, runInstances, createImage, copyImage,
//! deleteImage, createStack, deleteStack, invokeLambdaFunction, runCommand) against a real moto
//! server on 127.0.0.1, through `scriptbox run --aws-endpoint` on the real engine (the AWS calls
//! go through scriptbox's own worker container). Every verdict on what a step did comes from
//! moto's own state (read with boto3 from the test), besides the execution's record.
//!
//! What moto does, as these tests find it: resources change state at once (a wait passes at its
//! first poll), `send_command` runs nothing (the invocation reports Success with an empty
//! output), Lambda's Invoke needs Docker networking to run code, so only a missing function is
//! tested (ResourceNotFoundException).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::moto::Moto;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// `scriptbox run DOC --aws-endpoint MOTO -p ... --output json` with test credentials; the
/// process's output and its JSON (Null when it printed none).
fn run(moto: &Moto, dir: &Path, doc: &str, params: &[&str]) -> (Output, Value) {
    let path = dir.join(format!("doc-{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, doc).expect("write the runbook");
    let mut args = vec![
        "run".to_string(),
        path.to_string_lossy().to_string(),
        "--aws-endpoint".into(),
        moto.url(),
        "--output".into(),
        "json".into(),
    ];
    for p in params {
        args.push("-p".into());
        args.push((*p).to_string());
    }
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    if let Ok(rt) = std::env::var("SCRIPTBOX_TEST_RUNTIME") {
        cmd.env("SCRIPTBOX_SANDBOX_CONTAINER_RUNTIME", rt);
    }
    let out = cmd.output().expect("scriptbox runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

/// The run's text, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The step named `name` of a run's JSON.
fn step<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["StepExecutions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["StepName"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {v}"))
}

/// The first value of a step's output.
fn out1(v: &Value, name: &str, output: &str) -> Value {
    let o = &step(v, name)["Outputs"][output];
    o.get(0).cloned().unwrap_or_else(|| o.clone())
}

/// Moto and the engine, or the skip already explained.
async fn setup() -> Option<Moto> {
    common::engine().await?;
    Moto::start()
}

/// An instance launched in moto beforehand (from moto's first image); its id.
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

/// An instance's state as moto holds it.
fn moto_state(moto: &Moto, instance: &str) -> String {
    moto.python(&format!(
        "import boto3\n\
         r = boto3.client('ec2').describe_instances(InstanceIds=['{instance}'])\n\
         print(r['Reservations'][0]['Instances'][0]['State']['Name'])\n"
    ))
    .trim()
    .to_string()
}

/// The result of Python `expr` (with `ec2`, `ssm`, `cfn` clients) as JSON.
fn moto_json(moto: &Moto, expr: &str) -> Value {
    let out = moto.python(&format!(
        "import boto3, json\n\
         ec2 = boto3.client('ec2'); ssm = boto3.client('ssm'); cfn = boto3.client('cloudformation')\n\
         print(json.dumps({expr}, default=str))\n"
    ));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn change_instance_state_stops_and_starts_a_moto_instance() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let instance = moto_instance(&moto);
    let doc = "schemaVersion: '0.3'\nparameters:\n  Id: {type: String}\nmainSteps:\n\
  - name: stop\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: ['{{ Id }}'], DesiredState: stopped}\n\
  - name: assertStopped\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: ['{{ Id }}'], DesiredState: stopped, CheckStateOnly: true}\n\
  - name: start\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: ['{{ Id }}'], DesiredState: running}\n";
    let (out, v) = run(&moto, dir.path(), doc, &[&format!("Id={instance}")]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    assert_eq!(step(&v, "stop")["StepStatus"], "Success");
    assert_eq!(moto_state(&moto, &instance), "running");
    // The stop happened in moto: its state-transition reason says so.
    let reason = moto_json(
        &moto,
        &format!(
            "ec2.describe_instances(InstanceIds=['{instance}'])['Reservations'][0]['Instances'][0].get('StateTransitionReason', '')"
        ),
    );
    assert!(reason.is_string(), "{reason}");
    // A missing instance fails the step with EC2's error.
    let (out, v) = run(&moto, dir.path(), doc, &["Id=i-0123456789abcdef0"]);
    assert_eq!(v["AutomationExecutionStatus"], "Failed", "{}", shown(&out));
    let msg = step(&v, "stop")["FailureMessage"].to_string();
    assert!(msg.contains("i-0123456789abcdef0"), "{msg}");
}

#[tokio::test]
async fn run_instances_then_create_tags_on_ec2_and_on_an_ssm_parameter() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let image = moto_json(&moto, "ec2.describe_images()['Images'][0]['ImageId']");
    moto.python(
        "import boto3\nboto3.client('ssm').put_parameter(Name='/app/colour', Value='blue', Type='String')\n",
    );
    let doc = format!(
        "schemaVersion: '0.3'\nmainSteps:\n\
  - name: launch\n    action: aws:runInstances\n    inputs: {{ImageId: {image}, InstanceType: t2.micro, MinInstanceCount: 1, MaxInstanceCount: 1}}\n\
  - name: tagInstance\n    action: aws:createTags\n    inputs: {{ResourceIds: ['{{{{ launch.InstanceIds }}}}'], Tags: [{{Key: Owner, Value: scriptbox}}]}}\n\
  - name: tagParameter\n    action: aws:createTags\n    inputs: {{ResourceType: Parameter, ResourceIds: [/app/colour], Tags: [{{Key: Team, Value: blue}}]}}\n\
outputs: [launch.InstanceIds, launch.InstanceStates]\n",
        image = image.as_str().unwrap()
    );
    let (out, v) = run(&moto, dir.path(), &doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    let id = out1(&v, "launch", "InstanceIds");
    let id = id.as_str().expect("an instance id");
    assert!(id.starts_with("i-"), "{id}");
    assert_eq!(out1(&v, "launch", "InstanceStates"), json!("running"));
    assert_eq!(moto_state(&moto, id), "running");
    let tags = moto_json(
        &moto,
        &format!(
            "{{t['Key']: t['Value'] for t in ec2.describe_tags(Filters=[{{'Name': 'resource-id', 'Values': ['{id}']}}])['Tags']}}"
        ),
    );
    assert_eq!(tags, json!({"Owner": "scriptbox"}));
    let tags = moto_json(
        &moto,
        "ssm.list_tags_for_resource(ResourceType='Parameter', ResourceId='/app/colour')['TagList']",
    );
    assert_eq!(tags, json!([{"Key": "Team", "Value": "blue"}]));
    // A failing call: an image moto does not have.
    let doc = "schemaVersion: '0.3'\nmainSteps:\n  - name: launch\n    action: aws:runInstances\n    inputs: {ImageId: ami-00000000000000000}\n";
    let (out, v) = run(&moto, dir.path(), doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Failed", "{}", shown(&out));
    assert!(step(&v, "launch")["FailureMessage"].is_string(), "{v}");
}

#[tokio::test]
async fn create_copy_and_delete_an_image() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let instance = moto_instance(&moto);
    let doc = "schemaVersion: '0.3'\nparameters:\n  Id: {type: String}\nmainSteps:\n\
  - name: image\n    action: aws:createImage\n    inputs: {InstanceId: '{{ Id }}', ImageName: scriptbox-image, NoReboot: true, ImageDescription: made by a test}\n\
  - name: copy\n    action: aws:copyImage\n    inputs: {SourceImageId: '{{ image.ImageId }}', SourceRegion: us-east-1, ImageName: scriptbox-copy}\n\
  - name: deleteCopy\n    action: aws:deleteImage\n    inputs: {ImageId: '{{ copy.ImageId }}'}\n\
outputs: [image.ImageId, image.ImageState, copy.ImageId]\n";
    let (out, v) = run(&moto, dir.path(), doc, &[&format!("Id={instance}")]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    let made = out1(&v, "image", "ImageId");
    let copied = out1(&v, "copy", "ImageId");
    assert_eq!(out1(&v, "image", "ImageState"), json!("available"));
    let made = made.as_str().unwrap();
    let copied = copied.as_str().unwrap();
    assert_ne!(made, copied);
    let images = moto_json(
        &moto,
        "sorted(i['ImageId'] for i in ec2.describe_images(Owners=['self'])['Images'])",
    );
    assert_eq!(
        images,
        json!([made]),
        "the copy is deregistered, the original kept"
    );
    let name = moto_json(
        &moto,
        &format!("ec2.describe_images(ImageIds=['{made}'])['Images'][0]['Name']"),
    );
    assert_eq!(name, json!("scriptbox-image"));
    // Deleting an image that does not exist fails.
    let doc = "schemaVersion: '0.3'\nmainSteps:\n  - name: delete\n    action: aws:deleteImage\n    inputs: {ImageId: ami-00000000000000000}\n";
    let (out, v) = run(&moto, dir.path(), doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Failed", "{}", shown(&out));
}

#[tokio::test]
async fn delete_image_deletes_the_snapshots_of_its_volumes() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // An image registered over a snapshot moto holds.
    let ids = moto_json(
        &moto,
        "(lambda v: (lambda s: [s, ec2.register_image(Name='with-snap', RootDeviceName='/dev/sda1', BlockDeviceMappings=[{'DeviceName': '/dev/sda1', 'Ebs': {'SnapshotId': s}}])['ImageId']])(ec2.create_snapshot(VolumeId=v)['SnapshotId']))(ec2.create_volume(Size=1, AvailabilityZone='us-east-1a')['VolumeId'])",
    );
    let (snap, image) = (ids[0].as_str().unwrap(), ids[1].as_str().unwrap());
    let doc = format!(
        "schemaVersion: '0.3'\nmainSteps:\n  - name: delete\n    action: aws:deleteImage\n    inputs: {{ImageId: {image}}}\n"
    );
    let (out, v) = run(&moto, dir.path(), &doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    let left = moto_json(
        &moto,
        &format!(
            "[s['SnapshotId'] for s in ec2.describe_snapshots(OwnerIds=['self'])['Snapshots'] if s['SnapshotId'] == '{snap}']"
        ),
    );
    assert_eq!(left, json!([]), "the image's snapshot is deleted");
    let images = moto_json(
        &moto,
        &format!(
            "[i['ImageId'] for i in ec2.describe_images(Owners=['self'])['Images'] if i['ImageId'] == '{image}']"
        ),
    );
    assert_eq!(images, json!([]));
}

#[tokio::test]
async fn create_and_delete_a_stack_of_an_ssm_parameter() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let template = r#"{"Parameters": {"Value": {"Type": "String"}}, "Resources": {"P": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/stack/param", "Type": "String", "Value": {"Ref": "Value"}}}}}"#;
    let doc = format!(
        "schemaVersion: '0.3'\nmainSteps:\n\
  - name: stack\n    action: aws:createStack\n    inputs:\n      StackName: scriptbox-stack\n      TemplateBody: '{template}'\n      Parameters: [{{ParameterKey: Value, ParameterValue: from-the-stack}}]\n      Tags: [{{Key: Owner, Value: scriptbox}}]\n\
outputs: [stack.StackId, stack.StackStatus]\n"
    );
    let (out, v) = run(&moto, dir.path(), &doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    assert_eq!(out1(&v, "stack", "StackStatus"), json!("CREATE_COMPLETE"));
    let id = out1(&v, "stack", "StackId");
    assert!(
        id.as_str().unwrap().starts_with("arn:aws:cloudformation:"),
        "{id}"
    );
    assert_eq!(
        moto_json(
            &moto,
            "ssm.get_parameter(Name='/stack/param')['Parameter']['Value']"
        ),
        json!("from-the-stack")
    );
    let doc = "schemaVersion: '0.3'\nmainSteps:\n  - name: unstack\n    action: aws:deleteStack\n    inputs: {StackName: scriptbox-stack}\n";
    let (out, v) = run(&moto, dir.path(), doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    assert_eq!(
        moto_json(
            &moto,
            "[s['StackName'] for s in cfn.list_stacks()['StackSummaries'] if s['StackStatus'] != 'DELETE_COMPLETE']"
        ),
        json!([])
    );
    // A template CloudFormation refuses fails the step.
    let doc = "schemaVersion: '0.3'\nmainSteps:\n  - name: stack\n    action: aws:createStack\n    inputs: {StackName: bad-stack, TemplateBody: 'not a template'}\n";
    let (out, v) = run(&moto, dir.path(), doc, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Failed", "{}", shown(&out));
}

#[tokio::test]
async fn invoke_lambda_of_a_missing_function_fails_and_on_failure_continues() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let doc = "schemaVersion: '0.3'\nmainSteps:\n\
  - name: invoke\n    action: aws:invokeLambdaFunction\n    onFailure: Continue\n    inputs: {FunctionName: no-such-function, InputPayload: {a: 1}}\n\
  - name: after\n    action: aws:createTags\n    inputs: {ResourceType: Parameter, ResourceIds: [/after], Tags: [{Key: Ran, Value: 'yes'}]}\n";
    moto.python(
        "import boto3\nboto3.client('ssm').put_parameter(Name='/after', Value='x', Type='String')\n",
    );
    let (out, v) = run(&moto, dir.path(), doc, &[]);
    // onFailure Continue: not critical by default, so the execution succeeds and `after` ran.
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    assert_eq!(step(&v, "invoke")["StepStatus"], "Failed");
    let msg = step(&v, "invoke")["FailureMessage"].to_string();
    assert!(
        msg.contains("no-such-function") || msg.contains("not found"),
        "{msg}"
    );
    assert_eq!(
        moto_json(
            &moto,
            "ssm.list_tags_for_resource(ResourceType='Parameter', ResourceId='/after')['TagList']"
        ),
        json!([{"Key": "Ran", "Value": "yes"}])
    );
    // isCritical: true with Continue: `after` still runs, the execution fails.
    let critical = doc.replace(
        "onFailure: Continue\n",
        "onFailure: Continue\n    isCritical: true\n",
    );
    let (out, v) = run(&moto, dir.path(), &critical, &[]);
    assert_eq!(v["AutomationExecutionStatus"], "Failed", "{}", shown(&out));
    assert_eq!(step(&v, "after")["StepStatus"], "Success");
}

#[tokio::test]
async fn run_command_against_moto_reports_what_moto_answers() {
    let Some(moto) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let instance = moto_instance(&moto);
    let doc = "schemaVersion: '0.3'\nparameters:\n  Id: {type: String}\nmainSteps:\n\
  - name: command\n    action: aws:runCommand\n    inputs: {DocumentName: AWS-RunShellScript, InstanceIds: ['{{ Id }}'], Parameters: {commands: [echo hi]}}\n\
outputs: [command.CommandId, command.Status, command.ResponseCode, command.Output]\n";
    let (out, v) = run(&moto, dir.path(), doc, &[&format!("Id={instance}")]);
    assert_eq!(v["AutomationExecutionStatus"], "Success", "{}", shown(&out));
    let id = out1(&v, "command", "CommandId");
    let id = id.as_str().unwrap();
    assert_eq!(out1(&v, "command", "Status"), json!("Success"));
    // moto runs nothing: its invocation is a Success with response code 0 and no output.
    assert_eq!(out1(&v, "command", "ResponseCode"), json!("0"));
    assert_eq!(
        moto_json(
            &moto,
            &format!("ssm.list_commands(CommandId='{id}')['Commands'][0]['DocumentName']")
        ),
        json!("AWS-RunShellScript")
    );
}
