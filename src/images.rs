//! Building runtime images: from the production Dockerfile where its base image can be pulled,
//! else from an offline Debian recipe (debootstrap + pinned boto3 + the bootstrap), imported
//! into the engine.
//!
//! Every image carries a `scriptbox.recipe` label: a hash of everything that went into it (the
//! bootstrap, the Dockerfile, the pins). An image whose label differs is stale and is rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::runtimes::{Language, ResolvedRuntime};
use crate::sandbox::Engine;

/// The label holding an image's recipe hash.
pub const LABEL_RECIPE: &str = "scriptbox.recipe";

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
    /// Neither recipe could build the runtime.
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
        h.update((bytes.len() as u64).to_be_bytes());
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

/// Looks up a runtime's image state.
pub async fn image_state(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
) -> Result<ImageState, crate::sandbox::SandboxError> {
    let want = recipe_hash(rt).ok();
    Ok(match engine.image_labels(&rt.runtime.image).await? {
        None => ImageState::Missing,
        Some(labels) if labels.get(LABEL_RECIPE) == want.as_ref() => ImageState::Current,
        Some(_) => ImageState::Stale,
    })
}

/// Builds one runtime's image unless it is current (or `force`).
pub async fn build_runtime(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    force: bool,
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
    if !force
        && image_state(engine, rt)
            .await
            .map_err(|e| unbuildable(e.to_string()))?
            == ImageState::Current
    {
        return Ok(BuildOutcome::UpToDate);
    }
    progress.phase(&format!(
        "{name}: building {image} from {}/Dockerfile",
        rt.family.dockerfile
    ));
    let dockerfile_error = match build_from_dockerfile(engine, rt, &recipe, progress).await {
        Ok(()) => return Ok(BuildOutcome::BuiltFromDockerfile),
        Err(e) => e,
    };
    let Some(offline) = &rt.runtime.offline else {
        return Err(unbuildable(format!(
            "the Dockerfile build failed ({dockerfile_error}), and there is no offline recipe: Debian ships no CPython or PowerShell of exactly this version. Build it where a registry is reachable."
        )));
    };
    progress.phase(&format!(
        "{name}: base image not available ({}); building offline from Debian {} (CPython {})",
        first_line(&dockerfile_error),
        offline.suite,
        offline.python
    ));
    build_offline(engine, rt, &recipe, progress)
        .await
        .map(|()| BuildOutcome::BuiltOffline)
        .map_err(|offline_error| {
            unbuildable(format!(
                "the Dockerfile build failed ({}), and the offline build failed: {offline_error}",
                first_line(&dockerfile_error)
            ))
        })
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
) -> Result<(), String> {
    let mut context = tar::Builder::new(Vec::new());
    for (name, bytes) in family_files(&rt.family.dockerfile).map_err(|e| e.to_string())? {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        context
            .append_data(&mut header, name, *bytes)
            .map_err(|e| e.to_string())?;
    }
    let context = context.into_inner().map_err(|e| e.to_string())?;
    let buildargs: HashMap<String, String> = rt.runtime.build.clone().into_iter().collect();
    let labels = HashMap::from([
        (LABEL_RECIPE.to_string(), recipe.to_string()),
        ("scriptbox.runtime".to_string(), rt.runtime.name.clone()),
    ]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&rt.runtime.image)
        .buildargs(&buildargs)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = engine.docker().build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(err);
                }
                if let Some(line) = info
                    .stream
                    .as_deref()
                    .map(str::trim)
                    .filter(|l| l.starts_with("Step "))
                {
                    progress.phase(&format!("{}: {line}", rt.runtime.name));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
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

/// Runs a command to completion under a deadline, returning the end of its output on failure.
async fn run_command(
    mut cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{what} did not finish within {} s",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{what} exited with {}: {}",
                out.status,
                tail.join(" | ")
            ))
        }
    }
}

/// Debootstraps a suite once into the cache (atomically: a partial tree is never reused).
async fn debootstrap(suite: &str, progress: &mut dyn Progress) -> Result<PathBuf, String> {
    let root = cache_dir().join("rootfs");
    let done = root.join(suite);
    if done.join("usr/bin/python3").exists() {
        progress.phase(&format!(
            "Debian {suite} root filesystem: cached at {}",
            done.display()
        ));
        return Ok(done);
    }
    if !is_root() {
        return Err(
            "debootstrap needs root; run as root or build the image where a registry is reachable"
                .into(),
        );
    }
    let Some(debootstrap) = which("debootstrap") else {
        return Err("debootstrap is not installed (apt-get install -y debootstrap)".into());
    };
    let partial = root.join(format!("{suite}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| format!("cannot clear {}: {e}", partial.display()))?;
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    progress.phase(&format!(
        "Debian {suite}: debootstrap --variant=minbase --include=python3 (about a minute)"
    ));
    let mut cmd = tokio::process::Command::new(debootstrap);
    cmd.args(["--variant=minbase", "--include=python3", suite])
        .arg(&partial);
    run_command(cmd, Duration::from_secs(1200), "debootstrap").await?;
    std::fs::rename(&partial, &done)
        .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
    Ok(done)
}

/// Installs the pinned boto3 for a CPython version into the cache, once.
async fn pinned_boto3(
    python: &str,
    version: &str,
    progress: &mut dyn Progress,
) -> Result<PathBuf, String> {
    let dir = cache_dir()
        .join("pip")
        .join(format!("boto3-{version}-py{python}"));
    if dir.join("boto3/__init__.py").exists() {
        progress.phase(&format!("boto3=={version} for CPython {python}: cached"));
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    progress.phase(&format!(
        "pip install boto3=={version} for CPython {python}"
    ));
    let python_bin =
        which("python3").ok_or("python3 with pip is needed on the host to fetch boto3")?;
    let mut cmd = tokio::process::Command::new(python_bin);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
    ])
    .arg("--target")
    .arg(&partial)
    .args(["--python-version", python, "--only-binary=:all:"])
    .arg(format!("boto3=={version}"));
    run_command(cmd, Duration::from_secs(600), "pip install boto3").await?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)
        .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
    Ok(dir)
}

