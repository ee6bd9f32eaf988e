//! Decompression of a sync database in small steps: which format a file is, by its first
//! bytes ([`detect`]: gzip, zstd, xz, or a plain tar), and a [`Decoder`] that hands out the
//! tar bytes a piece at a time ([`Decoder::pull`]), each piece a bounded amount of work.
//!
//! The decoding itself is the crates': `flate2` (pure-Rust `miniz_oxide` backend),
//! `ruzstd`, `lzma-rust2`. This module only picks one, caps its memory, drives zstd one block
//! at a time (`ruzstd`'s `Read` would decode a whole window, up to megabytes, before giving
//! out its first byte), and turns failures into [`DbError`]s. It does not parse tar.

use std::fmt;
use std::io::{self, BufRead, BufReader, Chain, Cursor, Read};

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::DbError;
use super::tar::{self, BLOCK};

/// Largest dictionary accepted for xz, in KiB, as `lzma-rust2` counts memory (`xz -9` needs
/// 64 MiB plus a little; `repo-add`'s `xz` default, `-6`, needs 8 MiB).
pub const XZ_MEMORY_LIMIT_KIB: u32 = 65 * 1024 + 512;
/// Compressed bytes read from the file at a time.
const INPUT_BUFFER: usize = 16 * 1024;

/// How a database file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    /// A plain tar archive.
    Uncompressed,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Uncompressed => "uncompressed tar",
        })
    }
}

/// Bytes [`detect`] wants to see (fewer if the file is shorter).
pub const DETECT_BYTES: usize = BLOCK;

/// The format of a file starting with `prefix` (its first [`DETECT_BYTES`] bytes, or all of
/// it if shorter). A plain tar is recognised by a first header with a good checksum, or a
/// first block of zeros (an empty archive). `None` for anything else.
pub fn detect(prefix: &[u8]) -> Option<Compression> {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if let Ok(block) = <&[u8; BLOCK]>::try_from(prefix.get(..BLOCK)?) {
        let zeros = block.iter().all(|&b| b == 0);
        let header_ok = tar::parse_number(&block[148..156])
            .is_some_and(|sum| tar::checksum_matches(block, sum));
        (zeros || header_ok).then_some(Compression::Uncompressed)
    } else {
        None
    }
}

/// What one [`Decoder::pull`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// This many tar bytes were written to the start of the buffer (at least 1).
    Data(usize),
    /// A step of work was done but gave no bytes yet (a zstd block still inside the window,
    /// or a new zstd frame header).
    Busy,
    /// The compressed stream ended cleanly.
    End,
}

/// The already-read first bytes, then the rest of the file.
type Input<R> = BufReader<Chain<Cursor<Vec<u8>>, R>>;

/// A decoder over a reader, after [`detect`].
pub enum Decoder<R: Read> {
    Plain(Input<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Input<R>>>),
    Zstd(Box<ZstdStream<Input<R>>>),
    Xz(Box<lzma_rust2::XzReader<Input<R>>>),
}

impl<R: Read> Decoder<R> {
    /// A decoder for `compression`, reading `prefix` (the bytes [`detect`] saw) and then
    /// `rest`.
    pub fn new(compression: Compression, prefix: Vec<u8>, rest: R) -> Result<Decoder<R>, DbError> {
        let input = BufReader::with_capacity(INPUT_BUFFER, Cursor::new(prefix).chain(rest));
        Ok(match compression {
            Compression::Uncompressed => Decoder::Plain(input),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
            }
            Compression::Zstd => Decoder::Zstd(Box::new(ZstdStream::new(input)?)),
            Compression::Xz => Decoder::Xz(Box::new(lzma_rust2::XzReader::new_mem_limit(
                input,
                true,
                XZ_MEMORY_LIMIT_KIB,
            ))),
        })
    }

    pub fn compression(&self) -> Compression {
        match self {
            Decoder::Plain(_) => Compression::Uncompressed,
            Decoder::Gzip(_) => Compression::Gzip,
            Decoder::Zstd(_) => Compression::Zstd,
            Decoder::Xz(_) => Compression::Xz,
        }
    }

    /// Up to `out.len()` (at least 1) more tar bytes.
    pub fn pull(&mut self, out: &mut [u8]) -> Result<Pull, DbError> {
        let compression = self.compression();
        let read = match self {
            Decoder::Plain(input) => input.read(out),
            Decoder::Gzip(decoder) => decoder.read(out),
            Decoder::Xz(decoder) => decoder.read(out),
            Decoder::Zstd(stream) => return stream.pull(out),
        };
        match read {
            Ok(0) => Ok(Pull::End),
            Ok(n) => Ok(Pull::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Pull::Busy),
            Err(e) => Err(self.failure(compression, &e)),
        }
    }

    /// A decoder's error: the file's own read error, a cut stream (the input is used up), or
    /// damaged data.
    fn failure(&mut self, compression: Compression, e: &io::Error) -> DbError {
        if let Some(kind) = file_error(e) {
            return DbError::Read(kind);
        }
        let input_left = match self {
            Decoder::Plain(input) => input.fill_buf().map(|b| !b.is_empty()),
            Decoder::Gzip(decoder) => decoder.get_mut().fill_buf().map(|b| !b.is_empty()),
            Decoder::Xz(decoder) => decoder.inner_mut().fill_buf().map(|b| !b.is_empty()),
            Decoder::Zstd(stream) => stream.input.fill_buf().map(|b| !b.is_empty()),
        };
        match input_left {
            Ok(false) => DbError::Truncated,
            Ok(true) => DbError::Corrupt(compression),
            Err(e) => DbError::Read(e.kind()),
        }
    }
}

