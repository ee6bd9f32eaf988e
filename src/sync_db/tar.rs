//! A push parser of tar archives, as `bsdtar` (and so `repo-add`) and GNU tar write them:
//! ustar headers (with the `prefix` field), GNU long names (`L`), pax extended headers (`x`,
//! its `path` and `size` records), end of archive at two zero blocks. Bytes go in by
//! [`TarWalker::feed`] in pieces of any size; out come the whole contents of the regular files
//! whose path the caller wants ([`TarEvent::File`], at most [`TarLimits::max_file`] bytes), an
//! [`TarEvent::Oversize`] for a wanted file that is larger, and [`TarEvent::End`].
//!
//! Everything else (directories, links, unwanted files, `g` and `K` headers) is skipped without
//! being kept. Memory is one 512-byte block, the current path, and one wanted file or
//! metadata record, each capped. It does not decompress and does no I/O; it checks each
//! header's checksum and refuses what it cannot follow safely ([`TarError`]).

use std::fmt;

/// A tar block.
pub const BLOCK: usize = 512;
/// Longest GNU long name (`L`) accepted.
pub const MAX_LONG_NAME: usize = 4096;
/// Largest pax extended header (`x`) accepted.
pub const MAX_PAX_BYTES: usize = 64 * 1024;

/// Caps for one walker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarLimits {
    /// Largest wanted file kept whole; larger ones give [`TarEvent::Oversize`].
    pub max_file: usize,
}

/// What a call to [`TarWalker::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum TarEvent<'a> {
    /// A wanted regular file, whole.
    File { path: &'a [u8], data: &'a [u8] },
    /// A wanted regular file larger than [`TarLimits::max_file`]; its data is skipped.
    Oversize { path: &'a [u8], size: u64 },
    /// The end-of-archive marker. Nothing after it is read.
    End,
}

/// Why an archive cannot be walked further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarError {
    /// A header's checksum does not match its bytes.
    BadChecksum,
    /// A header's size (or checksum) field is not a number.
    BadNumber,
    /// A GNU long name over [`MAX_LONG_NAME`] bytes.
    LongNameTooLong,
    /// A pax header over [`MAX_PAX_BYTES`] bytes.
    PaxTooLarge,
    /// A pax header whose records do not parse.
    BadPax,
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TarError::BadChecksum => "header checksum mismatch",
            TarError::BadNumber => "header number field is not a number",
            TarError::LongNameTooLong => "GNU long name too long",
            TarError::PaxTooLarge => "pax header too large",
            TarError::BadPax => "malformed pax header",
        })
    }
}

/// The result of one [`TarWalker::feed`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of the input used; feed the rest again.
    pub consumed: usize,
    pub event: Option<TarEvent<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    /// Skipped.
    Skip,
    /// A wanted file, kept in `data`.
    Wanted,
    /// A GNU long name for the next entry, kept in `data`.
    LongName,
    /// pax records for the next entry, kept in `data`.
    Pax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a header block; `zero_blocks` zero blocks came just before.
    Header { zero_blocks: u8 },
    /// Reading an entry's data.
    Data {
        kind: Data,
        remaining: u64,
        padding: u16,
    },
    /// Skipping the zeros that pad the data to a block.
    Padding { remaining: u16 },
    /// After the end-of-archive marker.
    Ended,
}

/// What to report once the borrow of the input ends.
#[derive(Clone, Copy)]
enum Ready {
    File,
    Oversize(u64),
    End,
}

/// The walker. `wants` says which regular files to keep, by path.
pub struct TarWalker {
    limits: TarLimits,
    wants: fn(&[u8]) -> bool,
    state: State,
    block: [u8; BLOCK],
    block_len: usize,
    /// The current entry's path.
    path: Vec<u8>,
    /// The wanted file, long name or pax records being read.
    data: Vec<u8>,
    /// From `L` or pax headers, for the next entry.
    next_long_name: Option<Vec<u8>>,
    next_pax_path: Option<Vec<u8>>,
    next_pax_size: Option<u64>,
    /// A wanted file over the cap was just entered: report it before skipping its data.
    oversize_pending: bool,
}

impl TarWalker {
    pub fn new(limits: TarLimits, wants: fn(&[u8]) -> bool) -> TarWalker {
        TarWalker {
            limits,
            wants,
            state: State::Header { zero_blocks: 0 },
            block: [0; BLOCK],
            block_len: 0,
            path: Vec::new(),
            data: Vec::new(),
            next_long_name: None,
            next_pax_path: None,
            next_pax_size: None,
            oversize_pending: false,
        }
    }

