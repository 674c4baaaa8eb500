//! Unit tests of the resource actions (changeInstanceState … runCommand): their load-time
//! checks on whole documents, and their runs through the executor on a `StepRunner` whose
//! `call_aws` records each call and answers canned responses (the logic around the calls; the
//! proof against moto is `tests/aws_resources.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::aws::api::{AwsCall, AwsCallError};
use crate::context::AwsContext;
use crate::execute::ExecuteError;
use crate::result::{StepResult, StepStatus};
use crate::runbook::actions::Action;
use crate::runbook::document::{
    LoadOptions, OnCancel, OnFailure, Runbook, StepDecl, StepKind, load_str,
};
use crate::runbook::executor::{ExecOptions, Execution, RunContext, StepRunner, execute};
use crate::runbook::yaml::Format;
use crate::runtimes::Catalog;
use crate::step::ValidatedStep;

/// A step with nothing but its timeout, for the helpers' tests.
pub(crate) fn bare_step(timeout: Option<i64>) -> StepDecl {
    StepDecl {
        index: 0,
        name: "s".into(),
        pos: Default::default(),
        kind: StepKind::Checked(Action::Sleep),
        inputs: Default::default(),
        outputs: Vec::new(),
        max_attempts: 1,
        timeout_seconds: timeout,
        on_failure: OnFailure::Abort,
        on_cancel: OnCancel::Abort,
        is_end: false,
        next_step: None,
        is_critical: true,
    }
}

type Answer = Result<Value, AwsCallError>;

/// A fake AWS: `service.Api` → its answers in turn (the last repeats; none: `{}`); records
/// every call.
#[derive(Default)]
struct Cloud {
    answers: Mutex<HashMap<String, Vec<Answer>>>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl Cloud {
    fn answer(self, op: &str, answers: Vec<Answer>) -> Cloud {
        self.answers.lock().unwrap().insert(op.to_string(), answers);
        self
    }

    fn ok(self, op: &str, answers: &[Value]) -> Cloud {
        self.answer(op, answers.iter().cloned().map(Ok).collect())
    }

    /// The operations called, in order.
    fn ops(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .collect()
    }

    /// The parameters of the `n`th call of `op`.
    fn params(&self, op: &str, n: usize) -> Value {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == op)
            .nth(n)
            .map(|(_, p)| p.clone())
            .unwrap_or(Value::Null)
    }
}

fn failure(kind: &'static str, message: &str) -> Answer {
    Err(AwsCallError::Failed {
        kind,
        message: message.to_string(),
    })
}

impl StepRunner for Cloud {
    fn run<'a>(
        &'a self,
        _step: &'a ValidatedStep,
        _ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<StepResult, ExecuteError>> {
        unreachable!("no script steps in these tests")
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn call_aws<'a>(
        &'a self,
        call: &'a AwsCall,
        ctx: RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, AwsCallError>> {
        Box::pin(async move {
            let op = format!("{}.{}", call.service, call.api);
            self.calls
                .lock()
                .unwrap()
                .push((op.clone(), Value::Object(call.parameters.clone())));
            if ctx.cancel.is_cancelled() {
                return Err(AwsCallError::Cancelled);
            }
            let mut answers = self.answers.lock().unwrap();
            match answers.get_mut(&op) {
                Some(list) if list.len() > 1 => list.remove(0),
                Some(list) => list.first().cloned().unwrap_or(Ok(json!({}))),
                None => Ok(json!({})),
            }
        })
    }
}

fn load(yaml: &str) -> Result<Runbook, String> {
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: None,
    };
    load_str(
        yaml,
        "test",
        Format::Yaml,
        std::path::Path::new("."),
        &options,
    )
    .map_err(|e| e.to_string())
}

/// A document of `steps` (YAML of the `mainSteps` items, indented by 2).
fn doc(steps: &str) -> String {
    format!("schemaVersion: '0.3'\nmainSteps:\n{steps}")
}

async fn run(rb: &Runbook, cloud: &Cloud) -> Execution {
    let catalog = Catalog::builtin();
    let ctx = AwsContext::default();
    let options = ExecOptions {
        execution_id: Some("exec-1".into()),
        context: &ctx,
        catalog: &catalog,
        max_timeout_secs: 600,
        max_run_secs: 600,
        children: None,
        signals: None,
        depth: 0,
    };
    let params = crate::runbook::parameters::resolve(&rb.parameters, &[]).unwrap();
    execute(
        rb,
        params,
        cloud,
        &options,
        &mut |_| {},
        &CancellationToken::new(),
    )
    .await
}

