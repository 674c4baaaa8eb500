//! The inputs of one `aws:executeScript` step, and their validation.
//!
//! Everything here runs before any container exists: a step that passes `validate` has a known
//! runtime, a resolved handler, a JSON-object payload within limits and a set of plain-named
//! files to send into the sandbox.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::protocol::Entry;
use crate::runtimes::{Catalog, Language};

/// The file name of an inline Python script inside the task folder (real tracebacks show it).
pub const PYTHON_SCRIPT_FILE: &str = "customer_script.py";
/// The file name of an inline PowerShell script inside the task folder.
pub const POWERSHELL_SCRIPT_FILE: &str = "customer_script.ps1";
/// At most this many attachments per step (AWS: five per document).
pub const MAX_ATTACHMENTS: usize = 5;
/// The default and, unless the operator raises it, maximum `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// Largest InputPayload accepted, serialized.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Deepest nesting of InputPayload accepted.
pub const MAX_PAYLOAD_DEPTH: usize = 64;
/// Largest inline script.
pub const MAX_SCRIPT_BYTES: usize = 4 * 1024 * 1024;
/// Largest sum of attachment sizes of one step.
pub const MAX_ATTACHMENT_BYTES: usize = 64 * 1024 * 1024;

/// An attachment: a plain file name and its bytes (already read by the caller).
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name, e.g. `lib.zip`.
    pub name: String,
    /// File contents.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attachment({:?}, {} bytes)", self.name, self.bytes.len())
    }
}

/// The raw inputs of a step, as a runbook or the CLI gives them.
#[derive(Debug, Clone, Default)]
pub struct StepInputs {
    /// `Runtime`.
    pub runtime: Option<String>,
    /// `Handler`.
    pub handler: Option<String>,
    /// `InputPayload`, any JSON value (validated to be an object).
    pub input_payload: Option<Value>,
    /// `Script`, any JSON value (validated to be a string).
    pub script: Option<Value>,
    /// `Attachment`(s).
    pub attachments: Vec<Attachment>,
    /// The step's `timeoutSeconds`.
    pub timeout_seconds: Option<i64>,
}

/// One broken rule: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// The input's name as AWS spells it (`Runtime`, `Handler`, ...).
    pub field: String,
    /// The rule, in a sentence.
    pub rule: String,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// A step refused before any container exists, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidStep {
    /// The problems, in input order.
    pub problems: Vec<InputProblem>,
}

impl fmt::Display for InvalidStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A step that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedStep {
    /// The canonical runtime name.
    pub runtime: String,
    /// The runtime's language.
    pub language: Language,
    /// The image to run.
    pub image: String,
    /// The bootstrap command.
    pub command: Vec<String>,
    /// The handler (Python only).
    pub entry: Option<Entry>,
    /// The InputPayload object.
    pub payload: Map<String, Value>,
    /// Files for the task folder: the inline script and attachments, plain names.
    pub files: Vec<(String, Vec<u8>)>,
    /// Zip attachments to expand inside the sandbox, in order.
    pub zips: Vec<String>,
    /// The step's timeout.
    pub timeout: Duration,
}

/// Validates raw inputs against the catalog. `max_timeout_secs` is the operator's ceiling.
pub fn validate(
    inputs: &StepInputs,
    catalog: &Catalog,
    max_timeout_secs: u64,
) -> Result<ValidatedStep, InvalidStep> {
    let mut check = Checker::default();
    let resolved = check.runtime(inputs, catalog);
    let script = check.script(inputs);
    let payload = check.payload(inputs);
    let timeout_secs = check.timeout(inputs, max_timeout_secs);
    let language = resolved.map(|r| r.language());
    check.attachments(inputs, language);
    let entry = check.language_rules(inputs, language, script.is_some());
    if !check.problems.is_empty() {
        return Err(InvalidStep {
            problems: check.problems,
        });
    }
    // Every None above recorded a problem, so these are present here.
    let (Some(resolved), Some(payload)) = (resolved, payload) else {
        return Err(InvalidStep {
            problems: vec![InputProblem {
                field: "Runtime".into(),
                rule: "could not be resolved".into(),
            }],
        });
    };
    let language = resolved.language();
    let mut files = Vec::new();
    if let Some(script) = script {
        let name = match language {
            Language::Python => PYTHON_SCRIPT_FILE,
            Language::Powershell => POWERSHELL_SCRIPT_FILE,
        };
        files.push((name.to_string(), script.into_bytes()));
    }
    let mut zips = Vec::new();
    for a in &inputs.attachments {
        if a.name.ends_with(".zip") {
            zips.push(a.name.clone());
        }
        files.push((a.name.clone(), a.bytes.clone()));
    }
    Ok(ValidatedStep {
        runtime: resolved.runtime.name.clone(),
        language,
        image: resolved.runtime.image.clone(),
        command: resolved.family.command.clone(),
        entry,
        payload,
        files,
        zips,
        timeout: Duration::from_secs(timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)),
    })
}

