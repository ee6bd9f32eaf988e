//! The local pacman caches, as peers may see them: which names may be served,
//! and opening them safely.
//!
//! Owns the file-name rules (finished packages and their signatures only), the
//! classification of the names pacman asks for, and the lookup of a name in the
//! cache directories with a `stat` per directory (no directory walk). It never
//! writes to a cache and never follows a symlink out of one; it does not know
//! about HTTP.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::sync_db::FileStamp;

/// Compression suffixes pacman knows for `*.pkg.tar.<ext>`.
const PACKAGE_EXTENSIONS: [&str; 8] = ["zst", "xz", "gz", "bz2", "lz4", "lrz", "lzo", "Z"];

/// Longest name accepted (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// What a requested file name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `name-ver-rel-arch.pkg.tar.<ext>`
    Package,
    /// A package's detached signature, `<package>.sig`.
    Signature,
    /// A sync database or its signature: `<repo>.db`, `.files`, `.db.sig`,
    /// `.files.sig` (and their `.tar.<ext>` forms). Never served to peers.
    Database,
}

/// Why a name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// Contains `/` (sub-folders are never served).
    Slash,
    /// Contains NUL or another control character.
    Control,
    /// Starts with `.` (dot files, `.`, `..`).
    Hidden,
    /// Contains `..`.
    DotDot,
    /// A download in progress (`*.part`).
    Partial,
    /// Not a package, signature or database name.
    Unknown,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty file name",
            NameError::TooLong => "file name too long",
            NameError::Slash => "file name with '/'",
            NameError::Control => "file name with a control character",
            NameError::Hidden => "hidden file name",
            NameError::DotDot => "file name with '..'",
            NameError::Partial => "download in progress (.part)",
            NameError::Unknown => "not a package, signature or database name",
        })
    }
}

impl NameError {
    /// Whether the name is malformed as a request (400) rather than merely not
    /// a servable file (404).
    pub fn is_malformed(self) -> bool {
        matches!(self, NameError::Control)
    }
}

/// Classifies a (decoded) file name, refusing anything unsafe. The promise the
/// fuzz target checks: an accepted name has no `/`, no `..`, no NUL or control
/// character, does not start with `.`, and does not end in `.part`.
pub fn classify(name: &str) -> Result<FileKind, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if name.starts_with('.') {
        return Err(NameError::Hidden);
    }
    if name.contains("..") {
        return Err(NameError::DotDot);
    }
    if name.ends_with(".part") {
        return Err(NameError::Partial);
    }
    let (base, signature) = match name.strip_suffix(".sig") {
        Some(base) => (base, true),
        None => (name, false),
    };
    if is_package(base) {
        return Ok(if signature {
            FileKind::Signature
        } else {
            FileKind::Package
        });
    }
    if is_database(base) {
        return Ok(FileKind::Database);
    }
    Err(NameError::Unknown)
}

/// A name peers may fetch: a package or a package signature.
pub fn check_servable(name: &str) -> Result<FileKind, NameError> {
    match classify(name)? {
        FileKind::Database => Err(NameError::Unknown),
        kind => Ok(kind),
    }
}

fn is_package(name: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once(".pkg.tar.") else {
        return false;
    };
    // name-ver-rel-arch: at least three dashes, none of the parts empty.
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    PACKAGE_EXTENSIONS.contains(&ext) && parts.len() == 4 && parts.iter().all(|p| !p.is_empty())
}

fn is_database(name: &str) -> bool {
    let stem = match name.split_once(".db").or_else(|| name.split_once(".files")) {
        Some((stem, rest)) if rest.is_empty() || rest.starts_with(".tar.") => stem,
        _ => return false,
    };
    !stem.is_empty()
}

/// An open cache file ready to be sent (shared: see [`Cache::open`]).
#[derive(Clone, Debug)]
pub struct CachedFile {
    pub file: Rc<File>,
    pub len: u64,
    /// Modification time, Unix seconds.
    pub modified: u64,
    pub path: PathBuf,
    /// Which version of the file this is (its digest is remembered by it).
    pub stamp: FileStamp,
}

#[derive(Clone, Debug)]
struct CacheDir {
    /// As configured (for logs).
    path: PathBuf,
    /// Canonical form, against which symlink targets are checked.
    real: PathBuf,
}

