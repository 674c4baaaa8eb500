//! `scriptbox conformance`: validate every runbook of a folder and tally the verdicts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::config::Settings;
use crate::runbook::{self as rb, Problem, ProblemKind};
use crate::runtimes::Catalog;

/// `scriptbox conformance`
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// A folder of runbooks (INDEX.tsv and other non-runbook files are skipped).
    pub folder: PathBuf,
    /// Where attachments are (default: each document's folder).
    #[arg(long, value_name = "DIR")]
    pub attachments: Option<PathBuf>,
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
}

/// Validates every runbook file of a folder, sorted by name.
pub fn conformance_verdicts(
    folder: &Path,
    options: &rb::document::LoadOptions<'_>,
) -> std::io::Result<Vec<Verdict>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy().to_ascii_lowercase();
            n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json")
        })
        .collect();
    files.sort();
    Ok(files
        .iter()
        .map(|path| {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match rb::document::load_file(path, options) {
                Ok(_) => Verdict {
                    file,
                    valid: true,
                    problems: vec![],
                },
                Err(r) => Verdict {
                    file,
                    valid: false,
                    problems: r.problems,
                },
            }
        })
        .collect())
}

pub(super) fn conformance(
    args: ConformanceArgs,
    settings: Settings,
    catalog: Catalog,
) -> Result<ExitCode, CliError> {
    let options = super::runbook_input::load_options(&settings, &catalog, &args.attachments);
    let verdicts = conformance_verdicts(&args.folder, &options)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", args.folder.display())))?;
    let width = verdicts
        .iter()
        .map(|v| v.file.len())
        .max()
        .unwrap_or(4)
        .min(100);
    println!("{:<width$}  {:<7}  REASON", "FILE", "VERDICT");
    for v in &verdicts {
        println!(
            "{:<width$}  {:<7}  {}",
            v.file,
            if v.valid { "valid" } else { "refused" },
            v.reason()
        );
    }
    let valid = verdicts.iter().filter(|v| v.valid).count();
    println!(
        "\n{} documents: {valid} valid, {} refused",
        verdicts.len(),
        verdicts.len() - valid
    );
    let mut by_reason: Vec<(String, usize)> = Vec::new();
    for v in verdicts.iter().filter(|v| !v.valid) {
        let mut reasons: Vec<String> = v.problems.iter().filter_map(|p| p.what.clone()).collect();
        if v.problems
            .iter()
            .any(|p| p.kind != ProblemKind::Unsupported)
        {
            reasons.push("a document defect (see its reason)".into());
        }
        reasons.sort();
        reasons.dedup();
        for r in reasons {
            match by_reason.iter_mut().find(|(k, _)| *k == r) {
                Some((_, n)) => *n += 1,
                None => by_reason.push((r, 1)),
            }
        }
    }
    by_reason.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("refusals by reason (a document may have several):");
    for (r, n) in by_reason {
        println!("  {n:>3}  {r}");
    }
    Ok(ExitCode::SUCCESS)
}
