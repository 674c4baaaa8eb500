//! CPython installations already on this machine (pyenv, uv, `/usr/local`, `/opt/python*`, or a
//! prefix named with `--python-from`) as the third image source.
//!
//! This module finds an installation of exactly a runtime's minor version, checks that its
//! interpreter runs and reports that version, and says what to copy and how to relocate it.
//! The build itself (Debian root, copy, RUNPATH, boto3, import) is in [`crate::images`].

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

/// Where an installation copied into an image lives: `/opt/cpython/<version>`.
pub const IMAGE_PREFIX_ROOT: &str = "/opt/cpython";

/// How long the interpreter probe may take (a cold start from a slow disk included).
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// The most output a probe may print that we read (it prints one short JSON line).
const PROBE_OUTPUT_CAP: usize = 16 * 1024;

/// The most candidate folders looked at in one place (a pyenv with hundreds of versions is
/// still fine; a mistaken `/opt` with millions of entries is not walked).
const MAX_CANDIDATES_PER_PLACE: usize = 512;

/// The Python code the probe runs: facts about the interpreter as one JSON line. Written for
/// every CPython from 3.6 on (no f-strings needed, nothing newer than 3.6).
const PROBE_CODE: &str = "import json, sys, sysconfig\n\
v = sysconfig.get_config_var\n\
print(json.dumps({'implementation': sys.implementation.name, \
'version': list(sys.version_info[:3]), 'releaselevel': sys.version_info.releaselevel, \
'prefix': sys.prefix, 'shared': v('Py_ENABLE_SHARED'), 'instsoname': v('INSTSONAME'), \
'abiflags': getattr(sys, 'abiflags', '')}))\n";

/// One place scriptbox looks for installations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPlace {
    /// What the place is, for messages and labels (`pyenv`, `uv`, `/usr/local`...).
    pub label: String,
    /// The folder.
    pub root: PathBuf,
    /// Whether the folder is itself a prefix or holds one prefix per entry.
    pub kind: PlaceKind,
}

/// The shape of a [`SearchPlace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceKind {
    /// The folder is an installation prefix (`/usr/local`, `--python-from`).
    Prefix,
    /// Each entry of the folder is a prefix (`~/.pyenv/versions/3.8.18`).
    Prefixes,
    /// Each `python*` entry of the folder is a prefix, or holds prefixes (`/opt/python3.8`,
    /// `/opt/python/3.8.18`).
    PythonStar,
}

/// A CPython installation that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The place it was found in (`pyenv`, `uv`, `--python-from`...).
    pub source: String,
    /// Its prefix (`sys.prefix`), canonical.
    pub prefix: PathBuf,
    /// The exact version, `3.8.18`.
    pub version: String,
    /// The runtime's minor version, `3.8`.
    pub minor: String,
    /// `m` on 3.6 and 3.7 builds, empty after.
    pub abiflags: String,
    /// The shared libpython's file name (`libpython3.8.so.1.0`) when built with `--enable-shared`.
    pub libpython: Option<String>,
    /// Cheap identity of the files (sizes and modification times): see [`fingerprint`].
    pub fingerprint: String,
}

impl Installation {
    /// The interpreter, `<prefix>/bin/pythonX.Y`.
    pub fn interpreter(&self) -> PathBuf {
        self.prefix
            .join("bin")
            .join(format!("python{}", self.minor))
    }

    /// Where it lives inside the image.
    pub fn image_prefix(&self) -> String {
        format!("{IMAGE_PREFIX_ROOT}/{}", self.version)
    }

    /// The standard library folder name, `pythonX.Y`.
    pub fn stdlib_name(&self) -> String {
        format!("python{}", self.minor)
    }

    /// Where it came from, for the image label and `scriptbox runtimes`: `pyenv /root/.pyenv/versions/3.8.18`.
    pub fn source_description(&self) -> String {
        format!("{} {}", self.source, self.prefix.display())
    }

