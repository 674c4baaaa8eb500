//! Running one conformance document against an emulator: reset moto, run the document's
//! fixture (`tests/conformance/README.md` is the contract), then `scriptbox run` with the
//! fixture's parameters, children and attachments, each process within a deadline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{Outcome, ReasonKind, Verdict, file_name, outcome_of_execution, validate_file};
use crate::runbook as rb;

/// The longest a fixture may run (its boto3 calls to moto included).
pub const FIXTURE_DEADLINE: Duration = Duration::from_secs(60);

/// The most of a process's stdout or stderr the harness reads.
pub const MAX_OUTPUT_BYTES: u64 = 4 << 20;

/// How long a run stopped with SIGTERM gets to clean up (its containers) before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(30);

/// How a conformance run reaches the emulator and the fixtures.
#[derive(Debug, Clone)]
pub struct RunSetup {
    /// The emulator, `http://127.0.0.1:PORT` (a moto server: `/moto-api/reset` resets it).
    pub endpoint: String,
    /// The fixtures' folder (`<file stem>.py`).
    pub fixtures: PathBuf,
    /// The Python that runs them (with boto3).
    pub python: PathBuf,
    /// The scriptbox binary whose `run` runs each document.
    pub scriptbox: PathBuf,
    /// The corpus folder (children named by a fixture's `documents` are found here).
    pub corpus: PathBuf,
    /// The attachments' folder (`../shared/conformance/attachments`).
    pub attachments: Option<PathBuf>,
    /// The longest one document's run may take.
    pub run_timeout: Duration,
}

/// Why the harness could not run a document (never the document's fault).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The emulator did not reset.
    #[error("resetting the emulator at {endpoint} failed: {reason}")]
    Reset {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A process could not be started, or a file written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process ran past its deadline and was stopped.
    #[error("{what} did not finish within {} s and was stopped", .deadline.as_secs())]
    TimedOut {
        /// The process.
        what: String,
        /// Its deadline.
        deadline: Duration,
    },
    /// The fixture failed or printed something else than the contract's JSON.
    #[error("fixture {file}: {reason}")]
    Fixture {
        /// The fixture's file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// What a fixture gave: the run's parameters, children and attachments.
#[derive(Debug, Default)]
struct Fixture {
    parameters: Map<String, Value>,
    /// `DocumentName` → corpus file name.
    documents: Vec<(String, String)>,
    /// The document's attachment name → a file of the attachments' folder.
    attachments: Vec<(String, String)>,
    /// `service.Operation: why`: an emulator gap the run's failure comes from that its
    /// message cannot show (moto answers, but with less than AWS: an empty list...).
    emulator_gap: Option<String>,
    /// Signal types (`Resume`, `Approve`, `Reject`) to send the run, in order, each once a step
    /// waits for it.
    signals: Vec<String>,
}

/// A temporary folder of one document's run, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir, HarnessError> {
        let path =
            std::env::temp_dir().join(format!("scriptbox-conformance-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).map_err(|source| HarnessError::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Validates and runs one document: reset the emulator, run its fixture, validate it (with the
/// fixture's attachments), run it when valid. A harness or fixture failure is the outcome
/// `Failed` of kind `harness`.
pub fn run_document(
    setup: &RunSetup,
    path: &Path,
    options: &rb::document::LoadOptions<'_>,
) -> Verdict {
    let prepared = WorkDir::new().and_then(|work| {
        reset(&setup.endpoint)?;
        let fixture = run_fixture(setup, path, &work.0)?;
        let dirs = lay_out(setup, path, &fixture, &work.0)?;
        Ok((work, dirs))
    });
    let (work, dirs) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let mut v = validate_file(path, options);
            if v.valid {
                v.outcome = Some(harness_failure(&e));
            }
            return v;
        }
    };
    let mut options = options.clone();
    if let Some(a) = dirs
        .attachments
        .clone()
        .or_else(|| setup.attachments.clone())
    {
        options.attachments_dir = Some(a);
    }
    let mut v = validate_file(path, &options);
    if v.valid {
        v.outcome = Some(match run(setup, path, &dirs, &options, &work.0) {
            Ok(o) => o,
            Err(e) => harness_failure(&e),
        });
    }
    v
}

fn harness_failure(e: &HarnessError) -> Outcome {
    Outcome::Failed {
        kind: ReasonKind::Harness,
        reason: super::one_line(&e.to_string(), 400),
    }
}

/// `POST /moto-api/reset`: moto forgets every resource.
fn reset(endpoint: &str) -> Result<(), HarnessError> {
    let fail = |reason: String| HarnessError::Reset {
        endpoint: endpoint.to_string(),
        reason,
    };
    let authority = endpoint
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| fail("the endpoint is not http://HOST:PORT".into()))?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| fail(e.to_string()))?;
    let io = |e: std::io::Error| fail(e.to_string());
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(
        stream,
        "POST /moto-api/reset HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(io)?;
    let status = String::from_utf8_lossy(&head);
    if status.starts_with("HTTP/") && status.ends_with("200") {
        Ok(())
    } else {
        Err(fail(format!("answered {status:?}")))
    }
}

/// Runs `cmd` with stdout and stderr in files of `work` (named by `tag`), within `deadline`:
/// past it, SIGTERM, then SIGKILL after [`TERM_GRACE`].
fn run_bounded(
    mut cmd: Command,
    what: &str,
    tag: &str,
    work: &Path,
    deadline: Duration,
    on_tick: &mut dyn FnMut(),
) -> Result<(ExitStatus, String, String), HarnessError> {
    let io = |what: String| move |source| HarnessError::Io { what, source };
    let out_path = work.join(format!("{tag}.out"));
    let err_path = work.join(format!("{tag}.err"));
    let out = std::fs::File::create(&out_path).map_err(io(format!("creating {tag}.out")))?;
    let err = std::fs::File::create(&err_path).map_err(io(format!("creating {tag}.err")))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io(format!("starting {what}")))?;
    let started = Instant::now();
    let mut termed: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io(format!("waiting for {what}")))?
        {
            break status;
        }
        match termed {
            None if started.elapsed() > deadline => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: kill(2) on our own child's pid; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                termed = Some(Instant::now());
            }
            Some(t) if t.elapsed() > TERM_GRACE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::TimedOut {
                    what: what.to_string(),
                    deadline,
                });
            }
            _ => {}
        }
        on_tick();
        std::thread::sleep(Duration::from_millis(100));
    };
    if termed.is_some() {
        return Err(HarnessError::TimedOut {
            what: what.to_string(),
            deadline,
        });
    }
    Ok((status, read_bounded(&out_path), read_bounded(&err_path)))
}

