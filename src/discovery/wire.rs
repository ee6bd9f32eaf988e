//! The discovery datagram format: a pure, bounded, total parser and its emitter.
//!
//! This module owns the byte layout described in `docs/protocol.md` and nothing else: it never
//! touches a socket or a clock, and it does not decide what a message means (that is
//! `protocol.rs`). `parse` never panics, whatever the bytes; every message it accepts is
//! re-emitted byte for byte by `emit` (the encoding is canonical).

use std::fmt;

use crate::sync_db::Sha256;

/// The four bytes every flocon datagram starts with.
pub const MAGIC: [u8; 4] = *b"FLOC";
/// The only version this build speaks. Version 2 added the expected content of a WHO_HAS;
/// version 1 datagrams are dropped like any other unsupported version.
pub const VERSION: u8 = 2;
/// Size of the common header: magic, version, kind, sender host id.
pub const HEADER_LEN: usize = 14;
/// Longest distribution id or architecture name on the wire.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest file name a WHO_HAS can carry.
pub const MAX_NAME_LEN: usize = 255;
/// Most fingerprints one SUMMARY_DELTA or SUMMARY_PART carries (added and removed together),
/// so that every datagram fits a 1,400-byte payload: no IP fragments on any usual link.
pub const MAX_FINGERPRINTS: usize = 340;
/// Largest datagram a version 2 host accepts (a SUMMARY_PART or SUMMARY_DELTA that is full).
pub const MAX_DATAGRAM: usize = HEADER_LEN + 10 + 4 * MAX_FINGERPRINTS;
/// Most fingerprints this build puts in one datagram: 12 fewer than it accepts, so that in the
/// 48-byte envelope of a shared secret (`secret::datagram`) its longest datagram is still
/// [`MAX_DATAGRAM`] bytes, one unfragmented packet wherever a plain one is.
pub const SEND_FINGERPRINTS: usize = MAX_FINGERPRINTS - 12;
/// Largest datagram this build sends, outside any envelope.
pub const MAX_SENT_DATAGRAM: usize = HEADER_LEN + 10 + 4 * SEND_FINGERPRINTS;

/// The kind byte at offset 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Announce = 1,
    Hello = 2,
    Goodbye = 3,
    WhoHas = 4,
    Have = 5,
    HaveNot = 6,
    SummaryDelta = 7,
    SummaryRequest = 8,
    SummaryPart = 9,
    Fetching = 10,
    Claim = 12,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Announce),
            2 => Some(Kind::Hello),
            3 => Some(Kind::Goodbye),
            4 => Some(Kind::WhoHas),
            5 => Some(Kind::Have),
            6 => Some(Kind::HaveNot),
            7 => Some(Kind::SummaryDelta),
            8 => Some(Kind::SummaryRequest),
            9 => Some(Kind::SummaryPart),
            10 => Some(Kind::Fetching),
            12 => Some(Kind::Claim),
            _ => None,
        }
    }
}

/// What a host says about itself in ANNOUNCE and HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The TCP port its peer file server listens on (never 0).
    pub tcp_port: u16,
    /// `ID` of its `/etc/os-release`; see [`is_valid_label`].
    pub distro: String,
    /// Its architecture, e.g. `x86_64`; see [`is_valid_label`].
    pub arch: String,
    /// The version of its cache summary (see `summary.rs`); 0 when it has none yet.
    pub summary: u32,
}

/// What the asker's sync database says the file must be: its size (`%CSIZE%`) and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    pub sha256: Sha256,
}

