//! End-to-end tests of one executeScript step against the real Docker engine and the runtime
//! images built here: python3.11 for the detailed checks, and every Python runtime whose image
//! is here (python3.6 ... python3.12) for the `every_python_*` behaviour checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use scriptbox::result::{KillReason, LogStream, StepStatus};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PY: &str = "python3.11";

macro_rules! engine_or_skip {
    ($rt:expr) => {{
        let Some(engine) = engine().await else { return };
        if !require_image(&engine, $rt).await {
            return;
        }
        engine
    }};
}

#[tokio::test]
async fn every_json_type_round_trips_as_the_payload() {
    let engine = engine_or_skip!(PY);
    let cases = [
        (
            "{'a': 1, 'b': [True, None]}",
            json!({"a": 1, "b": [true, null]}),
        ),
        ("[1, 'two', 3.5]", json!([1, "two", 3.5])),
        ("'text'", json!("text")),
        ("42", json!(42)),
        ("-1.25", json!(-1.25)),
        ("True", json!(true)),
        ("False", json!(false)),
        ("None", json!(null)),
        ("{}", json!({})),
        ("'ünïcødé ✓'", json!("ünïcødé ✓")),
    ];
    for (expr, want) in cases {
        let script = format!("def handler(events, context):\n    return {expr}\n");
        let r = run(&engine, &py_step(PY, "handler", &script, json!({}))).await;
        assert_eq!(r.status, StepStatus::Success, "{expr}: {r:?}");
        assert_eq!(r.payload, want, "{expr}");
    }
}

#[tokio::test]
async fn input_payload_keeps_its_types_and_defaults_to_an_empty_map() {
    let engine = engine_or_skip!(PY);
    let script = "def handler(events, context):\n    return {k: type(v).__name__ for k, v in events.items()}\n";
    let payload =
        json!({"s": "x", "i": 3, "f": 1.5, "b": true, "l": [1], "m": {"k": "v"}, "n": null});
    let r = run(&engine, &py_step(PY, "handler", script, payload)).await;
    assert_eq!(
        r.payload,
        json!({"s": "str", "i": "int", "f": "float", "b": "bool", "l": "list", "m": "dict", "n": "NoneType"})
    );
    let mut inputs = py_step(
        PY,
        "handler",
        "def handler(e, c):\n    return e\n",
        json!({}),
    );
    inputs.input_payload = None;
    assert_eq!(run(&engine, &inputs).await.payload, json!({}));
}

#[tokio::test]
async fn context_has_the_documented_keys() {
    let engine = engine_or_skip!(PY);
    let script = "def handler(events, context):\n    return context\n";
    let r = run_with(
        &engine,
        &py_step(PY, "handler", script, json!({})),
        Some("ctx-test-execution".into()),
        &CancellationToken::new(),
    )
    .await;
    let ctx = r.payload.as_object().expect("context is a dict");
    assert_eq!(ctx["automation:EXECUTION_ID"], "ctx-test-execution");
    assert_eq!(ctx["global:ACCOUNT_ID"], "123456789012");
    assert_eq!(ctx["global:REGION"], "us-east-1");
    assert_eq!(ctx["global:AWS_PARTITION"], "aws");
    let date = ctx["global:DATE"].as_str().unwrap();
    assert_eq!(date.len(), 10, "{date}");
    let date_time = ctx["global:DATE_TIME"].as_str().unwrap();
    assert!(
        date_time.starts_with(date) && date_time.len() == 19,
        "{date_time}"
    );
}