    /// Whether the input may end here: after the end marker, or after one zero block (GNU
    /// tar accepts an archive cut after the first of the two).
    pub fn may_end(&self) -> bool {
        match self.state {
            State::Ended => true,
            State::Header { zero_blocks } => zero_blocks >= 1 && self.block_len == 0,
            _ => false,
        }
    }

    pub fn has_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Reads from `input` until it is used up or an event is found. Call again with the
    /// unused rest. After [`TarEvent::End`] (or an error) every byte is consumed unread.
    pub fn feed(&mut self, input: &[u8]) -> Result<Step<'_>, TarError> {
        let (consumed, ready) = self.advance(input)?;
        let event = ready.map(|ready| match ready {
            Ready::File => TarEvent::File {
                path: &self.path,
                data: &self.data,
            },
            Ready::Oversize(size) => TarEvent::Oversize {
                path: &self.path,
                size,
            },
            Ready::End => TarEvent::End,
        });
        Ok(Step { consumed, event })
    }

    fn advance(&mut self, input: &[u8]) -> Result<(usize, Option<Ready>), TarError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Ended => return Ok((input.len(), None)),
                State::Header { zero_blocks } => {
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let take = (BLOCK - self.block_len).min(rest.len());
                    self.block[self.block_len..self.block_len + take]
                        .copy_from_slice(&rest[..take]);
                    self.block_len += take;
                    used += take;
                    if self.block_len < BLOCK {
                        return Ok((used, None));
                    }
                    self.block_len = 0;
                    if self.block.iter().all(|&b| b == 0) {
                        if zero_blocks >= 1 {
                            self.state = State::Ended;
                            return Ok((used, Some(Ready::End)));
                        }
                        self.state = State::Header { zero_blocks: 1 };
                        continue;
                    }
                    if let Err(e) = self.start_entry() {
                        self.state = State::Ended;
                        return Err(e);
                    }
                    if let Some(ready) = self.ready_at_start() {
                        return Ok((used, Some(ready)));
                    }
                }
                State::Data {
                    kind,
                    remaining,
                    padding,
                } => {
                    if remaining == 0 {
                        self.state = State::Padding { remaining: padding };
                        let ready = match self.finish_data(kind) {
                            Ok(ready) => ready,
                            Err(e) => {
                                self.state = State::Ended;
                                return Err(e);
                            }
                        };
                        if ready.is_some() {
                            return Ok((used, ready));
                        }
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    if kind != Data::Skip {
                        self.data.extend_from_slice(&rest[..take]);
                    }
                    used += take;
                    self.state = State::Data {
                        kind,
                        remaining: remaining - take as u64,
                        padding,
                    };
                }
                State::Padding { remaining } => {
                    if remaining == 0 {
                        self.state = State::Header { zero_blocks: 0 };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let take = usize::from(remaining).min(rest.len());
                    used += take;
                    self.state = State::Padding {
                        remaining: remaining - take as u16,
                    };
                }
            }
        }
    }

    /// Set by `start_entry` for a wanted file over the cap: reported at once.
    fn ready_at_start(&mut self) -> Option<Ready> {
        match self.state {
            State::Data {
                kind: Data::Skip,
                remaining,
                ..
            } if self.oversize_pending => {
                self.oversize_pending = false;
                Some(Ready::Oversize(remaining))
            }
            _ => None,
        }
    }

    /// Parses the header in `block` and enters its data.
    fn start_entry(&mut self) -> Result<(), TarError> {
        let header = &self.block;
        let stored = parse_number(&header[148..156]).ok_or(TarError::BadNumber)?;
        if !checksum_matches(header, stored) {
            return Err(TarError::BadChecksum);
        }
        let mut size = parse_number(&header[124..136]).ok_or(TarError::BadNumber)?;
        let type_flag = header[156];
        self.data.clear();
        let kind = match type_flag {
            b'L' => {
                if size > MAX_LONG_NAME as u64 {
                    return Err(TarError::LongNameTooLong);
                }
                Data::LongName
            }
            b'x' => {
                if size > MAX_PAX_BYTES as u64 {
                    return Err(TarError::PaxTooLarge);
                }
                Data::Pax
            }
            // Global pax records and GNU long link names: nothing flocon needs.
            b'g' | b'K' => Data::Skip,
            _ => {
                if let Some(pax_size) = self.next_pax_size.take() {
                    size = pax_size;
                }
                self.path.clear();
                let long_name = self.next_long_name.take();
                match (self.next_pax_path.take(), long_name) {
                    (Some(path), _) | (None, Some(path)) => self.path = path,
                    (None, None) => header_path(header, &mut self.path),
                }
                let regular = matches!(type_flag, b'0' | 0 | b'7');
                if regular && (self.wants)(&self.path) {
                    if size <= self.limits.max_file as u64 {
                        self.data.reserve(size as usize);
                        Data::Wanted
                    } else {
                        self.oversize_pending = true;
                        Data::Skip
                    }
                } else {
                    Data::Skip
                }
            }
        };
        // (BLOCK - size % BLOCK) % BLOCK < 512 always fits a u16.
        let padding = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as u16;
        self.state = State::Data {
            kind,
            remaining: size,
            padding,
        };
        Ok(())
    }

    fn finish_data(&mut self, kind: Data) -> Result<Option<Ready>, TarError> {
        match kind {
            Data::Skip => Ok(None),
            Data::Wanted => Ok(Some(Ready::File)),
            Data::LongName => {
                let mut name = std::mem::take(&mut self.data);
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                name.truncate(end);
                self.next_long_name = Some(name);
                Ok(None)
            }
            Data::Pax => {
                let records = std::mem::take(&mut self.data);
                parse_pax(&records, &mut self.next_pax_path, &mut self.next_pax_size)?;
                Ok(None)
            }
        }
    }
}

