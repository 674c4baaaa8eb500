//! The `scriptbox` binary: exit codes, JSON output, and input errors that name the field.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn scriptbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(args)
        .output()
        .expect("run scriptbox")
}

/// Runs with an engine address that cannot answer: proves no container was needed.
fn scriptbox_without_engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(args)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run scriptbox")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("scriptbox-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn bad_input_exits_2_naming_the_field_before_any_container_exists() {
    let script = temp_file("s.py", "def h(e, c):\n    return 1\n");
    let script = script.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--runtime",
                "python2.7",
                "--handler",
                "h",
                "--script",
                script,
            ],
            "Runtime: unknown runtime \"python2.7\"",
        ),
        (
            vec!["--runtime", "python3.11", "--script", script],
            "Handler: is required",
        ),
        (
            vec![
                "--runtime",
                "PowerShell 7.0",
                "--handler",
                "h",
                "--script",
                script,
            ],
            "Handler: is not supported for PowerShell",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                script,
                "--timeout",
                "601",
            ],
            "timeoutSeconds: must be between 1 and 600",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                script,
                "--payload",
                "[1]",
            ],
            "InputPayload: must be a map",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                script,
                "--payload",
                "{nope",
            ],
            "--payload: InputPayload is not valid JSON",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                "/nonexistent/x.py",
            ],
            "--script: cannot read /nonexistent/x.py",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                script,
                "--attachment",
                "/nonexistent/a.zip",
            ],
            "--attachment: cannot read",
        ),
        (
            vec![
                "--runtime",
                "python3.11",
                "--handler",
                "h",
                "--script",
                script,
                "--memory",
                "999999",
            ],
            "--memory:",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["invoke"];
        full.extend(args.iter());
        let out = scriptbox_without_engine(&full);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "{full:?}: want {want:?} in {}",
            stderr(&out)
        );
    }
    let gz = temp_file("a.gz", "\u{1f}\u{8b}");
    let ps_py = temp_file("a.py", "x");
    for (runtime, file, want) in [
        ("python3.11", gz.to_str().unwrap(), "gzip is not supported"),
        (
            "PowerShell 7.0",
            ps_py.to_str().unwrap(),
            "PowerShell attachment must be a .zip",
        ),
    ] {
        let out = scriptbox_without_engine(&[
            "invoke",
            "--runtime",
            runtime,
            "--script",
            script,
            "--attachment",
            file,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
}

/// Numbers past what a flag or setting allows are refused as bad input (exit 2, the flag or key
/// and the rule named) before any engine is asked: none may wrap (2^63 MiB of `--memory` once
/// became a negative limit that passed the "only lower" check) or overflow a deadline.
#[test]
fn huge_numeric_flags_and_settings_exit_2_naming_the_flag_and_the_rule() {
    let script = temp_file("s.py", "def h(e, c):\n    return 1\n");
    let script = script.to_str().unwrap();
    let step = [
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--script",
        script,
    ];
    let cases: Vec<(Vec<&str>, Vec<&str>, &str)> = vec![
        (
            vec![],
            vec!["--memory", "9223372036854775808"],
            "--memory: 9223372036854775808 MiB is above the configured limit of 512 MiB",
        ),
        (
            vec![],
            vec!["--memory", "18446744073709551615"],
            "--memory: 18446744073709551615 MiB is above the configured limit",
        ),
        (
            vec![],
            vec!["--memory", "8796093022208"],
            "--memory: 8796093022208 MiB is above the configured limit",
        ),
        (
            vec![],
            vec!["--timeout", "9223372036854775807"],
            "timeoutSeconds: must be between 1 and 600 seconds, got 9223372036854775807",
        ),
        (
            vec![],
            vec!["--timeout=-9223372036854775808"],
            "timeoutSeconds: must be between 1 and 600 seconds, got -9223372036854775808",
        ),
        (
            vec!["--set", "limits.max_timeout_seconds=9223372036854775807"],
            vec!["--timeout", "9223372036854775807"],
            "limits.max_timeout_seconds must be between 1 and 604800 seconds",
        ),
        (
            vec!["--set", "pool.idle_timeout_secs=9223372036854775807"],
            vec![],
            "pool.idle_timeout_secs must be at most 604800 seconds",
        ),
        (
            vec!["--set", "server.concurrency=9223372036854775807"],
            vec![],
            "server.concurrency must be at most 4096",
        ),
    ];
    for (global, flags, want) in cases {
        let mut full = global.clone();
        full.push("invoke");
        full.extend(step.iter());
        full.extend(flags.iter());
        let out = scriptbox_without_engine(&full);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "{full:?}: want {want:?} in {}",
            stderr(&out)
        );
    }
    // The daemon's own flags go through the same rules before it touches the engine.
    let out = scriptbox_without_engine(&[
        "serve",
        "--socket",
        "/nonexistent/scriptbox.sock",
        "--concurrency",
        "18446744073709551615",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.concurrency must be at most 4096"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_engine_is_an_environment_error_with_exit_3() {
    let script = temp_file("s.py", "def h(e, c):\n    return 1\n");
    let out = scriptbox_without_engine(&[
        "invoke",
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--script",
        script.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the Docker engine"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn json_output_and_exit_codes_follow_the_status() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let ok = temp_file(
        "ok.py",
        "def h(e, c):\n    print('logged')\n    return {'n': e['n'] + 1}\n",
    );
    let out = scriptbox(&[
        "invoke",
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--script",
        ok.to_str().unwrap(),
        "--payload",
        "{\"n\": 1}",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["Status"], "Success");
    assert_eq!(v["Payload"], serde_json::json!({"n": 2}));
    assert!(v.get("FailureMessage").is_none());
    assert_eq!(v["Log"][0]["Text"], "logged");
    assert!(v["DurationMs"].as_u64().unwrap() > 0);

    let bad = temp_file("bad.py", "def h(e, c):\n    raise ValueError('nope')\n");
    let out = scriptbox(&[
        "invoke",
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--script",
        bad.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Status"], "Failed");
    assert!(
        v["FailureMessage"]
            .as_str()
            .unwrap()
            .contains("ValueError - nope.")
    );

    // Text output: status and payload on stdout, the log streamed on stderr.
    let out = scriptbox(&[
        "invoke",
        "--runtime",
        "python3.11",
        "--handler",
        "h",
        "--script",
        ok.to_str().unwrap(),
        "--payload",
        "{\"n\": 41}",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Success (python3.11,"), "{text}");
    assert!(text.contains("\"n\": 42"), "{text}");
    assert!(stderr(&out).contains("| logged"), "{}", stderr(&out));
}

#[tokio::test]
async fn runtimes_lists_every_runtime_with_image_state_and_aws_status() {
    let out = scriptbox(&["runtimes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |n: &str| rows.iter().find(|r| r["Name"] == n).cloned().unwrap();
    assert_eq!(find("python3.6")["AwsStatus"], "retired");
    assert_eq!(find("python3.11")["AwsStatus"], "supported");
    assert_eq!(
        find("PowerShell Core 6.0")["Aliases"],
        serde_json::json!(["dotnetcore2.1"])
    );
    for r in &rows {
        assert!(
            ["present", "missing", "stale", "no engine", "unknown"]
                .contains(&r["ImageState"].as_str().unwrap())
        );
    }
    let text = scriptbox(&["runtimes"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("PowerShell 7.0 (dotnetcore3.1)"), "{text}");
}

#[test]
fn the_configuration_doc_shows_the_real_defaults() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let defaults = toml::to_string_pretty(&scriptbox::config::Settings::default()).unwrap();
    assert_eq!(
        &doc[start..end],
        defaults,
        "docs/configuration.md is out of date: paste `scriptbox config`"
    );
    for line in defaults.lines().filter(|l| l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap();
        assert!(
            doc.contains(&format!(".{key}`")),
            "docs/configuration.md does not explain {key}"
        );
    }
}

#[tokio::test]
async fn a_runtime_that_cannot_be_built_here_says_what_is_missing() {
    let Some(_engine) = common::engine().await else {
        return;
    };
    // python3.8 has no offline recipe (Debian ships no CPython 3.8); without a registry its
    // Dockerfile's base cannot be pulled either. Where a registry is reachable it builds: then
    // there is nothing to prove here.
    let out = scriptbox(&["images", "build", "python3.8"]);
    if out.status.success() {
        eprintln!("SKIPPED: python3.8 built from its Dockerfile: a registry is reachable here");
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("python3.8: cannot build image scriptbox-runtime:python3.8"),
        "{err}"
    );
    assert!(err.contains("no offline recipe"), "{err}");
    assert!(
        err.contains("Build it where a registry is reachable"),
        "{err}"
    );
}

#[tokio::test]
async fn validate_notes_runtimes_whose_image_is_not_built() {
    let Some(engine) = common::engine().await else {
        return;
    };
    let rt = scriptbox::runtimes::Catalog::builtin();
    let rt = rt.resolve("python3.8").unwrap();
    if scriptbox::images::image_state(&engine, &rt).await.unwrap()
        == scriptbox::images::ImageState::Current
    {
        eprintln!("SKIPPED: the python3.8 image is built here, so there is nothing to note");
        return;
    }
    let doc = temp_file(
        "legacy.yaml",
        "schemaVersion: '0.3'\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.8\n      Handler: h\n      Script: |-\n        def h(e, c):\n            return 1\n",
    );
    let out = scriptbox(&["validate", doc.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the document itself is valid: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("note: runtime python3.8: image scriptbox-runtime:python3.8 is missing"),
        "{err}"
    );
    assert!(
        err.contains("scriptbox images build \"python3.8\""),
        "{err}"
    );
}

#[tokio::test]
async fn ctrl_c_cancels_the_step_and_removes_its_container_before_exiting() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let script = temp_file(
        "sleep.py",
        "import time\n\ndef h(e, c):\n    time.sleep(300)\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args([
            "invoke",
            "--runtime",
            "python3.11",
            "--handler",
            "h",
            "--output",
            "json",
            "--script",
        ])
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let owner = format!(":{}:", child.id());
    let mut container = None;
    for _ in 0..400 {
        container = engine
            .labelled_containers()
            .await
            .unwrap()
            .into_iter()
            .find_map(|c| {
                let mine = c.labels.as_ref()?.get("scriptbox.daemon")?.contains(&owner);
                if mine { c.id } else { None }
            });
        if container.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let container = container.expect("the invoke's container appeared");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Status"], "Cancelled");
    assert_eq!(v["KillReason"], "Cancelled");
    assert!(
        engine
            .docker()
            .inspect_container(&container, None)
            .await
            .is_err(),
        "the container outlived Ctrl-C"
    );
}
