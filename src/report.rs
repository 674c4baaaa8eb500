//! Shapes the CLI and the daemon's API both print, defined once so the two cannot drift: a
//! runtime's row (`scriptbox runtimes`, `GET /v1/runtimes`) and a refused runbook's problems
//! (`scriptbox validate --output json`, the API's 400).

use serde::Serialize;
use serde_json::{Value, json};

use crate::images::{self, ImageFacts};
use crate::runbook::Problem;
use crate::runtimes::{Catalog, ResolvedRuntime};
use crate::sandbox::Engine;

/// One runtime as listed: its names, its image and that image's state and facts, AWS's status,
/// and the offline (Debian) recipe when it has one. Every key is always present (`null` when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeRow {
    /// The canonical name (`python3.11`).
    #[serde(rename = "Name")]
    pub name: String,
    /// Other names the runtime answers to.
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
    /// `python` or `powershell`.
    #[serde(rename = "Language")]
    pub language: String,
    /// The image tag.
    #[serde(rename = "Image")]
    pub image: String,
    /// `current`, `stale`, `missing`, `unknown` or `no engine`.
    #[serde(rename = "ImageState")]
    pub image_state: String,
    /// The image's exact CPython version.
    #[serde(rename = "CPythonVersion")]
    pub cpython_version: Option<String>,
    /// Where the image's CPython came from.
    #[serde(rename = "CPythonSource")]
    pub cpython_source: Option<String>,
    /// The image's size.
    #[serde(rename = "ImageSizeBytes")]
    pub image_size_bytes: Option<u64>,
    /// AWS's status of the runtime (supported, deprecated...).
    #[serde(rename = "AwsStatus")]
    pub aws_status: String,
    /// AWS's note on it.
    #[serde(rename = "AwsNote")]
    pub aws_note: Option<String>,
    /// The offline recipe: `debian <suite> (CPython <version>)`.
    #[serde(rename = "OfflineRecipe")]
    pub offline_recipe: Option<String>,
}

impl RuntimeRow {
    /// The row of `rt`, whose image is in `image_state` with `facts` (default when unknown).
    pub fn new(rt: &ResolvedRuntime<'_>, image_state: &str, facts: ImageFacts) -> Self {
        RuntimeRow {
            name: rt.runtime.name.clone(),
            aliases: rt.runtime.aliases.clone(),
            language: rt.language().as_str().to_string(),
            image: rt.runtime.image.clone(),
            image_state: image_state.to_string(),
            cpython_version: facts.cpython_version,
            cpython_source: facts.cpython_source,
            image_size_bytes: facts.size_bytes,
            aws_status: rt.runtime.aws_status.to_string(),
            aws_note: rt.runtime.aws_note.clone(),
            offline_recipe: rt
                .runtime
                .offline
                .as_ref()
                .map(|o| format!("debian {} (CPython {})", o.suite, o.python)),
        }
    }

    /// The row as a JSON object (keys in serde_json's map order, as the `json!` rows were).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The row of every runtime in `catalog`, asking `engine` for each image's state and facts;
/// without an engine the state is `no engine`, and the facts are unknown for a missing image.
pub async fn runtime_rows(catalog: &Catalog, engine: Option<&Engine>) -> Vec<RuntimeRow> {
    let mut rows = Vec::new();
    for rt in catalog.runtimes() {
        let state = match engine {
            Some(engine) => images::image_state(engine, &rt)
                .await
                .map(|s| s.as_str())
                .unwrap_or("unknown"),
            None => "no engine",
        };
        let facts = match engine {
            Some(engine) if state != "missing" => images::image_facts(engine, &rt).await,
            _ => None,
        }
        .unwrap_or_default();
        rows.push(RuntimeRow::new(&rt, state, facts));
    }
    rows
}

/// The problems of a refused runbook as JSON: position, context, message, the problem's kind,
/// the unsupported feature it names, and the whole text.
pub fn problems_json(problems: &[Problem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| {
                json!({
                    "Line": p.pos.line,
                    "Column": p.pos.col,
                    "Context": p.context,
                    "Message": p.message,
                    "Kind": format!("{:?}", p.kind),
                    "Unsupported": p.what,
                    "Text": p.to_string(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_row_has_every_key_of_both_former_copies() {
        let catalog = crate::runtimes::Catalog::builtin();
        let rt = catalog
            .resolve("python3.11")
            .expect("python3.11 is built in");
        let row = RuntimeRow::new(&rt, "missing", ImageFacts::default()).to_json();
        for key in [
            "Name",
            "Aliases",
            "Language",
            "Image",
            "ImageState",
            "CPythonVersion",
            "CPythonSource",
            "ImageSizeBytes",
            "AwsStatus",
            "AwsNote",
            "OfflineRecipe",
        ] {
            assert!(row.get(key).is_some(), "{key} missing: {row}");
        }
        assert_eq!(row["Name"], "python3.11");
        assert_eq!(row["ImageState"], "missing");
        assert_eq!(row.as_object().map(serde_json::Map::len), Some(11), "{row}");
    }
}
