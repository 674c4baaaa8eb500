//! `scriptbox conformance`: validate every runbook of a folder and tally the verdicts; with
//! `--aws-endpoint`, also run each valid one against that emulator (moto), after its fixture
//! (`tests/conformance/README.md` is the fixtures' contract), and, with `--expected`, compare
//! every outcome with the expected one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::CliError;
use crate::config::Settings;
use crate::runbook::{self as rb, Problem, ProblemKind};
use crate::runtimes::Catalog;

mod harness;
pub use harness::{HarnessError, RunSetup, run_document};

/// `scriptbox conformance`
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// A folder of runbooks (INDEX.tsv and other non-runbook files are skipped).
    pub folder: PathBuf,
    /// Where attachments are (default: each document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
    /// Also run each valid document against this AWS emulator (a moto server: it is reset
    /// before each document), with `scriptbox run --aws-endpoint URL`.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,
    /// The fixtures: `<file stem>.py`, run before each document (with --aws-endpoint).
    #[arg(long, value_name = "DIR", default_value = "tests/conformance/fixtures")]
    pub fixtures: PathBuf,
    /// The Python (with boto3) that runs the fixtures.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/moto/venv/bin/python"
    )]
    pub fixture_python: PathBuf,
    /// The expected outcomes (`file validation outcome reason`, tab-separated): print each
    /// difference and exit 1 when there is one.
    #[arg(long, value_name = "FILE")]
    pub expected: Option<PathBuf>,
    /// The longest one document's run may take, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub run_timeout: u64,
    /// Only the documents whose file name contains this (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
}

/// What kind of reason a refusal or a failed run has (the `KIND` of `expected.tsv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// The document itself is wrong as published.
    Defect,
    /// An attachment that was never published.
    Attachment,
    /// The emulator lacks an operation (or one of its limits).
    Emulator,
    /// Something scriptbox does not do (refused at validation).
    Unsupported,
    /// This machine lacks something the document needs (a runtime's image not built).
    Environment,
    /// The harness or the fixture failed: never an expected outcome.
    Harness,
}

impl ReasonKind {
    /// The spelling of `expected.tsv`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Defect => "defect",
            ReasonKind::Attachment => "attachment",
            ReasonKind::Emulator => "emulator",
            ReasonKind::Unsupported => "unsupported",
            ReasonKind::Environment => "environment",
            ReasonKind::Harness => "harness",
        }
    }

    fn parse(s: &str) -> Option<ReasonKind> {
        [
            ReasonKind::Defect,
            ReasonKind::Attachment,
            ReasonKind::Emulator,
            ReasonKind::Unsupported,
            ReasonKind::Environment,
            ReasonKind::Harness,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How a run against the emulator ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The execution ended `Success`.
    Success,
    /// It did not (or could not be run), and why.
    Failed {
        /// The kind of reason.
        kind: ReasonKind,
        /// The reason, one line.
        reason: String,
    },
}

/// The verdict of one conformance document.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The file name.
    pub file: String,
    /// True when the document validated.
    pub valid: bool,
    /// Every problem (empty when valid).
    pub problems: Vec<Problem>,
    /// What was accepted against a reference page's rule (valid documents).
    pub notes: Vec<String>,
    /// The run's outcome, when it was run.
    pub outcome: Option<Outcome>,
}

