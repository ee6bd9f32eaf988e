//! Trust in file contents: what the sync databases say each package file must be, the
//! SHA-256 of the cached files, and the rules that keep a bad copy from ever being offered.
//!
//! Owns the [`Databases`] (pacman.conf's sync databases, read in slices and read again when
//! they change), the [`Digests`] of the cached files (each version hashed once, in slices),
//! the list of cached files found unlike their database (logged once each, on the status
//! page), and the two questions the rest of the daemon asks: may this cached file be served
//! ([`Trust::serve_verdict`]), and may this host say HAVE ([`Trust::answer`]). The rules
//! themselves are pure (`rules`). It does not judge bytes streamed from peers (that is
//! `relay::verify`) or ban anyone (`relay::policy`).
//!
//! The loop calls [`Trust::work`] each pass with a small time budget while
//! [`Trust::is_busy`], and [`Trust::handle_timeout`] when [`Trust::poll_timeout`] is due.
//!
//! After each database load the cache is swept: every file the databases list (the current
//! versions, the ones peers ask for) that the cache holds with the listed size is queued for
//! hashing, [`SWEEP_STEP`] names at a time, so that a large package is offered at the first
//! question rather than after it was hashed on demand. Old versions are never hashed unless
//! asked for.

pub mod databases;
pub mod digests;
pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::warn;

pub use databases::{Databases, LOOK_EVERY};
pub use digests::{Digests, HASH_NOW_LIMIT, HASH_SLICE};
pub use rules::{Answer, Verdict};

use crate::cache::Cache;
use crate::discovery::wire::Expected;
use crate::sync_db::{FileIdentity, FileStamp, LOAD_BUDGET, Sha256};

/// Cached files found bad that are listed at most.
pub const MAX_BAD_LISTED: usize = 256;
/// The longest a [`Trust::work`] call goes on (the loop's slice of time for it).
pub const WORK_SLICE: Duration = Duration::from_millis(1);
/// Database entries looked up in the cache (a `stat` per cache directory) per sweep step.
pub const SWEEP_STEP: usize = 32;

/// A cached file unlike its sync database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    pub path: PathBuf,
    pub stamp: FileStamp,
    pub expected: FileIdentity,
}

/// See the module documentation.
pub struct Trust {
    pub databases: Databases,
    pub digests: Digests,
    /// By file name.
    bad: BTreeMap<String, BadFile>,
    /// The sweep of the cache in progress: where it is in the databases' indexes.
    sweep: Option<(usize, Option<Box<str>>)>,
    /// [`Databases::loads`] when the last sweep started.
    swept_loads: u64,
}

impl Trust {
    pub fn new(sync_databases: Vec<(String, PathBuf)>, now: Instant) -> Trust {
        Trust {
            databases: Databases::new(sync_databases, now),
            digests: Digests::default(),
            bad: BTreeMap::new(),
            sweep: None,
            swept_loads: 0,
        }
    }

    /// What the sync databases say `name` must be.
    pub fn identity(&self, name: &str) -> Option<FileIdentity> {
        self.databases.lookup(name)
    }

    /// What a question about `name` should carry: its size and SHA-256 when known.
    pub fn expected(&self, name: &str) -> Option<Expected> {
        let id = self.identity(name)?;
        Some(Expected {
            size: id.size,
            sha256: id.sha256?,
        })
    }

    /// Whether the cached file `name` (this version of it, at `path`) may be served: small
    /// files are hashed at once, larger ones queued (not served until hashed). A bad file is
    /// logged (once per version) and listed.
    pub fn serve_verdict(&mut self, name: &str, path: &Path, stamp: FileStamp) -> Verdict {
        let own = self.identity(name);
        let needs_hash = own.is_some_and(|o| o.sha256.is_some() && o.size == stamp.size);
        let digest = if needs_hash {
            self.digest(name, path, stamp)
        } else {
            self.digests.get(&stamp)
        };
        let verdict = rules::judge_cached(own, stamp.size, digest);
        match (verdict, own) {
            (Verdict::Bad, Some(own)) => self.note_bad(name, path, stamp, own),
            (Verdict::Good, _) => {
                // Replaced by a good copy since.
                self.bad.remove(name);
            }
            _ => {}
        }
        verdict
    }

