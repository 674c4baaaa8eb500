//! SSM `Attachments` read from the daemon's file system, the local extension of AWS's S3
//! sources: only under the folders the operator lists in `server.ssm_attachment_roots`
//! (none by default, so nothing is read), as regular files of at most
//! `server.ssm_attachment_max_bytes`, opened without following a link out of the root.
//!
//! The daemon usually runs as root, so every rule here stands between a caller and the host's
//! files: a path outside the roots is refused before it is touched; the open is
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the root's descriptor (a symlink or
//! `..` cannot leave the root), with `O_NOFOLLOW` (the last component is never a link) and
//! `O_NONBLOCK` (a FIFO cannot block the open); `fstat` must say regular file and the size must
//! be within the cap before a byte is read, and at most cap + 1 bytes are read. Kernels without
//! `openat2` get the same rules by canonical path plus a device and inode check. Callers run
//! this off the async workers, under a deadline. Errors name the attachment and the rule,
//! never what a file holds or hashes to.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::documents::{Files, opt_str};
use super::errors::SsmError;

/// What the operator allows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Folders attachments may come from; empty: none may.
    pub roots: Vec<PathBuf>,
    /// The largest file read, bytes.
    pub max_bytes: u64,
    /// The SSM API runs with `--ssm-anonymous`: file-system attachments are off.
    pub anonymous: bool,
}

fn refuse(i: usize, rule: impl std::fmt::Display) -> SsmError {
    SsmError::validation(format!("Attachments[{i}]: {rule}"))
}

/// A name an attachment may be stored under: a plain file name.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// Reads the attachments a request names; `None` when it has no `Attachments` (an
/// UpdateDocument then keeps the previous version's files). `declared` are the file names the
/// document's `files` section lists: a `SourceUrl` folder gives those of them it holds.
pub fn read(req: &Value, declared: &[String], policy: &Policy) -> Result<Option<Files>, SsmError> {
    let Some(list) = req.get("Attachments") else {
        return Ok(None);
    };
    let list = list.as_array().ok_or_else(|| {
        SsmError::client("SerializationException", "Attachments: expected a list")
    })?;
    let mut files: Files = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let key = opt_str(a, "Key")?.unwrap_or("");
        let values: Vec<&str> = a
            .get("Values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let [value] = values.as_slice() else {
            return Err(refuse(i, "Values must hold exactly one value"));
        };
        if !matches!(key, "SourceUrl" | "S3FileUrl") {
            return Err(refuse(
                i,
                format!(
                    "Key {key:?}: scriptbox supports SourceUrl (a local folder) and S3FileUrl (a local file)"
                ),
            ));
        }
        let source = Source::allowed(i, value, policy)?;
        if key == "SourceUrl" {
            source.read_folder(declared, policy, &mut files)?;
        } else {
            source.read_file(opt_str(a, "Name")?, policy, &mut files)?;
        }
        if files.len() > crate::step::MAX_ATTACHMENTS {
            return Err(refuse(
                i,
                format!(
                    "at most {} attachment files per document",
                    crate::step::MAX_ATTACHMENTS
                ),
            ));
        }
    }
    Ok(Some(files))
}

/// One attachment source the operator's policy allows: a path under one of its roots.
struct Source<'v> {
    /// Its place in `Attachments`.
    i: usize,
    /// As the request gave it.
    value: &'v str,
    /// The local path.
    path: &'v Path,
    /// The root it is under, and the path relative to it.
    root: PathBuf,
    rel: PathBuf,
}

impl<'v> Source<'v> {
    /// Checks `value` against the policy: an absolute local path, file attachments on, under a
    /// root.
    fn allowed(i: usize, value: &'v str, policy: &Policy) -> Result<Source<'v>, SsmError> {
        let local = value.strip_prefix("file://").unwrap_or(value);
        let path = Path::new(local);
        if !path.is_absolute() {
            return Err(refuse(
                i,
                format!(
                    "scriptbox reads attachments from a local absolute path (file:///abs/folder or /abs/folder), not {value:?}; S3 URLs and AttachmentReference are not supported"
                ),
            ));
        }
        if policy.anonymous {
            return Err(refuse(
                i,
                "attachments from the daemon's file system are off while the SSM API is anonymous (--ssm-anonymous); the operator enables them by serving with --ssm-access-keys-file and --ssm-attachment-root DIR",
            ));
        }
        if policy.roots.is_empty() {
            return Err(refuse(
                i,
                "attachments from the daemon's file system are off: the operator enables them with --ssm-attachment-root DIR (server.ssm_attachment_roots), and only files under those folders can be read",
            ));
        }
        let (root, rel) = under_a_root(path, &policy.roots).ok_or_else(|| {
            refuse(
                i,
                format!(
                    "{value:?} is not under a folder the operator allows (server.ssm_attachment_roots); paths with `..` are refused"
                ),
            )
        })?;
        Ok(Source {
            i,
            value,
            path,
            root,
            rel,
        })
    }

    fn cannot(&self, e: std::io::Error) -> SsmError {
        refuse(self.i, format!("cannot open {:?}: {e}", self.value))
    }

    /// `SourceUrl`: the declared files the folder holds (not already read).
    fn read_folder(
        &self,
        declared: &[String],
        policy: &Policy,
        files: &mut Files,
    ) -> Result<(), SsmError> {
        let (i, value) = (self.i, self.value);
        let dir = open_beneath(&self.root, &self.rel, true).map_err(|e| self.cannot(e))?;
        check_type(&dir, true).map_err(|rule| refuse(i, format!("{value:?} {rule}")))?;
        for name in declared {
            if !plain_name(name) || files.iter().any(|(n, _)| n == name) {
                continue;
            }
            let f = match open_in_dir(&dir, name) {
                Ok(f) => f,
                // Not in this folder: another source may hold it, and the document check names
                // any that is missing.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    return Err(refuse(i, format!("cannot open {name} in {value:?}: {e}")));
                }
            };
            let bytes = read_capped(f, policy.max_bytes)
                .map_err(|rule| refuse(i, format!("{name} in {value:?} {rule}")))?;
            files.push((name.clone(), bytes));
        }
        Ok(())
    }

