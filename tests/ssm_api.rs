//! The SSM API (`scriptbox serve --ssm-api`) driven by the real AWS clients, installed from PyPI
//! into `target/ssm-venv` on first use: boto3 (`tests/ssm/boto3_flow.py`) and the AWS CLI.
//! Skips (with the reason) without an engine, image or PyPI; fails instead under
//! `SCRIPTBOX_REQUIRE_ENGINE=1`.

mod common;

use common::daemon::Daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use scriptbox::client::{Client, Endpoint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// A daemon with the SSM API on a loopback TCP port. Unless `extra` chooses keys or anonymous
/// access, the key `test`/`test` (the default tenant) is the one key.
fn ssm_daemon(dir: &Path, extra: &[&str]) -> Daemon {
    let keys = dir.join("default-keys");
    std::fs::write(&keys, "test test\n").unwrap();
    let mut args = vec!["--listen", "127.0.0.1:0", "--ssm-api"];
    if !extra
        .iter()
        .any(|a| *a == "--ssm-access-keys-file" || *a == "--ssm-anonymous")
    {
        args.extend(["--ssm-access-keys-file", keys.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    Daemon::start(dir, &args)
}

static VENV: Mutex<()> = Mutex::new(());

fn skip(why: &str) -> Option<PathBuf> {
    if common::required() {
        panic!("SCRIPTBOX_REQUIRE_ENGINE=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// `target/ssm-venv` with boto3 and awscli from PyPI (installed once, then reused).
fn venv() -> Option<PathBuf> {
    let _guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ssm-venv");
    let python = dir.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import boto3, awscli"])
            .output()
            .is_ok_and(|o| o.status.success())
            && dir.join("bin/aws").exists()
    };
    if ready() {
        return Some(dir);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return skip(&format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Err(e) => return skip(&format!("no python3 to make the venv: {e}")),
    }
    let pip = Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "boto3",
            "awscli",
        ])
        .output();
    match pip {
        Ok(o) if o.status.success() && ready() => Some(dir),
        Ok(o) => skip(&format!(
            "pip could not install boto3 and awscli from PyPI: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => skip(&format!("pip did not run: {e}")),
    }
}

/// Engine, image and clients, or skip.
async fn ready() -> Option<PathBuf> {
    let engine = common::engine().await?;
    if !common::require_image(&engine, "python3.11").await {
        return None;
    }
    tokio::task::spawn_blocking(venv).await.unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn aws_env(cmd: &mut Command, key: &str, secret: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
}

/// Runs python code (or a file) in the venv with these credentials.
fn python(venv: &Path, args: &[&str], key: &str, secret: &str) -> Output {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(args);
    aws_env(&mut cmd, key, secret);
    cmd.output().expect("run python")
}

fn aws(venv: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv.join("bin/aws"));
    cmd.arg("ssm").args(args).args([
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
        "--output",
        "json",
    ]);
    aws_env(&mut cmd, "test", "test");
    cmd.output().expect("run aws")
}

fn aws_json(venv: &Path, endpoint: &str, args: &[&str]) -> Value {
    let o = aws(venv, endpoint, args);
    assert!(o.status.success(), "aws ssm {args:?}: {}", show(&o));
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)))
}

#[tokio::test]
async fn boto3_documents_executions_and_errors() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "n4tive-token\n").unwrap();
    // With a token file the native API shares the TCP listener (behind the token); SSM requests
    // need no token.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // Attachments come from the file system only under a root the operator names.
    let d = ssm_daemon(
        dir.path(),
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--ssm-attachment-root",
            files.to_str().unwrap(),
        ],
    );
    std::fs::write(
        files.join("helper.py"),
        "def run(events, context):\n    return {'doubled': int(events['n']) * 2}\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssm/boto3_flow.py");
    let (endpoint, folder) = (d.endpoint().clone(), files.to_str().unwrap().to_string());
    let o = tokio::task::spawn_blocking(move || {
        python(
            &venv,
            &[script.to_str().unwrap(), &endpoint, &folder],
            "test",
            "test",
        )
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("OK"), "{}", show(&o));
    let ids: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("IDS "))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();

    // The same executions as the native API's.
    let native = Client::new(Endpoint::Unix(d.socket.clone()));
    let a = native.get("/v1/executions?MaxResults=100").await.unwrap();
    assert_eq!(a.status, 200);
    let listed: Vec<Value> = a.json()["Executions"].as_array().unwrap().clone();
    for id in &ids {
        let row = listed
            .iter()
            .find(|e| e["Id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in GET /v1/executions: {listed:?}"));
        assert_eq!(row["Kind"], "Runbook");
    }
    let one = native
        .get(&format!("/v1/executions/{}", ids[0]))
        .await
        .unwrap()
        .json();
    assert_eq!(one["Status"], "Success", "{one}");
    assert_eq!(one["DocumentName"], "Greeter");
    // Over TCP too, with the bearer token.
    let tcp = Client::new(Endpoint::Tcp {
        addr: d.endpoint().trim_start_matches("http://").to_string(),
        token: Some("n4tive-token".into()),
    });
    let a = tcp
        .get(&format!("/v1/executions/{}", ids[2]))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["Status"], "Failed");
    let anon = Client::new(Endpoint::Tcp {
        addr: d.endpoint().trim_start_matches("http://").to_string(),
        token: None,
    });
    assert_eq!(anon.get("/v1/executions").await.unwrap().status, 401);
    // Its log is the daemon's log.
    let log = native
        .get(&format!("/v1/executions/{}/log", ids[0]))
        .await
        .unwrap()
        .json();
    let text = log["Lines"].to_string();
    assert!(text.contains("greeting bob"), "{log}");
}