fn read_bounded(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_OUTPUT_BYTES).read_to_string(&mut text);
    }
    text
}

/// Runs the document's fixture, if it has one, and reads what it printed.
fn run_fixture(setup: &RunSetup, doc: &Path, work: &Path) -> Result<Fixture, HarnessError> {
    let stem = doc.file_stem().unwrap_or_default().to_string_lossy();
    let script = setup.fixtures.join(format!("{stem}.py"));
    if !script.is_file() {
        return Ok(Fixture::default());
    }
    let file = file_name(&script);
    let fail = |reason: String| HarnessError::Fixture {
        file: file.clone(),
        reason,
    };
    let doc_abs = std::fs::canonicalize(doc).unwrap_or_else(|_| doc.to_path_buf());
    let mut cmd = Command::new(&setup.python);
    cmd.arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", &setup.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("SCRIPTBOX_CONFORMANCE_DOCUMENT", doc_abs);
    let (status, out, err) =
        run_bounded(cmd, &file, "fixture", work, FIXTURE_DEADLINE, &mut || {})?;
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(fail(format!(
            "exited {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: Value = serde_json::from_str(last)
        .map_err(|e| fail(format!("its last line is not a JSON object ({e})")))?;
    parse_fixture(&v).map_err(fail)
}

/// Reads the contract's `{"parameters": {...}, "documents": {...}, "attachments": {...}}`.
fn parse_fixture(v: &Value) -> Result<Fixture, String> {
    let Some(Value::Object(parameters)) = v.get("parameters") else {
        return Err("the JSON has no `parameters` object".into());
    };
    let names = |key: &str| -> Result<Vec<(String, String)>, String> {
        match v.get(key) {
            None => Ok(vec![]),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(f) if plain_name(k) && plain_name(f) => Ok((k.clone(), f.to_string())),
                    _ => Err(format!(
                        "`{key}`: {k:?} must map a plain name to a plain file name"
                    )),
                })
                .collect(),
            Some(_) => Err(format!("`{key}` must be an object of name → file name")),
        }
    };
    let emulator_gap = match v.get("emulator_gap") {
        None => None,
        Some(Value::String(g)) if g.len() <= 500 && g.contains('.') => Some(g.clone()),
        Some(_) => return Err("`emulator_gap` is a string `service.Operation: why`".into()),
    };
    let mut signals = Vec::new();
    if let Some(list) = v.get("signals") {
        let Some(items) = list.as_array().filter(|l| l.len() <= 20) else {
            return Err("`signals` is a list (at most 20) of {\"step\", \"type\"}".into());
        };
        for item in items {
            match item.get("type").and_then(Value::as_str) {
                Some(t @ ("Resume" | "Approve" | "Reject")) => signals.push(t.to_string()),
                _ => return Err("a signal's `type` is Resume, Approve or Reject".into()),
            }
        }
    }
    Ok(Fixture {
        parameters: parameters.clone(),
        documents: names("documents")?,
        attachments: names("attachments")?,
        emulator_gap,
        signals,
    })
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])
}

