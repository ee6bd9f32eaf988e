//! One fetcher per file: the CLAIM rule, pure.
//!
//! When a lookup that the relay marked as a download ends with "nobody has it", the host does
//! not go to the internet at once: it multicasts a CLAIM for the file and waits a short
//! window. Every host that claimed the same file (same name and expected content) within a
//! window of each other ends up with the same set of claimants and picks the same **leader**
//! by a deterministic rank ([`rank`]): the leader fetches the file from upstream, the others
//! follow it (they fetch from its peer file server, which streams the file as it arrives).
//! The leader says LEADING to the group when its window ends, and SERVING once its file server
//! can stream the file (its upstream answered and its spool file is open); a follower's
//! lookup is answered with the leader only then, or after [`FOLLOW_WAIT`] with nobody (it
//! fetches from upstream itself). A leader answers every later CLAIM for the file with where
//! it stands, so latecomers follow it at once. A leader beats any claimant. A host never
//! follows one it leaves out (banned, backed off, tried for this request); when such a host
//! would lead, the others (which may trust it) follow it, so this one fetches for itself at
//! once instead of following one of them.
//!
//! This module owns the tables (claims heard, own claims, files this host leads) and the
//! decisions; it never sends, reads a clock or knows about peers' addresses: `protocol.rs`
//! feeds it checked datagrams from known peers and performs what it decides. Everything is
//! bounded ([`HEARD_LIMIT`], [`LEAD_LIMIT`], [`PENDING_LIMIT`]) and expires.
//!
//! Why a window and not a token passed around: the hosts that miss the same file at the same
//! moment are exactly the ones whose CLAIMs cross on the wire, and a window of a few answer
//! times lets each hear the others' before deciding, with one datagram per host and no reply
//! needed. What it cannot fix: a lost CLAIM can leave two leaders for one file (each fetches
//! it; the bytes are still checked), never a host without a source.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256 as Sha};

use super::questions::QuestionId;
use super::wire::{ClaimState, Expected};

/// The shortest and longest claim window. The window is the slowest answer time of the peers
/// that could claim too (each measured as for WHO_HAS: smoothed + 4 deviations, at least
/// 10 ms; an unmeasured peer counts as the longest), within these bounds: long enough for a
/// CLAIM to cross a busy LAN and be read by a daemon busy with a burst of requests, short
/// enough to cost little beside a download from the internet (one file of 1.5 MB at 4 MB/s
/// takes 375 ms).
pub const WINDOW_MIN: Duration = Duration::from_millis(20);
pub const WINDOW_MAX: Duration = Duration::from_millis(50);
/// How long a follower waits for its leader to say SERVING (its upstream answered): then it
/// fetches from upstream itself. Below the relay's 5 s bound on a lookup, and far below
/// pacman's 10 s without a byte.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(3);
/// A LEADING or SERVING heard is believed this long (a leader answers every later CLAIM
/// anew, so this only covers a lost answer).
pub const LEADING_KEPT: Duration = Duration::from_secs(2);
/// A file this host leads is answered as led until the relay releases it, or this long at
/// most (a safety net: the relay releases it when its download ends).
pub const LEAD_KEPT: Duration = Duration::from_secs(15 * 60);
/// Most claims of other hosts remembered; past that the oldest is forgotten.
pub const HEARD_LIMIT: usize = 1024;
/// Most files led at once; past that the oldest lead is dropped (late claimants then fetch
/// themselves: more bytes from upstream, never an error).
pub const LEAD_LIMIT: usize = 256;
/// Most own claims waiting (marked, in their window or following); past that a lookup that
/// ends with nobody goes upstream at once.
pub const PENDING_LIMIT: usize = 4096;

/// The file a claim is about: its name and the content the claimant's database gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub expected: Option<Expected>,
}

/// The rank of `host` as a leader of `name`: the lowest rank leads. Mixing the name in spreads
/// the leads of a LAN-wide upgrade over the hosts (each uploads its share to the others)
/// instead of giving every file to the host with the lowest id. Every host computes the same.
pub fn rank(host: u64, name: &str) -> u64 {
    let digest = Sha::digest(name.as_bytes());
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&digest[..8]);
    splitmix64(host ^ u64::from_be_bytes(salt))
}

/// A bijective 64-bit mix (SplitMix64's finaliser), so that distinct hosts keep distinct ranks.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a claim ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This host fetches the file from upstream (it won, or its leader never served).
    Lead,
    /// Fetch it from this host, which serves it now.
    Follow(u64),
}

