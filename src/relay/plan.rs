//! Which source a request goes to next: the rule of the relay, in one place.
//!
//! A [`SourcePlan`] is made for each request pacman relays and is fed what
//! happens (the peers' answer, a source's failure); each time it says the
//! next [`Step`]. The order: for a `.sig`, the peer its package came from
//! (only that peer, then upstream, so that the two agree); then the LAN is
//! asked who has it (up to [`MAX_PEER_TRIES`] peers, leaving out those tried,
//! backed off and banned); a package asked again after it was delivered
//! whole never goes straight back to the peer it came from without a fresh
//! question (pacman asking again is evidence against it; the question goes
//! by content when the sync database knows the file); then the upstream mirrors in order
//! (databases: from the one that last answered them, then the others;
//! `https://` ones are fetched over TLS like the others, or, with
//! `Https = redirect`, a redirect for pacman, never a continuation); then a
//! 404 (no upstream has it), a 502 (they all failed), or, once pacman has
//! its head, closing so that pacman resumes elsewhere.
//!
//! Pure: it opens no socket, asks no question and reads no clock; the relay
//! connection performs the steps. It does not judge answers
//! ([`super::fetch`]) or remember anything across requests
//! ([`super::policy`]).

use log::warn;

use super::fetch::Failure;
use super::policy::Origin;
use crate::cache::FileKind;
use crate::config::HttpsMode;
use crate::discovery::PeerRef;
use crate::http::response::Status;
use crate::http::url::{self, Url};

/// Peers tried for one request before going upstream.
pub const MAX_PEER_TRIES: u32 = 3;

/// An upstream mirror for this request: its index in the configured list
/// and the file's URL there (`Err`: the template's text, not an http(s) URL).
pub type Upstream = (usize, Result<Url, String>);

/// What to do next for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask the LAN who has the file, leaving these peers out.
    AskPeers { exclude: Vec<u64> },
    /// Fetch from this peer.
    Peer(PeerRef),
    /// The upstream URLs are needed now: hand them in
    /// ([`SourcePlan::set_upstreams`]) and ask again. Only a request that
    /// reaches the upstreams pays for making them.
    ListUpstreams,
    /// Fetch from this upstream mirror (after resolving its host).
    Upstream { index: usize, url: Url },
    /// Send pacman to this `https://` mirror: 302.
    Redirect(Url),
    /// No source left before pacman got a head: answer this status.
    Reply(Status),
    /// No source left to continue a body pacman has begun: close, so that
    /// pacman moves on and resumes.
    Abandon,
}

/// The sources one request has tried and has left (see the module docs).
#[derive(Clone, Debug)]
pub struct SourcePlan {
    kind: FileKind,
    /// Asking the LAN is over for this request.
    peers_done: bool,
    tried_peers: Vec<u64>,
    /// In the order they are tried; `None` until they are needed.
    upstreams: Option<Vec<Upstream>>,
    next_upstream: usize,
    /// An upstream answered 404 or 410.
    not_found: bool,
    /// A body pacman has begun can't be continued (it had no known end).
    abandoned: bool,
    /// Fetch `https://` mirrors, or redirect pacman to them.
    https: HttpsMode,
}

impl SourcePlan {
    /// A plan for a file of `kind` with these upstream URLs, in the order
    /// they are tried. Databases never come from peers, nor does anything
    /// while the daemon stops.
    pub fn new(kind: FileKind, upstreams: Vec<Upstream>, stopping: bool) -> SourcePlan {
        let mut plan = SourcePlan::lazy(kind, stopping);
        plan.upstreams = Some(upstreams);
        plan
    }

    /// A plan whose upstream URLs are asked for ([`Step::ListUpstreams`])
    /// when the request gets to them.
    pub fn lazy(kind: FileKind, stopping: bool) -> SourcePlan {
        SourcePlan {
            kind,
            peers_done: kind == FileKind::Database || stopping,
            tried_peers: Vec::new(),
            upstreams: None,
            next_upstream: 0,
            not_found: false,
            abandoned: false,
            https: HttpsMode::Fetch,
        }
    }

    /// What `https://` mirrors are: fetched (the default) or a redirect.
    pub fn set_https(&mut self, mode: HttpsMode) {
        self.https = mode;
    }

    /// The upstream URLs the plan asked for ([`Step::ListUpstreams`]).
    pub fn set_upstreams(&mut self, upstreams: Vec<Upstream>) {
        self.upstreams = Some(upstreams);
    }