#[tokio::test]
async fn an_exception_fails_the_step_with_the_services_message() {
    let engine = engine_or_skip!(PY);
    let script = "import json\n\ndef handler(events, context):\n    return events['x']\n";
    let r = run(&engine, &py_step(PY, "handler", script, json!({}))).await;
    assert_eq!(r.status, StepStatus::Failed);
    let msg = r.failure_message.clone().unwrap();
    assert!(
        msg.starts_with("Step fails when it is Poll action status for completion. Traceback (most recent call last):\n  File \"/tmp/"),
        "{msg}"
    );
    assert!(msg.contains("/customer_script.py\", line 4, in handler\n    return events['x']\n\nKeyError - 'x'. Please refer to Automation Service Troubleshooting Guide for more diagnosis details."), "{msg}");
    let err = r.error.unwrap();
    assert_eq!(err.error_type, "KeyError");
    assert_eq!(err.message, "'x'");
    assert_eq!(err.stack_trace.len(), 1);
    // The task folder is /tmp/<uuid>-<yyyy-mm-dd-HH-MM-SS>/, as real tracebacks show.
    let path = err.stack_trace[0].split('"').nth(1).unwrap().to_string();
    let folder = path
        .trim_start_matches("/tmp/")
        .trim_end_matches("/customer_script.py");
    assert_eq!(folder.len(), 36 + 1 + 19, "{folder}");
}

#[tokio::test]
async fn a_missing_handler_is_reported_from_inside_the_sandbox() {
    let engine = engine_or_skip!(PY);
    let r = run(
        &engine,
        &py_step(PY, "nope", "def handler(e, c):\n    return 1\n", json!({})),
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.error_type, "HandlerNotFound", "{err:?}");
    assert!(err.message.contains("nope"), "{err:?}");
    let r = run(
        &engine,
        &py_step(PY, "h", "def h(e, c) return 1\n", json!({})),
    )
    .await;
    assert_eq!(r.error.unwrap().error_type, "SyntaxError");
}

#[tokio::test]
async fn the_timeout_kills_the_container_and_removes_it_promptly() {
    let engine = engine_or_skip!(PY);
    let mut inputs = py_step(
        PY,
        "handler",
        "import signal, time\n\ndef handler(e, c):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(60)\n",
        json!({}),
    );
    inputs.timeout_seconds = Some(2);
    let id = format!("timeout-{}", uuid::Uuid::new_v4());
    let began = Instant::now();
    let r = run_with(
        &engine,
        &inputs,
        Some(id.clone()),
        &CancellationToken::new(),
    )
    .await;
    let elapsed = began.elapsed();
    assert_eq!(r.status, StepStatus::TimedOut);
    assert_eq!(r.kill_reason, Some(KillReason::Timeout));
    assert!(
        r.failure_message
            .unwrap()
            .starts_with("Step timed out while step is verifying the script execution status."),
    );
    assert!(elapsed < Duration::from_secs(2 + 2), "took {elapsed:?}");
    assert!(
        containers_of(&engine, &id).await.is_empty(),
        "container left behind"
    );
}

#[tokio::test]
async fn prints_go_to_the_log_never_the_payload() {
    let engine = engine_or_skip!(PY);
    let script = "import sys\n\ndef handler(e, c):\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n    return 'payload'\n";
    let r = run(&engine, &py_step(PY, "handler", script, json!({}))).await;
    assert_eq!(r.payload, json!("payload"));
    let has = |stream, text: &str| r.log.iter().any(|l| l.stream == stream && l.text == text);
    assert!(has(LogStream::Stdout, "to stdout"), "{:?}", r.log);
    assert!(has(LogStream::Stderr, "to stderr"), "{:?}", r.log);
}

#[tokio::test]
async fn a_py_attachment_runs_with_file_dot_method() {
    let engine = engine_or_skip!(PY);
    let mut inputs = py_step(PY, "process_instance.process", "", json!({"id": "i-1"}));
    inputs.script = None;
    inputs.attachments = vec![attachment(
        "process_instance.py",
        b"import os\n\ndef process(events, context):\n    return {'id': events['id'], 'cwd_has_me': os.path.exists('process_instance.py')}\n",
    )];
    let r = run(&engine, &inputs).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload, json!({"id": "i-1", "cwd_has_me": true}));
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test]
async fn a_zip_attachments_package_is_importable_from_the_inline_script() {
    let engine = engine_or_skip!(PY);
    let zip = zip_of(&[
        ("library/__init__.py", ""),
        ("library/module.py", "def double(x):\n    return 2 * x\n"),
    ]);
    let mut inputs = py_step(
        PY,
        "handler",
        "from library import module\n\ndef handler(e, c):\n    return module.double(e['n'])\n",
        json!({"n": 21}),
    );
    inputs.attachments = vec![attachment("lib.zip", &zip)];
    let r = run(&engine, &inputs).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload, json!(42));
}