/// One decided claim, for `protocol.rs` to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub question: QuestionId,
    pub key: Key,
    pub decision: Decision,
    /// The decision was to lead at the end of the window (say LEADING to the group).
    pub won: bool,
}

#[derive(Clone, Debug)]
struct Heard {
    host: u64,
    key: Key,
    state: ClaimState,
    at: Instant,
}

impl Heard {
    fn kept(&self) -> Duration {
        match self.state {
            ClaimState::Claiming | ClaimState::Released => 2 * WINDOW_MAX,
            ClaimState::Leading | ClaimState::Serving => LEADING_KEPT,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The lookup is still open; a claim if it ends with nobody.
    Marked,
    /// CLAIM sent at `claimed`; deciding at `end`.
    Window { claimed: Instant, end: Instant },
    /// Following `leader`, waiting for it to serve until `until`.
    Following { leader: u64, until: Instant },
}

#[derive(Clone, Debug)]
struct Own {
    question: QuestionId,
    key: Key,
    /// Hosts never followed for this request (tried, backed off, banned).
    exclude: Vec<u64>,
    phase: Phase,
}

#[derive(Clone, Debug)]
struct Lead {
    key: Key,
    since: Instant,
    serving: bool,
}

/// The claim tables of one host.
#[derive(Debug, Default)]
pub struct Claims {
    heard: VecDeque<Heard>,
    own: Vec<Own>,
    leads: VecDeque<Lead>,
}

impl Claims {
    /// Question `question` is a download: if it ends with nobody, claim the file instead.
    /// `false` when too many are waiting (the question then ends as usual).
    pub fn mark(&mut self, question: QuestionId, key: Key, exclude: &[u64]) -> bool {
        if self.own.len() >= PENDING_LIMIT {
            return false;
        }
        self.own.push(Own {
            question,
            key,
            exclude: exclude.to_vec(),
            phase: Phase::Marked,
        });
        true
    }

    /// Whether question `question` was marked and has not been claimed yet.
    pub fn is_marked(&self, question: QuestionId) -> bool {
        self.marked(question).is_some()
    }

    /// The marked question's file and exclusions, if it was marked.
    pub fn marked(&self, question: QuestionId) -> Option<(&Key, &[u64])> {
        self.own
            .iter()
            .find(|o| o.question == question && o.phase == Phase::Marked)
            .map(|o| (&o.key, o.exclude.as_slice()))
    }

    /// Forget question `question` (cancelled, or answered by a peer that has the file).
    pub fn forget(&mut self, question: QuestionId) {
        self.own.retain(|o| o.question != question);
    }

    /// The marked question ended with nobody and this host sent its CLAIM at `now`: decide at
    /// `now + window`, or as soon as a leader is heard, or now if one is known already.
    pub fn begin(
        &mut self,
        question: QuestionId,
        now: Instant,
        window: Duration,
    ) -> Option<Decided> {
        let window = window.clamp(WINDOW_MIN, WINDOW_MAX);
        let o = self.own.iter_mut().find(|o| o.question == question)?;
        o.phase = Phase::Window {
            claimed: now,
            end: now + window,
        };
        self.settle(question, None, now)
    }

    /// Where this host stands on `key` now: `Leading` or `Serving` if it leads it.
    pub fn lead_state(&self, key: &Key, now: Instant) -> Option<ClaimState> {
        self.leads
            .iter()
            .find(|l| l.key == *key && now < l.since + LEAD_KEPT)
            .map(|l| {
                if l.serving {
                    ClaimState::Serving
                } else {
                    ClaimState::Leading
                }
            })
    }

    /// This host fetches `key` from upstream from now on (`serving`: and its file server
    /// streams it). `true` when that is news (not yet serving before).
    pub fn lead(&mut self, key: Key, serving: bool, now: Instant) -> bool {
        if let Some(l) = self.leads.iter_mut().find(|l| l.key == key) {
            let news = serving && !l.serving;
            l.since = now;
            l.serving |= serving;
            return news;
        }
        if self.leads.len() >= LEAD_LIMIT {
            self.leads.pop_front();
        }
        self.leads.push_back(Lead {
            key,
            since: now,
            serving,
        });
        true
    }

    /// The download of `name` from upstream ended (whole, failed or abandoned). Returns the
    /// leads of it that never served (their followers are told RELEASED, not to wait).
    pub fn release(&mut self, name: &str) -> Vec<Key> {
        let mut unserved = Vec::new();
        self.leads.retain(|l| {
            if l.key.name != name {
                return true;
            }
            if !l.serving {
                unserved.push(l.key.clone());
            }
            false
        });
        unserved
    }

    /// Names of the files this host leads, oldest first.
    pub fn led(&self) -> impl Iterator<Item = &str> {
        self.leads.iter().map(|l| l.key.name.as_str())
    }

    /// A CLAIM, LEADING, SERVING or RELEASED from known peer `host` about `key`, at `now`
    /// (`me`: this host's id). Returns the own claims it settles: those in their window that
    /// may follow `host`, those following `host` when it serves, and those following it when
    /// it gives up (they fetch from upstream themselves, or follow another host that serves).
    pub fn heard(
        &mut self,
        host: u64,
        key: Key,
        state: ClaimState,
        me: u64,
        now: Instant,
    ) -> Vec<Decided> {
        if state == ClaimState::Released {
            self.heard.retain(|h| !(h.host == host && h.key == key));
            let left: Vec<QuestionId> = self
                .own
                .iter()
                .filter(|o| o.key == key)
                .filter(|o| matches!(o.phase, Phase::Following { leader, .. } if leader == host))
                .map(|o| o.question)
                .collect();
            return left
                .into_iter()
                .filter_map(|q| self.settle(q, Some(me), now))
                .collect();
        }
        match self
            .heard
            .iter_mut()
            .find(|h| h.host == host && h.key == key)
        {
            Some(h) => {
                // A leader stays one until it expires; any datagram refreshes the time.
                h.state = h.state.max(state);
                h.at = now;
            }
            None => {
                if self.heard.len() >= HEARD_LIMIT {
                    self.heard.pop_front();
                }
                self.heard.push_back(Heard {
                    host,
                    key: key.clone(),
                    state,
                    at: now,
                });
            }
        }
        if state == ClaimState::Claiming {
            return Vec::new();
        }
        let ready: Vec<QuestionId> = self
            .own
            .iter()
            .filter(|o| o.key == key && !o.exclude.contains(&host))
            .filter(|o| o.phase != Phase::Marked)
            .map(|o| o.question)
            .collect();
        ready
            .into_iter()
            .filter_map(|q| self.settle(q, None, now))
            .collect()
    }

    /// Let time pass: decide the own claims whose window or wait is over (`me`: this host's
    /// id), and forget what expired.
    pub fn expire(&mut self, me: u64, now: Instant) -> Vec<Decided> {
        self.heard.retain(|h| now < h.at + h.kept());
        self.leads.retain(|l| now < l.since + LEAD_KEPT);
        let due: Vec<QuestionId> = self
            .own
            .iter()
            .filter(|o| match o.phase {
                Phase::Marked => false,
                Phase::Window { end, .. } => now >= end,
                Phase::Following { until, .. } => now >= until,
            })
            .map(|o| o.question)
            .collect();
        due.into_iter()
            .filter_map(|q| self.settle(q, Some(me), now))
            .collect()
    }

    /// The earliest window end or follow wait, if any claim waits. (What expires is only
    /// forgotten when time passes for another reason: every check looks at the time too, so
    /// that costs no wake-up.)
    pub fn next_deadline(&self) -> Option<Instant> {
        self.own
            .iter()
            .filter_map(|o| match o.phase {
                Phase::Marked => None,
                Phase::Window { end, .. } => Some(end),
                Phase::Following { until, .. } => Some(until),
            })
            .min()
    }

    /// Move own claim `question` on. `me`: this host's id when its time is up (the window or
    /// the follow wait is over), `None` when a datagram came (then it moves only if a leader
    /// is known). Returns it decided (and forgotten), or `None` while it waits.
    fn settle(&mut self, question: QuestionId, me: Option<u64>, now: Instant) -> Option<Decided> {
        let own = self.own.iter().find(|o| o.question == question)?;
        let eligible = |h: &&Heard| {
            h.key == own.key && !own.exclude.contains(&h.host) && now < h.at + h.kept()
        };
        let name = own.key.name.as_str();
        let serves = |host: u64| {
            self.heard
                .iter()
                .filter(eligible)
                .any(|h| h.host == host && h.state == ClaimState::Serving)
        };
        // A host that leads already wins: if several do (two leaders after a lost CLAIM), one
        // that serves, then the lowest rank.
        let leader = self
            .heard
            .iter()
            .filter(eligible)
            .filter(|h| h.state != ClaimState::Claiming)
            .min_by_key(|h| (h.state != ClaimState::Serving, rank(h.host, name)))
            .map(|h| h.host);
        let (decision, won) = match own.phase {
            Phase::Marked => return None,
            Phase::Following {
                leader: chosen,
                until,
            } => {
                // The claimant chosen at the end of the window may itself have heard a claimant
                // of lower rank that we did not (claims spread over more than a window): the
                // host that says LEADING is the one that fetches.
                let target = leader.unwrap_or(chosen);
                if serves(target) {
                    (Decision::Follow(target), false)
                } else if me.is_some() {
                    // It never served: fetch from upstream ourselves.
                    (Decision::Lead, false)
                } else {
                    if let Some(o) = self.own.iter_mut().find(|o| o.question == question) {
                        o.phase = Phase::Following {
                            leader: target,
                            until,
                        };
                    }
                    return None;
                }
            }
            Phase::Window { claimed, .. } => {
                match (leader, me) {
                    (Some(host), _) => (Decision::Follow(host), false),
                    (None, None) => return None,
                    (None, Some(me)) => {
                        // The claimants heard from a longest window before our claim on, and
                        // us: each of them hears the same set (its window covers ours), so
                        // all pick the same. A host we never follow (banned, tried, backed
                        // off) may be one the others do follow: if it claims too and ranks
                        // first, or answered our claim with LEADING or SERVING (it is alive
                        // and leads), none of them fetches for us, so we fetch ourselves now
                        // rather than follow one of them for the follow wait. (A leader that
                        // died says nothing more: the hosts it left, which all leave it out,
                        // pick a new one among themselves. A host every other one bans costs
                        // a fetch from upstream each, never a wait.)
                        let since = claimed.checked_sub(WINDOW_MAX).unwrap_or(claimed);
                        let current = |h: &&Heard| h.key == own.key && now < h.at + h.kept();
                        let shunned = |h: &Heard| own.exclude.contains(&h.host);
                        let best = self
                            .heard
                            .iter()
                            .filter(current)
                            .filter(|h| h.at >= since)
                            .filter(|h| !shunned(h) || h.state == ClaimState::Claiming)
                            .map(|h| h.host)
                            .chain(std::iter::once(me))
                            .min_by_key(|&h| rank(h, name))
                            .unwrap_or(me);
                        let shunned_leads = self.heard.iter().filter(current).any(|h| {
                            shunned(h) && h.state != ClaimState::Claiming && h.at >= claimed
                        });
                        if best == me || own.exclude.contains(&best) || shunned_leads {
                            (Decision::Lead, true)
                        } else {
                            (Decision::Follow(best), false)
                        }
                    }
                }
            }
        };
        let at = self.own.iter().position(|o| o.question == question)?;
        if let Decision::Follow(leader) = decision {
            if !serves(leader) {
                // Chosen, but not serving yet: wait for its SERVING.
                self.own[at].phase = Phase::Following {
                    leader,
                    until: now + FOLLOW_WAIT,
                };
                return None;
            }
        }
        let own = self.own.swap_remove(at);
        if decision == Decision::Lead {
            self.lead(own.key.clone(), false, now);
        }
        Some(Decided {
            question,
            key: own.key,
            decision,
            won,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key {
            name: name.to_owned(),
            expected: None,
        }
    }

    #[test]
    fn rank_is_a_bijection_per_name_and_spreads_leads() {
        let hosts: Vec<u64> = (1..=8).collect();
        let mut leaders = std::collections::BTreeSet::new();
        for i in 0..64 {
            let name = format!("pkg-{i}-1-x86_64.pkg.tar.zst");
            let ranks: std::collections::BTreeSet<u64> =
                hosts.iter().map(|&h| rank(h, &name)).collect();
            assert_eq!(ranks.len(), hosts.len());
            leaders.insert(*hosts.iter().min_by_key(|&&h| rank(h, &name)).unwrap());
        }
        assert!(leaders.len() >= 6, "leads spread over {leaders:?}");
    }

    #[test]
    fn a_lone_claim_leads_after_its_window_and_a_late_one_follows_the_leader() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        assert!(c.mark(QuestionId(1), key("a"), &[]));
        assert!(c.is_marked(QuestionId(1)));
        assert_eq!(c.begin(QuestionId(1), t0, Duration::from_millis(1)), None);
        assert_eq!(c.next_deadline(), Some(t0 + WINDOW_MIN));
        assert!(c.expire(7, t0 + WINDOW_MIN / 2).is_empty());
        let d = c.expire(7, t0 + WINDOW_MIN);
        assert_eq!(d[0].decision, Decision::Lead);
        assert!(d[0].won);
        let now = t0 + WINDOW_MIN;
        assert_eq!(c.lead_state(&key("a"), now), Some(ClaimState::Leading));
        assert_eq!(c.lead_state(&key("b"), now), None);
        assert!(c.lead(key("a"), true, now));
        assert!(!c.lead(key("a"), true, now));
        assert_eq!(c.lead_state(&key("a"), now), Some(ClaimState::Serving));
        assert!(c.release("a").is_empty(), "it served");
        assert_eq!(c.lead_state(&key("a"), now), None);
        c.lead(key("b"), false, now);
        assert_eq!(c.release("b"), vec![key("b")]);
    }

    #[test]
    fn a_leader_ends_the_window_unless_excluded_and_is_followed_once_it_serves() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        c.mark(QuestionId(1), key("a"), &[5]);
        c.mark(QuestionId(2), key("a"), &[]);
        c.begin(QuestionId(1), t0, WINDOW_MAX);
        c.begin(QuestionId(2), t0, WINDOW_MAX);
        let t1 = t0 + Duration::from_millis(1);
        // LEADING: question 2 follows host 5, but waits for it to serve.
        assert!(c.heard(5, key("a"), ClaimState::Leading, 9, t1).is_empty());
        assert_eq!(c.next_deadline(), Some(t0 + WINDOW_MAX));
        let d = c.heard(5, key("a"), ClaimState::Serving, 9, t1);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].question, QuestionId(2));
        assert_eq!(d[0].decision, Decision::Follow(5));
        // Question 1 excludes host 5: it waits its window and leads.
        let d = c.expire(9, t0 + WINDOW_MAX);
        assert_eq!(d[0].decision, Decision::Lead);
    }

