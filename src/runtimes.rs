//! The runtime catalog: which `Runtime` names exist, and how each one is built and run.
//!
//! The catalog is data (`runtimes.toml`, compiled in and overridable with a file), so adding a
//! runtime never needs a code change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The catalog shipped with scriptbox.
pub const BUILTIN_CATALOG: &str = include_str!("../runtimes.toml");

/// Errors while loading a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read runtime catalog {path}: {source}")]
    Read {
        /// The catalog file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("runtime catalog {origin} is invalid: {message}")]
    Parse {
        /// Where the catalog came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// The TOML parsed but breaks a rule (duplicate name, unknown family...).
    #[error("runtime catalog {origin} is invalid: {message}")]
    Invalid {
        /// Where the catalog came from.
        origin: String,
        /// What rule is broken.
        message: String,
    },
}

/// The language a runtime family speaks, which decides how a step is validated and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// CPython with a `handler(events, context)` function.
    Python,
    /// PowerShell Core: a script reading `$env:InputPayload`.
    Powershell,
}

impl Language {
    /// The protocol's name for this language.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Powershell => "powershell",
        }
    }
}

/// What AWS says about a runtime today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AwsStatus {
    /// AWS runs runbooks on this runtime.
    Supported,
    /// AWS no longer runs runbooks on this runtime; scriptbox still does.
    Retired,
    /// AWS does not say clearly.
    Unknown,
}

impl fmt::Display for AwsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AwsStatus::Supported => "supported",
            AwsStatus::Retired => "retired",
            AwsStatus::Unknown => "unknown",
        })
    }
}

/// A family of runtimes sharing a bootstrap, a Dockerfile and a start command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// The language of the family.
    pub language: Language,
    /// The Dockerfile's folder, relative to the project root.
    pub dockerfile: String,
    /// The container's command: the bootstrap.
    pub command: Vec<String>,
    /// Where pinned Python packages live in the image (Python families only).
    #[serde(default)]
    pub site_packages: Option<String>,
}

/// An offline recipe: a Debian suite whose `python3` is exactly this runtime's CPython.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRecipe {
    /// The Debian suite passed to debootstrap (`bullseye`, `bookworm`).
    pub suite: String,
    /// The CPython version that suite ships, `major.minor`.
    pub python: String,
}

/// One runtime of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The canonical `Runtime` name.
    pub name: String,
    /// Other names accepted for it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The family key in `[family.*]`.
    pub family: String,
    /// The image executions of this runtime run in.
    pub image: String,
    /// AWS's status.
    pub aws_status: AwsStatus,
    /// A note on AWS's status (dates, sources).
    #[serde(default)]
    pub aws_note: Option<String>,
    /// Build arguments of the production Dockerfile.
    pub build: BTreeMap<String, String>,
    /// The offline recipe, where one exists.
    #[serde(default)]
    pub offline: Option<OfflineRecipe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    family: BTreeMap<String, Family>,
    runtime: Vec<Runtime>,
}

/// The loaded, checked catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    families: BTreeMap<String, Family>,
    runtimes: Vec<Runtime>,
}

/// A runtime together with its family, as looked up by name.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedRuntime<'a> {
    /// The runtime.
    pub runtime: &'a Runtime,
    /// Its family.
    pub family: &'a Family,
}

impl ResolvedRuntime<'_> {
    /// The runtime's language.
    pub fn language(&self) -> Language {
        self.family.language
    }
}

impl Catalog {
    /// The catalog compiled into scriptbox.
    pub fn builtin() -> Self {
        // The builtin catalog is checked by a unit test, so failing here is a build defect.
        Self::parse(BUILTIN_CATALOG, "runtimes.toml (built in)")
            .expect("the built-in runtimes.toml is valid (checked by tests)")
    }