    /// Everything that identifies the installation, for the recipe hash.
    pub fn identity(&self) -> String {
        format!(
            "cpython {} | {} | {}",
            self.version,
            self.source_description(),
            self.fingerprint
        )
    }
}

/// Why no installation of a minor version could be used: every place, and why each failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no usable CPython {minor} installation: {}", .tried.iter().map(|(place, why)| format!("{place}: {why}")).collect::<Vec<_>>().join("; "))]
pub struct NotFound {
    /// The minor version looked for.
    pub minor: String,
    /// Each place tried, with why it gave nothing.
    pub tried: Vec<(String, String)>,
}

/// The places scriptbox looks in without `--python-from`, in order: pyenv (`$PYENV_ROOT/versions`,
/// `~/.pyenv/versions`), uv's managed interpreters, `/usr/local`, `/opt/python*`.
pub fn default_places() -> Vec<SearchPlace> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut places = Vec::new();
    let mut pyenv_roots = Vec::new();
    if let Some(root) = std::env::var_os("PYENV_ROOT").filter(|r| !r.is_empty()) {
        pyenv_roots.push(PathBuf::from(root).join("versions"));
    }
    if let Some(home) = &home {
        pyenv_roots.push(home.join(".pyenv/versions"));
    }
    pyenv_roots.dedup();
    for root in pyenv_roots {
        places.push(SearchPlace {
            label: "pyenv".into(),
            root,
            kind: PlaceKind::Prefixes,
        });
    }
    let uv_root = std::env::var_os("UV_PYTHON_INSTALL_DIR")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|r| !r.is_empty())
                .map(|d| PathBuf::from(d).join("uv/python"))
        })
        .or_else(|| home.as_ref().map(|h| h.join(".local/share/uv/python")));
    if let Some(root) = uv_root {
        places.push(SearchPlace {
            label: "uv".into(),
            root,
            kind: PlaceKind::Prefixes,
        });
    }
    places.push(SearchPlace {
        label: "/usr/local".into(),
        root: PathBuf::from("/usr/local"),
        kind: PlaceKind::Prefix,
    });
    places.push(SearchPlace {
        label: "/opt/python*".into(),
        root: PathBuf::from("/opt"),
        kind: PlaceKind::PythonStar,
    });
    places
}

/// The one place `--python-from PREFIX` names.
pub fn explicit_place(prefix: &Path) -> SearchPlace {
    SearchPlace {
        label: "--python-from".into(),
        root: prefix.to_path_buf(),
        kind: PlaceKind::Prefix,
    }
}

/// A parsed `major.minor.patch` for ordering candidates.
fn version_key(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Checks that `minor` is `3.N`, so it can safely name files.
pub fn valid_minor(minor: &str) -> bool {
    let mut parts = minor.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None)
            if !a.is_empty() && !b.is_empty() && a.len() <= 3 && b.len() <= 3
                && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    )
}

/// Why a place or a candidate folder holds no usable installation: one entry of the search's
/// report, so each reads as a short clause after the place or the interpreter.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    /// The place is not a folder.
    #[error("{} does not exist", .0.display())]
    NoPlace(PathBuf),
    /// The folder has no interpreter of the minor version.
    #[error("{} has no bin/python{minor}", prefix.display())]
    NoInterpreter {
        /// The folder.
        prefix: PathBuf,
        /// The minor version.
        minor: String,
    },
    /// The folder cannot be resolved.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The interpreter's probe failed.
    #[error("{} {why}", interpreter.display())]
    Probe {
        /// The interpreter.
        interpreter: PathBuf,
        /// What went wrong.
        why: ProbeError,
    },
    /// The interpreter's or libpython's file facts cannot be read.
    #[error("cannot read {}", .0.display())]
    NoFingerprint(PathBuf),
    /// The interpreter runs but is not the installation wanted (not CPython, another version,
    /// a pre-release, a venv, a missing libpython...).
    #[error("{} {why}", interpreter.display())]
    Unfit {
        /// The interpreter.
        interpreter: PathBuf,
        /// How it differs from what is wanted.
        why: String,
    },
}