    #[test]
    fn a_leader_that_never_serves_is_left_after_the_follow_wait() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        c.mark(QuestionId(1), key("a"), &[]);
        c.begin(QuestionId(1), t0, WINDOW_MIN);
        // LEADING: following 5, which does not serve yet.
        assert!(c.heard(5, key("a"), ClaimState::Leading, 9, t0).is_empty());
        assert_eq!(c.next_deadline(), Some(t0 + FOLLOW_WAIT));
        assert!(c.expire(9, t0 + WINDOW_MAX).is_empty());
        let d = c.expire(9, t0 + FOLLOW_WAIT);
        assert_eq!(d[0].decision, Decision::Lead);
        assert!(!d[0].won);
        // Following 5, which never serves, while another host leads too (a lost CLAIM): the
        // one that serves is followed.
        c.mark(QuestionId(2), key("b"), &[]);
        c.begin(QuestionId(2), t0, WINDOW_MIN);
        assert!(c.heard(5, key("b"), ClaimState::Leading, 9, t0).is_empty());
        let d = c.heard(6, key("b"), ClaimState::Serving, 9, t0 + WINDOW_MAX);
        assert_eq!(d[0].decision, Decision::Follow(6));
        // Following 5, which gives up before serving (RELEASED): fetch at once, no wait.
        c.mark(QuestionId(3), key("c"), &[]);
        c.begin(QuestionId(3), t0, WINDOW_MIN);
        assert!(c.heard(5, key("c"), ClaimState::Leading, 9, t0).is_empty());
        let d = c.heard(5, key("c"), ClaimState::Released, 9, t0 + WINDOW_MAX);
        assert_eq!(d[0].decision, Decision::Lead);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn tables_are_bounded() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        for i in 0..(HEARD_LIMIT as u64 + 10) {
            c.heard(i, key("a"), ClaimState::Claiming, 9, t0);
        }
        assert_eq!(c.heard.len(), HEARD_LIMIT);
        for i in 0..(LEAD_LIMIT + 3) {
            c.lead(key(&i.to_string()), false, t0);
        }
        assert_eq!(c.leads.len(), LEAD_LIMIT);
        for i in 0..PENDING_LIMIT as u32 {
            assert!(c.mark(QuestionId(i), key("a"), &[]));
        }
        assert!(!c.mark(QuestionId(u32::MAX), key("a"), &[]));
        assert!(c.expire(1, t0 + LEAD_KEPT).is_empty());
        assert!(c.heard.is_empty() && c.leads.is_empty());
    }
}