    /// Loads a catalog from a file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a catalog's text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| CatalogError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut seen = BTreeMap::new();
        for rt in &file.runtime {
            if !file.family.contains_key(&rt.family) {
                return Err(invalid(format!(
                    "runtime {:?} names family {:?}, which is not defined",
                    rt.name, rt.family
                )));
            }
            for name in std::iter::once(&rt.name).chain(&rt.aliases) {
                if let Some(other) = seen.insert(name.clone(), rt.name.clone()) {
                    return Err(invalid(format!(
                        "name {name:?} is used by both {other:?} and {:?}",
                        rt.name
                    )));
                }
            }
            if rt.image.trim().is_empty() {
                return Err(invalid(format!("runtime {:?} has an empty image", rt.name)));
            }
        }
        for (key, family) in &file.family {
            if family.command.is_empty() {
                return Err(invalid(format!("family {key:?} has an empty command")));
            }
        }
        Ok(Catalog {
            families: file.family,
            runtimes: file.runtime,
        })
    }

    /// Every runtime, in catalog order.
    pub fn runtimes(&self) -> impl Iterator<Item = ResolvedRuntime<'_>> {
        self.runtimes.iter().map(move |runtime| ResolvedRuntime {
            runtime,
            family: &self.families[&runtime.family],
        })
    }

    /// Looks a `Runtime` name (or alias) up. Exact match: AWS's names are case-sensitive.
    pub fn resolve(&self, name: &str) -> Option<ResolvedRuntime<'_>> {
        self.runtimes()
            .find(|r| r.runtime.name == name || r.runtime.aliases.iter().any(|a| a == name))
    }

    /// The canonical names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.runtimes.iter().map(|r| r.name.as_str()).collect()
    }

    /// The family behind a key.
    pub fn family(&self, key: &str) -> Option<&Family> {
        self.families.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_every_contract_runtime() {
        let catalog = Catalog::builtin();
        for name in [
            "python3.6",
            "python3.7",
            "python3.8",
            "python3.9",
            "python3.10",
            "python3.11",
            "PowerShell Core 6.0",
            "PowerShell 7.0",
        ] {
            assert!(catalog.resolve(name).is_some(), "{name} missing");
        }
        assert_eq!(
            catalog.resolve("dotnetcore2.1").unwrap().runtime.name,
            "PowerShell Core 6.0"
        );
        assert_eq!(
            catalog.resolve("dotnetcore3.1").unwrap().runtime.name,
            "PowerShell 7.0"
        );
        assert!(catalog.resolve("python3.5").is_none());
        assert!(catalog.resolve("Python3.11").is_none());
    }

    #[test]
    fn offline_recipes_are_exactly_debians_cpythons() {
        let catalog = Catalog::builtin();
        let offline: Vec<_> = catalog
            .runtimes()
            .filter_map(|r| {
                r.runtime
                    .offline
                    .as_ref()
                    .map(|o| (r.runtime.name.as_str(), o))
            })
            .collect();
        assert_eq!(offline.len(), 2);
        for (name, recipe) in offline {
            assert_eq!(name, format!("python{}", recipe.python));
        }
    }

    #[test]
    fn python_runtimes_pin_boto3() {
        for r in Catalog::builtin().runtimes() {
            if r.language() == Language::Python {
                let pin = r.runtime.build.get("BOTO3_VERSION").expect("boto3 pinned");
                assert!(pin.split('.').all(|p| p.parse::<u32>().is_ok()), "{pin}");
            }
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = r#"
[family.python]
language = "python"
dockerfile = "images/python"
command = ["python3"]
[[runtime]]
name = "a"
family = "python"
image = "x"
aws_status = "supported"
build = {}
[[runtime]]
name = "b"
aliases = ["a"]
family = "python"
image = "y"
aws_status = "supported"
build = {}
"#;
        let err = Catalog::parse(text, "t").unwrap_err().to_string();
        assert!(err.contains("\"a\" is used by both"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = BUILTIN_CATALOG.replace(
            "aws_status = \"supported\"",
            "aws_status = \"supported\"\ncolour = 1",
        );
        let err = Catalog::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
