//! Flow control against the real engine (python3.11 image): aws:loop over iterators and on a
//! condition with executeScript steps inside, aws:updateVariable and top-level `variables`,
//! MaxIterations, onFailure inside a loop. Each script runs in its own container.

mod common;

use scriptbox::execute::Runner;
use scriptbox::result::StepStatus;
use scriptbox::runbook::document::{LoadOptions, load_str};
use scriptbox::runbook::executor::{ExecOptions, Execution, RunEvent, execute};
use scriptbox::runbook::parameters::resolve;
use scriptbox::runbook::yaml::Format;
use scriptbox::runtimes::Catalog;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Loads a YAML runbook and runs it through the real engine; `None` when skipped (said why).
async fn run_yaml(text: &str) -> Option<(Execution, Vec<String>)> {
    let engine = common::engine().await?;
    if !common::require_image(&engine, "python3.11").await {
        return None;
    }
    let settings = common::settings();
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: None,
    };
    let rb = load_str(
        text,
        "flow",
        Format::Yaml,
        std::path::Path::new("."),
        &options,
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let params = resolve(&rb.parameters, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let runner = Runner::new(
        std::sync::Arc::new(engine.clone()),
        None,
        settings.context.clone(),
        settings.output.clone(),
    );
    let exec_options = ExecOptions {
        execution_id: None,
        context: &settings.context,
        catalog: &catalog,
        max_timeout_secs: 600,
        max_run_secs: settings.limits.max_runbook_seconds,
        children: None,
        signals: None,
        depth: 0,
    };
    let mut log = Vec::new();
    let e = execute(
        &rb,
        params,
        &runner,
        &exec_options,
        &mut |ev| {
            if let RunEvent::Log { step, line } = ev {
                log.push(format!("{}: {}", step.name, line.text));
            }
        },
        &CancellationToken::new(),
    )
    .await;
    Some((e, log))
}

fn names(e: &Execution) -> Vec<String> {
    e.steps
        .iter()
        .map(|s| format!("{}:{}", s.name, s.status))
        .collect()
}

/// The payload of the `n`th step execution.
fn payload(e: &Execution, n: usize) -> Value {
    e.steps[n].payload.clone().unwrap_or(Value::Null)
}

const FOR_EACH: &str = r#"schemaVersion: '0.3'
mainSteps:
  - name: each
    action: aws:loop
    inputs:
      Iterators: ['10', '20', '30']
      IteratorDataType: Integer
      Steps:
        - name: work
          action: aws:executeScript
          inputs:
            Runtime: python3.11
            Handler: work
            InputPayload:
              value: '{{ each.CurrentIteratorValue }}'
              n: '{{ each.CurrentIteration }}'
            Script: |-
              def work(events, context):
                  assert isinstance(events['value'], int), events
                  print('iteration', events['n'], 'value', events['value'])
                  return {'sum': events['value'] + events['n']}
          outputs:
            - {Name: Sum, Selector: $.Payload.sum, Type: Integer}
  - name: after
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: after
      InputPayload:
        last: '{{ each.CurrentIteratorValue }}'
        count: '{{ each.CurrentIteration }}'
        sum: '{{ work.Sum }}'
      Script: |-
        def after(events, context):
            return events
outputs: [each.CurrentIteration, work.Sum]
"#;

#[tokio::test]
async fn a_loop_over_iterators_runs_a_script_per_item() {
    let Some((e, log)) = run_yaml(FOR_EACH).await else {
        return;
    };
    assert_eq!(
        names(&e),
        [
            "work:Success",
            "work:Success",
            "work:Success",
            "each:Success",
            "after:Success"
        ],
        "{:?}",
        e.failure_message
    );
    for (k, want) in [11, 22, 33].iter().enumerate() {
        assert_eq!(payload(&e, k), json!({"sum": want}));
    }
    assert!(
        log.contains(&"work: iteration 2 value 20".to_string()),
        "{log:?}"
    );
    assert_eq!(payload(&e, 4), json!({"last": 30, "count": 3, "sum": 33}));
    assert_eq!(e.outputs[0].1, Some(json!(3)));
    assert_eq!(e.outputs[1].1, Some(json!(33)));
    assert_eq!(e.status, StepStatus::Success);
}

/// A do-while loop as AWS's MGN runbook writes it: a script decides whether to retry, a sleep
/// ends the iteration (`isEnd`), here with a variable counting the attempts.
const DO_WHILE: &str = r#"schemaVersion: '0.3'
variables:
  Tries:
    type: Integer
    default: 0
    description: how many checks ran
mainSteps:
  - name: poll
    action: aws:loop
    inputs:
      MaxIterations: MAX
      LoopCondition:
        Variable: '{{ check.shouldRetry }}'
        BooleanEquals: true
      Steps:
        - name: check
          action: aws:executeScript
          inputs:
            Runtime: python3.11
            Handler: check
            InputPayload:
              tries: '{{ variable:Tries }}'
            Script: |-
              def check(events, context):
                  return {'shouldRetry': events['tries'] < 2, 'seen': events['tries']}
          outputs:
            - {Name: shouldRetry, Selector: $.Payload.shouldRetry, Type: Boolean}
          nextStep: count
        - name: count
          action: aws:updateVariable
          inputs:
            Name: variable:Tries
            Value: '{{ poll.CurrentIteration }}'
          nextStep: nap
        - name: nap
          action: aws:sleep
          inputs:
            Duration: PT0.1S
          isEnd: true
  - name: report
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: report
      InputPayload:
        tries: '{{ variable:Tries }}'
        iterations: '{{ poll.CurrentIteration }}'
      Script: |-
        def report(events, context):
            return events
"#;

#[tokio::test]
async fn a_loop_on_a_condition_runs_until_a_script_says_stop() {
    let Some((e, _)) = run_yaml(&DO_WHILE.replace("MAX", "10")).await else {
        return;
    };
    let mut want: Vec<String> = Vec::new();
    for _ in 0..3 {
        want.extend(["check:Success", "count:Success", "nap:Success"].map(String::from));
    }
    want.extend(["poll:Success", "report:Success"].map(String::from));
    assert_eq!(names(&e), want, "{:?}", e.failure_message);
    // The script saw the variable grow: 0, 1, 2; the third check said stop.
    for (k, seen) in [0, 1, 2].iter().enumerate() {
        assert_eq!(payload(&e, 3 * k)["seen"], json!(seen));
    }
    assert_eq!(payload(&e, 10), json!({"tries": 3, "iterations": 3}));
}

#[tokio::test]
async fn max_iterations_ends_a_loop_whose_condition_still_holds() {
    let Some((e, _)) = run_yaml(&DO_WHILE.replace("MAX", "2")).await else {
        return;
    };
    assert_eq!(
        names(&e),
        [
            "check:Success",
            "count:Success",
            "nap:Success",
            "check:Success",
            "count:Success",
            "nap:Success",
            "poll:Success",
            "report:Success"
        ],
        "{:?}",
        e.failure_message
    );
    assert_eq!(payload(&e, 7), json!({"tries": 2, "iterations": 2}));
    assert!(
        e.steps[6].log.iter().any(|l| l
            .text
            .contains("MaxIterations (2) reached while LoopCondition still holds")),
        "{:?}",
        e.steps[6].log
    );
    assert_eq!(e.status, StepStatus::Success);
}

const ON_FAILURE: &str = r#"schemaVersion: '0.3'
mainSteps:
  - name: each
    action: aws:loop
    inputs:
      Iterators: [ok, bad, never]
      Steps:
        - name: work
          action: aws:executeScript
          onFailure: ON_FAILURE
          inputs:
            Runtime: python3.11
            Handler: work
            InputPayload: {item: '{{ each.CurrentIteratorValue }}'}
            Script: |-
              def work(events, context):
                  if events['item'] == 'bad':
                      raise ValueError('bad item')
                  return {'item': events['item']}
  - name: done
    action: aws:sleep
    inputs: {Duration: PT0S}
    isEnd: true
  - name: rescue
    action: aws:sleep
    inputs: {Duration: PT0S}
"#;

#[tokio::test]
async fn on_failure_inside_a_loop_decides_for_the_loop() {
    // step:rescue (a main step): the loop ends Failed there and the execution goes on at it.
    let Some((e, _)) = run_yaml(&ON_FAILURE.replace("ON_FAILURE", "step:rescue")).await else {
        return;
    };
    assert_eq!(
        names(&e),
        [
            "work:Success",
            "work:Failed",
            "each:Failed",
            "rescue:Success"
        ]
    );
    let failure = e.steps[1].failure_message.clone().unwrap_or_default();
    assert!(failure.contains("bad item"), "{failure}");
    let loop_failure = e.steps[2].failure_message.clone().unwrap_or_default();
    assert!(
        loop_failure.starts_with("Step work of the loop ended Failed:"),
        "{loop_failure}"
    );
    assert_eq!(e.status, StepStatus::Failed, "the failed step is critical");
    // Continue: the next iteration runs and the loop succeeds.
    let Some((e, _)) = run_yaml(&ON_FAILURE.replace("ON_FAILURE", "Continue")).await else {
        return;
    };
    assert_eq!(
        names(&e),
        [
            "work:Success",
            "work:Failed",
            "work:Success",
            "each:Success",
            "done:Success"
        ]
    );
    assert_eq!(payload(&e, 2), json!({"item": "never"}));
    assert_eq!(e.status, StepStatus::Success);
}

/// AWS's own MGNRehostAutomation polls with aws:loop (LoopCondition on an inner script's
/// output, a sleep ending each iteration): its loops are read, so what refuses it is only its
/// JSON `Script` (another rule of the issue) and its attachment, which was never published.
#[test]
fn the_mgn_runbooks_loops_are_read() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/runbooks");
    let path = dir
        .join("ceshihao__ssm-public-documents__documents-AWSMigrationHub-MGNRehostAutomation.json");
    if !path.is_file() {
        eprintln!(
            "SKIPPED: the conformance corpus is not beside this clone ({})",
            path.display()
        );
        return;
    }
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: None,
    };
    match scriptbox::runbook::document::load_file(&path, &options) {
        Ok(rb) => {
            let loops = rb
                .steps
                .iter()
                .filter(|s| s.action_kind() == scriptbox::runbook::actions::Action::Loop)
                .count();
            assert_eq!(loops, 5);
        }
        Err(refused) => {
            // Besides JSON's Script: its attachment was never published beside the corpus.
            for p in &refused.problems {
                let known = p.what.as_deref() == Some("Script in a JSON runbook")
                    || p.message.contains("attachment not found");
                assert!(known, "refused for another reason: {p}");
            }
        }
    }
}
