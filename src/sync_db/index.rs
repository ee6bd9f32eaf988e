//! The index of one sync database ([`SyncIndex`]: package file name -> [`FileIdentity`]) and
//! of all of them in pacman.conf's order ([`RepoIndexes`]). Owns the per-database caps
//! (entries, name bytes) and the counts of what was left out. It does not read files or parse
//! anything: the loader inserts parsed `desc` entries.

use std::collections::BTreeMap;

use super::{DbError, DescEntry, MAX_ENTRIES, MAX_NAME_BYTES, Sha256};

/// What a sync database says a package file must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// `%CSIZE%`.
    pub size: u64,
    /// `%SHA256SUM%`, `None` when the entry has none.
    pub sha256: Option<Sha256>,
}

/// What a load left out or noticed, for one log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Entries kept.
    pub entries: usize,
    /// Kept entries without `%SHA256SUM%`.
    pub without_hash: usize,
    /// `desc` files over [`super::MAX_DESC_BYTES`], skipped.
    pub oversize: usize,
    /// `desc` files that gave no entry ([`super::DescError`]), skipped.
    pub bad_desc: usize,
    /// Entries whose file name an earlier entry already had (the first is kept).
    pub duplicates: usize,
}

/// One database's index. Lookups take a plain file name; a `.sig` name is never in it.
#[derive(Clone, Debug, Default)]
pub struct SyncIndex {
    /// A B-tree rather than a hash map: it never rehashes everything at once, so no
    /// insertion during a budgeted load costs more than a few microseconds (a `HashMap`
    /// growing past 14,000 entries took over 1 ms in one call).
    files: BTreeMap<Box<str>, FileIdentity>,
    name_bytes: usize,
    stats: LoadStats,
}

impl SyncIndex {
    pub fn new() -> SyncIndex {
        SyncIndex::default()
    }

    /// What the database says `file_name` must be; `None` for names it does not list,
    /// signatures (`*.sig`: databases never list them) included.
    pub fn lookup(&self, file_name: &str) -> Option<FileIdentity> {
        self.files.get(file_name).copied()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// Every (file name, identity), in file name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FileIdentity)> {
        self.files.iter().map(|(name, id)| (&**name, *id))
    }

    /// The (file name, identity) pairs after `after` (all of them for `None`), in file name
    /// order: a walk that stops and resumes.
    pub fn iter_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a str, FileIdentity)> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        self.files
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(name, id)| (&**name, *id))
    }

    /// Adds a parsed entry (its file name was checked by `parse_desc`). A name already present
    /// keeps its first identity and counts a duplicate. Fails when a cap is passed.
    pub fn insert(&mut self, entry: &DescEntry<'_>) -> Result<(), DbError> {
        if self.files.contains_key(entry.file_name) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if self.files.len() >= MAX_ENTRIES {
            return Err(DbError::TooManyEntries);
        }
        let name_bytes = self.name_bytes + entry.file_name.len();
        if name_bytes > MAX_NAME_BYTES {
            return Err(DbError::TooManyNameBytes);
        }
        self.name_bytes = name_bytes;
        self.files.insert(
            entry.file_name.into(),
            FileIdentity {
                size: entry.size,
                sha256: entry.sha256,
            },
        );
        self.stats.entries += 1;
        if entry.sha256.is_none() {
            self.stats.without_hash += 1;
        }
        Ok(())
    }

    pub(super) fn count_oversize(&mut self) {
        self.stats.oversize += 1;
    }

    pub(super) fn count_bad_desc(&mut self) {
        self.stats.bad_desc += 1;
    }
}

/// The indexes of every repository, in pacman.conf's order, each loaded or failed on its own:
/// a database that cannot be read leaves the others as they are.
#[derive(Clone, Debug, Default)]
pub struct RepoIndexes {
    repos: Vec<(String, Option<Result<SyncIndex, DbError>>)>,
}