/// The run's files: its parameters, and the folders of its children and attachments.
struct RunDirs {
    parameters: PathBuf,
    emulator_gap: Option<String>,
    signals: Vec<String>,
    documents: Option<PathBuf>,
    attachments: Option<PathBuf>,
}

/// Writes the parameters and links the children and attachments under their names.
fn lay_out(
    setup: &RunSetup,
    doc: &Path,
    fixture: &Fixture,
    work: &Path,
) -> Result<RunDirs, HarnessError> {
    let io = |what: String| move |source| HarnessError::Io { what, source };
    let parameters = work.join("parameters.json");
    std::fs::write(
        &parameters,
        Value::Object(fixture.parameters.clone()).to_string(),
    )
    .map_err(io("writing parameters.json".into()))?;
    let corpus = std::fs::canonicalize(&setup.corpus).unwrap_or_else(|_| setup.corpus.clone());
    let link_all = |sub: &str, pairs: &[(String, String)], from: &Path, with_ext: bool| {
        if pairs.is_empty() {
            return Ok(None);
        }
        let dir = work.join(sub);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {sub}")))?;
        for (name, file) in pairs {
            let target = from.join(file);
            let ext = Path::new(file).extension().unwrap_or_default();
            let link = match with_ext {
                true => dir.join(format!("{name}.{}", ext.to_string_lossy())),
                false => dir.join(name),
            };
            std::os::unix::fs::symlink(&target, &link).map_err(io(format!(
                "linking {} as {}",
                target.display(),
                link.display()
            )))?;
        }
        Ok(Some(dir))
    };
    let attachments_from = setup
        .attachments
        .clone()
        .unwrap_or_else(|| doc.parent().unwrap_or(Path::new(".")).to_path_buf());
    let attachments_from = std::fs::canonicalize(&attachments_from).unwrap_or(attachments_from);
    Ok(RunDirs {
        parameters,
        emulator_gap: fixture.emulator_gap.clone(),
        signals: fixture.signals.clone(),
        documents: link_all("documents", &fixture.documents, &corpus, true)?,
        attachments: link_all(
            "attachments",
            &fixture.attachments,
            &attachments_from,
            false,
        )?,
    })
}