fn output(e: &Execution, step: usize, name: &str) -> Option<Value> {
    e.steps[step]
        .outputs
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, v)| v.clone())
}

fn reservation(id: &str, state: &str) -> Value {
    json!({"Reservations": [{"Instances": [{"InstanceId": id, "State": {"Name": state}}]}]})
}

#[test]
fn every_action_loads_with_its_documented_inputs() {
    let steps = r#"  - name: stop
    action: aws:changeInstanceState
    inputs: {InstanceIds: [i-1], CheckStateOnly: false, DesiredState: stopped, Force: true}
  - name: tag
    action: aws:createTags
    inputs: {ResourceType: EC2, ResourceIds: [ami-1, i-1], Tags: [{Key: a, Value: ''}]}
  - name: launch
    action: aws:runInstances
    inputs: {ImageId: ami-1, InstanceType: t2.micro, MinInstanceCount: 1, MaxInstanceCount: 1, IamInstanceProfileName: p, TagSpecifications: [{ResourceType: instance, Tags: [{Key: k, Value: v}]}]}
  - name: image
    action: aws:createImage
    inputs: {InstanceId: '{{ launch.InstanceIds }}', ImageName: n, NoReboot: true, ImageDescription: d}
  - name: copy
    action: aws:copyImage
    inputs: {SourceImageId: '{{ image.ImageId }}', SourceRegion: us-east-1, ImageName: c, Encrypted: true}
  - name: delete
    action: aws:deleteImage
    inputs: {ImageId: '{{ copy.ImageId }}'}
  - name: stack
    action: aws:createStack
    inputs: {StackName: s, TemplateBody: '{}', Capabilities: [CAPABILITY_IAM], Parameters: [{ParameterKey: k, ParameterValue: v}], TimeoutInMinutes: 5}
  - name: unstack
    action: aws:deleteStack
    inputs: {StackName: '{{ stack.StackId }}'}
  - name: invoke
    action: aws:invokeLambdaFunction
    inputs: {FunctionName: f, InvocationType: RequestResponse, LogType: Tail, InputPayload: {a: 1}}
    outputs: [{Name: code, Selector: $.Payload.resultCode, Type: Integer}]
  - name: command
    action: aws:runCommand
    inputs: {DocumentName: AWS-RunShellScript, InstanceIds: ['{{ launch.InstanceIds }}'], Parameters: {commands: [echo hi]}, MaxConcurrency: '10%'}
outputs: [launch.InstanceStates, command.Output, invoke.Payload, stack.StackStatus]
"#;
    let rb = load(&doc(steps)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rb.steps.len(), 10);
}

