//! The authenticated datagram: an envelope around the discovery datagram of
//! `docs/protocol.md` ("Authenticated datagrams"), and the replay check.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "FLKA"
//!      4     1  envelope version, 1
//!      5     3  reserved, zero
//!      8     8  timestamp: milliseconds since the Unix epoch, big-endian
//!     16    32  HMAC-SHA256(secret, bytes 0..16 || inner datagram)
//!     48     n  the inner datagram ("FLOC" ...), unchanged
//! ```
//!
//! A datagram is taken when its MAC is right, its timestamp within [`WINDOW`] of our clock
//! either way, and the same (timestamp, MAC) was not taken before. The same datagram again is
//! a [`Refused::Repeated`]: most are honest second copies (a host on IPv4 and IPv6 sends each
//! group datagram on both, from two addresses; a static peer on the link gets it by multicast
//! and by unicast), which no check could tell from a replay; all are dropped. The pairs taken
//! are kept
//! until they leave the window, at most [`REPLAY_CACHE`] of them; when that is full the
//! oldest goes, and from then on nothing stamped at or before it is taken (so a flood can
//! make late datagrams be refused, never a replay be taken).

use std::collections::BTreeSet;
use std::fmt;

use super::{Secret, WINDOW};

/// The four bytes every authenticated datagram starts with.
pub const MAGIC: [u8; 4] = *b"FLKA";
/// The envelope version this build speaks.
pub const VERSION: u8 = 1;
/// Magic, version, reserved bytes and timestamp: what the MAC covers before the inner bytes.
pub const HEADER_LEN: usize = 16;
/// Size of the MAC.
pub const TAG_LEN: usize = 32;
/// Bytes the envelope adds to a datagram.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
// The longest datagram this build sends still fits the longest plain one in its envelope.
const _: () = assert!(
    OVERHEAD + crate::discovery::wire::MAX_SENT_DATAGRAM <= crate::discovery::wire::MAX_DATAGRAM
);
/// Most (timestamp, MAC) pairs remembered (about 48 bytes each).
pub const REPLAY_CACHE: usize = 8192;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// No envelope: a host without the secret (or an older flocon).
    Unsealed,
    /// An envelope cut short, of another version, or with reserved bytes set.
    Malformed,
    /// The MAC is wrong: another secret, or bytes changed on the way.
    BadMac,
    /// Stamped further than [`WINDOW`] from our clock.
    Stale,
    /// Stamped at or before a pair the full replay cache had to forget: maybe taken already.
    Replayed,
    /// Taken once already: a second copy (both families, or multicast and unicast) or a
    /// replay. Dropped, but no refusal.
    Repeated,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Unsealed => "no authentication (a host without the secret?)",
            Refused::Malformed => "malformed authentication envelope",
            Refused::BadMac => "wrong MAC (another secret?)",
            Refused::Stale => "timestamp outside the window (clocks apart?)",
            Refused::Replayed => "older than the replay cache (replayed?)",
            Refused::Repeated => "taken once already",
        })
    }
}

/// `inner` sealed with `secret` at `unix_ms`, appended to `out`.
pub fn seal(secret: &Secret, inner: &[u8], unix_ms: u64, out: &mut Vec<u8>) {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    header[8..16].copy_from_slice(&unix_ms.to_be_bytes());
    let tag = secret.tag(&[&header, inner]);
    out.reserve(OVERHEAD + inner.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&tag);
    out.extend_from_slice(inner);
}

/// An envelope whose MAC is right: its timestamp, MAC and inner datagram. Neither the time
/// nor replays are checked here (see [`DatagramAuth::open`]).
pub fn verify<'a>(
    secret: &Secret,
    bytes: &'a [u8],
) -> Result<(u64, [u8; TAG_LEN], &'a [u8]), Refused> {
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err(Refused::Unsealed);
    }
    if bytes.len() < OVERHEAD || bytes[4] != VERSION || bytes[5..8] != [0, 0, 0] {
        return Err(Refused::Malformed);
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let (tag, inner) = rest.split_at(TAG_LEN);
    if !secret.verify(&[header, inner], tag) {
        return Err(Refused::BadMac);
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[8..16]);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(tag);
    Ok((u64::from_be_bytes(ts), t, inner))
}

/// Seals what goes out and opens what comes in; see the module documentation.
#[derive(Debug)]
pub struct DatagramAuth {
    secret: Secret,
    /// (timestamp, MAC) of the datagrams taken and still inside the window.
    seen: BTreeSet<(u64, [u8; TAG_LEN])>,
    /// Nothing stamped at or before this is taken (set when the cache overflows).
    floor: Option<u64>,
}

impl DatagramAuth {
    pub fn new(secret: Secret) -> DatagramAuth {
        DatagramAuth {
            secret,
            seen: BTreeSet::new(),
            floor: None,
        }
    }

