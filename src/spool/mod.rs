//! The spool: packages this host is fetching from upstream, written to files of
//! flocon's own directory as they stream to pacman, so that the LAN can read
//! them before pacman's cache has them (pacman 7 moves a batch's files into its
//! cache only when the whole batch is done).
//!
//! [`book`] is the pure bookkeeping (what is here, how far, who follows, what
//! fits, when each file goes); this module is its thin file shell: it owns the
//! spool directory (made and emptied at start when it is flocon's own), creates
//! the spool files without a name (`O_TMPFILE`: nothing is ever left behind),
//! writes them, drops them, measures the free space (`statvfs`) and logs. It does not read
//! sockets or decide which fetch is spooled: the relay writes the bytes it
//! streams ([`Spool::begin`], [`Spool::write`], [`Spool::finish`]), the peer
//! server reads them ([`Spool::follow`]), discovery answers from
//! [`SpoolBook::holding`], and the event loop wakes the waiting readers
//! ([`SpoolBook::poll_wake`]).

pub mod book;

pub use book::{
    Follow, FollowRefusal, Holding, Limits, Readable, Refusal, RemoveReason, Removed, SpoolBook,
    SpoolCounters, SpoolId, SpoolStatus, Waiter, Writing,
};

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::discovery::wire::Expected;
use crate::rate_limit::RateLimit;

/// The relay's handle on one spool file it writes: the bytes it streams to
/// pacman go here too, at `offset`.
#[derive(Debug)]
pub struct SpoolWriter {
    writing: Writing,
    file: Rc<File>,
    offset: u64,
}

impl SpoolWriter {
    pub fn id(&self) -> SpoolId {
        self.writing.id
    }
}

/// The spool directory and its files (see the module doc).
#[derive(Debug)]
pub struct Spool {
    pub book: SpoolBook,
    /// `None`: spooling is off (no usable directory).
    dir: Option<PathBuf>,
    files: HashMap<SpoolId, Rc<File>>,
    refusals: RateLimit,
    /// When the finished files are next compared with pacman's cache.
    next_look: Option<Instant>,
}

impl Spool {
    /// A spool that spools nothing.
    pub fn off() -> Spool {
        Spool {
            book: SpoolBook::new(Limits::default()),
            dir: None,
            files: HashMap::new(),
            refusals: RateLimit::default(),
            next_look: None,
        }
    }

