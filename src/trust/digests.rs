//! [`Digests`]: the SHA-256 of the cached files, each hashed once and remembered by the
//! (device, inode, size, mtime) of the version hashed ([`FileStamp`]), so a file replaced or
//! rewritten is hashed again. Owns the remembered digests (bounded), a bounded queue of files
//! to hash, and the one file being hashed, read in slices of a byte budget per call so that
//! the loop never waits for a large package. Small files may be hashed at once
//! ([`HASH_NOW_LIMIT`]). It does not decide what a digest means (see `rules`) and never reads
//! the clock.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::sync_db::{FileStamp, Sha256};

/// Bytes hashed per [`Digests::poll_hash`] slice: 36 us on the x86_64 development machine
/// (SHA-NI, 1.8 GB/s: `cargo run --release --example sha256_speed`), several times more on a
/// Raspberry Pi without SHA extensions.
pub const HASH_SLICE: usize = 64 * 1024;
/// Files up to this size are hashed at once when a question or a request needs them; larger
/// ones are queued.
pub const HASH_NOW_LIMIT: u64 = 256 * 1024;
/// Bytes hashed at once ([`Digests::hash_now`]) per loop pass, all questions and requests
/// together: a burst of questions about small files is not a stall. Past it, files are queued.
pub const HASH_NOW_PER_TURN: u64 = 512 * 1024;
/// Digests remembered at most (the oldest is forgotten first).
pub const MAX_KNOWN: usize = 32 * 1024;
/// Files waiting to be hashed at most; more are dropped (asked again later).
pub const MAX_QUEUED: usize = 512;

/// One file hashed to its end.
#[derive(Debug)]
pub struct Hashed {
    pub name: String,
    pub path: PathBuf,
    pub stamp: FileStamp,
    pub digest: Sha256,
}

struct Hashing {
    name: String,
    path: PathBuf,
    stamp: FileStamp,
    file: File,
    hasher: sha2::Sha256,
    done: u64,
}

/// See the module documentation.
pub struct Digests {
    known: HashMap<FileStamp, Sha256>,
    order: VecDeque<FileStamp>,
    queue: VecDeque<(String, PathBuf, FileStamp)>,
    current: Option<Hashing>,
    buf: Box<[u8]>,
    /// What [`Digests::hash_now`] may still hash in this loop pass.
    now_left: u64,
}

impl Default for Digests {
    fn default() -> Digests {
        Digests {
            known: HashMap::new(),
            order: VecDeque::new(),
            queue: VecDeque::new(),
            current: None,
            buf: vec![0; HASH_SLICE].into_boxed_slice(),
            now_left: HASH_NOW_PER_TURN,
        }
    }
}

/// Opens a cached file the way the peer server does: never blocking (a FIFO), a regular
/// file only, and the version `stamp` names.
fn open_version(path: &Path, stamp: FileStamp) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || FileStamp::of(&meta) != stamp {
        return Err(io::Error::from(io::ErrorKind::InvalidData));
    }
    Ok(file)
}

impl Digests {
    /// The digest of this version of a file, if it was hashed.
    pub fn get(&self, stamp: &FileStamp) -> Option<Sha256> {
        self.known.get(stamp).copied()
    }

    /// A new loop pass: [`Digests::hash_now`] may hash [`HASH_NOW_PER_TURN`] bytes again.
    pub fn new_turn(&mut self) {
        self.now_left = HASH_NOW_PER_TURN;
    }

    /// Hashes a small file (at most [`HASH_NOW_LIMIT`] bytes) at once, within this pass's
    /// allowance; `None` for a larger one or past the allowance (queue it), or when it cannot
    /// be read or changed.
    pub fn hash_now(&mut self, path: &Path, stamp: FileStamp) -> Option<Sha256> {
        if stamp.size > HASH_NOW_LIMIT || stamp.size > self.now_left {
            return None;
        }
        self.now_left -= stamp.size;
        let mut file = open_version(path, stamp).ok()?;
        let mut hasher = sha2::Sha256::new();
        let mut done = 0u64;
        loop {
            match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&self.buf[..n]);
                    done += n as u64;
                    if done > stamp.size {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        if done != stamp.size {
            return None;
        }
        let digest = Sha256(hasher.finalize().into());
        self.remember(stamp, digest);
        Some(digest)
    }

    /// Queues this version of `name` for hashing (nothing if it is known, queued or being
    /// hashed, or the queue is full).
    pub fn queue(&mut self, name: &str, path: &Path, stamp: FileStamp) {
        if self.known.contains_key(&stamp)
            || self.current.as_ref().is_some_and(|c| c.stamp == stamp)
            || self.queue.iter().any(|(_, _, s)| *s == stamp)
            || self.queue.len() >= MAX_QUEUED
        {
            return;
        }
        self.queue
            .push_back((name.to_owned(), path.to_owned(), stamp));
    }

    /// Whether the queue is full (a sweep waits then).
    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_QUEUED
    }

