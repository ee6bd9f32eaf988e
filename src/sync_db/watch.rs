//! [`DbWatch`]: which sync database files changed since the last look. `pacman -Sy` writes
//! a new database and renames it into place, so a new (device, inode) pair, size or mtime
//! means "load it again". Pure: the caller `stat`s the files ([`FileStamp::of_path`]) and
//! passes what it saw; the watch remembers it and answers with the indexes that changed. It
//! does not read databases or decide when to look.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_seconds: i64,
    pub mtime_nanoseconds: i64,
}

impl FileStamp {
    pub fn of(metadata: &Metadata) -> FileStamp {
        FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            mtime_seconds: metadata.mtime(),
            mtime_nanoseconds: metadata.mtime_nsec(),
        }
    }

    /// `stat` of `path` (following symlinks, as pacman reads it); the error's kind if there
    /// is no file to see.
    pub fn of_path(path: &Path) -> Result<FileStamp, io::ErrorKind> {
        std::fs::metadata(path)
            .map(|m| FileStamp::of(&m))
            .map_err(|e| e.kind())
    }
}

/// What a look saw for one database.
type Seen = Option<Result<FileStamp, io::ErrorKind>>;

/// The last stamp seen of each database, by position (pacman.conf's repository order).
#[derive(Clone, Debug, Default)]
pub struct DbWatch {
    seen: Vec<Seen>,
}

impl DbWatch {
    /// A watch over `count` databases, none seen yet (the first look reports all of them).
    pub fn new(count: usize) -> DbWatch {
        DbWatch {
            seen: vec![None; count],
        }
    }

    /// Takes one stamp (or `stat` error) per database, in order, and returns the positions
    /// whose stamp differs from the last look: new, replaced, rewritten, gone, or back. A
    /// database that stays missing with the same error is not reported again. Extra items
    /// past `count` are ignored; missing ones leave their databases as they were.
    pub fn look(
        &mut self,
        stamps: impl IntoIterator<Item = Result<FileStamp, io::ErrorKind>>,
    ) -> Vec<usize> {
        let mut changed = Vec::new();
        for (i, (seen, now)) in self.seen.iter_mut().zip(stamps).enumerate() {
            if *seen != Some(now) {
                *seen = Some(now);
                changed.push(i);
            }
        }
        changed
    }

    /// Forgets database `i`, so the next look reports it (after a failed load, to retry
    /// once the file changes is the default; call this to retry at the next look anyway).
    pub fn forget(&mut self, i: usize) {
        if let Some(seen) = self.seen.get_mut(i) {
            *seen = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(inode: u64, size: u64, mtime: i64) -> Result<FileStamp, io::ErrorKind> {
        Ok(FileStamp {
            device: 1,
            inode,
            size,
            mtime_seconds: mtime,
            mtime_nanoseconds: 0,
        })
    }

    #[test]
    fn reports_what_changed() {
        let mut watch = DbWatch::new(3);
        let missing = Err(io::ErrorKind::NotFound);
        assert_eq!(
            watch.look([stamp(1, 10, 100), stamp(2, 20, 100), missing]),
            vec![0, 1, 2]
        );
        assert_eq!(
            watch.look([stamp(1, 10, 100), stamp(2, 20, 100), missing]),
            Vec::<usize>::new()
        );
        // Renamed into place (new inode), rewritten in place (size, mtime), appeared.
        assert_eq!(
            watch.look([stamp(5, 10, 100), stamp(2, 20, 100), stamp(3, 1, 1)]),
            vec![0, 2]
        );
        assert_eq!(
            watch.look([stamp(5, 10, 101), stamp(2, 21, 100), stamp(3, 1, 1)]),
            vec![0, 1]
        );
        // Gone.
        assert_eq!(
            watch.look([stamp(5, 10, 101), missing, stamp(3, 1, 1)]),
            vec![1]
        );
        // Fewer items: the rest stay as they were.
        assert_eq!(watch.look([stamp(5, 10, 101)]), Vec::<usize>::new());
        watch.forget(2);
        watch.forget(99);
        assert_eq!(
            watch.look([stamp(5, 10, 101), missing, stamp(3, 1, 1)]),
            vec![2]
        );
    }

    #[test]
    fn real_files() {
        let dir = std::env::temp_dir().join(format!("flocon-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("core.db");
        let _ = std::fs::remove_file(&db);
        let mut watch = DbWatch::new(1);
        assert_eq!(watch.look([FileStamp::of_path(&db)]), vec![0]);
        assert_eq!(FileStamp::of_path(&db), Err(io::ErrorKind::NotFound));
        std::fs::write(&db, b"one").unwrap();
        assert_eq!(watch.look([FileStamp::of_path(&db)]), vec![0]);
        assert!(watch.look([FileStamp::of_path(&db)]).is_empty());
        // pacman -Sy: a new file renamed over the old one, same size.
        let part = dir.join("core.db.part");
        std::fs::write(&part, b"two").unwrap();
        std::fs::rename(&part, &db).unwrap();
        assert_eq!(watch.look([FileStamp::of_path(&db)]), vec![0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