/// How long an opened file is shared by later requests for the same name.
pub const OPEN_FILE_TTL: Duration = Duration::from_secs(1);
/// Open files kept at most.
const OPEN_FILES: usize = 64;

/// The cache directories this host serves, read-only.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    dirs: Vec<CacheDir>,
    /// Files opened in the last [`OPEN_FILE_TTL`], oldest first.
    open_files: VecDeque<(String, Instant, CachedFile)>,
}

impl Cache {
    /// Directories that cannot be resolved are kept as given (a cache that
    /// appears later still works) and reported in the returned warnings.
    pub fn new(dirs: &[PathBuf]) -> (Cache, Vec<String>) {
        let mut warnings = Vec::new();
        let dirs = dirs
            .iter()
            .map(|path| {
                let real = path.canonicalize().unwrap_or_else(|e| {
                    warnings.push(format!("cache directory {}: {e}", path.display()));
                    path.clone()
                });
                CacheDir {
                    path: path.clone(),
                    real,
                }
            })
            .collect();
        (
            Cache {
                dirs,
                open_files: VecDeque::new(),
            },
            warnings,
        )
    }

    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.path.as_path())
    }

    /// The fast check peers' questions are answered with: a `stat` per cache
    /// directory.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Where `name` is (the first directory holding it as a regular file) and
    /// which version of the file it is: a `stat` per cache directory.
    pub fn find(&self, name: &str) -> Option<(PathBuf, FileStamp)> {
        check_servable(name).ok()?;
        self.dirs.iter().find_map(|dir| {
            let path = resolve(dir, name)?;
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file().then(|| (path, FileStamp::of(&meta)))
        })
    }

    /// Opens `name` for reading from the first directory that holds it as a
    /// regular file. `Ok(None)`: no directory has it.
    ///
    /// A file opened less than [`OPEN_FILE_TTL`] ago is shared (many peers
    /// fetching the same new package at once open it once; `sendfile` and
    /// `pread` take explicit offsets, so sharing is safe). A package removed
    /// from the cache is thus served for at most that long after, as the
    /// complete file it was, and its descriptor is closed by [`Self::expire`].
    pub fn open(&mut self, name: &str, now: Instant) -> Result<Option<CachedFile>, NameError> {
        check_servable(name)?;
        self.expire(now);
        if let Some((_, _, file)) = self.open_files.iter().find(|(n, _, _)| n == name) {
            return Ok(Some(file.clone()));
        }
        let found = self.open_uncached(name);
        if let Some(file) = &found {
            if self.open_files.len() >= OPEN_FILES {
                self.open_files.pop_front();
            }
            self.open_files
                .push_back((name.to_owned(), now, file.clone()));
        }
        Ok(found)
    }

    /// Closes the shared descriptors older than [`OPEN_FILE_TTL`].
    pub fn expire(&mut self, now: Instant) {
        while self
            .open_files
            .front()
            .is_some_and(|(_, opened, _)| now >= *opened + OPEN_FILE_TTL)
        {
            self.open_files.pop_front();
        }
    }

    /// When [`Self::expire`] has work next (a loop deadline).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.open_files
            .front()
            .map(|(_, opened, _)| *opened + OPEN_FILE_TTL)
    }

    fn open_uncached(&self, name: &str) -> Option<CachedFile> {
        for dir in &self.dirs {
            let mut path = dir.path.join(name);
            let file = match open_no_follow(&path) {
                Ok(file) => file,
                // A symlink: opened only when its target passes the checks.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    let Some(target) = symlink_target(dir, &path) else {
                        continue;
                    };
                    path = target;
                    match open_no_follow(&path) {
                        Ok(file) => file,
                        Err(_) => continue,
                    }
                }
                Err(_) => continue,
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            return Some(CachedFile {
                file: Rc::new(file),
                len: meta.len(),
                modified: u64::try_from(meta.mtime()).unwrap_or(0),
                path,
                stamp: FileStamp::of(&meta),
            });
        }
        None
    }
}