    /// `S3FileUrl`: one file, stored under `name` (default: its own file name).
    fn read_file(
        &self,
        name: Option<&str>,
        policy: &Policy,
        files: &mut Files,
    ) -> Result<(), SsmError> {
        let (i, value) = (self.i, self.value);
        let name = match name {
            Some(n) => n.to_string(),
            None => self
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string(),
        };
        if !plain_name(&name) {
            return Err(refuse(
                i,
                format!("Name {name:?} must be a plain file name (no `/`, not starting with `.`)"),
            ));
        }
        let f = open_beneath(&self.root, &self.rel, false).map_err(|e| self.cannot(e))?;
        let bytes = read_capped(f, policy.max_bytes)
            .map_err(|rule| refuse(i, format!("{value:?} {rule}")))?;
        files.retain(|(n, _)| n != &name);
        files.push((name, bytes));
        Ok(())
    }
}

/// The root a path lies under (as configured or canonical) and the path relative to it;
/// `None` for a path outside every root or with a `..` component.
fn under_a_root(path: &Path, roots: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    for root in roots {
        let forms = [Some(root.clone()), std::fs::canonicalize(root).ok()];
        for form in forms.into_iter().flatten() {
            if let Ok(rel) = path.strip_prefix(&form) {
                return Some((form, rel.to_path_buf()));
            }
        }
    }
    None
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path"))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Opens `rel` beneath `root` without leaving it; `dir`: a folder, else a file to read.
fn open_beneath(root: &Path, rel: &Path, dir: bool) -> std::io::Result<OwnedFd> {
    let root_c = cstring(root)?;
    // SAFETY: open(2) on a NUL-terminated path we own; the result is checked.
    let root_fd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root_fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a descriptor just returned by open(2), owned here only.
    let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let rel_c = cstring(rel)?;
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    // SAFETY: `open_how` is plain integers; all-zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags).unwrap_or_default();
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2(2) with a valid directory descriptor, a NUL-terminated path and an
    // `open_how` of the size passed; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("descriptor out of range"))?;
        // SAFETY: a descriptor just returned by openat2(2), owned here only.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let err = last_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // No openat2 (kernel before 5.6): the canonical path must stay under the canonical root,
    // and what is opened must be the file that was checked.
    let canon_root = std::fs::canonicalize(root)?;
    let canon = std::fs::canonicalize(root.join(rel))?;
    if !canon.starts_with(&canon_root) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it leads out of the allowed folder",
        ));
    }
    let c = cstring(&canon)?;
    // SAFETY: open(2) on a NUL-terminated path we own; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a descriptor just returned by open(2), owned here only.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let opened = fstat(&fd)?;
    let checked = std::fs::symlink_metadata(&canon)?;
    use std::os::unix::fs::MetadataExt;
    if opened.st_ino != checked.ino() || opened.st_dev != checked.dev() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it changed while it was opened",
        ));
    }
    Ok(fd)
}

/// Opens a plain file name in an open folder, never through a link.
fn open_in_dir(dir: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(name)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the name"))?;
    // SAFETY: openat(2) with a valid directory descriptor and a NUL-terminated plain name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a descriptor just returned by openat(2), owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value for fstat(2) to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) on a descriptor we own into a `stat` we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error());
    }
    Ok(st)
}

/// The rule a file broke (the message follows the file's name).
#[derive(Debug, thiserror::Error)]
enum FileRule {
    #[error("cannot be examined: {0}")]
    Unexaminable(std::io::Error),
    #[error("is not a folder")]
    NotAFolder,
    #[error("is not a regular file (FIFOs, devices, sockets and folders are refused)")]
    NotARegularFile,
    #[error("is larger than the {0} bytes allowed (server.ssm_attachment_max_bytes)")]
    TooLarge(u64),
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
}