#[tokio::test]
async fn aws_cli_creates_starts_and_reads_outputs() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = ssm_daemon(dir.path(), &[]);
    let doc = dir.path().join("Echo.yaml");
    std::fs::write(
        &doc,
        "schemaVersion: '0.3'\nparameters:\n  Names:\n    type: StringList\n  Greeting:\n    type: String\n    default: hi\noutputs: [Join.Text]\nmainSteps:\n  - name: Join\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: |\n        def h(e, c):\n            return {'text': e['g'] + ' ' + ','.join(e['names'])}\n      InputPayload:\n        names: '{{ Names }}'\n        g: '{{ Greeting }}'\n    outputs:\n      - {Name: Text, Selector: $.Payload.text, Type: String}\n",
    )
    .unwrap();
    let ep = d.endpoint().clone();
    let venv2 = venv.clone();
    let doc_arg = format!("file://{}", doc.display());
    let result = tokio::task::spawn_blocking(move || {
        let created = aws_json(
            &venv,
            &ep,
            &[
                "create-document",
                "--name",
                "Echo",
                "--content",
                &doc_arg,
                "--document-type",
                "Automation",
                "--document-format",
                "YAML",
            ],
        );
        assert_eq!(created["DocumentDescription"]["Status"], "Active");
        // Timestamps travel as epoch seconds (AWS CLI v1 prints the wire value).
        let when = &created["DocumentDescription"]["CreatedDate"];
        assert!(when.as_f64().is_some_and(|t| t > 1.7e9), "{when}");
        let listed = aws_json(&venv, &ep, &["list-documents"]);
        assert_eq!(listed["DocumentIdentifiers"][0]["Name"], "Echo");
        let described = aws_json(&venv, &ep, &["describe-document", "--name", "Echo"]);
        assert_eq!(described["Document"]["DocumentVersion"], "1");
        let started = aws_json(
            &venv,
            &ep,
            &[
                "start-automation-execution",
                "--document-name",
                "Echo",
                "--parameters",
                "Names=ann,bo,Greeting=hey",
            ],
        );
        let id = started["AutomationExecutionId"]
            .as_str()
            .unwrap()
            .to_string();
        let began = Instant::now();
        loop {
            let got = aws_json(
                &venv,
                &ep,
                &["get-automation-execution", "--automation-execution-id", &id],
            );
            let e = &got["AutomationExecution"];
            let status = e["AutomationExecutionStatus"].as_str().unwrap();
            if !["Pending", "InProgress"].contains(&status) {
                break got;
            }
            assert!(began.elapsed() < Duration::from_secs(90), "{got}");
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .unwrap();
    let e = &result["AutomationExecution"];
    assert_eq!(e["AutomationExecutionStatus"], "Success", "{result}");
    assert_eq!(e["Parameters"]["Names"], serde_json::json!(["ann", "bo"]));
    assert_eq!(e["Outputs"]["Join.Text"], serde_json::json!(["hey ann,bo"]));
    assert_eq!(
        e["StepExecutions"][0]["Outputs"]["Text"],
        serde_json::json!(["hey ann,bo"])
    );

    // An error through the CLI: its exit status and the exception name.
    let venv = venv2;
    let ep = d.endpoint().clone();
    let o = tokio::task::spawn_blocking(move || {
        aws(
            &venv,
            &ep,
            &["start-automation-execution", "--document-name", "Nope"],
        )
    })
    .await
    .unwrap();
    // AWS CLI v1 exits 255 on a service error, v2 254.
    assert!(matches!(o.status.code(), Some(254 | 255)), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AutomationDefinitionNotFoundException"),
        "{}",
        show(&o)
    );
}

const SIGNED: &str = r#"
import sys, boto3
from botocore.exceptions import ClientError
ssm = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1")
try:
    print("OK", len(ssm.list_documents()["DocumentIdentifiers"]))
except ClientError as e:
    print("ERR", e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
"#;

#[tokio::test]
async fn access_keys_verify_signatures_and_loopback_rule() {
    let Some(venv) = ready().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# id secret\nAKIDSCRIPTBOX s3cr3t/Key+1\n").unwrap();
    let d = ssm_daemon(
        dir.path(),
        &["--ssm-access-keys-file", keys.to_str().unwrap()],
    );
    let ep = d.endpoint().clone();
    let outs = tokio::task::spawn_blocking(move || {
        [
            ("AKIDSCRIPTBOX", "s3cr3t/Key+1"),
            ("AKIDSCRIPTBOX", "wrong"),
            ("SOMEONEELSE", "s3cr3t/Key+1"),
        ]
        .map(|(k, s)| {
            let o = python(&venv, &["-c", SIGNED, &ep], k, s);
            String::from_utf8_lossy(&o.stdout).trim().to_string() + &show(&o)
        })
    })
    .await
    .unwrap();
    assert!(outs[0].starts_with("OK 0"), "{}", outs[0]);
    assert!(
        outs[1].starts_with("ERR InvalidSignatureException 400"),
        "{}",
        outs[1]
    );
    assert!(
        outs[2].starts_with("ERR UnrecognizedClientException 400"),
        "{}",
        outs[2]
    );
    // The native API on this listener still needs the bearer token (none is configured here:
    // the listener serves only the SSM API).
    let tcp = d.endpoint().trim_start_matches("http://").to_string();
    let anon = Client::new(Endpoint::Tcp {
        addr: tcp,
        token: None,
    });
    assert_eq!(anon.get("/v1/executions").await.unwrap().status, 401);
    drop(d);

    // Without access keys, a non-loopback listener is refused at start.
    let o = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--ssm-api", "--socket"])
        .arg(dir.path().join("y.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("y"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{}",
        show(&o)
    );
    // Issue 10: keys are required; anonymous access is explicit and loopback-only...
    let serve = |extra: &[&str], name: &str| {
        Command::new(BIN)
            .arg("serve")
            .args(extra)
            .arg("--socket")
            .arg(dir.path().join(format!("{name}.sock")))
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .output()
            .unwrap()
    };
    let o = serve(&["--listen", "127.0.0.1:0", "--ssm-api"], "k");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ssm-anonymous"),
        "{}",
        show(&o)
    );
    let o = serve(
        &["--listen", "0.0.0.0:0", "--ssm-api", "--ssm-anonymous"],
        "a",
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{}",
        show(&o)
    );
    // ...and turns file-system attachments off, whatever the roots say.
    let d = ssm_daemon(
        dir.path(),
        &[
            "--ssm-anonymous",
            "--ssm-attachment-root",
            dir.path().to_str().unwrap(),
        ],
    );
    std::fs::write(dir.path().join("lib.py"), "x = 1\n").unwrap();
    let r = call(
        &d.tcp.clone().unwrap(),
        &Signer::new("anyone", "anything"),
        "CreateDocument",
        &json!({"Name": "Loot", "Content": doc_with_lib(&sha_hex(b"x = 1\n")),
                "Attachments": [{"Key": "SourceUrl", "Values": [dir.path().display().to_string()]}]}),
    )
    .await;
    assert_eq!(r.code(), "ValidationException", "{}", r.text);
    assert!(r.text.contains("--ssm-anonymous"), "{}", r.text);
    let r = call(
        &d.tcp.clone().unwrap(),
        &Signer::new("anyone", "anything"),
        "ListDocuments",
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

// ---------------------------------------------------------------------------------------------
// Issue 10: hostile requests against the SSM API, judged from host state.

use common::ssm::{Signer, call, call_with, rss_bytes, timed_health};
use serde_json::json;

/// A document with one attachment `lib.py` declared with `sha` (a step returns its text).
fn doc_with_lib(sha: &str) -> String {
    format!(
        "schemaVersion: '0.3'\nfiles:\n  lib.py:\n    checksums:\n      sha256: '{sha}'\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Attachment: lib.py\n      Script: |\n        def h(e, c):\n            return {{'t': open('lib.py').read()}}\n"
    )
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PLAIN: &str = "schemaVersion: '0.3'\nparameters:\n  Password:\n    type: String\n    default: none\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: |\n        import time\n        def h(e, c):\n            time.sleep(20)\n            return {}\n";

/// The canary never leaves: not read outside the roots, not through a link, not hashed into
/// an error; FIFOs, devices and huge sparse files are refused without a read that blocks or
/// fills memory, and the Unix socket's health check answers within a second throughout.
#[tokio::test]
async fn attachments_are_read_only_under_the_operators_roots() {
    if common::engine().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("att");
    std::fs::create_dir_all(&root).unwrap();
    // The canary: root-only, outside the root.
    let canary_text = format!("CANARY-{}", uuid::Uuid::new_v4());
    let canary = dir.path().join("secret.txt");
    std::fs::write(&canary, &canary_text).unwrap();
    std::fs::set_permissions(&canary, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let canary_sha = sha_hex(canary_text.as_bytes());
    std::fs::write(root.join("lib.py"), "x = 1\n").unwrap();
    std::os::unix::fs::symlink(&canary, root.join("link.py")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", root.join("environ")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let sparse = std::fs::File::create(root.join("sparse.py")).unwrap();
    sparse.set_len(3 << 30).unwrap();
    drop(sparse);
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "AKIDA secretA team-a\n").unwrap();
    let d = ssm_daemon(
        dir.path(),
        &[
            "--ssm-access-keys-file",
            keys.to_str().unwrap(),
            "--ssm-attachment-root",
            root.to_str().unwrap(),
            "--set",
            "server.ssm_attachment_max_bytes=1048576",
        ],
    );
    let addr = d.tcp.clone().unwrap();
    let a = Signer::new("AKIDA", "secretA");
    let rss_before = rss_bytes(d.pid());

    // Health is polled the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (socket, stop) = (d.socket.clone(), stop.clone());
        tokio::spawn(async move {
            let mut worst: f64 = 0.0;
            let mut polls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, secs) = timed_health(&socket).await;
                assert_eq!(status, 200, "health check failed during the attacks");
                worst = worst.max(secs);
                polls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (worst, polls)
        })
    };

    let s3 = |path: String| {
        json!({"Name": "Loot", "Content": doc_with_lib(&"a".repeat(64)),
               "DocumentType": "Automation",
               "Attachments": [{"Key": "S3FileUrl", "Values": [path], "Name": "lib.py"}]})
    };
    let mut answers = Vec::new();
    for path in [
        format!("file://{}", canary.display()),
        "file:///proc/self/environ".to_string(),
        format!("file://{}/link.py", root.display()),
        format!("file://{}/up/secret.txt", root.display()),
        format!("file://{}/../secret.txt", root.display()),
        format!("file://{}/fifo", root.display()),
        format!("file://{}/zero", root.display()),
        format!("file://{}/environ", root.display()),
        format!("file://{}/sparse.py", root.display()),
    ] {
        let began = Instant::now();
        let r = call(&addr, &a, "CreateDocument", &s3(path.clone())).await;
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            began.elapsed()
        );
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.code(), "ValidationException", "{path}: {}", r.text);
        answers.push(r.text);
    }
    for folder in [
        "file:///etc".to_string(),
        "file:///dev".to_string(),
        format!("file://{}", dir.path().display()),
    ] {
        let r = call(
            &addr,
            &a,
            "CreateDocument",
            &json!({"Name": "Loot", "Content": doc_with_lib(&canary_sha),
                    "Attachments": [{"Key": "SourceUrl", "Values": [folder]}]}),
        )
        .await;
        assert_eq!(r.code(), "ValidationException", "{folder}: {}", r.text);
        answers.push(r.text);
    }
    // A file under the root whose declared hash is wrong: the error does not tell the real one.
    let r = call(
        &addr,
        &a,
        "CreateDocument",
        &s3(format!("file://{}/lib.py", root.display())),
    )
    .await;
    assert_eq!(r.code(), "InvalidDocumentContent", "{}", r.text);
    assert!(!r.text.contains(&sha_hex(b"x = 1\n")), "{}", r.text);
    answers.push(r.text);
    // The good file under the root is read.
    let r = call(
        &addr,
        &a,
        "CreateDocument",
        &json!({"Name": "Fine", "Content": doc_with_lib(&sha_hex(b"x = 1\n")),
                "Attachments": [{"Key": "SourceUrl", "Values": [format!("file://{}", root.display())]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for text in &answers {
        assert!(!text.contains(&canary_text), "{text}");
        assert!(!text.contains(&canary_sha), "{text}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, polls) = poller.await.unwrap();
    assert!(polls >= 3, "{polls}");
    assert!(
        worst < 1.0,
        "a health check took {worst} s during the attacks"
    );
    // Memory: the 3 GB file was never read; the daemon grew by less than 64 MiB.
    let grown = rss_bytes(d.pid()).saturating_sub(rss_before);
    assert!(grown < 64 << 20, "the daemon grew by {grown} bytes");
    // Nothing was copied into the daemon's scratch either.
    let scratch_bytes: u64 = walk_size(&d.data_dir);
    assert!(
        scratch_bytes < 64 << 20,
        "data directory holds {scratch_bytes} bytes"
    );
    drop(d);

    // No roots configured (the default): file-system attachments are refused, and the message
    // says how the operator enables them.
    let dir2 = tempfile::tempdir().unwrap();
    let d = ssm_daemon(dir2.path(), &[]);
    let t = Signer::new("test", "test");
    let r = call(
        &d.tcp.clone().unwrap(),
        &t,
        "CreateDocument",
        &json!({"Name": "Loot", "Content": doc_with_lib(&sha_hex(b"x = 1\n")),
                "Attachments": [{"Key": "SourceUrl", "Values": [format!("file://{}", root.display())]}]}),
    )
    .await;
    assert_eq!(r.code(), "ValidationException", "{}", r.text);
    assert!(r.text.contains("--ssm-attachment-root"), "{}", r.text);
}

fn walk_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| walk_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512
    }
}

/// A signature must cover the target and every x-amz-* header, in the daemon's region and
/// service, within AWS's 5 minutes: a signed StartAutomationExecution cannot become a
/// DeleteDocument, and the document is still there afterwards.
#[tokio::test]
async fn signatures_cover_the_target_and_the_daemons_scope() {
    if common::engine().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = ssm_daemon(dir.path(), &[]);
    let addr = d.tcp.clone().unwrap();
    let ok = Signer::new("test", "test");
    let r = call(
        &addr,
        &ok,
        "CreateDocument",
        &json!({"Name": "Keep", "Content": PLAIN}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Signed over host and x-amz-date only, then the target switched.
    let narrow = Signer {
        signed: Some(vec!["host".into(), "x-amz-date".into()]),
        ..ok.clone()
    };
    let r = call_with(
        &addr,
        &narrow,
        "StartAutomationExecution",
        &json!({"Name": "Keep"}),
        |h| {
            for (k, v) in h.iter_mut() {
                if k == "x-amz-target" {
                    *v = "AmazonSSM.DeleteDocument".into();
                }
            }
        },
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "InvalidSignatureException"),
        "{}",
        r.text
    );
    // Any other scope, or a date 6 minutes off.
    for signer in [
        Signer {
            region: "mars-1".into(),
            service: "s3".into(),
            ..ok.clone()
        },
        Signer {
            service: "s3".into(),
            ..ok.clone()
        },
        Signer {
            region: "eu-west-1".into(),
            ..ok.clone()
        },
        Signer {
            clock_offset: -6 * 60,
            ..ok.clone()
        },
        Signer {
            clock_offset: 6 * 60,
            ..ok.clone()
        },
    ] {
        let r = call(&addr, &signer, "DeleteDocument", &json!({"Name": "Keep"})).await;
        assert_eq!(
            r.code(),
            "InvalidSignatureException",
            "{} {} {}: {}",
            signer.region,
            signer.service,
            signer.clock_offset,
            r.text
        );
    }
    // An extra x-amz-* header that is not signed.
    let r = call_with(
        &addr,
        &ok,
        "DeleteDocument",
        &json!({"Name": "Keep"}),
        |h| {
            h.push(("x-amz-security-token".into(), "forged".into()));
        },
    )
    .await;
    assert_eq!(r.code(), "InvalidSignatureException", "{}", r.text);
    // The document is still there, for its owner.
    let r = call(&addr, &ok, "GetDocument", &json!({"Name": "Keep"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Within the window, a correct signature works.
    let r = call(
        &addr,
        &Signer {
            clock_offset: -4 * 60,
            ..ok.clone()
        },
        "ListDocuments",
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Tenants: each access key's tenant sees only its own documents and executions; another
/// tenant's get, list and stop answer as if they did not exist; native submissions (a password
/// given over the root-only socket) are seen by no SSM caller.
#[tokio::test]
async fn tenants_see_and_stop_only_their_own() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        "AKIDA secretA team-a\nAKIDB secretB team-b\nAKIDOLD secretOld\n",
    )
    .unwrap();
    let d = ssm_daemon(
        dir.path(),
        &["--ssm-access-keys-file", keys.to_str().unwrap()],
    );
    let addr = d.tcp.clone().unwrap();
    let a = Signer::new("AKIDA", "secretA");
    let b = Signer::new("AKIDB", "secretB");
    let old = Signer::new("AKIDOLD", "secretOld");
    // The same name in two tenants.
    let doc_b = PLAIN.replace("time.sleep(20)", "time.sleep(0)");
    assert_eq!(
        call(
            &addr,
            &a,
            "CreateDocument",
            &json!({"Name": "Shared", "Content": PLAIN})
        )
        .await
        .status,
        200
    );
    let r = call(
        &addr,
        &b,
        "CreateDocument",
        &json!({"Name": "Shared", "Content": doc_b}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        call(&addr, &a, "GetDocument", &json!({"Name": "Shared"}))
            .await
            .body["Content"],
        PLAIN
    );
    assert_eq!(
        call(&addr, &b, "GetDocument", &json!({"Name": "Shared"}))
            .await
            .body["Content"],
        doc_b.as_str()
    );
    let r = call(&addr, &old, "GetDocument", &json!({"Name": "Shared"})).await;
    assert_eq!(r.code(), "InvalidDocument", "{}", r.text);
    let listed = call(&addr, &old, "ListDocuments", &json!({})).await;
    assert_eq!(
        listed.body["DocumentIdentifiers"],
        json!([]),
        "{}",
        listed.text
    );
    // b cannot delete a's document: its own goes.
    assert_eq!(
        call(&addr, &b, "DeleteDocument", &json!({"Name": "Shared"}))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&addr, &a, "GetDocument", &json!({"Name": "Shared"}))
            .await
            .status,
        200
    );

    // a's execution, with a password.
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let r = call(
        &addr,
        &a,
        "StartAutomationExecution",
        &json!({"DocumentName": "Shared", "Parameters": {"Password": [password]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["AutomationExecutionId"]
        .as_str()
        .unwrap()
        .to_string();
    // A native submission over the root-only socket, with another password.
    let native_pw = format!("native-{}", uuid::Uuid::new_v4());
    let native = d
        .client()
        .post(
            "/v1/executions",
            &json!({"Runbook": {"Document": PLAIN.replace("time.sleep(20)", "time.sleep(0)"), "Parameters": {"Password": native_pw}}}),
        )
        .await
        .unwrap();
    assert_eq!(native.status, 202, "{:?}", native.json());
    let native_id = native.json()["Id"].as_str().unwrap().to_string();

    for other in [&b, &old] {
        let r = call(
            &addr,
            other,
            "GetAutomationExecution",
            &json!({"AutomationExecutionId": id}),
        )
        .await;
        assert_eq!(
            r.code(),
            "AutomationExecutionNotFoundException",
            "{}",
            r.text
        );
        let r = call(
            &addr,
            other,
            "DescribeAutomationStepExecutions",
            &json!({"AutomationExecutionId": id}),
        )
        .await;
        assert_eq!(
            r.code(),
            "AutomationExecutionNotFoundException",
            "{}",
            r.text
        );
        let r = call(
            &addr,
            other,
            "StopAutomationExecution",
            &json!({"AutomationExecutionId": id}),
        )
        .await;
        assert_eq!(
            r.code(),
            "AutomationExecutionNotFoundException",
            "{}",
            r.text
        );
        let r = call(&addr, other, "DescribeAutomationExecutions", &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.body["AutomationExecutionMetadataList"],
            json!([]),
            "{}",
            r.text
        );
        assert!(
            !r.text.contains(&password) && !r.text.contains(&native_pw),
            "{}",
            r.text
        );
    }
    // a sees its own, never the native one.
    let r = call(&addr, &a, "DescribeAutomationExecutions", &json!({})).await;
    let ids: Vec<&str> = r.body["AutomationExecutionMetadataList"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["AutomationExecutionId"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{}", r.text);
    let r = call(
        &addr,
        &a,
        "GetAutomationExecution",
        &json!({"AutomationExecutionId": native_id}),
    )
    .await;
    assert_eq!(
        r.code(),
        "AutomationExecutionNotFoundException",
        "{}",
        r.text
    );
    // The stop attempts by others left it running (judged from the daemon's record).
    let row = d
        .client()
        .get(&format!("/v1/executions/{id}"))
        .await
        .unwrap()
        .json();
    assert!(
        ["Queued", "Running"].contains(&row["Status"].as_str().unwrap()),
        "{row}"
    );
    // Its owner can stop it.
    let r = call(
        &addr,
        &a,
        "StopAutomationExecution",
        &json!({"AutomationExecutionId": id}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text); // (and its container is gone before the daemon is)
    let began = Instant::now();
    loop {
        let row = d
            .client()
            .get(&format!("/v1/executions/{id}"))
            .await
            .unwrap()
            .json();
        if row["Status"] == "Cancelled" {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "{row}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Concurrent document writes while executions run never answer 500 `database is locked`.
#[tokio::test]
async fn concurrent_document_writes_while_executions_run_never_lock() {
    let Some(engine) = common::engine().await else {
        return;
    };
    if !common::require_image(&engine, "python3.11").await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = ssm_daemon(dir.path(), &["--concurrency", "4"]);
    let addr = d.tcp.clone().unwrap();
    let t = Signer::new("test", "test");
    let quick = "schemaVersion: '0.3'\nmainSteps:\n  - name: a\n    action: aws:executeScript\n    inputs: {Runtime: python3.11, Handler: h, Script: \"def h(e, c):\\n    return {'x': 1}\\n\"}\n  - name: b\n    action: aws:executeScript\n    inputs: {Runtime: python3.11, Handler: h, Script: \"def h(e, c):\\n    return {'x': 2}\\n\"}\n";
    assert_eq!(
        call(
            &addr,
            &t,
            "CreateDocument",
            &json!({"Name": "Quick", "Content": quick})
        )
        .await
        .status,
        200
    );
    let mut runs = Vec::new();
    for _ in 0..8 {
        let r = call(
            &addr,
            &t,
            "StartAutomationExecution",
            &json!({"DocumentName": "Quick"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        runs.push(
            r.body["AutomationExecutionId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut writers = Vec::new();
    for w in 0..6 {
        let (addr, t) = (addr.clone(), t.clone());
        writers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..20 {
                let name = format!("Doc-{w}-{}", i % 3);
                let content = format!("{PLAIN}# {w} {i}\n");
                let r = call(
                    &addr,
                    &t,
                    "CreateDocument",
                    &json!({"Name": name, "Content": content}),
                )
                .await;
                let r = if r.code() == "DocumentAlreadyExists" {
                    call(
                        &addr,
                        &t,
                        "UpdateDocument",
                        &json!({"Name": name, "Content": content, "DocumentVersion": "$LATEST"}),
                    )
                    .await
                } else {
                    r
                };
                if r.status >= 500 {
                    failures.push(r.text.clone());
                }
                if i % 5 == 4 {
                    let r = call(&addr, &t, "DeleteDocument", &json!({"Name": name})).await;
                    if r.status >= 500 {
                        failures.push(r.text);
                    }
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for w in writers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} server errors: {:?}",
        failures.len(),
        failures.first()
    );
    // The executions ran meanwhile and ended.
    for id in &runs {
        let began = Instant::now();
        loop {
            let r = call(
                &addr,
                &t,
                "GetAutomationExecution",
                &json!({"AutomationExecutionId": id}),
            )
            .await;
            assert!(r.status < 500, "{}", r.text);
            let s = r.body["AutomationExecution"]["AutomationExecutionStatus"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if s == "Success" {
                break;
            }
            assert!(
                !["Failed", "Cancelled", "TimedOut"].contains(&s.as_str()),
                "{}",
                r.text
            );
            assert!(began.elapsed() < Duration::from_secs(120), "{}", r.text);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