/// Why running an interpreter's probe gave no facts.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// It could not be started.
    #[error("does not run ({0})")]
    Spawn(std::io::Error),
    /// It did not finish in time (it was killed).
    #[error("did not answer within {0} s")]
    Deadline(u64),
    /// Waiting for it failed.
    #[error("could not be waited for ({0})")]
    Wait(std::io::Error),
    /// Its output could not be read.
    #[error("could not be read ({0})")]
    Read(std::io::Error),
    /// It exited unsuccessfully; the last line of its stderr.
    #[error("does not run ({status}: {last_line})")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last line it wrote to stderr.
        last_line: String,
    },
    /// Its output is not the probe's JSON.
    #[error("printed no usable facts ({0})")]
    Facts(serde_json::Error),
}

/// The candidate prefixes of a place, or why it has none.
fn candidates(place: &SearchPlace) -> Result<Vec<PathBuf>, Rejected> {
    if !place.root.is_dir() {
        return Err(Rejected::NoPlace(place.root.clone()));
    }
    let list = |dir: &Path, filter: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(filter))
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .take(MAX_CANDIDATES_PER_PLACE)
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    Ok(match place.kind {
        PlaceKind::Prefix => vec![place.root.clone()],
        PlaceKind::Prefixes => list(&place.root, &|_| true),
        PlaceKind::PythonStar => {
            let mut out = Vec::new();
            for dir in list(&place.root, &|n| n.starts_with("python")) {
                if dir.join("bin").is_dir() {
                    out.push(dir);
                } else {
                    out.extend(list(&dir, &|_| true));
                }
            }
            out
        }
    })
}

#[derive(Debug, Deserialize)]
struct Probe {
    implementation: String,
    version: Vec<u32>,
    releaselevel: String,
    prefix: String,
    shared: Option<serde_json::Value>,
    instsoname: Option<String>,
    abiflags: String,
}

/// Runs the interpreter's probe under a deadline (a blocking call: run it off the async workers).
fn probe(interpreter: &Path) -> Result<Probe, ProbeError> {
    let mut child = std::process::Command::new(interpreter)
        // -I: no user site, no PYTHON* variables; -S: no site module. Only the interpreter itself.
        .args(["-I", "-S", "-c", PROBE_CODE])
        .env_clear()
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ProbeError::Spawn)?;
    let deadline = std::time::Instant::now() + PROBE_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Deadline(PROBE_LIMIT.as_secs()));
            }
            Err(e) => return Err(ProbeError::Wait(e)),
        }
    }
    let out = child.wait_with_output().map_err(ProbeError::Read)?;
    if !out.status.success() {
        let last_line =
            String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(PROBE_OUTPUT_CAP)])
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .to_string();
        return Err(ProbeError::Failed {
            status: out.status,
            last_line,
        });
    }
    let text = &out.stdout[..out.stdout.len().min(PROBE_OUTPUT_CAP)];
    serde_json::from_slice(text).map_err(ProbeError::Facts)
}

/// A cheap identity of an installation's files: the interpreter's and libpython's size and
/// modification time. A reinstall or an upgrade in place changes it; reading it runs nothing.
pub fn fingerprint(prefix: &Path, minor: &str) -> Option<String> {
    let stamp = |path: &Path| -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(format!(
            "{}:{}.{:09}",
            meta.len(),
            mtime.as_secs(),
            mtime.subsec_nanos()
        ))
    };
    let mut parts = vec![format!(
        "python{minor}={}",
        stamp(&prefix.join("bin").join(format!("python{minor}")))?
    )];
    let lib = prefix.join("lib");
    let mut libs: Vec<String> = std::fs::read_dir(&lib)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("libpython{minor}")) && n.contains(".so"))
                .collect()
        })
        .unwrap_or_default();
    libs.sort();
    for name in libs {
        if let Some(s) = stamp(&lib.join(&name)) {
            parts.push(format!("{name}={s}"));
        }
    }
    Some(parts.join(","))
}

