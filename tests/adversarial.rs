//! The adversarial suite: hostile scripts run through the real engine, each outcome proven from
//! Docker (inspect, container list) and host state (processes, mounts, files, scriptbox's own
//! memory) — never only from what the script prints.
//!
//! Every test carries `Threat:` and `Defence:` lines; `scripts/security_table.py` reads them,
//! re-runs this suite under runc and runsc, and prints the table of SECURITY.md.
//! Set `SCRIPTBOX_TEST_RUNTIME=runsc` to run the suite under gVisor.

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use scriptbox::protocol::{BootstrapLimits, Entry, PROTOCOL_VERSION, RequestHeader};
use scriptbox::result::{KillReason, LogStream, StepResult, StepStatus};
use scriptbox::runtimes::Catalog;
use scriptbox::sandbox::{ContainerJob, Engine, Flow, OutputObserver, OutputStream};
use scriptbox::step;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PY: &str = "python3.11";

/// True when the suite runs under gVisor (`SCRIPTBOX_TEST_RUNTIME=runsc`), where some defences
/// differ: guest processes are gVisor tasks, bounded by memory and the deadline rather than by
/// a host pids cgroup, and tmpfs caps give way to the memory limit.
fn under_gvisor() -> bool {
    settings().sandbox.container_runtime == "runsc"
}
const UID: u32 = 10001;

macro_rules! engine_or_skip {
    () => {{
        let Some(engine) = engine().await else { return };
        if !require_image(&engine, PY).await {
            return;
        }
        engine
    }};
}

/// Host processes running as the sandbox's uid inside one container's cgroup (runc shows
/// container processes on the host; tests run in parallel, so attribute by cgroup).
fn host_sandbox_processes(container_id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        let in_container = std::fs::read_to_string(entry.path().join("cgroup"))
            .map(|c| c.contains(container_id))
            .unwrap_or(false);
        if uid == Some(UID) && in_container {
            pids.push(pid);
        }
    }
    pids
}

/// Host processes whose command line names a container (runc shims, runsc sandboxes).
fn host_processes_mentioning(container_id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(container_id)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The host's mount table, to prove nothing inside a container changed it. The root
/// filesystems of containers that other tests start and stop meanwhile are left out.
fn host_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|m| !m.contains("/var/lib/docker/overlay2/") && !m.contains("/run/docker/"))
        .collect()
}

