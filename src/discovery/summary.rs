//! Cache summaries: what each host holds, known in advance, so that a lookup asks only the
//! peers that may have the file and a miss costs no datagram and no wait.
//!
//! A summary is the set of 32-bit fingerprints of the file names in a host's caches (the first
//! four bytes of the SHA-256 of the name). It is a hint, never a proof: two names can share a
//! fingerprint (about one chance in 2^32 per pair), a file may have changed since, and a peer's
//! summary may be stale, so a peer whose summary says "maybe" is still asked and its HAVE is
//! still checked. A peer whose summary is not known is asked about everything, as before
//! summaries existed.
//!
//! Pure: no socket, no clock. [`LocalSummary`] follows this host's caches and cuts deltas and
//! parts to send; [`PeerSummary`] rebuilds a peer's from them. `protocol.rs` decides when.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::wire::SEND_FINGERPRINTS;

/// Most parts a summary may have: 200 × 340 = 68,000 fingerprints (272 KiB) from a peer, 200 ×
/// 328 = 65,600 in this host's own (`SEND_FINGERPRINTS` a part). A peer that
/// announces more is treated as having no summary (asked about everything).
pub const MAX_PARTS: u16 = 200;

/// The fingerprint of a file name.
pub fn fingerprint(name: &str) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Changes of the local summary to send as one SUMMARY_DELTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Fits one datagram: version `version` = previous version + these changes.
    Delta {
        version: u32,
        added: Vec<u32>,
        removed: Vec<u32>,
    },
    /// Too many changes for one datagram: announce `version`, peers ask for the whole summary.
    Reset { version: u32 },
}

/// This host's summary: how many cached names have each fingerprint, its version, and the
/// changes not yet sent.
#[derive(Debug, Default)]
pub struct LocalSummary {
    counts: BTreeMap<u32, u32>,
    /// 0 until the first scan is in.
    version: u32,
    added: BTreeSet<u32>,
    removed: BTreeSet<u32>,
}

impl LocalSummary {
    /// The version peers know, 0 before the first scan.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Number of distinct fingerprints.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether changes wait for [`LocalSummary::take_change`].
    pub fn is_dirty(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }

    /// The result of a full scan of the caches: the summary becomes exactly `names`. The first
    /// scan sets version 1 with nothing to send; a later one records the difference.
    pub fn replace_all<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let mut counts = BTreeMap::new();
        for name in names {
            *counts.entry(fingerprint(name)).or_insert(0u32) += 1;
        }
        if self.version == 0 {
            self.counts = counts;
            self.version = 1;
            return;
        }
        let gone: Vec<u32> = self
            .counts
            .keys()
            .filter(|fp| !counts.contains_key(fp))
            .copied()
            .collect();
        let new: Vec<u32> = counts
            .keys()
            .filter(|fp| !self.counts.contains_key(fp))
            .copied()
            .collect();
        self.counts = counts;
        for fp in gone {
            self.note_removed(fp);
        }
        for fp in new {
            self.note_added(fp);
        }
    }

    /// A name appeared in a cache.
    pub fn add(&mut self, name: &str) {
        let fp = fingerprint(name);
        let n = self.counts.entry(fp).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.note_added(fp);
        }
    }

    /// A name left a cache.
    pub fn remove(&mut self, name: &str) {
        let fp = fingerprint(name);
        let Some(n) = self.counts.get_mut(&fp) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&fp);
            self.note_removed(fp);
        }
    }

    fn note_added(&mut self, fp: u32) {
        if !self.removed.remove(&fp) {
            self.added.insert(fp);
        }
    }

    fn note_removed(&mut self, fp: u32) {
        if !self.added.remove(&fp) {
            self.removed.insert(fp);
        }
    }

    /// The pending changes as the next version, or `None` when nothing changed.
    pub fn take_change(&mut self) -> Option<Change> {
        if !self.is_dirty() {
            return None;
        }
        self.version = next_version(self.version);
        let added: Vec<u32> = std::mem::take(&mut self.added).into_iter().collect();
        let removed: Vec<u32> = std::mem::take(&mut self.removed).into_iter().collect();
        if added.len() + removed.len() > SEND_FINGERPRINTS {
            return Some(Change::Reset {
                version: self.version,
            });
        }
        Some(Change::Delta {
            version: self.version,
            added,
            removed,
        })
    }

    /// The whole summary in parts of at most [`SEND_FINGERPRINTS`], ascending; `None` when it
    /// would need more than [`MAX_PARTS`] (peers then ask this host about everything).
    pub fn parts(&self) -> Option<Vec<Vec<u32>>> {
        let keys: Vec<u32> = self.counts.keys().copied().collect();
        let parts: Vec<Vec<u32>> = if keys.is_empty() {
            vec![Vec::new()]
        } else {
            keys.chunks(SEND_FINGERPRINTS)
                .map(<[u32]>::to_vec)
                .collect()
        };
        (parts.len() <= usize::from(MAX_PARTS)).then_some(parts)
    }
}