    /// `inner` in its envelope, stamped `unix_ms`.
    pub fn seal(&self, inner: &[u8], unix_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + inner.len());
        seal(&self.secret, inner, unix_ms, &mut out);
        out
    }

    /// The inner datagram of `bytes` received at `unix_ms`, or why it is refused.
    pub fn open<'a>(&mut self, bytes: &'a [u8], unix_ms: u64) -> Result<&'a [u8], Refused> {
        let (ts, tag, inner) = verify(&self.secret, bytes)?;
        let window = WINDOW.as_millis() as u64;
        // Forget what left the window: it would be refused as stale anyway.
        let oldest = unix_ms.saturating_sub(window);
        if self.seen.first().is_some_and(|f| f.0 < oldest) {
            self.seen = self.seen.split_off(&(oldest, [0; TAG_LEN]));
        }
        if ts.abs_diff(unix_ms) > window {
            return Err(Refused::Stale);
        }
        let below_floor = |ts: u64, floor: Option<u64>| floor.is_some_and(|f| ts <= f);
        if self.seen.contains(&(ts, tag)) {
            return Err(Refused::Repeated);
        }
        if below_floor(ts, self.floor) {
            return Err(Refused::Replayed);
        }
        if self.seen.len() >= REPLAY_CACHE {
            if let Some((first, _)) = self.seen.pop_first() {
                self.floor = Some(self.floor.map_or(first, |f| f.max(first)));
            }
            if below_floor(ts, self.floor) {
                return Err(Refused::Replayed);
            }
        }
        self.seen.insert((ts, tag));
        Ok(inner)
    }

    /// (timestamp, MAC) pairs remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn secret(b: u8) -> Secret {
        Secret::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn layout_is_as_documented() {
        let mut out = Vec::new();
        seal(
            &secret(1),
            b"FLOC\x02inner",
            0x0102_0304_0506_0708,
            &mut out,
        );
        assert_eq!(&out[..8], b"FLKA\x01\0\0\0");
        assert_eq!(&out[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&out[48..], b"FLOC\x02inner");
        let mut mac = secret(1).mac();
        hmac::Mac::update(&mut mac, &out[..16]);
        hmac::Mac::update(&mut mac, b"FLOC\x02inner");
        let want: [u8; 32] = hmac::Mac::finalize(mac).into_bytes().into();
        assert_eq!(&out[16..48], &want);
    }

    #[test]
    fn good_mac_opens_wrong_key_truncated_or_tampered_do_not() {
        let mut a = DatagramAuth::new(secret(1));
        let mut b = DatagramAuth::new(secret(2));
        let sealed = a.seal(b"hello", NOW);
        assert_eq!(b.open(&sealed, NOW), Err(Refused::BadMac));
        assert_eq!(a.open(&sealed, NOW), Ok(&b"hello"[..]));
        assert_eq!(a.open(b"FLOC\x02plain", NOW), Err(Refused::Unsealed));
        assert_eq!(a.open(b"", NOW), Err(Refused::Unsealed));
        for cut in [4, 16, 47] {
            assert_eq!(
                a.open(&sealed[..cut], NOW),
                Err(Refused::Malformed),
                "{cut}"
            );
        }
        // Cut inside the inner datagram: the MAC no longer matches.
        let s2 = a.seal(b"hello", NOW + 1);
        assert_eq!(a.open(&s2[..s2.len() - 1], NOW), Err(Refused::BadMac));
        for i in [4, 5, 9, 20, 50] {
            let mut t = a.seal(b"hello", NOW + 2);
            t[i] ^= 1;
            assert!(a.open(&t, NOW).is_err(), "byte {i} flipped");
        }
        // An empty inner datagram is fine as far as the envelope goes.
        let empty = a.seal(b"", NOW + 3);
        assert_eq!(a.open(&empty, NOW), Ok(&b""[..]));
    }

    #[test]
    fn replays_and_skew() {
        let mut a = DatagramAuth::new(secret(1));
        let sealed = a.seal(b"x", NOW);
        assert!(a.open(&sealed, NOW).is_ok());
        assert_eq!(a.open(&sealed, NOW + 1), Err(Refused::Repeated));
        assert_eq!(a.open(&sealed, NOW + 29_999), Err(Refused::Repeated));
        assert_eq!(a.open(&sealed, NOW + 30_001), Err(Refused::Stale));
        assert_eq!(a.remembered(), 0, "forgotten once out of the window");
        // Clocks 30 s apart either way are fine, more is not.
        let ahead = a.seal(b"y", NOW + 30_000);
        assert!(a.open(&ahead, NOW).is_ok());
        let behind = a.seal(b"y", NOW - 30_000);
        assert!(a.open(&behind, NOW).is_ok());
        assert_eq!(
            a.open(&a.seal(b"z", NOW + 30_001), NOW),
            Err(Refused::Stale)
        );
        assert_eq!(
            a.open(&a.seal(b"z", NOW - 30_001), NOW),
            Err(Refused::Stale)
        );
        // A clock at the epoch itself (found by fuzz/sealed_datagram) is no replay.
        let mut b = DatagramAuth::new(secret(1));
        assert!(b.open(&b.seal(b"early", 0), 0).is_ok());
        // Two datagrams with the same bytes at different times are both taken.
        assert!(a.open(&a.seal(b"same", NOW + 5), NOW).is_ok());
        assert!(a.open(&a.seal(b"same", NOW + 6), NOW).is_ok());
    }

    #[test]
    fn a_full_cache_never_lets_a_replay_in() {
        let mut a = DatagramAuth::new(secret(1));
        let first = a.seal(b"first", NOW - 1000);
        assert!(a.open(&first, NOW).is_ok());
        for i in 0..REPLAY_CACHE as u64 {
            let s = a.seal(&i.to_be_bytes(), NOW + i % 1000);
            assert!(a.open(&s, NOW).is_ok());
        }
        assert!(a.remembered() <= REPLAY_CACHE);
        // `first` was pushed out of the cache, and is still refused.
        assert_eq!(a.open(&first, NOW), Err(Refused::Replayed));
        // Newer datagrams are still taken.
        assert!(a.open(&a.seal(b"new", NOW + 2000), NOW).is_ok());
    }
}
