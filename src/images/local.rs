//! The third image source: a CPython installation on this machine, relocated under
//! `/opt/cpython/<version>` on a Debian minbase root of the suite it was built against.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    Boto3Installer, BuildError, LABEL_CPYTHON_FINGERPRINT, LABEL_CPYTHON_IDENTITY,
    LABEL_CPYTHON_PREFIX, LABEL_CPYTHON_SOURCE, LABEL_CPYTHON_VERSION, LABEL_SOURCE, Progress,
    ROOTFS_KERNEL, ROOTFS_TRIM, RootfsRecipe, SOURCE_LOCAL_CPYTHON, SourceError, add_bootstrap,
    cache_dir, capture, common_changes, debootstrap, import_tree, local_recipe_hash,
    local_tools_missing, pinned_boto3, run_command, site_packages, tempdir_in, which,
};
use crate::cpython::{self, Installation, SearchPlace};
use crate::runtimes::ResolvedRuntime;
use crate::sandbox::Engine;

/// The most files copied from one installation (a stdlib has about 2,000 after trimming).
const MAX_FILES: usize = 50_000;

/// Modules every image's interpreter must import, from inside the image root.
const REQUIRED_MODULES: &str = "ssl, sqlite3, ctypes, zlib, bz2, lzma, json";

/// Runs blocking work off the async workers, under a deadline.
async fn blocking<T: Send + 'static>(
    limit: Duration,
    what: &str,
    work: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Err(_) => Err(BuildError::Deadline {
            what: what.to_string(),
            seconds: limit.as_secs(),
        }),
        Ok(Err(e)) => Err(BuildError::Wait {
            what: what.to_string(),
            why: e.to_string(),
        }),
        Ok(Ok(result)) => result,
    }
}

/// One ELF file of the installation: where it is on the host, and its folder relative to the prefix.
#[derive(Debug, Clone)]
struct ElfFile {
    rel_dir: PathBuf,
    name: String,
}

impl ElfFile {
    fn rel(&self) -> PathBuf {
        self.rel_dir.join(&self.name)
    }
}

/// The ELF files the image keeps: the interpreter, libpython, and the untrimmed extension modules.
fn elf_files(inst: &Installation) -> Vec<ElfFile> {
    let mut files = vec![ElfFile {
        rel_dir: "bin".into(),
        name: format!("python{}", inst.minor),
    }];
    if let Some(lib) = &inst.libpython {
        files.push(ElfFile {
            rel_dir: "lib".into(),
            name: lib.clone(),
        });
    }
    let dynload_rel = Path::new("lib")
        .join(inst.stdlib_name())
        .join("lib-dynload");
    let mut modules: Vec<String> = std::fs::read_dir(inst.prefix.join(&dynload_rel))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".so"))
                .filter(|n| !cpython::trimmed(&Path::new("lib-dynload").join(n)))
                .collect()
        })
        .unwrap_or_default();
    modules.sort();
    files.extend(modules.into_iter().map(|name| ElfFile {
        rel_dir: dynload_rel.clone(),
        name,
    }));
    files
}

/// `ldd`'s answer for several files: for each file, the libraries it resolved and the ones not found.
fn parse_ldd(text: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) && line.ends_with(':') {
            out.push((line.trim_end_matches(':').to_string(), vec![], vec![]));
            continue;
        }
        let Some((_, _, resolved, missing)) = out.last_mut().map(|(a, b, c)| (a, (), b, c)) else {
            continue;
        };
        let line = line.trim();
        if let Some((lib, target)) = line.split_once(" => ") {
            if target.trim() == "not found" {
                missing.push(lib.trim().to_string());
            } else if let Some(path) = target
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                resolved.push(path.to_string());
            }
        }
    }
    out
}

/// A blocking run of a command under a deadline, for the work done off the async workers.
fn run_blocking(
    cmd: &mut std::process::Command,
    limit: Duration,
    what: &str,
) -> Result<std::process::Output, BuildError> {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| BuildError::Start {
            what: what.to_string(),
            source,
        })?;
    // Read the pipes on their own threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = std::io::Read::read_to_end(&mut std::io::Read::take(s, 16 << 20), &mut buf);
        }
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(&mut std::io::Read::take(s, 1 << 20), &mut buf);
        }
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BuildError::Deadline {
                    what: what.to_string(),
                    seconds: limit.as_secs(),
                });
            }
            Err(e) => {
                return Err(BuildError::Refused(format!(
                    "{what} could not be waited for: {e}"
                )));
            }
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

