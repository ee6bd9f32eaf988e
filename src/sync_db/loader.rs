//! [`DbLoader`]: one sync database read into a [`SyncIndex`] across many calls of
//! [`DbLoader::poll_load`], each doing about `budget` bytes of tar's worth of work, so that the
//! single-threaded loop never waits for a whole database. Owns the file (or any reader), the
//! decoder, the tar walker and the index being built; streams, keeping at most one `desc`
//! and the decoders' windows. It does not decide when to load (see `watch`) or what to do
//! with a failure (the caller logs it and keeps the other repositories' indexes).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::decompress::{self, Decoder, Pull};
use super::tar::{TarError, TarEvent, TarLimits, TarWalker};
use super::{DbError, MAX_DESC_BYTES, SyncIndex, parse_desc};

/// Tar bytes handed from the decoder to the walker at a time.
const PIECE: usize = 16 * 1024;

/// What one [`DbLoader::poll_load`] call ended with.
#[derive(Debug)]
pub enum Progress {
    /// Not finished: call again (on a later loop pass).
    More,
    /// The whole database, indexed.
    Done(SyncIndex),
    /// The database cannot be read; nothing of it is kept.
    Failed(DbError),
}

enum Stage<R: Read> {
    /// Reading the first bytes to detect the format.
    Detecting {
        reader: R,
        prefix: Vec<u8>,
    },
    Decoding(Decoder<R>),
    /// `Done` (`None`) or `Failed` was returned; later calls repeat the error, or give an
    /// empty index after `Done`.
    Finished(Option<DbError>),
}

/// Reads one database incrementally.
pub struct DbLoader<R: Read = File> {
    stage: Stage<R>,
    walker: TarWalker,
    index: SyncIndex,
    piece: Box<[u8]>,
}

fn wants_desc(path: &[u8]) -> bool {
    path.ends_with(b"/desc")
}

impl DbLoader<File> {
    /// Opens `path`; a failure to open comes out of the first [`DbLoader::poll_load`]. The
    /// file is opened non-blocking and must be a regular file, so that a FIFO or a device
    /// put in its place can never block the loop.
    pub fn open(path: &Path) -> DbLoader<File> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| DbError::Open(e.kind()))
            .and_then(|file| match file.metadata() {
                Ok(m) if m.is_file() => Ok(file),
                Ok(_) => Err(DbError::NotAFile),
                Err(e) => Err(DbError::Open(e.kind())),
            });
        match opened {
            Ok(file) => DbLoader::new(file),
            Err(e) => DbLoader::new_stage(Stage::Finished(Some(e))),
        }
    }
}

impl<R: Read> DbLoader<R> {
    /// A loader reading a database from `reader` (a file, or bytes in tests and fuzzing).
    pub fn new(reader: R) -> DbLoader<R> {
        DbLoader::new_stage(Stage::Detecting {
            reader,
            prefix: Vec::with_capacity(decompress::DETECT_BYTES),
        })
    }

    fn new_stage(stage: Stage<R>) -> DbLoader<R> {
        DbLoader {
            stage,
            walker: TarWalker::new(
                TarLimits {
                    max_file: MAX_DESC_BYTES,
                },
                wants_desc,
            ),
            index: SyncIndex::new(),
            piece: vec![0; PIECE].into_boxed_slice(),
        }
    }

    /// Does about `budget` bytes of tar's worth of work (at least one byte; a zstd block,
    /// at most 128 KiB of output, is one step whatever the budget), then says whether the
    /// database is done, failed, or needs more calls. Call no more after `Done` or `Failed`
    /// (later calls repeat the failure, or give an empty index after `Done`).
    pub fn poll_load(&mut self, budget: usize) -> Progress {
        match self.step(budget.max(1)) {
            Ok(false) => Progress::More,
            Ok(true) => {
                self.stage = Stage::Finished(None);
                Progress::Done(std::mem::take(&mut self.index))
            }
            Err(e) => {
                self.stage = Stage::Finished(Some(e));
                self.index = SyncIndex::new();
                Progress::Failed(e)
            }
        }
    }

    /// The format found in the file's first bytes, once known.
    pub fn compression(&self) -> Option<decompress::Compression> {
        match &self.stage {
            Stage::Decoding(decoder) => Some(decoder.compression()),
            _ => None,
        }
    }

    /// Loads the whole database in one go: for tests, fuzzing and tools, never in the loop.
    pub fn load_all(mut self) -> Result<SyncIndex, DbError> {
        loop {
            match self.poll_load(1 << 20) {
                Progress::More => {}
                Progress::Done(index) => return Ok(index),
                Progress::Failed(e) => return Err(e),
            }
        }
    }

