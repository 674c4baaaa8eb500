//! A schema 0.3 runbook: read from YAML or JSON, checked in full before anything runs.
//!
//! `load` collects every problem (syntax, schema, references, attachments, each executeScript
//! step's inputs) and refuses the document with all of them, or returns a [`Runbook`] whose
//! steps are known to be runnable (apart from what only run time can tell: values of `{{ }}`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::actions::branch::BranchSpec;
use super::actions::loop_steps::{self, LoopSpec};
use super::actions::update_variable;
use super::actions::{Action, CheckCx, DocFacts, StepHead};
use super::interpolate::{self, Ref};
use super::parameters::{self, ParamDecl};
use super::selector::{Selector, ValueType, short};
use super::yaml::{self, Format, Kind, Node, Pos};
use super::{Problem, ProblemKind, Refused, step_context};
use crate::runtimes::Catalog;
use crate::step::{self, ValidatedStep};

/// The most attempts a step may ask for with `maxAttempts` **(ours: AWS documents no maximum)**;
/// every attempt's output is kept, so the bound keeps a failing step's log bounded too.
pub const MAX_ATTEMPTS: u32 = 100;

/// The largest `timeoutSeconds` of any step: aws:pause's and aws:approve's maximum (AWS: 30
/// days); executeScript steps are held to the operator's `limits.max_timeout_seconds` besides,
/// and the whole execution to `limits.max_runbook_seconds`.
pub const MAX_STEP_TIMEOUT_SECS: i64 = 2_592_000;

const TOP_KEYS: [&str; 8] = [
    "schemaVersion",
    "description",
    "assumeRole",
    "parameters",
    "variables",
    "mainSteps",
    "outputs",
    "files",
];

/// The keys of a variable's declaration under `variables`.
const VARIABLE_KEYS: [&str; 3] = ["type", "default", "description"];

const STEP_KEYS: [&str; 12] = [
    "name",
    "action",
    "inputs",
    "outputs",
    "maxAttempts",
    "timeoutSeconds",
    "onFailure",
    "onCancel",
    "isEnd",
    "nextStep",
    "isCritical",
    "description",
];

/// What a step does when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the execution (default).
    Abort,
    /// Go on with the next step.
    Continue,
    /// Go to the named step.
    Step(String),
}

impl OnFailure {
    /// AWS's spelling.
    pub fn as_string(&self) -> String {
        match self {
            OnFailure::Abort => "Abort".into(),
            OnFailure::Continue => "Continue".into(),
            OnFailure::Step(s) => format!("step:{s}"),
        }
    }
}

/// What a step does when it is cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCancel {
    /// Stop the execution (default).
    Abort,
    /// Run the named step (and what follows it).
    Step(String),
}

/// A declared output of an executeScript step.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    /// `Name`.
    pub name: String,
    /// `Selector`.
    pub selector: Selector,
    /// `Type`.
    pub ty: ValueType,
}

/// What a step does: its action, with what the action's check read from its inputs.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// `aws:executeScript`; `validated` when its inputs hold no `{{ }}` (checked at load).
    ExecuteScript {
        /// The inputs validated at load time, when they are fully known.
        validated: Option<Box<ValidatedStep>>,
    },
    /// `aws:sleep`.
    Sleep,
    /// `aws:branch`.
    Branch(BranchSpec),
    /// `aws:loop`: how it repeats, and its inner steps (read by the same step checker).
    Loop(Box<LoopSpec>),
    /// An action whose load-time check keeps nothing beyond the step's `inputs` (the AWS API
    /// actions, aws:pause...): they read the resolved inputs again at run time.
    Checked(Action),
}

/// One step.
#[derive(Debug, Clone)]
pub struct StepDecl {
    /// Position in `mainSteps`.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// Where the step starts.
    pub pos: Pos,
    /// What it does.
    pub kind: StepKind,
    /// `inputs`, as written (with `{{ }}`).
    pub inputs: Map<String, Value>,
    /// `outputs`.
    pub outputs: Vec<OutputDecl>,
    /// `maxAttempts` (default 1).
    pub max_attempts: u32,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<i64>,
    /// `onFailure`.
    pub on_failure: OnFailure,
    /// `onCancel`.
    pub on_cancel: OnCancel,
    /// `isEnd`.
    pub is_end: bool,
    /// `nextStep`.
    pub next_step: Option<String>,
    /// `isCritical` (default true; false when onFailure is Continue).
    pub is_critical: bool,
}

impl StepDecl {
    /// The step's action.
    pub fn action_kind(&self) -> Action {
        match self.kind {
            StepKind::ExecuteScript { .. } => Action::ExecuteScript,
            StepKind::Sleep => Action::Sleep,
            StepKind::Branch(_) => Action::Branch,
            StepKind::Loop(_) => Action::Loop,
            StepKind::Checked(action) => action,
        }
    }
}

/// A declared attachment (`files`).
#[derive(Debug, Clone)]
pub struct FileDecl {
    /// The file name.
    pub name: String,
    /// `checksums.sha256`, lower-case hex.
    pub sha256: String,
    /// `size`, if given.
    pub size: Option<u64>,
    /// Where it is declared.
    pub pos: Pos,
}

/// A runbook variable declared under the top-level `variables` (read with
/// `{{ variable:NAME }}`, set by aws:updateVariable).
///
/// **(ours)**: `type` is required and one of the six output types; `default` is optional and,
/// when given, a value of the type within aws:updateVariable's limits (a variable without one
/// has no value until set: reading it fails the step).
#[derive(Debug, Clone, PartialEq)]
pub struct VariableDecl {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub pos: Pos,
    /// `type`.
    pub ty: ValueType,
    /// `default`.
    pub default: Option<Value>,
    /// `description`.
    pub description: Option<String>,
}

/// A document-level output (`step.Output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocOutput {
    /// As written.
    pub text: String,
    /// The step.
    pub step: String,
    /// The output.
    pub output: String,
}

/// Something the document does that AWS's reference pages forbid or limit, accepted because
/// real documents (AWS's own among them) do it: `validate` and `run` show it, it refuses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where in the text.
    pub pos: Pos,
    /// Which part: `mainSteps[2] (step "copyImage"): inputs.Script`.
    pub context: String,
    /// What was accepted, the rule it departs from, and what scriptbox does instead.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pos.known() {
            write!(f, "{}: ", self.pos)?;
        }
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        f.write_str(&self.message)
    }
}

/// A checked runbook, ready to run.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// The document's name (its file name without extension).
    pub name: String,
    /// YAML or JSON.
    pub format: Format,
    /// `description`.
    pub description: Option<String>,
    /// `assumeRole`, as written (not used locally: scriptbox has no AWS credentials).
    pub assume_role: Option<Value>,
    /// `parameters`.
    pub parameters: Vec<ParamDecl>,
    /// `variables`.
    pub variables: Vec<VariableDecl>,
    /// `mainSteps`.
    pub steps: Vec<StepDecl>,
    /// `outputs`.
    pub outputs: Vec<DocOutput>,
    /// `files`.
    pub files: Vec<FileDecl>,
    /// The attachments' bytes, verified against `files`.
    pub attachments: HashMap<String, Vec<u8>>,
    /// What was accepted against a reference page's rule (see [`Note`]), in document order.
    pub notes: Vec<Note>,
}

impl Runbook {
    /// The index of a step by name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

/// What `load` needs besides the text.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    /// The runtime catalog.
    pub catalog: &'a Catalog,
    /// The operator's ceiling for `timeoutSeconds`.
    pub max_timeout_secs: u64,
    /// Where attachments are looked for (default: the document's folder).
    pub attachments_dir: Option<PathBuf>,
}

/// Reads and checks a runbook file.
pub fn load_file(path: &Path, options: &LoadOptions<'_>) -> Result<Runbook, Refused> {
    let bytes = std::fs::read(path).map_err(|e| Refused {
        problems: vec![Problem::invalid(
            Pos::default(),
            "",
            format!("cannot read {}: {e}", path.display()),
        )],
    })?;
    let text = String::from_utf8(bytes).map_err(|_| Refused {
        problems: vec![Problem {
            pos: Pos::default(),
            context: String::new(),
            message: format!("{} is not UTF-8 text", path.display()),
            kind: ProblemKind::Syntax,
            what: None,
        }],
    })?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = file_name
        .rsplit_once('.')
        .map(|(stem, _)| stem)
        .unwrap_or(file_name)
        .to_string();
    let dir = options
        .attachments_dir
        .clone()
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(
        &text,
        &name,
        Format::detect(file_name, &text),
        &dir,
        options,
    )
}