/// The Debian packages the installation's libraries come from (read with `ldd` and `dpkg -S` on
/// this machine, which is the suite it was built against), and the modules already broken here.
fn runtime_packages(inst: &Installation) -> Result<(Vec<String>, BTreeSet<String>), BuildError> {
    let files = elf_files(inst);
    let out = run_blocking(
        std::process::Command::new("ldd").args(files.iter().map(|f| inst.prefix.join(f.rel()))),
        Duration::from_secs(120),
        "ldd",
    )?;
    let mut libraries = BTreeSet::new();
    let mut broken = BTreeSet::new();
    for (file, resolved, missing) in parse_ldd(&String::from_utf8_lossy(&out.stdout)) {
        let name = Path::new(&file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !missing.is_empty() {
            if !file.contains("lib-dynload") {
                return Err(BuildError::Refused(format!(
                    "{file} does not run here: {} not found",
                    missing.join(", ")
                )));
            }
            broken.insert(name);
        }
        for lib in resolved {
            if !Path::new(&lib).starts_with(&inst.prefix) {
                libraries.insert(lib);
            }
        }
    }
    // dpkg knows a library by the path its package installed, which under merged /usr may be
    // /lib/... or /usr/lib/...: ask for every spelling.
    let mut queries = BTreeSet::new();
    for lib in &libraries {
        let mut spellings = vec![PathBuf::from(lib)];
        if let Ok(real) = Path::new(lib).canonicalize() {
            spellings.push(real);
        }
        for p in spellings {
            let text = p.to_string_lossy().into_owned();
            if let Some(rest) = text.strip_prefix("/usr") {
                queries.insert(rest.to_string());
            } else {
                queries.insert(format!("/usr{text}"));
            }
            queries.insert(text);
        }
    }
    let mut packages = BTreeSet::new();
    if !queries.is_empty() {
        let out = run_blocking(
            std::process::Command::new("dpkg").arg("-S").args(&queries),
            Duration::from_secs(120),
            "dpkg -S",
        )?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((owners, _)) = line.split_once(": ") else {
                continue;
            };
            for owner in owners.split(", ") {
                let name = owner.split(':').next().unwrap_or("").trim();
                if !name.is_empty()
                    && name.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b".+-".contains(&c)
                    })
                {
                    packages.insert(name.to_string());
                }
            }
        }
    }
    Ok((packages.into_iter().collect(), broken))
}

/// Copies what the image keeps of the installation to `dest` (`.../opt/cpython/<version>`):
/// the interpreter (with `python3` and `python` links), libpython, and the trimmed stdlib.
fn copy_installation(inst: &Installation, dest: &Path) -> Result<(), BuildError> {
    let io = |what: &Path, source: std::io::Error| BuildError::Path {
        path: what.to_path_buf(),
        source,
    };
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| io(&bin, e))?;
    let interpreter = format!("python{}", inst.minor);
    std::fs::copy(inst.interpreter(), bin.join(&interpreter))
        .map_err(|e| io(&inst.interpreter(), e))?;
    for link in ["python3", "python"] {
        std::os::unix::fs::symlink(&interpreter, bin.join(link))
            .map_err(|e| io(&bin.join(link), e))?;
    }
    let lib_src = inst.prefix.join("lib");
    let lib = dest.join("lib");
    std::fs::create_dir_all(&lib).map_err(|e| io(&lib, e))?;
    for entry in std::fs::read_dir(&lib_src).map_err(|e| io(&lib_src, e))? {
        let entry = entry.map_err(|e| io(&lib_src, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libpython") && name.contains(".so") {
            copy_entry(&entry.path(), &lib.join(&name))?;
        }
    }
    let stdlib = inst.stdlib_name();
    let mut copied = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let src_dir = lib_src.join(&stdlib).join(&rel);
        std::fs::create_dir_all(lib.join(&stdlib).join(&rel))
            .map_err(|e| io(&lib.join(&stdlib).join(&rel), e))?;
        for entry in std::fs::read_dir(&src_dir).map_err(|e| io(&src_dir, e))? {
            let entry = entry.map_err(|e| io(&src_dir, e))?;
            let child = rel.join(entry.file_name());
            if cpython::trimmed(&child) {
                continue;
            }
            copied += 1;
            if copied > MAX_FILES {
                return Err(BuildError::Refused(format!(
                    "{} has more than {MAX_FILES} files: not a CPython standard library",
                    lib_src.join(&stdlib).display()
                )));
            }
            let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            if kind.is_dir() {
                stack.push(child);
            } else {
                copy_entry(&entry.path(), &lib.join(&stdlib).join(&child))?;
            }
        }
    }
    Ok(())
}