/// The body of a datagram, one variant per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Periodic "I am here" to the group, or a unicast answer to a HELLO.
    Announce(Announcement),
    /// "Who is there?": carries the sender's announcement; everyone answers with a unicast ANNOUNCE.
    Hello(Announcement),
    /// Clean shutdown: forget me now.
    Goodbye,
    /// "Do you have this file?" The name is raw bytes here: the parser only bounds its length,
    /// the receiver checks it (see [`file_name`]) and answers HAVE_NOT when it is unfit.
    /// `expected`: the content the asker wants, when its database knows it; the receiver
    /// answers HAVE only for a file of exactly that size and SHA-256.
    WhoHas {
        question: u32,
        name: Vec<u8>,
        expected: Option<Expected>,
    },
    /// "Yes" to the WHO_HAS with this question id.
    Have { question: u32 },
    /// "No" to the WHO_HAS with this question id.
    HaveNot { question: u32 },
    /// "Yes, being fetched from upstream now, `bytes` of it here so far": the
    /// file streams from the answerer's spool as it arrives (counts as a HAVE).
    Fetching { question: u32, bytes: u64 },
    /// To the group: the sender's cache summary moved from version `version - 1` to `version`
    /// by adding and removing these fingerprints (each list strictly ascending).
    SummaryDelta {
        version: u32,
        added: Vec<u32>,
        removed: Vec<u32>,
    },
    /// Unicast: "send me your whole cache summary".
    SummaryRequest,
    /// Unicast answer to a SUMMARY_REQUEST: part `part` (0-based) of `parts` of summary
    /// version `version`; the parts split the ascending fingerprint list in order.
    SummaryPart {
        version: u32,
        part: u16,
        parts: u16,
        fingerprints: Vec<u32>,
    },
    /// To the group (or unicast, answering a CLAIM): where the sender stands on downloading
    /// this file from upstream (see [`ClaimState`] and `claims.rs`). The name is raw bytes,
    /// checked by the receiver as for WHO_HAS; `expected` as in WHO_HAS.
    Claim {
        state: ClaimState,
        name: Vec<u8>,
        expected: Option<Expected>,
    },
}

impl Body {
    /// The kind byte this body is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Announce(_) => Kind::Announce,
            Body::Hello(_) => Kind::Hello,
            Body::Goodbye => Kind::Goodbye,
            Body::WhoHas { .. } => Kind::WhoHas,
            Body::Have { .. } => Kind::Have,
            Body::HaveNot { .. } => Kind::HaveNot,
            Body::SummaryDelta { .. } => Kind::SummaryDelta,
            Body::SummaryRequest => Kind::SummaryRequest,
            Body::SummaryPart { .. } => Kind::SummaryPart,
            Body::Fetching { .. } => Kind::Fetching,
            Body::Claim { .. } => Kind::Claim,
        }
    }
}

/// The state byte of a CLAIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ClaimState {
    /// "Nobody has this file: I mean to fetch it from upstream."
    Claiming = 0,
    /// "I lead its download from upstream (starting): follow me."
    Leading = 1,
    /// "I lead it and my file server streams it as it arrives: fetch it from me now."
    Serving = 2,
    /// "I led it but will not serve it (my download ended before my file server could stream
    /// it): do not wait for me."
    Released = 3,
}

/// One datagram: who sent it and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's random per-start host id.
    pub host_id: u64,
    pub body: Body,
}

/// Why a datagram was not accepted. All of them mean "drop it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header.
    TooShort,
    /// Not a flocon datagram.
    BadMagic,
    /// A flocon datagram of a version this build does not speak.
    UnsupportedVersion(u8),
    /// A kind this build does not know (perhaps from a newer minor revision).
    UnknownKind(u8),
    /// The body ends before its fields do.
    Truncated,
    /// Bytes after the last field.
    TrailingBytes,
    /// Announced TCP port 0.
    ZeroPort,
    /// A distribution id or architecture that is empty, too long or has characters outside
    /// `[A-Za-z0-9._-]`.
    BadLabel,
    /// A WHO_HAS content flag other than 0 or 1.
    BadFlag(u8),
    /// A summary datagram with more than [`MAX_FINGERPRINTS`] fingerprints, a list not
    /// strictly ascending, version 0, or a part number not below the number of parts.
    BadSummary,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooShort => write!(f, "shorter than the {HEADER_LEN}-byte header"),
            WireError::BadMagic => write!(f, "bad magic"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            WireError::UnknownKind(k) => write!(f, "unknown kind {k}"),
            WireError::Truncated => write!(f, "truncated body"),
            WireError::TrailingBytes => write!(f, "trailing bytes"),
            WireError::ZeroPort => write!(f, "announced TCP port 0"),
            WireError::BadLabel => write!(f, "bad distribution or architecture label"),
            WireError::BadFlag(b) => write!(f, "bad content flag {b}"),
            WireError::BadSummary => write!(f, "bad cache summary"),
        }
    }
}

