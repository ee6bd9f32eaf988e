//! Checking a body against its sync database while it streams: [`BodyCheck`] hashes the
//! bytes pacman is to get, from the first to the last, whatever source each came from, and
//! says at the last byte whether the file is the one the database names. The caller feeds it
//! every byte before that byte may go to pacman, so the verdict is known before the last
//! byte leaves: on a mismatch pacman's connection is closed short of the end, and the peers
//! that sent bytes are banned ([`super::policy::Policy::ban`]).
//!
//! Pure: bytes in, a verdict out; no socket, no clock. It does not decide which requests are
//! checked (see [`BodyCheck::wanted`]) or what a mismatch costs a source.

use sha2::Digest;

use crate::cache::FileKind;
use crate::discovery::PeerRef;
use crate::sync_db::{FileIdentity, Sha256};

/// Where the bytes fed so far stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Fewer bytes than the file has.
    Partial,
    /// All of them, and the SHA-256 is the database's.
    Match,
    /// The SHA-256 is not the database's, or more bytes than the file has came.
    Mismatch,
}

/// The running check of one request's body.
#[derive(Clone)]
pub struct BodyCheck {
    size: u64,
    sha256: Sha256,
    hasher: sha2::Sha256,
    fed: u64,
    verdict: Check,
    /// The peers that sent any of the bytes, in order, each once.
    peers: Vec<PeerRef>,
}

impl std::fmt::Debug for BodyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCheck")
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("fed", &self.fed)
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl BodyCheck {
    /// A check for a request of `kind`, when the database knows the file's size and hash and
    /// pacman asks for all of it (a `Range`, a resumed `.part`, starts past bytes this
    /// daemon never saw; such a request is kept off the LAN instead, see
    /// [`super::plan::SourcePlan::lazy`]), and not only for its head.
    pub fn wanted(
        kind: FileKind,
        identity: Option<FileIdentity>,
        range: bool,
        head_only: bool,
    ) -> Option<BodyCheck> {
        let id = identity?;
        let sha256 = id.sha256?;
        (kind == FileKind::Package && !range && !head_only).then(|| BodyCheck {
            size: id.size,
            sha256,
            hasher: sha2::Sha256::new(),
            fed: 0,
            verdict: Check::Partial,
            peers: Vec::new(),
        })
    }

    /// A source (`peer`: a LAN peer, `None`: an upstream) starts sending bytes.
    pub fn source(&mut self, peer: Option<PeerRef>) {
        if let Some(p) = peer {
            if !self.peers.contains(&p) {
                self.peers.push(p);
            }
        }
    }

    /// The next bytes of the body, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Check {
        if self.verdict != Check::Partial || bytes.is_empty() {
            return self.verdict;
        }
        let room = self.size - self.fed;
        if bytes.len() as u64 > room {
            self.verdict = Check::Mismatch;
            return self.verdict;
        }
        self.hasher.update(bytes);
        self.fed += bytes.len() as u64;
        if self.fed == self.size {
            let digest = Sha256(std::mem::take(&mut self.hasher).finalize().into());
            self.verdict = if digest == self.sha256 {
                Check::Match
            } else {
                Check::Mismatch
            };
        }
        self.verdict
    }

    pub fn verdict(&self) -> Check {
        self.verdict
    }

    /// The size the database gives.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// The peers that sent bytes of this body.
    pub fn peers(&self) -> &[PeerRef] {
        &self.peers
    }

    /// The SHA-256 the database gives.
    pub fn expected(&self) -> Sha256 {
        self.sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(data: &[u8]) -> Option<FileIdentity> {
        Some(FileIdentity {
            size: data.len() as u64,
            sha256: Some(Sha256(sha2::Sha256::digest(data).into())),
        })
    }

    fn peer(id: u64) -> PeerRef {
        PeerRef {
            host_id: id,
            addr: ([10, 0, 0, id as u8], 7000).into(),
        }
    }

    #[test]
    fn only_whole_packages_with_a_known_hash_are_checked() {
        let id = identity(b"abc");
        assert!(BodyCheck::wanted(FileKind::Package, id, false, false).is_some());
        assert!(BodyCheck::wanted(FileKind::Package, id, true, false).is_none());
        assert!(BodyCheck::wanted(FileKind::Package, id, false, true).is_none());
        assert!(BodyCheck::wanted(FileKind::Signature, id, false, false).is_none());
        assert!(BodyCheck::wanted(FileKind::Package, None, false, false).is_none());
        let no_hash = Some(FileIdentity {
            size: 3,
            sha256: None,
        });
        assert!(BodyCheck::wanted(FileKind::Package, no_hash, false, false).is_none());
    }

    #[test]
    fn the_verdict_is_known_at_the_last_byte() {
        let data = b"the right bytes of a package";
        let mut check = BodyCheck::wanted(FileKind::Package, identity(data), false, false).unwrap();
        check.source(Some(peer(1)));
        assert_eq!(check.feed(&data[..10]), Check::Partial);
        // A failover: the rest from another source, in order.
        check.source(None);
        check.source(Some(peer(1)));
        assert_eq!(check.feed(&data[10..data.len() - 1]), Check::Partial);
        assert_eq!(check.feed(&data[data.len() - 1..]), Check::Match);
        assert_eq!(check.fed(), data.len() as u64);
        assert_eq!(check.peers(), &[peer(1)]);
        assert_eq!(check.feed(b""), Check::Match);
    }

    #[test]
    fn flipped_or_extra_bytes_are_a_mismatch() {
        let data = b"the right bytes of a package";
        let mut bad = data.to_vec();
        bad[5] ^= 0x40;
        let mut check = BodyCheck::wanted(FileKind::Package, identity(data), false, false).unwrap();
        check.source(Some(peer(2)));
        assert_eq!(check.feed(&bad[..20]), Check::Partial);
        assert_eq!(check.feed(&bad[20..]), Check::Mismatch);
        assert_eq!(check.verdict(), Check::Mismatch);
        assert_eq!(check.feed(b"more"), Check::Mismatch);
        let mut long = BodyCheck::wanted(FileKind::Package, identity(data), false, false).unwrap();
        assert_eq!(
            long.feed(&[data.as_slice(), b"!"].concat()),
            Check::Mismatch
        );
    }
}