/// Checks one candidate prefix for `minor`.
fn check_candidate(prefix: &Path, minor: &str, source: &str) -> Result<Installation, Rejected> {
    let interpreter = prefix.join("bin").join(format!("python{minor}"));
    if !interpreter.is_file() {
        return Err(Rejected::NoInterpreter {
            prefix: prefix.to_path_buf(),
            minor: minor.to_string(),
        });
    }
    let canonical = prefix
        .canonicalize()
        .map_err(|source| Rejected::Unreadable {
            path: prefix.to_path_buf(),
            source,
        })?;
    let facts = probe(&interpreter).map_err(|why| Rejected::Probe {
        interpreter: interpreter.clone(),
        why,
    })?;
    let unfit = |why: String| Rejected::Unfit {
        interpreter: interpreter.clone(),
        why,
    };
    if facts.implementation != "cpython" {
        return Err(unfit(format!("is {}, not CPython", facts.implementation)));
    }
    let reported = facts
        .version
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let reported_minor = facts
        .version
        .iter()
        .take(2)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    if reported_minor != minor || facts.version.len() != 3 {
        return Err(unfit(format!("reports CPython {reported}, not {minor}")));
    }
    if facts.releaselevel != "final" {
        return Err(unfit(format!(
            "is a pre-release ({reported} {})",
            facts.releaselevel
        )));
    }
    // A venv, or a /usr/local/bin/python3.X that is a link to another installation, is not the
    // installation itself: copying this folder would not copy the interpreter's library.
    let real_prefix = Path::new(&facts.prefix)
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(&facts.prefix));
    if real_prefix != canonical {
        return Err(unfit(format!(
            "belongs to the installation at {}, not this folder",
            facts.prefix
        )));
    }
    let shared = match &facts.shared {
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
        Some(serde_json::Value::String(s)) => s == "1",
        _ => false,
    };
    let libpython = if shared {
        let name = facts
            .instsoname
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| unfit("is shared but names no libpython".into()))?;
        if !canonical.join("lib").join(&name).exists() {
            return Err(unfit(format!(
                "is shared but {} is missing",
                canonical.join("lib").join(&name).display()
            )));
        }
        Some(name)
    } else {
        None
    };
    let fingerprint = fingerprint(&canonical, minor)
        .ok_or_else(|| Rejected::NoFingerprint(interpreter.clone()))?;
    Ok(Installation {
        source: source.to_string(),
        prefix: canonical,
        version: reported,
        minor: minor.to_string(),
        abiflags: facts.abiflags,
        libpython,
        fingerprint,
    })
}