/// Copies a file, or recreates a symlink that stays in its folder (`libpython3.8.so ->
/// libpython3.8.so.1.0`); any other symlink is copied as the file it points to.
fn copy_entry(src: &Path, dst: &Path) -> Result<(), BuildError> {
    let io = |source: std::io::Error| BuildError::Path {
        path: src.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(src).map_err(io)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(io)?;
        if target.components().count() == 1 {
            return std::os::unix::fs::symlink(&target, dst).map_err(io);
        }
    }
    if std::fs::metadata(src).map_err(io)?.is_file() {
        std::fs::copy(src, dst).map_err(io)?;
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Builds the runtime's image from the newest installation of its minor version in `places`.
pub(super) async fn build_local(
    engine: &Engine,
    rt: &ResolvedRuntime<'_>,
    places: Vec<SearchPlace>,
    progress: &mut dyn Progress,
) -> Result<Installation, SourceError> {
    let name = rt.runtime.name.clone();
    let (inst, boto3_version) = find_installation(rt, places, progress).await?;
    let (patchelf, suite) = local_tools(&inst)?;
    let for_packages = inst.clone();
    let (packages, broken_here) = blocking(
        Duration::from_secs(300),
        "reading the installation's libraries",
        move || runtime_packages(&for_packages),
    )
    .await
    .map_err(SourceError::failed)?;
    if !broken_here.is_empty() {
        let list: Vec<&str> = broken_here.iter().map(String::as_str).collect();
        progress.phase(&format!(
            "{name}: these modules do not load on this machine either: {}",
            list.join(", ")
        ));
    }
    let rootfs = shared_root(&suite, &packages, progress).await?;
    let boto3 = pinned_boto3(Boto3Installer::Interpreter(&inst), &boto3_version, progress)
        .await
        .map_err(SourceError::failed)?;
    let (_stage, tree) = stage_tree(&rootfs).await?;
    let image_prefix = inst.image_prefix();
    let dest = tree.join(image_prefix.trim_start_matches('/'));
    progress.phase(&format!(
        "{name}: copying CPython {} to {image_prefix} (without the test suite, idle, tkinter, ensurepip, caches)",
        inst.version
    ));
    let (for_copy, copy_dest) = (inst.clone(), dest.clone());
    blocking(Duration::from_secs(600), "the copy", move || {
        copy_installation(&for_copy, &copy_dest)
    })
    .await
    .map_err(SourceError::failed)?;
    let elves = relocate(&inst, &dest, &patchelf, &name, progress).await?;
    add_bootstrap(rt, &tree).map_err(SourceError::failed)?;
    let site = site_packages(rt);
    let site_dir = tree.join(site.trim_start_matches('/'));
    std::fs::create_dir_all(&site_dir).map_err(|e| SourceError::failed(e.to_string()))?;
    let mut cmd = tokio::process::Command::new("cp");
    cmd.arg("-a").arg(boto3.join(".")).arg(&site_dir);
    run_command(cmd, Duration::from_secs(300), "cp boto3")
        .await
        .map_err(SourceError::failed)?;
    let image = LocalImage {
        rt,
        inst: &inst,
        tree: &tree,
        suite: &suite,
        site: &site,
        path_env: format!(
            "PATH={image_prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
    };
    image.check_libraries(&elves, &broken_here).await?;
    image.check_interpreter(&boto3_version, progress).await?;
    image.compile(progress).await;
    image.import(engine, progress).await?;
    Ok(inst)
}

/// The runtime's pinned versions and the newest installation of its minor version in `places`.
async fn find_installation(
    rt: &ResolvedRuntime<'_>,
    places: Vec<SearchPlace>,
    progress: &mut dyn Progress,
) -> Result<(Installation, String), SourceError> {
    let minor = rt
        .runtime
        .build
        .get("PYTHON_VERSION")
        .cloned()
        .ok_or_else(|| SourceError::unavailable("the runtime pins no PYTHON_VERSION"))?;
    let boto3_version = rt
        .runtime
        .build
        .get("BOTO3_VERSION")
        .cloned()
        .ok_or_else(|| SourceError::Failed("the runtime pins no BOTO3_VERSION".into()))?;
    let inst = blocking(Duration::from_secs(300), "the search", move || {
        cpython::find(&minor, &places).map_err(BuildError::from)
    })
    .await
    .map_err(SourceError::unavailable)?;
    progress.phase(&format!(
        "{}: CPython {} from {}",
        rt.runtime.name,
        inst.version,
        inst.source_description()
    ));
    Ok((inst, boto3_version))
}

/// The tools a local build needs here: patchelf, and a Debian host (its suite).
fn local_tools(inst: &Installation) -> Result<(PathBuf, String), SourceError> {
    local_tools_missing().map_err(SourceError::unavailable)?;
    let Some(patchelf) = which("patchelf") else {
        return Err(SourceError::unavailable(format!(
            "patchelf is not installed (apt-get install -y patchelf): it points the copy's RUNPATH, now {}/lib, at its new place",
            inst.prefix.display()
        )));
    };
    let suite = cpython::host_debian_suite()
        .ok_or_else(|| SourceError::unavailable("this machine is not Debian"))?;
    Ok((patchelf, suite))
}

/// The image tree: the cached root as hard links (it is only read, never written through
/// them), copied when links cannot be made. The stage folder goes when the first value drops.
async fn stage_tree(rootfs: &Path) -> Result<(super::TempDir, PathBuf), SourceError> {
    let stage = tempdir_in(&cache_dir().join("stage")).map_err(SourceError::failed)?;
    let tree = stage.path().join("root");
    let mut cmd = tokio::process::Command::new("cp");
    cmd.arg("-a").arg("-l").arg(rootfs).arg(&tree);
    if run_command(cmd, Duration::from_secs(300), "cp -al")
        .await
        .is_err()
    {
        let _ = std::fs::remove_dir_all(&tree);
        let mut cmd = tokio::process::Command::new("cp");
        cmd.arg("-a").arg(rootfs).arg(&tree);
        run_command(cmd, Duration::from_secs(600), "cp -a")
            .await
            .map_err(SourceError::failed)?;
    }
    Ok((stage, tree))
}

/// Strips debug symbols (of no use to a step) from the copy's ELF files and makes their
/// RUNPATH `$ORIGIN`-relative, never the old path. Returns the ELF files.
async fn relocate(
    inst: &Installation,
    dest: &Path,
    patchelf: &Path,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<Vec<ElfFile>, SourceError> {
    let elves = elf_files(inst);
    let strip = which("strip");
    let old_prefixes: Vec<PathBuf> = places_of(inst);
    let old: Vec<&Path> = old_prefixes.iter().map(PathBuf::as_path).collect();
    let mut relocated = 0usize;
    for elf in &elves {
        let file = dest.join(elf.rel());
        if !file.exists() {
            continue;
        }
        if let Some(strip) = &strip {
            let mut cmd = tokio::process::Command::new(strip);
            cmd.arg("--strip-debug").arg(&file);
            run_command(cmd, Duration::from_secs(120), "strip")
                .await
                .map_err(SourceError::failed)?;
        }
        let mut cmd = tokio::process::Command::new(patchelf);
        cmd.arg("--print-rpath").arg(&file);
        let out = capture(cmd, Duration::from_secs(60), "patchelf --print-rpath")
            .await
            .map_err(SourceError::failed)?;
        let current = text(&out.stdout);
        if let Some(new) = cpython::relocated_runpath(&current, &old, &elf.rel_dir) {
            let mut cmd = tokio::process::Command::new(patchelf);
            cmd.arg("--set-rpath").arg(&new).arg(&file);
            run_command(cmd, Duration::from_secs(60), "patchelf --set-rpath")
                .await
                .map_err(SourceError::failed)?;
            relocated += 1;
        }
    }
    progress.phase(&format!(
        "{name}: RUNPATH of {relocated} of {} ELF files made $ORIGIN-relative",
        elves.len()
    ));
    Ok(elves)
}

/// A staged local-CPython image root, checked and imported from inside.
struct LocalImage<'a> {
    rt: &'a ResolvedRuntime<'a>,
    inst: &'a Installation,
    tree: &'a Path,
    suite: &'a str,
    site: &'a str,
    path_env: String,
}

impl LocalImage<'_> {
    /// Inside the image root, before anything is imported: every library resolves (but those
    /// of modules that do not load on this machine either).
    async fn check_libraries(
        &self,
        elves: &[ElfFile],
        broken_here: &BTreeSet<String>,
    ) -> Result<(), SourceError> {
        let image_prefix = self.inst.image_prefix();
        let mut cmd = in_root(self.tree, None);
        cmd.arg("/usr/bin/ldd")
            .args(elves.iter().map(|e| Path::new(&image_prefix).join(e.rel())));
        let out = capture(cmd, Duration::from_secs(120), "ldd inside the image root")
            .await
            .map_err(SourceError::failed)?;
        let unresolved: Vec<String> = parse_ldd(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .filter(|(file, _, missing)| {
                !missing.is_empty()
                    && !broken_here.contains(
                        Path::new(file)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                            .as_str(),
                    )
            })
            .map(|(file, _, missing)| format!("{file} needs {}", missing.join(", ")))
            .collect();
        if !unresolved.is_empty() {
            return Err(SourceError::Failed(format!(
                "shared libraries do not resolve inside the {} root: {}",
                self.suite,
                unresolved.join("; ")
            )));
        }
        Ok(())
    }

    /// The interpreter, as the runtime's user, is exactly this version with the pinned boto3.
    async fn check_interpreter(
        &self,
        boto3_version: &str,
        progress: &mut dyn Progress,
    ) -> Result<(), SourceError> {
        let check = format!(
            "import json, platform, {REQUIRED_MODULES}, boto3; print(json.dumps([platform.python_version(), boto3.__version__]))"
        );
        let mut cmd = in_root(self.tree, Some("10001:10001"));
        cmd.args(["/usr/bin/env", "-i", &self.path_env])
            .arg(format!("PYTHONPATH={}", self.site))
            .args(["PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8", "python3", "-c"])
            .arg(&check);
        let out = capture(
            cmd,
            Duration::from_secs(120),
            "the interpreter inside the image root",
        )
        .await
        .map_err(SourceError::failed)?;
        let want = serde_json::json!([self.inst.version, boto3_version]);
        let got: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() || got.as_ref() != Some(&want) {
            return Err(SourceError::Failed(format!(
                "inside the {} root, python3 -c 'import {REQUIRED_MODULES}, boto3' gave {} instead of {want} ({})",
                self.suite,
                text(&out.stdout),
                text(&out.stderr).lines().last().unwrap_or("")
            )));
        }
        progress.phase(&format!(
            "{}: inside the image root CPython {} imports {REQUIRED_MODULES} and boto3 {boto3_version}",
            self.rt.runtime.name, self.inst.version
        ));
        Ok(())
    }

    /// One bytecode cache per module, compiled by the image's own interpreter at its final
    /// paths: the root is read-only at run time, so without it every step would compile what
    /// it imports. A file that does not compile runs from source.
    async fn compile(&self, progress: &mut dyn Progress) {
        let image_prefix = self.inst.image_prefix();
        let mut cmd = in_root(self.tree, None);
        cmd.args(["/usr/bin/env", "-i", &self.path_env, "LANG=C.UTF-8"])
            .args(["python3", "-m", "compileall", "-q"])
            .arg(format!("{image_prefix}/lib/{}", self.inst.stdlib_name()))
            .arg(self.site);
        if let Err(e) = run_command(cmd, Duration::from_secs(600), "compileall").await {
            progress.phase(&format!(
                "{}: some files did not compile ({e}); they run from source",
                self.rt.runtime.name
            ));
        }
    }

    /// Imports the tree as the runtime's image, labelled with the installation's identity.
    async fn import(
        &self,
        engine: &Engine,
        progress: &mut dyn Progress,
    ) -> Result<(), SourceError> {
        let (rt, inst) = (self.rt, self.inst);
        let identity = inst.identity();
        let recipe =
            local_recipe_hash(rt, &identity).map_err(|e| SourceError::failed(e.to_string()))?;
        let labels = vec![
            (LABEL_SOURCE, SOURCE_LOCAL_CPYTHON.to_string()),
            (LABEL_CPYTHON_VERSION, inst.version.clone()),
            (LABEL_CPYTHON_SOURCE, inst.source_description()),
            (LABEL_CPYTHON_IDENTITY, identity),
            (LABEL_CPYTHON_PREFIX, inst.prefix.display().to_string()),
            (LABEL_CPYTHON_FINGERPRINT, inst.fingerprint.clone()),
        ];
        let mut changes = vec![
            format!("ENV {}", self.path_env),
            format!("ENV PYTHONPATH={}", self.site),
            "ENV LANG=C.UTF-8".to_string(),
        ];
        changes.extend(common_changes(rt, &recipe, &labels).map_err(SourceError::failed)?);
        let mut args: Vec<OsString> = ROOTFS_KERNEL.iter().map(Into::into).collect();
        args.extend(
            ROOTFS_TRIM
                .iter()
                .map(|p| OsString::from(format!("--exclude={p}"))),
        );
        args.extend(["-C".into(), self.tree.as_os_str().to_owned(), ".".into()]);
        import_tree(engine, rt, args, changes, progress)
            .await
            .map_err(SourceError::failed)?;
        Ok(())
    }
}

/// The file in a cached root listing the packages it was bootstrapped with.
const INCLUDE_RECORD: &str = ".scriptbox-include";

/// The one cached Debian root per suite that local-CPython images share. When an installation
/// needs a package the cached root lacks, the root is bootstrapped again with both lists.
async fn shared_root(
    suite: &str,
    packages: &[String],
    progress: &mut dyn Progress,
) -> Result<PathBuf, SourceError> {
    let cache_name = format!("{suite}-cpython");
    let root = cache_dir().join("rootfs").join(&cache_name);
    let recorded: BTreeSet<String> = std::fs::read_to_string(root.join(INCLUDE_RECORD))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let mut include: BTreeSet<String> = packages.iter().cloned().collect();
    if root.join(INCLUDE_RECORD).exists() && include.is_subset(&recorded) {
        progress.phase(&format!(
            "Debian {suite} root filesystem: cached at {}",
            root.display()
        ));
        return Ok(root);
    }
    include.extend(recorded);
    if root.exists() {
        // Moved aside first: images being assembled elsewhere hold hard links, not this folder.
        let old = root.with_extension(format!("old-{}", uuid::Uuid::new_v4()));
        std::fs::rename(&root, &old)
            .map_err(|e| SourceError::Failed(format!("cannot move {}: {e}", root.display())))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    let include: Vec<String> = include.into_iter().collect();
    let done = debootstrap(
        &RootfsRecipe {
            suite,
            include: &include,
            cache_name,
            proof: INCLUDE_RECORD,
        },
        progress,
    )
    .await?;
    std::fs::write(done.join(INCLUDE_RECORD), include.join("\n"))
        .map_err(|e| SourceError::Failed(format!("cannot write {}: {e}", done.display())))?;
    Ok(done)
}

/// A command run inside the image root as a container would run it: chrooted, with a `/proc` of
/// its own (the loader reads `/proc/self/exe` to expand `$ORIGIN`), in a private mount namespace
/// that disappears with the command. Append the program and its arguments.
fn in_root(tree: &Path, user: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--",
        "sh",
        "-c",
    ])
    .arg(r#"mount -t proc proc "$0/proc" && exec chroot "$@""#)
    .arg(tree);
    if let Some(user) = user {
        cmd.arg(format!("--userspec={user}"));
    }
    cmd.arg(tree);
    cmd
}

/// The spellings of the installation's prefix its RUNPATH may use.
fn places_of(inst: &Installation) -> Vec<PathBuf> {
    let mut out = vec![inst.prefix.clone()];
    if let Some(home) = std::env::var_os("PYENV_ROOT") {
        let alt = PathBuf::from(home)
            .join("versions")
            .join(inst.prefix.file_name().unwrap_or_default());
        if alt != inst.prefix {
            out.push(alt);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_read_per_file() {
        let text = "/a/bin/python3.8:\n\tlinux-vdso.so.1 (0x00007ffd)\n\tlibpython3.8.so.1.0 => /a/lib/libpython3.8.so.1.0 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n/a/lib/python3.8/lib-dynload/_ssl.so:\n\tlibssl.so.3 => not found\n";
        let parsed = parse_ldd(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0].1,
            vec![
                "/a/lib/libpython3.8.so.1.0".to_string(),
                "/lib/x86_64-linux-gnu/libc.so.6".to_string()
            ]
        );
        assert!(parsed[0].2.is_empty());
        assert_eq!(parsed[1].2, vec!["libssl.so.3".to_string()]);
    }
}