impl Verdict {
    /// A one-line reason: the unsupported features named, else the first problem.
    pub fn reason(&self) -> String {
        let mut whats: Vec<String> = Vec::new();
        for p in &self.problems {
            if let Some(w) = &p.what {
                if !whats.contains(w) {
                    whats.push(w.clone());
                }
            }
        }
        let others = self
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::Unsupported)
            .count();
        let mut reason = if whats.is_empty() {
            String::new()
        } else {
            format!("unsupported: {}", whats.join(", "))
        };
        if others > 0 {
            let first = self
                .problems
                .iter()
                .find(|p| p.kind != ProblemKind::Unsupported)
                .map(|p| p.to_string())
                .unwrap_or_default();
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&first);
            if others > 1 {
                reason.push_str(&format!(" (+{} more)", others - 1));
            }
        }
        reason
    }

    /// The kind of a refusal: unsupported when scriptbox lacks something, an attachment when
    /// one is missing, else a defect of the document.
    pub fn refusal_kind(&self) -> ReasonKind {
        if self
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Unsupported)
        {
            ReasonKind::Unsupported
        } else if self
            .problems
            .iter()
            .any(|p| p.message.starts_with("attachment not found"))
        {
            ReasonKind::Attachment
        } else {
            ReasonKind::Defect
        }
    }

    /// The verdict's row: validation, outcome, `KIND: reason` (`-` where there is none).
    pub fn row(&self) -> (&'static str, &'static str, String) {
        if !self.valid {
            let reason = self.reason();
            let reason = reason.strip_prefix("unsupported: ").unwrap_or(&reason);
            let reason = format!("{}: {reason}", self.refusal_kind().as_str());
            return ("refused", "-", reason);
        }
        match &self.outcome {
            None => ("valid", "-", "-".into()),
            Some(Outcome::Success) => ("valid", "Success", "-".into()),
            Some(Outcome::Failed { kind, reason }) => {
                ("valid", "Failed", format!("{}: {reason}", kind.as_str()))
            }
        }
    }
}

/// The runbook files of a folder (`.yaml`, `.yml`, `.json`), sorted by name.
pub fn corpus_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy().to_ascii_lowercase();
            n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json")
        })
        .collect();
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Validates one runbook file.
pub fn validate_file(path: &Path, options: &rb::document::LoadOptions<'_>) -> Verdict {
    let file = file_name(path);
    match rb::document::load_file(path, options) {
        Ok(doc) => Verdict {
            file,
            valid: true,
            problems: vec![],
            notes: doc.notes.iter().map(ToString::to_string).collect(),
            outcome: None,
        },
        Err(r) => Verdict {
            file,
            valid: false,
            problems: r.problems,
            notes: vec![],
            outcome: None,
        },
    }
}

/// Validates every runbook file of a folder, sorted by name.
pub fn conformance_verdicts(
    folder: &Path,
    options: &rb::document::LoadOptions<'_>,
) -> std::io::Result<Vec<Verdict>> {
    Ok(corpus_files(folder)?
        .iter()
        .map(|path| validate_file(path, options))
        .collect())
}

/// One row of `expected.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The corpus file name.
    pub file: String,
    /// `valid` or `refused`.
    pub validation: String,
    /// `Success`, `Failed` or `-`.
    pub outcome: String,
    /// The reason's kind (none for Success).
    pub kind: Option<ReasonKind>,
    /// The text the printed reason must contain (for `emulator`, the operation after the
    /// service's `.`).
    pub text: String,
}

/// Why `expected.tsv` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExpectedError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A row breaks the format.
    #[error("{path}, line {line}: {rule}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// The rule it breaks.
        rule: String,
    },
}

/// The largest `expected.tsv` read **(ours)**.
pub const MAX_EXPECTED_BYTES: u64 = 1 << 20;