/// Finds the newest patch release of exactly `minor` (`3.8`) in `places`, checking each
/// candidate's interpreter. A blocking call (it starts interpreters): run it off the async workers.
pub fn find(minor: &str, places: &[SearchPlace]) -> Result<Installation, NotFound> {
    let mut tried = Vec::new();
    let mut found: Vec<Installation> = Vec::new();
    if !valid_minor(minor) {
        return Err(NotFound {
            minor: minor.to_string(),
            tried: vec![(
                "runtime".into(),
                format!("{minor:?} is not a CPython major.minor version"),
            )],
        });
    }
    for place in places {
        let where_ = format!("{} ({})", place.label, place.root.display());
        let list = match candidates(place) {
            Ok(list) => list,
            Err(why) => {
                tried.push((where_, why.to_string()));
                continue;
            }
        };
        let mut problems = Vec::new();
        let mut others = Vec::new();
        let before = found.len();
        for prefix in &list {
            if !prefix.join("bin").join(format!("python{minor}")).is_file() {
                if let Some(name) = prefix.file_name().and_then(|n| n.to_str()) {
                    others.push(name.to_string());
                }
                continue;
            }
            match check_candidate(prefix, minor, &place.label) {
                Ok(inst) => found.push(inst),
                Err(why) => problems.push(why.to_string()),
            }
        }
        if found.len() == before {
            let why = if !problems.is_empty() {
                problems.join("; ")
            } else if place.kind == PlaceKind::Prefix {
                format!("no bin/python{minor}")
            } else if others.is_empty() {
                format!("no installation of {minor}")
            } else {
                others.truncate(12);
                format!("no installation of {minor} (has {})", others.join(", "))
            };
            tried.push((where_, why));
        }
    }
    // The newest patch release; on a tie the earlier place wins (the list is in search order).
    let mut best: Option<Installation> = None;
    for inst in found {
        let newer = match &best {
            None => true,
            Some(b) => version_key(&inst.version) > version_key(&b.version),
        };
        if newer {
            best = Some(inst);
        }
    }
    best.ok_or(NotFound {
        minor: minor.to_string(),
        tried,
    })
}

/// Whether a path inside the installation's `lib/pythonX.Y` is left out of the image: the test
/// suite, IDLE, tkinter (and turtledemo), ensurepip, bytecode caches, the static library and
/// build configuration, third-party packages (pip, setuptools), and the C test modules.
pub fn trimmed(rel: &Path) -> bool {
    let names: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    let Some(first) = names.first() else {
        return false;
    };
    if matches!(
        *first,
        "test" | "idlelib" | "tkinter" | "turtledemo" | "ensurepip"
    ) {
        return true;
    }
    if first.starts_with("config-") {
        return true;
    }
    if names
        .iter()
        .any(|n| *n == "__pycache__" || *n == "idle_test")
    {
        return true;
    }
    // A package's own tests (unittest/test, ctypes/test, distutils/tests, lib2to3/tests...).
    if names.len() >= 2 && names[1..].iter().any(|n| *n == "test" || *n == "tests") {
        return true;
    }
    if *first == "site-packages" && names.len() >= 2 && names[1] != "README.txt" {
        return true;
    }
    if *first == "lib-dynload" {
        if let Some(module) = names.get(1) {
            return module.starts_with("_tkinter")
                || module.starts_with("_test")
                || module.starts_with("_ctypes_test")
                || module.starts_with("_xxtestfuzz")
                || module.starts_with("xxlimited");
        }
    }
    false
}

/// The RUNPATH a relocated ELF file needs. `runpath` is its current value, `old_prefixes` the
/// installation's prefix as found and as canonical, `file_dir` the file's folder relative to the
/// prefix (`bin`, `lib`, `lib/python3.8/lib-dynload`). Each entry inside the old prefix becomes
/// `$ORIGIN`-relative; entries elsewhere are kept. `None` when nothing changes.
pub fn relocated_runpath(runpath: &str, old_prefixes: &[&Path], file_dir: &Path) -> Option<String> {
    if runpath.trim().is_empty() {
        return None;
    }
    let depth = file_dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut changed = false;
    let entries: Vec<String> = runpath
        .split(':')
        .map(|entry| {
            for old in old_prefixes {
                if let Ok(rest) = Path::new(entry).strip_prefix(old) {
                    changed = true;
                    let mut path = String::from("$ORIGIN");
                    for _ in 0..depth {
                        path.push_str("/..");
                    }
                    let rest = rest.to_string_lossy();
                    if !rest.is_empty() {
                        path.push('/');
                        path.push_str(&rest);
                    }
                    return simplify_origin(&path, file_dir);
                }
            }
            entry.to_string()
        })
        .collect();
    changed.then(|| entries.join(":"))
}