#[test]
fn bad_inputs_are_refused_at_load_with_the_field_and_the_rule() {
    let steps = r#"  - name: stop
    action: aws:changeInstanceState
    inputs: {InstanceIds: i-1, DesiredState: paused, Colour: red}
  - name: tag
    action: aws:createTags
    inputs: {ResourceType: Parameter, ResourceIds: [a, b], Tags: [{Key: k, Value: v}]}
  - name: launch
    action: aws:runInstances
    inputs: {InstanceType: t2.micro, MinInstanceCount: many}
  - name: stack
    action: aws:createStack
    inputs: {StackName: s, TemplateBody: x, TemplateURL: y}
  - name: command
    action: aws:runCommand
    inputs: {DocumentName: d}
  - name: image
    action: aws:deleteImage
    inputs: {ImageId: ami-1}
    outputs: [{Name: x, Selector: $.Payload, Type: String}]
"#;
    let err = load(&doc(steps)).unwrap_err();
    for want in [
        "unknown input \"Colour\" of aws:changeInstanceState",
        "inputs.InstanceIds: must be a list of strings, not a string",
        "inputs.DesiredState: \"paused\" is not one of running, stopped, terminated",
        "ResourceType Parameter tags one resource only",
        "ImageId is required by aws:runInstances",
        "inputs.MinInstanceCount: must be a whole number, not a string",
        "give TemplateBody or TemplateURL, not both",
        "InstanceIds or Targets is required",
        "aws:deleteImage has no declared outputs",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test]
async fn change_instance_state_stops_then_waits_for_stopped() {
    let rb = load(&doc(
        "  - name: stop\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: [i-1], DesiredState: stopped, Force: true}\n",
    ))
    .unwrap();
    let cloud = Cloud::default()
        .ok("ec2.StopInstances", &[json!({})])
        .ok("ec2.DescribeInstances", &[reservation("i-1", "stopped")]);
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(cloud.ops(), ["ec2.StopInstances", "ec2.DescribeInstances"]);
    assert_eq!(
        cloud.params("ec2.StopInstances", 0),
        json!({"InstanceIds": ["i-1"], "Force": true})
    );
}

#[tokio::test]
async fn running_also_waits_for_the_status_checks_and_check_only_calls_nothing_else() {
    let rb = load(&doc(
        "  - name: start\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: [i-1], DesiredState: running, CheckStateOnly: 'true'}\n",
    ))
    .unwrap();
    let ok = json!({"InstanceStatuses": [{"InstanceId": "i-1",
        "InstanceStatus": {"Status": "ok"}, "SystemStatus": {"Status": "ok"}}]});
    let cloud = Cloud::default()
        .ok("ec2.DescribeInstances", &[reservation("i-1", "running")])
        .ok("ec2.DescribeInstanceStatus", &[ok]);
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(
        cloud.ops(),
        ["ec2.DescribeInstances", "ec2.DescribeInstanceStatus"]
    );
}

#[tokio::test]
async fn a_wait_that_cannot_end_times_out_within_the_step_timeout() {
    let rb = load(&doc(
        "  - name: stop\n    action: aws:changeInstanceState\n    timeoutSeconds: 1\n    inputs: {InstanceIds: [i-1], DesiredState: stopped}\n",
    ))
    .unwrap();
    let cloud = Cloud::default().ok("ec2.DescribeInstances", &[reservation("i-1", "stopping")]);
    let started = std::time::Instant::now();
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = e.steps[0].failure_message.clone().unwrap_or_default();
    assert!(msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn run_instances_outputs_flow_into_the_next_step() {
    let rb = load(&doc(
        "  - name: launch\n    action: aws:runInstances\n    inputs: {ImageId: ami-1, MinInstanceCount: 1, MaxInstanceCount: '1', UserData: ZWNobyBoaQ==}\n  - name: tag\n    action: aws:createTags\n    inputs: {ResourceIds: ['{{ launch.InstanceIds }}'], Tags: [{Key: k, Value: v}]}\n",
    ))
    .unwrap();
    let cloud = Cloud::default()
        .ok(
            "ec2.RunInstances",
            &[json!({"Instances": [{"InstanceId": "i-9", "State": {"Name": "pending"}}]})],
        )
        .ok("ec2.DescribeInstances", &[reservation("i-9", "running")]);
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(output(&e, 0, "InstanceIds"), Some(json!(["i-9"])));
    assert_eq!(output(&e, 0, "InstanceStates"), Some(json!(["running"])));
    assert_eq!(
        cloud.params("ec2.RunInstances", 0),
        json!({"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1, "UserData": "echo hi"})
    );
    assert_eq!(
        cloud.params("ec2.CreateTags", 0),
        json!({"Resources": ["i-9"], "Tags": [{"Key": "k", "Value": "v"}]})
    );
}

#[tokio::test]
async fn create_tags_on_a_parameter_is_ssm_add_tags_to_resource() {
    let rb = load(&doc(
        "  - name: tag\n    action: aws:createTags\n    inputs: {ResourceType: Parameter, ResourceIds: [/app/p], Tags: [{Key: k, Value: v}]}\n",
    ))
    .unwrap();
    let cloud = Cloud::default();
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(
        cloud.params("ssm.AddTagsToResource", 0),
        json!({"ResourceType": "Parameter", "ResourceId": "/app/p", "Tags": [{"Key": "k", "Value": "v"}]})
    );
}

#[tokio::test]
async fn create_image_waits_for_available_and_a_failed_image_fails_the_step() {
    let rb = load(&doc(
        "  - name: image\n    action: aws:createImage\n    inputs: {InstanceId: i-1, ImageName: n, ImageDescription: d}\n",
    ))
    .unwrap();
    let cloud = Cloud::default()
        .ok("ec2.CreateImage", &[json!({"ImageId": "ami-7"})])
        .ok(
            "ec2.DescribeImages",
            &[json!({"Images": [{"ImageId": "ami-7", "State": "available"}]})],
        );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(output(&e, 0, "ImageId"), Some(json!("ami-7")));
    assert_eq!(output(&e, 0, "ImageState"), Some(json!("available")));
    assert_eq!(
        cloud.params("ec2.CreateImage", 0),
        json!({"InstanceId": "i-1", "Name": "n", "Description": "d"})
    );
    let cloud = Cloud::default()
        .ok("ec2.CreateImage", &[json!({"ImageId": "ami-7"})])
        .ok(
            "ec2.DescribeImages",
            &[json!({"Images": [{"ImageId": "ami-7", "State": "failed"}]})],
        );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    assert!(
        e.steps[0]
            .failure_message
            .as_deref()
            .unwrap_or_default()
            .contains("the image is failed")
    );
}

#[tokio::test]
async fn delete_image_deregisters_then_deletes_each_snapshot() {
    let rb = load(&doc(
        "  - name: delete\n    action: aws:deleteImage\n    inputs: {ImageId: ami-1}\n",
    ))
    .unwrap();
    let image = json!({"Images": [{"ImageId": "ami-1", "BlockDeviceMappings": [
        {"Ebs": {"SnapshotId": "snap-1"}}, {"Ebs": {"SnapshotId": "snap-2"}}]}]});
    let cloud = Cloud::default().ok("ec2.DescribeImages", &[image]);
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(
        cloud.ops(),
        [
            "ec2.DescribeImages",
            "ec2.DeregisterImage",
            "ec2.DeleteSnapshot",
            "ec2.DeleteSnapshot"
        ]
    );
    assert_eq!(
        cloud.params("ec2.DeleteSnapshot", 1),
        json!({"SnapshotId": "snap-2"})
    );
}

#[tokio::test]
async fn create_stack_outputs_and_a_rolled_back_stack_fails_with_its_reason() {
    let rb = load(&doc(
        "  - name: stack\n    action: aws:createStack\n    inputs: {StackName: s, TemplateBody: '{}'}\n",
    ))
    .unwrap();
    let cloud = Cloud::default()
        .ok("cloudformation.CreateStack", &[json!({"StackId": "arn:s"})])
        .ok(
            "cloudformation.DescribeStacks",
            &[json!({"Stacks": [{"StackId": "arn:s", "StackStatus": "CREATE_COMPLETE"}]})],
        );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(output(&e, 0, "StackId"), Some(json!("arn:s")));
    assert_eq!(output(&e, 0, "StackStatus"), Some(json!("CREATE_COMPLETE")));
    assert_eq!(
        cloud.params("cloudformation.CreateStack", 0),
        json!({"StackName": "s", "TemplateBody": "{}", "OnFailure": "ROLLBACK"})
    );
    let cloud = Cloud::default()
        .ok("cloudformation.CreateStack", &[json!({"StackId": "arn:s"})])
        .ok(
            "cloudformation.DescribeStacks",
            &[json!({"Stacks": [{"StackStatus": "ROLLBACK_COMPLETE", "StackStatusReason": "bad template"}]})],
        );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    let msg = e.steps[0].failure_message.clone().unwrap_or_default();
    assert!(msg.contains("ROLLBACK_COMPLETE: bad template"), "{msg}");
}

#[tokio::test]
async fn delete_stack_follows_the_stack_id_and_a_missing_stack_is_deleted() {
    let rb = load(&doc(
        "  - name: unstack\n    action: aws:deleteStack\n    inputs: {StackName: s}\n",
    ))
    .unwrap();
    let cloud = Cloud::default().ok(
        "cloudformation.DescribeStacks",
        &[
            json!({"Stacks": [{"StackId": "arn:s", "StackStatus": "CREATE_COMPLETE"}]}),
            json!({"Stacks": [{"StackId": "arn:s", "StackStatus": "DELETE_COMPLETE"}]}),
        ],
    );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(
        cloud.params("cloudformation.DeleteStack", 0),
        json!({"StackName": "arn:s"})
    );
    let cloud = Cloud::default().answer(
        "cloudformation.DescribeStacks",
        vec![failure("ValidationError", "Stack with id s does not exist")],
    );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(cloud.ops(), ["cloudformation.DescribeStacks"]);
}

#[tokio::test]
async fn invoke_lambda_outputs_and_a_missing_function_fails() {
    let rb = load(&doc(
        "  - name: invoke\n    action: aws:invokeLambdaFunction\n    inputs: {FunctionName: f, InputPayload: {a: 1}, Payload: ignored}\n",
    ))
    .unwrap();
    let cloud = Cloud::default().ok(
        "lambda.Invoke",
        &[json!({"StatusCode": 200, "Payload": "{\"ok\": true}"})],
    );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(output(&e, 0, "StatusCode"), Some(json!(200)));
    assert_eq!(output(&e, 0, "Payload"), Some(json!({"ok": true})));
    assert_eq!(
        cloud.params("lambda.Invoke", 0),
        json!({"FunctionName": "f", "Payload": "{\"a\":1}"})
    );
    let cloud = Cloud::default().answer(
        "lambda.Invoke",
        vec![failure(
            "ResourceNotFoundException",
            "Function not found: arn:aws:lambda:us-east-1:123456789012:function:f",
        )],
    );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    assert!(
        e.steps[0]
            .failure_message
            .as_deref()
            .unwrap_or_default()
            .contains("Function not found")
    );
}

#[tokio::test]
async fn run_command_sends_polls_and_reads_the_invocation() {
    let rb = load(&doc(
        "  - name: command\n    action: aws:runCommand\n    inputs: {DocumentName: AWS-RunShellScript, InstanceIds: [i-1], Parameters: {commands: [echo hi]}}\n",
    ))
    .unwrap();
    let cloud = Cloud::default()
        .ok(
            "ssm.SendCommand",
            &[json!({"Command": {"CommandId": "c-1", "InstanceIds": ["i-1"], "Status": "Pending"}})],
        )
        .ok(
            "ssm.ListCommands",
            &[json!({"Commands": [{"CommandId": "c-1", "Status": "Success"}]})],
        )
        .ok(
            "ssm.GetCommandInvocation",
            &[json!({"ResponseCode": 0, "StandardOutputContent": "hi\n", "Status": "Success"})],
        );
    let e = run(&rb, &cloud).await;
    assert_eq!(e.status, StepStatus::Success, "{:?}", e.failure_message);
    assert_eq!(output(&e, 0, "CommandId"), Some(json!("c-1")));
    assert_eq!(output(&e, 0, "Status"), Some(json!("Success")));
    assert_eq!(output(&e, 0, "ResponseCode"), Some(json!(0)));
    assert_eq!(output(&e, 0, "Output"), Some(json!("hi\n")));
    assert_eq!(
        cloud.params("ssm.GetCommandInvocation", 0),
        json!({"CommandId": "c-1", "InstanceId": "i-1"})
    );
}

#[tokio::test]
async fn on_failure_continue_and_is_critical_apply_to_a_failed_call() {
    let y = |extra: &str| {
        doc(&format!(
            "  - name: tag\n    action: aws:createTags\n{extra}    inputs: {{ResourceIds: [i-1], Tags: [{{Key: k, Value: v}}]}}\n  - name: after\n    action: aws:deleteImage\n    inputs: {{ImageId: ami-1}}\n"
        ))
    };
    let bad = || {
        Cloud::default()
            .answer(
                "ec2.CreateTags",
                vec![failure("InvalidID", "The ID 'i-1' is not valid")],
            )
            .ok(
                "ec2.DescribeImages",
                &[json!({"Images": [{"ImageId": "ami-1"}]})],
            )
    };
    // Continue: the next step runs and, not critical by default, the execution succeeds.
    let cloud = bad();
    let e = run(&load(&y("    onFailure: Continue\n")).unwrap(), &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    assert_eq!(e.steps.len(), 2);
    assert_eq!(e.status, StepStatus::Success);
    // Continue but critical: the next step runs, the execution fails.
    let cloud = bad();
    let rb = load(&y("    onFailure: Continue\n    isCritical: true\n")).unwrap();
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps.len(), 2);
    assert_eq!(e.status, StepStatus::Failed);
    // Abort (the default): nothing after it.
    let cloud = bad();
    let e = run(&load(&y("")).unwrap(), &cloud).await;
    assert_eq!(e.steps.len(), 1);
    assert_eq!(e.status, StepStatus::Failed);
    assert!(
        e.failure_message
            .as_deref()
            .unwrap_or_default()
            .contains("is not valid")
    );
}

#[tokio::test]
async fn a_value_known_only_at_run_time_is_checked_then() {
    let rb = load(
        "schemaVersion: '0.3'\nparameters:\n  State: {type: String, default: paused}\nmainSteps:\n  - name: s\n    action: aws:changeInstanceState\n    inputs: {InstanceIds: [i-1], DesiredState: '{{ State }}'}\n",
    )
    .unwrap();
    let cloud = Cloud::default();
    let e = run(&rb, &cloud).await;
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    let msg = e.steps[0].failure_message.clone().unwrap_or_default();
    assert!(msg.contains("\"paused\" is not one of"), "{msg}");
    assert!(cloud.ops().is_empty());
}