    /// The upstream URLs of `file` from `templates` (already expanded for its
    /// repository), in the order to try them: from `first` on, round.
    pub fn upstreams_for(templates: &[String], first: usize, file_path: &str) -> Vec<Upstream> {
        let count = templates.len();
        (0..count)
            .map(|i| {
                let index = (first + i) % count;
                let text = &templates[index];
                let url = url::parse(text)
                    .map(|base| base.join(file_path))
                    .ok_or_else(|| text.clone());
                (index, url)
            })
            .collect()
    }

    /// Whether the first step depends on where the package came from (so
    /// the caller looks its origin up).
    pub fn wants_origin(&self) -> bool {
        matches!(self.kind, FileKind::Package | FileKind::Signature) && !self.peers_done
    }

    /// The first step. `origin`: where the package came from, if known;
    /// `reachable`: that peer, if it is still there and not backed off.
    pub fn start(
        &mut self,
        origin: Option<Origin>,
        reachable: Option<PeerRef>,
        backed_off: &[u64],
    ) -> Step {
        match origin {
            Some(Origin::Upstream) if self.kind == FileKind::Signature => self.peers_done = true,
            Some(Origin::Peer(id)) if self.kind == FileKind::Signature => {
                // A signature comes from its package's peer or from upstream.
                self.peers_done = true;
                if let Some(peer) = reachable.filter(|p| p.host_id == id) {
                    return self.peer(peer);
                }
            }
            _ => {}
        }
        self.next(backed_off, false)
    }

    /// The LAN answered: this peer has the file, or (`None`) nobody does, or
    /// the question timed out. `head_sent` as for [`Self::next`].
    pub fn answered(&mut self, peer: Option<PeerRef>, backed_off: &[u64], head_sent: bool) -> Step {
        match peer {
            Some(p) => self.peer(p),
            None => {
                self.peers_done = true;
                self.next(backed_off, head_sent)
            }
        }
    }

    /// The source failed. `continuable`: pacman has no head yet, or what it
    /// was promised has a known end (so a `Range` can fetch the rest).
    pub fn failed(&mut self, failure: Failure, from_peer: bool, continuable: bool) {
        if matches!(failure, Failure::NotFound(_)) && !from_peer {
            self.not_found = true;
        }
        if !continuable {
            self.abandoned = true;
        }
    }

    /// The next source. `head_sent`: pacman has the head of this answer, so
    /// only a continuation will do (no redirect).
    pub fn next(&mut self, backed_off: &[u64], head_sent: bool) -> Step {
        if self.abandoned {
            return Step::Abandon;
        }
        if !self.peers_done && (self.tried_peers.len() as u32) < MAX_PEER_TRIES {
            let mut exclude = backed_off.to_vec();
            exclude.extend_from_slice(&self.tried_peers);
            return Step::AskPeers { exclude };
        }
        let Some(upstreams) = &self.upstreams else {
            return Step::ListUpstreams;
        };
        while let Some((index, url)) = upstreams.get(self.next_upstream) {
            self.next_upstream += 1;
            let url = match url {
                Ok(url) => url,
                Err(text) => {
                    warn!("upstream {text:?} is not an http(s) URL, skipped");
                    continue;
                }
            };
            if url.https && self.https == HttpsMode::Redirect {
                if head_sent {
                    // Can't continue a body through a redirect.
                    continue;
                }
                return Step::Redirect(url.clone());
            }
            return Step::Upstream {
                index: *index,
                url: url.clone(),
            };
        }
        if head_sent {
            Step::Abandon
        } else if upstreams.is_empty() || self.not_found {
            Step::Reply(Status::NotFound)
        } else {
            Step::Reply(Status::BadGateway)
        }
    }