#[tokio::test]
async fn a_long_list_keeps_its_first_hundred_items_and_the_log_says_so() {
    let engine = engine_or_skip!(PY);
    let r = run(
        &engine,
        &py_step(
            PY,
            "h",
            "def h(e, c):\n    return list(range(250))\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.status, StepStatus::Success);
    let items = r.payload.as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[99], json!(99));
    assert!(
        r.log
            .iter()
            .any(|l| l.stream == LogStream::Scriptbox && l.text.contains("250 items")),
        "{:?}",
        r.log
    );
}

#[tokio::test]
async fn a_payload_over_100_kb_fails_with_its_size() {
    let engine = engine_or_skip!(PY);
    let r = run(
        &engine,
        &py_step(
            PY,
            "h",
            "def h(e, c):\n    return 'x' * 200000\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.error_type, "PayloadTooLarge");
    assert!(
        err.message.contains("200002 bytes") && err.message.contains("102400"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_datetime_return_fails_with_the_encoders_message() {
    let engine = engine_or_skip!(PY);
    let r = run(
        &engine,
        &py_step(
            PY,
            "h",
            "import datetime\n\ndef h(e, c):\n    return {'at': datetime.datetime(2020, 1, 1)}\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.error_type, "TypeError");
    assert!(
        err.message.contains("datetime") && err.message.contains("JSON serializable"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn the_container_is_read_only_non_root_and_offline_as_docker_sees_it() {
    let engine = engine_or_skip!(PY);
    let script = r#"
import os, time

def handler(e, c):
    time.sleep(2)
    try:
        open('/probe', 'w')
        root_writable = True
    except OSError:
        root_writable = False
    return {'uid': os.getuid(), 'gid': os.getgid(), 'root_writable': root_writable,
            'interfaces': sorted(os.listdir('/sys/class/net'))}
"#;
    let inputs = py_step(PY, "handler", script, json!({}));
    let (seen, result, id) = common::run_and_inspect(&engine, &inputs, "inspect").await;

    let config = seen.config.unwrap();
    let host = seen.host_config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(host.cap_add.unwrap_or_default().is_empty());
    assert_eq!(host.privileged, Some(false));
    assert!(
        host.security_opt
            .unwrap()
            .contains(&"no-new-privileges:true".to_string())
    );
    assert_eq!(host.memory, host.memory_swap, "no swap");
    assert!(host.memory.unwrap() > 0);
    assert!(host.nano_cpus.unwrap() > 0);
    assert!(host.pids_limit.unwrap() > 0);
    assert_eq!(host.init, Some(true));
    assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
    assert!(host.binds.unwrap_or_default().is_empty());
    assert!(
        seen.mounts
            .unwrap_or_default()
            .iter()
            .all(|m| m.typ.as_ref().map(|t| t.to_string()) != Some("bind".into()))
    );
    let tmpfs = host.tmpfs.unwrap();
    let tmp = &tmpfs["/tmp"];
    assert!(tmp.contains("size=") && tmp.contains("nr_inodes="), "{tmp}");
    let ulimits: Vec<String> = host
        .ulimits
        .unwrap()
        .into_iter()
        .filter_map(|u| u.name)
        .collect();
    for name in ["nofile", "fsize", "core"] {
        assert!(ulimits.contains(&name.to_string()), "{ulimits:?}");
    }
    let labels = config.labels.unwrap();
    for label in [
        "scriptbox.execution",
        "scriptbox.daemon",
        "scriptbox.deadline",
    ] {
        assert!(labels.contains_key(label), "{label}");
    }
    assert_eq!(seen.state.and_then(|s| s.running), Some(true));

    // And from inside, the same facts.
    assert_eq!(result.status, StepStatus::Success, "{result:?}");
    assert_eq!(result.payload["uid"], 10001);
    assert_eq!(result.payload["gid"], 10001);
    assert_eq!(result.payload["root_writable"], false);
    assert_eq!(result.payload["interfaces"], json!(["lo"]));
    assert!(containers_of(&engine, &id).await.is_empty());
}

#[tokio::test]
async fn cancelling_kills_and_removes_the_container() {
    let engine = engine_or_skip!(PY);
    let id = format!("cancel-{}", uuid::Uuid::new_v4());
    let cancel = CancellationToken::new();
    let inputs = py_step(
        PY,
        "h",
        "import time\n\ndef h(e, c):\n    time.sleep(60)\n",
        json!({}),
    );
    let (run_engine, run_id, run_cancel) = (engine.clone(), id.clone(), cancel.clone());
    let task =
        tokio::spawn(
            async move { run_with(&run_engine, &inputs, Some(run_id), &run_cancel).await },
        );
    wait_for_container(&engine, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, StepStatus::Cancelled);
    assert_eq!(r.kill_reason, Some(KillReason::Cancelled));
    assert!(containers_of(&engine, &id).await.is_empty());
}

/// Someone else kills the container through Docker while the step sleeps: the record says it was
/// killed from outside scriptbox (kill reason `External`, the signal from the exit code), not
/// that the script ended by itself; a script that kills its own bootstrap is not "external".
#[tokio::test]
async fn a_container_killed_from_outside_is_recorded_as_an_external_kill() {
    let engine = engine_or_skip!(PY);
    let id = format!("external-{}", uuid::Uuid::new_v4());
    let inputs = py_step(
        PY,
        "h",
        "import time\n\ndef h(e, c):\n    time.sleep(60)\n",
        json!({}),
    );
    let (run_engine, run_id) = (engine.clone(), id.clone());
    let task = tokio::spawn(async move {
        run_with(
            &run_engine,
            &inputs,
            Some(run_id),
            &CancellationToken::new(),
        )
        .await
    });
    let container = wait_for_container(&engine, &id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = engine
            .docker()
            .inspect_container(&container, None)
            .await
            .ok()
            .and_then(|c| c.state);
        if state.and_then(|s| s.running) == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the container never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // As `docker kill` by somebody else would.
    engine
        .docker()
        .kill_container(
            &container,
            Some(
                bollard::query_parameters::KillContainerOptionsBuilder::default()
                    .signal("KILL")
                    .build(),
            ),
        )
        .await
        .expect("docker kill");
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the run ends after the kill")
        .unwrap();
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    assert_eq!(r.kill_reason, Some(KillReason::External), "{r:?}");
    assert_eq!(r.exit_code, Some(137), "{r:?}");
    let message = r.failure_message.clone().unwrap_or_default();
    assert!(
        message.contains("killed from outside scriptbox") && message.contains("signal 9, SIGKILL"),
        "{message}"
    );
    assert_eq!(r.error.as_ref().unwrap().error_type, "KilledExternally");
    assert!(containers_of(&engine, &id).await.is_empty());

    // Killed from inside: no kill went through Docker, so it is not called external.
    let own = run(
        &engine,
        &py_step(
            PY,
            "h",
            "import os, signal\n\ndef h(e, c):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(own.status, StepStatus::Failed, "{own:?}");
    assert_eq!(own.kill_reason, None, "{own:?}");
    assert_eq!(own.exit_code, Some(137), "{own:?}");
    assert!(
        own.failure_message
            .as_deref()
            .unwrap_or_default()
            .contains("killed by signal 9, SIGKILL"),
        "{own:?}"
    );
}

#[tokio::test]
async fn a_memory_bomb_is_an_oom_failure_seen_by_docker() {
    let engine = engine_or_skip!(PY);
    let r = run(
        &engine,
        &py_step(PY, "h", "def h(e, c):\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))\n", json!({})),
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    assert_eq!(r.kill_reason, Some(KillReason::OutOfMemory));
    assert_eq!(r.error.unwrap().error_type, "OutOfMemory");
}

#[tokio::test]
async fn both_offline_runtimes_run_their_own_cpython_with_pinned_boto3() {
    let Some(engine) = engine().await else { return };
    for (runtime, version) in [("python3.9", "3.9"), ("python3.11", "3.11")] {
        if !require_image(&engine, runtime).await {
            continue;
        }
        let script = "import sys, boto3\n\ndef h(e, c):\n    return ['%d.%d' % sys.version_info[:2], boto3.__version__]\n";
        let r = run(&engine, &py_step(runtime, "h", script, json!({}))).await;
        assert_eq!(r.status, StepStatus::Success, "{runtime}: {r:?}");
        assert_eq!(r.payload, json!([version, "1.34.162"]), "{runtime}");
    }
}

#[tokio::test]
async fn powershell_runs_when_its_image_exists() {
    let Some(engine) = engine().await else { return };
    for runtime in ["PowerShell Core 6.0", "PowerShell 7.0"] {
        if !require_image(&engine, runtime).await {
            continue;
        }
        let inputs = scriptbox::step::StepInputs {
            runtime: Some(runtime.into()),
            script: Some(json!(
                "$in = $env:InputPayload | ConvertFrom-Json\nWrite-Host 'hello'\n@{ doubled = 2 * $in.n }"
            )),
            input_payload: Some(json!({"n": 21})),
            ..Default::default()
        };
        let r = run(&engine, &inputs).await;
        assert_eq!(r.status, StepStatus::Success, "{runtime}: {r:?}");
        assert_eq!(r.payload, json!({"doubled": 42}));
        assert!(log_text(&r).contains("hello"));
        let failing = scriptbox::step::StepInputs {
            runtime: Some(runtime.into()),
            script: Some(json!("throw 'boom'")),
            ..Default::default()
        };
        let r = run(&engine, &failing).await;
        assert_eq!(r.status, StepStatus::Failed);
        assert!(r.failure_message.unwrap().contains("boom"));
    }
}

#[tokio::test]
async fn leftovers_of_a_dead_scriptbox_are_swept_by_label() {
    let engine = engine_or_skip!(PY);
    // A container labelled as owned by a process that does not exist (pid 0 start time 1).
    let id = format!("leftover-{}", uuid::Uuid::new_v4());
    let dead_owner = scriptbox::sandbox::OwnerId {
        pid: u32::MAX - 1,
        start_ticks: 1,
        ..scriptbox::sandbox::OwnerId::current()
    };
    let body = bollard::models::ContainerCreateBody {
        image: Some("scriptbox-runtime:python3.11".into()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(
            [
                ("scriptbox.execution".to_string(), id.clone()),
                ("scriptbox.daemon".to_string(), dead_owner.label()),
                ("scriptbox.deadline".to_string(), "99999999999".to_string()),
            ]
            .into(),
        ),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    engine.docker().create_container(None, body).await.unwrap();
    assert_eq!(containers_of(&engine, &id).await.len(), 1);
    let report = engine.sweep_leftovers().await.unwrap();
    assert!(!report.removed.is_empty());
    assert!(containers_of(&engine, &id).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Every Python runtime: the same behaviour checks on each real interpreter whose image is here
// (python3.6 ... python3.12; `make test` builds every one this machine can build).

const AWS_SUFFIX: &str =
    ". Please refer to Automation Service Troubleshooting Guide for more diagnosis details.";

/// The failure message has the service's shape and ends with `Type - message`.
fn assert_aws_failure(runtime: &str, r: &scriptbox::result::StepResult, type_and_message: &str) {
    assert_eq!(r.status, StepStatus::Failed, "{runtime}: {r:?}");
    let msg = r.failure_message.clone().unwrap_or_default();
    assert!(
        msg.starts_with("Step fails when it is Poll action status for completion. Traceback (most recent call last):\n"),
        "{runtime}: {msg}"
    );
    assert!(msg.ends_with(AWS_SUFFIX), "{runtime}: {msg}");
    assert!(
        msg.contains(&format!("\n\n{type_and_message}")),
        "{runtime}: {msg} should contain {type_and_message:?}"
    );
}

#[tokio::test]
async fn every_python_runtime_runs_each_handler_form() {
    let Some(engine) = engine().await else { return };
    for rt in python_runtimes(&engine).await {
        let name = rt.name.as_str();
        // Inline script: the payload round-trips with its types; None is null.
        let r = run(
            &engine,
            &py_step(
                name,
                "handler",
                "def handler(events, context):\n    return {'got': events, 'ctx': sorted(context)[:1]}\n",
                json!({"s": "x", "i": 3, "l": [1, true, null]}),
            ),
        )
        .await;
        assert_eq!(r.status, StepStatus::Success, "{name}: {r:?}");
        assert_eq!(
            r.payload,
            json!({"got": {"s": "x", "i": 3, "l": [1, true, null]}, "ctx": ["automation:EXECUTION_ID"]}),
            "{name}"
        );
        let r = run(
            &engine,
            &py_step(name, "h", "def h(e, c):\n    print('logged')\n", json!({})),
        )
        .await;
        assert_eq!(r.payload, json!(null), "{name}: {r:?}");
        assert!(log_text(&r).contains("logged"), "{name}: {r:?}");

        // A .py attachment, as `file.method` and as a bare `method`.
        for handler in ["process_instance.process", "process"] {
            let mut inputs = py_step(name, handler, "", json!({"id": "i-1"}));
            inputs.script = None;
            inputs.attachments = vec![attachment(
                "process_instance.py",
                b"def process(events, context):\n    return {'id': events['id']}\n",
            )];
            let r = run(&engine, &inputs).await;
            assert_eq!(r.status, StepStatus::Success, "{name} {handler}: {r:?}");
            assert_eq!(r.payload, json!({"id": "i-1"}), "{name} {handler}");
        }

        // A .zip attachment's package, imported from the inline script.
        let zip = zip_of(&[
            ("library/__init__.py", ""),
            ("library/module.py", "def double(x):\n    return 2 * x\n"),
        ]);
        let mut inputs = py_step(
            name,
            "handler",
            "from library import module\n\ndef handler(e, c):\n    return module.double(e['n'])\n",
            json!({"n": 21}),
        );
        inputs.attachments = vec![attachment("lib.zip", &zip)];
        let r = run(&engine, &inputs).await;
        assert_eq!(r.status, StepStatus::Success, "{name}: {r:?}");
        assert_eq!(r.payload, json!(42), "{name}");
    }
}

#[tokio::test]
async fn every_python_runtime_applies_the_payload_rules() {
    let Some(engine) = engine().await else { return };
    for rt in python_runtimes(&engine).await {
        let name = rt.name.as_str();
        let r = run(
            &engine,
            &py_step(
                name,
                "h",
                "def h(e, c):\n    return list(range(250))\n",
                json!({}),
            ),
        )
        .await;
        assert_eq!(r.status, StepStatus::Success, "{name}: {r:?}");
        assert_eq!(r.payload.as_array().map(Vec::len), Some(100), "{name}");
        let r = run(
            &engine,
            &py_step(
                name,
                "h",
                "def h(e, c):\n    return 'x' * 200000\n",
                json!({}),
            ),
        )
        .await;
        assert_eq!(r.status, StepStatus::Failed, "{name}: {r:?}");
        assert_eq!(r.error.unwrap().error_type, "PayloadTooLarge", "{name}");
        let r = run(
            &engine,
            &py_step(
                name,
                "h",
                "import datetime\n\ndef h(e, c):\n    return {'at': datetime.datetime(2020, 1, 1)}\n",
                json!({}),
            ),
        )
        .await;
        assert_eq!(r.status, StepStatus::Failed, "{name}: {r:?}");
        let err = r.error.unwrap();
        assert_eq!(err.error_type, "TypeError", "{name}");
        assert!(err.message.contains("JSON serializable"), "{name}: {err:?}");
    }
}

#[tokio::test]
async fn every_python_runtime_fails_with_the_services_message_and_times_out() {
    let Some(engine) = engine().await else { return };
    let runtimes = python_runtimes(&engine).await;
    for rt in &runtimes {
        let name = rt.name.as_str();
        let script = "import json\n\ndef handler(events, context):\n    return events['x']\n";
        let r = run(&engine, &py_step(name, "handler", script, json!({}))).await;
        assert_aws_failure(name, &r, "KeyError - 'x'");
        let msg = r.failure_message.unwrap();
        assert!(
            msg.contains("/customer_script.py\", line 4, in handler\n    return events['x']\n"),
            "{name}: {msg}"
        );
    }
    // The timeouts run side by side: each must end within its own limit.
    let timeouts = runtimes.iter().map(|rt| {
        let engine = engine.clone();
        let name = rt.name.clone();
        async move {
            let mut inputs = py_step(
                &name,
                "h",
                "import time\n\ndef h(e, c):\n    time.sleep(60)\n",
                json!({}),
            );
            inputs.timeout_seconds = Some(2);
            let id = format!("timeout-{}", uuid::Uuid::new_v4());
            let began = Instant::now();
            let r = run_with(
                &engine,
                &inputs,
                Some(id.clone()),
                &CancellationToken::new(),
            )
            .await;
            (name, r, began.elapsed(), containers_of(&engine, &id).await)
        }
    });
    for (name, r, elapsed, left) in futures::future::join_all(timeouts).await {
        assert_eq!(r.status, StepStatus::TimedOut, "{name}: {r:?}");
        assert_eq!(r.kill_reason, Some(KillReason::Timeout), "{name}");
        // Killed at its deadline, never after the script's 60 s: the bound leaves room for a
        // loaded engine's kill and removal (7 runtimes at once on 2 cores took 10 s once).
        assert!(
            elapsed < Duration::from_secs(30),
            "{name}: took {elapsed:?}"
        );
        assert!(left.is_empty(), "{name}: container left behind");
    }
}

#[tokio::test]
async fn every_python_runtime_is_its_exact_cpython_with_its_pinned_boto3() {
    let Some(engine) = engine().await else { return };
    for rt in python_runtimes(&engine).await {
        let name = rt.name.as_str();
        let script = "import sys, platform, boto3\n\ndef h(e, c):\n    return [platform.python_version(), boto3.__version__, sys.implementation.name]\n";
        let r = run(&engine, &py_step(name, "h", script, json!({}))).await;
        assert_eq!(r.status, StepStatus::Success, "{name}: {r:?}");
        let version = r.payload[0].as_str().unwrap_or("").to_string();
        assert_eq!(r.payload[1], json!(rt.boto3), "{name}: boto3 pin");
        assert_eq!(r.payload[2], json!("cpython"), "{name}");
        assert!(
            version.starts_with(&format!("{}.{}.", rt.minor.0, rt.minor.1)),
            "{name} runs CPython {version}"
        );
        // What the image records of itself (docker inspect) is what runs.
        assert_eq!(
            rt.cpython_version.as_deref(),
            Some(version.as_str()),
            "{name}: the image's label"
        );
        // An image from a local installation runs exactly that installation's version.
        let prefix = engine
            .image_labels(&format!("scriptbox-runtime:{name}"))
            .await
            .unwrap()
            .unwrap_or_default()
            .get(scriptbox::images::LABEL_CPYTHON_PREFIX)
            .cloned();
        if let Some(prefix) = prefix.filter(|p| std::path::Path::new(p).exists()) {
            let host = std::process::Command::new(format!(
                "{prefix}/bin/python{}.{}",
                rt.minor.0, rt.minor.1
            ))
            .args(["-c", "import platform; print(platform.python_version())"])
            .output()
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&host.stdout).trim(),
                version,
                "{name}: the installation at {prefix}"
            );
        }
    }
}

/// What one version has and another lacks, proven on the real interpreters: each failure is the
/// step failure AWS's shape gives for it, and each success is a success.
#[tokio::test]
async fn syntax_and_modules_differ_between_versions_as_on_the_real_interpreters() {
    let Some(engine) = engine().await else { return };
    let runtimes = python_runtimes(&engine).await;
    for rt in &runtimes {
        let name = rt.name.as_str();
        let minor = rt.minor;
        // An assignment expression: 3.8+.
        let walrus = "def h(e, c):\n    if (n := len(e)) >= 0:\n        return n\n";
        let r = run(&engine, &py_step(name, "h", walrus, json!({"a": 1}))).await;
        if minor < (3, 8) {
            assert_aws_failure(name, &r, "SyntaxError - ");
            assert_eq!(r.error.unwrap().error_type, "SyntaxError", "{name}");
        } else {
            assert_eq!(r.payload, json!(1), "{name}: {r:?}");
        }
        // `async` as a name: a keyword from 3.7.
        let async_name = "def h(e, c):\n    async = 1\n    return async\n";
        let r = run(&engine, &py_step(name, "h", async_name, json!({}))).await;
        if minor < (3, 7) {
            assert_eq!(r.payload, json!(1), "{name}: {r:?}");
        } else {
            assert_aws_failure(name, &r, "SyntaxError - ");
        }
        // Modules a later version removed.
        for (module, removed_in) in [("imp", (3, 12)), ("distutils", (3, 12))] {
            let script = format!("def h(e, c):\n    import {module}\n    return '{module}'\n");
            let r = run(&engine, &py_step(name, "h", &script, json!({}))).await;
            if minor < removed_in {
                assert_eq!(r.payload, json!(module), "{name}: {r:?}");
            } else {
                assert_aws_failure(
                    name,
                    &r,
                    &format!("ModuleNotFoundError - No module named '{module}'"),
                );
            }
        }
        let mapping =
            "def h(e, c):\n    from collections import Mapping\n    return Mapping.__name__\n";
        let r = run(&engine, &py_step(name, "h", mapping, json!({}))).await;
        if minor < (3, 10) {
            assert_eq!(r.payload, json!("Mapping"), "{name}: {r:?}");
        } else {
            assert_aws_failure(
                name,
                &r,
                "ImportError - cannot import name 'Mapping' from 'collections'",
            );
        }
    }
}

/// Every Python image, as Docker holds it, is hardened: it runs as 10001:10001 and no file in it
/// has a setuid or setgid bit (read from the image's exported filesystem, not from inside).
#[tokio::test]
async fn every_python_image_is_non_root_without_setuid_files() {
    use futures::StreamExt;
    let Some(engine) = engine().await else { return };
    for rt in python_runtimes(&engine).await {
        let image = format!("scriptbox-runtime:{}", rt.name);
        let inspect = engine.docker().inspect_image(&image).await.unwrap();
        assert_eq!(
            inspect.config.and_then(|c| c.user).as_deref(),
            Some("10001:10001"),
            "{image}"
        );
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.clone()),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = engine.docker().create_container(None, body).await.unwrap();
        let mut stream = engine.docker().export_container(&created.id);
        let mut tarball = Vec::new();
        while let Some(chunk) = stream.next().await {
            tarball.extend_from_slice(&chunk.unwrap());
        }
        let _ = engine
            .docker()
            .remove_container(
                &created.id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let mut archive = tar::Archive::new(std::io::Cursor::new(tarball));
        let mut files = 0;
        let mut setid = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            files += 1;
            if entry.header().mode().unwrap() & 0o6000 != 0 {
                setid.push(entry.path().unwrap().display().to_string());
            }
        }
        assert!(files > 1000, "{image}: {files} files exported");
        assert!(setid.is_empty(), "{image}: setuid/setgid files {setid:?}");
    }
}