/// Opens for reading without following a symlink in the last component
/// (`ELOOP` then), and with `O_NONBLOCK` so that a FIFO planted under a
/// package name cannot block the loop.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// The path to open for `name` in `dir`: the entry itself, or, for a symlink,
/// its target when that is a servable name directly inside the same cache
/// directory. `None` when absent or refused.
fn resolve(dir: &CacheDir, name: &str) -> Option<PathBuf> {
    let path = dir.path.join(name);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_symlink() {
        return Some(path);
    }
    symlink_target(dir, &path)
}

/// The target of the symlink at `path` when it is a servable name directly
/// inside `dir`.
fn symlink_target(dir: &CacheDir, path: &Path) -> Option<PathBuf> {
    let target = path.canonicalize().ok()?;
    let inside = target.parent() == Some(dir.real.as_path());
    let target_name = target.file_name()?.to_str()?;
    (inside && check_servable(target_name).is_ok()).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_files_are_shared_for_a_second_then_closed() {
        let dir = std::env::temp_dir().join(format!("flocon-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = "a-1-1-any.pkg.tar.zst";
        std::fs::write(dir.join(name), b"data").unwrap();
        let (mut cache, warnings) = Cache::new(std::slice::from_ref(&dir));
        assert!(warnings.is_empty());
        let t0 = Instant::now();
        let first = cache.open(name, t0).unwrap().unwrap();
        let again = cache
            .open(name, t0 + Duration::from_millis(500))
            .unwrap()
            .unwrap();
        assert!(Rc::ptr_eq(&first.file, &again.file));
        assert_eq!(cache.next_expiry(), Some(t0 + OPEN_FILE_TTL));
        // Removed: still the complete file it was, until the second is over.
        std::fs::remove_file(dir.join(name)).unwrap();
        let late = cache.open(name, t0 + Duration::from_millis(900)).unwrap();
        assert_eq!(late.map(|f| f.len), Some(4));
        cache.expire(t0 + OPEN_FILE_TTL);
        assert_eq!(cache.next_expiry(), None);
        assert!(cache.open(name, t0 + OPEN_FILE_TTL).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn name_table() {
        use FileKind::*;
        use NameError::*;
        let long = format!("{}-1-1-x86_64.pkg.tar.zst", "a".repeat(250));
        let cases: Vec<(&str, Result<FileKind, NameError>)> = vec![
            ("zstd-1.5.6-1-x86_64.pkg.tar.zst", Ok(Package)),
            ("zstd-1.5.6-1-x86_64.pkg.tar.zst.sig", Ok(Signature)),
            ("libc++-1:17.0.6-1-x86_64.pkg.tar.xz", Ok(Package)),
            ("a-1-1-any.pkg.tar.gz", Ok(Package)),
            ("a-1-1-any.pkg.tar.Z", Ok(Package)),
            ("core.db", Ok(Database)),
            ("core.db.sig", Ok(Database)),
            ("extra.files", Ok(Database)),
            ("extra.files.sig", Ok(Database)),
            ("testrepo.db.tar.gz", Ok(Database)),
            ("", Err(Empty)),
            (&long, Err(TooLong)),
            ("../etc/passwd", Err(Slash)),
            ("sub/a-1-1-any.pkg.tar.zst", Err(Slash)),
            ("a-1-1-any.pkg.tar.zst\0", Err(Control)),
            ("a-1-1-any\n.pkg.tar.zst", Err(Control)),
            (".a-1-1-any.pkg.tar.zst", Err(Hidden)),
            ("..", Err(Hidden)),
            ("a..b-1-1-any.pkg.tar.zst", Err(DotDot)),
            ("a-1-1-any.pkg.tar.zst.part", Err(Partial)),
            ("a-1-1-any.pkg.tar.zst.sig.part", Err(Partial)),
            ("a-1-1-any.pkg.tar.exe", Err(Unknown)),
            ("a-1-any.pkg.tar.zst", Err(Unknown)),
            ("a--1-any.pkg.tar.zst", Err(Unknown)),
            ("passwd", Err(Unknown)),
            ("a-1-1-any.pkg.tar.zst.sig.sig", Err(Unknown)),
            (".db", Err(Hidden)),
            ("core.dbx", Err(Unknown)),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name:?}");
        }
        assert_eq!(check_servable("core.db"), Err(Unknown));
        assert!(Control.is_malformed() && !Slash.is_malformed());
    }
}