    fn peer(&mut self, peer: PeerRef) -> Step {
        self.tried_peers.push(peer.host_id);
        Step::Peer(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> PeerRef {
        PeerRef {
            host_id: id,
            addr: ([10, 0, 0, id as u8], 7000).into(),
        }
    }

    fn mirrors(urls: &[&str], first: usize) -> Vec<Upstream> {
        let templates: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
        SourcePlan::upstreams_for(&templates, first, "f")
    }

    fn upstream_host(step: &Step) -> String {
        match step {
            Step::Upstream { url, .. } | Step::Redirect(url) => url.host.clone(),
            other => panic!("not an upstream: {other:?}"),
        }
    }

    const TWO: [&str; 2] = ["http://a/core", "http://b/core"];

    #[test]
    fn peers_are_asked_three_times_then_upstreams_in_order_then_502() {
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&TWO, 0), false);
        assert!(plan.wants_origin());
        let backed_off = [9];
        assert_eq!(
            plan.start(None, None, &backed_off),
            Step::AskPeers { exclude: vec![9] }
        );
        for i in 1..=3 {
            assert_eq!(
                plan.answered(Some(peer(i)), &backed_off, false),
                Step::Peer(peer(i))
            );
            plan.failed(Failure::Stalled, true, true);
            let step = plan.next(&backed_off, false);
            if i < 3 {
                let mut exclude = vec![9];
                exclude.extend(1..=i);
                assert_eq!(step, Step::AskPeers { exclude });
            } else {
                assert_eq!(upstream_host(&step), "a", "after three peers");
            }
        }
        plan.failed(Failure::Status(500), false, true);
        assert_eq!(upstream_host(&plan.next(&backed_off, false)), "b");
        plan.failed(Failure::Stalled, false, true);
        assert_eq!(
            plan.next(&backed_off, false),
            Step::Reply(Status::BadGateway)
        );
    }