impl RepoIndexes {
    /// One slot per repository, none loaded yet.
    pub fn new<'a>(repos: impl IntoIterator<Item = &'a str>) -> RepoIndexes {
        RepoIndexes {
            repos: repos.into_iter().map(|r| (r.to_owned(), None)).collect(),
        }
    }

    /// Replaces repository `repo`'s index (or error) with a new load's result. Returns false
    /// for an unknown repository.
    pub fn set(&mut self, repo: &str, result: Result<SyncIndex, DbError>) -> bool {
        match self.repos.iter_mut().find(|(name, _)| name == repo) {
            Some((_, slot)) => {
                *slot = Some(result);
                true
            }
            None => false,
        }
    }

    /// The first repository (pacman.conf's order, as pacman itself picks) whose database
    /// lists `file_name`, with what it says.
    pub fn lookup(&self, file_name: &str) -> Option<(&str, FileIdentity)> {
        self.repos.iter().find_map(|(repo, slot)| match slot {
            Some(Ok(index)) => index.lookup(file_name).map(|id| (repo.as_str(), id)),
            _ => None,
        })
    }

    /// The repository's index; `None` if it is not loaded or failed.
    pub fn index(&self, repo: &str) -> Option<&SyncIndex> {
        self.repos.iter().find_map(|(name, slot)| match slot {
            Some(Ok(index)) if name == repo => Some(index),
            _ => None,
        })
    }

    /// The repository's last load error, if its last load failed.
    pub fn error(&self, repo: &str) -> Option<DbError> {
        self.repos.iter().find_map(|(name, slot)| match slot {
            Some(Err(e)) if name == repo => Some(*e),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file_name: &str, size: u64, hash: Option<u8>) -> DescEntry<'_> {
        DescEntry {
            file_name,
            size,
            sha256: hash.map(|b| Sha256([b; 32])),
        }
    }

    #[test]
    fn lookup_and_duplicates() {
        let mut index = SyncIndex::new();
        index
            .insert(&entry("a-1-1-any.pkg.tar.zst", 10, Some(1)))
            .unwrap();
        index
            .insert(&entry("b-1-1-any.pkg.tar.zst", 20, None))
            .unwrap();
        index
            .insert(&entry("a-1-1-any.pkg.tar.zst", 30, Some(3)))
            .unwrap();
        assert_eq!(index.len(), 2);
        let a = index.lookup("a-1-1-any.pkg.tar.zst").unwrap();
        assert_eq!((a.size, a.sha256), (10, Some(Sha256([1; 32]))));
        assert_eq!(index.lookup("b-1-1-any.pkg.tar.zst").unwrap().sha256, None);
        assert_eq!(index.lookup("a-1-1-any.pkg.tar.zst.sig"), None);
        assert_eq!(index.lookup("c-1-1-any.pkg.tar.zst"), None);
        let after: Vec<&str> = index
            .iter_after(Some("a-1-1-any.pkg.tar.zst"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(after, ["b-1-1-any.pkg.tar.zst"]);
        assert_eq!(index.iter_after(None).count(), 2);
        assert_eq!(index.iter_after(Some("zzz")).count(), 0);
        let stats = index.stats();
        assert_eq!(
            (stats.entries, stats.without_hash, stats.duplicates),
            (2, 1, 1)
        );
    }

    #[test]
    fn entry_cap() {
        let mut index = SyncIndex::new();
        let names: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("p{i}-1-1-any.pkg.tar.zst"))
            .collect();
        for name in &names[..MAX_ENTRIES] {
            index.insert(&entry(name, 1, None)).unwrap();
        }
        assert_eq!(
            index.insert(&entry(&names[MAX_ENTRIES], 1, None)),
            Err(DbError::TooManyEntries)
        );
        // A duplicate is still only counted.
        assert_eq!(index.insert(&entry(&names[0], 1, None)), Ok(()));
    }

    #[test]
    fn name_byte_cap() {
        let mut index = SyncIndex::new();
        let long = "x".repeat(230);
        let per_name = format!("{long}-{}-1-any.pkg.tar.zst", 0).len();
        let fits = MAX_NAME_BYTES / per_name;
        let mut result = Ok(());
        for i in 0..=fits {
            // Names grow by a digit now and then; stop at the first refusal.
            result = index.insert(&entry(&format!("{long}-{i}-1-any.pkg.tar.zst"), 1, None));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(DbError::TooManyNameBytes));
        assert!(index.name_bytes <= MAX_NAME_BYTES);
    }

    #[test]
    fn repositories_in_order_and_independent() {
        let mut first = SyncIndex::new();
        first
            .insert(&entry("a-1-1-any.pkg.tar.zst", 1, Some(1)))
            .unwrap();
        let mut second = SyncIndex::new();
        second
            .insert(&entry("a-1-1-any.pkg.tar.zst", 2, Some(2)))
            .unwrap();
        second
            .insert(&entry("b-1-1-any.pkg.tar.zst", 3, Some(3)))
            .unwrap();
        let mut repos = RepoIndexes::new(["core", "extra", "broken"]);
        assert_eq!(repos.lookup("a-1-1-any.pkg.tar.zst"), None);
        assert!(repos.set("extra", Ok(second)));
        assert!(repos.set("core", Ok(first)));
        assert!(repos.set("broken", Err(DbError::Truncated)));
        assert!(!repos.set("nope", Err(DbError::Truncated)));
        let (repo, id) = repos.lookup("a-1-1-any.pkg.tar.zst").unwrap();
        assert_eq!((repo, id.size), ("core", 1));
        assert_eq!(repos.lookup("b-1-1-any.pkg.tar.zst").unwrap().0, "extra");
        assert_eq!(repos.lookup("zzz-1-1-any.pkg.tar.zst"), None);
        assert_eq!(repos.error("broken"), Some(DbError::Truncated));
        assert_eq!(repos.error("core"), None);
        assert_eq!(repos.index("extra").map(SyncIndex::len), Some(2));
        assert!(repos.index("broken").is_none());
    }
}
