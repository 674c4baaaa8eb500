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

/// A catalog with one Python runtime no source can build here (no registry, no Debian recipe,
/// no CPython 3.5 anywhere scriptbox looks), whose image name no other test uses.
fn catalog_with_unbuildable_runtime() -> std::path::PathBuf {
    let builtin = scriptbox::runtimes::BUILTIN_CATALOG;
    let families = &builtin[..builtin.find("\n[[runtime]]").unwrap()];
    temp_file(
        "runtimes.toml",
        &format!(
            "{families}[[runtime]]\nname = \"python3.5\"\nfamily = \"python\"\nimage = \"scriptbox-test-nosource:python3.5\"\naws_status = \"retired\"\nbuild = {{ PYTHON_VERSION = \"3.5\", BOTO3_VERSION = \"1.23.10\" }}\n"
        ),
    )
}

/// Runs `scriptbox images build` with every place a CPython is looked for pointing at an empty folder.
fn build_without_local_pythons(args: &[&str]) -> Output {
    let empty = std::env::temp_dir().join(format!("scriptbox-empty-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty).unwrap();
    Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(args)
        .env("HOME", &empty)
        .env("PYENV_ROOT", &empty)
        .env("UV_PYTHON_INSTALL_DIR", &empty)
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("run scriptbox")
}

#[tokio::test]
async fn a_runtime_that_cannot_be_built_here_names_every_source_and_why() {
    let Some(_engine) = common::engine().await else {
        return;
    };
    if std::path::Path::new("/usr/local/bin/python3.5").exists() {
        eprintln!("SKIPPED: /usr/local has a CPython 3.5 here");
        return;
    }
    let catalog = catalog_with_unbuildable_runtime();
    let catalog = catalog.to_str().unwrap();
    let out =
        build_without_local_pythons(&["--runtimes-file", catalog, "images", "build", "python3.5"]);
    if out.status.success() {
        eprintln!("SKIPPED: python3.5 built from its Dockerfile: a registry is reachable here");
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("python3.5: cannot build image scriptbox-test-nosource:python3.5 here: every source failed:"),
        "{err}"
    );
    assert!(
        err.contains("1. Dockerfile images/python/Dockerfile: "),
        "{err}"
    );
    assert!(
        err.contains("2. Debian recipe: none: Debian ships no CPython"),
        "{err}"
    );
    assert!(
        err.contains("3. local CPython: no usable CPython 3.5 installation: pyenv ("),
        "{err}"
    );
    for place in [
        "uv (",
        "/usr/local (/usr/local): no bin/python3.5",
        "/opt/python* (/opt)",
    ] {
        assert!(err.contains(place), "{place} not named: {err}");
    }

    // Where unbuildable runtimes are skipped (make test), the same reasons are one SKIPPED line.
    let out = build_without_local_pythons(&[
        "--runtimes-file",
        catalog,
        "images",
        "build",
        "--skip-unbuildable",
        "python3.5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let skipped: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("SKIPPED: "))
        .map(str::to_string)
        .collect();
    assert_eq!(skipped.len(), 1, "{}", stderr(&out));
    assert!(
        skipped[0].contains("python3.5") && skipped[0].contains("3. local CPython"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn python_from_refuses_an_installation_of_another_version() {
    let Some(_engine) = common::engine().await else {
        return;
    };
    let Some(prefix) = std::env::var_os("PYENV_ROOT")
        .map(|r| std::path::PathBuf::from(r).join("versions/3.9.18"))
        .filter(|p| p.join("bin/python3.9").exists())
    else {
        eprintln!("SKIPPED: no pyenv CPython 3.9.18 here to point --python-from at");
        return;
    };
    // Checked before anything is built: the image of python3.5 never exists.
    let catalog = catalog_with_unbuildable_runtime();
    let out = scriptbox(&[
        "--runtimes-file",
        catalog.to_str().unwrap(),
        "images",
        "build",
        "--python-from",
        prefix.to_str().unwrap(),
        "python3.5",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--python-from"), "{err}");
    assert!(err.contains("no bin/python3.5"), "{err}");
    // Without a runtime named, the installation's own version picks it: 3.9 is not in this catalog.
    let out = scriptbox(&[
        "--runtimes-file",
        catalog.to_str().unwrap(),
        "images",
        "build",
        "--python-from",
        prefix.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no bin/pythonX.Y of any runtime"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn runtimes_shows_each_images_exact_cpython_and_its_source() {
    let Some(engine) = common::engine().await else {
        return;
    };
    let out = scriptbox(&["runtimes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let text = String::from_utf8_lossy(&scriptbox(&["runtimes"]).stdout).into_owned();
    assert!(
        text.contains("CPYTHON") && text.contains("SOURCE"),
        "{text}"
    );
    let mut shown = 0;
    for rt in common::python_runtimes(&engine).await {
        let row = rows.iter().find(|r| r["Name"] == rt.name.as_str()).unwrap();
        // The row is the image's own record (docker inspect), never a guess.
        let labels = engine
            .image_labels(&format!("scriptbox-runtime:{}", rt.name))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row["CPythonVersion"].as_str(),
            rt.cpython_version.as_deref(),
            "{row}"
        );
        let version = row["CPythonVersion"].as_str().unwrap_or("-");
        if let Some(label) = labels.get(scriptbox::images::LABEL_CPYTHON_VERSION) {
            assert_eq!(version, label, "{row}");
        }
        if let Some(label) = labels.get(scriptbox::images::LABEL_CPYTHON_SOURCE) {
            assert_eq!(row["CPythonSource"].as_str(), Some(label.as_str()), "{row}");
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{} ", rt.name)))
                .unwrap();
            assert!(
                line.contains(version) && line.contains(label.as_str()),
                "{line}"
            );
            shown += 1;
        }
    }
    if shown == 0 {
        eprintln!("SKIPPED: no Python image here records its CPython source");
    }
}

#[tokio::test]
async fn validate_notes_runtimes_whose_image_is_not_built() {
    let Some(engine) = common::engine().await else {
        return;
    };
    // PowerShell has no source on a machine without a registry (every Python runtime has one).
    let rt = scriptbox::runtimes::Catalog::builtin();
    let rt = rt.resolve("PowerShell 7.0").unwrap();
    if scriptbox::images::image_state(&engine, &rt).await.unwrap()
        == scriptbox::images::ImageState::Current
    {
        eprintln!("SKIPPED: the PowerShell 7.0 image is built here, so there is nothing to note");
        return;
    }
    let doc = temp_file(
        "legacy.yaml",
        "schemaVersion: '0.3'\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: PowerShell 7.0\n      Script: Write-Output 1\n",
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
        err.contains(
            "note: runtime PowerShell 7.0: image scriptbox-runtime:powershell7.0 is missing"
        ),
        "{err}"
    );
    assert!(
        err.contains("scriptbox images build \"PowerShell 7.0\""),
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
    unsafe {
        libc::kill(
            i32::try_from(child.id()).expect("a pid fits in i32"),
            libc::SIGINT,
        )
    };
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