    #[test]
    fn nobody_on_the_lan_means_upstream_and_a_404_there_means_404() {
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&TWO, 0), false);
        assert!(matches!(plan.start(None, None, &[]), Step::AskPeers { .. }));
        assert_eq!(upstream_host(&plan.answered(None, &[], false)), "a");
        plan.failed(Failure::NotFound(404), false, true);
        assert_eq!(upstream_host(&plan.next(&[], false)), "b");
        plan.failed(Failure::Stalled, false, true);
        assert_eq!(plan.next(&[], false), Step::Reply(Status::NotFound));
        // A peer's 404 is not the upstreams' word.
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&TWO[..1], 0), false);
        plan.answered(Some(peer(1)), &[], false);
        plan.failed(Failure::NotFound(404), true, true);
        plan.answered(None, &[], false);
        plan.failed(Failure::Stalled, false, true);
        assert_eq!(plan.next(&[], false), Step::Reply(Status::BadGateway));
    }

    #[test]
    fn upstream_urls_are_asked_for_only_when_the_lan_is_done() {
        let mut plan = SourcePlan::lazy(FileKind::Package, false);
        assert!(matches!(plan.start(None, None, &[]), Step::AskPeers { .. }));
        assert_eq!(
            plan.answered(Some(peer(1)), &[], false),
            Step::Peer(peer(1))
        );
        plan.failed(Failure::Stalled, true, true);
        assert!(matches!(plan.next(&[], false), Step::AskPeers { .. }));
        assert_eq!(plan.answered(None, &[], false), Step::ListUpstreams);
        plan.set_upstreams(mirrors(&TWO, 0));
        assert_eq!(upstream_host(&plan.next(&[], false)), "a");
        // A database asks at once.
        let mut plan = SourcePlan::lazy(FileKind::Database, false);
        assert_eq!(plan.start(None, None, &[]), Step::ListUpstreams);
    }

    #[test]
    fn without_upstreams_a_miss_is_a_404() {
        let mut plan = SourcePlan::new(FileKind::Package, Vec::new(), false);
        plan.start(None, None, &[]);
        assert_eq!(
            plan.answered(None, &[], false),
            Step::Reply(Status::NotFound)
        );
    }

    #[test]
    fn a_package_asked_again_never_goes_straight_back_to_its_peer() {
        // A fresh question instead, which that peer may answer (by content, when the
        // database knows the file).
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&TWO, 0), false);
        let origin = Some(Origin::Peer(4));
        assert_eq!(
            plan.start(origin, Some(peer(4)), &[9]),
            Step::AskPeers { exclude: vec![9] }
        );
        assert_eq!(
            plan.answered(Some(peer(4)), &[9], false),
            Step::Peer(peer(4))
        );
    }

    #[test]
    fn a_signature_comes_from_its_packages_peer_or_upstream_only() {
        let mut plan = SourcePlan::new(FileKind::Signature, mirrors(&TWO, 0), false);
        let origin = Some(Origin::Peer(4));
        assert_eq!(plan.start(origin, Some(peer(4)), &[]), Step::Peer(peer(4)));
        plan.failed(Failure::Stalled, true, true);
        assert_eq!(upstream_host(&plan.next(&[], false)), "a", "no other peer");
        // The peer is gone: upstream, not the LAN.
        let mut plan = SourcePlan::new(FileKind::Signature, mirrors(&TWO, 0), false);
        assert_eq!(upstream_host(&plan.start(origin, None, &[])), "a");
        // The package came from upstream: so does its signature.
        let mut plan = SourcePlan::new(FileKind::Signature, mirrors(&TWO, 0), false);
        let step = plan.start(Some(Origin::Upstream), None, &[]);
        assert_eq!(upstream_host(&step), "a");
        // Unknown origin: the LAN first, as for a package.
        let mut plan = SourcePlan::new(FileKind::Signature, mirrors(&TWO, 0), false);
        assert!(matches!(plan.start(None, None, &[]), Step::AskPeers { .. }));
    }

    #[test]
    fn databases_skip_the_lan_and_start_at_the_sticky_mirror() {
        let three = ["http://a/x", "http://b/x", "http://c/x"];
        let mut plan = SourcePlan::new(FileKind::Database, mirrors(&three, 1), false);
        assert!(!plan.wants_origin());
        assert_eq!(upstream_host(&plan.start(None, None, &[])), "b");
        plan.failed(Failure::Stalled, false, true);
        assert_eq!(upstream_host(&plan.next(&[], false)), "c");
        plan.failed(Failure::Stalled, false, true);
        let step = plan.next(&[], false);
        assert_eq!(upstream_host(&step), "a");
        assert!(matches!(step, Step::Upstream { index: 0, .. }));
        // Stopping: nothing from the LAN either.
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&three, 0), true);
        assert_eq!(upstream_host(&plan.start(None, None, &[])), "a");
    }

    #[test]
    fn https_mirrors_are_fetched_like_the_others_and_continue_a_body() {
        let mixed = ["https://s/x", "http://p/x"];
        let mut plan = SourcePlan::new(FileKind::Database, mirrors(&mixed, 0), false);
        let step = plan.start(None, None, &[]);
        assert!(
            matches!(&step, Step::Upstream { index: 0, url } if url.to_text() == "https://s/x/f")
        );
        plan.failed(Failure::LostAfter(10), false, true);
        assert_eq!(upstream_host(&plan.next(&[], true)), "p");
        // A continuation from an https mirror.
        let mut plan = SourcePlan::new(
            FileKind::Database,
            mirrors(&["http://p/x", "https://s/x"], 0),
            false,
        );
        plan.start(None, None, &[]);
        plan.failed(Failure::LostAfter(10), false, true);
        assert!(matches!(
            plan.next(&[], true),
            Step::Upstream { index: 1, .. }
        ));
    }

    #[test]
    fn with_redirect_https_mirrors_are_a_redirect_but_never_a_continuation() {
        let mixed = ["https://s/x", "http://p/x", "ftp://nope/x"];
        let mut plan = SourcePlan::new(FileKind::Database, mirrors(&mixed, 0), false);
        plan.set_https(HttpsMode::Redirect);
        let step = plan.start(None, None, &[]);
        assert!(matches!(&step, Step::Redirect(u) if u.to_text() == "https://s/x/f"));
        // Mid-body: the https mirror is skipped, the bad template too.
        let mut plan = SourcePlan::new(FileKind::Database, mirrors(&mixed, 0), false);
        plan.set_https(HttpsMode::Redirect);
        plan.failed(Failure::LostAfter(10), false, true);
        assert_eq!(upstream_host(&plan.next(&[], true)), "p");
        plan.failed(Failure::LostAfter(10), false, true);
        assert_eq!(plan.next(&[], true), Step::Abandon);
    }

    #[test]
    fn a_continuation_asked_of_the_lan_in_vain_is_never_a_redirect() {
        let mixed = ["https://s/x", "http://p/x"];
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&mixed, 0), false);
        plan.set_https(HttpsMode::Redirect);
        plan.start(None, None, &[]);
        assert_eq!(
            plan.answered(Some(peer(1)), &[], false),
            Step::Peer(peer(1))
        );
        plan.failed(Failure::LostAfter(100), true, true);
        assert_eq!(plan.next(&[], true), Step::AskPeers { exclude: vec![1] });
        assert_eq!(upstream_host(&plan.answered(None, &[], true)), "p");
        plan.failed(Failure::LostAfter(100), false, true);
        assert_eq!(plan.next(&[], true), Step::Abandon);
    }

    #[test]
    fn a_body_without_a_known_end_is_abandoned() {
        let mut plan = SourcePlan::new(FileKind::Package, mirrors(&TWO, 0), false);
        plan.start(None, None, &[]);
        plan.answered(Some(peer(1)), &[], false);
        plan.failed(Failure::LostAfter(100), true, false);
        assert_eq!(plan.next(&[], true), Step::Abandon);
    }
}