impl std::error::Error for WireError {}

/// True for a distribution id or architecture name that can go on the wire: 1 to 64 bytes of
/// ASCII letters, digits, `.`, `_` and `-` (what os-release allows for `ID`, and every pacman
/// architecture name). Such labels are also safe to print in logs.
pub fn is_valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// True for a file name a WHO_HAS may ask about and a host may look up: 1 to 255 bytes of
/// UTF-8 without `/` or NUL. (`.` and `..` are refused as well: they are never package files.)
pub fn is_valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// The checked file name of a WHO_HAS name field, or `None` if it must be answered HAVE_NOT.
pub fn file_name(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(raw)
        .ok()
        .filter(|name| is_valid_file_name(name))
}

/// A bounds-checked reader over a datagram body. Every read returns `Truncated` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| WireError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    fn label(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| WireError::BadLabel)?;
        if !is_valid_label(s) {
            return Err(WireError::BadLabel);
        }
        Ok(s.to_owned())
    }

    fn announcement(&mut self) -> Result<Announcement, WireError> {
        let tcp_port = self.u16()?;
        let distro = self.label()?;
        let arch = self.label()?;
        if tcp_port == 0 {
            return Err(WireError::ZeroPort);
        }
        let summary = self.u32()?;
        Ok(Announcement {
            tcp_port,
            distro,
            arch,
            summary,
        })
    }

    /// A u16 count then that many u32 fingerprints, strictly ascending.
    fn fingerprints(&mut self, room: usize) -> Result<Vec<u32>, WireError> {
        let n = usize::from(self.u16()?);
        if n > room {
            return Err(WireError::BadSummary);
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let fp = self.u32()?;
            if out.last().is_some_and(|&last| last >= fp) {
                return Err(WireError::BadSummary);
            }
            out.push(fp);
        }
        Ok(out)
    }

    fn version(&mut self) -> Result<u32, WireError> {
        match self.u32()? {
            0 => Err(WireError::BadSummary),
            v => Ok(v),
        }
    }

    /// A length-prefixed file name and the content flag with its optional size and SHA-256
    /// (WHO_HAS, CLAIM).
    fn name_and_content(&mut self) -> Result<(Vec<u8>, Option<Expected>), WireError> {
        let len = usize::from(self.u8()?);
        let name = self.take(len)?.to_vec();
        let expected = match self.u8()? {
            0 => None,
            1 => Some(Expected {
                size: self.u64()?,
                sha256: Sha256(self.array()?),
            }),
            flag => return Err(WireError::BadFlag(flag)),
        };
        Ok((name, expected))
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Parse one datagram. Pure and total: any bytes give `Ok` or a `WireError`, never a panic;
/// it allocates at most the two labels or the 255-byte name.
pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() < HEADER_LEN {
        // Say BadMagic for short foreign datagrams too, so callers can count "not ours".
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(WireError::BadMagic);
        }
        return Err(WireError::TooShort);
    }
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let kind_byte = r.u8()?;
    let kind = Kind::from_byte(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
    let host_id = r.u64()?;
    let body = match kind {
        Kind::Announce => Body::Announce(r.announcement()?),
        Kind::Hello => Body::Hello(r.announcement()?),
        Kind::Goodbye => Body::Goodbye,
        Kind::WhoHas => {
            let question = r.u32()?;
            let (name, expected) = r.name_and_content()?;
            Body::WhoHas {
                question,
                name,
                expected,
            }
        }
        Kind::Claim => {
            let state = match r.u8()? {
                0 => ClaimState::Claiming,
                1 => ClaimState::Leading,
                2 => ClaimState::Serving,
                3 => ClaimState::Released,
                flag => return Err(WireError::BadFlag(flag)),
            };
            let (name, expected) = r.name_and_content()?;
            Body::Claim {
                state,
                name,
                expected,
            }
        }
        Kind::Have => Body::Have { question: r.u32()? },
        Kind::HaveNot => Body::HaveNot { question: r.u32()? },
        Kind::Fetching => Body::Fetching {
            question: r.u32()?,
            bytes: r.u64()?,
        },
        Kind::SummaryDelta => {
            let version = r.version()?;
            let added = r.fingerprints(MAX_FINGERPRINTS)?;
            let removed = r.fingerprints(MAX_FINGERPRINTS - added.len())?;
            Body::SummaryDelta {
                version,
                added,
                removed,
            }
        }
        Kind::SummaryRequest => Body::SummaryRequest,
        Kind::SummaryPart => {
            let version = r.version()?;
            let part = r.u16()?;
            let parts = r.u16()?;
            if part >= parts {
                return Err(WireError::BadSummary);
            }
            let fingerprints = r.fingerprints(MAX_FINGERPRINTS)?;
            Body::SummaryPart {
                version,
                part,
                parts,
                fingerprints,
            }
        }
    };
    r.finish()?;
    Ok(Message { host_id, body })
}