    /// Whether there is hashing to do.
    pub fn is_busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// Hashes up to `budget` bytes (at least one read) of the queued files. `Some` when a file
    /// was hashed to its end by this call; a file that cannot be read or changes while it is
    /// hashed is dropped.
    pub fn poll_hash(&mut self, budget: usize) -> Option<Hashed> {
        let mut spent = 0;
        loop {
            if self.current.is_none() {
                let (name, path, stamp) = self.queue.pop_front()?;
                if self.known.contains_key(&stamp) {
                    continue;
                }
                let Ok(file) = open_version(&path, stamp) else {
                    continue;
                };
                self.current = Some(Hashing {
                    name,
                    path,
                    stamp,
                    file,
                    hasher: sha2::Sha256::new(),
                    done: 0,
                });
            }
            let current = self.current.as_mut()?;
            let want = self.buf.len().min(budget.saturating_sub(spent).max(1));
            match current.file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    let done = self.current.take()?;
                    let unchanged =
                        done.file.metadata().ok().map(|m| FileStamp::of(&m)) == Some(done.stamp);
                    if done.done != done.stamp.size || !unchanged {
                        continue;
                    }
                    let digest = Sha256(done.hasher.finalize().into());
                    self.remember(done.stamp, digest);
                    return Some(Hashed {
                        name: done.name,
                        path: done.path,
                        stamp: done.stamp,
                        digest,
                    });
                }
                Ok(n) => {
                    current.hasher.update(&self.buf[..n]);
                    current.done += n as u64;
                    spent += n;
                    if current.done > current.stamp.size {
                        self.current = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => spent += 1,
                Err(_) => self.current = None,
            }
            if spent >= budget {
                return None;
            }
        }
    }

    fn remember(&mut self, stamp: FileStamp, digest: Sha256) {
        if self.known.insert(stamp, digest).is_none() {
            self.order.push_back(stamp);
            while self.order.len() > MAX_KNOWN {
                if let Some(old) = self.order.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(data).into())
    }

    #[test]
    fn known_answer() {
        // FIPS 180-2, "abc".
        assert_eq!(
            sha(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn small_at_once_large_in_slices_each_version_once() {
        let dir = std::env::temp_dir().join(format!("flocon-digests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("s-1-1-any.pkg.tar.zst");
        std::fs::write(&small, b"small").unwrap();
        let stamp = FileStamp::of_path(&small).unwrap();
        let mut d = Digests::default();
        assert_eq!(d.get(&stamp), None);
        assert_eq!(d.hash_now(&small, stamp), Some(sha(b"small")));
        assert_eq!(d.get(&stamp), Some(sha(b"small")));

        let big_data: Vec<u8> = (0..HASH_NOW_LIMIT as usize + 100_000)
            .map(|i| (i * 7) as u8)
            .collect();
        let big = dir.join("b-1-1-any.pkg.tar.zst");
        std::fs::write(&big, &big_data).unwrap();
        let big_stamp = FileStamp::of_path(&big).unwrap();
        assert_eq!(d.hash_now(&big, big_stamp), None, "too large to do at once");
        d.queue("b-1-1-any.pkg.tar.zst", &big, big_stamp);
        d.queue("b-1-1-any.pkg.tar.zst", &big, big_stamp);
        assert!(d.is_busy());
        let mut calls = 0;
        let hashed = loop {
            calls += 1;
            if let Some(h) = d.poll_hash(HASH_SLICE) {
                break h;
            }
        };
        assert_eq!(calls, big_data.len().div_ceil(HASH_SLICE));
        assert_eq!(hashed.digest, sha(&big_data));
        assert_eq!(hashed.name, "b-1-1-any.pkg.tar.zst");
        assert!(!d.is_busy());
        assert!(d.poll_hash(HASH_SLICE).is_none());
        // Known: not queued again.
        d.queue("b-1-1-any.pkg.tar.zst", &big, big_stamp);
        assert!(!d.is_busy());

        // The allowance of a loop pass.
        d.new_turn();
        let mut hashed_now = 0;
        for i in 0..4 {
            let name = dir.join(format!("m{i}-1-1-any.pkg.tar.zst"));
            std::fs::write(&name, vec![i as u8; 200 * 1024]).unwrap();
            if d.hash_now(&name, FileStamp::of_path(&name).unwrap())
                .is_some()
            {
                hashed_now += 1;
            }
        }
        assert_eq!(hashed_now, 2, "{HASH_NOW_PER_TURN} bytes a pass");
        d.new_turn();

        // A stale stamp (the file was rewritten): not hashed under the old one.
        std::fs::write(&small, b"other!").unwrap();
        assert_eq!(d.hash_now(&small, stamp), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
