//! [`Databases`]: the sync databases of pacman.conf's repositories, read into a
//! [`RepoIndexes`] in budgeted slices and read again when their file changes. Owns the
//! schedule of looks (every [`LOOK_EVERY`], and at once on request: SIGUSR2), the loaders in
//! progress and the last problem logged per database (each logged once, until it changes or
//! the database loads). It does not read pacman.conf (the settings give the paths) or the
//! clock: `now` comes in.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::sync_db::{DbError, DbLoader, DbWatch, FileIdentity, FileStamp, Progress, RepoIndexes};

/// How often the database files are looked at (a `stat` each).
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

/// See the module documentation.
pub struct Databases {
    /// `(repository, path)` in pacman.conf's order.
    paths: Vec<(String, PathBuf)>,
    watch: DbWatch,
    loaders: Vec<Option<DbLoader>>,
    indexes: RepoIndexes,
    /// The problem last logged per database.
    logged: Vec<Option<DbError>>,
    next_look: Instant,
    /// Counts the databases loaded since start (a new index to sweep the cache with).
    loads: u64,
}

impl Databases {
    /// The databases at `paths`, looked at first at `now`.
    pub fn new(paths: Vec<(String, PathBuf)>, now: Instant) -> Databases {
        let count = paths.len();
        Databases {
            indexes: RepoIndexes::new(paths.iter().map(|(r, _)| r.as_str())),
            paths,
            watch: DbWatch::new(count),
            loaders: (0..count).map(|_| None).collect(),
            logged: vec![None; count],
            next_look: now,
            loads: 0,
        }
    }

    /// What the databases say `file_name` must be (the first repository listing it).
    pub fn lookup(&self, file_name: &str) -> Option<FileIdentity> {
        self.indexes.lookup(file_name).map(|(_, id)| id)
    }