/// The version after `v` (0 is skipped: it means "none").
fn next_version(v: u32) -> u32 {
    match v.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// What this host knows of one peer's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSummary {
    /// The version announced last (0: none announced).
    announced: u32,
    /// A complete summary: its version and fingerprints, ascending.
    known: Option<(u32, Vec<u32>)>,
    /// Parts of version `.0` gathered so far.
    assembling: Option<(u32, Vec<Option<Vec<u32>>>)>,
}

impl PeerSummary {
    /// Whether the peer may have a file of fingerprint `fp`: yes when its summary lists it,
    /// and when no summary of it is known or the one held is older than the one announced.
    pub fn may_have(&self, fp: u32) -> bool {
        match &self.known {
            Some((_, fps)) if !self.is_stale() => fps.binary_search(&fp).is_ok(),
            _ => true,
        }
    }

    /// The number of names of the summary held, when it is the one announced.
    pub fn current_len(&self) -> Option<usize> {
        match &self.known {
            Some((_, fps)) if !self.is_stale() => Some(fps.len()),
            _ => None,
        }
    }

    /// Whether a complete summary is known (not necessarily the newest).
    pub fn is_known(&self) -> bool {
        self.known.is_some()
    }

    /// Fingerprints held (for memory accounting).
    pub fn len(&self) -> usize {
        self.known.as_ref().map_or(0, |(_, f)| f.len())
            + self.assembling.as_ref().map_or(0, |(_, parts)| {
                parts.iter().flatten().map(Vec::len).sum::<usize>()
            })
    }

    /// Whether the summary held is behind the one announced (ask for it).
    pub fn is_stale(&self) -> bool {
        self.announced != 0 && self.known.as_ref().map(|k| k.0) != Some(self.announced)
    }

    /// The peer announced version `v` (in ANNOUNCE or HELLO).
    pub fn announced(&mut self, v: u32) {
        self.announced = v;
        if v == 0 {
            self.known = None;
            self.assembling = None;
        }
    }

    /// A SUMMARY_DELTA. Applied when it follows the version held; otherwise the summary is
    /// stale (ask for it whole) and a held one is dropped if it is too old to trust for
    /// "no" answers. Returns whether it was applied.
    pub fn delta(&mut self, version: u32, added: &[u32], removed: &[u32]) -> bool {
        self.announced = version;
        let Some((held, fps)) = &mut self.known else {
            return false;
        };
        if *held == version {
            // The same delta again: a host on both IPv4 and IPv6 sends each one on both, and a
            // static peer on the link hears it by multicast and by unicast.
            return true;
        }
        if next_version(*held) != version {
            // A change was missed: what we hold may lack new files, so it no longer says "no".
            self.known = None;
            return false;
        }
        *held = version;
        for fp in removed {
            if let Ok(i) = fps.binary_search(fp) {
                fps.remove(i);
            }
        }
        for &fp in added {
            if let Err(i) = fps.binary_search(&fp) {
                fps.insert(i, fp);
            }
        }
        true
    }

    /// One SUMMARY_PART. Returns true when it completed a summary (now known).
    pub fn part(&mut self, version: u32, part: u16, parts: u16, fps: &[u32]) -> bool {
        if parts > MAX_PARTS || part >= parts {
            return false;
        }
        let fresh = !matches!(&self.assembling, Some((v, p)) if *v == version && p.len() == usize::from(parts));
        if fresh {
            self.assembling = Some((version, vec![None; usize::from(parts)]));
        }
        let Some((_, got)) = &mut self.assembling else {
            return false;
        };
        got[usize::from(part)] = Some(fps.to_vec());
        if got.iter().any(Option::is_none) {
            return false;
        }
        let mut all: Vec<u32> = got
            .iter_mut()
            .flat_map(|p| p.take().unwrap_or_default())
            .collect();
        all.sort_unstable();
        all.dedup();
        self.assembling = None;
        self.known = Some((version, all));
        if self.announced == 0 || self.announced == version.wrapping_sub(1) {
            self.announced = version;
        }
        true
    }