/// Reads and checks a runbook from text; attachments are looked for in `attachments_dir`.
pub fn load_str(
    text: &str,
    name: &str,
    format: Format,
    attachments_dir: &Path,
    options: &LoadOptions<'_>,
) -> Result<Runbook, Refused> {
    let (node, read_problems) = yaml::read(text, format);
    let mut problems: Vec<Problem> = read_problems
        .into_iter()
        .map(|p| Problem {
            pos: p.pos,
            context: String::new(),
            kind: if p.unsupported_tag.is_some() {
                ProblemKind::Unsupported
            } else if node.is_none() {
                ProblemKind::Syntax
            } else {
                ProblemKind::Invalid
            },
            what: p.unsupported_tag,
            message: p.message,
        })
        .collect();
    let Some(root) = node else {
        if problems.is_empty() {
            problems.push(Problem::invalid(
                Pos::default(),
                "",
                "the document is empty",
            ));
        }
        return Err(Refused { problems });
    };
    let mut checker = Checker {
        problems,
        notes: Vec::new(),
        all_steps: Vec::new(),
        variables: HashMap::new(),
        declared_files: Vec::new(),
        format,
        options,
    };
    let runbook = checker.document(&root, name, attachments_dir);
    let mut problems = checker.problems;
    problems.sort_by_key(|p| (p.pos.line == 0, p.pos));
    let mut notes = checker.notes;
    notes.sort_by_key(|n| (n.pos.line == 0, n.pos));
    match runbook {
        Some(mut r) if problems.is_empty() => {
            r.notes = notes;
            Ok(r)
        }
        _ => Err(Refused { problems }),
    }
}

struct Checker<'o> {
    problems: Vec<Problem>,
    /// What was accepted against a reference page's rule.
    notes: Vec<Note>,
    /// Every step's name in document order, a loop's inner steps right after the loop,
    /// including steps refused (unsupported action...), so that references to them are not
    /// reported a second time. A step reads outputs of the steps before it in this order.
    all_steps: Vec<String>,
    /// The declared variables' types (also of declarations whose default has problems).
    variables: HashMap<String, ValueType>,
    /// Every name under `files`, including those with problems.
    declared_files: Vec<String>,
    format: Format,
    options: &'o LoadOptions<'o>,
}