/// Free bytes of the filesystem holding Docker's data (where a broken sandbox would write).
fn docker_disk_free() -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1", "/var/lib/docker"])
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// After every hostile run: container gone, no process of it left on the host, engine serving.
async fn assert_clean_after(engine: &Engine, execution_id: &str, result: &StepResult) {
    // Removal is part of the run, so the container must already be gone.
    assert!(
        containers_of(engine, execution_id).await.is_empty(),
        "container left behind"
    );
    let container = result
        .container_id
        .clone()
        .expect("the result names its container");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut left = host_sandbox_processes(&container);
        left.extend(host_processes_mentioning(&container));
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox processes outlived the run: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = run(
        engine,
        &py_step(
            PY,
            "h",
            "def h(e, c):\n    return 'still serving'\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(
        next.status,
        StepStatus::Success,
        "the next normal execution: {next:?}"
    );
}

async fn hostile(engine: &Engine, script: &str, timeout: i64) -> (String, StepResult) {
    let mut inputs = py_step(PY, "h", script, json!({}));
    inputs.timeout_seconds = Some(timeout);
    let id = format!("adv-{}", uuid::Uuid::new_v4());
    let r = run_with(engine, &inputs, Some(id.clone()), &CancellationToken::new()).await;
    (id, r)
}

/// Threat: fork bomb exhausting the host's process table.
/// Defence: runc: PidsLimit (container-wide, not a per-uid ulimit); runsc: gVisor tasks, bounded by the memory limit; both: deadline SIGKILL, removal.
#[tokio::test]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let engine = engine_or_skip!();
    let script = r#"
import os, time

def h(e, c):
    while True:
        try:
            if os.fork() == 0:
                while True:
                    time.sleep(100)
        except OSError:
            time.sleep(0.001)
"#;
    let mut inputs = py_step(PY, "h", script, json!({}));
    inputs.timeout_seconds = Some(4);
    let id = format!("adv-{}", uuid::Uuid::new_v4());
    let (e2, id2) = (engine.clone(), id.clone());
    let task =
        tokio::spawn(
            async move { run_with(&e2, &inputs, Some(id2), &CancellationToken::new()).await },
        );
    let container = wait_for_container(&engine, &id).await;
    let mut most = 0;
    while !task.is_finished() {
        most = most.max(host_sandbox_processes(&container).len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = task.await.unwrap();
    if under_gvisor() {
        // gVisor: the fork bomb is gVisor's problem, bounded by the memory limit or the deadline.
        assert!(
            r.status == StepStatus::TimedOut || r.kill_reason == Some(KillReason::OutOfMemory),
            "{r:?}"
        );
    } else {
        assert_eq!(r.status, StepStatus::TimedOut, "{r:?}");
    }
    let limit = usize::try_from(engine.config().effective_pids_limit())
        .expect("a pids limit fits in usize");
    assert!(
        most <= limit,
        "{most} sandbox processes on the host, limit {limit}"
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: memory bomb driving the host into swap or its OOM killer.
/// Defence: Memory = MemorySwap (no swap), the kernel OOM-kills inside the cgroup; Docker's OOMKilled.
#[tokio::test]
async fn memory_bomb_is_oom_killed_inside_its_cgroup() {
    let engine = engine_or_skip!();
    let (id, r) = hostile(
        &engine,
        "def h(e, c):\n    hog = []\n    while True:\n        hog.append(bytearray(32 * 1024 * 1024))\n",
        30,
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed);
    assert_eq!(r.kill_reason, Some(KillReason::OutOfMemory), "{r:?}");
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: filling /tmp, writing to /, one huge file, a million tiny files: exhausting host disk or inodes.
/// Defence: read-only rootfs; /tmp a tmpfs with size= and nr_inodes= caps (runsc: the memory limit) counted against memory; fsize ulimit.
#[tokio::test]
async fn disk_fills_stay_inside_capped_tmpfs() {
    let engine = engine_or_skip!();
    let free_before = docker_disk_free();
    let script = r#"
import os, errno

def fill(path, chunk):
    try:
        with open(path, 'wb') as f:
            while True:
                f.write(chunk)
                f.flush()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def h(e, c):
    out = {}
    try:
        open('/evil', 'w')
        out['root'] = 'written'
    except OSError as e:
        out['root'] = errno.errorcode.get(e.errno)
    out['tmp'] = fill('/tmp/big', b'x' * (1 << 20))
    os.remove('/tmp/big')
    n = 0
    try:
        while n < 1000000:
            open('/tmp/f%d' % n, 'w').close()
            n += 1
        out['files'] = 'all'
    except OSError as e:
        out['files'] = errno.errorcode.get(e.errno)
    out['count'] = n
    return out
"#;
    let (id, r) = hostile(&engine, script, 60).await;
    if under_gvisor()
        && matches!(
            r.kill_reason,
            Some(KillReason::OutOfMemory | KillReason::Timeout)
        )
    {
        // gVisor's tmpfs lives in the sentry's memory and ignores nr_inodes: the memory limit
        // stops the million files instead, or on a slow ptrace platform the step's timeout
        // comes first. Either way the host disk proof below still applies.
        assert!(docker_disk_free() + 64 * 1024 * 1024 > free_before);
        assert_clean_after(&engine, &id, &r).await;
        return;
    }
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload["root"], "EROFS");
    // The fsize ulimit equals the tmpfs size, so either cap may stop the writer first.
    assert!(
        ["ENOSPC", "EFBIG"].contains(&r.payload["tmp"].as_str().unwrap_or("")),
        "{r:?}"
    );
    assert_eq!(r.payload["files"], "ENOSPC");
    assert!(r.payload["count"].as_u64().unwrap() < engine.config().tmpfs_inodes);
    let free_after = docker_disk_free();
    assert!(
        free_after + 64 * 1024 * 1024 > free_before,
        "host disk shrank by {} bytes",
        free_before.saturating_sub(free_after)
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: one file larger than the fsize ulimit (SIGXFSZ) ending the bootstrap without a result.
/// Defence: fsize ulimit; the host reports the exit code from Docker, not from the script.
#[tokio::test]
async fn a_file_past_the_fsize_ulimit_ends_the_process() {
    let engine = engine_or_skip!();
    let script = r#"
import signal

def h(e, c):
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    with open('/tmp/huge', 'wb') as f:
        f.seek(200 * 1024 * 1024)
        f.write(b'x')
"#;
    let (id, r) = hostile(&engine, script, 30).await;
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    let err = r.error.clone().unwrap();
    // Python turns EFBIG into an exception when SIGXFSZ is ignored; with the default action the
    // process dies and Docker reports the exit code. Either way the write did not happen.
    assert!(
        err.error_type == "ScriptExited" || err.message.contains("File too large"),
        "{err:?}"
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: stdout / stderr floods (with and without newlines) exhausting scriptbox's memory.
/// Defence: per-stream log cap and total output cap; past them the container is killed; output always drained.
#[tokio::test]
async fn output_floods_are_capped_and_the_container_killed() {
    let engine = engine_or_skip!();
    let floods = [
        "import sys\n\ndef h(e, c):\n    while True:\n        sys.stdout.write('x' * 65536 + '\\n')\n",
        "import sys\n\ndef h(e, c):\n    while True:\n        sys.stdout.write('y' * 65536)\n",
        "import os\n\ndef h(e, c):\n    while True:\n        os.write(2, b'z' * 65536)\n",
        "import os\n\ndef h(e, c):\n    while True:\n        os.write(2, b'\\n' * 65536)\n",
        "import os\n\ndef h(e, c):\n    while True:\n        os.write(1, b'\\n' * 65536)\n",
    ];
    for script in floods {
        let (id, r) = hostile(&engine, script, 60).await;
        assert_eq!(r.status, StepStatus::Failed, "{script}");
        assert_eq!(r.kill_reason, Some(KillReason::OutputLimit), "{script}");
        assert!(r.log_truncated);
        let kept: usize = r.log.iter().map(|l| l.text.len() + 1).sum();
        assert!(
            kept <= 2 * 1024 * 1024 + 16 * 1024,
            "kept {kept} bytes of log"
        );
        let lines_cap = scriptbox::execute::OutputLimits::default().log_lines_per_stream;
        assert!(
            r.log.len() <= 2 * lines_cap + 1,
            "kept {} log lines",
            r.log.len()
        );
        assert_clean_after(&engine, &id, &r).await;
    }
}

/// Threat: an output flood growing the scriptbox process itself without bound.
/// Defence: streaming decode; only capped log kept; measured as the CLI process's peak RSS.
#[tokio::test]
async fn scriptbox_memory_stays_bounded_under_a_flood() {
    let engine = engine_or_skip!();
    drop(engine);
    let dir = std::env::temp_dir().join(format!("adv-rss-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("flood.py");
    std::fs::write(
        &script,
        "import os\n\ndef h(e, c):\n    while True:\n        os.write(1, b'ab\\n' * 30000)\n",
    )
    .unwrap();
    // stdout to a file: a pipe nobody reads while we sample would block the process.
    let result_file = dir.join("result.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args([
            "invoke",
            "--runtime",
            PY,
            "--handler",
            "h",
            "--output",
            "json",
            "--script",
        ])
        .arg(&script)
        .stdout(std::fs::File::create(&result_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&result_file).unwrap()).unwrap();
    assert_eq!(v["KillReason"], "OutputLimit");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(peak_kb > 0, "could not sample the process");
    assert!(
        peak_kb < 120 * 1024,
        "scriptbox peaked at {peak_kb} KiB during a flood"
    );
}

/// Build a zip with Python's zipfile, which (unlike the zip crate) writes hostile entries as asked.
fn python_zip(body: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", &format!("import io, zipfile, sys, stat\nbuf = io.BytesIO()\nz = zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED)\n{body}\nz.close()\nsys.stdout.buffer.write(buf.getvalue())\n")])
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 builds the zip");
    assert!(out.status.success());
    out.stdout
}

/// Threat: zip slip and hostile zip entries writing outside the task folder or planting links, devices, setuid files.
/// Defence: zips are expanded inside the sandbox only, member by member: relative names, no `..`, regular files and folders only, fixed modes, no duplicates, name-length caps.
#[tokio::test]
async fn hostile_zip_entries_are_refused_inside_the_sandbox() {
    let engine = engine_or_skip!();
    let cases = [
        ("dotdot", "z.writestr('../escape.py', 'x')"),
        ("absolute", "z.writestr('/tmp/abs.py', 'x')"),
        (
            "symlink",
            "i = zipfile.ZipInfo('link')\ni.external_attr = (stat.S_IFLNK | 0o777) << 16\nz.writestr(i, '/etc/passwd')",
        ),
        (
            "device",
            "i = zipfile.ZipInfo('dev')\ni.external_attr = (stat.S_IFCHR | 0o666) << 16\nz.writestr(i, '')",
        ),
        (
            "duplicate",
            "import warnings\nwarnings.simplefilter('ignore')\nz.writestr('a.py', '1')\nz.writestr('a.py', '2')",
        ),
        ("long name", "z.writestr('n' * 300 + '.py', 'x')"),
        (
            "overwrite the script",
            "z.writestr('customer_script.py', 'def h(e, c):\\n    return \"hijacked\"\\n')",
        ),
        ("backslash", "z.writestr('..\\\\evil.py', 'x')"),
    ];
    for (what, body) in cases {
        let mut inputs = py_step(PY, "h", "def h(e, c):\n    return 'ran'\n", json!({}));
        inputs.attachments = vec![attachment("evil.zip", &python_zip(body))];
        let id = format!("adv-{}", uuid::Uuid::new_v4());
        let r = run_with(
            &engine,
            &inputs,
            Some(id.clone()),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(r.status, StepStatus::Failed, "{what}: {r:?}");
        let err = r.error.clone().unwrap();
        assert_eq!(err.error_type, "AttachmentError", "{what}: {err:?}");
        assert!(err.message.contains("evil.zip"), "{what}: {}", err.message);
        assert!(containers_of(&engine, &id).await.is_empty());
    }
    // Setuid and exec bits in a zip are never applied.
    let zip = python_zip(
        "i = zipfile.ZipInfo('tool.py')\ni.external_attr = (stat.S_IFREG | 0o6755) << 16\nz.writestr(i, 'X = 1')",
    );
    let mut inputs = py_step(
        PY,
        "h",
        "import os, stat\n\ndef h(e, c):\n    return oct(stat.S_IMODE(os.stat('tool.py').st_mode))\n",
        json!({}),
    );
    inputs.attachments = vec![attachment("bits.zip", &zip)];
    let r = run(&engine, &inputs).await;
    assert_eq!(r.payload, json!("0o644"), "{r:?}");
}

/// Threat: zip bomb and deeply nested zips exhausting memory or disk while expanding.
/// Defence: bytes actually written are counted against unzip_bytes (not the zip's own headers); nested zips are never expanded.
#[tokio::test]
async fn zip_bombs_stop_at_the_unzip_limit_and_nested_zips_stay_files() {
    let engine = engine_or_skip!();
    let limit = scriptbox::execute::OutputLimits::default().unzip_bytes;
    let bomb = python_zip(&format!(
        "w = z.open('zeros.bin', 'w', force_zip64=True)\nchunk = bytes(1 << 20)\nfor _ in range({}):\n    w.write(chunk)\nw.close()",
        limit / (1 << 20) * 2
    ));
    assert!(
        bomb.len() < 1 << 20,
        "the bomb compresses well: {}",
        bomb.len()
    );
    let mut inputs = py_step(PY, "h", "def h(e, c):\n    return 'ran'\n", json!({}));
    inputs.attachments = vec![attachment("bomb.zip", &bomb)];
    let r = run(&engine, &inputs).await;
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    assert_eq!(r.error.clone().unwrap().error_type, "AttachmentError");

    // A zip inside a zip inside a zip: written as a file, never expanded.
    let nested = python_zip(
        "inner = io.BytesIO()\nzi = zipfile.ZipFile(inner, 'w')\nzi.writestr('deep.txt', 'deep')\nzi.close()\nfor _ in range(20):\n    b = io.BytesIO()\n    zz = zipfile.ZipFile(b, 'w')\n    zz.writestr('inner.zip', inner.getvalue())\n    zz.close()\n    inner = b\nz.writestr('inner.zip', inner.getvalue())",
    );
    let mut inputs = py_step(
        PY,
        "h",
        "import os\n\ndef h(e, c):\n    return sorted(f for f in os.listdir('.') if not f.startswith('customer'))\n",
        json!({}),
    );
    inputs.attachments = vec![attachment("nested.zip", &nested)];
    let r = run(&engine, &inputs).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload, json!(["inner.zip", "nested.zip"]));
}

struct Frames(Vec<u8>);

impl OutputObserver for Frames {
    fn on_output(&mut self, stream: OutputStream, bytes: &[u8]) -> Flow {
        if stream == OutputStream::Stdout {
            self.0.extend_from_slice(bytes);
        }
        Flow::Continue
    }
}

/// Threat: a request archive with links, devices, setuid bits, `..` or absolute names (tar slip).
/// Defence: the host builds the tar itself from plain names; the bootstrap re-checks every member (no tarfile.extractall).
#[tokio::test]
async fn hostile_request_archives_are_refused_by_the_bootstrap() {
    let engine = engine_or_skip!();
    let catalog = Catalog::builtin();
    let rt = catalog.resolve(PY).unwrap();
    type Member = fn(&mut tar::Builder<Vec<u8>>);
    let cases: [(&str, Member); 7] = [
        ("symlink", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "customer_script.py", "/etc/passwd")
                .unwrap();
        }),
        ("hardlink", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "customer_script.py", "/etc/passwd")
                .unwrap();
        }),
        ("device", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, "customer_script.py", &[][..])
                .unwrap();
        }),
        ("dotdot", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            // tar::Builder refuses `..` itself; write the name into the header by hand.
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        }),
        ("absolute", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"/tmp/x.txt");
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        }),
        ("setuid", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o4755);
            b.append_data(&mut h, "customer_script.py", &b"x"[..])
                .unwrap();
        }),
        ("duplicate", |b| {
            for _ in 0..2 {
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(0o644);
                b.append_data(&mut h, "customer_script.py", &b"x"[..])
                    .unwrap();
            }
        }),
    ];
    for (what, add) in cases {
        let mut builder = tar::Builder::new(Vec::new());
        add(&mut builder);
        let archive = builder.into_inner().unwrap();
        let header = RequestHeader {
            v: PROTOCOL_VERSION,
            task_dir: format!("/tmp/{}-2026-01-01-00-00-00", uuid::Uuid::new_v4()),
            language: "python",
            entry: Some(Entry {
                module: "customer_script".into(),
                function: "h".into(),
            }),
            payload: Default::default(),
            context: Default::default(),
            zips: vec![],
            limits: BootstrapLimits {
                unzip_bytes: 1 << 20,
                unzip_entries: 10,
                payload_items: 100,
            },
            archive_bytes: u64::try_from(archive.len()).expect("an archive length fits in u64"),
            aws: None,
        };
        let mut stdin = serde_json::to_vec(&header).unwrap();
        stdin.push(b'\n');
        stdin.extend_from_slice(&archive);
        let job = ContainerJob {
            execution_id: format!("adv-tar-{}", uuid::Uuid::new_v4()),
            image: rt.runtime.image.clone(),
            runtime: PY.into(),
            command: rt.family.command.clone(),
            env: vec![],
            stdin,
            timeout: Duration::from_secs(20),
            memory_bytes: None,
            egress_dir: None,
        };
        let mut frames = Frames(Vec::new());
        let outcome = engine
            .run(job, &mut frames, &CancellationToken::new())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&frames.0);
        // The result frame is the last thing on stdout; its error type is the bootstrap's verdict.
        let refused = text.contains("\"ProtocolError\"") || text.contains("\"AttachmentError\"");
        let setuid_neutralised =
            what == "setuid" && !text.contains("\"ok\": true") && !text.contains("\"ok\":true");
        assert!(
            refused || setuid_neutralised,
            "{what}: exit {:?}, stdout {text}",
            outcome.exit_code
        );
        assert!(outcome.kill_reason.is_none(), "{what}");
    }
}

