//! Fake-clock tests of the claim rule (one fetcher per file) with several whole cores on a
//! simulated LAN: datagrams take a fixed delay, the group reaches every other host, and a test
//! may drop any datagram. Through the core's public face only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::claims::{WINDOW_MAX, WINDOW_MIN, rank};
use super::identity::{Identity, Params};
use super::protocol::{Dest, Discovery, Event};
use super::wire::{Body, Expected, parse};
use super::{JoinReport, QuestionId};
use crate::sync_db::Sha256;

const FILE: &str = "zstd-1.5.6-1-x86_64.pkg.tar.zst";
const DELAY: Duration = Duration::from_micros(300);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn expected() -> Option<Expected> {
    Some(Expected {
        size: 1_500_000,
        sha256: Sha256([9; 32]),
    })
}

fn none(_: &str, _: Option<Expected>) -> bool {
    false
}

/// A datagram on the wire.
struct Flight {
    at: Instant,
    from: usize,
    to: usize,
    payload: Vec<u8>,
}

type Drop = Box<dyn FnMut(usize, usize, &Body) -> bool>;

struct Lan {
    hosts: Vec<Discovery>,
    ids: Vec<u64>,
    /// Hosts that stopped (killed): they neither send nor hear nor tick.
    dead: Vec<bool>,
    wire: Vec<Flight>,
    now: Instant,
    /// `drop(from, to, body)`: lose this datagram.
    drop: Drop,
    /// Answers: host -> question -> (when, the host followed or `None` to lead).
    answers: Vec<BTreeMap<u32, (Instant, Option<u64>)>>,
    /// A host told to lead says SERVING this long after (its upstream answered); `None`:
    /// never.
    serve_after: Option<Duration>,
    /// (when, host): SERVING due.
    serve_at: Vec<(Instant, usize)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 19432))
}

impl Lan {
    /// `n` hosts with these host ids (any order), started and knowing each other.
    fn new(ids: &[u64]) -> Lan {
        let now = Instant::now();
        let hosts = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let me = Identity {
                    host_id: id,
                    tcp_port: 8000 + i as u16,
                    distro: "arch".into(),
                    arch: "x86_64".into(),
                };
                let mut d = Discovery::new(me, Params::default(), now, id);
                d.handle_join(
                    now,
                    &JoinReport {
                        joined: vec!["eth0".into()],
                        errors: Vec::new(),
                    },
                );
                d.set_cache_names([], now);
                d
            })
            .collect();
        let mut lan = Lan {
            hosts,
            ids: ids.to_vec(),
            dead: vec![false; ids.len()],
            wire: Vec::new(),
            now,
            drop: Box::new(|_, _, _| false),
            answers: vec![BTreeMap::new(); ids.len()],
            serve_after: Some(ms(5)),
            serve_at: Vec::new(),
        };
        lan.run(ms(1500));
        for d in &lan.hosts {
            assert_eq!(d.peers().count(), ids.len() - 1);
        }
        lan
    }

    fn index(&self, id: u64) -> usize {
        self.ids.iter().position(|&i| i == id).unwrap()
    }

    /// Move every host's datagrams to the wire and record answers.
    fn collect(&mut self) {
        for i in 0..self.hosts.len() {
            while let Some(t) = self.hosts[i].poll_transmit() {
                if self.dead[i] {
                    continue;
                }
                let targets: Vec<usize> = match t.dest {
                    Dest::Group => (0..self.hosts.len()).filter(|&j| j != i).collect(),
                    Dest::Peer(a) => (0..self.hosts.len()).filter(|&j| addr(j) == a).collect(),
                };
                let body = parse(&t.payload).unwrap().body;
                for to in targets {
                    if !(self.drop)(i, to, &body) {
                        self.wire.push(Flight {
                            at: self.now + DELAY,
                            from: i,
                            to,
                            payload: t.payload.clone(),
                        });
                    }
                }
            }
            while let Some(e) = self.hosts[i].poll_event() {
                if let Event::Answer { question, peer } = e {
                    let old =
                        self.answers[i].insert(question.0, (self.now, peer.map(|p| p.host_id)));
                    assert!(old.is_none(), "two answers to one question");
                    if let (None, Some(after)) = (peer, self.serve_after) {
                        self.serve_at.push((self.now + after, i));
                    }
                }
            }
        }
    }

    /// Run the LAN for `by`.
    fn run(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..100_000 {
            self.collect();
            let next_flight = self.wire.iter().map(|f| f.at).min();
            let next_timer = (0..self.hosts.len())
                .filter(|&i| !self.dead[i])
                .filter_map(|i| self.hosts[i].poll_timeout())
                .chain(self.serve_at.iter().map(|s| s.0))
                .min();
            let Some(next) = next_flight
                .into_iter()
                .chain(next_timer)
                .min()
                .filter(|&t| t <= end)
            else {
                self.now = end;
                for i in 0..self.hosts.len() {
                    if !self.dead[i] {
                        self.hosts[i].handle_timeout(end);
                    }
                }
                self.collect();
                return;
            };
            self.now = next.max(self.now);
            let now = self.now;
            let (due, later): (Vec<Flight>, Vec<Flight>) =
                self.wire.drain(..).partition(|f| f.at <= now);
            self.wire = later;
            for f in due {
                if !self.dead[f.to] {
                    self.hosts[f.to].handle_datagram(addr(f.from), &f.payload, now, &mut none);
                }
            }
            let (serve, later): (Vec<_>, Vec<_>) =
                self.serve_at.drain(..).partition(|s| s.0 <= now);
            self.serve_at = later;
            for (_, i) in serve {
                if !self.dead[i] {
                    self.hosts[i].serving(FILE, expected(), now);
                }
            }
            for i in 0..self.hosts.len() {
                if !self.dead[i] {
                    self.hosts[i].handle_timeout(now);
                }
            }
        }
        panic!("the LAN does not settle");
    }

    fn ask(&mut self, host: usize, exclude: &[u64]) -> QuestionId {
        self.hosts[host].ask_to_fetch(FILE, expected(), exclude, self.now)
    }

    fn answer(&self, host: usize, q: QuestionId) -> Option<(Instant, Option<u64>)> {
        self.answers[host].get(&q.0).copied()
    }
}