/// A broken rule of one input, in a sentence (the field is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Rule(String);

/// Collects every problem of a step's inputs, one check per input.
#[derive(Default)]
struct Checker {
    problems: Vec<InputProblem>,
}

impl Checker {
    fn problem(&mut self, field: &str, rule: String) {
        self.problems.push(InputProblem {
            field: field.to_string(),
            rule,
        });
    }

    fn runtime<'c>(
        &mut self,
        inputs: &StepInputs,
        catalog: &'c Catalog,
    ) -> Option<crate::runtimes::ResolvedRuntime<'c>> {
        let Some(name) = inputs.runtime.as_deref() else {
            self.problem("Runtime", "is required".into());
            return None;
        };
        let found = catalog.resolve(name);
        if found.is_none() {
            self.problem(
                "Runtime",
                format!(
                    "unknown runtime {name:?}; known runtimes: {}",
                    catalog.names().join(", ")
                ),
            );
        }
        found
    }

    fn script(&mut self, inputs: &StepInputs) -> Option<String> {
        match &inputs.script {
            None => None,
            Some(Value::String(s)) if s.len() > MAX_SCRIPT_BYTES => {
                self.problem(
                    "Script",
                    format!(
                        "is {} bytes, over the limit of {MAX_SCRIPT_BYTES} bytes",
                        s.len()
                    ),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(_)) => {
                self.problem(
                    "Script",
                    "must be a single string; a list of lines is not supported (use a YAML block scalar such as `Script: |-`)".into(),
                );
                None
            }
            Some(other) => {
                self.problem(
                    "Script",
                    format!("must be a string, not {}", json_type_name(other)),
                );
                None
            }
        }
    }

    fn payload(&mut self, inputs: &StepInputs) -> Option<Map<String, Value>> {
        match &inputs.input_payload {
            None | Some(Value::Null) => Some(Map::new()),
            Some(Value::Object(map)) => {
                let size = serde_json::to_vec(map)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                let depth = json_depth(&inputs.input_payload.clone().unwrap_or_default());
                if size > MAX_PAYLOAD_BYTES {
                    self.problem(
                        "InputPayload",
                        format!(
                            "is {size} bytes as JSON, over the limit of {MAX_PAYLOAD_BYTES} bytes"
                        ),
                    );
                    None
                } else if depth > MAX_PAYLOAD_DEPTH {
                    self.problem(
                        "InputPayload",
                        format!("nests {depth} levels deep, over the limit of {MAX_PAYLOAD_DEPTH}"),
                    );
                    None
                } else {
                    Some(map.clone())
                }
            }
            Some(other) => {
                self.problem(
                    "InputPayload",
                    format!(
                        "must be a map (a JSON or YAML object), not {}",
                        json_type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn timeout(&mut self, inputs: &StepInputs, max_timeout_secs: u64) -> Option<u64> {
        // Checked conversions: a negative or huge value is refused, never wrapped.
        let asked = inputs
            .timeout_seconds
            .unwrap_or_else(|| i64::try_from(DEFAULT_TIMEOUT_SECS).unwrap_or(i64::MAX));
        match u64::try_from(asked) {
            Ok(secs) if (1..=max_timeout_secs).contains(&secs) => Some(secs),
            _ => {
                self.problem(
                    "timeoutSeconds",
                    format!("must be between 1 and {max_timeout_secs} seconds, got {asked}"),
                );
                None
            }
        }
    }

    fn attachments(&mut self, inputs: &StepInputs, language: Option<Language>) {
        if inputs.attachments.len() > MAX_ATTACHMENTS {
            self.problem(
                "Attachment",
                format!(
                    "at most {MAX_ATTACHMENTS} attachments are allowed, got {}",
                    inputs.attachments.len()
                ),
            );
        }
        let total: usize = inputs.attachments.iter().map(|a| a.bytes.len()).sum();
        if total > MAX_ATTACHMENT_BYTES {
            self.problem(
                "Attachment",
                format!(
                    "attachments total {total} bytes, over the limit of {MAX_ATTACHMENT_BYTES} bytes"
                ),
            );
        }
        let mut seen_names = Vec::new();
        for attachment in &inputs.attachments {
            if let Err(rule) = check_attachment(attachment, language) {
                self.problem("Attachment", rule.0);
            } else if seen_names.contains(&attachment.name.as_str()) {
                self.problem(
                    "Attachment",
                    format!("{:?} is given twice", attachment.name),
                );
            }
            seen_names.push(attachment.name.as_str());
        }
    }

    /// The rules of the runtime's language (Handler, Script); the Python entry point.
    fn language_rules(
        &mut self,
        inputs: &StepInputs,
        language: Option<Language>,
        has_script: bool,
    ) -> Option<Entry> {
        match language {
            Some(Language::Python) => {
                if !has_script && inputs.attachments.is_empty() && inputs.script.is_none() {
                    self.problem(
                        "Script",
                        "a Python step needs a Script, an Attachment, or both".into(),
                    );
                }
                match inputs.handler.as_deref() {
                    None => {
                        self.problem(
                            "Handler",
                            "is required for Python: the name of the function to call, e.g. `script_handler`, or `file.function` for an attachment".into(),
                        );
                        None
                    }
                    Some(handler) => {
                        match resolve_entry(handler, has_script, &inputs.attachments) {
                            Ok(e) => Some(e),
                            Err(rule) => {
                                self.problem("Handler", rule.0);
                                None
                            }
                        }
                    }
                }
            }
            Some(Language::Powershell) => {
                if inputs.handler.is_some() {
                    self.problem(
                        "Handler",
                        "is not supported for PowerShell: the script runs top to bottom and reads $env:InputPayload".into(),
                    );
                }
                if inputs.script.is_none() {
                    self.problem("Script", "is required for PowerShell".into());
                }
                None
            }
            None => None,
        }
    }
}

/// Checks one attachment's name and format for a language.
fn check_attachment(a: &Attachment, language: Option<Language>) -> Result<(), Rule> {
    let name = &a.name;
    if name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\\', '\0'])
        || name == "."
        || name == ".."
        || name.starts_with('.')
    {
        return Err(Rule(format!(
            "{name:?} is not a plain file name (no folders, no leading dot, at most 255 bytes)"
        )));
    }
    if name == PYTHON_SCRIPT_FILE || name == POWERSHELL_SCRIPT_FILE {
        return Err(Rule(format!(
            "{name:?} is reserved for the inline Script; rename the attachment"
        )));
    }
    let lower = name.to_ascii_lowercase();
    let gzip_magic = a.bytes.starts_with(&[0x1f, 0x8b]);
    if lower.ends_with(".gz") || lower.ends_with(".tgz") || gzip_magic {
        return Err(Rule(format!(
            "{name:?} is gzip-compressed; gzip is not supported, use a .zip"
        )));
    }
    let is_zip = lower.ends_with(".zip");
    let is_py = lower.ends_with(".py");
    match language {
        Some(Language::Python) if !(is_zip || is_py) => {
            return Err(Rule(format!(
                "{name:?}: a Python attachment must be a .py or .zip file"
            )));
        }
        Some(Language::Powershell) if !is_zip => {
            return Err(Rule(format!(
                "{name:?}: a PowerShell attachment must be a .zip file"
            )));
        }
        _ => {}
    }
    if is_zip && !(a.bytes.starts_with(b"PK\x03\x04") || a.bytes.starts_with(b"PK\x05\x06")) {
        return Err(Rule(format!(
            "{name:?} is named .zip but is not a zip archive"
        )));
    }
    if is_py && std::str::from_utf8(&a.bytes).is_err() {
        return Err(Rule(format!("{name:?} is not UTF-8 text")));
    }
    Ok(())
}

/// Resolves a Python `Handler` to a module and function.
///
/// `fn` calls the inline script's function (or, with no script, the single `.py` attachment's);
/// `module.fn` calls a function of an attached module (a `.py` file or a module inside a zip).
fn resolve_entry(
    handler: &str,
    has_script: bool,
    attachments: &[Attachment],
) -> Result<Entry, Rule> {
    let parts: Vec<&str> = handler.split('.').collect();
    if handler.is_empty() || !parts.iter().all(|p| is_identifier(p)) {
        return Err(Rule(format!(
            "{handler:?} is not a Python function name or `module.function` path"
        )));
    }
    let py_modules: Vec<&str> = attachments
        .iter()
        .filter_map(|a| a.name.strip_suffix(".py"))
        .collect();
    let has_zip = attachments.iter().any(|a| a.name.ends_with(".zip"));
    if let Some((module, function)) = handler.rsplit_once('.') {
        let top = module.split('.').next().unwrap_or(module);
        if !(has_zip || py_modules.contains(&top) || has_script && top == "customer_script") {
            let known = if py_modules.is_empty() {
                "no .py or .zip attachment is given".to_string()
            } else {
                format!("attached modules: {}", py_modules.join(", "))
            };
            return Err(Rule(format!(
                "{handler:?} names module {module:?}, which is not attached ({known})"
            )));
        }
        return Ok(Entry {
            module: module.to_string(),
            function: function.to_string(),
        });
    }
    if has_script {
        return Ok(Entry {
            module: "customer_script".into(),
            function: handler.to_string(),
        });
    }
    match py_modules.as_slice() {
        [only] => Ok(Entry {
            module: (*only).to_string(),
            function: handler.to_string(),
        }),
        [] => Err(Rule(format!(
            "{handler:?} is a bare function name but there is no inline Script or .py attachment; with a .zip attachment use `module.function`"
        ))),
        _ => Err(Rule(format!(
            "{handler:?} is ambiguous with several .py attachments; use `file.function`"
        ))),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// The JSON type name of a value, as a user would say it.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Nesting depth of a JSON value (a scalar is 0), without recursion.
pub fn json_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(runtime: &str) -> StepInputs {
        StepInputs {
            runtime: Some(runtime.into()),
            ..Default::default()
        }
    }

    fn problems(i: &StepInputs) -> Vec<String> {
        validate(i, &Catalog::builtin(), 600)
            .map(|_| vec![])
            .unwrap_or_else(|e| e.problems.iter().map(ToString::to_string).collect())
    }

    fn py(name: &str) -> Attachment {
        Attachment {
            name: name.into(),
            bytes: b"def f(e, c):\n  return 1\n".to_vec(),
        }
    }

    fn zip(name: &str) -> Attachment {
        Attachment {
            name: name.into(),
            bytes: b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
        }
    }

    #[test]
    fn a_plain_inline_step_validates() {
        let mut i = inputs("python3.11");
        i.handler = Some("script_handler".into());
        i.script = Some(json!("def script_handler(e, c):\n  return 1\n"));
        let v = validate(&i, &Catalog::builtin(), 600).unwrap();
        assert_eq!(
            v.entry,
            Some(Entry {
                module: "customer_script".into(),
                function: "script_handler".into()
            })
        );
        assert_eq!(v.files[0].0, "customer_script.py");
        assert!(v.payload.is_empty());
        assert_eq!(v.timeout, Duration::from_secs(600));
    }

    #[test]
    fn unknown_runtime_lists_the_known_ones() {
        let p = problems(&inputs("python2.7"));
        assert!(
            p[0].starts_with("Runtime: unknown runtime \"python2.7\"; known runtimes: python3.6"),
            "{p:?}"
        );
    }

    #[test]
    fn aliases_resolve_to_the_canonical_name() {
        let mut i = inputs("dotnetcore3.1");
        i.script = Some(json!("'hi'"));
        let v = validate(&i, &Catalog::builtin(), 600).unwrap();
        assert_eq!(v.runtime, "PowerShell 7.0");
        assert_eq!(v.files[0].0, "customer_script.ps1");
    }

    #[test]
    fn python_needs_a_handler_and_powershell_refuses_one() {
        let mut i = inputs("python3.9");
        i.script = Some(json!("x = 1"));
        assert!(problems(&i)[0].starts_with("Handler: is required for Python"));
        let mut i = inputs("PowerShell Core 6.0");
        i.script = Some(json!("'x'"));
        i.handler = Some("h".into());
        assert!(problems(&i)[0].starts_with("Handler: is not supported for PowerShell"));
    }

    #[test]
    fn script_as_a_list_is_refused() {
        let mut i = inputs("python3.11");
        i.handler = Some("h".into());
        i.script = Some(json!(["def h(e, c):", "  return 1"]));
        assert!(problems(&i)[0].contains("a list of lines is not supported"));
    }

    #[test]
    fn powershell_attachments_must_be_zip_and_gzip_is_refused() {
        let mut i = inputs("PowerShell 7.0");
        i.script = Some(json!("'x'"));
        i.attachments = vec![py("a.py")];
        assert!(problems(&i)[0].contains("PowerShell attachment must be a .zip"));
        let mut i = inputs("python3.11");
        i.handler = Some("a.f".into());
        i.attachments = vec![Attachment {
            name: "a.tar.gz".into(),
            bytes: vec![0x1f, 0x8b, 8],
        }];
        assert!(problems(&i)[0].contains("gzip is not supported"));
    }

    #[test]
    fn timeout_range_is_enforced() {
        for (t, ok) in [
            (0, false),
            (1, true),
            (600, true),
            (601, false),
            (-5, false),
        ] {
            let mut i = inputs("python3.11");
            i.handler = Some("h".into());
            i.script = Some(json!("def h(e, c): pass"));
            i.timeout_seconds = Some(t);
            assert_eq!(problems(&i).is_empty(), ok, "{t}");
        }
        let mut i = inputs("python3.11");
        i.handler = Some("h".into());
        i.script = Some(json!("def h(e, c): pass"));
        i.timeout_seconds = Some(900);
        assert!(validate(&i, &Catalog::builtin(), 900).is_ok());
    }

    #[test]
    fn payload_must_be_a_bounded_map() {
        let mut i = inputs("python3.11");
        i.handler = Some("h".into());
        i.script = Some(json!("def h(e, c): pass"));
        i.input_payload = Some(json!([1, 2]));
        assert_eq!(
            problems(&i),
            vec!["InputPayload: must be a map (a JSON or YAML object), not a list"]
        );
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "a": deep });
        }
        i.input_payload = Some(deep);
        assert!(problems(&i)[0].contains("levels deep"));
        i.input_payload = Some(json!({"big": "x".repeat(MAX_PAYLOAD_BYTES)}));
        assert!(problems(&i)[0].contains("over the limit"));
    }

    #[test]
    fn handler_forms_resolve() {
        let mut i = inputs("python3.11");
        i.attachments = vec![py("process_instance.py")];
        i.handler = Some("process_instance.process_instance_data".into());
        let v = validate(&i, &Catalog::builtin(), 600).unwrap();
        assert_eq!(v.entry.unwrap().module, "process_instance");
        i.handler = Some("process_instance_data".into());
        let v = validate(&i, &Catalog::builtin(), 600).unwrap();
        assert_eq!(v.entry.unwrap().module, "process_instance");
        i.handler = Some("other.fn".into());
        assert!(problems(&i)[0].contains("not attached"));
        // A zip may hold any module, and an inline script may sit beside it (AWS-ExportPatchReportToS3).
        i.attachments = vec![zip("AWS-ExportPatchReportToS3.zip")];
        i.script = Some(json!("def hello(): return hello"));
        i.handler = Some("script.script_handler".into());
        let v = validate(&i, &Catalog::builtin(), 600).unwrap();
        assert_eq!(v.zips, vec!["AWS-ExportPatchReportToS3.zip"]);
        i.script = None;
        i.handler = Some("bare".into());
        assert!(problems(&i)[0].contains("use `module.function`"));
        i.handler = Some("not a name".into());
        assert!(problems(&i)[0].contains("is not a Python function name"));
    }

    #[test]
    fn attachment_names_are_plain() {
        for bad in [
            "../x.py",
            "/etc/x.py",
            "a/b.py",
            ".hidden.py",
            "customer_script.py",
        ] {
            let mut i = inputs("python3.11");
            i.handler = Some("f".into());
            i.script = Some(json!("def f(e, c): pass"));
            i.attachments = vec![py(bad)];
            assert!(problems(&i)[0].starts_with("Attachment:"), "{bad}");
        }
        let mut i = inputs("python3.11");
        i.handler = Some("f".into());
        i.script = Some(json!("def f(e, c): pass"));
        i.attachments = vec![Attachment {
            name: "x.zip".into(),
            bytes: b"not a zip".to_vec(),
        }];
        assert!(problems(&i)[0].contains("not a zip archive"));
        i.attachments = (0..6).map(|n| py(&format!("m{n}.py"))).collect();
        assert!(problems(&i)[0].contains("at most 5"));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let i = StepInputs {
            runtime: Some("python3.11".into()),
            input_payload: Some(json!("x")),
            timeout_seconds: Some(0),
            ..Default::default()
        };
        let p = problems(&i);
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