impl Checker<'_> {
    fn invalid(&mut self, pos: Pos, ctx: impl Into<String>, msg: impl Into<String>) {
        self.problems.push(Problem::invalid(pos, ctx, msg));
    }

    fn document(&mut self, root: &Node, name: &str, dir: &Path) -> Option<Runbook> {
        let Kind::Map(entries) = &root.kind else {
            self.invalid(
                root.pos,
                "",
                format!(
                    "a runbook is a map (schemaVersion, mainSteps, ...), not {}",
                    root.type_name()
                ),
            );
            return None;
        };
        self.top_keys_and_schema(root, entries);
        let description = root.get("description").and_then(|n| match &n.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.invalid(n.pos, "description", "must be a string");
                None
            }
        });
        let assume_role = root.get("assumeRole").map(Node::to_json);

        let (params, param_names) = self.parameters(root);
        let variables = self.variables(root.get("variables"));

        let files = self.files(root.get("files"));
        let attachments = self.attachments(&files, dir);

        let (mut steps, step_nodes) = self.main_steps(root);
        self.cross_check(&steps, &step_nodes, &param_names, &files, &attachments);
        self.prevalidate(&mut steps, &step_nodes, &files, &attachments);
        let flat = flat_steps(&steps);
        if let Some(role) = root.get("assumeRole") {
            self.check_refs(
                &role.to_json(),
                role.pos,
                "assumeRole",
                &param_names,
                &flat,
                None,
            );
        }
        let outputs = self.doc_outputs(root.get("outputs"), &flat);
        Some(Runbook {
            name: name.to_string(),
            format: self.format,
            description,
            assume_role,
            parameters: params,
            variables,
            steps,
            outputs,
            files,
            attachments,
            notes: Vec::new(),
        })
    }

    /// Checks the top-level keys and `schemaVersion`.
    fn top_keys_and_schema(&mut self, root: &Node, entries: &[(String, Pos, Node)]) {
        for (k, pos, _) in entries {
            if !TOP_KEYS.contains(&k.as_str()) {
                self.invalid(
                    *pos,
                    "",
                    format!(
                        "unknown top-level key {k:?}; known keys: {}",
                        TOP_KEYS.join(", ")
                    ),
                );
            }
        }
        match root.get("schemaVersion") {
            None => self.invalid(
                root.pos,
                "schemaVersion",
                "is required: '0.3' for an Automation runbook",
            ),
            Some(n) => match &n.kind {
                Kind::Str(s) if s == "0.3" => {}
                // A bare 0.3 is a YAML number; its meaning is not in doubt (ours: accepted).
                Kind::Float(f) if (*f - 0.3).abs() < 1e-9 => {}
                _ => {
                    let shown = short(&n.to_json());
                    self.problems.push(Problem::unsupported(
                        n.pos,
                        "schemaVersion",
                        format!("schemaVersion {shown}"),
                        format!(
                            "{shown} is not an Automation runbook's schema; scriptbox runs schemaVersion '0.3' (Command documents use 2.x)"
                        ),
                    ));
                }
            },
        }
    }

    /// `parameters`: the declarations, and every declared name (also of declarations with
    /// problems, so that references to them are not reported twice).
    fn parameters(&mut self, root: &Node) -> (Vec<ParamDecl>, HashSet<String>) {
        let mut params = Vec::new();
        match root.get("parameters").map(|n| (n, &n.kind)) {
            None | Some((_, Kind::Null)) => {}
            Some((_, Kind::Map(entries))) => {
                for (k, pos, v) in entries {
                    if let Some(d) = parameters::declare(k, *pos, v, &mut self.problems) {
                        params.push(d);
                    }
                }
            }
            Some((n, _)) => self.invalid(
                n.pos,
                "parameters",
                "must be a map of parameter name → declaration",
            ),
        }
        // Names are known even for declarations with problems, so references are not
        // reported twice.
        let param_names: HashSet<String> = match root.get("parameters").map(|n| &n.kind) {
            Some(Kind::Map(entries)) => entries.iter().map(|(k, _, _)| k.clone()).collect(),
            _ => HashSet::new(),
        };
        (params, param_names)
    }

    /// `mainSteps`: the steps read (a refused step is left out), and every item's node.
    fn main_steps<'n>(&mut self, root: &'n Node) -> (Vec<StepDecl>, Vec<&'n Node>) {
        if let Some(Kind::Seq(items)) = root.get("mainSteps").map(|n| &n.kind) {
            self.all_steps = flat_names(items);
        }
        let mut steps = Vec::new();
        match root.get("mainSteps").map(|n| (n, &n.kind)) {
            None => self.invalid(root.pos, "mainSteps", "is required"),
            Some((_, Kind::Seq(items))) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(s) = self.step(i, item, None) {
                        steps.push(s);
                    }
                }
            }
            Some((n, _)) => self.invalid(n.pos, "mainSteps", "must be a non-empty list of steps"),
        }
        let step_nodes: Vec<&Node> = match root.get("mainSteps").map(|n| &n.kind) {
            Some(Kind::Seq(items)) => items.iter().collect(),
            _ => vec![],
        };
        (steps, step_nodes)
    }

    fn files(&mut self, node: Option<&Node>) -> Vec<FileDecl> {
        let mut out = Vec::new();
        let Some(node) = node else { return out };
        let Kind::Map(entries) = &node.kind else {
            self.invalid(
                node.pos,
                "files",
                "must be a map of file name → {checksums: {sha256: ...}}",
            );
            return out;
        };
        for (name, pos, decl) in entries {
            self.declared_files.push(name.clone());
            let ctx = format!("files.{name}");
            // AWS's own documents spell the key `sha256` and `SHA256`.
            let sha = decl.get("checksums").and_then(|c| match &c.kind {
                Kind::Map(keys) => keys
                    .iter()
                    .find(|(k, _, _)| k.eq_ignore_ascii_case("sha256"))
                    .map(|(_, _, v)| v),
                _ => None,
            });
            let sha256 = match sha.map(|s| (s, &s.kind)) {
                Some((_, Kind::Str(s)))
                    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    s.to_ascii_lowercase()
                }
                Some((n, _)) => {
                    self.invalid(
                        n.pos,
                        format!("{ctx}.checksums.sha256"),
                        format!(
                            "{} is not a SHA-256 (64 hex digits); it looks like a placeholder: put the file's real checksum (`sha256sum {name}`)",
                            short(&n.to_json())
                        ),
                    );
                    continue;
                }
                None => {
                    self.invalid(*pos, &ctx, "checksums.sha256 is required");
                    continue;
                }
            };
            if let Some(Kind::Map(keys)) = decl.get("checksums").map(|c| &c.kind) {
                for (k, kpos, _) in keys {
                    if !k.eq_ignore_ascii_case("sha256") {
                        self.invalid(
                            *kpos,
                            format!("{ctx}.checksums"),
                            format!("unknown checksum {k:?} (only sha256)"),
                        );
                    }
                }
            }
            let size = match decl.get("size").map(|n| (n, &n.kind)) {
                None => None,
                Some((_, Kind::Int(i))) if *i >= 0 => u64::try_from(*i).ok(),
                Some((n, _)) => {
                    self.invalid(
                        n.pos,
                        format!("{ctx}.size"),
                        "must be a whole number of bytes",
                    );
                    None
                }
            };
            out.push(FileDecl {
                name: name.clone(),
                sha256,
                size,
                pos: *pos,
            });
        }
        if out.len() > step::MAX_ATTACHMENTS {
            self.invalid(
                node.pos,
                "files",
                format!("at most {} attachments per document", step::MAX_ATTACHMENTS),
            );
        }
        out
    }

    fn attachments(&mut self, files: &[FileDecl], dir: &Path) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        for f in files {
            let ctx = format!("files.{}", f.name);
            if f.name.contains(['/', '\\']) || f.name.starts_with('.') {
                self.invalid(f.pos, &ctx, "an attachment name is a plain file name");
                continue;
            }
            let path = dir.join(&f.name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    self.invalid(
                        f.pos,
                        &ctx,
                        format!("attachment not found: cannot read {}: {e} (give the folder with --attachments DIR)", path.display()),
                    );
                    continue;
                }
            };
            let actual = hex(&Sha256::digest(&bytes));
            if actual != f.sha256 {
                self.invalid(
                    f.pos,
                    &ctx,
                    format!(
                        "checksum mismatch: {} has sha256 {actual}, the document declares {}",
                        path.display(),
                        f.sha256
                    ),
                );
                continue;
            }
            if let Some(size) = f.size {
                if u64::try_from(bytes.len()).ok() != Some(size) {
                    self.invalid(
                        f.pos,
                        &ctx,
                        format!(
                            "size mismatch: {} is {} bytes, the document declares {size}",
                            path.display(),
                            bytes.len()
                        ),
                    );
                    continue;
                }
            }
            out.insert(f.name.clone(), bytes);
        }
        out
    }

    /// One step: of `mainSteps`, or (with its loop's context as `parent`) of a loop's `Steps`.
    fn step(&mut self, index: usize, node: &Node, parent: Option<&str>) -> Option<StepDecl> {
        let Kind::Map(entries) = &node.kind else {
            self.invalid(
                node.pos,
                step_ctx(parent, index, ""),
                format!("a step is a map, not {}", node.type_name()),
            );
            return None;
        };
        let name = node
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string();
        let ctx = step_ctx(parent, index, &name);
        self.step_keys_and_name(node, entries, &name, &ctx);
        let written = node.get("action").and_then(Node::as_str).unwrap_or("");
        let action = self.step_action(node, written, &ctx)?;
        let inputs_node = node.get("inputs");
        let mut inputs = self.step_inputs(node, &ctx);
        let max_attempts = self
            .prop_int(node, &ctx, "maxAttempts", 1, i64::from(MAX_ATTEMPTS))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1);
        let timeout_seconds = self.prop_int(node, &ctx, "timeoutSeconds", 1, MAX_STEP_TIMEOUT_SECS);
        let is_end = self.prop_bool(node, &ctx, "isEnd").unwrap_or(false);
        let explicit_critical = self.prop_bool(node, &ctx, "isCritical");
        let next_step = self.prop_target(node, &ctx, "nextStep").map(|(s, _)| s);
        let on_failure = self.on_failure(node, &ctx);
        let on_cancel = self.on_cancel(node, &ctx);
        let is_critical = explicit_critical.unwrap_or(on_failure != OnFailure::Continue);

        let outputs = self.step_outputs(node.get("outputs"), &ctx, action);
        let head = StepHead {
            ctx: &ctx,
            node,
            inputs: &inputs,
            inputs_node,
        };
        let mut kind = action.and_then(|a| a.check(&mut self.check_cx(), &head));
        if let Some(StepKind::Loop(spec)) = &mut kind {
            spec.steps = self.inner_steps(node, &ctx, parent.is_some());
            // Read as steps and as a condition: what is substituted at the loop's start is the
            // rest (Iterators, IteratorDataType, MaxIterations).
            inputs.remove("Steps");
            inputs.remove("LoopCondition");
        }
        let timeout_seconds = self.capped_script_timeout(node, &ctx, action, timeout_seconds);
        // A step with problems in its properties is kept (the document is refused anyway), so
        // that its inputs are checked too and every problem is reported.
        Some(StepDecl {
            index,
            name,
            pos: node.pos,
            kind: kind?,
            inputs,
            outputs,
            max_attempts,
            timeout_seconds,
            on_failure,
            on_cancel,
            is_end,
            next_step,
            is_critical,
        })
    }

    /// executeScript runs at most 600 s (AWS's reference page), yet AWS-owned documents declare
    /// 1200: a larger `timeoutSeconds` is accepted, capped at the operator's ceiling
    /// (`limits.max_timeout_seconds`, 600 unless raised) and noted **(ours)**.
    fn capped_script_timeout(
        &mut self,
        node: &Node,
        ctx: &str,
        action: Option<Action>,
        timeout: Option<i64>,
    ) -> Option<i64> {
        let ceiling = i64::try_from(self.options.max_timeout_secs).unwrap_or(i64::MAX);
        let aws_max = i64::try_from(step::DEFAULT_TIMEOUT_SECS).unwrap_or(i64::MAX);
        match timeout {
            Some(t) if action == Some(Action::ExecuteScript) && t > aws_max => {
                let capped = t.min(ceiling);
                let what = if capped < t {
                    format!("accepted and capped at {capped} s (limits.max_timeout_seconds)")
                } else {
                    format!("accepted: the operator's limits.max_timeout_seconds is {ceiling}")
                };
                self.notes.push(Note {
                    pos: node.get("timeoutSeconds").map_or(node.pos, |n| n.pos),
                    context: format!("{ctx}: timeoutSeconds"),
                    message: format!(
                        "{t} is more than {} may run (at most {aws_max} s, says AWS's reference page); {what}",
                        Action::ExecuteScript.name(),
                    ),
                });
                Some(capped)
            }
            other => other,
        }
    }

    /// A loop's inner steps (`inputs.Steps`), read as steps; a loop inside a loop is refused
    /// **(ours)**.
    fn inner_steps(&mut self, node: &Node, ctx: &str, nested: bool) -> Vec<StepDecl> {
        let Some(steps) = node.get("inputs").and_then(|n| n.get("Steps")) else {
            return Vec::new();
        };
        let Kind::Seq(items) = &steps.kind else {
            return Vec::new();
        };
        if nested {
            self.invalid(
                node.pos,
                ctx,
                format!(
                    "{} cannot stand inside another loop's Steps (scriptbox runs one level of loops)",
                    Action::Loop.name()
                ),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (j, item) in items.iter().enumerate().take(loop_steps::MAX_INNER_STEPS) {
            if let Some(s) = self.step(j, item, Some(ctx)) {
                out.push(s);
            }
        }
        out
    }

    /// `variables`: the declarations with no problem (every declared type is remembered, for
    /// the checks of references and of aws:updateVariable).
    fn variables(&mut self, node: Option<&Node>) -> Vec<VariableDecl> {
        let mut out = Vec::new();
        match node.map(|n| (n, &n.kind)) {
            None | Some((_, Kind::Null)) => {}
            Some((_, Kind::Map(entries))) => {
                for (k, pos, v) in entries {
                    if let Some(d) = self.variable(k, *pos, v) {
                        out.push(d);
                    }
                }
            }
            Some((n, _)) => self.invalid(
                n.pos,
                "variables",
                "must be a map of variable name → {type, default, description}",
            ),
        }
        out
    }

    /// One variable's declaration.
    fn variable(&mut self, name: &str, pos: Pos, node: &Node) -> Option<VariableDecl> {
        let ctx = format!("variables.{name}");
        let before = self.problems.len();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.invalid(
                pos,
                &ctx,
                "a variable name may hold only letters, digits and underscores",
            );
        }
        let Kind::Map(entries) = &node.kind else {
            self.invalid(
                node.pos,
                &ctx,
                format!(
                    "must be a map with at least `type`, not {}",
                    node.type_name()
                ),
            );
            return None;
        };
        for (k, kpos, _) in entries {
            if !VARIABLE_KEYS.contains(&k.as_str()) {
                self.invalid(
                    *kpos,
                    &ctx,
                    format!(
                        "unknown key {k:?}; known keys: {}",
                        VARIABLE_KEYS.join(", ")
                    ),
                );
            }
        }
        let ty = match node.get("type") {
            None => {
                self.invalid(node.pos, &ctx, "`type` is required");
                None
            }
            Some(t) => {
                let ty = t.as_str().and_then(ValueType::parse);
                if ty.is_none() {
                    self.invalid(
                        t.pos,
                        format!("{ctx}.type"),
                        format!(
                            "unknown type {}; known types: {}",
                            short(&t.to_json()),
                            ValueType::NAMES.join(", ")
                        ),
                    );
                }
                ty
            }
        };
        let description = node.get("description").and_then(|d| match &d.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.invalid(d.pos, format!("{ctx}.description"), "must be a string");
                None
            }
        });
        let ty = ty?;
        self.variables.insert(name.to_string(), ty);
        let default = node.get("default").map(|d| (d.pos, d.to_json()));
        if let Some((dpos, v)) = &default {
            let problem = if interpolate::has_refs(v) {
                Some("is a value, not a {{ }} reference".to_string())
            } else {
                update_variable::check_value(ty, v)
                    .err()
                    .map(|e| e.to_string())
            };
            if let Some(p) = problem {
                self.invalid(*dpos, format!("{ctx}.default"), p);
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(VariableDecl {
            name: name.to_string(),
            pos,
            ty,
            default: default.map(|(_, v)| v),
            description,
        })
    }

    /// Checks a step's keys and its `name`.
    fn step_keys_and_name(
        &mut self,
        node: &Node,
        entries: &[(String, Pos, Node)],
        name: &str,
        ctx: &str,
    ) {
        for (k, pos, _) in entries {
            if !STEP_KEYS.contains(&k.as_str()) {
                self.invalid(
                    *pos,
                    ctx,
                    format!("unknown key {k:?}; known keys: {}", STEP_KEYS.join(", ")),
                );
            }
        }
        match node.get("name") {
            None => self.invalid(node.pos, ctx, "name is required"),
            Some(n) => {
                let ok =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    self.invalid(
                        n.pos,
                        format!("{ctx}: name"),
                        format!(
                            "{} must be letters, digits and underscores ([a-zA-Z0-9_]+)",
                            short(&n.to_json())
                        ),
                    );
                }
            }
        }
    }

    /// The step's action: `None` when the step is refused (an action scriptbox does not run),
    /// `Some(None)` when `action` is missing (reported; the rest of the step is still checked).
    fn step_action(&mut self, node: &Node, written: &str, ctx: &str) -> Option<Option<Action>> {
        let action = Action::from_name(written);
        if node.get("action").is_none() {
            self.invalid(node.pos, ctx, "action is required");
        } else if action.is_none() {
            let action_pos = node.get("action").map(|n| n.pos).unwrap_or(node.pos);
            let supported: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            self.problems.push(Problem::unsupported(
                action_pos,
                ctx,
                written,
                format!(
                    "action {written} is not supported by scriptbox (supported: {})",
                    supported.join(", ")
                ),
            ));
            return None;
        }
        Some(action)
    }

    /// The step's `inputs` as written (empty, and reported, when missing or not a map).
    fn step_inputs(&mut self, node: &Node, ctx: &str) -> Map<String, Value> {
        match node.get("inputs").map(|n| (n, n.to_json())) {
            Some((_, Value::Object(m))) => m,
            Some((n, _)) => {
                self.invalid(n.pos, format!("{ctx}: inputs"), "must be a map");
                Map::new()
            }
            None => {
                self.invalid(node.pos, ctx, "inputs is required");
                Map::new()
            }
        }
    }

    /// A whole-number step property within `min..=max`, if present.
    fn prop_int(&mut self, node: &Node, ctx: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = node.get(key)?;
        match &n.kind {
            Kind::Int(i) if (min..=max).contains(i) => Some(*i),
            _ => {
                self.invalid(
                    n.pos,
                    format!("{ctx}: {key}"),
                    format!(
                        "must be a whole number ≥ {min} and ≤ {max}, not {}",
                        short(&n.to_json())
                    ),
                );
                None
            }
        }
    }

    /// A true/false step property, if present.
    fn prop_bool(&mut self, node: &Node, ctx: &str, key: &str) -> Option<bool> {
        let n = node.get(key)?;
        match &n.kind {
            Kind::Bool(b) => Some(*b),
            // JSON documents from AWS's API sometimes carry "true"/"false" as strings.
            Kind::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => {
                self.invalid(
                    n.pos,
                    format!("{ctx}: {key}"),
                    format!("must be true or false, not {}", short(&n.to_json())),
                );
                None
            }
        }
    }

    /// A string step property naming where to go, with where it is written.
    fn prop_target(&mut self, node: &Node, ctx: &str, key: &str) -> Option<(String, Pos)> {
        let n = node.get(key)?;
        match n.as_str() {
            Some(s) => Some((s.to_string(), n.pos)),
            None => {
                self.invalid(n.pos, format!("{ctx}: {key}"), "must be a string");
                None
            }
        }
    }

    /// `onFailure` (default Abort).
    fn on_failure(&mut self, node: &Node, ctx: &str) -> OnFailure {
        let Some((s, pos)) = self.prop_target(node, ctx, "onFailure") else {
            return OnFailure::Abort;
        };
        match s.as_str() {
            "Abort" => OnFailure::Abort,
            "Continue" => OnFailure::Continue,
            _ => match s.strip_prefix("step:") {
                Some(t) if !t.is_empty() => OnFailure::Step(t.to_string()),
                _ => {
                    self.invalid(
                        pos,
                        format!("{ctx}: onFailure"),
                        format!("{s:?} is not Abort, Continue or step:<name>"),
                    );
                    OnFailure::Abort
                }
            },
        }
    }

    /// `onCancel` (default Abort).
    fn on_cancel(&mut self, node: &Node, ctx: &str) -> OnCancel {
        let Some((s, pos)) = self.prop_target(node, ctx, "onCancel") else {
            return OnCancel::Abort;
        };
        match (s.as_str(), s.strip_prefix("step:")) {
            ("Abort", _) => OnCancel::Abort,
            (_, Some(t)) if !t.is_empty() => OnCancel::Step(t.to_string()),
            _ => {
                self.invalid(
                    pos,
                    format!("{ctx}: onCancel"),
                    format!("{s:?} is not Abort or step:<name>"),
                );
                OnCancel::Abort
            }
        }
    }

    fn step_outputs(
        &mut self,
        node: Option<&Node>,
        ctx: &str,
        action: Option<Action>,
    ) -> Vec<OutputDecl> {
        let mut out = Vec::new();
        let Some(node) = node else { return out };
        if !action.is_some_and(Action::declares_outputs) {
            self.invalid(
                node.pos,
                format!("{ctx}: outputs"),
                format!(
                    "{} has no declared outputs",
                    action.map(Action::name).unwrap_or_default()
                ),
            );
            return out;
        }
        let Kind::Seq(items) = &node.kind else {
            self.invalid(
                node.pos,
                format!("{ctx}: outputs"),
                "must be a list of {Name, Selector, Type}",
            );
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let octx = format!("{ctx}: outputs[{i}]");
            if let Some(o) = self.output_decl(item, &octx, &out, action) {
                out.push(o);
            }
        }
        out
    }

    /// One declared output `{Name, Selector, Type}`; `earlier` are the step's outputs before it.
    fn output_decl(
        &mut self,
        item: &Node,
        octx: &str,
        earlier: &[OutputDecl],
        action: Option<Action>,
    ) -> Option<OutputDecl> {
        if let Kind::Map(entries) = &item.kind {
            for (k, kpos, _) in entries {
                if !["Name", "Selector", "Type"].contains(&k.as_str()) {
                    self.invalid(
                        *kpos,
                        octx,
                        format!("unknown key {k:?} (known: Name, Selector, Type)"),
                    );
                }
            }
        }
        let name = item.get("Name").and_then(Node::as_str);
        let selector = item.get("Selector").and_then(Node::as_str);
        let ty = item.get("Type").and_then(Node::as_str);
        let Some(name) = name else {
            self.invalid(item.pos, octx, "Name is required (a string)");
            return None;
        };
        if earlier.iter().any(|o: &OutputDecl| o.name == name) {
            self.invalid(item.pos, octx, format!("output {name:?} is declared twice"));
        }
        // executeScript selects from `{"Payload": ...}`; the other actions from their response.
        let parse = if action == Some(Action::ExecuteScript) {
            Selector::parse
        } else {
            Selector::parse_response
        };
        let selector = match selector.map(parse) {
            None => {
                self.invalid(
                    item.pos,
                    octx,
                    "Selector is required (e.g. $.Payload.field)",
                );
                None
            }
            Some(Err(e)) => {
                let pos = item.get("Selector").map(|n| n.pos).unwrap_or(item.pos);
                self.invalid(pos, format!("{octx}.Selector"), e.to_string());
                None
            }
            Some(Ok(s)) => Some(s),
        };
        let ty = match ty {
            None => {
                self.invalid(
                    item.pos,
                    octx,
                    format!("Type is required ({})", ValueType::NAMES.join(", ")),
                );
                None
            }
            Some(t) => match ValueType::parse(t) {
                Some(t) => Some(t),
                None => {
                    let pos = item.get("Type").map(|n| n.pos).unwrap_or(item.pos);
                    self.invalid(
                        pos,
                        format!("{octx}.Type"),
                        format!("unknown type {t:?}; known: {}", ValueType::NAMES.join(", ")),
                    );
                    None
                }
            },
        };
        if let (Some(selector), Some(ty)) = (selector, ty) {
            if selector.is_multi() && !matches!(ty, ValueType::StringList | ValueType::MapList) {
                self.invalid(
                    item.pos,
                    octx,
                    format!("selector {selector} (with `..` or `*`) always gives a list; its Type must be StringList or MapList, not {ty}"),
                );
                return None;
            }
            return Some(OutputDecl {
                name: name.to_string(),
                selector,
                ty,
            });
        }
        None
    }

    fn doc_outputs(&mut self, node: Option<&Node>, steps: &[&StepDecl]) -> Vec<DocOutput> {
        let mut out = Vec::new();
        let Some(node) = node else { return out };
        let Kind::Seq(items) = &node.kind else {
            self.invalid(node.pos, "outputs", "must be a list of \"step.Output\"");
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let ctx = format!("outputs[{i}]");
            let Some(text) = item.as_str() else {
                self.invalid(item.pos, &ctx, "must be a string \"step.Output\"");
                continue;
            };
            let Some((step, output)) = text.split_once('.') else {
                self.invalid(item.pos, &ctx, format!("{text:?} is not \"step.Output\""));
                continue;
            };
            if !self.all_steps.iter().any(|n| n == step) {
                self.invalid(
                    item.pos,
                    &ctx,
                    format!("{text:?}: there is no step {step:?}"),
                );
                continue;
            }
            match steps.iter().find(|s| s.name == step) {
                // The step itself was refused; its problem is reported there.
                None => {}
                Some(s) if !has_output(s, output) => self.invalid(
                    item.pos,
                    &ctx,
                    format!(
                        "{text:?}: step {step:?} has no output {output:?}{}",
                        declared_list(s)
                    ),
                ),
                Some(_) => out.push(DocOutput {
                    text: text.to_string(),
                    step: step.to_string(),
                    output: output.to_string(),
                }),
            }
        }
        out
    }

    /// Checks the references in a value: parameters declared, outputs of earlier steps.
    fn check_refs(
        &mut self,
        v: &Value,
        pos: Pos,
        ctx: &str,
        params: &HashSet<String>,
        steps: &[&StepDecl],
        this_step: Option<usize>,
    ) {
        for found in interpolate::refs_in(v) {
            match found.parsed {
                Err(e) => match e.unsupported {
                    Some(what) => self.problems.push(Problem::unsupported(
                        pos,
                        ctx,
                        what,
                        format!("{}: {}", e.text, e.message),
                    )),
                    None => self.invalid(pos, ctx, format!("{}: {}", e.text, e.message)),
                },
                Ok(Ref::Param(name)) => {
                    if !params.contains(&name) {
                        self.invalid(pos, ctx, format!("{{{{ {name} }}}} refers to parameter {name:?}, which is not declared in `parameters`"));
                    }
                }
                Ok(Ref::System(_)) => {}
                Ok(Ref::Variable(name)) => {
                    if !self.variables.contains_key(&name) {
                        self.invalid(pos, ctx, format!("{{{{ variable:{name} }}}} refers to variable {name:?}, which is not declared in `variables`"));
                    }
                }
                Ok(Ref::Output { step, output }) => {
                    let earlier = this_step.unwrap_or(usize::MAX);
                    match self.all_steps.iter().position(|n| *n == step) {
                        None => self.invalid(pos, ctx, format!("{{{{ {step}.{output} }}}}: there is no step {step:?}")),
                        Some(i) if i >= earlier => self.invalid(
                            pos,
                            ctx,
                            format!("{{{{ {step}.{output} }}}}: step {step:?} comes at or after this step; only outputs of earlier steps can be read"),
                        ),
                        Some(_) => match steps.iter().find(|s| s.name == step) {
                            Some(s) if !has_output(s, &output) => self.invalid(
                                pos,
                                ctx,
                                format!("{{{{ {step}.{output} }}}}: step {step:?} has no output {output:?}{}", declared_list(s)),
                            ),
                            // A refused step reports its own problem.
                            _ => {}
                        },
                    }
                }
            }
        }
    }

    fn cross_check(
        &mut self,
        steps: &[StepDecl],
        nodes: &[&Node],
        params: &HashSet<String>,
        files: &[FileDecl],
        attachments: &HashMap<String, Vec<u8>>,
    ) {
        self.duplicate_names(nodes);
        let flat = flat_steps(steps);
        let main_names: Vec<&str> = nodes
            .iter()
            .filter_map(|n| n.get("name").and_then(Node::as_str))
            .collect();
        let docs = (files, attachments, params);
        self.check_level(steps, nodes, None, &flat, docs, &main_names);
        for s in steps {
            let StepKind::Loop(spec) = &s.kind else {
                continue;
            };
            let ctx = step_context(s.index, &s.name);
            let inner = inner_nodes(nodes[s.index]);
            self.check_level(&spec.steps, &inner, Some(&ctx), &flat, docs, &main_names);
            // The condition is checked after the inner steps: it reads their outputs.
            let after = spec
                .steps
                .iter()
                .chain(std::iter::once(s))
                .filter_map(|t| self.all_steps.iter().position(|n| *n == t.name))
                .max()
                .map(|p| p + 1);
            let pos = nodes[s.index]
                .get("inputs")
                .and_then(|n| n.get("LoopCondition"))
                .map(|n| n.pos)
                .unwrap_or(s.pos);
            for v in spec.condition_values() {
                let ctx = format!("{ctx}: inputs.LoopCondition");
                self.check_refs(v, pos, &ctx, params, &flat, after);
            }
        }
    }

    /// Step names are unique in the whole document, inside loops too.
    fn duplicate_names(&mut self, nodes: &[&Node]) {
        let mut seen: HashMap<String, String> = HashMap::new();
        for (idx, node) in nodes.iter().enumerate() {
            let mut level: Vec<(String, &Node)> = vec![(format!("mainSteps[{idx}]"), *node)];
            for (j, inner) in inner_nodes(node).into_iter().enumerate() {
                level.push((format!("mainSteps[{idx}].inputs.Steps[{j}]"), inner));
            }
            for (at, n) in level {
                let Some(name_node) = n.get("name") else {
                    continue;
                };
                let Some(name) = name_node.as_str() else {
                    continue;
                };
                if let Some(first) = seen.get(name) {
                    self.invalid(
                        name_node.pos,
                        format!("step {name:?}"),
                        format!("the name is used twice (first by {first})"),
                    );
                }
                seen.entry(name.to_string()).or_insert(at);
            }
        }
    }

    /// Checks one level of steps (`mainSteps`, or one loop's `Steps` with the loop's context as
    /// `parent`): targets, `{{ }}` references, each action's document checks.
    fn check_level(
        &mut self,
        steps: &[StepDecl],
        nodes: &[&Node],
        parent: Option<&str>,
        flat: &[&StepDecl],
        (files, attachments, params): (&[FileDecl], &HashMap<String, Vec<u8>>, &HashSet<String>),
        main_names: &[&str],
    ) {
        let here = |name: &str| {
            nodes
                .iter()
                .any(|n| n.get("name").and_then(Node::as_str) == Some(name))
        };
        for s in steps {
            let ctx = step_ctx(parent, s.index, &s.name);
            let Some(node) = nodes.get(s.index).copied() else {
                continue;
            };
            let pos = |key: &str| node.get(key).map(|n| n.pos).unwrap_or(s.pos);
            let mut targets: Vec<(String, &str, Pos)> = Vec::new();
            if let Some(n) = &s.next_step {
                targets.push((n.clone(), "nextStep", pos("nextStep")));
            }
            if let OnFailure::Step(n) = &s.on_failure {
                targets.push((n.clone(), "onFailure", pos("onFailure")));
            }
            if let OnCancel::Step(n) = &s.on_cancel {
                targets.push((n.clone(), "onCancel", pos("onCancel")));
            }
            for (t, p) in s.action_kind().targets(s) {
                targets.push((t, "inputs", p));
            }
            for (t, key, p) in targets {
                // Inside a loop, onFailure / onCancel may leave the loop; nextStep and
                // aws:branch stay in it (ours).
                let leaves = matches!(key, "onFailure" | "onCancel");
                let in_main = main_names.contains(&t.as_str());
                if here(&t) || (parent.is_some() && leaves && in_main) {
                    continue;
                }
                let message = if parent.is_some() && in_main {
                    format!(
                        "there is no step {t:?} in this loop (inside a loop, nextStep and {} go to the loop's own steps)",
                        Action::Branch.name()
                    )
                } else {
                    format!("there is no step {t:?}")
                };
                self.invalid(p, format!("{ctx}: {key}"), message);
            }
            let this = self.all_steps.iter().position(|n| *n == s.name);
            let inputs_node = node.get("inputs");
            for (k, v) in &s.inputs {
                let p = inputs_node
                    .and_then(|n| n.get(k))
                    .map(|n| n.pos)
                    .unwrap_or(s.pos);
                self.check_refs(v, p, &format!("{ctx}: inputs.{k}"), params, flat, this);
            }
            let facts = DocFacts {
                nodes,
                files,
                declared_files: &self.declared_files,
                attachments,
                variables: &self.variables,
            };
            let mut cx = CheckCx {
                problems: &mut self.problems,
                notes: &mut self.notes,
                format: self.format,
                options: self.options,
            };
            s.action_kind().check_in_document(&mut cx, s, &facts);
        }
    }
}

