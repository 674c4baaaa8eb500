//! Whole runbooks against the real engine (python3.11 image): typed outputs passed between
//! executeScript steps, an attachment zip verified by sha256, the `run` / `validate` CLI (JSON
//! shape, exit codes), and the conformance corpus in `../shared/conformance/runbooks/`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scriptbox::cli::conformance_verdicts;
use scriptbox::execute::Runner;
use scriptbox::result::StepStatus;
use scriptbox::runbook::document::{LoadOptions, load_file};
use scriptbox::runbook::executor::{ExecOptions, Execution, RunEvent, execute};
use scriptbox::runbook::parameters::{Supplied, resolve};
use scriptbox::runbook::{ProblemKind, output};
use scriptbox::runtimes::Catalog;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")
}

/// The real-runbook corpus beside the clone, or `None` with one SKIPPED line when a fresh clone
/// has nothing beside it. CI has the corpus: `.ci/run` sets `SCRIPTBOX_REQUIRE_CONFORMANCE=1`,
/// which makes its absence a failure.
fn conformance_or_skip() -> Option<PathBuf> {
    let dir = conformance_dir();
    if dir.join("runbooks").is_dir() {
        return Some(dir);
    }
    if std::env::var("SCRIPTBOX_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
        panic!(
            "SCRIPTBOX_REQUIRE_CONFORMANCE=1 but the conformance corpus {} is absent",
            dir.join("runbooks").display()
        );
    }
    eprintln!(
        "SKIPPED: the real-runbook corpus {} is not beside this clone",
        dir.join("runbooks").display()
    );
    None
}

fn scriptbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(args)
        .output()
        .expect("run scriptbox")
}

fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads, resolves and runs a runbook file through the real engine; `None` when skipped.
async fn run_file(path: &Path, params: &[(&str, &str)]) -> Option<(Execution, Vec<String>)> {
    run_file_until(path, params, &CancellationToken::new(), None).await
}

/// As [`run_file`], with a cancellation token.
/// Runs a runbook file until it ends or `cancel` fires; `cancel_at`, a `step: line` of the log,
/// fires it when that line arrives.
async fn run_file_until(
    path: &Path,
    params: &[(&str, &str)],
    cancel: &CancellationToken,
    cancel_at: Option<&str>,
) -> Option<(Execution, Vec<String>)> {
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
    let rb = load_file(path, &options).unwrap_or_else(|e| panic!("{e}"));
    let supplied: Vec<(String, Supplied)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), Supplied::Text(v.to_string())))
        .collect();
    let params = resolve(&rb.parameters, &supplied).unwrap_or_else(|e| panic!("{e:?}"));
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
                let entry = format!("{}: {}", step.name, line.text);
                if cancel_at == Some(entry.as_str()) {
                    cancel.cancel();
                }
                log.push(entry);
            }
        },
        cancel,
    )
    .await;
    Some((e, log))
}

const TYPED_CHAIN: &str = r#"schemaVersion: '0.3'
description: Typed outputs passed between executeScript steps
parameters:
  Greeting:
    type: String
    default: hello
  Count:
    type: Integer
    default: 3
mainSteps:
  - name: produce
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: produce
      InputPayload:
        count: '{{ Count }}'
      Script: |-
        def produce(events, context):
            n = events['count']
            assert isinstance(n, int), type(n)
            print('producing', n, 'for', context['automation:EXECUTION_ID'])
            return {
                'map': {'region': context['global:REGION'], 'n': n},
                'list': ['a%d' % i for i in range(n)],
                'n': n * 2,
                'flag': True,
                'maps': [{'name': 'x', 'size': 1}, {'name': 'y', 'size': 2}],
            }
    outputs:
      - {Name: Map, Selector: $.Payload.map, Type: StringMap}
      - {Name: List, Selector: $.Payload.list, Type: StringList}
      - {Name: N, Selector: $.Payload.n, Type: Integer}
      - {Name: Flag, Selector: $.Payload.flag, Type: Boolean}
      - {Name: Maps, Selector: $.Payload.maps, Type: MapList}
      - {Name: Names, Selector: $.Payload..name, Type: StringList}
      - {Name: First, Selector: '$.Payload.list[0]', Type: String}
  - name: consume
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: consume
      InputPayload:
        map: '{{ produce.Map }}'
        list: '{{produce.List}}'
        n: '{{ produce.N }}'
        flag: '{{ produce.Flag }}'
        maps: '{{ produce.Maps }}'
        text: '{{ Greeting }} n={{ produce.N }} first={{ produce.First }}'
        payload: '{{ produce.Payload }}'
      Script: |-
        def consume(events, context):
            assert isinstance(events['map'], dict), events
            assert isinstance(events['list'], list), events
            assert isinstance(events['n'], int), events
            assert events['flag'] is True, events
            assert isinstance(events['maps'], list) and isinstance(events['maps'][0], dict), events
            return {
                'total': events['n'] + len(events['list']) + sum(m['size'] for m in events['maps']),
                'text': events['text'],
                'region': events['map']['region'],
                'same': events['payload']['n'] == events['n'],
            }
    outputs:
      - {Name: Total, Selector: $.Payload.total, Type: Integer}
      - {Name: Text, Selector: $.Payload.text, Type: String}
      - {Name: Same, Selector: $.Payload.same, Type: Boolean}
  - name: decide
    action: aws:branch
    inputs:
      Choices:
        - NextStep: big
          And:
            - Variable: '{{ consume.Total }}'
              NumericGreater: 10
            - Variable: '{{ consume.Same }}'
              BooleanEquals: true
      Default: small
  - name: small
    action: aws:sleep
    isEnd: true
    inputs:
      Duration: PT0S
  - name: big
    action: aws:sleep
    inputs:
      Duration: PT0.1S