    /// Whether to say HAVE to a question about `name` that expects `wanted`.
    pub fn answer(&mut self, cache: &Cache, name: &str, wanted: Option<Expected>) -> bool {
        let Some((path, stamp)) = cache.find(name) else {
            return false;
        };
        let serve = self.serve_verdict(name, &path, stamp);
        let digest = match wanted {
            Some(w) if w.size == stamp.size && serve != Verdict::Bad => {
                self.digest(name, &path, stamp)
            }
            _ => self.digests.get(&stamp),
        };
        rules::answer(serve, wanted, stamp.size, digest) == Answer::Have
    }

    /// Whether there is reading or hashing to do (poll with a zero timeout then).
    pub fn is_busy(&self) -> bool {
        self.databases.is_loading()
            || self.digests.is_busy()
            || self.sweep.is_some()
            || self.databases.loads() != self.swept_loads
    }

    /// When the next look at the databases is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.databases.poll_timeout()
    }

    /// Looks at the database files when due (or now, on SIGUSR2: `force`).
    pub fn handle_timeout(&mut self, now: Instant, force: bool) {
        self.databases.handle_timeout(now, force);
    }

    /// A new loop pass: small files may be hashed at once again, up to
    /// [`digests::HASH_NOW_PER_TURN`] bytes.
    pub fn new_turn(&mut self) {
        self.digests.new_turn();
    }

    /// Reads databases, then hashes queued files, in slices, for about [`WORK_SLICE`] of
    /// wall-clock time (read here: this is the shell's part).
    pub fn work(&mut self, cache: &Cache) {
        let start = Instant::now();
        while start.elapsed() < WORK_SLICE {
            if self.databases.is_loading() {
                self.databases.load_slice(LOAD_BUDGET);
                continue;
            }
            if self.databases.loads() != self.swept_loads {
                // A new index: sweep the cache again from the start.
                self.swept_loads = self.databases.loads();
                self.sweep = Some((0, None));
            }
            if self.sweep.is_some() && !self.digests.is_full() {
                self.sweep_step(cache);
                continue;
            }
            if !self.digests.is_busy() {
                return;
            }
            if let Some(hashed) = self.digests.poll_hash(HASH_SLICE) {
                let own = self.identity(&hashed.name);
                let verdict = rules::judge_cached(own, hashed.stamp.size, Some(hashed.digest));
                if let (Verdict::Bad, Some(own)) = (verdict, own) {
                    self.note_bad(&hashed.name, &hashed.path, hashed.stamp, own);
                }
            }
        }
    }

    /// The status page's lines: each database, then the bad cached files.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = self.databases.describe();
        lines.push(format!(
            "cached files unlike their sync database: {}",
            self.bad.len()
        ));
        for bad in self.bad.values() {
            lines.push(format!(
                "  bad copy {} ({} bytes), expected {} bytes, sha256 {}",
                bad.path.display(),
                bad.stamp.size,
                bad.expected.size,
                bad.expected
                    .sha256
                    .map_or("unknown".to_owned(), |h| h.to_string()),
            ));
        }
        lines
    }

    /// The bad cached files, by name.
    pub fn bad_files(&self) -> impl Iterator<Item = (&str, &BadFile)> {
        self.bad.iter().map(|(n, b)| (n.as_str(), b))
    }

    /// Queues the cached files of the next [`SWEEP_STEP`] database entries for hashing.
    fn sweep_step(&mut self, cache: &Cache) {
        let Some(cursor) = self.sweep.take() else {
            return;
        };
        let mut entries = Vec::with_capacity(SWEEP_STEP);
        self.sweep = self.databases.walk(&cursor, SWEEP_STEP, &mut entries);
        for (name, id) in entries {
            if id.sha256.is_none() {
                continue;
            }
            if let Some((path, stamp)) = cache.find(&name) {
                if stamp.size == id.size && self.digests.get(&stamp).is_none() {
                    self.digests.queue(&name, &path, stamp);
                }
            }
        }
    }

    fn digest(&mut self, name: &str, path: &Path, stamp: FileStamp) -> Option<Sha256> {
        if let Some(d) = self.digests.get(&stamp) {
            return Some(d);
        }
        let digest = self.digests.hash_now(path, stamp);
        if digest.is_none() {
            self.digests.queue(name, path, stamp);
        }
        digest
    }

    fn note_bad(&mut self, name: &str, path: &Path, stamp: FileStamp, expected: FileIdentity) {
        if self.bad.get(name).is_some_and(|b| b.stamp == stamp) {
            return;
        }
        if !self.bad.contains_key(name) && self.bad.len() >= MAX_BAD_LISTED {
            return;
        }
        warn!(
            "cached file {} does not match its sync database (expected {} bytes, sha256 {}, \
             found {} bytes): never served",
            path.display(),
            expected.size,
            expected
                .sha256
                .map_or("unknown".to_owned(), |h| h.to_string()),
            stamp.size
        );
        self.bad.insert(
            name.to_owned(),
            BadFile {
                path: path.to_owned(),
                stamp,
                expected,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn a_loaded_database_sweeps_the_cache_and_bad_copies_are_never_served() {
        let dir = std::env::temp_dir().join(format!("flocon-trust-{}", std::process::id()));
        let cache_dir = dir.join("cache");
        std::fs::create_dir_all(&cache_dir).unwrap();
        let good: Vec<u8> = (0..HASH_NOW_LIMIT as usize * 2).map(|i| i as u8).collect();
        let hash = Sha256(sha2::Sha256::digest(&good).into());
        let name = "big-1-1-any.pkg.tar.zst";
        std::fs::write(cache_dir.join(name), &good).unwrap();
        let db = dir.join("core.db");
        let entry = databases::tests::tar_db(name, good.len() as u64, &hash.to_string());
        std::fs::write(&db, entry).unwrap();
        let (cache, _) = Cache::new(std::slice::from_ref(&cache_dir));
        let mut trust = Trust::new(vec![("core".into(), db)], Instant::now());
        trust.handle_timeout(Instant::now(), false);
        let mut passes = 0;
        while trust.is_busy() {
            trust.new_turn();
            trust.work(&cache);
            passes += 1;
            assert!(passes < 10_000, "never done");
        }
        let (path, stamp) = cache.find(name).unwrap();
        assert_eq!(trust.digests.get(&stamp), Some(hash), "hashed by the sweep");
        assert_eq!(trust.serve_verdict(name, &path, stamp), Verdict::Good);
        let wanted = trust.expected(name);
        assert!(trust.answer(&cache, name, wanted));
        assert_eq!(trust.expected("nope-1-1-any.pkg.tar.zst"), None);

        // The same name, same size, other bytes: never served nor offered, listed once.
        let mut bad = good.clone();
        bad[1000] ^= 1;
        std::fs::write(cache_dir.join(name), &bad).unwrap();
        let (path, stamp) = cache.find(name).unwrap();
        // Large: not hashed at once, so not served until it is.
        assert_eq!(trust.serve_verdict(name, &path, stamp), Verdict::NotYet);
        assert!(!trust.answer(&cache, name, wanted));
        while trust.is_busy() {
            trust.new_turn();
            trust.work(&cache);
        }
        assert_eq!(trust.serve_verdict(name, &path, stamp), Verdict::Bad);
        assert!(!trust.answer(&cache, name, wanted));
        assert!(!trust.answer(&cache, name, None));
        assert_eq!(trust.bad_files().count(), 1);
        let lines = trust.describe();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("bad copy") && l.contains(&hash.to_string())),
            "{lines:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