impl Checker<'_> {
    /// The context an action's check writes its problems to.
    fn check_cx(&mut self) -> CheckCx<'_> {
        CheckCx {
            problems: &mut self.problems,
            notes: &mut self.notes,
            format: self.format,
            options: self.options,
        }
    }

    /// Completes each step with what only the whole document tells (executeScript validates
    /// its inputs when they are known now, so a bad step refuses the whole document before
    /// anything runs).
    fn prevalidate(
        &mut self,
        steps: &mut [StepDecl],
        nodes: &[&Node],
        files: &[FileDecl],
        attachments: &HashMap<String, Vec<u8>>,
    ) {
        let mut cx = CheckCx {
            problems: &mut self.problems,
            notes: &mut self.notes,
            format: self.format,
            options: self.options,
        };
        for s in steps.iter_mut() {
            let facts = DocFacts {
                nodes,
                files,
                declared_files: &self.declared_files,
                attachments,
                variables: &self.variables,
            };
            s.action_kind().complete(&mut cx, s, &facts);
            let Some(node) = nodes.get(s.index).copied() else {
                continue;
            };
            if let StepKind::Loop(spec) = &mut s.kind {
                let inner = inner_nodes(node);
                let facts = DocFacts {
                    nodes: &inner,
                    ..facts
                };
                for t in spec.steps.iter_mut() {
                    t.action_kind().complete(&mut cx, t, &facts);
                }
            }
        }
    }
}