/// Append the datagram for `msg` to `out` (which is not cleared first).
///
/// For every message `parse` returned, `parse(emit(m)) == m` and the bytes are the same as the
/// parsed ones. A message built by hand with fields the parser would refuse (a label longer
/// than 64 bytes, a name longer than 255) is written with those fields cut to their limits so
/// the output stays well-formed; the protocol core never builds such messages.
pub fn emit(msg: &Message, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(msg.body.kind() as u8);
    out.extend_from_slice(&msg.host_id.to_be_bytes());
    match &msg.body {
        Body::Announce(a) | Body::Hello(a) => {
            out.extend_from_slice(&a.tcp_port.to_be_bytes());
            put_bytes(out, a.distro.as_bytes(), MAX_LABEL_LEN);
            put_bytes(out, a.arch.as_bytes(), MAX_LABEL_LEN);
            out.extend_from_slice(&a.summary.to_be_bytes());
        }
        Body::Goodbye => {}
        Body::WhoHas {
            question,
            name,
            expected,
        } => {
            out.extend_from_slice(&question.to_be_bytes());
            put_name_and_content(out, name, *expected);
        }
        Body::Claim {
            state,
            name,
            expected,
        } => {
            out.push(*state as u8);
            put_name_and_content(out, name, *expected);
        }
        Body::Have { question } | Body::HaveNot { question } => {
            out.extend_from_slice(&question.to_be_bytes());
        }
        Body::Fetching { question, bytes } => {
            out.extend_from_slice(&question.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Body::SummaryDelta {
            version,
            added,
            removed,
        } => {
            out.extend_from_slice(&version.to_be_bytes());
            let added = &added[..added.len().min(MAX_FINGERPRINTS)];
            put_fingerprints(out, added);
            put_fingerprints(
                out,
                &removed[..removed.len().min(MAX_FINGERPRINTS - added.len())],
            );
        }
        Body::SummaryRequest => {}
        Body::SummaryPart {
            version,
            part,
            parts,
            fingerprints,
        } => {
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&part.to_be_bytes());
            out.extend_from_slice(&parts.to_be_bytes());
            put_fingerprints(
                out,
                &fingerprints[..fingerprints.len().min(MAX_FINGERPRINTS)],
            );
        }
    }
}

/// A file name (cut to 255 bytes) and the content flag with its size and SHA-256.
fn put_name_and_content(out: &mut Vec<u8>, name: &[u8], expected: Option<Expected>) {
    put_bytes(out, name, MAX_NAME_LEN);
    match expected {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            out.extend_from_slice(&e.size.to_be_bytes());
            out.extend_from_slice(&e.sha256.0);
        }
    }
}

/// A u16 count and the fingerprints (at most [`MAX_FINGERPRINTS`], cut by the caller).
fn put_fingerprints(out: &mut Vec<u8>, fps: &[u32]) {
    out.extend_from_slice(&(fps.len() as u16).to_be_bytes());
    for fp in fps {
        out.extend_from_slice(&fp.to_be_bytes());
    }
}