outputs:
  - produce.Map
  - produce.List
  - produce.Maps
  - consume.Total
  - consume.Text
"#;

#[tokio::test]
async fn executescript_steps_pass_typed_outputs_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "typed.yaml", TYPED_CHAIN.as_bytes());
    let Some((e, log)) = run_file(&path, &[("Count", "4")]).await else {
        return;
    };
    let statuses: Vec<String> = e
        .steps
        .iter()
        .map(|s| format!("{}:{}", s.name, s.status))
        .collect();
    assert_eq!(
        statuses,
        [
            "produce:Success",
            "consume:Success",
            "decide:Success",
            "big:Success"
        ],
        "{:#?}",
        e.steps
            .iter()
            .map(|s| &s.failure_message)
            .collect::<Vec<_>>()
    );
    assert_eq!(e.status, StepStatus::Success);
    assert_eq!(log, [format!("produce: producing 4 for {}", e.id)]);
    let produce = &e.steps[0];
    let out: HashMap<&str, &Value> = produce
        .outputs
        .iter()
        .map(|(n, _, v)| (n.as_str(), v))
        .collect();
    assert_eq!(out["Map"], &json!({"region": "us-east-1", "n": 4}));
    assert_eq!(out["List"], &json!(["a0", "a1", "a2", "a3"]));
    assert_eq!(out["N"], &json!(8));
    assert_eq!(out["Flag"], &json!(true));
    assert_eq!(
        out["Maps"],
        &json!([{"name": "x", "size": 1}, {"name": "y", "size": 2}])
    );
    assert_eq!(out["Names"], &json!(["x", "y"]));
    assert_eq!(out["First"], &json!("a0"));
    let consume = &e.steps[1];
    assert_eq!(consume.outputs[0].2, json!(8 + 4 + 3));
    assert_eq!(consume.outputs[1].2, json!("hello n=8 first=a0"));
    assert_eq!(consume.outputs[2].2, json!(true));
    // The AWS-shaped report: lists of strings, maps JSON-encoded.
    let report = output::execution_json(&e);
    assert_eq!(report["AutomationExecutionStatus"], "Success");
    assert_eq!(
        report["Outputs"]["produce.Map"],
        json!(["{\"n\":4,\"region\":\"us-east-1\"}"])
    );
    assert_eq!(
        report["Outputs"]["produce.List"],
        json!(["a0", "a1", "a2", "a3"])
    );
    assert_eq!(
        report["Outputs"]["produce.Maps"],
        json!(["{\"name\":\"x\",\"size\":1}", "{\"name\":\"y\",\"size\":2}"])
    );
    assert_eq!(report["Outputs"]["consume.Total"], json!(["15"]));
    assert_eq!(report["Parameters"]["Count"], json!(["4"]));
    let step = &report["StepExecutions"][1];
    assert_eq!(
        step["Inputs"]["InputPayload"]
            .as_str()
            .map(|s| s.contains("\"text\":\"hello n=8 first=a0\"")),
        Some(true)
    );
    assert_eq!(step["Outputs"]["Total"], json!(["15"]));
    assert_eq!(report["StepExecutions"][2]["NextStep"], "big");
}

