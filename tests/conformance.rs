//! Conformance that runs (issue 14): every document of the shared corpus
//! (`../shared/conformance/runbooks`) validated, then run against a real moto server after its
//! fixture (`tests/conformance/fixtures/<stem>.py`), on the real engine; each outcome asserted
//! against `tests/conformance/expected.tsv` (the contract: `tests/conformance/README.md`).
//! A user's clone has no `../shared`: the tests say so and skip.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::moto::Moto;
use scriptbox::cli::{Outcome, RunSetup, Verdict, difference, read_expected, run_document};
use scriptbox::runbook::document::LoadOptions;
use scriptbox::runtimes::Catalog;

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_or_skip() -> Option<PathBuf> {
    let dir = root().join("../shared/conformance");
    if dir.join("runbooks").is_dir() {
        return Some(dir);
    }
    if std::env::var("SCRIPTBOX_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
        panic!(
            "SCRIPTBOX_REQUIRE_CONFORMANCE=1 but {} is absent",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: the real-runbook corpus {} is not beside this clone",
        dir.join("runbooks").display()
    );
    None
}

fn files(corpus: &Path) -> Vec<PathBuf> {
    scriptbox::cli::conformance::corpus_files(&corpus.join("runbooks")).unwrap()
}

fn print_row(v: &Verdict) {
    let (validation, outcome, reason) = v.row();
    eprintln!("{}\t{validation}\t{outcome}\t{reason}", v.file);
}

/// Every expected row's validation holds without running anything (no moto, no engine).
#[test]
fn every_document_validates_or_is_refused_as_expected() {
    let Some(corpus) = corpus_or_skip() else {
        return;
    };
    let expected = read_expected(&root().join("tests/conformance/expected.tsv")).unwrap();
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: Some(corpus.join("attachments")),
    };
    let mut differences = Vec::new();
    for path in files(&corpus) {
        let v = scriptbox::cli::conformance::validate_file(&path, &options);
        if let Some(e) = expected.iter().find(|e| e.file == v.file) {
            if let Some(d) = difference(&v, e, false) {
                differences.push(format!("{}: {d}", v.file));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Each document run against moto ends as `expected.tsv` says (rows still TODO are printed,
/// not asserted).
#[test]
fn every_document_runs_against_moto_as_expected() {
    let Some(corpus) = corpus_or_skip() else {
        return;
    };
    // AWS's managed policies (AdministratorAccess...) exist in every account; moto loads them
    // only when asked.
    let Some(moto) = Moto::start_with_env(&[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")]) else {
        return;
    };
    let expected = read_expected(&root().join("tests/conformance/expected.tsv")).unwrap();
    let setup = RunSetup {
        endpoint: moto.url(),
        fixtures: root().join("tests/conformance/fixtures"),
        python: root().join("target/moto/venv/bin/python"),
        scriptbox: PathBuf::from(BIN),
        corpus: corpus.join("runbooks"),
        attachments: Some(corpus.join("attachments")),
        run_timeout: Duration::from_secs(600),
    };
    let catalog = Catalog::builtin();
    let options = LoadOptions {
        catalog: &catalog,
        max_timeout_secs: 600,
        attachments_dir: Some(corpus.join("attachments")),
    };
    let only = std::env::var("SCRIPTBOX_CONFORMANCE_ONLY").unwrap_or_default();
    let mut differences = Vec::new();
    let mut success = 0;
    for path in files(&corpus) {
        if !path.to_string_lossy().contains(&only) {
            continue;
        }
        let v = run_document(&setup, &path, &options);
        print_row(&v);
        success += usize::from(v.outcome == Some(Outcome::Success));
        match expected.iter().find(|e| e.file == v.file) {
            Some(e) => {
                if let Some(d) = difference(&v, e, true) {
                    differences.push(format!("{}: {d}", v.file));
                }
            }
            None => eprintln!("not asserted yet (TODO row): {}", v.file),
        }
    }
    eprintln!("{success} documents reached Success");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