/// Host ids that are not in rank order, so that the rank (not the id) is what is tested.
fn ids(n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1))
        .collect()
}

fn best(ids: &[u64]) -> u64 {
    *ids.iter().min_by_key(|&&h| rank(h, FILE)).unwrap()
}

#[test]
fn simultaneous_claims_from_2_to_8_hosts_pick_one_leader() {
    for n in 2..=8 {
        for spread_us in [0u64, 700, 4_000] {
            let ids = ids(n);
            let mut lan = Lan::new(&ids);
            let start = lan.now;
            let mut qs = Vec::new();
            for i in 0..n {
                qs.push(lan.ask(i, &[]));
                lan.run(Duration::from_micros(spread_us));
            }
            lan.run(WINDOW_MAX * 2);
            let leader = best(&ids);
            for i in 0..n {
                let (at, follow) = lan.answer(i, qs[i]).expect("every host is answered");
                assert!(at - start <= WINDOW_MAX * 2, "answered in {:?}", at - start);
                if ids[i] == leader {
                    assert_eq!(follow, None, "n={n}: the leader fetches");
                    assert!(lan.hosts[i].is_leading(FILE));
                } else {
                    assert_eq!(follow, Some(leader), "n={n} spread={spread_us}us host {i}");
                    assert!(!lan.hosts[i].is_leading(FILE));
                }
            }
        }
    }
}