/// The context of a step: `mainSteps[2] (step "x")`, or inside a loop
/// `mainSteps[2] (step "loop"): inputs.Steps[0] (step "x")`.
fn step_ctx(parent: Option<&str>, index: usize, name: &str) -> String {
    match parent {
        None => step_context(index, name),
        Some(p) if name.is_empty() => format!("{p}: inputs.Steps[{index}]"),
        Some(p) => format!("{p}: inputs.Steps[{index}] (step {name:?})"),
    }
}

/// A loop step's inner step nodes (`inputs.Steps`); none for any other step.
fn inner_nodes(node: &Node) -> Vec<&Node> {
    if !loop_steps::is_loop(node) {
        return Vec::new();
    }
    match node
        .get("inputs")
        .and_then(|n| n.get("Steps"))
        .map(|n| &n.kind)
    {
        Some(Kind::Seq(items)) => items.iter().collect(),
        _ => Vec::new(),
    }
}

/// Every step name of `mainSteps` items in document order, a loop's inner steps after it.
fn flat_names(items: &[Node]) -> Vec<String> {
    let name = |n: &Node| {
        n.get("name")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut out = Vec::new();
    for item in items {
        out.push(name(item));
        out.extend(inner_nodes(item).into_iter().map(name));
    }
    out
}

/// Every read step in document order, a loop's inner steps after it.
fn flat_steps(steps: &[StepDecl]) -> Vec<&StepDecl> {
    let mut out = Vec::new();
    for s in steps {
        out.push(s);
        if let StepKind::Loop(spec) = &s.kind {
            out.extend(spec.steps.iter());
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn has_output(s: &StepDecl, output: &str) -> bool {
    s.action_kind().implicit_outputs().contains(&output)
        || s.outputs.iter().any(|o| o.name == output)
}

fn declared_list(s: &StepDecl) -> String {
    let mut names: Vec<&str> = s.outputs.iter().map(|o| o.name.as_str()).collect();
    names.extend(s.action_kind().implicit_outputs());
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it has: {})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, format: Format, dir: &Path) -> Result<Runbook, Vec<String>> {
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        load_str(text, "doc", format, dir, &options)
            .map_err(|r| r.problems.iter().map(ToString::to_string).collect())
    }

    fn yaml(text: &str) -> Result<Runbook, Vec<String>> {
        load(text, Format::Yaml, Path::new("."))
    }

    const STEP: &str = "  - name: s1\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: 'def h(e, c): return {\"a\": 1}'\n    outputs:\n      - {Name: A, Selector: $.Payload.a, Type: Integer}\n";

    /// The seed page's two "Tag an instance" documents, as printed: their indentation under
    /// `parameters:` and `mainSteps:` is broken (keys and their `type:` at the same indent), so
    /// they are refused with the line and column of the problem.
    const SEED_AS_PRINTED: &str = "description: Tag an instance\nschemaVersion: '0.3'\nassumeRole: '{{AutomationAssumeRole}}'\nparameters:\n    AutomationAssumeRole:\n    type: String\n    description: 'role'\n    InstanceId:\n    type: String\n    description: (Required) The ID of the EC2 instance you want to tag.\nmainSteps:\n    - name: tagInstance\n    action: 'aws:executeScript'\n    inputs:\n        Runtime: python3.8\n";

    fn seed_indented(runtime: &str, body: &str, handler: bool) -> String {
        format!(
            "description: Tag an instance\nschemaVersion: '0.3'\nassumeRole: '{{{{AutomationAssumeRole}}}}'\nparameters:\n    AutomationAssumeRole:\n        type: String\n        description: '(Required) The ARN of the role.'\n    InstanceId:\n        type: String\n        description: (Required) The ID of the EC2 instance you want to tag.\nmainSteps:\n    - name: tagInstance\n      action: 'aws:executeScript'\n      inputs:\n          Runtime: {runtime}\n{}          InputPayload:\n            instanceId: '{{{{InstanceId}}}}'\n          Script: |-\n{}",
            if handler {
                "          Handler: tagInstance\n"
            } else {
                ""
            },
            body.lines()
                .map(|l| format!("            {l}\n"))
                .collect::<String>()
        )
    }

    /// "Parse" for the seed's documents means: as printed they give a clear line/column error
    /// (the broken indentation), and the same documents correctly indented parse and validate.
    #[test]
    fn the_seed_documents_as_printed_and_indented() {
        let e = yaml(SEED_AS_PRINTED).unwrap_err();
        assert!(
            e[0].starts_with("line 13, column 5: YAML syntax error"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|p| p.contains("line 9, column 5: duplicate key \"type\"")),
            "{e:?}"
        );
        let py = seed_indented(
            "python3.8",
            "def tagInstance(events,context):\n  import boto3\n\n  #Initialize client\n  ec2 = boto3.client('ec2')\n  instanceId = events['instanceId']\n  tag = {\n      \"Key\": \"Env\",\n      \"Value\": \"Example\"\n  }\n  ec2.create_tags(\n      Resources=[instanceId],\n      Tags=[tag]\n  )",
            true,
        );
        let rb = yaml(&py).unwrap_or_else(|e| panic!("{e:?}\n{py}"));
        assert_eq!(rb.parameters.len(), 2);
        assert_eq!(rb.steps[0].name, "tagInstance");
        let ps = seed_indented(
            "PowerShell 7.0",
            "Install-Module AWS.Tools.EC2 -Force\nImport-Module AWS.Tools.EC2\n\n$input = $env:InputPayload | ConvertFrom-Json\n\n$tag = New-Object Amazon.EC2.Model.Tag\n$tag.Key = \"Env\"\n$tag.Value = \"Example\"\n\nNew-EC2Tag -Resource $input.instanceId -Tag $tag",
            false,
        );
        yaml(&ps).unwrap_or_else(|e| panic!("{e:?}\n{ps}"));
    }

    #[test]
    fn a_valid_document_loads() {
        let rb = yaml(&format!(
            "schemaVersion: '0.3'\ndescription: d\nmainSteps:\n{STEP}outputs: [s1.A, s1.Payload]\n"
        ))
        .unwrap();
        assert_eq!(rb.outputs.len(), 2);
        assert!(matches!(
            &rb.steps[0].kind,
            StepKind::ExecuteScript { validated: Some(_) }
        ));
        assert!(rb.steps[0].is_critical);
        // A bare 0.3 is accepted (ours).
        yaml(&format!("schemaVersion: 0.3\nmainSteps:\n{STEP}")).unwrap();
    }

    #[test]
    fn every_problem_has_its_position_step_and_field() {
        let e = yaml(&format!(
            "schemaVersion: '0.3'\ncolour: red\nmainSteps:\n{STEP}  - name: s2\n    action: aws:executeScript\n    isEnd: yes\n    inputs:\n      Runtime: python2.7\n      Handler: h\n      Script: x\n  - name: s3\n    action: aws:executeAwsApi\n    inputs: {{Service: ec2}}\n"
        ))
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!(
            e[0],
            "line 2, column 1: unknown top-level key \"colour\"; known keys: schemaVersion, description, assumeRole, parameters, variables, mainSteps, outputs, files"
        );
        assert_eq!(
            e[1],
            "line 14, column 12: mainSteps[1] (step \"s2\"): isEnd: must be true or false, not \"yes\""
        );
        assert!(e[2].starts_with("line 16, column 16: mainSteps[1] (step \"s2\"): inputs.Runtime: unknown runtime \"python2.7\""), "{e:?}");
        assert_eq!(
            e[3],
            "line 21, column 13: mainSteps[2] (step \"s3\"): inputs: Api is required (a string)"
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_a_position() {
        let e = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: a\n   action: x\n").unwrap_err();
        assert!(
            e[0].starts_with("line 4, column 4: YAML syntax error"),
            "{e:?}"
        );
        let e = load(
            "{\"schemaVersion\": \"0.3\",\n \"mainSteps\": [}\n",
            Format::Json,
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e[0].starts_with("line 2, column 16: not valid JSON"),
            "{e:?}"
        );
        let e = yaml("schemaVersion: '2.2'\nmainSteps: []\n").unwrap_err();
        assert!(e[0].contains("scriptbox runs schemaVersion '0.3'"), "{e:?}");
        assert!(
            e[1].contains("mainSteps: must be a non-empty list"),
            "{e:?}"
        );
        assert!(yaml("").unwrap_err()[0].contains("empty"));
    }

    #[test]
    fn cloudformation_tags_are_named() {
        let e = yaml(&format!("schemaVersion: '0.3'\nassumeRole: !GetAtt Role.Arn\nparameters:\n  P:\n    type: String\n    default: !Sub '${{AWS::Region}}'\nmainSteps:\n{STEP}")).unwrap_err();
        assert!(
            e[0].starts_with("line 2, column 13: CloudFormation tag !GetAtt is not supported"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("line 6, column 14: CloudFormation tag !Sub is not supported"),
            "{e:?}"
        );
    }

    #[test]
    fn a_json_runbook_with_script_is_accepted_with_a_note() {
        let j = r#"{"schemaVersion": "0.3", "mainSteps": [{"name": "s", "action": "aws:executeScript",
  "inputs": {"Runtime": "python3.11", "Handler": "h", "Script": "def h(e, c): pass"}}]}"#;
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        let rb = load_str(j, "d", Format::Json, Path::new("."), &options).unwrap();
        assert_eq!(rb.notes.len(), 1, "{:?}", rb.notes);
        let note = rb.notes[0].to_string();
        assert!(
            note.starts_with("line 2, column 65: mainSteps[0] (step \"s\"): inputs.Script: Script in a JSON runbook: the aws:executeScript reference page says a JSON runbook must provide the script as an Attachment"),
            "{note}"
        );
        // The same step in YAML has nothing to note.
        let y = yaml(&format!("schemaVersion: '0.3'\nmainSteps:\n{STEP}")).unwrap();
        assert!(y.notes.is_empty(), "{:?}", y.notes);
    }

    #[test]
    fn an_execute_script_timeout_above_600_is_capped_and_noted() {
        let doc = |t: u32| {
            format!(
                "schemaVersion: '0.3'\nmainSteps:\n  - name: s\n    action: aws:executeScript\n    timeoutSeconds: {t}\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: 'def h(e, c): pass'\n  - name: z\n    action: aws:sleep\n    timeoutSeconds: 1200\n    inputs: {{Duration: PT1S}}\n"
            )
        };
        let rb = yaml(&doc(1200)).unwrap();
        assert_eq!(rb.steps[0].timeout_seconds, Some(600));
        let StepKind::ExecuteScript { validated: Some(v) } = &rb.steps[0].kind else {
            panic!("validated at load: {:?}", rb.steps[0].kind);
        };
        assert_eq!(v.timeout, std::time::Duration::from_secs(600));
        // Only executeScript is capped: aws:sleep may declare more.
        assert_eq!(rb.steps[1].timeout_seconds, Some(1200));
        assert_eq!(rb.notes.len(), 1, "{:?}", rb.notes);
        assert_eq!(
            rb.notes[0].to_string(),
            "line 5, column 21: mainSteps[0] (step \"s\"): timeoutSeconds: 1200 is more than aws:executeScript may run (at most 600 s, says AWS's reference page); accepted and capped at 600 s (limits.max_timeout_seconds)"
        );
        assert!(yaml(&doc(600)).unwrap().notes.is_empty());
        // An operator who raised the ceiling gets the value, still noted.
        let catalog = Catalog::builtin();
        let raised = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 3600,
            attachments_dir: None,
        };
        let rb = load_str(&doc(1200), "d", Format::Yaml, Path::new("."), &raised).unwrap();
        assert_eq!(rb.steps[0].timeout_seconds, Some(1200));
        assert!(
            rb.notes[0]
                .message
                .contains("limits.max_timeout_seconds is 3600")
        );
    }

    #[test]
    fn references_are_checked() {
        let e = yaml(&format!(
            "schemaVersion: '0.3'\nparameters:\n  P: {{type: String, default: x}}\nmainSteps:\n{STEP}  - name: s2\n    action: aws:executeScript\n    nextStep: nowhere\n    onFailure: step:missing\n    inputs:\n      Runtime: python3.11\n      Handler: h\n      Script: 'def h(e, c): pass'\n      InputPayload:\n        a: '{{{{ P }}}}'\n        b: '{{{{ Q }}}}'\n        c: '{{{{ s1.A.x }}}}'\n        d: '{{{{ s1.Nope }}}}'\n        e: '{{{{ s3.X }}}}'\n        f: '{{{{ s2.Payload }}}}'\n        g: '{{{{ ssm:/x }}}}'\n        h: '{{{{ global:REGION }}}} {{{{ automation:EXECUTION_ID }}}}'\noutputs: [s1.B]\n"
        ))
        .unwrap_err();
        let all = e.join("\n");
        assert!(
            all.contains("nextStep: there is no step \"nowhere\""),
            "{all}"
        );
        assert!(
            all.contains("onFailure: there is no step \"missing\""),
            "{all}"
        );
        assert!(
            all.contains("{{ Q }} refers to parameter \"Q\", which is not declared"),
            "{all}"
        );
        assert!(
            all.contains("drilling into an output is not supported"),
            "{all}"
        );
        assert!(
            all.contains("step \"s1\" has no output \"Nope\" (it has: A, Payload)"),
            "{all}"
        );
        assert!(all.contains("{{ s3.X }}: there is no step \"s3\""), "{all}");
        assert!(
            all.contains("{{ s2.Payload }}: step \"s2\" comes at or after this step"),
            "{all}"
        );
        assert!(
            all.contains("reads ssm:/x, which scriptbox cannot reach locally"),
            "{all}"
        );
        assert!(
            all.contains("outputs[0]: \"s1.B\": step \"s1\" has no output \"B\""),
            "{all}"
        );
        assert_eq!(e.len(), 9, "{all}");
    }

    #[test]
    fn attachments_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"def run(e, c):\n    return 1\n";
        std::fs::write(dir.path().join("lib.py"), body).unwrap();
        let sha = hex(&Sha256::digest(body));
        let doc = |sha: &str, size: &str, attachment: &str| {
            format!(
                "schemaVersion: '0.3'\nfiles:\n  lib.py:\n    checksums:\n      sha256: '{sha}'\n{size}mainSteps:\n  - name: s\n    action: aws:executeScript\n    inputs:\n      Runtime: python3.11\n      Handler: lib.run\n      Attachment: {attachment}\n"
            )
        };
        let rb = load(&doc(&sha, "", "lib.py"), Format::Yaml, dir.path()).unwrap();
        assert_eq!(rb.attachments["lib.py"], body);
        load(
            &doc(&sha, &format!("    size: {}\n", body.len()), "lib.py"),
            Format::Yaml,
            dir.path(),
        )
        .unwrap();
        let e = load(
            &doc(&sha, "    size: 3\n", "lib.py"),
            Format::Yaml,
            dir.path(),
        )
        .unwrap_err();
        assert!(e[0].contains("size mismatch"), "{e:?}");
        let e = load(
            &doc(&"0".repeat(64), "", "lib.py"),
            Format::Yaml,
            dir.path(),
        )
        .unwrap_err();
        assert!(e[0].contains("files.lib.py: checksum mismatch"), "{e:?}");
        let e = load(
            &doc("sampleETagValue", "", "lib.py"),
            Format::Yaml,
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e[0].contains("is not a SHA-256 (64 hex digits); it looks like a placeholder"),
            "{e:?}"
        );
        let e = load(&doc(&sha, "", "other.py"), Format::Yaml, dir.path()).unwrap_err();
        assert!(
            e[0].contains("\"other.py\" is not declared in the document's `files` section"),
            "{e:?}"
        );
        let e = load(
            &doc(&sha, "", "lib.py"),
            Format::Yaml,
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(e[0].contains("attachment not found"), "{e:?}");
    }

    #[test]
    fn step_rules() {
        let e = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: bad-name\n    action: aws:sleep\n    inputs: {Duration: PT1S}\n  - name: z\n    action: aws:sleep\n    maxAttempts: 0\n    onFailure: Retry\n    inputs: {Duration: 10 seconds}\n  - name: z\n    action: aws:sleep\n    inputs: {Duration: PT1S}\n    outputs: [{Name: X, Selector: $.Payload, Type: String}]\n").unwrap_err();
        let all = e.join("\n");
        assert!(
            all.contains("name: \"bad-name\" must be letters, digits and underscores"),
            "{all}"
        );
        assert!(
            all.contains("maxAttempts: must be a whole number ≥ 1"),
            "{all}"
        );
        assert!(
            all.contains("onFailure: \"Retry\" is not Abort, Continue or step:<name>"),
            "{all}"
        );
        assert!(
            all.contains("inputs.Duration: \"10 seconds\" is not an ISO 8601 duration"),
            "{all}"
        );
        assert!(all.contains("the name is used twice"), "{all}");
        assert!(all.contains("aws:sleep has no declared outputs"), "{all}");
        let e = yaml(&format!(
            "schemaVersion: '0.3'\nmainSteps:\n{}",
            STEP.replace("$.Payload.a, Type: Integer", "$.Payload..a, Type: String")
        ))
        .unwrap_err();
        assert!(e[0].contains("always gives a list"), "{e:?}");
        let bounds = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: z\n    action: aws:sleep\n    maxAttempts: 4294967296\n    timeoutSeconds: 9223372036854775807\n    inputs: {Duration: PT99999999999999999999S}\n  - name: y\n    action: aws:sleep\n    maxAttempts: 101\n    inputs: {Timestamp: '9999-12-31T23:59:59Z'}\n").unwrap_err();
        let bounds_text = bounds.join("\n");
        assert!(
            bounds_text
                .contains("maxAttempts: must be a whole number ≥ 1 and ≤ 100, not 4294967296"),
            "{bounds_text}"
        );
        assert!(
            bounds_text.contains("maxAttempts: must be a whole number ≥ 1 and ≤ 100, not 101"),
            "{bounds_text}"
        );
        assert!(
            bounds_text.contains("timeoutSeconds: must be a whole number ≥ 1 and ≤ 2592000"),
            "{bounds_text}"
        );
        assert!(
            bounds_text.contains("inputs.Duration: \"PT99999999999999999999S\" is longer than aws:sleep's maximum of 604799 seconds"),
            "{bounds_text}"
        );
        assert!(
            bounds_text.contains(
                "inputs.Timestamp: \"9999-12-31T23:59:59Z\" is more than aws:sleep's maximum"
            ),
            "{bounds_text}"
        );
        assert_eq!(bounds.len(), 5, "{bounds_text}");
        let rb = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: z\n    action: aws:sleep\n    maxAttempts: 100\n    timeoutSeconds: 604799\n    inputs: {Duration: PT604799S}\n").unwrap();
        assert_eq!(rb.steps[0].max_attempts, 100);
    }

    /// An executeScript step of a loop's `Steps`, indented for them.
    fn inner_script(name: &str, more: &str) -> String {
        format!(
            "        - name: {name}\n          action: aws:executeScript\n          inputs:\n            Runtime: python3.11\n            Handler: h\n            Script: 'def h(e, c): return {{}}'\n{more}"
        )
    }

    #[test]
    fn a_loop_reads_its_inner_steps_with_the_step_checker() {
        let text = format!(
            "schemaVersion: '0.3'\nvariables:\n  Seen: {{type: StringList, default: []}}\nmainSteps:\n  - name: each\n    action: aws:loop\n    inputs:\n      Iterators: [a, b]\n      Steps:\n{}{}  - name: poll\n    action: aws:loop\n    inputs:\n      MaxIterations: 5\n      LoopCondition:\n        Variable: '{{{{ check.Retry }}}}'\n        BooleanEquals: true\n      Steps:\n{}  - name: after\n    action: aws:sleep\n    inputs:\n      Duration: PT0S\noutputs: [each.CurrentIteration, check.Retry]\n",
            inner_script(
                "work",
                "            InputPayload: {item: '{{ each.CurrentIteratorValue }}', n: '{{ each.CurrentIteration }}'}\n          nextStep: note\n"
            ),
            "        - name: note\n          action: aws:updateVariable\n          inputs:\n            Name: variable:Seen\n            Value: ['{{ each.CurrentIteratorValue }}']\n          isEnd: true\n",
            inner_script(
                "check",
                "          outputs:\n            - {Name: Retry, Selector: $.Payload.retry, Type: Boolean}\n"
            ),
        );
        let rb = yaml(&text).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        assert_eq!(rb.steps.len(), 3);
        let StepKind::Loop(each) = &rb.steps[0].kind else {
            panic!("not a loop: {:?}", rb.steps[0].kind);
        };
        assert_eq!(each.steps.len(), 2);
        assert!(matches!(each.steps[0].kind, StepKind::ExecuteScript { .. }));
        assert_eq!(each.steps[0].next_step.as_deref(), Some("note"));
        assert!(each.steps[1].is_end);
        // What the loop substitutes at its start; Steps and LoopCondition are read apart.
        assert_eq!(rb.steps[0].inputs.keys().collect::<Vec<_>>(), ["Iterators"]);
        let StepKind::Loop(poll) = &rb.steps[1].kind else {
            panic!("not a loop");
        };
        assert!(poll.condition.is_some());
        // An inner script step whose inputs are known at load is validated at load.
        assert!(matches!(
            poll.steps[0].kind,
            StepKind::ExecuteScript { validated: Some(_) }
        ));
        assert_eq!(rb.variables.len(), 1);
        assert_eq!(rb.variables[0].ty, ValueType::StringList);
        assert_eq!(rb.outputs.len(), 2);
    }

    #[test]
    fn loop_rules_are_checked() {
        let text = format!(
            "schemaVersion: '0.3'\nmainSteps:\n  - name: both\n    action: aws:loop\n    onCancel: Abort\n    inputs:\n      Iterators: [1, x]\n      IteratorDataType: Integer\n      LoopCondition: {{Variable: '{{{{ a.B }}}}', BooleanEquals: true}}\n      Steps: []\n  - name: neither\n    action: aws:loop\n    inputs:\n      MaxIterations: 101\n      IteratorDataType: Float\n      Bogus: 1\n      Steps:\n{}{}  - name: cond\n    action: aws:loop\n    inputs:\n      IteratorDataType: String\n      LoopCondition:\n        Variable: '{{{{ later.X }}}}'\n        StringEquals: y\n      Steps:\n        - name: nested\n          action: aws:loop\n          inputs:\n            Iterators: [a]\n            Steps:\n              - name: deep\n                action: aws:sleep\n                inputs: {{Duration: PT0S}}\n  - name: outside\n    action: aws:sleep\n    inputs: {{Duration: PT0S}}\n",
            inner_script(
                "in1",
                "          nextStep: outside\n          onFailure: step:outside\n"
            ),
            inner_script(
                "in2",
                "            InputPayload: {x: '{{ in3.Payload }}', y: '{{ neither.CurrentIteration }}'}\n"
            ),
        );
        let e = yaml(&text).unwrap_err();
        let all = e.join("\n");
        for want in [
            "mainSteps[0] (step \"both\"): onCancel: aws:loop does not take onCancel",
            "mainSteps[0] (step \"both\"): inputs.Steps: must be a list of 1 to 100 steps",
            "mainSteps[0] (step \"both\"): inputs: give Iterators or LoopCondition, not both",
            "mainSteps[1] (step \"neither\"): inputs: unknown input \"Bogus\" of aws:loop",
            "inputs.IteratorDataType: \"Float\" is not one of Boolean, Integer, String, StringMap",
            "mainSteps[1] (step \"neither\"): inputs: Iterators (for each) or LoopCondition (do while) is required",
            "inputs.MaxIterations: must be a whole number from 1 to 100, not 101",
            "mainSteps[1] (step \"neither\"): inputs.Steps[0] (step \"in1\"): nextStep: there is no step \"outside\" in this loop",
            "{{ in3.Payload }}: there is no step \"in3\"",
            "mainSteps[2] (step \"cond\"): inputs.IteratorDataType: goes with Iterators, not with LoopCondition",
            "{{ later.X }}: there is no step \"later\"",
            "aws:loop cannot stand inside another loop's Steps",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        // onFailure may leave the loop (to a main step); nextStep may not.
        assert!(!all.contains("onFailure: there is no step"), "{all}");
        assert_eq!(e.len(), 12, "{all}");
        // A literal Iterators list is typed at load.
        let e = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: l\n    action: aws:loop\n    inputs:\n      Iterators: [1, x]\n      IteratorDataType: Integer\n      Steps:\n        - {name: z, action: aws:sleep, inputs: {Duration: PT0S}}\n").unwrap_err();
        assert!(
            e.join("\n")
                .contains("inputs.Iterators: Iterators[1] is not a valid Integer"),
            "{e:?}"
        );
        // Step names are unique in the whole document, inside loops too.
        let e = yaml("schemaVersion: '0.3'\nmainSteps:\n  - name: z\n    action: aws:sleep\n    inputs: {Duration: PT0S}\n  - name: l\n    action: aws:loop\n    inputs:\n      Iterators: [a]\n      Steps:\n        - {name: z, action: aws:sleep, inputs: {Duration: PT0S}}\n").unwrap_err();
        assert!(
            e.join("\n")
                .contains("the name is used twice (first by mainSteps[0])"),
            "{e:?}"
        );
    }

    #[test]
    fn variables_are_declared_typed_and_referenced() {
        let e = yaml("schemaVersion: '0.3'\nvariables:\n  N: {type: Integer, default: '3'}\n  S: {type: String, default: ''}\n  T: {type: Float}\n  U: {description: no type}\n  'a b': {type: String}\n  V: {type: Boolean, default: true, bogus: 1}\n  L: {type: StringList}\nmainSteps:\n  - name: set\n    action: aws:updateVariable\n    inputs:\n      Name: variable:L\n      Value: notalist\n  - name: nope\n    action: aws:updateVariable\n    onCancel: Abort\n    inputs:\n      Name: variable:Missing\n      Value: 1\n  - name: bad\n    action: aws:updateVariable\n    inputs:\n      Name: Count\n  - name: read\n    action: aws:sleep\n    inputs:\n      Duration: '{{ variable:Nowhere }}'\n").unwrap_err();
        let all = e.join("\n");
        for want in [
            "variables.N.default: is a string, not of type Integer",
            "variables.S.default: a string of 0 characters; strings are 1 to 512 characters",
            "variables.T.type: unknown type \"Float\"",
            "variables.U: `type` is required",
            "variables.a b: a variable name may hold only letters, digits and underscores",
            "variables.V: unknown key \"bogus\"; known keys: type, default, description",
            "mainSteps[0] (step \"set\"): inputs.Value: for variable \"L\" (StringList): is a string, not of type StringList",
            "mainSteps[1] (step \"nope\"): onCancel: aws:updateVariable does not take onCancel",
            "mainSteps[1] (step \"nope\"): inputs.Name: variable \"Missing\" is not declared in the document's `variables` (declared: L, N, S, V, a b)",
            "mainSteps[2] (step \"bad\"): inputs.Name: \"Count\" is not variable:NAME",
            "mainSteps[2] (step \"bad\"): inputs: Value is required",
            "{{ variable:Nowhere }} refers to variable \"Nowhere\", which is not declared in `variables`",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert_eq!(e.len(), 12, "{all}");
        let rb = yaml("schemaVersion: '0.3'\nvariables:\n  Wait: {type: String, default: PT0S, description: how long}\nmainSteps:\n  - name: set\n    action: aws:updateVariable\n    inputs: {Name: 'variable:Wait', Value: PT1S}\n  - name: nap\n    action: aws:sleep\n    inputs:\n      Duration: '{{ variable:Wait }}'\n").unwrap();
        assert_eq!(rb.variables[0].default, Some(Value::String("PT0S".into())));
        assert_eq!(rb.variables[0].description.as_deref(), Some("how long"));
    }
}