/// `$ORIGIN/../lib` stays; `$ORIGIN/../../..` for a file in `lib/python3.8/lib-dynload` pointing
/// at `lib` becomes `$ORIGIN/../..`: `..` followed by the component we came from cancels out.
fn simplify_origin(path: &str, file_dir: &Path) -> String {
    let dirs: Vec<String> = file_dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let rest: Vec<&str> = path
        .trim_start_matches("$ORIGIN")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let ups = rest.iter().take_while(|p| **p == "..").count();
    let downs = &rest[ups..];
    // Common leading part of the way down and the folder the file is in.
    let common = dirs
        .iter()
        .zip(downs.iter())
        .take_while(|(a, b)| a.as_str() == **b)
        .count();
    let mut out = String::from("$ORIGIN");
    for _ in 0..ups.saturating_sub(common) {
        out.push_str("/..");
    }
    for part in &downs[common..] {
        out.push('/');
        out.push_str(part);
    }
    out
}

/// The Debian suite this machine runs (`bookworm`), which is the suite an installation built
/// here was built against. `None` on a machine that is not Debian.
pub fn host_debian_suite() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_string())
    };
    if field("ID=")? != "debian" {
        return None;
    }
    field("VERSION_CODENAME=").filter(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake installation whose "interpreter" is a shell script printing the probe's answer.
    fn fake(root: &Path, dir: &str, minor: &str, reports: &str, prefix: Option<&Path>) -> PathBuf {
        let prefix_dir = root.join(dir);
        std::fs::create_dir_all(prefix_dir.join("bin")).unwrap();
        std::fs::create_dir_all(prefix_dir.join("lib")).unwrap();
        let said_prefix = prefix.map(Path::to_path_buf).unwrap_or(prefix_dir.clone());
        let version: Vec<&str> = reports.split('.').collect();
        let script = format!(
            "#!/bin/sh\necho '{{\"implementation\": \"cpython\", \"version\": [{}], \"releaselevel\": \"final\", \"prefix\": \"{}\", \"shared\": 0, \"instsoname\": null, \"abiflags\": \"\"}}'\n",
            version.join(", "),
            said_prefix.display()
        );
        let bin = prefix_dir.join("bin").join(format!("python{minor}"));
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        prefix_dir
    }

    fn versions_place(root: &Path) -> SearchPlace {
        SearchPlace {
            label: "pyenv".into(),
            root: root.to_path_buf(),
            kind: PlaceKind::Prefixes,
        }
    }

    #[test]
    fn the_newest_patch_of_exactly_the_minor_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "3.8.2", "3.8", "3.8.2", None);
        fake(dir.path(), "3.8.10", "3.8", "3.8.10", None);
        fake(dir.path(), "3.9.1", "3.9", "3.9.1", None);
        let inst = find("3.8", &[versions_place(dir.path())]).unwrap();
        assert_eq!(inst.version, "3.8.10");
        assert_eq!(inst.source, "pyenv");
        assert!(inst.prefix.ends_with("3.8.10"));
        assert_eq!(inst.image_prefix(), "/opt/cpython/3.8.10");
    }

    #[test]
    fn an_interpreter_reporting_another_version_or_prefix_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "3.8.5", "3.8", "3.9.1", None);
        let elsewhere = tempfile::tempdir().unwrap();
        fake(dir.path(), "venv", "3.8", "3.8.7", Some(elsewhere.path()));
        let err = find("3.8", &[versions_place(dir.path())]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("reports CPython 3.9.1, not 3.8"), "{text}");
        assert!(text.contains("belongs to the installation at"), "{text}");
    }

    #[test]
    fn no_source_names_every_place_and_why() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "3.9.1", "3.9", "3.9.1", None);
        let broken = fake(dir.path(), "3.7.1", "3.7", "3.7.1", None);
        std::fs::write(broken.join("bin/python3.7"), "#!/bin/sh\nexit 3\n").unwrap();
        let places = vec![
            versions_place(dir.path()),
            explicit_place(&dir.path().join("missing")),
        ];
        let err = find("3.8", &places).unwrap_err();
        assert_eq!(err.tried.len(), 2, "{err}");
        assert!(
            err.tried[0]
                .1
                .contains("no installation of 3.8 (has 3.7.1, 3.9.1)"),
            "{err}"
        );
        assert!(err.tried[1].0.starts_with("--python-from"), "{err}");
        assert!(err.tried[1].1.contains("does not exist"), "{err}");
        let err = find("3.7", &places).unwrap_err().to_string();
        assert!(err.contains("does not run"), "{err}");
    }

    #[test]
    fn opt_python_star_holds_prefixes_or_folders_of_them() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "python3.8", "3.8", "3.8.1", None);
        fake(&dir.path().join("python"), "3.8.3", "3.8", "3.8.3", None);
        fake(dir.path(), "other", "3.8", "3.8.9", None);
        let place = SearchPlace {
            label: "/opt/python*".into(),
            root: dir.path().to_path_buf(),
            kind: PlaceKind::PythonStar,
        };
        assert_eq!(find("3.8", &[place]).unwrap().version, "3.8.3");
    }

    #[test]
    fn the_test_suite_idle_tkinter_ensurepip_and_caches_are_trimmed() {
        for path in [
            "test/test_os.py",
            "idlelib/pyshell.py",
            "tkinter/__init__.py",
            "ensurepip/__init__.py",
            "json/__pycache__/decoder.cpython-38.pyc",
            "unittest/test/test_case.py",
            "lib2to3/tests/data/x.py",
            "distutils/tests/test_core.py",
            "config-3.8-x86_64-linux-gnu/libpython3.8.a",
            "site-packages/pip/__init__.py",
            "lib-dynload/_tkinter.cpython-38-x86_64-linux-gnu.so",
            "lib-dynload/_testcapi.cpython-38-x86_64-linux-gnu.so",
        ] {
            assert!(trimmed(Path::new(path)), "{path} should be trimmed");
        }
        for path in [
            "json/decoder.py",
            "os.py",
            "lib2to3/pytree.py",
            "distutils/core.py",
            "imp.py",
            "site-packages/README.txt",
            "lib-dynload/_ssl.cpython-38-x86_64-linux-gnu.so",
            "unittest/case.py",
        ] {
            assert!(!trimmed(Path::new(path)), "{path} should be kept");
        }
    }

    #[test]
    fn absolute_runpaths_into_the_prefix_become_origin_relative() {
        let old = Path::new("/root/.pyenv/versions/3.8.18");
        let lib = "/root/.pyenv/versions/3.8.18/lib";
        assert_eq!(
            relocated_runpath(lib, &[old], Path::new("bin")).as_deref(),
            Some("$ORIGIN/../lib")
        );
        assert_eq!(
            relocated_runpath(lib, &[old], Path::new("lib")).as_deref(),
            Some("$ORIGIN")
        );
        assert_eq!(
            relocated_runpath(
                &format!("{lib}:/usr/lib/x86_64-linux-gnu"),
                &[old],
                Path::new("lib/python3.8/lib-dynload")
            )
            .as_deref(),
            Some("$ORIGIN/../..:/usr/lib/x86_64-linux-gnu")
        );
        assert_eq!(
            relocated_runpath("$ORIGIN/../lib", &[old], Path::new("bin")),
            None
        );
        assert_eq!(relocated_runpath("", &[old], Path::new("bin")), None);
    }

    #[test]
    fn minors_are_checked_before_they_name_files() {
        assert!(valid_minor("3.8"));
        assert!(valid_minor("3.12"));
        assert!(!valid_minor("3"));
        assert!(!valid_minor("3.8.1"));
        assert!(!valid_minor("../3"));
        assert!(!valid_minor("3.x"));
    }
}