#[test]
fn a_late_claim_follows_the_leader_at_once() {
    let ids = ids(4);
    let mut lan = Lan::new(&ids);
    let q: Vec<QuestionId> = (0..3).map(|i| lan.ask(i, &[])).collect();
    lan.run(ms(500));
    let leaders: Vec<usize> = (0..3)
        .filter(|&i| lan.answer(i, q[i]).unwrap().1.is_none())
        .collect();
    assert_eq!(leaders.len(), 1);
    let leader = ids[leaders[0]];
    // Host 3 comes 3 s later (the LEADING multicast has expired at its end): the leader
    // answers its CLAIM, so it follows within a round trip, not a window.
    lan.run(ms(2500));
    let asked = lan.now;
    let late = lan.ask(3, &[]);
    lan.run(WINDOW_MAX);
    let (at, follow) = lan.answer(3, late).unwrap();
    assert_eq!(follow, Some(leader));
    assert!(at - asked < WINDOW_MIN, "{:?}", at - asked);
    // Once the leader released the file, a new claim has nobody to follow.
    let l = lan.index(leader);
    lan.hosts[l].release(FILE);
    lan.run(ms(2500));
    let again = lan.ask(3, &[]);
    lan.run(WINDOW_MAX * 2);
    assert_eq!(lan.answer(3, again).unwrap().1, None);
}

#[test]
fn a_leader_that_goes_silent_is_replaced_by_one_of_its_followers() {
    let ids = ids(5);
    let mut lan = Lan::new(&ids);
    let q: Vec<QuestionId> = (0..5).map(|i| lan.ask(i, &[])).collect();
    lan.run(ms(100));
    let leader = best(&ids);
    let l = lan.index(leader);
    assert_eq!(lan.answer(l, q[l]).unwrap().1, None);
    // The leader dies; each follower's download from it fails and the relay asks again,
    // leaving it out: they pick one new leader among themselves.
    lan.dead[l] = true;
    lan.run(ms(300));
    let rest: Vec<usize> = (0..5).filter(|&i| i != l).collect();
    let q2: Vec<(usize, QuestionId)> = rest.iter().map(|&i| (i, lan.ask(i, &[leader]))).collect();
    lan.run(WINDOW_MAX * 2);
    let others: Vec<u64> = rest.iter().map(|&i| ids[i]).collect();
    let second = best(&others);
    for (i, q) in q2 {
        let (_, follow) = lan.answer(i, q).unwrap();
        if ids[i] == second {
            assert_eq!(follow, None);
        } else {
            assert_eq!(follow, Some(second));
        }
    }
    // A newcomer that does not know yet: the silent leader's LEADING is forgotten after
    // 2 s, and the new leader answers its CLAIM.
    lan.run(ms(2500));
    let i = rest[0];
    let fresh = lan.ask(i, &[]);
    lan.run(WINDOW_MAX * 2);
    let follow = lan.answer(i, fresh).unwrap().1;
    if ids[i] == second {
        assert_eq!(follow, None);
    } else {
        assert_eq!(follow, Some(second));
    }
}

#[test]
fn lost_datagrams_cost_at_most_a_second_fetcher_never_an_answer() {
    let ids = ids(4);
    let leader = best(&ids);
    // Every CLAIM from the best host to host `victim` is lost, and so is its LEADING.
    let mut lan = Lan::new(&ids);
    let (l, victim) = (lan.index(leader), (lan.index(leader) + 1) % 4);
    lan.drop = Box::new(move |from, to, body| {
        from == l && to == victim && matches!(body, Body::Claim { .. })
    });
    let q: Vec<QuestionId> = (0..4).map(|i| lan.ask(i, &[])).collect();
    lan.run(WINDOW_MAX * 2);
    let mut leaders = 0;
    for i in 0..4 {
        let (_, follow) = lan.answer(i, q[i]).expect("answered despite the loss");
        if follow.is_none() {
            leaders += 1;
        }
        if i != victim {
            // Those that heard everything agree on the best host.
            assert_eq!(follow, (ids[i] != leader).then_some(leader));
        }
    }
    assert!(leaders <= 2, "{leaders} leaders");
    // A lost answer to a late CLAIM: the latecomer still ends within its window, following the
    // leader it heard LEADING from (multicast, kept 2 s) or leading itself.
    let mut lan = Lan::new(&ids);
    let (l, late) = (lan.index(leader), (lan.index(leader) + 2) % 4);
    let q: Vec<QuestionId> = (0..4)
        .filter(|&i| i != late)
        .map(|i| lan.ask(i, &[]))
        .collect();
    assert_eq!(q.len(), 3);
    lan.run(ms(200));
    lan.drop = Box::new(move |from, to, _| from == l && to == late);
    let asked = lan.now;
    let lq = lan.ask(late, &[]);
    lan.run(WINDOW_MAX * 2);
    let (at, follow) = lan.answer(late, lq).unwrap();
    assert!(at - asked <= WINDOW_MAX);
    assert_eq!(follow, Some(leader));
}

