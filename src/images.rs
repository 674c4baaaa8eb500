//! Building runtime images. Three sources, tried in this order:
//!
//! 1. the production Dockerfile (`images/<family>/Dockerfile`), where its base image can be pulled;
//! 2. the Debian recipe (`offline` in `runtimes.toml`: debootstrap + pinned boto3 + the bootstrap),
//!    where Debian ships exactly that CPython (python3.9 from bullseye, python3.11 from bookworm);
//! 3. a CPython installation already on this machine ([`crate::cpython`]: pyenv, uv, `/usr/local`,
//!    `/opt/python*`, or the prefix `--python-from` names, which then is the only source tried),
//!    relocated under `/opt/cpython/<version>` on a Debian minbase root of the suite it was built
//!    against.
//!
//! Every image carries a `scriptbox.recipe` label: a hash of everything that went into it (the
//! bootstrap, the Dockerfile, the pins, and for the third source the installation's identity).
//! An image whose label differs is stale and is rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

mod local;

use local::build_local;

use crate::cpython::{self, Installation};
use crate::runtimes::{Language, ResolvedRuntime};
use crate::sandbox::Engine;

/// The label holding an image's recipe hash.
pub const LABEL_RECIPE: &str = "scriptbox.recipe";
/// The label naming the source an image was built from: `dockerfile`, `debian` or `local-cpython`.
pub const LABEL_SOURCE: &str = "scriptbox.source";
/// The label holding the exact CPython version of a Python image (`3.8.18`).
pub const LABEL_CPYTHON_VERSION: &str = "scriptbox.cpython.version";
/// The label saying where that CPython came from (`pyenv /root/.pyenv/versions/3.8.18`,
/// `debian bullseye python3.9 3.9.2-1`).
pub const LABEL_CPYTHON_SOURCE: &str = "scriptbox.cpython.source";
/// The label holding a local installation's identity (what its recipe hash includes).
pub const LABEL_CPYTHON_IDENTITY: &str = "scriptbox.cpython.identity";
/// The label holding the host prefix a local installation was copied from.
pub const LABEL_CPYTHON_PREFIX: &str = "scriptbox.cpython.prefix";
/// The label holding that installation's file fingerprint ([`cpython::fingerprint`]).
pub const LABEL_CPYTHON_FINGERPRINT: &str = "scriptbox.cpython.fingerprint";

/// [`LABEL_SOURCE`] of an image built from a local CPython installation.
pub const SOURCE_LOCAL_CPYTHON: &str = "local-cpython";

/// Bumped when the way a local installation becomes an image changes (what is trimmed, how it
/// is relocated), so images built the old way are stale.
const LOCAL_RECIPE_VERSION: &str = "local-cpython-v1";