/// `prefix/name` for POSIX ustar headers (magic `ustar\0`), else `name`; each field ends at
/// its first NUL.
fn header_path(header: &[u8; BLOCK], path: &mut Vec<u8>) {
    let field = |range: std::ops::Range<usize>| {
        let bytes = &header[range];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..end]
    };
    let name = field(0..100);
    if &header[257..263] == b"ustar\0" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            path.extend_from_slice(prefix);
            path.push(b'/');
        }
    }
    path.extend_from_slice(name);
}

/// The header checksum: the sum of its bytes with the checksum field read as spaces, as
/// unsigned bytes (POSIX) or signed ones (old tars).
pub fn checksum_matches(header: &[u8; BLOCK], stored: u64) -> bool {
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored) == Ok(signed)
}

/// A numeric header field: octal digits with optional leading spaces, ended by a space, a
/// NUL or the field's end (all NULs or spaces is 0); or GNU base-256 (first byte 0x80, the
/// rest big-endian). Negative and over-64-bit values are `None`.
pub fn parse_number(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        if first != 0x80 {
            return None;
        }
        return rest.iter().try_fold(0u64, |n, &b| {
            if n >> 56 != 0 {
                None
            } else {
                Some((n << 8) | u64::from(b))
            }
        });
    }
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits = &field[start..];
    let end = digits
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(digits.len());
    if digits[end..].iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |n, &d| {
        if (b'0'..=b'7').contains(&d) {
            n.checked_mul(8)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// pax records, `"<len> <key>=<value>\n"` each, `len` counting the whole record. Takes
/// `path` and `size`; other keys are ignored. NUL bytes after the last record are allowed.
fn parse_pax(
    mut records: &[u8],
    path: &mut Option<Vec<u8>>,
    size: &mut Option<u64>,
) -> Result<(), TarError> {
    while !records.is_empty() {
        if records.iter().all(|&b| b == 0) {
            break;
        }
        let space = records
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(TarError::BadPax)?;
        let len = std::str::from_utf8(&records[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or(TarError::BadPax)?;
        if len <= space + 1 || len > records.len() || records[len - 1] != b'\n' {
            return Err(TarError::BadPax);
        }
        let record = &records[space + 1..len - 1];
        let equals = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TarError::BadPax)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        match key {
            b"path" => *path = Some(value.to_vec()),
            b"size" => {
                let text = std::str::from_utf8(value).map_err(|_| TarError::BadPax)?;
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TarError::BadPax);
                }
                *size = Some(text.parse::<u64>().map_err(|_| TarError::BadPax)?);
            }
            _ => {}
        }
        records = &records[len..];
    }
    Ok(())
}

/// Builds tar archives for tests: ustar headers as bsdtar writes them, GNU long names, pax.
#[cfg(test)]
pub(crate) mod build {
    use super::BLOCK;

    /// One header block with `name`, `size`, `type_flag`, POSIX ustar magic and a good
    /// checksum.
    pub fn header(name: &[u8], size: u64, type_flag: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        let name_len = name.len().min(100);
        h[..name_len].copy_from_slice(&name[..name_len]);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14400000000\0");
        h[156] = type_flag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        h
    }

    pub fn set_checksum(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// Appends an entry (header, data, padding).
    pub fn entry(tar: &mut Vec<u8>, name: &[u8], data: &[u8], type_flag: u8) {
        tar.extend_from_slice(&header(name, data.len() as u64, type_flag));
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    pub fn file(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
        entry(tar, name.as_bytes(), data, b'0');
    }

    pub fn dir(tar: &mut Vec<u8>, name: &str) {
        entry(tar, name.as_bytes(), b"", b'5');
    }

    /// A GNU `L` entry naming the next one.
    pub fn long_name(tar: &mut Vec<u8>, name: &str) {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        entry(tar, b"././@LongLink", &data, b'L');
    }

    /// A pax `x` entry with these records.
    pub fn pax(tar: &mut Vec<u8>, records: &[(&str, &str)]) {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        entry(tar, b"./PaxHeaders/x", &data, b'x');
    }

    pub fn end(tar: &mut Vec<u8>) {
        tar.extend_from_slice(&[0; 2 * BLOCK]);
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn wants_desc(path: &[u8]) -> bool {
        path.ends_with(b"/desc")
    }

    const LIMITS: TarLimits = TarLimits { max_file: 100 };

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        File(String, Vec<u8>),
        Oversize(String, u64),
        End,
    }

    /// Feeds `tar` in pieces of `piece` bytes; returns the events and the first error.
    fn walk(tar: &[u8], piece: usize) -> (Vec<Seen>, Option<TarError>, bool) {
        let mut walker = TarWalker::new(LIMITS, wants_desc);
        let mut seen = Vec::new();
        for mut chunk in tar.chunks(piece) {
            while !chunk.is_empty() {
                let step = match walker.feed(chunk) {
                    Ok(step) => step,
                    Err(e) => return (seen, Some(e), walker.may_end()),
                };
                match step.event {
                    Some(TarEvent::File { path, data }) => seen.push(Seen::File(
                        String::from_utf8_lossy(path).into_owned(),
                        data.to_vec(),
                    )),
                    Some(TarEvent::Oversize { path, size }) => seen.push(Seen::Oversize(
                        String::from_utf8_lossy(path).into_owned(),
                        size,
                    )),
                    Some(TarEvent::End) => seen.push(Seen::End),
                    None => assert_eq!(step.consumed, chunk.len()),
                }
                chunk = &chunk[step.consumed..];
            }
        }
        let may_end = walker.may_end();
        (seen, None, may_end)
    }

    fn sample() -> Vec<u8> {
        let mut tar = Vec::new();
        dir(&mut tar, "a-1-1/");
        file(&mut tar, "a-1-1/desc", b"%FILENAME%\na\n");
        file(&mut tar, "a-1-1/files", &[7; 700]);
        dir(&mut tar, "b-1-1/");
        file(&mut tar, "b-1-1/desc", &[b'x'; 101]);
        let long = format!("{}-1-1/desc", "c".repeat(150));
        long_name(&mut tar, &long);
        entry(&mut tar, &long.as_bytes()[..100], b"long", b'0');
        pax(&mut tar, &[("mtime", "1.5"), ("path", "d-1-1/desc")]);
        file(&mut tar, "ignored-name", b"pax");
        // A pax size overrides the header's (here 0).
        pax(&mut tar, &[("size", "3")]);
        tar.extend_from_slice(&header(b"e-1-1/desc", 0, b'0'));
        tar.extend_from_slice(b"abc");
        tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
        end(&mut tar);
        // What bsdtar adds to round up to a 10240-byte record, and garbage: never read.
        tar.extend_from_slice(&[0; 3000]);
        tar.extend_from_slice(b"garbage after the end");
        tar
    }

    fn sample_events() -> Vec<Seen> {
        vec![
            Seen::File("a-1-1/desc".into(), b"%FILENAME%\na\n".to_vec()),
            Seen::Oversize("b-1-1/desc".into(), 101),
            Seen::File(format!("{}-1-1/desc", "c".repeat(150)), b"long".to_vec()),
            Seen::File("d-1-1/desc".into(), b"pax".to_vec()),
            Seen::File("e-1-1/desc".into(), b"abc".to_vec()),
            Seen::End,
        ]
    }

    #[test]
    fn every_piece_size_gives_the_same_events() {
        let tar = sample();
        for piece in (1..=1100).chain([tar.len()]) {
            let (seen, error, may_end) = walk(&tar, piece);
            assert_eq!(error, None, "piece {piece}");
            assert_eq!(seen, sample_events(), "piece {piece}");
            assert!(may_end);
        }
    }

    #[test]
    fn ustar_prefix() {
        let mut h = header(b"desc", 2, b'0');
        h[345..350].copy_from_slice(b"x-1-1");
        set_checksum(&mut h);
        let mut tar = h.to_vec();
        tar.extend_from_slice(b"hi");
        tar.resize(BLOCK * 2, 0);
        end(&mut tar);
        let (seen, error, _) = walk(&tar, 512);
        assert_eq!(error, None);
        assert_eq!(seen[0], Seen::File("x-1-1/desc".into(), b"hi".to_vec()));
    }

    #[test]
    fn truncation_anywhere_is_not_an_end() {
        let tar = sample();
        let end_at = tar.len() - 3000 - b"garbage after the end".len() - BLOCK;
        for cut in 0..end_at {
            let (_, error, may_end) = walk(&tar[..cut], 97);
            assert_eq!(error, None, "cut {cut}");
            assert!(!may_end, "cut {cut}");
        }
        // One zero block and then nothing: accepted, as GNU tar does.
        let (_, _, may_end) = walk(&tar[..end_at], 97);
        assert!(may_end);
    }

    #[test]
    fn bad_headers() {
        let mut bad = header(b"a/desc", 1, b'0');
        bad[0] = b'b';
        let mut tar = bad.to_vec();
        end(&mut tar);
        assert_eq!(walk(&tar, 512).1, Some(TarError::BadChecksum));

        let mut bad = header(b"a/desc", 1, b'0');
        bad[124..136].copy_from_slice(b"0000000009\0\0");
        set_checksum(&mut bad);
        assert_eq!(walk(&bad, 512).1, Some(TarError::BadNumber));

        let mut tar = Vec::new();
        long_name(&mut tar, &"n".repeat(MAX_LONG_NAME + 1));
        assert_eq!(walk(&tar, 512).1, Some(TarError::LongNameTooLong));

        let mut tar = header(b"x", MAX_PAX_BYTES as u64 + 1, b'x').to_vec();
        tar.resize(BLOCK * 3, 0);
        assert_eq!(walk(&tar, 512).1, Some(TarError::PaxTooLarge));

        for records in [
            &b"5 a=b\n"[..],
            b"x a=b\n",
            b"99 a=b\n",
            b"7 ab\n\n\n",
            b"6 a=bc",
        ] {
            let mut tar = Vec::new();
            entry(&mut tar, b"p", records, b'x');
            end(&mut tar);
            assert_eq!(walk(&tar, 512).1, Some(TarError::BadPax), "{records:?}");
        }
        let mut tar = Vec::new();
        pax(&mut tar, &[("size", "12x")]);
        assert_eq!(walk(&tar, 512).1, Some(TarError::BadPax));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"00000000017\0"), Some(15));
        assert_eq!(parse_number(b"   17 \0\0\0\0\0\0"), Some(15));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(b"        "), Some(0));
        assert_eq!(parse_number(b"0000008\0"), None);
        assert_eq!(parse_number(b"17 1\0"), None);
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"777777777777777777777"), Some(u64::MAX >> 1));
        assert_eq!(parse_number(b"1777777777777777777777"), Some(u64::MAX));
        assert_eq!(parse_number(b"2000000000000000000000"), None);
        let mut base256 = [0u8; 12];
        base256[0] = 0x80;
        base256[4..].copy_from_slice(&0x1_0000_0000_u64.to_be_bytes());
        assert_eq!(parse_number(&base256), Some(0x1_0000_0000));
        base256[3] = 1;
        assert_eq!(parse_number(&base256), None);
        assert_eq!(parse_number(&[0xff; 12]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_u32;
        let base = sample();
        for round in 0..300 {
            let mut tar = base.clone();
            for _ in 0..(round % 7 + 1) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % tar.len();
                tar[at] = (state >> 24) as u8;
            }
            let _ = walk(&tar, (round % 600) + 1);
        }
    }
}