    /// When the next look is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.paths.is_empty()).then_some(self.next_look)
    }

    /// Looks at the files no later than `at` (pacman just downloaded a database through the
    /// relay: it renames it into place right after).
    pub fn look_soon(&mut self, at: Instant) {
        self.next_look = self.next_look.min(at);
    }

    /// Whether a database is being read (the loop then polls with a zero timeout).
    pub fn is_loading(&self) -> bool {
        self.loaders.iter().any(Option::is_some)
    }

    /// Looks at the files now if a look is due; `force` (SIGUSR2) looks anyway.
    pub fn handle_timeout(&mut self, now: Instant, force: bool) {
        if self.paths.is_empty() || (!force && now < self.next_look) {
            return;
        }
        self.next_look = now + LOOK_EVERY;
        let stamps = self.paths.iter().map(|(_, p)| FileStamp::of_path(p));
        for i in self.watch.look(stamps) {
            if let (Some(slot), Some((_, path))) = (self.loaders.get_mut(i), self.paths.get(i)) {
                *slot = Some(DbLoader::open(path));
            }
        }
    }

    /// One slice of `budget` bytes of the first database being read; true while there is more.
    pub fn load_slice(&mut self, budget: usize) -> bool {
        let Some(i) = self.loaders.iter().position(Option::is_some) else {
            return false;
        };
        let Some(loader) = self.loaders[i].as_mut() else {
            return false;
        };
        let (repo, path) = &self.paths[i];
        match loader.poll_load(budget) {
            Progress::More => {}
            Progress::Done(index) => {
                let stats = index.stats();
                info!(
                    "sync database {}: {} files indexed ({} without a hash, {} skipped)",
                    path.display(),
                    index.len(),
                    stats.without_hash,
                    stats.oversize + stats.bad_desc
                );
                self.indexes.set(repo, Ok(index));
                self.loads += 1;
                self.logged[i] = None;
                self.loaders[i] = None;
            }
            Progress::Failed(e) => {
                if self.logged[i] != Some(e) {
                    warn!(
                        "sync database {}: {e}: files of [{repo}] are shared unchecked",
                        path.display()
                    );
                    self.logged[i] = Some(e);
                }
                self.indexes.set(repo, Err(e));
                self.loaders[i] = None;
            }
        }
        self.is_loading()
    }

    /// How many databases were loaded since start: it changes when there is a new index.
    pub fn loads(&self) -> u64 {
        self.loads
    }

    /// Up to `count` (file name, identity) pairs of the repositories' indexes, in order,
    /// after `cursor` (repository position, last name); `None` as the new cursor when the
    /// walk is over.
    pub fn walk(
        &self,
        cursor: &(usize, Option<Box<str>>),
        count: usize,
        out: &mut Vec<(Box<str>, FileIdentity)>,
    ) -> Option<(usize, Option<Box<str>>)> {
        let (mut repo, mut after) = cursor.clone();
        while let Some((name, _)) = self.paths.get(repo) {
            if let Some(index) = self.indexes.index(name) {
                for (file, id) in index.iter_after(after.as_deref()) {
                    if out.len() >= count {
                        return Some((repo, after));
                    }
                    out.push((file.into(), id));
                    after = Some(file.into());
                }
            }
            repo += 1;
            after = None;
        }
        None
    }

    /// One line per repository for the status page.
    pub fn describe(&self) -> Vec<String> {
        if self.paths.is_empty() {
            return vec!["sync databases: none (no repository in pacman.conf)".to_owned()];
        }
        self.paths
            .iter()
            .enumerate()
            .map(|(i, (repo, path))| {
                let state = if let Some(index) = self.indexes.index(repo) {
                    format!("{} files indexed", index.len())
                } else if let Some(e) = self.indexes.error(repo) {
                    format!("error: {e}")
                } else {
                    "not read yet".to_owned()
                };
                let loading = if self.loaders[i].is_some() {
                    " (reading)"
                } else {
                    ""
                };
                format!("database {repo} ({}): {state}{loading}", path.display())
            })
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An uncompressed sync database with one entry.
    pub(in crate::trust) fn tar_db(name: &str, size: u64, hash: &str) -> Vec<u8> {
        let desc = format!("%FILENAME%\n{name}\n\n%CSIZE%\n{size}\n\n%SHA256SUM%\n{hash}\n\n");
        let mut header = [0u8; 512];
        let path = b"a-1-1/desc";
        header[..path.len()].copy_from_slice(path);
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", desc.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = header.to_vec();
        out.extend_from_slice(desc.as_bytes());
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    #[test]
    fn loads_reloads_and_degrades() {
        let dir = std::env::temp_dir().join(format!("flocon-dbs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let core = dir.join("core.db");
        let extra = dir.join("extra.db");
        let _ = std::fs::remove_file(&extra);
        let hash = "ab".repeat(32);
        std::fs::write(&core, tar_db("a-1-1-any.pkg.tar.zst", 5, &hash)).unwrap();
        let t0 = Instant::now();
        let mut dbs = Databases::new(
            vec![
                ("core".into(), core.clone()),
                ("extra".into(), extra.clone()),
            ],
            t0,
        );
        assert_eq!(dbs.poll_timeout(), Some(t0));
        dbs.handle_timeout(t0, false);
        assert!(dbs.is_loading());
        while dbs.load_slice(512) {}
        let id = dbs.lookup("a-1-1-any.pkg.tar.zst").unwrap();
        assert_eq!(id.size, 5);
        assert_eq!(id.sha256.unwrap().to_string(), hash);
        assert_eq!(dbs.lookup("zzz-1-1-any.pkg.tar.zst"), None);
        let lines = dbs.describe();
        assert!(lines[0].contains("1 files indexed"), "{lines:?}");
        assert!(lines[1].contains("error: cannot open"), "{lines:?}");
        // Nothing changed: no reading at the next look.
        dbs.handle_timeout(t0 + LOOK_EVERY, false);
        assert!(!dbs.is_loading());
        dbs.look_soon(t0 + LOOK_EVERY + Duration::from_millis(500));
        assert_eq!(
            dbs.poll_timeout(),
            Some(t0 + LOOK_EVERY + Duration::from_millis(500))
        );
        dbs.handle_timeout(t0 + LOOK_EVERY + Duration::from_millis(500), false);
        assert!(!dbs.is_loading());
        assert_eq!(
            dbs.poll_timeout(),
            Some(t0 + LOOK_EVERY * 2 + Duration::from_millis(500))
        );
        // pacman -Sy: a new database renamed into place, read at the next look (or SIGUSR2).
        let part = dir.join("core.db.part");
        std::fs::write(&part, tar_db("a-1-1-any.pkg.tar.zst", 6, &hash)).unwrap();
        std::fs::rename(&part, &core).unwrap();
        dbs.handle_timeout(t0 + LOOK_EVERY * 2, false);
        assert!(!dbs.is_loading(), "not due yet");
        dbs.handle_timeout(t0 + LOOK_EVERY * 2, true);
        while dbs.load_slice(512) {}
        assert_eq!(dbs.lookup("a-1-1-any.pkg.tar.zst").unwrap().size, 6);
        // Damaged: that repository degrades, the others stay.
        std::fs::write(&core, b"not a database at all, not even close").unwrap();
        dbs.handle_timeout(t0 + LOOK_EVERY * 4, false);
        while dbs.load_slice(512) {}
        assert_eq!(dbs.lookup("a-1-1-any.pkg.tar.zst"), None);
        assert!(dbs.describe()[0].contains("error"), "{:?}", dbs.describe());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