    /// The spool in `dir`. Spool files have no name there (`O_TMPFILE`, or
    /// unlinked at once where the file system lacks it): only flocon's own
    /// descriptors reach them, and the kernel frees their space when the last
    /// closes, even after a crash. With `ours` (flocon's own directory) it is
    /// made if missing (mode 0700) and emptied of `*.spool` files an older run
    /// left. On failure spooling is off and the returned line says why.
    pub fn open(dir: &Path, ours: bool, limits: Limits) -> (Spool, Option<String>) {
        let mut spool = Spool::off();
        spool.book = SpoolBook::new(limits);
        match prepare(dir, ours) {
            Ok(removed) => {
                info!(
                    "spool directory {} ({} MiB at most, {} left from a previous run removed)",
                    dir.display(),
                    limits.max_bytes >> 20,
                    removed
                );
                spool.dir = Some(dir.to_path_buf());
                (spool, None)
            }
            Err(e) => {
                let why = format!(
                    "spool directory {}: {e}: files in flight are not shared with the LAN",
                    dir.display()
                );
                (spool, Some(why))
            }
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Starts spooling `name`, fetched from upstream as `expected`: `None` when
    /// spooling is off or the file does not fit (logged, at most once a minute;
    /// the fetch goes on to pacman unspooled).
    pub fn begin(&mut self, name: &str, expected: Expected, now: Instant) -> Option<SpoolWriter> {
        let dir = self.dir.as_deref()?;
        let free = match free_bytes(dir) {
            Ok(free) => free,
            Err(e) => {
                if let Some(held) = self.refusals.check(now) {
                    warn!(
                        "spool: cannot measure free space in {}: {e} ({held} more held back)",
                        dir.display()
                    );
                }
                return None;
            }
        };
        let writing = match self.book.begin(name, expected, free, now) {
            Ok(w) => w,
            Err(Refusal::Busy) => return None,
            Err(why) => {
                if let Some(held) = self.refusals.check(now) {
                    info!(
                        "spool: {name} streams to pacman without being shared while in flight: {why} ({held} more held back)"
                    );
                }
                return None;
            }
        };
        match unnamed_file(dir, writing.id) {
            Ok(file) => {
                let file = Rc::new(file);
                self.files.insert(writing.id, Rc::clone(&file));
                debug!(
                    "spool: {name} -> spool file {} in {}",
                    writing.id.0,
                    dir.display()
                );
                Some(SpoolWriter {
                    writing,
                    file,
                    offset: 0,
                })
            }
            Err(e) => {
                if let Some(held) = self.refusals.check(now) {
                    warn!(
                        "spool: cannot create a file in {}: {e} ({held} more held back)",
                        dir.display()
                    );
                }
                self.book.fail(writing.id);
                None
            }
        }
    }

    /// The next body bytes of a spooled fetch (the same chunk that goes to
    /// pacman). A write error ends the spooling of this file (its followers fail
    /// over), never the transfer to pacman: `false` then, and the writer is spent.
    pub fn write(&mut self, writer: &mut SpoolWriter, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        match writer.file.write_all_at(bytes, writer.offset) {
            Ok(()) => {
                writer.offset += bytes.len() as u64;
                self.book.wrote(writer.id(), bytes.len() as u64);
                true
            }
            Err(e) => {
                warn!(
                    "spool: writing spool file {}: {e}: not shared any more",
                    writer.id().0
                );
                self.book.fail(writer.id());
                false
            }
        }
    }

    /// The fetch ended; `verified`: every byte matched the sync database.
    pub fn finish(&mut self, writer: SpoolWriter, verified: bool, now: Instant) {
        self.book.finish(writer.id(), verified, now);
    }

    /// A peer's request for `name`: its right to read it and the file to read.
    pub fn follow(&mut self, name: &str) -> Result<(Follow, Rc<File>), FollowRefusal> {
        let follow = self.book.follow(name)?;
        let file = self
            .files
            .get(&follow.id)
            .cloned()
            .ok_or(FollowRefusal::NotHere)?;
        Ok((follow, file))
    }

    /// Fails dropped fetches, removes finished files kept long enough, and
    /// drops the files of every entry that went (their space is freed when the
    /// last reader closes them): the names that left (for the cache summary).
    pub fn handle_timeout(&mut self, now: Instant, gone: &mut Vec<String>) {
        self.book.reap();
        self.book.handle_timeout(now);
        while let Some(removed) = self.book.poll_removed() {
            debug!("spool: {} removed ({:?})", removed.name, removed.why);
            // Only a file that was made was shared (and counted in the cache summary).
            if self.files.remove(&removed.id).is_some() {
                gone.push(removed.name);
            }
        }
    }

    /// Whether the finished files are due to be compared with pacman's cache now
    /// (every [`LOOK_EVERY`] while there are any).
    pub fn look_due(&mut self, now: Instant) -> bool {
        if !self.book.has_complete() {
            self.next_look = None;
            return false;
        }
        match self.next_look {
            Some(at) if now < at => false,
            Some(_) => {
                self.next_look = Some(now + LOOK_EVERY);
                true
            }
            None => {
                self.next_look = Some(now + LOOK_EVERY);
                false
            }
        }
    }

    /// When [`Spool::look_due`] or a finished file's time is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_look, self.book.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drops every spool file (their space is freed as their readers close).
    pub fn close(&mut self) {
        self.files.clear();
        self.dir = None;
    }
}

/// The spool directory: `CACHE_DIRECTORY` (systemd's `CacheDirectory=`, maybe a
/// `:`-separated list: its first entry; `true`: flocon's own), else the
/// temporary directory (shared: not emptied, and nothing is left in it since
/// spool files have no name).
pub fn default_dir(cache_directory: Option<&str>, temp: &Path) -> (PathBuf, bool) {
    if let Some(first) = cache_directory
        .and_then(|v| v.split(':').next())
        .filter(|d| d.starts_with('/'))
    {
        return (PathBuf::from(first), true);
    }
    (temp.to_path_buf(), false)
}

/// With `ours`, makes `dir` if missing (0700) and removes the `*.spool` files in
/// it; otherwise only checks that it is a directory.
fn prepare(dir: &Path, ours: bool) -> io::Result<usize> {
    if ours {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if ours { empty(dir) } else { Ok(0) }
}

/// A new spool file in `dir` with no name: `O_TMPFILE`, or where the file
/// system does not have it, a `<pid>-<id>.spool` made and unlinked at once.
fn unnamed_file(dir: &Path, id: SpoolId) -> io::Result<File> {
    let anonymous = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match anonymous {
        Ok(file) => return Ok(file),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(e) => return Err(e),
    }
    let path = dir.join(format!("{}-{}.spool", std::process::id(), id.0));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Removes the spool files (`*.spool`) in `dir`; nothing else is touched.
fn empty(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".spool")) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path with a NUL byte"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a zeroed
    // statvfs that the call fills; nothing is kept past the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// How often finished spool files are compared with pacman's cache (a large
/// cached copy is hashed in the background, so its hash may be known only later).
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync_db::Sha256;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flocon-spool-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_are_written_read_and_removed() {
        let dir = temp("rw");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("7.spool"), b"old").unwrap();
        std::fs::write(dir.join("keep.txt"), b"not ours").unwrap();
        let (mut spool, err) = Spool::open(
            &dir,
            true,
            Limits {
                free_floor: 0,
                ..Limits::default()
            },
        );
        assert_eq!(err, None);
        assert!(!dir.join("7.spool").exists(), "cleaned at start");
        assert!(dir.join("keep.txt").exists());
        let t0 = Instant::now();
        let expected = Expected {
            size: 6,
            sha256: Sha256([1; 32]),
        };
        let mut w = spool.begin("a", expected, t0).unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "the spool file has no name"
        );
        assert!(spool.write(&mut w, b"abc"));
        let (follow, file) = spool.follow("a").unwrap();
        assert_eq!(spool.book.readable(follow.id), Readable::UpTo(3));
        let mut buf = [0u8; 3];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc");
        assert!(spool.write(&mut w, b"def"));
        spool.finish(w, true, t0);
        assert_eq!(spool.book.readable(follow.id), Readable::UpTo(6));
        drop(follow);
        let mut gone = Vec::new();
        spool.handle_timeout(t0 + Duration::from_secs(7200), &mut gone);
        assert_eq!(gone, ["a"]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        spool.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_directory_is_neither_made_nor_emptied() {
        let dir = temp("shared");
        let (spool, err) = Spool::open(&dir, false, Limits::default());
        assert!(err.is_some_and(|e| e.contains("not shared")), "missing");
        assert_eq!(spool.dir(), None);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("7.spool"), b"someone's").unwrap();
        let (spool, err) = Spool::open(&dir, false, Limits::default());
        assert_eq!(err, None);
        assert_eq!(spool.dir(), Some(dir.as_path()));
        assert!(dir.join("7.spool").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dropped_writer_fails_and_its_file_goes() {
        let dir = temp("drop");
        let (mut spool, _) = Spool::open(
            &dir,
            true,
            Limits {
                free_floor: 0,
                ..Limits::default()
            },
        );
        let t0 = Instant::now();
        let expected = Expected {
            size: 6,
            sha256: Sha256([1; 32]),
        };
        let w = spool.begin("a", expected, t0).unwrap();
        drop(w);
        let mut gone = Vec::new();
        spool.handle_timeout(t0, &mut gone);
        assert_eq!(gone, ["a"]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        spool.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_floor_refuses_without_failing() {
        let dir = temp("floor");
        let (mut spool, _) = Spool::open(
            &dir,
            true,
            Limits {
                free_floor: u64::MAX / 2,
                ..Limits::default()
            },
        );
        let expected = Expected {
            size: 6,
            sha256: Sha256([1; 32]),
        };
        assert!(spool.begin("a", expected, Instant::now()).is_none());
        assert_eq!(spool.book.counters.refused, 1);
        spool.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finished_files_are_looked_at_every_so_often_and_only_while_there_are_some() {
        let dir = temp("look");
        let (mut spool, _) = Spool::open(
            &dir,
            true,
            Limits {
                free_floor: 0,
                ..Limits::default()
            },
        );
        let t0 = Instant::now();
        assert!(!spool.look_due(t0));
        assert_eq!(spool.poll_timeout(), None);
        let expected = Expected {
            size: 1,
            sha256: Sha256([1; 32]),
        };
        let mut w = spool.begin("a", expected, t0).unwrap();
        assert!(spool.write(&mut w, b"x"));
        assert!(!spool.look_due(t0), "nothing finished yet");
        spool.finish(w, true, t0);
        assert!(!spool.look_due(t0), "the first look is one period later");
        assert_eq!(spool.poll_timeout(), Some(t0 + LOOK_EVERY));
        assert!(!spool.look_due(t0 + LOOK_EVERY / 2));
        assert!(spool.look_due(t0 + LOOK_EVERY));
        spool.book.in_cache("a", expected);
        let mut gone = Vec::new();
        spool.handle_timeout(t0 + LOOK_EVERY, &mut gone);
        assert_eq!(gone, ["a"]);
        assert!(!spool.look_due(t0 + LOOK_EVERY * 3));
        assert_eq!(spool.poll_timeout(), None);
        spool.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_dirs() {
        let tmp = Path::new("/tmp");
        assert_eq!(
            default_dir(Some("/var/cache/flocon"), tmp),
            (PathBuf::from("/var/cache/flocon"), true)
        );
        assert_eq!(
            default_dir(Some("/var/cache/flocon:/var/cache/x"), tmp).0,
            PathBuf::from("/var/cache/flocon")
        );
        assert_eq!(
            default_dir(Some("relative"), tmp),
            (tmp.to_path_buf(), false)
        );
        assert_eq!(default_dir(None, tmp), (tmp.to_path_buf(), false));
    }
}