    /// Forget what is held (memory budget exceeded): the peer is asked about everything.
    pub fn clear(&mut self) {
        self.known = None;
        self.assembling = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_first_four_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf...
        assert_eq!(fingerprint("abc"), 0xba78_16bf);
    }

    #[test]
    fn first_scan_is_version_one_with_nothing_to_send() {
        let mut s = LocalSummary::default();
        assert_eq!(s.version(), 0);
        s.replace_all(["a", "b"]);
        assert_eq!(s.version(), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.take_change(), None);
    }

    #[test]
    fn changes_coalesce_into_one_delta() {
        let mut s = LocalSummary::default();
        s.replace_all(["a", "b"]);
        s.add("c");
        s.add("d");
        s.remove("d"); // added then removed: nothing to say
        s.remove("a");
        s.add("a"); // removed then added back: nothing to say
        s.remove("b");
        let mut added = vec![fingerprint("c")];
        added.sort_unstable();
        assert_eq!(
            s.take_change(),
            Some(Change::Delta {
                version: 2,
                added,
                removed: vec![fingerprint("b")],
            })
        );
        assert_eq!(s.take_change(), None);
        // Two names of one fingerprint: removing one keeps it.
        s.add("c");
        s.remove("c");
        assert_eq!(s.take_change(), None);
    }

    #[test]
    fn a_big_change_is_a_reset_and_parts_cover_everything() {
        let mut s = LocalSummary::default();
        s.replace_all(std::iter::empty());
        let names: Vec<String> = (0..1000)
            .map(|i| format!("p{i}-1-1-any.pkg.tar.zst"))
            .collect();
        s.replace_all(names.iter().map(String::as_str));
        assert_eq!(s.take_change(), Some(Change::Reset { version: 2 }));
        let parts = s.parts().unwrap();
        assert_eq!(parts.len(), 4, "1,000 names in parts of 328");
        assert!(parts.iter().all(|p| p.len() <= SEND_FINGERPRINTS));
        let mut peer = PeerSummary::default();
        peer.announced(2);
        assert!(peer.is_stale());
        for (i, p) in parts.iter().enumerate() {
            let done = peer.part(2, i as u16, parts.len() as u16, p);
            assert_eq!(done, i + 1 == parts.len());
        }
        assert!(!peer.is_stale());
        for n in &names {
            assert!(peer.may_have(fingerprint(n)));
        }
        assert!(!peer.may_have(fingerprint("absent-1-1-any.pkg.tar.zst")));
    }

    #[test]
    fn peer_follows_deltas_and_a_gap_makes_it_stale() {
        let mut local = LocalSummary::default();
        local.replace_all(["a"]);
        let mut peer = PeerSummary::default();
        assert!(
            peer.may_have(fingerprint("zzz")),
            "unknown: maybe everything"
        );
        peer.announced(1);
        assert!(peer.part(1, 0, 1, &local.parts().unwrap()[0]));
        assert!(!peer.may_have(fingerprint("b")));
        local.add("b");
        let Some(Change::Delta {
            version,
            added,
            removed,
        }) = local.take_change()
        else {
            panic!()
        };
        assert!(peer.delta(version, &added, &removed));
        assert!(peer.may_have(fingerprint("b")));
        // Version 3 lost, version 4 arrives: stale, and no longer trusted for "no".
        assert!(!peer.delta(4, &[], &[]));
        assert!(peer.is_stale());
        assert!(peer.may_have(fingerprint("never")));
    }

    #[test]
    fn hostile_parts_are_bounded() {
        let mut peer = PeerSummary::default();
        assert!(!peer.part(1, 0, MAX_PARTS + 1, &[1]));
        assert!(!peer.part(1, 5, 5, &[1]));
        // Parts of another layout restart the assembly.
        assert!(!peer.part(1, 0, 2, &[1]));
        assert!(!peer.part(1, 0, 3, &[2]));
        assert!(!peer.part(1, 1, 3, &[3]));
        assert!(peer.part(1, 2, 3, &[4]));
        assert!(!peer.may_have(1));
        assert!(peer.may_have(2) && peer.may_have(4));
        peer.clear();
        assert!(peer.may_have(1));
    }

    #[test]
    fn versions_skip_zero() {
        assert_eq!(next_version(u32::MAX), 1);
        assert_eq!(next_version(5), 6);
    }
}