/// Builds a Python image from a cached Debian root filesystem and imports it.
async fn build_offline(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    recipe: &str,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let Some(offline) = &rt.runtime.offline else {
        return Err("no offline recipe".into());
    };
    if rt.language() != Language::Python {
        return Err("offline recipes exist for Python only".into());
    }
    let Some(tar_bin) = which("tar") else {
        return Err("tar is not installed".into());
    };
    let rootfs = debootstrap(&offline.suite, progress).await?;
    let boto3_version = rt
        .runtime
        .build
        .get("BOTO3_VERSION")
        .ok_or("the runtime pins no BOTO3_VERSION")?;
    let boto3 = pinned_boto3(&offline.python, boto3_version, progress).await?;
    let site = rt
        .family
        .site_packages
        .clone()
        .unwrap_or_else(|| "/opt/python".into());

    // A staging tree holding only what we add on top of Debian: the bootstrap and boto3.
    let stage = tempdir_in(&cache_dir().join("stage"))?;
    let bootstrap_dir = stage.path().join("opt/scriptbox");
    std::fs::create_dir_all(&bootstrap_dir).map_err(|e| e.to_string())?;
    for (name, bytes) in family_files(&rt.family.dockerfile).map_err(|e| e.to_string())? {
        if *name != "Dockerfile" {
            write_mode(&bootstrap_dir.join(name), bytes, 0o444)?;
        }
    }
    let site_rel = site.trim_start_matches('/');
    let site_parent = Path::new(site_rel).parent().unwrap_or(Path::new(""));
    std::fs::create_dir_all(stage.path().join(site_parent)).map_err(|e| e.to_string())?;

    progress.phase(&format!(
        "{}: importing the image into the engine",
        rt.runtime.name
    ));
    let mut cmd = tokio::process::Command::new(tar_bin);
    // One stream: Debian's tree minus the kernel filesystems, our staging tree, boto3 at `site`.
    // --mode=ug-s strips every setuid/setgid bit on the way in.
    cmd.args(["--create", "--file=-", "--numeric-owner", "--mode=ug-s"])
        .args([
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./run/*",
        ])
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .arg("-C")
        .arg(stage.path())
        .arg("opt/scriptbox")
        .arg("-C")
        .arg(boto3.parent().unwrap_or(Path::new("/")))
        .arg(format!(
            "--transform=s,^{},{site_rel},",
            boto3.file_name().and_then(|n| n.to_str()).unwrap_or("")
        ))
        .arg(boto3.file_name().unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start tar: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("tar has no stdout")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let reader = tokio::spawn(async move {
        let mut total = 0u64;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            match stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    total += n as u64;
                    if tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        total
    });
    let mut changes = vec![
        format!("ENV PYTHONPATH={site}"),
        "ENV PYTHONDONTWRITEBYTECODE=1".to_string(),
        "ENV PYTHONUNBUFFERED=1".to_string(),
        "WORKDIR /tmp".to_string(),
        "USER 10001:10001".to_string(),
        format!("LABEL {LABEL_RECIPE}={recipe}"),
        format!("LABEL scriptbox.runtime=\"{}\"", rt.runtime.name),
    ];
    changes.push(format!(
        "CMD {}",
        serde_json::to_string(&rt.family.command).map_err(|e| e.to_string())?
    ));
    let (repo, tag) = rt
        .runtime
        .image
        .rsplit_once(':')
        .unwrap_or((&rt.runtime.image, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes)
        .build();
    let body = bollard::body_stream(tokio_stream_from(rx));
    let mut stream = engine
        .docker()
        .create_image(Some(options), Some(body), None);
    let mut import_error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            import_error = Some(e.to_string());
            break;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| "tar did not finish".to_string())?
        .map_err(|e| e.to_string())?;
    let bytes = reader.await.unwrap_or(0);
    if let Some(e) = import_error {
        return Err(format!("the engine refused the import: {e}"));
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err).await;
        }
        return Err(format!("tar failed ({status}): {}", err.trim()));
    }
    progress.phase(&format!(
        "{}: imported {} MB as {}",
        rt.runtime.name,
        bytes / 1_000_000,
        rt.runtime.image
    ));
    Ok(())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
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

fn tempdir_in(parent: &Path) -> Result<TempDir, String> {
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let dir = parent.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
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
}
