//! The sync database index: what pacman's sync databases (`<DBPath>/sync/<repo>.db`) say each
//! package file must be, `file name -> (size, SHA-256)`, read without ever stalling the loop.
//!
//! Owns reading a database: detecting its compression by magic bytes (`decompress`: gzip,
//! zstd, xz or none, through the `flate2`, `ruzstd` and `lzma-rust2` crates), walking the tar
//! inside (`tar`, a bounded parser of ustar, GNU long names and pax headers), parsing each
//! entry's `desc` (`desc`), and building the [`SyncIndex`] (`index`); the [`DbLoader`] ties
//! them together in slices of a byte budget (`loader`), and [`DbWatch`] says which database
//! files changed since the last look (`watch`). It does not decide anything about peers,
//! files or the relay, does not read pacman.conf (the caller passes paths from
//! [`crate::config::PacmanConf::sync_database`]) and does not hash files.
//!
//! # How the event loop uses it (`crate::trust::Databases` does this)
//! ```text
//! start, and each time a look is due (say every 10 s, and on SIGUSR2):
//!   let stamps = repos.iter().map(|r| FileStamp::of_path(&conf.sync_database(&r.name)));
//!   for i in watch.look(stamps) { loaders[i] = Some(DbLoader::open(&path_of(i))); }
//! each loop pass, while some loader is Some (poll with a zero timeout until they are done):
//!   match loader.poll_load(LOAD_BUDGET) {
//!       Progress::More => {}
//!       Progress::Done(index) => { info!("{path}: {} files", index.len());   // + stats()
//!                                  indexes.set(i, Ok(index)); loader = None }
//!       Progress::Failed(e) => { warn once: "{path}: {e}"; indexes.set(i, Err(e)); loader = None }
//!   }
//! asking: indexes.lookup(file_name) -> Option<(repo, FileIdentity)>, first repo listing it
//! ```
//! Every limit is a constant here: [`MAX_DESC_BYTES`] per `desc`, [`MAX_ENTRIES`] and
//! [`MAX_NAME_BYTES`] per database, [`tar::MAX_LONG_NAME`] and [`tar::MAX_PAX_BYTES`] per tar
//! header, [`decompress::XZ_MEMORY_LIMIT_KIB`] for xz (zstd windows are capped at 100 MiB by
//! `ruzstd`, gzip needs 32 KiB).

pub mod decompress;
pub mod desc;
pub mod index;
pub mod loader;
pub mod tar;
pub mod watch;

use std::fmt;

pub use decompress::Compression;
pub use desc::{DescEntry, DescError, parse_desc};
pub use index::{FileIdentity, LoadStats, RepoIndexes, SyncIndex};
pub use loader::{DbLoader, Progress};
pub use watch::{DbWatch, FileStamp};

/// A [`DbLoader::poll_load`] budget for the event loop: 16 KiB of tar per call. On a
/// 15,000-entry database shaped like Arch's `extra` (38 MB of tar), one call took a median of
/// 13 to 31 us of CPU (zstd, tar, gzip) and 154 us (xz) on the 2-core x86_64 development
/// machine, p99 at most 202 us; a Raspberry Pi is several times slower, which keeps a call
/// around a millisecond. A few calls per load cost more, when a decoder grows its window
/// (`bench/sync_db.sh` prints the figures of every call).
pub const LOAD_BUDGET: usize = 16 * 1024;

/// Largest `desc` read; a larger one is skipped and counted in [`LoadStats::oversize`].
pub const MAX_DESC_BYTES: usize = 64 * 1024;
/// Most entries kept from one database (Arch's `extra` has about 15,000).
pub const MAX_ENTRIES: usize = 200_000;
/// Most bytes of file names kept from one database.
pub const MAX_NAME_BYTES: usize = 16 * 1024 * 1024;

/// A SHA-256 digest, as `%SHA256SUM%` gives it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Exactly 64 hexadecimal digits, either case.
    pub fn from_hex(hex: &[u8]) -> Option<Sha256> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Sha256(bytes))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex, as pacman and `sha256sum` print it.
impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// Why a database could not be read. Small and `Copy`, so a caller can keep the last one per
/// repository and log it only when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbError {
    /// The file could not be opened.
    Open(std::io::ErrorKind),
    /// The path is a directory, FIFO, device or socket.
    NotAFile,
    /// Reading the file failed.
    Read(std::io::ErrorKind),
    /// The file is empty.
    Empty,
    /// Neither gzip, zstd, xz nor a tar archive (bzip2, lz4, ... or not a database at all).
    UnknownFormat,
    /// The compressed stream is damaged.
    Corrupt(Compression),
    /// The file ends before the end of the tar archive.
    Truncated,
    /// The tar archive inside is malformed.
    Tar(tar::TarError),
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries,
    /// More than [`MAX_NAME_BYTES`] bytes of file names.
    TooManyNameBytes,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Open(kind) => write!(f, "cannot open: {kind}"),
            DbError::NotAFile => f.write_str("not a regular file"),
            DbError::Read(kind) => write!(f, "cannot read: {kind}"),
            DbError::Empty => f.write_str("empty file"),
            DbError::UnknownFormat => {
                f.write_str("not a sync database (neither gzip, zstd, xz nor tar)")
            }
            DbError::Corrupt(compression) => write!(f, "damaged {compression} data"),
            DbError::Truncated => f.write_str("truncated: the file ends inside the archive"),
            DbError::Tar(e) => write!(f, "malformed tar archive: {e}"),
            DbError::TooManyEntries => write!(f, "more than {MAX_ENTRIES} entries"),
            DbError::TooManyNameBytes => {
                write!(f, "more than {MAX_NAME_BYTES} bytes of file names")
            }
        }
    }
}

impl std::error::Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex() {
        let hex = "00ff10aB".repeat(8);
        let digest = Sha256::from_hex(hex.as_bytes()).unwrap();
        assert_eq!(digest.0[..4], [0x00, 0xff, 0x10, 0xab]);
        assert_eq!(digest.to_string(), hex.to_lowercase());
        assert_eq!(Sha256::from_hex(&hex.as_bytes()[1..]), None);
        assert_eq!(Sha256::from_hex("g".repeat(64).as_bytes()), None);
        assert_eq!(Sha256::from_hex(b""), None);
    }

    #[test]
    fn errors_display_on_one_line() {
        let errors = [
            DbError::Open(std::io::ErrorKind::NotFound),
            DbError::NotAFile,
            DbError::Read(std::io::ErrorKind::Other),
            DbError::Empty,
            DbError::UnknownFormat,
            DbError::Corrupt(Compression::Zstd),
            DbError::Truncated,
            DbError::Tar(tar::TarError::BadChecksum),
            DbError::TooManyEntries,
            DbError::TooManyNameBytes,
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
        }
    }
}