/// Trimmed from the Debian root of a local-CPython image: nothing a step reads.
const ROOTFS_TRIM: &[&str] = &[
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/info/*",
    "./usr/share/locale/*",
    "./var/cache/apt/*",
    "./var/cache/debconf/*-old",
    "./var/lib/apt/lists/*",
    "./var/log/*",
    // The record of what the cached root was bootstrapped with (see `local::shared_root`).
    "./.scriptbox-include",
];

/// One file of a build context: its name and bytes.
type ContextFile = (&'static str, &'static [u8]);

/// The files of each family's build context, compiled in so the binary builds images anywhere.
const FAMILY_FILES: &[(&str, &[ContextFile])] = &[
    (
        "images/python",
        &[
            ("Dockerfile", include_bytes!("../images/python/Dockerfile")),
            (
                "bootstrap.py",
                include_bytes!("../images/python/bootstrap.py"),
            ),
        ],
    ),
    (
        "images/powershell",
        &[
            (
                "Dockerfile",
                include_bytes!("../images/powershell/Dockerfile"),
            ),
            (
                "bootstrap.ps1",
                include_bytes!("../images/powershell/bootstrap.ps1"),
            ),
        ],
    ),
];

/// Errors of an image build.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No source exists for the runtime on this machine (no registry, no Debian recipe, no
    /// local installation): the runtime cannot be built here.
    #[error("{runtime}: cannot build image {image} here: {why}")]
    NoSource {
        /// The runtime.
        runtime: String,
        /// The image.
        image: String,
        /// Every source tried, and why each is unavailable.
        why: String,
    },
    /// A source was there but building from it failed.
    #[error("{runtime}: cannot build image {image}: {why}")]
    Unbuildable {
        /// The runtime.
        runtime: String,
        /// The image.
        image: String,
        /// What is missing, for each recipe tried.
        why: String,
    },
    /// The family's build files are not compiled in.
    #[error("family folder {0:?} has no compiled-in build files")]
    UnknownFamily(String),
}

/// How an image came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The image was present with the same recipe.
    UpToDate,
    /// Built from the production Dockerfile.
    BuiltFromDockerfile,
    /// Built offline from Debian's packages.
    BuiltOffline,
    /// Built from a CPython installation on this machine.
    BuiltFromLocalCpython {
        /// The exact CPython version.
        version: String,
        /// Where it came from.
        source: String,
    },
}

/// What `scriptbox images build` was asked for besides the runtimes.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Rebuild even when the image is current.
    pub force: bool,
    /// Build from this CPython prefix only (`--python-from`).
    pub python_from: Option<PathBuf>,
}

/// Why one step of an image build failed: a command, a file, the engine, or a condition the
/// build needs. Its message is the line the build's report shows.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// The command.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A command (or blocking work) did not finish within its deadline; it was stopped.
    #[error("{what} did not finish within {seconds} s")]
    Deadline {
        /// The work.
        what: String,
        /// The deadline.
        seconds: u64,
    },
    /// Waiting for a command (or blocking work) failed.
    #[error("{what} failed: {why}")]
    Wait {
        /// The work.
        what: String,
        /// The error.
        why: String,
    },
    /// A command exited unsuccessfully.
    #[error("{what} exited with {status}: {tail}")]
    Exited {
        /// The command.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its stderr, joined by ` | `.
        tail: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// `create`, `write`, `chmod`, `clear`, `move ... into place`.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading or copying a path failed.
    #[error("{}: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool or condition the build needs is missing (the sentence names it and the fix).
    #[error("{0}")]
    Missing(String),
    /// What the build made or found is not what it must be (the sentence says how).
    #[error("{0}")]
    Refused(String),
    /// An I/O error of the build context.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A value could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The family's files.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] crate::sandbox::SandboxError),
    /// No installation was found.
    #[error(transparent)]
    NotFound(#[from] cpython::NotFound),
}

/// Why no source of a runtime is on this machine: each source and why it is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct NoOfflineSource(pub Vec<String>);

/// Why one source gave no image.
#[derive(Debug, Clone)]
enum SourceError {
    /// The source does not exist here (no registry, no recipe, no installation, a missing tool).
    Unavailable(String),
    /// The source exists but the build from it failed.
    Failed(String),
}

impl SourceError {
    /// The source is not here, for this reason.
    fn unavailable(why: impl std::fmt::Display) -> Self {
        SourceError::Unavailable(why.to_string())
    }

    /// The build from the source SourceError::failed, for this reason.
    fn failed(why: impl std::fmt::Display) -> Self {
        SourceError::Failed(why.to_string())
    }

    fn text(&self) -> &str {
        match self {
            SourceError::Unavailable(s) | SourceError::Failed(s) => s,
        }
    }
}

/// Receives progress messages (for a spinner or a log).
pub trait Progress {
    /// A new phase.
    fn phase(&mut self, message: &str);
}

/// The compiled-in build context of a family.
pub fn family_files(folder: &str) -> Result<&'static [(&'static str, &'static [u8])], ImageError> {
    FAMILY_FILES
        .iter()
        .find(|(f, _)| *f == folder)
        .map(|(_, files)| *files)
        .ok_or_else(|| ImageError::UnknownFamily(folder.to_string()))
}

/// The recipe hash of a runtime's image: changes whenever anything that goes into it changes.
pub fn recipe_hash(rt: &ResolvedRuntime<'_>) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(b"scriptbox-image-v1\0");
    for (name, bytes) in family_files(&rt.family.dockerfile)? {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(bytes);
    }
    for (k, v) in &rt.runtime.build {
        h.update(format!("{k}={v}\0").as_bytes());
    }
    h.update(rt.family.command.join("\0").as_bytes());
    let digest = h.finalize();
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

/// Whether a runtime's image is present, and whether it matches the current recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// Not in the engine.
    Missing,
    /// Present but built from another recipe (an older bootstrap, other pins).
    Stale,
    /// Present and current.
    Current,
}

impl ImageState {
    /// A short word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Missing => "missing",
            ImageState::Stale => "stale",
            ImageState::Current => "present",
        }
    }
}

/// The recipe hash of an image built from a local installation: the runtime's recipe plus the
/// installation's identity (version, where it is, its files' fingerprint).
pub fn local_recipe_hash(rt: &ResolvedRuntime<'_>, identity: &str) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(recipe_hash(rt)?.as_bytes());
    h.update(b"\0");
    h.update(LOCAL_RECIPE_VERSION.as_bytes());
    h.update(b"\0");
    h.update(identity.as_bytes());
    let digest = h.finalize();
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

/// The fingerprint of the installation an image's labels name, read now: `None` when the image
/// is not from a local installation or the installation is no longer here, `Some(None)` when it
/// is here but unreadable. A blocking call (file metadata).
fn installation_now(rt: &ResolvedRuntime<'_>, labels: &HashMap<String, String>) -> InstallationNow {
    let (Some(prefix), Some(minor)) = (
        labels.get(LABEL_CPYTHON_PREFIX).cloned(),
        rt.runtime.build.get("PYTHON_VERSION").cloned(),
    ) else {
        return Box::new(|| None);
    };
    if labels.get(LABEL_SOURCE).map(String::as_str) != Some(SOURCE_LOCAL_CPYTHON) {
        return Box::new(|| None);
    }
    Box::new(move || {
        let prefix = Path::new(&prefix);
        prefix
            .exists()
            .then(|| cpython::fingerprint(prefix, &minor))
    })
}

/// A deferred read of an installation's fingerprint (see [`installation_now`]).
type InstallationNow = Box<dyn FnOnce() -> Option<Option<String>> + Send>;

/// The state an image has given its labels. An image from a local installation is current when
/// its recipe (bootstrap, pins, identity) matches and the installation it came from, if it is
/// still on this machine (`now`: its fingerprint read now), is unchanged: an image is
/// self-contained, so one whose installation has been removed still runs.
fn state_from_labels(
    rt: &ResolvedRuntime<'_>,
    labels: &HashMap<String, String>,
    now: Option<Option<String>>,
) -> ImageState {
    let recipe = labels.get(LABEL_RECIPE);
    if labels.get(LABEL_SOURCE).map(String::as_str) != Some(SOURCE_LOCAL_CPYTHON) {
        return if recipe == recipe_hash(rt).ok().as_ref() {
            ImageState::Current
        } else {
            ImageState::Stale
        };
    }
    let Some(identity) = labels.get(LABEL_CPYTHON_IDENTITY) else {
        return ImageState::Stale;
    };
    if recipe != local_recipe_hash(rt, identity).ok().as_ref() {
        return ImageState::Stale;
    }
    match now {
        Some(fingerprint) if fingerprint.as_ref() != labels.get(LABEL_CPYTHON_FINGERPRINT) => {
            ImageState::Stale
        }
        _ => ImageState::Current,
    }
}

/// Looks up a runtime's image state.
pub async fn image_state(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
) -> Result<ImageState, crate::sandbox::SandboxError> {
    Ok(match engine.image_labels(&rt.runtime.image).await? {
        None => ImageState::Missing,
        Some(labels) => {
            let read = installation_now(rt, &labels);
            let now =
                tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(read))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
            state_from_labels(rt, &labels, now)
        }
    })
}

/// What `scriptbox runtimes` shows of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The exact CPython version (Python images): the label, else the official base image's
    /// `PYTHON_VERSION`.
    pub cpython_version: Option<String>,
    /// Where the CPython came from.
    pub cpython_source: Option<String>,
    /// The image's size in bytes.
    pub size_bytes: Option<u64>,
}

/// Reads an image's CPython version, its source and its size; `None` when the image is missing
/// or the engine does not answer in time. A Debian-recipe image built before images carried
/// these labels gets them from the cached Debian root it was built from, when that is here.
pub async fn image_facts(engine: &Engine, rt: &ResolvedRuntime<'_>) -> Option<ImageFacts> {
    let image = &rt.runtime.image;
    let found = tokio::time::timeout(Duration::from_secs(30), engine.image_details(image))
        .await
        .ok()?
        .ok()??;
    let labels = found.labels;
    let env_version = found.env.into_iter().find_map(|e| {
        e.strip_prefix("PYTHON_VERSION=")
            .map(str::to_string)
            .filter(|v| v.matches('.').count() == 2)
    });
    let mut version = labels.get(LABEL_CPYTHON_VERSION).cloned().or(env_version);
    let mut source = labels.get(LABEL_CPYTHON_SOURCE).cloned();
    if source.is_none() && version.is_some() {
        source = Some("dockerfile (official python image)".into());
    }
    if version.is_none() && labels.get(LABEL_SOURCE).is_none_or(|s| s == "debian") {
        if let Some(offline) = &rt.runtime.offline {
            let package = format!("python{}", offline.python);
            let root = cache_dir().join("rootfs").join(&offline.suite);
            let wanted = package.clone();
            let read = tokio::task::spawn_blocking(move || dpkg_version(&root, &wanted));
            let found = tokio::time::timeout(Duration::from_secs(30), read)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            if let Some(v) = found {
                version = Some(upstream_version(&v));
                source = Some(format!("debian {} {package} {v}", offline.suite));
            }
        }
    }
    Some(ImageFacts {
        cpython_version: version,
        cpython_source: source,
        size_bytes: found.size_bytes,
    })
}

/// Whether this machine has a source for a runtime besides a registry, without building:
/// `Ok(what)` names the source (`debian bullseye`, `pyenv /root/.pyenv/versions/3.8.18`),
/// `Err(why)` says why there is none. A blocking call (it may start interpreters).
pub fn offline_source_here(rt: &ResolvedRuntime<'_>) -> Result<String, NoOfflineSource> {
    let mut why = Vec::new();
    if let Some(offline) = &rt.runtime.offline {
        let cached = cache_dir()
            .join("rootfs")
            .join(&offline.suite)
            .join("usr/bin/python3")
            .exists();
        if cached || (is_root() && which("debootstrap").is_some()) {
            return Ok(format!("debian {}", offline.suite));
        }
        why.push(format!(
            "Debian recipe ({}): debootstrap is not installed or not root",
            offline.suite
        ));
    } else {
        why.push("Debian recipe: none (Debian ships no CPython of exactly this version)".into());
    }
    if rt.language() != Language::Python {
        why.push("local CPython: not a Python runtime".into());
        return Err(NoOfflineSource(why));
    }
    let Some(minor) = rt.runtime.build.get("PYTHON_VERSION") else {
        why.push("local CPython: the runtime pins no PYTHON_VERSION".into());
        return Err(NoOfflineSource(why));
    };
    if let Err(e) = local_tools_missing() {
        why.push(format!("local CPython: {e}"));
        return Err(NoOfflineSource(why));
    }
    match cpython::find(minor, &cpython::default_places()) {
        Ok(inst) => Ok(inst.source_description()),
        Err(e) => {
            why.push(format!("local CPython: {e}"));
            Err(NoOfflineSource(why))
        }
    }
}

/// What building from a local installation needs besides the installation.
fn local_tools_missing() -> Result<(), BuildError> {
    if !is_root() {
        return Err(BuildError::Missing(
            "building from a local installation needs root (debootstrap, chroot)".into(),
        ));
    }
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("chroot", "coreutils"),
        ("unshare", "util-linux"),
        ("ldd", "libc-bin"),
        ("dpkg", "dpkg"),
        ("tar", "tar"),
        ("cp", "coreutils"),
    ] {
        if which(tool).is_none() {
            return Err(BuildError::Missing(format!(
                "{tool} is not installed (apt-get install -y {package})"
            )));
        }
    }
    if cpython::host_debian_suite().is_none() {
        return Err(BuildError::Missing(
            "this machine is not Debian (/etc/os-release): the suite its installations were built against is unknown".into(),
        ));
    }
    Ok(())
}

/// Builds one runtime's image unless it is current (or `options.force`).
pub async fn build_runtime(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    options: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<BuildOutcome, ImageError> {
    let name = &rt.runtime.name;
    let image = &rt.runtime.image;
    let recipe = recipe_hash(rt)?;
    let unbuildable = |why: String| ImageError::Unbuildable {
        runtime: name.clone(),
        image: image.clone(),
        why,
    };
    if !options.force
        && image_state(engine, rt)
            .await
            .map_err(|e| unbuildable(e.to_string()))?
            == ImageState::Current
    {
        return Ok(BuildOutcome::UpToDate);
    }
    // `--python-from` names the source: nothing else is tried.
    if let Some(prefix) = &options.python_from {
        progress.phase(&format!(
            "{name}: building {image} from the CPython at {}",
            prefix.display()
        ));
        return match build_local(engine, rt, vec![cpython::explicit_place(prefix)], progress).await
        {
            Ok(inst) => Ok(BuildOutcome::BuiltFromLocalCpython {
                version: inst.version.clone(),
                source: inst.source_description(),
            }),
            Err(SourceError::Unavailable(why)) => Err(ImageError::NoSource {
                runtime: name.clone(),
                image: image.clone(),
                why,
            }),
            Err(SourceError::Failed(why)) => Err(unbuildable(why)),
        };
    }
    match build_from_sources(engine, rt, &recipe, progress).await {
        Ok(outcome) => Ok(outcome),
        Err(tried) => Err(every_source_failed(name, image, &tried)),
    }
}

/// Tries the Dockerfile, the Debian recipe and a local CPython, in that order; the first that
/// builds wins, else every source with why it failed.
async fn build_from_sources(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    recipe: &str,
    progress: &mut dyn Progress,
) -> Result<BuildOutcome, Vec<(String, SourceError)>> {
    let name = &rt.runtime.name;
    let image = &rt.runtime.image;
    let mut tried: Vec<(String, SourceError)> = Vec::new();

    progress.phase(&format!(
        "{name}: building {image} from {}/Dockerfile",
        rt.family.dockerfile
    ));
    match build_from_dockerfile(engine, rt, recipe, progress).await {
        Ok(()) => return Ok(BuildOutcome::BuiltFromDockerfile),
        // A base image that cannot be pulled is the usual case without a registry.
        Err(e) => tried.push((
            format!("Dockerfile {}/Dockerfile", rt.family.dockerfile),
            SourceError::Unavailable(first_line(&e.to_string()).to_string()),
        )),
    }

    match &rt.runtime.offline {
        None => tried.push((
            "Debian recipe".into(),
            SourceError::Unavailable(
                "none: Debian ships no CPython or PowerShell of exactly this version".into(),
            ),
        )),
        Some(offline) => {
            progress.phase(&format!(
                "{name}: base image not available; building offline from Debian {} (CPython {})",
                offline.suite, offline.python
            ));
            match build_offline(engine, rt, recipe, progress).await {
                Ok(()) => return Ok(BuildOutcome::BuiltOffline),
                Err(e) => tried.push((format!("Debian recipe ({})", offline.suite), e)),
            }
        }
    }

    if rt.language() == Language::Python {
        progress.phase(&format!(
            "{name}: looking for a CPython installation on this machine"
        ));
        match build_local(engine, rt, cpython::default_places(), progress).await {
            Ok(inst) => {
                return Ok(BuildOutcome::BuiltFromLocalCpython {
                    version: inst.version.clone(),
                    source: inst.source_description(),
                });
            }
            Err(e) => tried.push(("local CPython".into(), e)),
        }
    } else {
        tried.push((
            "local CPython".into(),
            SourceError::Unavailable("not a Python runtime".into()),
        ));
    }

    Err(tried)
}

/// The error of a build whose every source failed: `NoSource` when none was there at all.
fn every_source_failed(name: &str, image: &str, tried: &[(String, SourceError)]) -> ImageError {
    let why = format!(
        "every source failed:\n{}",
        tried
            .iter()
            .enumerate()
            .map(|(i, (source, e))| format!("  {}. {source}: {}", i + 1, e.text()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if tried
        .iter()
        .all(|(_, e)| matches!(e, SourceError::Unavailable(_)))
    {
        ImageError::NoSource {
            runtime: name.to_string(),
            image: image.to_string(),
            why,
        }
    } else {
        ImageError::Unbuildable {
            runtime: name.to_string(),
            image: image.to_string(),
            why,
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Builds from the production Dockerfile through the Engine API.
async fn build_from_dockerfile(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    recipe: &str,
    progress: &mut dyn Progress,
) -> Result<(), BuildError> {
    let mut context = tar::Builder::new(Vec::new());
    for (name, bytes) in family_files(&rt.family.dockerfile)? {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        header.set_mtime(0);
        context.append_data(&mut header, name, *bytes)?;
    }
    let context = context.into_inner()?;
    let buildargs: HashMap<String, String> = rt.runtime.build.clone().into_iter().collect();
    let labels = HashMap::from([
        (LABEL_RECIPE.to_string(), recipe.to_string()),
        ("scriptbox.runtime".to_string(), rt.runtime.name.clone()),
    ]);
    let name = &rt.runtime.name;
    let mut on_line = |line: &str| {
        let line = line.trim();
        if line.starts_with("Step ") {
            progress.phase(&format!("{name}: {line}"));
        }
    };
    engine
        .build_image(
            &rt.runtime.image,
            &buildargs,
            &labels,
            context,
            &mut on_line,
        )
        .await?;
    Ok(())
}

/// Where downloaded and bootstrapped material is cached between builds.
pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SCRIPTBOX_CACHE") {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/var/cache/scriptbox");
    }
    std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/scriptbox"))
        .unwrap_or_else(|_| PathBuf::from("/tmp/scriptbox-cache"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs a command to completion under a deadline and returns its output, whatever its status.
async fn capture(
    mut cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<std::process::Output, BuildError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| BuildError::Start {
        what: what.to_string(),
        source,
    })?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(BuildError::Deadline {
            what: what.to_string(),
            seconds: limit.as_secs(),
        }),
        Ok(Err(e)) => Err(BuildError::Wait {
            what: what.to_string(),
            why: e.to_string(),
        }),
        Ok(Ok(out)) => Ok(out),
    }
}

/// Runs a command to completion under a deadline, returning the end of its output on failure.
async fn run_command(
    cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<(), BuildError> {
    let out = capture(cmd, limit, what).await?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(BuildError::Exited {
        what: what.to_string(),
        status: out.status,
        tail: tail.join(" | "),
    })
}

/// A Debian root filesystem to debootstrap once and cache (atomically: a partial tree is never
/// reused).
struct RootfsRecipe<'a> {
    /// The suite.
    suite: &'a str,
    /// Packages besides minbase.
    include: &'a [String],
    /// The cache folder's name.
    cache_name: String,
    /// A file whose presence proves the cached tree is complete.
    proof: &'a str,
}

/// Debootstraps a root filesystem once into the cache.
async fn debootstrap(
    recipe: &RootfsRecipe<'_>,
    progress: &mut dyn Progress,
) -> Result<PathBuf, SourceError> {
    let suite = recipe.suite;
    let root = cache_dir().join("rootfs");
    let done = root.join(&recipe.cache_name);
    if done.join(recipe.proof).exists() {
        progress.phase(&format!(
            "Debian {suite} root filesystem: cached at {}",
            done.display()
        ));
        return Ok(done);
    }
    if !is_root() {
        return Err(SourceError::Unavailable(
            "debootstrap needs root; run as root or build the image where a registry is reachable"
                .into(),
        ));
    }
    let Some(debootstrap) = which("debootstrap") else {
        return Err(SourceError::Unavailable(
            "debootstrap is not installed (apt-get install -y debootstrap)".into(),
        ));
    };
    let partial = root.join(format!("{}.partial", recipe.cache_name));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|source| SourceError::failed(file_error("clear", &partial, source)))?;
    }
    std::fs::create_dir_all(&root)
        .map_err(|source| SourceError::failed(file_error("create", &root, source)))?;
    let include = recipe.include.join(",");
    progress.phase(&format!(
        "Debian {suite}: debootstrap --variant=minbase --include={include} (about a minute)"
    ));
    let mut cmd = tokio::process::Command::new(debootstrap);
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={include}"));
    }
    cmd.arg(suite).arg(&partial);
    run_command(cmd, Duration::from_secs(1200), "debootstrap")
        .await
        .map_err(SourceError::failed)?;
    std::fs::rename(&partial, &done)
        .map_err(|source| SourceError::failed(moved_error(&partial, source)))?;
    Ok(done)
}

/// How boto3 is fetched: by the host's pip for a CPython version, or by an installation's own pip.
enum Boto3Installer<'a> {
    /// The host's `python3 -m pip --python-version X.Y --only-binary=:all:` (pure-Python wheels).
    HostPip { python: &'a str },
    /// The installation's own `python -m pip`, falling back to the host's pip.
    Interpreter(&'a Installation),
}

/// Installs the pinned boto3 into the cache, once per pin and CPython.
async fn pinned_boto3(
    installer: Boto3Installer<'_>,
    version: &str,
    progress: &mut dyn Progress,
) -> Result<PathBuf, BuildError> {
    let (key, python) = match &installer {
        Boto3Installer::HostPip { python } => (format!("py{python}"), python.to_string()),
        Boto3Installer::Interpreter(inst) => {
            (format!("cpython{}", inst.version), inst.minor.clone())
        }
    };
    let dir = cache_dir()
        .join("pip")
        .join(format!("boto3-{version}-{key}"));
    if dir.join("boto3/__init__.py").exists() {
        progress.phase(&format!("boto3=={version} for CPython {python}: cached"));
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|source| file_error("create", &partial, source))?;
    let pip_args = |cmd: &mut tokio::process::Command| {
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
        ])
        .arg("--target")
        .arg(&partial);
    };
    let mut own_pip_error = None;
    if let Boto3Installer::Interpreter(inst) = &installer {
        progress.phase(&format!(
            "pip install boto3=={version} with CPython {}'s own pip",
            inst.version
        ));
        let mut cmd = tokio::process::Command::new(inst.interpreter());
        cmd.env_remove("PYTHONPATH").env_remove("PYTHONHOME");
        pip_args(&mut cmd);
        cmd.arg(format!("boto3=={version}"));
        match run_command(cmd, Duration::from_secs(600), "pip install boto3").await {
            Ok(()) => own_pip_error = None,
            Err(e) => own_pip_error = Some(e),
        }
        if own_pip_error.is_none() {
            return finish_cache_dir(&partial, &dir);
        }
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|source| file_error("create", &partial, source))?;
    }
    progress.phase(&format!(
        "pip install boto3=={version} for CPython {python} with the host's pip"
    ));
    let python_bin = which("python3").ok_or_else(|| {
        BuildError::Missing(format!(
            "python3 with pip is needed on the host to fetch boto3{}",
            own_pip_error
                .as_ref()
                .map(|e| format!(" (the installation's own pip failed: {e})"))
                .unwrap_or_default()
        ))
    })?;
    let mut cmd = tokio::process::Command::new(python_bin);
    pip_args(&mut cmd);
    cmd.args(["--python-version", &python, "--only-binary=:all:"])
        .arg(format!("boto3=={version}"));
    run_command(cmd, Duration::from_secs(600), "pip install boto3").await?;
    finish_cache_dir(&partial, &dir)
}

fn finish_cache_dir(partial: &Path, dir: &Path) -> Result<PathBuf, BuildError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(partial, dir).map_err(|source| moved_error(partial, source))?;
    Ok(dir.to_path_buf())
}

/// A failed file operation on `path`.
fn file_error(action: &'static str, path: &Path, source: std::io::Error) -> BuildError {
    BuildError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A cache folder that could not be renamed into place (`cannot move X into place: e`).
fn moved_error(partial: &Path, source: std::io::Error) -> BuildError {
    BuildError::Refused(format!(
        "cannot move {} into place: {source}",
        partial.display()
    ))
}

/// The upstream part of a Debian version: `3.9.2-1+deb11u1` → `3.9.2`.
fn upstream_version(debian: &str) -> String {
    debian
        .split(['-', '+', '~'])
        .next()
        .unwrap_or(debian)
        .to_string()
}

/// The Debian version of an installed package, read from a root's dpkg status.
fn dpkg_version(rootfs: &Path, package: &str) -> Option<String> {
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).ok()?;
    status.split("\n\n").find_map(|stanza| {
        let wanted = format!("Package: {package}");
        if !stanza.lines().any(|l| l == wanted) {
            return None;
        }
        stanza
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(str::to_string)
    })
}

/// Builds a Python image from a cached Debian root filesystem and imports it.
async fn build_offline(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    recipe: &str,
    progress: &mut dyn Progress,
) -> Result<(), SourceError> {
    let unavailable = |s: &str| SourceError::Unavailable(s.to_string());
    let Some(offline) = &rt.runtime.offline else {
        return Err(unavailable("no offline recipe"));
    };
    if rt.language() != Language::Python {
        return Err(unavailable("offline recipes exist for Python only"));
    }
    if which("tar").is_none() {
        return Err(unavailable("tar is not installed"));
    }
    let include = vec!["python3".to_string()];
    let rootfs = debootstrap(
        &RootfsRecipe {
            suite: &offline.suite,
            include: &include,
            cache_name: offline.suite.clone(),
            proof: "usr/bin/python3",
        },
        progress,
    )
    .await?;
    let boto3_version = rt
        .runtime
        .build
        .get("BOTO3_VERSION")
        .ok_or_else(|| SourceError::failed("the runtime pins no BOTO3_VERSION"))?;
    let boto3 = pinned_boto3(
        Boto3Installer::HostPip {
            python: &offline.python,
        },
        boto3_version,
        progress,
    )
    .await
    .map_err(SourceError::failed)?;
    let site = site_packages(rt);

    // A staging tree holding only what we add on top of Debian: the bootstrap and boto3.
    let stage = tempdir_in(&cache_dir().join("stage")).map_err(SourceError::failed)?;
    add_bootstrap(rt, stage.path()).map_err(SourceError::failed)?;
    let site_rel = site.trim_start_matches('/');

    // One stream: Debian's tree minus the kernel filesystems, our staging tree, boto3 at `site`.
    let mut args: Vec<std::ffi::OsString> = vec![
        "-C".into(),
        rootfs.clone().into(),
        ".".into(),
        "-C".into(),
        stage.path().into(),
        "opt/scriptbox".into(),
        "-C".into(),
        boto3.parent().unwrap_or(Path::new("/")).into(),
        format!(
            "--transform=s,^{},{site_rel},",
            boto3.file_name().and_then(|n| n.to_str()).unwrap_or("")
        )
        .into(),
        boto3.file_name().unwrap_or_default().into(),
    ];
    args.splice(0..0, ROOTFS_KERNEL.iter().map(Into::into));
    let package = format!("python{}", offline.python);
    let debian_version = dpkg_version(&rootfs, &package);
    let mut labels = vec![(LABEL_SOURCE, "debian".to_string())];
    if let Some(v) = &debian_version {
        labels.push((LABEL_CPYTHON_VERSION, upstream_version(v)));
        labels.push((
            LABEL_CPYTHON_SOURCE,
            format!("debian {} {package} {v}", offline.suite),
        ));
    }
    let mut changes = vec![format!("ENV PYTHONPATH={site}")];
    changes.extend(common_changes(rt, recipe, &labels).map_err(SourceError::failed)?);
    import_tree(engine, rt, args, changes, progress)
        .await
        .map_err(SourceError::failed)?;
    Ok(())
}

/// The kernel filesystems' contents, never part of an image.
const ROOTFS_KERNEL: &[&str] = &[
    "--exclude=./dev/*",
    "--exclude=./proc/*",
    "--exclude=./sys/*",
    "--exclude=./run/*",
];

fn site_packages(rt: &ResolvedRuntime<'_>) -> String {
    rt.family
        .site_packages
        .clone()
        .unwrap_or_else(|| "/opt/python".into())
}

/// Writes the family's bootstrap files to `<root>/opt/scriptbox`, read-only.
fn add_bootstrap(rt: &ResolvedRuntime<'_>, root: &Path) -> Result<(), BuildError> {
    let bootstrap_dir = root.join("opt/scriptbox");
    std::fs::create_dir_all(&bootstrap_dir)?;
    for (name, bytes) in family_files(&rt.family.dockerfile)? {
        if *name != "Dockerfile" {
            write_mode(&bootstrap_dir.join(name), bytes, 0o444)?;
        }
    }
    Ok(())
}

/// The image configuration every imported image shares, with its labels.
fn common_changes(
    rt: &ResolvedRuntime<'_>,
    recipe: &str,
    labels: &[(&str, String)],
) -> Result<Vec<String>, BuildError> {
    let quote = serde_json::to_string::<str>;
    let mut changes = vec![
        "ENV PYTHONDONTWRITEBYTECODE=1".to_string(),
        "ENV PYTHONUNBUFFERED=1".to_string(),
        "WORKDIR /tmp".to_string(),
        "USER 10001:10001".to_string(),
        format!("LABEL {LABEL_RECIPE}={recipe}"),
        format!("LABEL scriptbox.runtime={}", quote(&rt.runtime.name)?),
    ];
    for (key, value) in labels {
        changes.push(format!("LABEL {key}={}", quote(value)?));
    }
    changes.push(format!(
        "CMD {}",
        serde_json::to_string(&rt.family.command)?
    ));
    Ok(changes)
}

/// Streams `tar --create <args>` into the engine's image import as the runtime's image.
/// `--mode=ug-s` strips every setuid/setgid bit on the way in.
async fn import_tree(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    args: Vec<std::ffi::OsString>,
    changes: Vec<String>,
    progress: &mut dyn Progress,
) -> Result<u64, BuildError> {
    let tar_bin = which("tar").ok_or_else(|| BuildError::Missing("tar is not installed".into()))?;
    progress.phase(&format!(
        "{}: importing the image into the engine",
        rt.runtime.name
    ));
    let mut cmd = tokio::process::Command::new(tar_bin);
    cmd.args(["--create", "--file=-", "--numeric-owner", "--mode=ug-s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| BuildError::Start {
        what: "tar".into(),
        source,
    })?;
    let missing = |what: &str| BuildError::Missing(format!("tar has no {what}"));
    let mut stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let err_reader = tokio::spawn(async move {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
        String::from_utf8_lossy(&err).into_owned()
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let reader = tokio::spawn(async move {
        let mut total = 0u64;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            match stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                    if tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        total
    });
    let (repo, tag) = rt
        .runtime
        .image
        .rsplit_once(':')
        .unwrap_or((&rt.runtime.image, "latest"));
    let import = engine.import_image(repo, tag, changes, rx);
    let import_error = match tokio::time::timeout(Duration::from_secs(1200), import).await {
        Err(_) => {
            return Err(BuildError::Deadline {
                what: "the engine's import".into(),
                seconds: 1200,
            });
        }
        Ok(imported) => imported.err().map(|e| e.to_string()),
    };
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| BuildError::Deadline {
            what: "tar".into(),
            seconds: 60,
        })??;
    let bytes = reader.await.unwrap_or(0);
    if let Some(e) = import_error {
        return Err(BuildError::Refused(format!(
            "the engine refused the import: {e}"
        )));
    }
    if !status.success() {
        let err = err_reader.await.unwrap_or_default();
        return Err(BuildError::Refused(format!(
            "tar failed ({status}): {}",
            err.trim()
        )));
    }
    progress.phase(&format!(
        "{}: imported {} MB as {}",
        rt.runtime.name,
        bytes / 1_000_000,
        rt.runtime.image
    ));
    Ok(bytes)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).map_err(|source| file_error("write", path, source))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| file_error("chmod", path, source))
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir_in(parent: &Path) -> Result<TempDir, BuildError> {
    std::fs::create_dir_all(parent).map_err(|source| file_error("create", parent, source))?;
    let dir = parent.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir(&dir).map_err(|source| file_error("create", &dir, source))?;
    Ok(TempDir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::Catalog;

    #[test]
    fn every_family_has_compiled_in_build_files() {
        let catalog = Catalog::builtin();
        for rt in catalog.runtimes() {
            let files = family_files(&rt.family.dockerfile).unwrap();
            assert!(files.iter().any(|(n, _)| *n == "Dockerfile"));
            assert!(recipe_hash(&rt).is_ok());
        }
    }

    #[test]
    fn recipes_differ_by_pins() {
        let catalog = Catalog::builtin();
        let a = recipe_hash(&catalog.resolve("python3.9").unwrap()).unwrap();
        let b = recipe_hash(&catalog.resolve("python3.11").unwrap()).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            recipe_hash(&catalog.resolve("python3.9").unwrap()).unwrap()
        );
    }

    #[test]
    fn a_local_image_is_stale_when_its_installation_or_recipe_changes() {
        let catalog = Catalog::builtin();
        let rt = catalog.resolve("python3.8").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("3.8.1");
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::write(prefix.join("bin/python3.8"), "one").unwrap();
        let fingerprint = cpython::fingerprint(&prefix, "3.8").unwrap();
        let identity = format!("cpython 3.8.1 | pyenv {} | {fingerprint}", prefix.display());
        let mut labels = HashMap::from([
            (LABEL_SOURCE.to_string(), SOURCE_LOCAL_CPYTHON.to_string()),
            (LABEL_CPYTHON_IDENTITY.to_string(), identity.clone()),
            (
                LABEL_RECIPE.to_string(),
                local_recipe_hash(&rt, &identity).unwrap(),
            ),
            (
                LABEL_CPYTHON_PREFIX.to_string(),
                prefix.display().to_string(),
            ),
            (LABEL_CPYTHON_FINGERPRINT.to_string(), fingerprint),
        ]);
        let state = |labels: &HashMap<String, String>| {
            state_from_labels(&rt, labels, installation_now(&rt, labels)())
        };
        assert_eq!(state(&labels), ImageState::Current);
        // The installation rebuilt in place: the image no longer matches it.
        std::fs::write(prefix.join("bin/python3.8"), "other").unwrap();
        assert_eq!(state(&labels), ImageState::Stale);
        // The installation removed: the image is self-contained and still runs.
        std::fs::remove_dir_all(&prefix).unwrap();
        assert_eq!(state(&labels), ImageState::Current);
        // Another identity or recipe (bootstrap, pins): stale.
        assert_ne!(
            local_recipe_hash(&rt, &identity).unwrap(),
            local_recipe_hash(&rt, &identity.replace("3.8.1", "3.8.2")).unwrap()
        );
        labels.insert(LABEL_RECIPE.to_string(), recipe_hash(&rt).unwrap());
        assert_eq!(state(&labels), ImageState::Stale);
    }

    #[test]
    fn debian_versions_give_their_upstream_cpython() {
        assert_eq!(upstream_version("3.9.2-1"), "3.9.2");
        assert_eq!(upstream_version("3.11.2-6+deb12u6"), "3.11.2");
    }
}