/// Reads `expected.tsv`: `#` lines and the header are skipped, `TODO` rows are not returned.
pub fn read_expected(path: &Path) -> Result<Vec<Expected>, ExpectedError> {
    let read_err = |source| ExpectedError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_EXPECTED_BYTES {
        return Err(ExpectedError::Row {
            path: path.to_path_buf(),
            line: 0,
            rule: format!("larger than {MAX_EXPECTED_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with("file\t") {
            continue;
        }
        let row_err = |rule: &str| ExpectedError::Row {
            path: path.to_path_buf(),
            line: i + 1,
            rule: rule.to_string(),
        };
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, validation, outcome, reason] = cols[..] else {
            return Err(row_err("a row has 4 tab-separated columns"));
        };
        if validation == "TODO" {
            continue;
        }
        if !["valid", "refused"].contains(&validation) {
            return Err(row_err("validation is valid or refused"));
        }
        if !["Success", "Failed", "-"].contains(&outcome) {
            return Err(row_err("outcome is Success, Failed or -"));
        }
        let (kind, text) = match reason.split_once(": ") {
            _ if reason == "-" => (None, String::new()),
            Some((k, t)) => match ReasonKind::parse(k) {
                Some(k) => (Some(k), t.to_string()),
                None => {
                    return Err(row_err(
                        "reason is - or KIND: TEXT (defect, attachment, emulator, unsupported)",
                    ));
                }
            },
            None => return Err(row_err("reason is - or KIND: TEXT")),
        };
        out.push(Expected {
            file: file.to_string(),
            validation: validation.to_string(),
            outcome: outcome.to_string(),
            kind,
            text,
        });
    }
    Ok(out)
}

/// How a verdict differs from its expected row (`None` when it matches). `ran` is false when
/// the documents were only validated: then only the validation is compared.
pub fn difference(v: &Verdict, e: &Expected, ran: bool) -> Option<String> {
    let (validation, outcome, reason) = v.row();
    let shown = || {
        format!(
            "got {validation} {outcome} {reason:?}, expected {} {} {}: {}",
            e.validation,
            e.outcome,
            e.kind.map_or("-", ReasonKind::as_str),
            e.text
        )
    };
    if validation != e.validation {
        return Some(shown());
    }
    if !v.valid || ran {
        if v.valid && outcome != e.outcome {
            return Some(shown());
        }
        let (kind, text) = match (&v.outcome, v.valid) {
            (_, false) => (Some(v.refusal_kind()), v.reason()),
            (Some(Outcome::Failed { kind, reason }), true) => (Some(*kind), reason.clone()),
            _ => (None, String::new()),
        };
        let wanted = match e.kind {
            Some(ReasonKind::Emulator) => e.text.rsplit('.').next().unwrap_or(&e.text),
            _ => e.text.as_str(),
        };
        if kind != e.kind || !text.contains(wanted) {
            return Some(shown());
        }
    }
    None
}

pub(super) fn conformance(
    args: ConformanceArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let options = super::runbook_input::load_options(&settings, &catalog, &args.attachments);
    let files: Vec<PathBuf> = corpus_files(&args.folder)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", args.folder.display())))?
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.iter().any(|o| file_name(p).contains(o)))
        .collect();
    let expected = match &args.expected {
        Some(path) => Some(read_expected(path).map_err(|e| CliError::Invalid(e.to_string()))?),
        None => None,
    };
    let setup = match &args.aws_endpoint {
        Some(endpoint) => Some(RunSetup {
            endpoint: endpoint.clone(),
            fixtures: args.fixtures.clone(),
            python: args.fixture_python.clone(),
            scriptbox: std::env::current_exe()
                .map_err(|e| CliError::Environment(anyhow::anyhow!("the scriptbox binary: {e}")))?,
            corpus: args.folder.clone(),
            attachments: args.attachments.clone(),
            run_timeout: Duration::from_secs(args.run_timeout),
        }),
        None => None,
    };
    let width = files
        .iter()
        .map(|p| file_name(p).len())
        .max()
        .unwrap_or(4)
        .min(100);
    println!(
        "{:<width$}  {:<7}  {:<7}  REASON",
        "FILE", "VERDICT", "OUTCOME"
    );
    let mut verdicts = Vec::new();
    for path in &files {
        let v = match &setup {
            Some(setup) => run_document(setup, path, &options),
            None => validate_file(path, &options),
        };
        let (validation, outcome, reason) = v.row();
        println!(
            "{:<width$}  {validation:<7}  {outcome:<7}  {reason}",
            v.file
        );
        for n in &v.notes {
            println!("{:<width$}    note: {n}", "");
        }
        verdicts.push(v);
    }
    print_tally(&verdicts);
    let differences = expected.map(|e| print_differences(&verdicts, &e, setup.is_some()));
    Ok(match differences {
        Some(n) if n > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// Prints the counts: valid / refused, Success / Failed, refusals and failures by kind.
fn print_tally(verdicts: &[Verdict]) {
    let valid = verdicts.iter().filter(|v| v.valid).count();
    println!(
        "\n{} documents: {valid} valid, {} refused",
        verdicts.len(),
        verdicts.len() - valid
    );
    let ran: Vec<&Outcome> = verdicts.iter().filter_map(|v| v.outcome.as_ref()).collect();
    if !ran.is_empty() {
        let success = ran.iter().filter(|o| ***o == Outcome::Success).count();
        println!(
            "{} run: {success} Success, {} Failed",
            ran.len(),
            ran.len() - success
        );
    }
    let mut by_kind: Vec<(String, usize)> = Vec::new();
    for v in verdicts {
        let key = match (&v.outcome, v.valid) {
            (_, false) => format!("refused, {}", v.refusal_kind().as_str()),
            (Some(Outcome::Failed { kind, .. }), true) => format!("Failed, {}", kind.as_str()),
            _ => continue,
        };
        match by_kind.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => by_kind.push((key, 1)),
        }
    }
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if !by_kind.is_empty() {
        println!("not Success, by kind:");
    }
    for (k, n) in by_kind {
        println!("  {n:>3}  {k}");
    }
}

/// Prints each difference from the expected rows; returns how many there are.
fn print_differences(verdicts: &[Verdict], expected: &[Expected], ran: bool) -> usize {
    let mut n = 0;
    for v in verdicts {
        match expected.iter().find(|e| e.file == v.file) {
            None => println!("not asserted (no row, or TODO): {}", v.file),
            Some(e) => {
                if let Some(d) = difference(v, e, ran) {
                    println!("DIFFERENT: {}: {d}", v.file);
                    n += 1;
                }
            }
        }
    }
    println!(
        "{n} difference{} from the expected outcomes",
        if n == 1 { "" } else { "s" }
    );
    n
}

/// The failure message of a run's GetAutomationExecution-shaped JSON: the execution's, else
/// the first failed step's; the kind as [`classify`] tells.
pub fn outcome_of_execution(execution: &Value) -> Outcome {
    let e = execution.get("AutomationExecution").unwrap_or(execution);
    let status = e
        .get("AutomationExecutionStatus")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status == "Success" {
        return Outcome::Success;
    }
    let mut messages: Vec<String> = Vec::new();
    if let Some(Value::Array(steps)) = e.get("StepExecutions") {
        for s in steps {
            let st = s.get("StepStatus").and_then(Value::as_str).unwrap_or("");
            if let Some(m) = s.get("FailureMessage").and_then(Value::as_str) {
                if st != "Success" {
                    let name = s.get("StepName").and_then(Value::as_str).unwrap_or("");
                    messages.push(format!("step {name} {st}: {m}"));
                }
            }
        }
    }
    if let Some(m) = e.get("FailureMessage").and_then(Value::as_str) {
        if !messages.iter().any(|x| x.contains(m)) {
            messages.insert(0, m.to_string());
        }
    }
    if messages.is_empty() {
        messages.push(format!(
            "the execution ended {status:?} without a failure message"
        ));
    }
    let text = messages.join(" | ");
    let kind = classify(&text);
    // The operation first, so that a long traceback cut to one line still names it.
    let reason = match (kind, failed_operation(&text)) {
        (ReasonKind::Emulator, Some(op)) => format!("{op}: {text}"),
        _ => text,
    };
    Outcome::Failed {
        kind,
        reason: one_line(&reason, 400),
    }
}

/// `X` of botocore's "... when calling the X operation".
fn failed_operation(text: &str) -> Option<&str> {
    let rest = &text[text.find("when calling the ")? + "when calling the ".len()..];
    let op = rest.split(' ').next()?;
    (!op.is_empty() && op.chars().all(|c| c.is_ascii_alphanumeric())).then_some(op)
}

/// The kind of a run's failure from its message: an emulator gap when the endpoint answered
/// that it lacks the operation (moto: HTTP 500 with HTML, or 404; scriptbox's own
/// `EmulatorLacksOperation`; an answer botocore cannot parse), an attachment when one (or a
/// child runbook) is missing, an environment gap when a runtime's image is not built, else a
/// defect of the document.
pub fn classify(text: &str) -> ReasonKind {
    let lower = text.to_ascii_lowercase();
    let emulator = [
        "emulatorlacksoperation",
        "not implemented",
        "notimplemented",
        "does not implement",
        "emulator lacks",
    ];
    let http_gap =
        lower.contains("when calling the") && (lower.contains("(500)") || lower.contains("(404)"));
    if http_gap || emulator.iter().any(|m| lower.contains(m)) {
        ReasonKind::Emulator
    } else if lower.contains("enginefailure") && lower.contains("is not present") {
        ReasonKind::Environment
    } else if lower.contains("attachment") && lower.contains("not found")
        || lower.contains("automationdefinitionnotfound")
    {
        // A child runbook that was never published is missing as an attachment is.
        ReasonKind::Attachment
    } else {
        ReasonKind::Defect
    }
}

/// `text` on one line, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_are_classified_by_what_they_name() {
        let gap = outcome_of_execution(&json!({"AutomationExecutionStatus": "Failed",
            "StepExecutions": [{"StepName": "a", "StepStatus": "Failed",
              "FailureMessage": "An error occurred (500) when calling the DescribeInstanceInformation operation (reached max retries: 4): <html>"}]}));
        let Outcome::Failed { kind, reason } = gap else {
            panic!()
        };
        assert_eq!(kind, ReasonKind::Emulator);
        assert!(
            reason
                .starts_with("DescribeInstanceInformation: step a Failed: An error occurred (500)"),
            "{reason}"
        );
        assert_eq!(
            classify("NameError: name 'x' is not defined"),
            ReasonKind::Defect
        );
        assert_eq!(
            outcome_of_execution(&json!({"AutomationExecutionStatus": "Success"})),
            Outcome::Success
        );
    }

    #[test]
    fn expected_rows_are_compared_by_kind_and_text() {
        let dir = std::env::temp_dir().join(format!("sb-expected-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("expected.tsv");
        std::fs::write(&path, "# c\nfile\tvalidation\toutcome\treason\na.yaml\tvalid\tFailed\temulator: ssm.DescribeInstanceInformation\nb.yaml\tTODO\tTODO\tTODO\nc.yaml\tvalid\tSuccess\t-\n").unwrap();
        let rows = read_expected(&path).unwrap();
        assert_eq!(rows.len(), 2);
        let mut v = Verdict {
            file: "a.yaml".into(),
            valid: true,
            problems: vec![],
            notes: vec![],
            outcome: Some(Outcome::Failed {
                kind: ReasonKind::Emulator,
                reason: "(500) when calling the DescribeInstanceInformation operation".into(),
            }),
        };
        assert_eq!(difference(&v, &rows[0], true), None);
        v.outcome = Some(Outcome::Success);
        assert!(difference(&v, &rows[0], true).is_some());
        // Validation only: the outcome is not compared.
        assert_eq!(difference(&v, &rows[0], false), None);
        std::fs::write(&path, "a.yaml\tvalid\tSuccess\n").unwrap();
        assert!(
            read_expected(&path)
                .unwrap_err()
                .to_string()
                .contains("line 1: a row has 4")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