#[test]
fn claims_count_only_from_known_peers_and_plain_lookups_never_claim() {
    let ids = ids(3);
    let mut lan = Lan::new(&ids);
    // A plain `ask` (a query) that ends with nobody sends no CLAIM.
    let q = lan.hosts[0].ask(FILE, expected(), &[], lan.now);
    let sent: Vec<_> = std::iter::from_fn(|| lan.hosts[0].poll_transmit()).collect();
    assert!(
        sent.iter()
            .all(|t| !matches!(parse(&t.payload).unwrap().body, Body::Claim { .. }))
    );
    lan.run(ms(10));
    assert_eq!(lan.answer(0, q).unwrap().1, None);
    // A LEADING from a stranger (not in the table) is dropped: host 0 leads after its window.
    let stranger = SocketAddr::from(([10, 0, 0, 99], 19432));
    let mut b = Vec::new();
    super::wire::emit(
        &super::wire::Message {
            host_id: 0x5555,
            body: Body::Claim {
                state: super::wire::ClaimState::Serving,
                name: FILE.as_bytes().to_vec(),
                expected: expected(),
            },
        },
        &mut b,
    );
    let q = lan.ask(0, &[]);
    lan.hosts[0].handle_datagram(stranger, &b, lan.now, &mut none);
    lan.run(WINDOW_MAX * 2);
    assert_eq!(lan.answer(0, q).unwrap().1, None);
    // A cancelled claim is never answered.
    let q = lan.ask(1, &[]);
    lan.hosts[1].cancel(q);
    lan.run(WINDOW_MAX * 2);
    assert_eq!(lan.answer(1, q), None);
}

#[test]
fn followers_wait_for_their_leader_to_serve_and_no_longer_than_the_follow_wait() {
    use super::claims::FOLLOW_WAIT;
    let ids = ids(3);
    let leader = best(&ids);
    // Its upstream answers after 400 ms: the followers are answered then, not before.
    let mut lan = Lan::new(&ids);
    lan.serve_after = Some(ms(400));
    let start = lan.now;
    let q: Vec<QuestionId> = (0..3).map(|i| lan.ask(i, &[])).collect();
    lan.run(ms(300));
    for i in 0..3 {
        assert_eq!(lan.answer(i, q[i]).is_some(), ids[i] == leader);
    }
    lan.run(ms(300));
    for i in (0..3).filter(|&i| ids[i] != leader) {
        let (at, follow) = lan.answer(i, q[i]).unwrap();
        assert_eq!(follow, Some(leader));
        assert!(at - start >= ms(400) && at - start < ms(400) + WINDOW_MAX * 2);
    }
    // It never serves (its upstream failed, or the file is too big for its spool): each
    // follower fetches from upstream itself after the follow wait.
    let mut lan = Lan::new(&ids);
    lan.serve_after = None;
    let start = lan.now;
    let q: Vec<QuestionId> = (0..3).map(|i| lan.ask(i, &[])).collect();
    lan.run(FOLLOW_WAIT + WINDOW_MAX * 2);
    for i in 0..3 {
        let (at, follow) = lan.answer(i, q[i]).unwrap();
        assert_eq!(follow, None);
        if ids[i] != leader {
            assert!(at - start >= FOLLOW_WAIT);
        }
    }
}

#[test]
fn claims_spread_over_more_than_a_window_still_follow_the_host_that_leads() {
    // A claims first, Y 30 ms later, B 70 ms after A; ranks B < Y < A. A's window sees Y
    // (not B) and picks Y; Y's window sees B and follows it; B leads. A must end up on B, at
    // once when B serves, not after the follow wait.
    let mut by_rank = ids(3);
    by_rank.sort_by_key(|&h| rank(h, FILE));
    let (b, y, a) = (by_rank[0], by_rank[1], by_rank[2]);
    let mut lan = Lan::new(&[a, y, b]);
    let start = lan.now;
    let qa = lan.ask(0, &[]);
    lan.run(ms(30));
    let qy = lan.ask(1, &[]);
    lan.run(ms(40));
    let qb = lan.ask(2, &[]);
    lan.run(ms(300));
    assert_eq!(lan.answer(2, qb).unwrap().1, None, "B leads");
    assert_eq!(lan.answer(1, qy).unwrap().1, Some(b));
    let (at, follow) = lan.answer(0, qa).expect("A is answered");
    assert_eq!(follow, Some(b));
    assert!(at - start < ms(300), "A waited {:?}", at - start);
}