    /// `Ok(true)` when the index is complete.
    fn step(&mut self, budget: usize) -> Result<bool, DbError> {
        let mut spent = 0;
        while spent < budget {
            match &mut self.stage {
                Stage::Finished(Some(e)) => return Err(*e),
                Stage::Finished(None) => return Ok(true),
                Stage::Detecting { reader, prefix } => {
                    let want = decompress::DETECT_BYTES - prefix.len();
                    let at = prefix.len();
                    prefix.resize(decompress::DETECT_BYTES, 0);
                    let read = reader.read(&mut prefix[at..at + want.min(budget - spent)]);
                    let (n, at_end) = match read {
                        Ok(n) => (n, n == 0),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => (0, false),
                        Err(e) => return Err(DbError::Read(e.kind())),
                    };
                    prefix.truncate(at + n);
                    spent += n.max(1);
                    if prefix.len() < decompress::DETECT_BYTES && !at_end {
                        continue;
                    }
                    if prefix.is_empty() {
                        return Err(DbError::Empty);
                    }
                    let compression = decompress::detect(prefix).ok_or(DbError::UnknownFormat)?;
                    let detecting = std::mem::replace(&mut self.stage, Stage::Finished(None));
                    if let Stage::Detecting { reader, prefix } = detecting {
                        self.stage = Stage::Decoding(Decoder::new(compression, prefix, reader)?);
                    }
                }
                Stage::Decoding(decoder) => {
                    let want = PIECE.min(budget - spent);
                    match decoder.pull(&mut self.piece[..want])? {
                        Pull::Busy => return Ok(false),
                        Pull::End => {
                            return if self.walker.may_end() {
                                Ok(true)
                            } else {
                                Err(DbError::Truncated)
                            };
                        }
                        Pull::Data(n) => {
                            spent += n;
                            if feed(&mut self.walker, &mut self.index, &self.piece[..n])? {
                                return Ok(true);
                            }
                        }
                    }
                }
            }
        }
        Ok(false)
    }
}

/// Feeds tar bytes to the walker, indexing each `desc`; `Ok(true)` at the end of the archive.
fn feed(walker: &mut TarWalker, index: &mut SyncIndex, mut bytes: &[u8]) -> Result<bool, DbError> {
    while !bytes.is_empty() {
        let step = walker.feed(bytes).map_err(DbError::Tar)?;
        bytes = &bytes[step.consumed..];
        match step.event {
            None => {}
            Some(TarEvent::End) => return Ok(true),
            Some(TarEvent::Oversize { .. }) => index.count_oversize(),
            Some(TarEvent::File { data, .. }) => match parse_desc(data) {
                Ok(entry) => index.insert(&entry)?,
                Err(_) => index.count_bad_desc(),
            },
        }
    }
    Ok(false)
}