/// `scriptbox run DOC --aws-endpoint URL --output json` with the fixture's files.
fn run(
    setup: &RunSetup,
    doc: &Path,
    dirs: &RunDirs,
    options: &rb::document::LoadOptions<'_>,
    work: &Path,
) -> Result<Outcome, HarnessError> {
    let mut cmd = Command::new(&setup.scriptbox);
    cmd.arg("run")
        .arg(doc)
        .arg("--aws-endpoint")
        .arg(&setup.endpoint)
        .arg("--parameters-file")
        .arg(&dirs.parameters)
        .args(["--output", "json", "--region", "us-east-1"])
        // The operator's identity against the emulator is moto's test key, never the caller's.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    if let Some(a) = &options.attachments_dir {
        cmd.arg("--attachments").arg(a);
    }
    if let Some(d) = &dirs.documents {
        cmd.arg("--documents").arg(d);
    }
    let what = format!("scriptbox run {}", file_name(doc));
    let mut signals = Signaller::new(setup, &dirs.signals);
    let (status, out, err) = run_bounded(cmd, &what, "run", work, setup.run_timeout, &mut || {
        signals.tick()
    })?;
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match serde_json::from_str::<Value>(last) {
        Ok(v)
            if v.get("AutomationExecutionStatus").is_some()
                || v.get("AutomationExecution").is_some() =>
        {
            Ok(with_declared_gap(
                outcome_of_execution(&v),
                &dirs.emulator_gap,
            ))
        }
        // Refused at the start (its parameters): a declared gap says why (moto's ids cannot
        // match the document's pattern...); otherwise the fixture is wrong.
        _ if status.code() == Some(2) && dirs.emulator_gap.is_some() => Ok(with_declared_gap(
            Outcome::Failed {
                kind: ReasonKind::Defect,
                reason: super::one_line(&format!("refused: {last}"), 300),
            },
            &dirs.emulator_gap,
        )),
        _ => {
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            Ok(Outcome::Failed {
                kind: ReasonKind::Harness,
                reason: super::one_line(
                    &format!(
                        "{what} exited {status} without an execution: {} {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
                        last
                    ),
                    400,
                ),
            })
        }
    }
}

/// Sends a run the fixture's signals: the run's id is the name of the signal socket that
/// appears in `scriptbox signal`'s runs folder after the run starts (documents run one at a
/// time); each signal is retried, once a second, until a step takes it.
struct Signaller<'a> {
    setup: &'a RunSetup,
    pending: std::collections::VecDeque<String>,
    before: Vec<PathBuf>,
    id: Option<String>,
    last: Option<Instant>,
}

impl<'a> Signaller<'a> {
    fn new(setup: &'a RunSetup, signals: &[String]) -> Signaller<'a> {
        Signaller {
            setup,
            pending: signals.iter().cloned().collect(),
            before: if signals.is_empty() {
                vec![]
            } else {
                sockets()
            },
            id: None,
            last: None,
        }
    }

    fn tick(&mut self) {
        if self.pending.is_empty()
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        if self.id.is_none() {
            self.id = sockets()
                .into_iter()
                .find(|s| !self.before.contains(s))
                .and_then(|s| s.file_stem().map(|n| n.to_string_lossy().into_owned()));
        }
        let (Some(id), Some(kind)) = (&self.id, self.pending.front()) else {
            return;
        };
        let delivered = Command::new(&self.setup.scriptbox)
            .args(["signal", id, "--type", kind])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if delivered {
            self.pending.pop_front();
        }
    }
}

/// The signal sockets of running `scriptbox run`s.
fn sockets() -> Vec<PathBuf> {
    std::fs::read_dir(crate::cli::signal::runs_dir())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default()
}

/// A failed run, when the fixture declares the emulator gap it comes from, is reported as that
/// gap, saying it is declared (a harness or environment failure is left as it is).
fn with_declared_gap(outcome: Outcome, gap: &Option<String>) -> Outcome {
    match (outcome, gap) {
        (
            Outcome::Failed {
                kind: ReasonKind::Defect | ReasonKind::Emulator,
                reason,
            },
            Some(gap),
        ) => Outcome::Failed {
            kind: ReasonKind::Emulator,
            reason: super::one_line(
                &format!("{gap} (declared by the fixture); the run: {reason}"),
                500,
            ),
        },
        (other, _) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fixture_names_plain_files_only() {
        let f =
            parse_fixture(&json!({"parameters": {"A": "b"}, "documents": {"child-1": "x.yaml"}}))
                .unwrap();
        assert_eq!(
            f.documents,
            vec![("child-1".to_string(), "x.yaml".to_string())]
        );
        assert!(
            parse_fixture(&json!({}))
                .unwrap_err()
                .contains("no `parameters`")
        );
        let e = parse_fixture(&json!({"parameters": {}, "attachments": {"a": "../etc/passwd"}}))
            .unwrap_err();
        assert!(e.contains("plain file name"), "{e}");
    }
}