#[test]
fn a_leader_that_gives_up_before_serving_frees_its_followers_at_once() {
    let ids = ids(3);
    let leader = best(&ids);
    let mut lan = Lan::new(&ids);
    lan.serve_after = None;
    let q: Vec<QuestionId> = (0..3).map(|i| lan.ask(i, &[])).collect();
    lan.run(ms(200));
    // Its upstream failed, or its spool refused the file: the relay releases it.
    let l = lan.index(leader);
    let released = lan.now;
    lan.hosts[l].release(FILE);
    lan.run(ms(50));
    for i in (0..3).filter(|&i| i != l) {
        let (at, follow) = lan.answer(i, q[i]).expect("answered");
        assert_eq!(follow, None, "it fetches itself");
        assert!(at - released < ms(5), "{:?}", at - released);
    }
}

#[test]
fn a_host_that_shuns_the_leader_fetches_itself_at_once_while_the_others_follow_it() {
    // Ranks A < C < D < B. B has banned A (A sent it bytes unlike the database): it never
    // follows A, and the others, which have no reason to distrust A, do. B must not pick C
    // either (C follows A and never fetches): it fetches itself at the end of its window,
    // not after the follow wait.
    let mut by_rank = ids(4);
    by_rank.sort_by_key(|&h| rank(h, FILE));
    let (a, c, d, b) = (by_rank[0], by_rank[1], by_rank[2], by_rank[3]);
    let mut lan = Lan::new(&[a, c, d, b]);
    let start = lan.now;
    let qa = lan.ask(0, &[]);
    let qc = lan.ask(1, &[]);
    let qb = lan.ask(3, &[a]);
    lan.run(WINDOW_MAX * 2);
    assert_eq!(lan.answer(0, qa).expect("A is answered").1, None, "A leads");
    assert_eq!(lan.answer(1, qc).expect("C is answered").1, Some(a));
    let (at, follow) = lan.answer(3, qb).expect("B is answered within two windows");
    assert_eq!(follow, None, "B fetches itself");
    assert!(at - start <= WINDOW_MAX * 2, "B waited {:?}", at - start);
    assert!(lan.hosts[3].is_leading(FILE));

    // A leads already (and serves) when B and D claim together: A answers both claims; D
    // follows A at once, B fetches itself rather than wait for D.
    let mut lan = Lan::new(&[a, c, d, b]);
    let qa = lan.ask(0, &[]);
    let qc = lan.ask(1, &[]);
    lan.run(ms(500));
    assert_eq!(lan.answer(0, qa).unwrap().1, None);
    assert_eq!(lan.answer(1, qc).unwrap().1, Some(a));
    let asked = lan.now;
    let qd = lan.ask(2, &[]);
    let qb = lan.ask(3, &[a]);
    lan.run(WINDOW_MAX * 2);
    assert_eq!(lan.answer(2, qd).expect("D is answered").1, Some(a));
    let (at, follow) = lan.answer(3, qb).expect("B is answered within two windows");
    assert_eq!(follow, None, "B fetches itself");
    assert!(at - asked <= WINDOW_MAX * 2, "B waited {:?}", at - asked);

    // B and A alone: B has nobody it would follow, so it claims nothing and is answered at
    // once (A, which has nothing against B, may follow it once it serves).
    let mut lan = Lan::new(&[a, b]);
    let asked = lan.now;
    let qa = lan.ask(0, &[]);
    let qb = lan.ask(1, &[a]);
    lan.run(WINDOW_MAX * 2);
    assert!(lan.answer(0, qa).is_some());
    assert_eq!(lan.answer(1, qb).unwrap(), (asked, None));
}