#[tokio::test]
async fn a_zip_attachment_is_verified_by_sha256_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut zip_bytes = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let o = zip::write::SimpleFileOptions::default();
        z.start_file("mylib/__init__.py", o).unwrap();
        z.start_file("mylib/util.py", o).unwrap();
        z.write_all(b"def run(events, context):\n    print('from the zip')\n    return {'doubled': events['n'] * 2}\n").unwrap();
        z.finish().unwrap();
    }
    write(dir.path(), "lib.zip", &zip_bytes);
    let doc = format!(
        "schemaVersion: '0.3'\nfiles:\n  lib.zip:\n    checksums:\n      sha256: {}\n    size: {}\nmainSteps:\n  - name: fromZip\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: mylib.util.run\n      Attachment: lib.zip\n      InputPayload: {{n: 21}}\n    outputs:\n      - {{Name: Doubled, Selector: $.Payload.doubled, Type: Integer}}\n  - name: inlineUsesZip\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Attachment: lib.zip\n      InputPayload:\n        n: '{{{{ fromZip.Doubled }}}}'\n      Script: |-\n        from mylib import util\n        def h(events, context):\n            return util.run(events, context)\n    outputs:\n      - {{Name: Again, Selector: $.Payload.doubled, Type: Integer}}\noutputs: [inlineUsesZip.Again]\n",
        sha256(&zip_bytes),
        zip_bytes.len()
    );
    let path = write(dir.path(), "zip.yaml", doc.as_bytes());
    let Some((e, log)) = run_file(&path, &[]).await else {
        return;
    };
    assert_eq!(
        e.status,
        StepStatus::Success,
        "{:?}",
        e.steps
            .iter()
            .map(|s| &s.failure_message)
            .collect::<Vec<_>>()
    );
    assert_eq!(e.outputs[0].1, Some(json!(84)));
    assert_eq!(
        log,
        ["fromZip: from the zip", "inlineUsesZip: from the zip"]
    );
    // The same document with the zip changed is refused before anything runs.
    write(dir.path(), "lib.zip", b"PK\x05\x06 tampered");
    let out = scriptbox(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("files.lib.zip: checksum mismatch"));
}

const CLI_DOC: &str = "schemaVersion: '0.3'\nparameters:\n  Fail:\n    type: Boolean\n    default: false\n  Name:\n    type: String\n    allowedPattern: '^[a-z]+$'\nmainSteps:\n  - name: greet\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      InputPayload: {name: '{{ Name }}', fail: '{{ Fail }}'}\n      Script: |-\n        def h(events, context):\n            print('hi', events['name'])\n            if events['fail']:\n                raise ValueError('asked to fail')\n            return {'greeting': 'hi ' + events['name']}\n    outputs:\n      - {Name: Greeting, Selector: $.Payload.greeting, Type: String}\noutputs: [greet.Greeting]\n";