/// A length byte and up to `max` (at most 255) bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let n = bytes.len().min(max).min(usize::from(u8::MAX));
    out.push(n as u8);
    out.extend_from_slice(&bytes[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(port: u16, distro: &str, arch: &str) -> Announcement {
        Announcement {
            tcp_port: port,
            distro: distro.to_owned(),
            arch: arch.to_owned(),
            summary: 0,
        }
    }

    fn samples() -> Vec<Message> {
        let id = 0x0123_4567_89ab_cdef;
        vec![
            Message {
                host_id: id,
                body: Body::Announce(ann(19432, "arch", "x86_64")),
            },
            Message {
                host_id: u64::MAX,
                body: Body::Hello(ann(1, "archarm", "aarch64")),
            },
            Message {
                host_id: 0,
                body: Body::Goodbye,
            },
            Message {
                host_id: id,
                body: Body::WhoHas {
                    question: 7,
                    name: b"zstd-1.5.6-1-x86_64.pkg.tar.zst".to_vec(),
                    expected: None,
                },
            },
            Message {
                host_id: id,
                body: Body::WhoHas {
                    question: 8,
                    name: b"zstd-1.5.6-1-x86_64.pkg.tar.zst".to_vec(),
                    expected: Some(Expected {
                        size: 0x0102_0304_0506_0708,
                        sha256: Sha256([0xAB; 32]),
                    }),
                },
            },
            Message {
                host_id: id,
                body: Body::WhoHas {
                    question: u32::MAX,
                    name: vec![b'a'; MAX_NAME_LEN],
                    expected: Some(Expected {
                        size: u64::MAX,
                        sha256: Sha256([0xFF; 32]),
                    }),
                },
            },
            Message {
                host_id: id,
                body: Body::WhoHas {
                    question: 0,
                    name: Vec::new(),
                    expected: None,
                },
            },
            Message {
                host_id: id,
                body: Body::Have { question: 42 },
            },
            Message {
                host_id: id,
                body: Body::Fetching {
                    question: 44,
                    bytes: 0x0102_0304_0506_0708,
                },
            },
            Message {
                host_id: id,
                body: Body::HaveNot { question: 43 },
            },
            Message {
                host_id: id,
                body: Body::Announce(Announcement {
                    summary: 0xDEAD_BEEF,
                    ..ann(80, "arch", "aarch64")
                }),
            },
            Message {
                host_id: id,
                body: Body::SummaryDelta {
                    version: 2,
                    added: vec![1, 5, 9],
                    removed: vec![3],
                },
            },
            Message {
                host_id: id,
                body: Body::SummaryDelta {
                    version: u32::MAX,
                    added: Vec::new(),
                    removed: (0..MAX_FINGERPRINTS as u32).collect(),
                },
            },
            Message {
                host_id: id,
                body: Body::SummaryRequest,
            },
            Message {
                host_id: id,
                body: Body::SummaryPart {
                    version: 1,
                    part: 0,
                    parts: 1,
                    fingerprints: Vec::new(),
                },
            },
            Message {
                host_id: id,
                body: Body::SummaryPart {
                    version: 7,
                    part: 199,
                    parts: 200,
                    fingerprints: (0..MAX_FINGERPRINTS as u32).map(|i| i * 3).collect(),
                },
            },
            Message {
                host_id: id,
                body: Body::Announce(ann(
                    u16::MAX,
                    &"d".repeat(MAX_LABEL_LEN),
                    &"a".repeat(MAX_LABEL_LEN),
                )),
            },
            Message {
                host_id: id,
                body: Body::Claim {
                    state: ClaimState::Claiming,
                    name: b"zstd-1.5.6-1-x86_64.pkg.tar.zst".to_vec(),
                    expected: Some(Expected {
                        size: 5,
                        sha256: Sha256([0x11; 32]),
                    }),
                },
            },
            Message {
                host_id: id,
                body: Body::Claim {
                    state: ClaimState::Leading,
                    name: b"x.sig".to_vec(),
                    expected: None,
                },
            },
            Message {
                host_id: id,
                body: Body::Claim {
                    state: ClaimState::Serving,
                    name: b"y".to_vec(),
                    expected: None,
                },
            },
        ]
    }

    #[test]
    fn claim_layout_byte_by_byte() {
        let claim = Message {
            host_id: 9,
            body: Body::Claim {
                state: ClaimState::Claiming,
                name: b"x".to_vec(),
                expected: Some(Expected {
                    size: 300,
                    sha256: Sha256([7; 32]),
                }),
            },
        };
        let expected: Vec<u8> = [
            &b"FLOC"[..],
            &[2, 12],
            &[0, 0, 0, 0, 0, 0, 0, 9],
            &[0],
            &[1],
            b"x",
            &[1],
            &[0, 0, 0, 0, 0, 0, 1, 44],
            &[7; 32],
        ]
        .concat();
        assert_eq!(bytes_of(&claim), expected);
        let leading = Message {
            host_id: 9,
            body: Body::Claim {
                state: ClaimState::Leading,
                name: b"x.sig".to_vec(),
                expected: None,
            },
        };
        let bytes = bytes_of(&leading);
        assert_eq!(
            bytes,
            [
                &b"FLOC"[..],
                &[2, 12],
                &[0, 0, 0, 0, 0, 0, 0, 9],
                &[1, 5],
                b"x.sig",
                &[0]
            ]
            .concat()
        );
        let mut serving = bytes.clone();
        serving[14] = 2;
        assert!(matches!(
            parse(&serving).unwrap().body,
            Body::Claim {
                state: ClaimState::Serving,
                ..
            }
        ));
        let mut bad = bytes.clone();
        bad[14] = 4;
        assert_eq!(parse(&bad), Err(WireError::BadFlag(4)));
    }

    fn bytes_of(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        emit(msg, &mut out);
        out
    }

    #[test]
    fn announce_layout_byte_by_byte() {
        let msg = Message {
            host_id: 0x0102_0304_0506_0708,
            body: Body::Announce(ann(0x4BE8, "arch", "x86_64")),
        };
        let expected: Vec<u8> = [
            &b"FLOC"[..],
            &[2, 1],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[0x4B, 0xE8],
            &[4],
            b"arch",
            &[6],
            b"x86_64",
            &[0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes_of(&msg), expected);
    }

    #[test]
    fn who_has_and_answers_layout() {
        let who = Message {
            host_id: 9,
            body: Body::WhoHas {
                question: 0x0A0B_0C0D,
                name: b"x.sig".to_vec(),
                expected: None,
            },
        };
        let expected: Vec<u8> = [
            &b"FLOC"[..],
            &[2, 4],
            &[0, 0, 0, 0, 0, 0, 0, 9],
            &[0x0A, 0x0B, 0x0C, 0x0D],
            &[5],
            b"x.sig",
            &[0],
        ]
        .concat();
        assert_eq!(bytes_of(&who), expected);
        let with_content = Message {
            host_id: 9,
            body: Body::WhoHas {
                question: 1,
                name: b"x".to_vec(),
                expected: Some(Expected {
                    size: 300,
                    sha256: Sha256([7; 32]),
                }),
            },
        };
        let expected: Vec<u8> = [
            &b"FLOC"[..],
            &[2, 4],
            &[0, 0, 0, 0, 0, 0, 0, 9],
            &[0, 0, 0, 1],
            &[1],
            b"x",
            &[1],
            &[0, 0, 0, 0, 0, 0, 1, 44],
            &[7; 32],
        ]
        .concat();
        assert_eq!(bytes_of(&with_content), expected);
        let mut bad_flag = expected[..HEADER_LEN + 6].to_vec();
        bad_flag.push(2);
        assert_eq!(parse(&bad_flag), Err(WireError::BadFlag(2)));
        let have = bytes_of(&Message {
            host_id: 9,
            body: Body::Have { question: 1 },
        });
        assert_eq!(&have[4..6], &[2, 5]);
        assert_eq!(&have[14..], &[0, 0, 0, 1]);
        let not = bytes_of(&Message {
            host_id: 9,
            body: Body::HaveNot { question: 1 },
        });
        assert_eq!(&not[4..6], &[2, 6]);
        let bye = bytes_of(&Message {
            host_id: 9,
            body: Body::Goodbye,
        });
        assert_eq!(bye.len(), HEADER_LEN);
        assert_eq!(bye[5], 3);
    }

    #[test]
    fn round_trip_every_kind() {
        for msg in samples() {
            let bytes = bytes_of(&msg);
            assert!(bytes.len() <= MAX_DATAGRAM);
            assert_eq!(parse(&bytes), Ok(msg.clone()), "{bytes:?}");
            // Canonical: parse then emit gives the same bytes back.
            assert_eq!(bytes_of(&parse(&bytes).unwrap()), bytes);
        }
    }

    #[test]
    fn emit_appends() {
        let mut out = vec![0xEE];
        emit(&samples()[2], &mut out);
        assert_eq!(out[0], 0xEE);
        assert_eq!(parse(&out[1..]), Ok(samples()[2].clone()));
        assert!(matches!(samples()[2].body, Body::Goodbye));
    }

    #[test]
    fn every_truncation_is_refused() {
        for msg in samples() {
            let bytes = bytes_of(&msg);
            for len in 0..bytes.len() {
                let got = parse(&bytes[..len]);
                let want_short = if len < HEADER_LEN {
                    WireError::TooShort
                } else {
                    WireError::Truncated
                };
                assert_eq!(got, Err(want_short), "{msg:?} cut at {len}");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for msg in samples() {
            let mut bytes = bytes_of(&msg);
            bytes.push(0);
            assert_eq!(parse(&bytes), Err(WireError::TrailingBytes));
        }
    }

    #[test]
    fn bad_magic_and_foreign_data() {
        let mut bytes = bytes_of(&samples()[0]);
        bytes[0] = b'X';
        assert_eq!(parse(&bytes), Err(WireError::BadMagic));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Err(WireError::BadMagic));
        assert_eq!(parse(b"xy"), Err(WireError::BadMagic));
        assert_eq!(parse(b""), Err(WireError::TooShort));
        assert_eq!(parse(b"FLO"), Err(WireError::TooShort));
    }

    #[test]
    fn fetching_layout() {
        let msg = Message {
            host_id: 0x0102_0304_0506_0708,
            body: Body::Fetching {
                question: 1,
                bytes: 300,
            },
        };
        let want: &[u8] = &[
            0x46, 0x4C, 0x4F, 0x43, 0x02, 0x0A, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0,
            0, 0x01, 0x2C,
        ];
        assert_eq!(bytes_of(&msg), want);
        assert_eq!(parse(want), Ok(msg));
        assert_eq!(parse(&want[..want.len() - 1]), Err(WireError::Truncated));
    }

    #[test]
    fn future_version_and_unknown_kind() {
        let mut bytes = bytes_of(&samples()[0]);
        bytes[4] = 3;
        assert_eq!(parse(&bytes), Err(WireError::UnsupportedVersion(3)));
        // Version 1 (before the expected content): dropped like any other version.
        bytes[4] = 1;
        assert_eq!(parse(&bytes), Err(WireError::UnsupportedVersion(1)));
        bytes[4] = 0;
        assert_eq!(parse(&bytes), Err(WireError::UnsupportedVersion(0)));
        let mut bytes = bytes_of(&samples()[2]);
        for k in [0u8, 11, 13, 200, 255] {
            bytes[5] = k;
            assert_eq!(parse(&bytes), Err(WireError::UnknownKind(k)));
        }
    }

    #[test]
    fn bad_labels_and_port() {
        let good = bytes_of(&samples()[0]);
        // port 0
        let mut b = good.clone();
        b[14] = 0;
        b[15] = 0;
        assert_eq!(parse(&b), Err(WireError::ZeroPort));
        // empty distro
        let b = [&good[..16], &[0u8][..], &[6], b"x86_64"].concat();
        assert_eq!(parse(&b), Err(WireError::BadLabel));
        // space, slash, non-ASCII, control character
        for bad in [
            &b"ar h"[..],
            b"ar/h",
            "är".as_bytes(),
            b"a\nb",
            &[0xff, 0xfe],
        ] {
            let b = [&good[..16], &[bad.len() as u8][..], bad, &[6], b"x86_64"].concat();
            assert_eq!(parse(&b), Err(WireError::BadLabel), "{bad:?}");
        }
        // oversized label
        let long = vec![b'a'; MAX_LABEL_LEN + 1];
        let b = [&good[..16], &[long.len() as u8][..], &long, &[6], b"x86_64"].concat();
        assert_eq!(parse(&b), Err(WireError::BadLabel));
    }

    #[test]
    fn oversized_names_are_cut_by_emit_and_cannot_be_expressed() {
        let msg = Message {
            host_id: 1,
            body: Body::WhoHas {
                question: 1,
                name: vec![b'n'; 300],
                expected: Some(Expected {
                    size: 1,
                    sha256: Sha256([0; 32]),
                }),
            },
        };
        let bytes = bytes_of(&msg);
        assert_eq!(bytes.len(), HEADER_LEN + 4 + 1 + MAX_NAME_LEN + 1 + 8 + 32);
        assert!(bytes.len() <= MAX_DATAGRAM);
        match parse(&bytes) {
            Ok(Message {
                body: Body::WhoHas { name, .. },
                ..
            }) => assert_eq!(name.len(), MAX_NAME_LEN),
            other => panic!("{other:?}"),
        }
        // A length byte of 255 with 256 bytes behind it: the flag is then 'n'.
        let b = [&bytes[..HEADER_LEN + 5 + MAX_NAME_LEN], b"n"].concat();
        assert_eq!(parse(&b), Err(WireError::BadFlag(b'n')));
        let b = [&bytes[..], b"n"].concat();
        assert_eq!(parse(&b), Err(WireError::TrailingBytes));
    }

    #[test]
    fn file_name_checks() {
        assert_eq!(
            file_name(b"a-1-1-any.pkg.tar.zst"),
            Some("a-1-1-any.pkg.tar.zst")
        );
        assert!(file_name(b"gcc-libs-1:14.1-1-x86_64.pkg.tar.zst.sig").is_some());
        assert!(file_name("ü-1-1-any.pkg.tar.zst".as_bytes()).is_some());
        for bad in [&b""[..], b"a/b", b"/", b"a\0b", b".", b"..", &[0xC3, 0x28]] {
            assert_eq!(file_name(bad), None, "{bad:?}");
        }
        assert!(!is_valid_file_name(&"n".repeat(256)));
    }

    #[test]
    fn the_fuzz_seeds_are_version_2_and_canonical() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/discovery_datagram"
        );
        let mut with_content = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let msg = parse(&bytes).unwrap();
            assert_eq!(bytes_of(&msg), bytes);
            if let Body::WhoHas {
                expected: Some(_), ..
            } = msg.body
            {
                with_content += 1;
            }
        }
        assert_eq!(with_content, 1);
    }

    /// A tiny xorshift so the test needs no crate; deterministic.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = Vec::new();
        for round in 0..200_000 {
            buf.clear();
            let len = (next(&mut s) % 1500) as usize;
            for _ in 0..len {
                buf.push(next(&mut s) as u8);
            }
            // Half the rounds get a valid header so the body parsers are exercised too.
            if round % 2 == 0 && buf.len() >= HEADER_LEN {
                buf[..4].copy_from_slice(&MAGIC);
                buf[4] = VERSION;
                buf[5] = 1 + (buf[5] % 9);
            }
            if let Ok(msg) = parse(&buf) {
                assert_eq!(bytes_of(&msg), buf);
            }
        }
    }

    #[test]
    fn mutations_of_valid_messages_never_panic() {
        let mut s = 0xDEAD_BEEF_u64;
        for msg in samples() {
            let bytes = bytes_of(&msg);
            for _ in 0..5_000 {
                let mut b = bytes.clone();
                let flips = 1 + next(&mut s) % 3;
                for _ in 0..flips {
                    let i = (next(&mut s) as usize) % b.len();
                    b[i] = next(&mut s) as u8;
                }
                if let Ok(m) = parse(&b) {
                    assert_eq!(bytes_of(&m), b);
                }
            }
        }
    }
}