/// The descriptor is a folder (`dir`) or a regular file; else the rule broken.
fn check_type(fd: &OwnedFd, dir: bool) -> Result<libc::stat, FileRule> {
    let st = fstat(fd).map_err(FileRule::Unexaminable)?;
    let kind = st.st_mode & libc::S_IFMT;
    match (dir, kind) {
        (true, libc::S_IFDIR) | (false, libc::S_IFREG) => Ok(st),
        (true, _) => Err(FileRule::NotAFolder),
        (false, _) => Err(FileRule::NotARegularFile),
    }
}

/// Reads a regular file of at most `cap` bytes (at most cap + 1 are ever read).
fn read_capped(fd: OwnedFd, cap: u64) -> Result<Vec<u8>, FileRule> {
    let st = check_type(&fd, false)?;
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > cap {
        return Err(FileRule::TooLarge(cap));
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    File::from(fd)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(FileRule::Unreadable)?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > cap {
        return Err(FileRule::TooLarge(cap));
    }
    Ok(out)
}

/// The names a document's `files` section declares (for reading a `SourceUrl` folder).
pub fn declared_files(content: &str, format: crate::runbook::yaml::Format) -> Vec<String> {
    use crate::runbook::yaml::Kind;
    let (root, _) = crate::runbook::yaml::read(content, format);
    match root.as_ref().and_then(|r| r.get("files")).map(|f| &f.kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .take(crate::step::MAX_ATTACHMENTS + 1)
            .map(|(k, _, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// A document check's message without what a file hashes to: `has sha256 <hex>` becomes
/// `has another sha256`.
pub fn redact_hashes(text: &str) -> String {
    const MARK: &str = "has sha256 ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        out.push_str("has another sha256");
        let after = &rest[at + MARK.len()..];
        let hex_len = after.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
        rest = &after[hex_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_redacted() {
        let t = format!(
            "files.a.py: checksum mismatch: /x/a.py has sha256 {}, the document declares {}",
            "ab".repeat(32),
            "cd".repeat(32)
        );
        let r = redact_hashes(&t);
        assert!(!r.contains(&"ab".repeat(32)), "{r}");
        assert!(
            r.contains("has another sha256, the document declares"),
            "{r}"
        );
    }

    #[test]
    fn only_paths_under_a_root_without_dotdot() {
        let roots = [PathBuf::from("/srv/att")];
        assert!(under_a_root(Path::new("/srv/att/a.py"), &roots).is_some());
        assert!(under_a_root(Path::new("/srv/att"), &roots).is_some());
        assert!(under_a_root(Path::new("/srv/att/../etc/shadow"), &roots).is_none());
        assert!(under_a_root(Path::new("/srv/attic/a.py"), &roots).is_none());
        assert!(under_a_root(Path::new("/etc/shadow"), &roots).is_none());
    }

    #[test]
    fn links_fifos_devices_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("secret"), "canary").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link.py")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(root.join("big"), vec![b'a'; 2048]).unwrap();
        let policy = Policy {
            roots: vec![root.clone()],
            max_bytes: 1024,
            anonymous: false,
        };
        let file = |p: &Path| {
            read(
                &serde_json::json!({"Attachments": [{"Key": "S3FileUrl", "Values": [format!("file://{}", p.display())], "Name": "a.py"}]}),
                &[],
                &policy,
            )
        };
        let ok = file(&root.join("ok.py")).unwrap().unwrap();
        assert_eq!(ok, vec![("a.py".to_string(), b"x = 1\n".to_vec())]);
        for bad in [
            root.join("link.py"),
            root.join("up/secret"),
            root.join("fifo"),
            root.join("big"),
            PathBuf::from("/dev/zero"),
            dir.path().join("secret"),
        ] {
            let e = file(&bad).unwrap_err();
            assert_eq!(e.code, "ValidationException", "{bad:?}");
            assert!(!e.message.contains("canary"), "{}", e.message);
        }
        // No roots, or anonymous: nothing is read, and the message says how to enable it.
        let none = Policy {
            roots: vec![],
            ..policy.clone()
        };
        let req = serde_json::json!({"Attachments": [{"Key": "SourceUrl", "Values": [root.display().to_string()]}]});
        assert!(
            read(&req, &["ok.py".into()], &none)
                .unwrap_err()
                .message
                .contains("--ssm-attachment-root")
        );
        let anon = Policy {
            anonymous: true,
            ..policy.clone()
        };
        assert!(
            read(&req, &["ok.py".into()], &anon)
                .unwrap_err()
                .message
                .contains("--ssm-anonymous")
        );
        // A folder gives the declared files it holds, never through a link.
        let got = read(&req, &["ok.py".into(), "missing.py".into()], &policy)
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(read(&req, &["link.py".into()], &policy).is_err());
    }
}
