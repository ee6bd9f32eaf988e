//! The content rules, pure: whether a cached file may be served, and whether a host may say
//! HAVE to a question, from what its own sync database says, what the asker expects, the
//! file's size and its SHA-256 when known. No I/O, no clock: `trust` (the shell) stats and
//! hashes the files and logs.

use crate::discovery::wire::Expected;
use crate::sync_db::{FileIdentity, Sha256};

/// What a cached file is worth, judged against this host's own sync database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The database does not know the file (or gives no hash and the size agrees): served as
    /// before databases were read.
    Unchecked,
    /// Size and SHA-256 agree with the database.
    Good,
    /// The size agrees, the SHA-256 is not known yet: not served until it is.
    NotYet,
    /// Size or SHA-256 disagree: never served.
    Bad,
}

impl Verdict {
    /// Whether a peer may fetch the file now.
    pub fn may_serve(self) -> bool {
        matches!(self, Verdict::Unchecked | Verdict::Good)
    }
}

/// Judges a cached file of `size` bytes whose SHA-256 is `digest` (if known) against `own`,
/// what this host's database says of its name.
pub fn judge_cached(own: Option<FileIdentity>, size: u64, digest: Option<Sha256>) -> Verdict {
    let Some(own) = own else {
        return Verdict::Unchecked;
    };
    if own.size != size {
        return Verdict::Bad;
    }
    match (own.sha256, digest) {
        (None, _) => Verdict::Unchecked,
        (Some(_), None) => Verdict::NotYet,
        (Some(want), Some(got)) if want == got => Verdict::Good,
        (Some(_), Some(_)) => Verdict::Bad,
    }
}

/// A host's answer to a WHO_HAS about a file it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Have,
    HaveNot,
    /// HAVE_NOT on the wire, but only because the file's hash is not known yet: it is being
    /// computed, and a later question gets HAVE if it matches.
    NotYet,
}

/// Whether to say HAVE for a file judged `serve` ([`judge_cached`]), of `size` bytes and
/// SHA-256 `digest` (if known), to an asker that expects `wanted` (if it said).
pub fn answer(
    serve: Verdict,
    wanted: Option<Expected>,
    size: u64,
    digest: Option<Sha256>,
) -> Answer {
    match (serve, wanted) {
        (Verdict::Bad, _) => Answer::HaveNot,
        (_, Some(w)) if w.size != size => Answer::HaveNot,
        (_, Some(w)) => match digest {
            None => Answer::NotYet,
            Some(d) if d != w.sha256 => Answer::HaveNot,
            // The content is what the asker wants; the file must still be servable here.
            Some(_) if serve == Verdict::NotYet => Answer::NotYet,
            Some(_) => Answer::Have,
        },
        (Verdict::NotYet, None) => Answer::NotYet,
        (Verdict::Good | Verdict::Unchecked, None) => Answer::Have,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(size: u64, hash: Option<u8>) -> Option<FileIdentity> {
        Some(FileIdentity {
            size,
            sha256: hash.map(|b| Sha256([b; 32])),
        })
    }

    fn want(size: u64, hash: u8) -> Option<Expected> {
        Some(Expected {
            size,
            sha256: Sha256([hash; 32]),
        })
    }

    const H1: Option<Sha256> = Some(Sha256([1; 32]));

    #[test]
    fn cached_files_against_their_own_database() {
        assert_eq!(judge_cached(None, 10, None), Verdict::Unchecked);
        assert_eq!(judge_cached(id(10, None), 10, None), Verdict::Unchecked);
        assert_eq!(judge_cached(id(11, None), 10, None), Verdict::Bad);
        assert_eq!(judge_cached(id(10, Some(1)), 10, None), Verdict::NotYet);
        assert_eq!(judge_cached(id(10, Some(1)), 10, H1), Verdict::Good);
        assert_eq!(judge_cached(id(10, Some(2)), 10, H1), Verdict::Bad);
        // Same size, flipped bytes: bad; another size: bad before any hashing.
        assert_eq!(judge_cached(id(9, Some(1)), 10, None), Verdict::Bad);
        assert!(Verdict::Good.may_serve() && Verdict::Unchecked.may_serve());
        assert!(!Verdict::NotYet.may_serve() && !Verdict::Bad.may_serve());
    }

    #[test]
    fn have_only_for_the_expected_content() {
        use Answer::*;
        // The asker knows nothing: today's rule, but never a bad or unverified copy.
        assert_eq!(answer(Verdict::Unchecked, None, 10, None), Have);
        assert_eq!(answer(Verdict::Good, None, 10, H1), Have);
        assert_eq!(answer(Verdict::NotYet, None, 10, None), NotYet);
        assert_eq!(answer(Verdict::Bad, None, 10, H1), HaveNot);
        // The asker says what it wants.
        assert_eq!(answer(Verdict::Good, want(10, 1), 10, H1), Have);
        assert_eq!(answer(Verdict::Unchecked, want(10, 1), 10, H1), Have);
        assert_eq!(answer(Verdict::Unchecked, want(10, 1), 10, None), NotYet);
        assert_eq!(answer(Verdict::Unchecked, want(11, 1), 10, None), HaveNot);
        assert_eq!(answer(Verdict::Unchecked, want(10, 2), 10, H1), HaveNot);
        assert_eq!(answer(Verdict::Good, want(10, 2), 10, H1), HaveNot);
        assert_eq!(answer(Verdict::Bad, want(10, 1), 10, H1), HaveNot);
    }
}