/// Threat: huge or deeply nested JSON in the request or the result exhausting scriptbox.
/// Defence: InputPayload size and depth caps checked before any container; result frame size cap; serde_json's recursion limit; the bootstrap reports RecursionError.
#[tokio::test]
async fn huge_and_deep_json_is_refused_or_fails_cleanly() {
    let engine = engine_or_skip!();
    let catalog = Catalog::builtin();
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    for payload in [
        json!({"deep": deep}),
        json!({"huge": "x".repeat(2 * 1024 * 1024)}),
    ] {
        let inputs = py_step(PY, "h", "def h(e, c):\n    return 1\n", payload);
        let err = step::validate(&inputs, &catalog, 600).unwrap_err();
        assert_eq!(err.problems[0].field, "InputPayload", "{err}");
    }
    let (id, r) = hostile(
        &engine,
        "def h(e, c):\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n",
        30,
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    assert_eq!(r.error.clone().unwrap().error_type, "RecursionError");
    assert_clean_after(&engine, &id, &r).await;
    // Deep but encodable by Python: serde's recursion limit refuses it on the host, cleanly.
    let (_, r) = hostile(
        &engine,
        "def h(e, c):\n    x = []\n    for _ in range(500):\n        x = [x]\n    return x\n",
        30,
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed, "{r:?}");
    let (_, r) = hostile(
        &engine,
        "def h(e, c):\n    return ['x' * 1000] * 20000\n",
        30,
    )
    .await;
    assert_eq!(r.status, StepStatus::Success, "100 items kept: {r:?}");
    let (_, r) = hostile(
        &engine,
        "def h(e, c):\n    return 'x' * (50 * 1024 * 1024)\n",
        30,
    )
    .await;
    assert_eq!(r.status, StepStatus::Failed);
    assert_eq!(r.error.clone().unwrap().error_type, "PayloadTooLarge");
}

/// Threat: non-UTF-8 and NUL bytes in output crashing the host's decoder.
/// Defence: output is bytes; invalid UTF-8 is replaced, NUL kept as a character; never a panic.
#[tokio::test]
async fn non_utf8_and_nul_output_is_logged_lossily() {
    let engine = engine_or_skip!();
    let script = "import os, sys\n\ndef h(e, c):\n    sys.stdout.buffer.write(b'\\xff\\xfe\\x00ok\\n')\n    sys.stdout.flush()\n    os.write(2, b'\\xc3\\x28 \\x00 bad\\n')\n    return 'done'\n";
    let (id, r) = hostile(&engine, script, 30).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert!(
        r.log
            .iter()
            .any(|l| l.stream == LogStream::Stdout && l.text == "\u{fffd}\u{fffd}\u{0}ok"),
        "{:?}",
        r.log
    );
    assert!(
        r.log
            .iter()
            .any(|l| l.stream == LogStream::Stderr && l.text.contains("\u{0} bad")),
        "{:?}",
        r.log
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: a script that traps SIGTERM and sleeps past its timeout.
/// Defence: SIGKILL at the deadline (no grace), measured by the host's clock.
#[tokio::test]
async fn sigterm_trapping_sleeper_is_killed_at_the_deadline() {
    let engine = engine_or_skip!();
    let script = "import signal, time\n\ndef h(e, c):\n    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n        signal.signal(s, signal.SIG_IGN)\n    while True:\n        time.sleep(1)\n";
    let began = Instant::now();
    let (id, r) = hostile(&engine, script, 2).await;
    assert_eq!(r.status, StepStatus::TimedOut);
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: background children (nohup, setsid, double fork) outliving the run.
/// Defence: the container's PID namespace ends with its init; the container is removed; no host process remains.
#[tokio::test]
async fn background_children_do_not_outlive_the_run() {
    let engine = engine_or_skip!();
    let script = r#"
import os, subprocess, time

def h(e, c):
    subprocess.Popen(['nohup', 'sleep', '1000'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.Popen(['setsid', 'sleep', '1001'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1002)
        os._exit(0)
    time.sleep(0.2)
    return 'spawned'
"#;
    let (id, r) = hostile(&engine, script, 30).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_clean_after(&engine, &id, &r).await;
}

/// The handler of the forged-result tests: a child it forks writes a forged result frame on every
/// descriptor it inherited (the bootstrap's real stdout among them) and on the container's
/// stdout through `/proc/1/fd/1`, shortly after the handler returned, plus a late log line; before
/// the return it writes a log line of its own, which must not be lost.
const FORGES_A_LATE_RESULT: &str = r#"
import os, struct, time

def frame(kind, body):
    return kind + struct.pack(">I", len(body)) + body

def h(e, c):
    forged = frame(b"R", b'{"ok":true,"payload":"forged"}') + frame(b"O", b"late line\n")
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
        os.write(1, b"child line before the return\n")
        os.write(ready_w, b"x")
        time.sleep(0.1)
        targets = list(range(64))
        try:
            targets.append(os.open("/proc/1/fd/1", os.O_WRONLY))
        except OSError:
            pass
        for fd in targets:
            try:
                os.write(fd, forged)
            except OSError:
                pass
        time.sleep(5)
        os._exit(0)
    os.read(ready_r, 1)
    print("before the return")
    return "genuine"
"#;

/// What the host must have recorded for [`FORGES_A_LATE_RESULT`].
fn assert_the_genuine_result(r: &StepResult) {
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload, json!("genuine"), "the forged result won: {r:?}");
    let lines: Vec<&str> = r.log.iter().map(|l| l.text.as_str()).collect();
    // Every line written before the return arrived (the child's too), none after it.
    assert_eq!(
        lines,
        vec!["child line before the return", "before the return"],
        "{r:?}"
    );
}

/// Threat: a child the handler forked writes a forged result frame after the handler returned (it inherits the bootstrap's real stdout, and /proc/1/fd/1 reaches the container's stdout).
/// Defence: the bootstrap SIGKILLs every other process of the sandbox before it writes its result; the host takes the first R frame and ignores every frame after it, cold and warm.
#[tokio::test]
async fn a_late_forged_result_never_wins() {
    let engine = engine_or_skip!();
    let (id, r) = hostile(&engine, FORGES_A_LATE_RESULT, 30).await;
    assert_the_genuine_result(&r);
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_clean_after(&engine, &id, &r).await;

    // Warm: a pooled run returns at the result frame, so the first frame must be the genuine one.
    let s = settings();
    let pool = scriptbox::pool::WarmPool::new(
        engine.clone(),
        scriptbox::pool::PoolConfig {
            size: 1,
            ..Default::default()
        },
        &s.context,
        Duration::from_secs(600),
    );
    let step = step::validate(
        &py_step(PY, "h", FORGES_A_LATE_RESULT, json!({})),
        &Catalog::builtin(),
        600,
    )
    .expect("valid step");
    let run_pooled = || async {
        let options = scriptbox::execute::ExecuteOptions {
            execution_id: None,
            memory_bytes: None,
            context: &s.context,
            limits: &s.output,
            on_log: None,
            automation_execution_id: None,
            aws: None,
        };
        let (r, removal) = scriptbox::execute::execute_step_pooled(
            &engine,
            Some(&pool),
            &step,
            options,
            &CancellationToken::new(),
        )
        .await
        .expect("the engine runs the step");
        removal.finish().await.expect("removal");
        r
    };
    // The first use of a runtime runs cold and fills the pool.
    assert_the_genuine_result(&run_pooled().await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.ready_count() == 0 {
        assert!(Instant::now() < deadline, "the pool never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warm = run_pooled().await;
    assert_the_genuine_result(&warm);
    // Returned at its result frame, before Docker's exit facts: the warm path.
    assert_eq!(warm.exit_code, None, "{warm:?}");
    pool.shutdown(Duration::from_secs(30)).await;
}

/// Threat: reading scriptbox's environment or host files (a canary secret must never show).
/// Defence: the container's environment is built from an allowlist; no mounts; the script searches everything it can read.
#[tokio::test]
async fn host_secrets_never_reach_the_sandbox() {
    let engine = engine_or_skip!();
    drop(engine);
    let secret = format!("canary-{}", uuid::Uuid::new_v4());
    let dir = std::env::temp_dir().join(format!("adv-canary-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), &secret).unwrap();
    let script = dir.join("hunt.py");
    std::fs::write(
        &script,
        r#"
import os

def h(e, c):
    hits = []
    print('ENV', dict(os.environ))
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                print('PROC', pid, open('/proc/%s/environ' % pid, 'rb').read())
            except OSError:
                pass
    for root, dirs, files in os.walk('/'):
        if root.startswith(('/proc', '/sys')):
            dirs[:] = []
            continue
        for f in files:
            p = os.path.join(root, f)
            try:
                if os.path.isfile(p) and os.path.getsize(p) < 4096:
                    data = open(p, 'rb').read()
                    if b'canary-' in data:
                        hits.append(p)
                        print('FOUND', p, data)
            except OSError:
                pass
    return {'hits': hits, 'env': dict(os.environ)}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args([
            "invoke",
            "--runtime",
            PY,
            "--handler",
            "h",
            "--timeout",
            "120",
            "--output",
            "json",
            "--script",
        ])
        .arg(&script)
        .env("SCRIPTBOX_CANARY_SECRET", &secret)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "the canary leaked"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = v["Payload"]["env"].as_object().unwrap();
    let names: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    for name in &names {
        assert!(
            [
                "HOME",
                "LANG",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "PATH",
                "PYTHONPATH",
                "PYTHONDONTWRITEBYTECODE",
                "PYTHONUNBUFFERED",
                "HOSTNAME",
                "PWD"
            ]
            .contains(name),
            "unexpected variable {name} in the sandbox"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Threat: network access: reaching the host's loopback services, the daemon's port, or anything else.
/// Defence: NetworkMode none: only a loopback interface of the container's own; probes go only to 127.0.0.1.
#[tokio::test]
async fn the_network_is_only_the_containers_own_loopback() {
    let engine = engine_or_skip!();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let (tcp_port, udp_port) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    // A real scriptbox daemon on the host: its Unix socket and its TCP port must be out of reach.
    let daemon_dir = tempfile::tempdir().unwrap();
    let token = daemon_dir.path().join("token");
    std::fs::write(&token, "secret-token-for-the-network-test").unwrap();
    let token_arg = token.display().to_string();
    let mut daemon = common::daemon::Daemon::start(
        daemon_dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--set",
            "pool.size=0",
            "--token-file",
            &token_arg,
        ],
    );
    let daemon_port: u16 = daemon
        .tcp
        .as_deref()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the daemon's TCP port");
    let socket = daemon.socket.clone();
    let socket_path = socket.display().to_string();
    let script = format!(
        r#"
import os, socket

def h(e, c):
    out = {{'interfaces': sorted(os.listdir('/sys/class/net'))}}
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(('127.0.0.1', {tcp_port}))
        out['tcp'] = 'connected'
    except OSError as e:
        out['tcp'] = type(e).__name__
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b'hello-from-the-sandbox', ('127.0.0.1', {udp_port}))
        out['udp'] = 'sent'
    except OSError as e:
        out['udp'] = type(e).__name__
    out['routes'] = open('/proc/net/route').read().strip().splitlines()[1:]
    d = socket.socket()
    d.settimeout(2)
    try:
        d.connect(('127.0.0.1', {daemon_port}))
        out['daemon_tcp'] = 'connected'
    except OSError as e:
        out['daemon_tcp'] = type(e).__name__
    out['daemon_socket_visible'] = os.path.exists({socket_path:?})
    return out
"#
    );
    let (id, r) = hostile(&engine, &script, 30).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload["interfaces"], json!(["lo"]));
    assert_ne!(
        r.payload["daemon_tcp"], "connected",
        "the daemon's TCP port was reachable"
    );
    assert_eq!(
        r.payload["daemon_socket_visible"], false,
        "the daemon's socket was visible"
    );
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "the daemon stopped cleanly after the probes"
    );
    assert_ne!(r.payload["tcp"], "connected");
    assert_eq!(
        r.payload["routes"],
        json!([]),
        "no route out of the container"
    );
    // Proof from the host side: nothing arrived on either port.
    assert!(tcp.accept().is_err(), "a TCP connection reached the host");
    let mut buf = [0u8; 64];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a UDP datagram reached the host"
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: finding and using the Docker socket (root on the host).
/// Defence: no mounts at all; the socket is never inside the sandbox.
#[tokio::test]
async fn no_docker_socket_inside() {
    let engine = engine_or_skip!();
    let script = r#"
import os, stat, time

def h(e, c):
    # Held open so that the host inspects a live container even when a loaded engine is slow
    # to list it.
    time.sleep(5)
    sockets = []
    for root, dirs, files in os.walk('/'):
        if root.startswith(('/proc', '/sys')):
            dirs[:] = []
            continue
        for f in files + dirs:
            p = os.path.join(root, f)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    sockets.append(p)
            except OSError:
                pass
    return sockets
"#;
    let inputs = py_step(PY, "h", script, json!({}));
    let (seen, r, id) = common::run_and_inspect(&engine, &inputs, "adv").await;
    let mounts = seen.mounts.unwrap_or_default();
    assert!(mounts.is_empty(), "mounts: {mounts:?}");
    assert!(
        seen.host_config
            .unwrap()
            .binds
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        r.payload,
        json!([]),
        "sockets found inside: {:?}",
        r.payload
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: privilege escalation through setuid binaries, `unshare`, `mount`.
/// Defence: no setuid files in the image, CapDrop ALL, no-new-privileges, default seccomp (runsc: namespaces are gVisor's own); host mount table unchanged.
#[tokio::test]
async fn no_privilege_escalation_and_no_host_mount_changes() {
    let engine = engine_or_skip!();
    let before = host_mounts();
    let script = r#"
import os, stat, subprocess

def h(e, c):
    setuid = []
    for root, dirs, files in os.walk('/'):
        if root.startswith(('/proc', '/sys', '/tmp')):
            dirs[:] = []
            continue
        for f in files:
            p = os.path.join(root, f)
            try:
                m = os.lstat(p).st_mode
                if stat.S_ISREG(m) and m & (stat.S_ISUID | stat.S_ISGID):
                    setuid.append(p)
            except OSError:
                pass
    def attempt(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode
        except OSError as e:
            return type(e).__name__
    caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs'))]
    return {'setuid': setuid,
            'unshare': attempt(['unshare', '-r', 'true']),
            'unshare_mount': attempt(['unshare', '-m', 'true']),
            'mount': attempt(['mount', '-t', 'tmpfs', 'none', '/mnt']),
            'caps': caps}
"#;
    let (id, r) = hostile(&engine, script, 60).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(r.payload["setuid"], json!([]), "setuid files in the image");
    if !under_gvisor() {
        // Under gVisor a user namespace inside the sandbox is gVisor's own and grants nothing on
        // the host: the proof there is the unchanged host mount table and empty capabilities.
        assert_ne!(r.payload["unshare"], 0);
        assert_ne!(r.payload["unshare_mount"], 0);
    }
    assert_ne!(r.payload["mount"], 0);
    let caps = r.payload["caps"].to_string();
    assert!(caps.contains("CapEff:\\t0000000000000000"), "{caps}");
    assert_eq!(host_mounts(), before, "the host's mount table changed");
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: planting symlinks where the host might later read or write.
/// Defence: the host never reads, writes, chowns or deletes a path the sandbox can write: no bind mounts, results travel over stdout.
#[tokio::test]
async fn planted_symlinks_lead_nowhere_on_the_host() {
    let engine = engine_or_skip!();
    let marker = std::env::temp_dir().join(format!("adv-symlink-{}", uuid::Uuid::new_v4()));
    std::fs::write(&marker, "host file").unwrap();
    let script = format!(
        r#"
import os

def h(e, c):
    made = []
    for name in ('result.json', 'customer_script.py.bak', '../../{m}', 'log'):
        try:
            os.symlink('{p}', name)
            made.append(name)
        except OSError:
            pass
    try:
        os.symlink('/etc/shadow', '/tmp/result')
        made.append('/tmp/result')
    except OSError:
        pass
    return made
"#,
        m = marker.file_name().unwrap().to_string_lossy(),
        p = marker.display()
    );
    let (id, r) = hostile(&engine, &script, 30).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host file");
    let meta = std::fs::symlink_metadata(&marker).unwrap();
    assert!(meta.file_type().is_file());
    assert_clean_after(&engine, &id, &r).await;
    let _ = std::fs::remove_file(marker);
}

/// Threat: leaving files or processes for the next run.
/// Defence: one fresh container per execution, removed after it; /tmp is a tmpfs that dies with it.
#[tokio::test]
async fn nothing_crosses_from_one_run_to_the_next() {
    let engine = engine_or_skip!();
    let plant = "import os, subprocess\n\ndef h(e, c):\n    open('/tmp/planted', 'w').write('x')\n    subprocess.Popen(['sleep', '1000'])\n    return os.uname().nodename\n";
    let (id1, first) = hostile(&engine, plant, 30).await;
    assert_eq!(first.status, StepStatus::Success);
    let look = "import os\n\ndef h(e, c):\n    procs = [p for p in os.listdir('/proc') if p.isdigit()]\n    cmds = [open('/proc/%s/cmdline' % p, 'rb').read().decode(errors='replace') for p in procs]\n    return {'planted': os.path.exists('/tmp/planted'), 'sleepers': [c for c in cmds if 'sleep' in c], 'host': os.uname().nodename}\n";
    let (id2, second) = hostile(&engine, look, 30).await;
    assert_eq!(second.status, StepStatus::Success);
    assert_eq!(second.payload["planted"], false);
    assert_eq!(second.payload["sleepers"], json!([]));
    assert_ne!(
        second.payload["host"], first.payload,
        "a different container each run"
    );
    assert_clean_after(&engine, &id1, &first).await;
    assert_clean_after(&engine, &id2, &second).await;
}

/// Threat: `kill -9` of scriptbox mid-run leaving its container running forever.
/// Defence: labels name the owner process; the next scriptbox's sweep removes containers whose owner is dead.
#[tokio::test]
async fn a_killed_scriptboxs_container_is_reaped_by_the_next_one() {
    let engine = engine_or_skip!();
    let dir = std::env::temp_dir().join(format!("adv-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("sleep.py");
    std::fs::write(
        &script,
        "import time\n\ndef h(e, c):\n    time.sleep(300)\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(["invoke", "--runtime", PY, "--handler", "h", "--script"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let owner = format!(":{}:", child.id());
    let mut orphan = None;
    for _ in 0..200 {
        let found = engine
            .labelled_containers()
            .await
            .unwrap()
            .into_iter()
            .find(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get("scriptbox.daemon"))
                    .is_some_and(|o| o.contains(&owner))
            });
        if let Some(c) = found {
            orphan = c.id;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let orphan = orphan.expect("the CLI's container appeared");
    child.kill().unwrap(); // SIGKILL: no cleanup code runs.
    child.wait().unwrap();
    let still = engine.docker().inspect_container(&orphan, None).await;
    assert!(
        still.is_ok(),
        "the container outlived its killed owner, as expected before a sweep"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .arg("sweep")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        engine
            .docker()
            .inspect_container(&orphan, None)
            .await
            .is_err(),
        "not reaped"
    );
    assert!(host_processes_mentioning(&orphan).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// Threat: many bombs at once starving a normal execution.
/// Defence: per-container memory, CPU, pids and output limits; each bomb confined to its own cgroup.
#[tokio::test]
async fn concurrent_bombs_do_not_stop_a_normal_execution() {
    let engine = engine_or_skip!();
    let bombs = [
        "import os, time\n\ndef h(e, c):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            time.sleep(0.01)\n",
        "def h(e, c):\n    hog = []\n    while True:\n        hog.append(bytearray(32 << 20))\n",
        "import os\n\ndef h(e, c):\n    while True:\n        os.write(1, b'x' * 65536)\n",
        "def h(e, c):\n    while True:\n        pass\n",
    ];
    let mut tasks = Vec::new();
    for bomb in bombs {
        let e = engine.clone();
        let mut inputs = py_step(PY, "h", bomb, json!({}));
        inputs.timeout_seconds = Some(8);
        tasks.push(tokio::spawn(async move { run(&e, &inputs).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let normal = run(
        &engine,
        &py_step(
            PY,
            "h",
            "def h(e, c):\n    return sum(range(1000))\n",
            json!({}),
        ),
    )
    .await;
    assert_eq!(normal.status, StepStatus::Success, "{normal:?}");
    assert_eq!(normal.payload, json!(499500));
    for t in tasks {
        let r = t.await.unwrap();
        assert_ne!(r.status, StepStatus::Success, "a bomb succeeded: {r:?}");
        let id = r.execution_id.clone();
        assert_clean_after(&engine, &id, &r).await;
    }
}

/// The sandbox settings the suite relies on, so a weakened default fails loudly.
#[tokio::test]
async fn the_defaults_are_the_hardened_ones() {
    let s = scriptbox::config::Settings::default().sandbox;
    assert_eq!(s.network, "none");
    assert!(s.pids_limit <= 256);
    assert!(s.memory_bytes <= 1 << 30);
    assert!(s.output_limit_bytes <= 64 << 20);
}

/// Runs `scriptbox ARGS` to its end; returns its exit code, its stderr and its peak resident
/// memory in bytes (from wait4's rusage, the host's own account).
#[allow(clippy::zombie_processes)] // Reason: the child is reaped by wait4 (for its rusage), not by Child::wait.
fn scriptbox_measured(args: &[&str]) -> (Option<i32>, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scriptbox"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scriptbox");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // The peak is the process's own VmHWM, polled until it exits. Not wait4's ru_maxrss: exec
    // records the forking parent's high-water mark there, and this test binary is large.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        // A zombie (exited, not yet reaped: the pid cannot be reused) has no VmHWM line.
        let Some(kib) = hwm else { break };
        peak = peak.max(kib * 1024);
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().expect("wait for scriptbox");
    (status.code(), reader.join().unwrap(), peak)
}

/// Threat: a hostile runbook (a 600-byte YAML alias bomb, block nesting 20,000 deep, a sleep whose duration overflows) exhausting or crashing `scriptbox validate` and `run`.
/// Defence: the YAML reader's bounds (128 levels, 250,000 values with aliases expanded, 4 MiB copied by aliases) checked before anything is copied; aws:sleep parsed without a panic, at most 604,799 s.
#[tokio::test]
async fn hostile_runbooks_are_refused_by_validate_and_run_without_a_blowup() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let mut bomb = String::from(
        "schemaVersion: '0.3'\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: 'def h(e, c): return 1'\n      InputPayload:\n        a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..7 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("        a{i}: &a{i} [{refs}]\n"));
    }
    let deep = format!(
        "schemaVersion: '0.3'\nmainSteps:\n  {}x\n",
        "- ".repeat(20_000)
    );
    for (name, text, rule) in [
        (
            "bomb.yaml",
            bomb.as_str(),
            "more than 250000 values once its aliases are expanded",
        ),
        ("deep.yaml", deep.as_str(), "more than 128 levels deep"),
    ] {
        let began = Instant::now();
        let (code, err, peak) = scriptbox_measured(&["validate", &write(name, text)]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(rule), "{name}: {err}");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            began.elapsed()
        );
        assert!(
            peak < 128 * 1024 * 1024,
            "{name}: validate peaked at {peak} bytes"
        );
    }
    let sleep = "schemaVersion: '0.3'\nparameters:\n  D: {type: String}\nmainSteps:\n  - name: z\n    action: aws:sleep\n    inputs: {Duration: '{{ D }}'}\n";
    let doc = write("sleep.yaml", sleep);
    let (code, err, _) = scriptbox_measured(&["run", &doc, "-p", "D=PT99999999999999999999S"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(code, Some(0), "{err}");
    assert_ne!(code, Some(101), "a Rust panic's exit code: {err}");
    assert!(err.contains("604799"), "{err}");
}

// ------------------------------------------------------------------------------------------
// The AWS egress (issue 13): the one way out of the sandbox, attacked. Every verdict is the
// host's: what a listener on the host's loopback received, the lines scriptbox itself wrote
// into the record, Docker's inspect, the host's folders. Nothing here sends traffic beyond
// 127.0.0.0/8: targets off the list are refused before any lookup.

/// The in-container probe of the egress: CONNECT (through the relay and straight into the
/// socket), plain requests, and direct connections; the first line of each answer.
const EGRESS_PROBE: &str = r#"
import os, socket, time

SOCKET = '/run/scriptbox-egress/aws.sock'

def relay():
    hostport = os.environ['HTTPS_PROXY'].split('://', 1)[1].rstrip('/')
    host, port = hostport.rsplit(':', 1)
    return host, int(port)

def ask(head, via_unix=False):
    try:
        if via_unix:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(SOCKET)
        else:
            s = socket.create_connection(relay(), timeout=10)
        s.sendall(head.encode('latin-1'))
        data = b''
        while b'\r\n' not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.split(b'\r\n', 1)[0].decode('latin-1') or 'closed'
    except OSError as exc:
        return 'error: %s' % exc

def h(e, c):
    out = {}
    for t in e.get('connect', []):
        head = 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (t, t)
        out['CONNECT ' + t] = ask(head)
        out['unix CONNECT ' + t] = ask(head, via_unix=True)
    for u in e.get('plain', []):
        out['GET ' + u] = ask('GET %s HTTP/1.1\r\nHost: h\r\n\r\n' % u)
        out['unix GET ' + u] = ask('GET %s HTTP/1.1\r\nHost: h\r\n\r\n' % u, via_unix=True)
    for p in e.get('direct', []):
        try:
            socket.create_connection(('127.0.0.1', p), timeout=2).close()
            out['direct %d' % p] = 'connected'
        except OSError as exc:
            out['direct %d' % p] = 'error: %s' % exc
    try:
        open('/run/scriptbox-egress/planted', 'w').write('x')
        out['write'] = 'written'
    except OSError as exc:
        out['write'] = 'error: %s' % exc
    return out
"#;

/// The refusal lines scriptbox wrote for `target` (`egress to TARGET refused...`).
fn refusals_of(r: &StepResult, target: &str) -> usize {
    let prefix = format!("egress to {target} refused");
    egress::scriptbox_lines(r)
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

/// Threat: through the AWS egress, CONNECT to a host off the list: any web host, instance metadata, another port of the host's loopback, a look-alike AWS name, another region, the Docker API port.
/// Defence: scriptbox's side of the socket allows only AWS host names of the partition and regions on 443 and the operator's hosts; the rest is refused before any lookup and logged in the record.
#[tokio::test]
async fn egress_connect_off_the_list_is_refused_and_logged() {
    let engine = engine_or_skip!();
    let allowed = egress::Listener::start(false).await;
    let forbidden = egress::Listener::start(false).await;
    let (config, _dir) = egress::aws_config(
        scriptbox::aws::AwsMode::Aws,
        None,
        vec![format!("127.0.0.1:{}", allowed.port)],
    );
    let access = egress::access(&config, &Default::default()).await;
    let off_list = [
        "example.com:443".to_string(),
        "169.254.169.254:443".into(),
        "169.254.169.254:80".into(),
        format!("127.0.0.1:{}", forbidden.port),
        format!("localhost:{}", forbidden.port),
        "ec2.us-east-1.amazonaws.com:22".into(),
        "ec2.us-east-1.amazonaws.com.evil.example:443".into(),
        "ec2.eu-west-1.amazonaws.com:443".into(),
        "127.0.0.1:2375".into(),
    ];
    let mut connect: Vec<String> = off_list.to_vec();
    connect.push("unix:/var/run/docker.sock".into());
    connect.push(format!("127.0.0.1:{}", allowed.port));
    let payload = json!({
        "connect": connect,
        "plain": [format!("http://127.0.0.1:{}/", forbidden.port), "/containers/json"],
        "direct": [forbidden.port],
    });
    let mut inputs = py_step(PY, "h", EGRESS_PROBE, payload);
    inputs.timeout_seconds = Some(120);
    let id = format!("adv-eg-{}", uuid::Uuid::new_v4());
    let r = egress::run_with_aws(&engine, &inputs, &access, None, Some(id.clone())).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    // The host's verdict: the forbidden listener never saw a connection; the allowed one saw
    // exactly the two tunnels asked for (through the relay and straight into the socket).
    assert_eq!(forbidden.connections(), 0, "a forbidden port was reached");
    assert_eq!(allowed.connections(), 2, "{:?}", r.payload);
    // The plain request for http://127.0.0.1:F/ is logged under its host and port too.
    let forbidden_target = format!("127.0.0.1:{}", forbidden.port);
    for target in &off_list {
        let expected = if *target == forbidden_target { 4 } else { 2 };
        assert_eq!(
            refusals_of(&r, target),
            expected,
            "refusals of {target} in the record: {:?}",
            egress::scriptbox_lines(&r)
        );
    }
    let counts = r.egress.clone().expect("the record counts the egress");
    // 2 per off-list target, 2 for the socket path, 4 plain requests.
    let expected_refused = u64::try_from(off_list.len() * 2 + 2 + 4).unwrap();
    assert_eq!(counts.refused, expected_refused, "{counts:?}");
    assert_eq!(counts.connections, expected_refused + 2, "{counts:?}");
    assert!(
        r.payload["write"].as_str().unwrap().starts_with("error"),
        "{:?}",
        r.payload
    );
    assert!(
        egress::leftovers(&config).is_empty(),
        "{:?}",
        egress::leftovers(&config)
    );
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: in emulator mode, using the egress to reach anything but the emulator: another loopback port of the host through CONNECT or an absolute-form request.
/// Defence: every plain request goes to the emulator's address whatever it names; CONNECT only to the emulator; the rest refused and logged.
#[tokio::test]
async fn egress_in_emulator_mode_reaches_the_emulator_only() {
    let engine = engine_or_skip!();
    let emulator = egress::Listener::start(true).await;
    let forbidden = egress::Listener::start(true).await;
    let (config, _dir) = egress::aws_config(
        scriptbox::aws::AwsMode::Emulator,
        Some(format!("http://127.0.0.1:{}", emulator.port)),
        vec![],
    );
    let access = egress::access(&config, &Default::default()).await;
    let payload = json!({
        "connect": [format!("127.0.0.1:{}", forbidden.port), "example.com:443"],
        "plain": [format!("http://127.0.0.1:{}/", forbidden.port), "/"],
        "direct": [forbidden.port, emulator.port],
    });
    let mut inputs = py_step(PY, "h", EGRESS_PROBE, payload);
    inputs.timeout_seconds = Some(120);
    let id = format!("adv-eg-{}", uuid::Uuid::new_v4());
    let r = egress::run_with_aws(&engine, &inputs, &access, None, Some(id.clone())).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert_eq!(forbidden.connections(), 0, "{:?}", r.payload);
    assert_eq!(emulator.connections(), 4, "{:?}", r.payload);
    for key in [
        format!("GET http://127.0.0.1:{}/", forbidden.port),
        "unix GET /".to_string(),
    ] {
        assert_eq!(r.payload[&key], "HTTP/1.1 200 OK", "{:?}", r.payload);
    }
    assert_eq!(refusals_of(&r, &format!("127.0.0.1:{}", forbidden.port)), 2);
    assert_eq!(refusals_of(&r, "example.com:443"), 2);
    assert!(egress::leftovers(&config).is_empty());
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: an AWS step's container as a way to the Docker API or scriptbox's own API (a host folder, a second socket), or a writable mount to plant files the host later reads.
/// Defence: one mount, read-only, of a folder holding only the execution's egress socket; credentials travel over stdin, never in Docker's config; the Docker API is refused through the egress.
#[tokio::test]
async fn egress_mount_is_one_read_only_socket_folder() {
    let engine = engine_or_skip!();
    let (config, _dir) = egress::aws_config(scriptbox::aws::AwsMode::Aws, None, vec![]);
    let access = egress::access(&config, &Default::default()).await;
    let label = format!("scriptbox.test.pwned-{}", uuid::Uuid::new_v4());
    let script = format!(
        r#"
import os, socket, stat, time, json

def h(e, c):
    time.sleep(4)
    found = []
    for root, dirs, files in os.walk('/'):
        if root.startswith(('/proc', '/sys')):
            dirs[:] = []
            continue
        for f in files + dirs:
            p = os.path.join(root, f)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    found.append(p)
            except OSError:
                pass
    body = json.dumps({{'Image': 'scriptbox-runtime:python3.11', 'Labels': {{'{label}': '1'}}}})
    answers = []
    for head in ['POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body),
                 'CONNECT /var/run/docker.sock HTTP/1.1\r\n\r\n',
                 'GET /v1/health HTTP/1.1\r\nHost: scriptbox\r\n\r\n']:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect('/run/scriptbox-egress/aws.sock')
        s.sendall(head.encode())
        answers.append(s.recv(200).decode('latin-1').split('\r\n')[0])
        s.close()
    return {{'sockets': found, 'answers': answers, 'env': sorted(os.environ)}}
"#
    );
    let mut inputs = py_step(PY, "h", &script, json!({}));
    inputs.timeout_seconds = Some(120);
    let id = format!("adv-eg-{}", uuid::Uuid::new_v4());
    let (run_engine, run_inputs, run_id, run_access) =
        (engine.clone(), inputs.clone(), id.clone(), access.clone());
    let task = tokio::spawn(async move {
        egress::run_with_aws(&run_engine, &run_inputs, &run_access, None, Some(run_id)).await
    });
    let container = wait_for_container(&engine, &id).await;
    let seen = engine
        .docker()
        .inspect_container(&container, None)
        .await
        .expect("inspect the running AWS step");
    let r = task.await.expect("the run");
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    let mounts = seen.mounts.clone().unwrap_or_default();
    assert_eq!(mounts.len(), 1, "mounts: {mounts:?}");
    let mount = &mounts[0];
    assert_eq!(mount.destination.as_deref(), Some("/run/scriptbox-egress"));
    assert_eq!(mount.rw, Some(false), "{mount:?}");
    let source = mount.source.clone().unwrap_or_default();
    assert!(
        source.starts_with(&config.egress_dir.as_ref().unwrap().display().to_string()),
        "{source}"
    );
    let host_config = seen.host_config.clone().unwrap();
    assert_eq!(host_config.network_mode.as_deref(), Some("none"));
    assert!(host_config.binds.unwrap_or_default().is_empty());
    let env = seen.config.clone().unwrap().env.unwrap_or_default();
    assert!(
        env.iter().all(|v| !v.starts_with("AWS_ACCESS_KEY_ID")
            && !v.starts_with("AWS_SESSION_TOKEN")
            && !v.starts_with("HTTPS_PROXY")),
        "Docker's config holds {env:?}"
    );
    // The folder is not listable by the container's user (0711): a walk finds no socket at
    // all; in any case nothing but the egress socket.
    for socket in r.payload["sockets"].as_array().unwrap() {
        assert_eq!(socket, "/run/scriptbox-egress/aws.sock", "{:?}", r.payload);
    }
    for answer in r.payload["answers"].as_array().unwrap() {
        let line = answer.as_str().unwrap();
        assert!(line.starts_with("HTTP/1.1 4"), "{line}");
    }
    let pwned = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    assert!(
        pwned.stdout.is_empty(),
        "a container was created through the egress"
    );
    assert!(egress::leftovers(&config).is_empty());
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: using the AWS egress without bound: a flood of bytes, a connection held open forever, more connections than allowed.
/// Defence: per-execution caps on bytes, connection time and connections, enforced on scriptbox's side; the first cap reached is in the record.
#[tokio::test]
async fn egress_caps_hold() {
    let engine = engine_or_skip!();
    let upstream = egress::Listener::start(false).await;
    let (config, _dir) = egress::aws_config(
        scriptbox::aws::AwsMode::Aws,
        None,
        vec![format!("127.0.0.1:{}", upstream.port)],
    );
    let limits = scriptbox::egress::EgressLimits {
        max_connections: 4,
        max_bytes: 256 * 1024,
        max_connection_seconds: 2,
        ..Default::default()
    };
    let access = egress::access(&config, &limits).await;
    let script = format!(
        r#"
import os, socket, time

TARGET = '127.0.0.1:{port}'

def tunnel():
    hostport = os.environ['HTTPS_PROXY'].split('://', 1)[1].rstrip('/')
    host, port = hostport.rsplit(':', 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(('CONNECT %s HTTP/1.1\r\n\r\n' % TARGET).encode())
    answer = s.recv(200).decode('latin-1')
    return s, answer.split('\r\n')[0]

def h(e, c):
    out = {{}}
    # Held open: scriptbox closes it at max_connection_seconds.
    s, out['held'] = tunnel()
    began = time.time()
    try:
        while time.time() - began < 8:
            s.sendall(b'.')
            time.sleep(0.2)
        out['held_for'] = 'still open'
    except OSError:
        out['held_for'] = time.time() - began
    s.close()
    # A flood: cut at max_bytes.
    s, out['flood'] = tunnel()
    sent = 0
    try:
        while sent < 4 * 1024 * 1024:
            s.sendall(b'x' * 65536)
            sent += 65536
    except OSError:
        pass
    out['flood_sent'] = sent
    s.close()
    # More connections than max_connections.
    answers = []
    for _ in range(6):
        try:
            s, a = tunnel()
            answers.append(a)
            s.close()
        except OSError as exc:
            answers.append('error: %s' % exc)
    out['more'] = answers
    return out
"#,
        port = upstream.port
    );
    let mut inputs = py_step(PY, "h", &script, json!({}));
    inputs.timeout_seconds = Some(120);
    let id = format!("adv-eg-{}", uuid::Uuid::new_v4());
    let r = egress::run_with_aws(&engine, &inputs, &access, None, Some(id.clone())).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    // The upstream's own count: never more than the caps let through.
    assert!(upstream.connections() <= 4, "{}", upstream.connections());
    assert!(
        upstream.bytes() <= 256 * 1024 + 64 * 1024,
        "upstream received {} bytes",
        upstream.bytes()
    );
    assert!(
        upstream.longest_ms() < 6000,
        "a connection stayed open {} ms",
        upstream.longest_ms()
    );
    let counts = r.egress.clone().expect("egress counts");
    assert_eq!(
        counts.limit_reached.as_deref(),
        Some("max_connection_seconds"),
        "{counts:?}"
    );
    assert!(counts.refused >= 3, "{counts:?}");
    let lines = egress::scriptbox_lines(&r).join("\n");
    for cap in ["max_connection_seconds", "max_bytes", "max_connections"] {
        assert!(lines.contains(cap), "no line names {cap}: {lines}");
    }
    assert_clean_after(&engine, &id, &r).await;
}

/// Threat: keeping the AWS egress after the run: a background process that goes on tunnelling, a socket or folder left on the host for the next run to find.
/// Defence: the socket is served only while the step's container runs; its folder is removed and every tunnel closed when the container exits.
#[tokio::test]
async fn nothing_of_the_egress_outlives_the_run() {
    let engine = engine_or_skip!();
    let upstream = egress::Listener::start(false).await;
    let (config, _dir) = egress::aws_config(
        scriptbox::aws::AwsMode::Aws,
        None,
        vec![format!("127.0.0.1:{}", upstream.port)],
    );
    let access = egress::access(&config, &Default::default()).await;
    let script = format!(
        r#"
import os, socket, subprocess, time

KEEPER = '''
import socket, time
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect("/run/scriptbox-egress/aws.sock")
        s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n")
        s.recv(100)
        while True:
            s.sendall(b".")
            time.sleep(0.2)
    except OSError:
        time.sleep(0.2)
'''

def h(e, c):
    subprocess.Popen(['python3', '-c', KEEPER], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    return 'left a keeper'
"#,
        port = upstream.port
    );
    let mut inputs = py_step(PY, "h", &script, json!({}));
    inputs.timeout_seconds = Some(120);
    let id = format!("adv-eg-{}", uuid::Uuid::new_v4());
    let r = egress::run_with_aws(&engine, &inputs, &access, None, Some(id.clone())).await;
    assert_eq!(r.status, StepStatus::Success, "{r:?}");
    assert!(upstream.connections() >= 1, "the keeper never tunnelled");
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.open() > 0 {
        assert!(Instant::now() < deadline, "a tunnel outlived the run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reached = upstream.connections();
    assert!(
        egress::leftovers(&config).is_empty(),
        "{:?}",
        egress::leftovers(&config)
    );
    assert_clean_after(&engine, &id, &r).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        upstream.connections(),
        reached,
        "something tunnelled after the run"
    );
}

/// Threat: reading the operator's own AWS credentials (the keys scriptbox assumes roles with) from inside an AWS step: its environment, its processes, every file it can read.
/// Defence: the step gets only the role's temporary credentials over stdin; the operator's chain stays in scriptbox; its key and secret (canaries) appear nowhere in the container, the output or Docker's config.
#[tokio::test]
async fn operator_credentials_never_reach_an_aws_step() {
    let engine = engine_or_skip!();
    drop(engine);
    let Some(moto) = common::moto::Moto::start() else {
        return;
    };
    let tag = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let (key, secret) = (format!("AKIA{}", &tag[..16]), format!("canary-{tag}"));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hunt.py");
    std::fs::write(
        &script,
        format!(
            r#"
import os

# Written reversed, so that this file itself holds neither needle.
NEEDLES = [b'{key_reversed}'[::-1], b'{secret_reversed}'[::-1]]

def h(e, c):
    hits = []
    blobs = [repr(dict(os.environ)).encode()]
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            for name in ('environ', 'cmdline'):
                try:
                    blobs.append(open('/proc/%s/%s' % (pid, name), 'rb').read())
                except OSError:
                    pass
    for root, dirs, files in os.walk('/'):
        if root.startswith(('/proc', '/sys')):
            dirs[:] = []
            continue
        for f in files:
            p = os.path.join(root, f)
            try:
                if os.path.isfile(p) and os.path.getsize(p) < 65536:
                    blobs.append(open(p, 'rb').read())
            except OSError:
                pass
    for b in blobs:
        for n in NEEDLES:
            if n in b:
                hits.append(n.decode()[:4])
    return {{'hits': len(hits), 'key_prefix': os.environ.get('AWS_ACCESS_KEY_ID', '')[:4],
             'token': bool(os.environ.get('AWS_SESSION_TOKEN'))}}
"#,
            key_reversed = key.chars().rev().collect::<String>(),
            secret_reversed = secret.chars().rev().collect::<String>(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scriptbox"));
    cmd.args([
        "invoke",
        "--runtime",
        PY,
        "--handler",
        "h",
        "--timeout",
        "120",
        "--output",
        "json",
        "--aws-endpoint",
        &moto.url(),
        "--assume-role",
        "arn:aws:iam::123456789012:role/adversary",
        "--script",
    ])
    .arg(&script)
    .env("AWS_ACCESS_KEY_ID", &key)
    .env("AWS_SECRET_ACCESS_KEY", &secret)
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .env_remove("AWS_SESSION_TOKEN");
    if under_gvisor() {
        cmd.env("SCRIPTBOX_SANDBOX_CONTAINER_RUNTIME", "runsc");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The script prints nothing of what it found (only a count), so a needle in the output is
    // a leak through scriptbox itself (a log line, an error message).
    for needle in [&key, &secret] {
        assert!(
            !stdout.contains(needle.as_str()) && !stderr.contains(needle.as_str()),
            "leaked"
        );
    }
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["Payload"]["hits"], 0,
        "the operator's credentials are inside: {v}"
    );
    // The step did get credentials: the role's, from STS.
    assert_eq!(v["Payload"]["key_prefix"], "ASIA", "{v}");
    assert_eq!(v["Payload"]["token"], true, "{v}");
}