/// An I/O error from the file itself rather than from a decoder finding bad data.
fn file_error(e: &io::Error) -> Option<io::ErrorKind> {
    match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::Other
        | io::ErrorKind::OutOfMemory
        | io::ErrorKind::Unsupported => None,
        kind => Some(kind),
    }
}

/// zstd frames decoded one block per step. `ruzstd` keeps the last window of output for back
/// references and hands out only what is older; the rest comes out when the frame ends.
pub struct ZstdStream<R: BufRead> {
    decoder: FrameDecoder,
    input: R,
    /// Decoded bytes not handed out yet, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
}

impl<R: BufRead> ZstdStream<R> {
    fn new(mut input: R) -> Result<ZstdStream<R>, DbError> {
        let mut decoder = FrameDecoder::new();
        if decoder.init(&mut input).is_err() {
            return Err(zstd_failure(&mut input));
        }
        Ok(ZstdStream {
            decoder,
            input,
            out: Vec::new(),
            out_at: 0,
        })
    }

    fn pull(&mut self, out: &mut [u8]) -> Result<Pull, DbError> {
        if self.out_at < self.out.len() {
            let n = out.len().min(self.out.len() - self.out_at);
            out[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
            self.out_at += n;
            return Ok(Pull::Data(n));
        }
        self.out.clear();
        self.out_at = 0;
        if self.decoder.is_finished() {
            if self.decoder.can_collect() > 0 {
                self.collect()?;
                return Ok(Pull::Busy);
            }
            // Another frame (zstd concatenates them), or the end.
            match self.input.fill_buf() {
                Ok([]) => return Ok(Pull::End),
                Ok(_) => {}
                Err(e) => return Err(DbError::Read(e.kind())),
            }
            if self.decoder.reset(&mut self.input).is_err() {
                return Err(zstd_failure(&mut self.input));
            }
            return Ok(Pull::Busy);
        }
        if self
            .decoder
            .decode_blocks(&mut self.input, BlockDecodingStrategy::UptoBlocks(1))
            .is_err()
        {
            return Err(zstd_failure(&mut self.input));
        }
        self.collect()?;
        Ok(Pull::Busy)
    }

    fn collect(&mut self) -> Result<(), DbError> {
        if self.decoder.collect_to_writer(&mut self.out).is_err() {
            return Err(DbError::Corrupt(Compression::Zstd));
        }
        Ok(())
    }
}

fn zstd_failure(input: &mut impl BufRead) -> DbError {
    match input.fill_buf() {
        Ok([]) => DbError::Truncated,
        Ok(_) => DbError::Corrupt(Compression::Zstd),
        Err(e) => DbError::Read(e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync_db::tar::build;

    #[test]
    fn magic_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Some(Compression::Gzip));
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Compression::Zstd)
        );
        assert_eq!(detect(b"\xfd7zXZ\0\0"), Some(Compression::Xz));
        assert_eq!(
            detect(&build::header(b"a/desc", 3, b'0')),
            Some(Compression::Uncompressed)
        );
    }
}