#[tokio::test]
async fn cli_run_prints_the_get_automation_execution_shape_and_exits_0_1_2() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let doc = write(dir.path(), "greet.yaml", CLI_DOC.as_bytes());
    let doc = doc.to_str().unwrap();

    let ok = scriptbox(&["run", doc, "-p", "Name=world", "--output", "json"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["AutomationExecutionStatus"], "Success");
    assert_eq!(v["DocumentName"], "greet");
    assert_eq!(v["Outputs"]["greet.Greeting"], json!(["hi world"]));
    assert_eq!(
        v["Parameters"],
        json!({"Fail": ["false"], "Name": ["world"]})
    );
    let step = &v["StepExecutions"][0];
    for key in [
        "StepName",
        "Action",
        "StepStatus",
        "ExecutionStartTime",
        "ExecutionEndTime",
        "Inputs",
        "Outputs",
        "OnFailure",
        "MaxAttempts",
        "IsCritical",
        "IsEnd",
    ] {
        assert!(step.get(key).is_some(), "{key} missing in {step}");
    }
    assert_eq!(step["Inputs"]["Runtime"], "\"python3.11\"");
    assert_eq!(step["Outputs"]["Greeting"], json!(["hi world"]));
    assert_eq!(
        step["Outputs"]["OutputPayload"],
        json!(["{\"Payload\":{\"greeting\":\"hi world\"}}"])
    );
    assert_eq!(step["ScriptboxLog"][0]["Text"], "hi world");
    assert!(v["ExecutionStartTime"].as_str().unwrap().ends_with('Z'));

    let failed = scriptbox(&[
        "run",
        doc,
        "-p",
        "Name=world",
        "-p",
        "Fail=true",
        "--output",
        "json",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(v["AutomationExecutionStatus"], "Failed");
    assert!(
        v["FailureMessage"]
            .as_str()
            .unwrap()
            .contains("ValueError - asked to fail"),
        "{v}"
    );
    assert_eq!(v["StepExecutions"][0]["StepStatus"], "Failed");
    assert_eq!(v["Outputs"]["greet.Greeting"], json!([output::NO_OUTPUT]));

    // Text mode: live progress on stderr, status and outputs on stdout.
    let text = scriptbox(&["run", doc, "-p", "Name=world"]);
    assert_eq!(text.status.code(), Some(0));
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(
        err.contains("▶ greet (aws:executeScript)")
            && err.contains("    | hi world")
            && err.contains("✔ Success"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.starts_with("Success (1 step run") && out.contains("greet.Greeting = [\"hi world\"]"),
        "{out}"
    );
}

#[test]
fn cli_invalid_documents_and_parameters_exit_2_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let doc = write(dir.path(), "greet.yaml", CLI_DOC.as_bytes());
    let doc = doc.to_str().unwrap();
    // Parameters: missing required, broken pattern, undeclared, bad Boolean — all listed.
    let out = scriptbox(&[
        "run", doc, "-p", "Fail=yes", "-p", "Nope=1", "--output", "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let texts: Vec<&str> = v["Problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("parameter Nope: is not declared"))
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("parameter Fail: is not a valid Boolean"))
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("parameter Name: is required"))
    );
    let out = scriptbox(&["run", doc, "-p", "Name=World"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the allowedPattern"));
    // validate: 0 for a valid document; 2 listing every problem otherwise.
    let out = scriptbox(&["validate", doc]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid: 1 step, 2 parameters"));
    let bad = CLI_DOC
        .replace("aws:executeScript", "aws:putServerUpgradeMetrics")
        .replace("schemaVersion", "schemaVersion: '0.3'\nextra: 1\nx");
    let bad = write(dir.path(), "bad.yaml", bad.as_bytes());
    let out = scriptbox(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown top-level key \"extra\""), "{err}");
    assert!(
        err.contains(
            "step \"greet\"): action aws:putServerUpgradeMetrics is not supported by scriptbox"
        ),
        "{err}"
    );
    // A parameters file: typed values and AWS's list-of-strings form.
    let params = write(dir.path(), "p.json", br#"{"Name": ["abc"], "Fail": false}"#);
    let out = scriptbox(&[
        "validate",
        doc,
        "--parameters-file",
        params.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a refusal of a conformance document may say: an unsupported feature (named), or one
/// of the document defects these published runbooks really have.
const KNOWN_DEFECTS: [&str; 6] = [
    "attachment not found",
    "is not a SHA-256 (64 hex digits); it looks like a placeholder",
    "is not declared in the document's `files` section",
    "which is not declared in `parameters`",
    "a condition needs exactly one operator",
    "is not a SHA-256",
];

#[test]
fn every_conformance_runbook_validates_or_is_refused_naming_what_is_unsupported() {
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: None,
    };
    let Some(corpus) = conformance_or_skip() else {
        return;
    };
    let verdicts = conformance_verdicts(&corpus.join("runbooks"), &options).unwrap();
    assert!(verdicts.len() >= 50, "{}", verdicts.len());
    let mut valid = Vec::new();
    for v in &verdicts {
        if v.valid {
            valid.push(v.file.clone());
            continue;
        }
        assert!(!v.problems.is_empty(), "{}", v.file);
        for p in &v.problems {
            let ok = match p.kind {
                ProblemKind::Unsupported => {
                    let what = p.what.as_deref().unwrap_or("");
                    !what.is_empty()
                        && p.message.contains(
                            what.trim_end_matches(" build placeholder")
                                .trim_start_matches("%%SCRIPT=...%%"),
                        )
                        || what == "Script in a JSON runbook"
                }
                _ => KNOWN_DEFECTS.iter().any(|k| p.message.contains(k)),
            };
            assert!(ok, "{}: refused for an unexpected reason: {p}", v.file);
        }
    }
    // The tally as it stands; a change here is a change in what scriptbox supports.
    for f in [
        "malekmaciej__ssm-automation-outputs__templates-child-1.yaml",
        "docs.aws.amazon.com__systems-manager-userguide__automation-action-executeScript__example-python3.11.yaml",
        "adhorn__chaos-ssm-documents__automation-deny-traffic-nacl-ssma-nacl-faults.yml",
        "thomasvincent__aws-ssm-automation-scripts__create_and_tag_resources.yaml",
        // Script in a JSON runbook is accepted (with a note), as AWS's own documents use it.
        "ceshihao__ssm-public-documents__documents-AWS-HelloWorld.json",
    ] {
        assert!(
            valid.contains(&f.to_string()),
            "{f} should validate; valid: {valid:?}"
        );
    }
    let refused_for = |file: &str, what: &str| {
        let v = verdicts.iter().find(|v| v.file.contains(file)).unwrap();
        assert!(
            !v.valid && v.reason().contains(what),
            "{file}: {}",
            v.reason()
        );
    };
    refused_for("grolston", "unsupported: !GetAtt");
    refused_for("MGNRehostAutomation", "attachment not found");
    refused_for(
        "EnableCloudTrailEncryption.yaml",
        "%%SCRIPT=...%% build placeholder",
    );
    refused_for(
        "example-attachment-single-file",
        "it looks like a placeholder",
    );
}

/// Runs the conformance runbooks that need no AWS account (INDEX.tsv: uses_boto3 = no,
/// needs_attachment = no), whose actions are all supported and whose runtime image is here.
#[tokio::test]
async fn conformance_runbooks_that_need_no_aws_account_run() {
    let Some(corpus) = conformance_or_skip() else {
        return;
    };
    let index = std::fs::read_to_string(corpus.join("runbooks/INDEX.tsv")).unwrap();
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: None,
    };
    let mut ran = 0;
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, runtimes, boto3, attachment) = (cols[0], cols[5], cols[7], cols[8]);
        // Documents with AWS actions need an endpoint: tests/conformance.rs runs them on moto.
        let other_actions = cols.get(9).copied().unwrap_or("-");
        if boto3 != "no"
            || attachment != "no"
            || !["python3.11", "python3.9"].contains(&runtimes)
            || !["-", "aws:sleep", "aws:branch"].contains(&other_actions)
        {
            continue;
        }
        let path = corpus.join("runbooks").join(file);
        if load_file(&path, &options).is_err() {
            continue; // Refused (an unsupported action): covered by the test above.
        }
        let Some((e, _)) = run_file(&path, &[]).await else {
            return;
        };
        assert_eq!(
            e.status,
            StepStatus::Success,
            "{file}: {:?}",
            e.failure_message
        );
        for (name, v) in &e.outputs {
            assert!(v.is_some(), "{file}: output {name} has no value");
        }
        ran += 1;
    }
    assert!(ran >= 1, "no conformance runbook was executed");
}

/// Cancelling a running runbook kills the step's container (the step and the execution end
/// `Cancelled`) and runs the `onCancel` step, in a real container too.
#[tokio::test]
async fn cancelling_a_runbook_kills_its_step_and_runs_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let doc = write(
        dir.path(),
        "cancel.yaml",
        br#"schemaVersion: '0.3'
mainSteps:
  - name: sleeper
    action: aws:executeScript
    onCancel: step:cleanup
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |-
        import time
        def h(e, c):
            print('sleeping', flush=True)
            time.sleep(120)
  - name: cleanup
    action: aws:executeScript
    isEnd: true
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |-
        def h(e, c):
            return 'cleaned up'
    outputs:
      - Name: Note
        Selector: $.Payload
        Type: String
"#,
    );
    // Cancelled once the sleeper is seen sleeping (a fixed delay raced a loaded engine's start).
    let cancel = CancellationToken::new();
    let began = std::time::Instant::now();
    let Some((e, log)) = run_file_until(&doc, &[], &cancel, Some("sleeper: sleeping")).await else {
        return;
    };
    assert!(
        began.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(e.status.as_str(), "Cancelled", "{e:?}");
    let sleeper = e.steps.iter().find(|s| s.name == "sleeper").unwrap();
    assert_eq!(sleeper.status.as_str(), "Cancelled");
    assert!(log.iter().any(|l| l == "sleeper: sleeping"), "{log:?}");
    let cleanup = e
        .steps
        .iter()
        .find(|s| s.name == "cleanup")
        .expect("onCancel ran");
    assert_eq!(cleanup.status.as_str(), "Success", "{cleanup:?}");
    assert_eq!(cleanup.payload, Some(serde_json::json!("cleaned up")));
    // Neither step's container is left: they carry the step execution ids as labels.
    let engine = common::engine().await.unwrap();
    for step in &e.steps {
        assert!(
            common::containers_of(&engine, &step.step_execution_id)
                .await
                .is_empty(),
            "{} left a container",
            step.name
        );
    }
}