impl From<TarError> for DbError {
    fn from(e: TarError) -> DbError {
        DbError::Tar(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync_db::tar::build;
    use crate::sync_db::{Compression, FileIdentity, Sha256};

    fn desc_text(i: usize, with_hash: bool) -> String {
        let mut text = format!(
            "%FILENAME%\npkg{i}-1.0-1-x86_64.pkg.tar.zst\n\n%NAME%\npkg{i}\n\n%CSIZE%\n{}\n\n",
            1000 + i
        );
        if with_hash {
            text.push_str(&format!("%SHA256SUM%\n{:064x}\n\n", i + 1));
        }
        text
    }

    /// A database tar as repo-add lays it out: a directory and a `desc` per package.
    pub(crate) fn database_tar(count: usize) -> Vec<u8> {
        let mut tar = Vec::new();
        for i in 0..count {
            build::dir(&mut tar, &format!("pkg{i}-1.0-1/"));
            build::file(
                &mut tar,
                &format!("pkg{i}-1.0-1/desc"),
                desc_text(i, i % 5 != 4).as_bytes(),
            );
        }
        build::end(&mut tar);
        tar
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let options = lzma_rust2::XzOptions::with_preset(6);
        let mut writer = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
        writer.write_all(bytes).unwrap();
        writer.finish().unwrap()
    }

    /// The same tar in every format the loader reads.
    fn every_format(tar: &[u8]) -> [(Compression, Vec<u8>); 4] {
        [
            (Compression::Uncompressed, tar.to_vec()),
            (Compression::Gzip, gzip(tar)),
            (Compression::Zstd, zstd(tar)),
            (Compression::Xz, xz(tar)),
        ]
    }

    fn load(bytes: &[u8]) -> Result<SyncIndex, DbError> {
        DbLoader::new(bytes).load_all()
    }

    fn sorted(index: &SyncIndex) -> Vec<(String, FileIdentity)> {
        let mut all: Vec<_> = index.iter().map(|(n, id)| (n.to_owned(), id)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn every_compression() {
        let tar = database_tar(20);
        for (compression, bytes) in every_format(&tar) {
            assert_eq!(
                decompress::detect(&bytes[..bytes.len().min(512)]),
                Some(compression)
            );
            let index = load(&bytes).unwrap();
            assert_eq!(index.len(), 20);
            let id = index.lookup("pkg3-1.0-1-x86_64.pkg.tar.zst").unwrap();
            assert_eq!(id.size, 1003);
            assert_eq!(
                id.sha256.unwrap(),
                Sha256::from_hex(format!("{:064x}", 4).as_bytes()).unwrap()
            );
            assert_eq!(
                index
                    .lookup("pkg4-1.0-1-x86_64.pkg.tar.zst")
                    .unwrap()
                    .sha256,
                None
            );
            assert_eq!(index.lookup("pkg3-1.0-1-x86_64.pkg.tar.zst.sig"), None);
            assert_eq!(index.lookup("nothere-1.0-1-x86_64.pkg.tar.zst"), None);
            assert_eq!(index.stats().without_hash, 4);
        }
    }

    #[test]
    fn every_budget_gives_the_one_shot_index() {
        let tar = database_tar(3);
        let whole = sorted(&load(&tar).unwrap());
        assert_eq!(whole.len(), 3);
        for (_, bytes) in every_format(&tar) {
            for budget in 1..=tar.len() + 1 {
                let mut loader = DbLoader::new(&bytes[..]);
                let mut calls = 0;
                let index = loop {
                    calls += 1;
                    match loader.poll_load(budget) {
                        Progress::More => {}
                        Progress::Done(index) => break index,
                        Progress::Failed(e) => panic!("budget {budget}: {e}"),
                    }
                };
                assert_eq!(sorted(&index), whole, "budget {budget}");
                // Each call moves at least `budget` bytes of tar while there are any.
                assert!(
                    calls <= (tar.len() + 1024) / budget + 3,
                    "budget {budget}: {calls} calls"
                );
            }
        }
    }

    #[test]
    fn failures() {
        assert_eq!(load(b"").unwrap_err(), DbError::Empty);
        assert_eq!(
            load(b"BZh91AY&SY garbage").unwrap_err(),
            DbError::UnknownFormat
        );
        assert_eq!(load(&[0x55; 4096]).unwrap_err(), DbError::UnknownFormat);
        let tar = database_tar(30);
        for (compression, bytes) in every_format(&tar) {
            // Cut inside the tar.
            let half = load(&bytes[..bytes.len() / 2]);
            assert_eq!(half.unwrap_err(), DbError::Truncated, "{compression}");
            if compression == Compression::Uncompressed {
                continue;
            }
            let mut damaged = bytes.clone();
            let middle = damaged.len() / 2;
            for b in &mut damaged[middle..middle + 16] {
                *b ^= 0x5a;
            }
            // Damage in a block header can also make the decoder read to the end of the file
            // for a block that is not there: that reads as a cut file.
            let got = load(&damaged).unwrap_err();
            assert!(
                matches!(got, DbError::Corrupt(c) if c == compression)
                    || matches!(got, DbError::Tar(_) | DbError::Truncated),
                "{compression}: {got:?}"
            );
        }
        let mut bad_header = tar.clone();
        bad_header[BLOCK_OF_SECOND_ENTRY] ^= 1;
        assert_eq!(
            load(&bad_header).unwrap_err(),
            DbError::Tar(TarError::BadChecksum)
        );
        let missing = DbLoader::open(Path::new("/nonexistent/flocon/core.db")).load_all();
        assert_eq!(missing.unwrap_err(), DbError::Open(io::ErrorKind::NotFound));
        let directory = DbLoader::open(Path::new("/")).load_all();
        assert_eq!(directory.unwrap_err(), DbError::NotAFile);
    }

    /// The second entry's header (after a directory header and the first desc's two blocks
    /// at most): the first desc is under 512 bytes.
    const BLOCK_OF_SECOND_ENTRY: usize = 512 * 3;

    #[test]
    fn oversize_and_bad_entries_are_counted() {
        let mut tar = Vec::new();
        build::file(&mut tar, "big-1-1/desc", &vec![b'x'; MAX_DESC_BYTES + 1]);
        build::file(
            &mut tar,
            "bad-1-1/desc",
            b"%FILENAME%\n../x\n\n%CSIZE%\n1\n",
        );
        build::file(&mut tar, "ok-1-1/desc", desc_text(1, true).as_bytes());
        build::file(&mut tar, "ok-1-1/files", &vec![b'y'; MAX_DESC_BYTES * 2]);
        build::end(&mut tar);
        let index = load(&tar).unwrap();
        assert_eq!(index.len(), 1);
        let stats = index.stats();
        assert_eq!((stats.oversize, stats.bad_desc, stats.entries), (1, 1, 1));
    }

    #[test]
    fn empty_archive() {
        let mut tar = Vec::new();
        build::end(&mut tar);
        for (compression, bytes) in every_format(&tar) {
            assert!(load(&bytes).unwrap().is_empty(), "{compression}");
        }
    }

    #[test]
    fn after_the_end() {
        let mut loader = DbLoader::new(&b""[..]);
        assert!(matches!(
            loader.poll_load(10),
            Progress::Failed(DbError::Empty)
        ));
        assert!(matches!(
            loader.poll_load(10),
            Progress::Failed(DbError::Empty)
        ));
        let tar = database_tar(1);
        let mut loader = DbLoader::new(&tar[..]);
        assert!(matches!(loader.poll_load(1 << 20), Progress::Done(i) if i.len() == 1));
        assert!(matches!(loader.poll_load(1 << 20), Progress::Done(i) if i.is_empty()));
    }
}
