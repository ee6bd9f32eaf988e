//! Fake-clock tests of the lookup rules: cache summaries, waves, answer times, silent peers,
//! HELLO re-sends and resume. Through the core's public face only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::identity::{Identity, Params};
use super::protocol::{DELTA_EVERY, Dest, Discovery, Event, LISTED_WAIT, SUMMARY_RETRY, WAVE};
use super::rtt::MIN_WAIT;
use super::summary::fingerprint;
use super::wire::{Announcement, Body, Expected, Message, emit, parse};
use super::{JoinReport, QuestionId};

const ME: u64 = 0xAAAA;
const FILE: &str = "zstd-1.5.6-1-x86_64.pkg.tar.zst";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 19432))
}

fn bytes(host_id: u64, body: Body) -> Vec<u8> {
    let mut out = Vec::new();
    emit(&Message { host_id, body }, &mut out);
    out
}

fn none(_: &str, _: Option<Expected>) -> bool {
    false
}

fn me() -> Identity {
    Identity {
        host_id: ME,
        tcp_port: 19432,
        distro: "arch".into(),
        arch: "x86_64".into(),
    }
}

struct Lan {
    d: Discovery,
    now: Instant,
}

impl Lan {
    /// A started core with `names` in its cache, its start-up datagrams (HELLO re-sends
    /// included) sent, and no peer yet.
    fn new(names: &[&str]) -> Lan {
        let now = Instant::now();
        let mut d = Discovery::new(me(), Params::default(), now, 7);
        d.handle_join(
            now,
            &JoinReport {
                joined: vec!["eth0".into()],
                errors: Vec::new(),
            },
        );
        d.set_cache_names(names.iter().copied(), now);
        let mut lan = Lan { d, now };
        lan.advance(ms(1500));
        lan.sent();
        lan
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        let mut steps = 0;
        while let Some(t) = self.d.poll_timeout().filter(|&t| t <= end) {
            steps += 1;
            assert!(steps < 10_000, "a timer that does not move");
            self.now = t.max(self.now);
            self.d.handle_timeout(self.now);
        }
        self.now = end;
        self.d.handle_timeout(self.now);
    }

    fn sent(&mut self) -> Vec<(Dest, Message)> {
        std::iter::from_fn(|| self.d.poll_transmit())
            .map(|t| (t.dest, parse(&t.payload).unwrap()))
            .collect()
    }

    fn receive(&mut self, from: u8, body: Body) {
        let b = bytes(u64::from(from), body);
        self.d.handle_datagram(addr(from), &b, self.now, &mut none);
    }

    /// Peer `n` announces summary version `version`, then (when `files` is `Some`) answers
    /// our SUMMARY_REQUEST with those files.
    fn peer(&mut self, n: u8, version: u32, files: Option<&[&str]>) {
        self.receive(
            n,
            Body::Announce(Announcement {
                tcp_port: 8000,
                distro: "arch".into(),
                arch: "x86_64".into(),
                summary: version,
            }),
        );
        let sent = self.sent();
        if version != 0 && files.is_some() {
            assert!(
                sent.iter()
                    .any(|(d, m)| *d == Dest::Peer(addr(n)) && m.body == Body::SummaryRequest),
                "{sent:?}"
            );
        }
        if let Some(files) = files {
            let mut fps: Vec<u32> = files.iter().map(|f| fingerprint(f)).collect();
            fps.sort_unstable();
            fps.dedup();
            self.receive(
                n,
                Body::SummaryPart {
                    version,
                    part: 0,
                    parts: 1,
                    fingerprints: fps,
                },
            );
        }
    }

    fn ask(&mut self, file: &str) -> QuestionId {
        self.d.ask(file, None, &[], self.now)
    }

    fn answer(&mut self) -> Option<(QuestionId, Option<u64>)> {
        std::iter::from_fn(|| self.d.poll_event()).find_map(|e| match e {
            Event::Answer { question, peer } => Some((question, peer.map(|p| p.host_id))),
            _ => None,
        })
    }

    fn asked(sent: &[(Dest, Message)]) -> Vec<(u8, u32)> {
        sent.iter()
            .filter_map(|(d, m)| match (d, &m.body) {
                (Dest::Peer(a), Body::WhoHas { question, .. }) => {
                    let SocketAddr::V4(v4) = a else { return None };
                    Some((v4.ip().octets()[3], *question))
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_miss_with_known_summaries_costs_nothing() {
    let mut lan = Lan::new(&[]);
    for n in 1..=40 {
        lan.peer(n, 1, Some(&["other-1-1-any.pkg.tar.zst"]));
    }
    let q = lan.ask(FILE);
    assert_eq!(lan.answer(), Some((q, None)), "answered at once");
    assert!(Lan::asked(&lan.sent()).is_empty(), "no datagram");
}

#[test]
fn only_listed_peers_are_asked_a_wave_at_a_time() {
    let mut lan = Lan::new(&[]);
    for n in 1..=30 {
        let files: &[&str] = if n % 5 == 0 { &[FILE] } else { &[] };
        lan.peer(n, 1, Some(files));
    }
    let q = lan.ask(FILE);
    let first = Lan::asked(&lan.sent());
    assert_eq!(first.len(), WAVE, "{first:?}");
    assert!(first.iter().all(|(n, _)| n % 5 == 0));
    for &(n, _) in &first {
        lan.receive(n, Body::HaveNot { question: q.0 });
    }
    let second = Lan::asked(&lan.sent());
    assert_eq!(second.len(), 6 - WAVE, "the other holders");
    assert!(
        second
            .iter()
            .all(|(n, _)| n % 5 == 0 && !first.iter().any(|f| f.0 == *n))
    );
    lan.receive(second[0].0, Body::Have { question: q.0 });
    assert_eq!(lan.answer(), Some((q, Some(u64::from(second[0].0)))));
}

#[test]
fn a_peer_with_no_summary_is_asked_about_everything() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 0, None); // an older flocon, or a cache too big to summarize
    lan.peer(2, 1, Some(&[]));
    let q = lan.ask(FILE);
    assert_eq!(
        Lan::asked(&lan.sent()),
        vec![(1, q.0)],
        "peer 2's summary says no"
    );
}

#[test]
fn a_silent_peer_is_waited_for_once_then_skipped_until_heard() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    lan.peer(2, 1, Some(&[FILE]));
    // Both answer fast a few times: their wait falls to the floor.
    for _ in 0..8 {
        let q = lan.ask(FILE);
        lan.sent();
        lan.advance(ms(1));
        lan.receive(1, Body::HaveNot { question: q.0 });
        lan.receive(2, Body::HaveNot { question: q.0 });
        assert_eq!(lan.answer(), Some((q, None)));
    }
    // Peer 2 freezes (a suspended laptop).
    let q = lan.ask(FILE);
    lan.sent();
    lan.receive(1, Body::HaveNot { question: q.0 });
    assert_eq!(lan.answer(), None);
    // Its summary lists the file: a likely holder is given LISTED_WAIT, not just MIN_WAIT.
    lan.advance(LISTED_WAIT - ms(1));
    assert_eq!(lan.answer(), None);
    lan.advance(ms(1));
    assert_eq!(lan.answer(), Some((q, None)), "no longer than LISTED_WAIT");
    lan.sent(); // the re-send at half the wait
    // Next lookups do not wait for it at all.
    let q = lan.ask(FILE);
    assert_eq!(Lan::asked(&lan.sent()), vec![(1, q.0)]);
    lan.receive(1, Body::HaveNot { question: q.0 });
    assert_eq!(lan.answer(), Some((q, None)), "at once");
    // Heard again: asked again.
    lan.peer(2, 1, None);
    let q = lan.ask(FILE);
    assert_eq!(Lan::asked(&lan.sent()).len(), 2, "{q:?}");
}

#[test]
fn an_unmeasured_peer_is_waited_for_the_lookup_timeout() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    let q = lan.ask(FILE);
    lan.sent();
    lan.advance(ms(124));
    assert!(
        Lan::asked(&lan.sent()).is_empty(),
        "re-sent at half the wait"
    );
    lan.advance(ms(1));
    assert_eq!(Lan::asked(&lan.sent()), vec![(1, q.0)]);
    lan.advance(ms(124));
    assert_eq!(lan.answer(), None);
    lan.advance(ms(1));
    assert_eq!(lan.answer(), Some((q, None)));
}

#[test]
fn answers_from_another_address_are_dropped() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    let q = lan.ask(FILE);
    lan.sent();
    // Host id 1's HAVE, but from 10.0.0.9.
    let b = bytes(1, Body::Have { question: q.0 });
    lan.d.handle_datagram(addr(9), &b, lan.now, &mut none);
    assert_eq!(lan.answer(), None);
    lan.receive(1, Body::Have { question: q.0 });
    assert_eq!(lan.answer(), Some((q, Some(1))));
}

#[test]
fn summaries_follow_deltas_and_a_gap_asks_for_the_whole() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 4, Some(&[]));
    let q = lan.ask(FILE);
    assert_eq!(lan.answer(), Some((q, None)));
    lan.receive(
        1,
        Body::SummaryDelta {
            version: 5,
            added: vec![fingerprint(FILE)],
            removed: vec![],
        },
    );
    let q = lan.ask(FILE);
    assert_eq!(Lan::asked(&lan.sent()), vec![(1, q.0)]);
    lan.receive(1, Body::HaveNot { question: q.0 });
    lan.answer();
    // Version 6 lost; 7 arrives: ask for the whole summary, and meanwhile ask peer 1 anyway.
    lan.receive(
        1,
        Body::SummaryDelta {
            version: 7,
            added: vec![],
            removed: vec![fingerprint(FILE)],
        },
    );
    let sent = lan.sent();
    assert!(sent.iter().any(|(_, m)| m.body == Body::SummaryRequest));
    let q = lan.ask("nothing-1-1-any.pkg.tar.zst");
    assert_eq!(Lan::asked(&lan.sent()), vec![(1, q.0)]);
    // No answer to the request: asked again after SUMMARY_RETRY.
    lan.advance(SUMMARY_RETRY);
    assert!(
        lan.sent()
            .iter()
            .any(|(_, m)| m.body == Body::SummaryRequest)
    );
}

#[test]
fn our_summary_goes_whole_to_a_peer_that_asks_and_changes_as_deltas() {
    let mut lan = Lan::new(&[FILE, "a-1-1-any.pkg.tar.zst"]);
    lan.peer(1, 0, None);
    lan.receive(1, Body::SummaryRequest);
    let parts: Vec<_> = lan
        .sent()
        .into_iter()
        .filter_map(|(d, m)| match m.body {
            Body::SummaryPart {
                version,
                fingerprints,
                ..
            } => Some((d, version, fingerprints.len())),
            _ => None,
        })
        .collect();
    assert_eq!(parts, vec![(Dest::Peer(addr(1)), 1, 2)]);
    // Asked again at once: rate-limited.
    lan.receive(1, Body::SummaryRequest);
    assert!(lan.sent().is_empty());
    // A stranger (not in the table) is not answered.
    let b = bytes(77, Body::SummaryRequest);
    lan.d.handle_datagram(addr(77), &b, lan.now, &mut none);
    assert!(lan.sent().is_empty());
    // Three downloads finish within DELTA_EVERY: one delta, then one for the fourth.
    lan.d.cache_added("b-1-1-any.pkg.tar.zst");
    lan.d.cache_added("c-1-1-any.pkg.tar.zst");
    lan.d.cache_removed(FILE);
    lan.advance(ms(1));
    lan.d.cache_added("d-1-1-any.pkg.tar.zst");
    lan.advance(DELTA_EVERY);
    let deltas: Vec<_> = lan
        .sent()
        .into_iter()
        .filter_map(|(d, m)| match m.body {
            Body::SummaryDelta {
                version,
                added,
                removed,
            } => Some((d, version, added.len(), removed.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        vec![(Dest::Group, 2, 2, 1), (Dest::Group, 3, 1, 0)],
        "one per DELTA_EVERY"
    );
}

#[test]
fn hello_is_sent_again_within_two_seconds_of_start() {
    let now = Instant::now();
    let mut d = Discovery::new(me(), Params::default(), now, 3);
    d.handle_join(
        now,
        &JoinReport {
            joined: vec!["eth0".into()],
            errors: Vec::new(),
        },
    );
    let mut hellos = Vec::new();
    let mut t = now;
    while t < now + ms(2000) {
        d.handle_timeout(t);
        while let Some(x) = d.poll_transmit() {
            if matches!(parse(&x.payload).unwrap().body, Body::Hello(_)) {
                hellos.push(t - now);
            }
        }
        t = d.poll_timeout().unwrap().min(now + ms(2000));
        if t == now + ms(2000) {
            break;
        }
    }
    assert_eq!(hellos.len(), 3, "{hellos:?}");
    assert!(hellos[1] >= ms(225) && hellos[1] <= ms(375), "{hellos:?}");
    assert!(hellos[2] >= ms(750) && hellos[2] <= ms(1250), "{hellos:?}");
}

#[test]
fn after_a_long_sleep_old_peers_are_gone_and_others_not_waited_for() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    lan.advance(Duration::from_secs(100));
    lan.peer(2, 1, Some(&[FILE]));
    // 100 s of sleep: peer 1 (silent 100 s before) passes 180 s; peer 2 does not.
    lan.d.handle_resume(lan.now, Duration::from_secs(100));
    let gone: Vec<_> = std::iter::from_fn(|| lan.d.poll_event())
        .filter_map(|e| match e {
            Event::PeerGone(p, _) => Some(p.host_id),
            _ => None,
        })
        .collect();
    assert_eq!(gone, vec![1]);
    assert!(
        lan.sent()
            .iter()
            .any(|(d, m)| *d == Dest::Group && matches!(m.body, Body::Hello(_)))
    );
    let q = lan.ask(FILE);
    assert_eq!(lan.answer(), Some((q, None)), "peer 2 not waited for");
    lan.peer(2, 1, None);
    let q = lan.ask(FILE);
    assert_eq!(Lan::asked(&lan.sent()), vec![(2, q.0)]);
}

#[test]
fn a_fast_peer_with_no_summary_is_waited_for_min_wait_only() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 0, None);
    for _ in 0..8 {
        let q = lan.ask(FILE);
        lan.sent();
        lan.advance(ms(1));
        lan.receive(1, Body::HaveNot { question: q.0 });
        assert_eq!(lan.answer(), Some((q, None)));
    }
    let q = lan.ask(FILE);
    lan.sent();
    lan.advance(MIN_WAIT - ms(1));
    assert_eq!(lan.answer(), None);
    lan.advance(ms(1));
    assert_eq!(lan.answer(), Some((q, None)), "no longer than MIN_WAIT");
}

#[test]
fn deltas_go_at_once_up_to_a_burst_then_one_per_interval() {
    use super::protocol::DELTA_BURST;
    let mut lan = Lan::new(&[]);
    let deltas = |lan: &mut Lan| {
        lan.sent()
            .iter()
            .filter(|(_, m)| matches!(m.body, Body::SummaryDelta { .. }))
            .count()
    };
    for k in 0..DELTA_BURST + 10 {
        lan.d.cache_added(&format!("p{k}-1-1-any.pkg.tar.zst"));
        let now = lan.now;
        lan.d.handle_timeout(now);
    }
    assert_eq!(deltas(&mut lan), DELTA_BURST as usize, "a burst at once");
    // The other 10 changes wait for a token: one delta carries them all.
    lan.advance(DELTA_EVERY);
    assert_eq!(deltas(&mut lan), 1);
    lan.advance(DELTA_EVERY * 5);
    assert_eq!(deltas(&mut lan), 0, "nothing left to say");
}

// ---- a hostile host on the LAN (issue 17) ------------------------------------------------------

#[test]
fn another_address_cannot_take_over_or_dismiss_a_peer() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    let announce = Body::Announce(Announcement {
        tcp_port: 6666,
        distro: "arch".into(),
        arch: "x86_64".into(),
        summary: 0, // "I have no summary": would make host 1 asked about everything
    });
    // Host 1's id, from 10.0.0.66: its entry keeps its address and port.
    let b = bytes(1, announce);
    lan.d.handle_datagram(addr(66), &b, lan.now, &mut none);
    let p = lan.d.peer(1).unwrap();
    assert_eq!(p.addr, SocketAddr::from(([10, 0, 0, 1], 8000)));
    assert_eq!(lan.d.refused_announcements(), 1);
    // Nor does it touch what is known of host 1: its summary still says it has FILE.
    let q = lan.ask(FILE);
    assert_eq!(Lan::asked(&lan.sent()), vec![(1, q.0)]);
    lan.receive(1, Body::HaveNot { question: q.0 });
    lan.answer();
    let q = lan.ask("not-listed-1-1-any.pkg.tar.zst");
    assert_eq!(lan.answer(), Some((q, None)));
    // A GOODBYE of host 1 from there: ignored.
    let b = bytes(1, Body::Goodbye);
    lan.d.handle_datagram(addr(66), &b, lan.now, &mut none);
    assert!(lan.d.peer(1).is_some());
    // From its own address: it goes.
    lan.receive(1, Body::Goodbye);
    assert!(lan.d.peer(1).is_none());
}

#[test]
fn spoofed_hellos_cannot_fill_the_table_or_slow_a_lookup() {
    let mut lan = Lan::new(&[]);
    lan.peer(1, 1, Some(&[FILE]));
    // 1,100 HELLOs with made-up ids from one address: 4 entries at most.
    for id in 0..1100u64 {
        let b = bytes(
            0x5000 + id,
            Body::Hello(Announcement {
                tcp_port: 1 + id as u16,
                distro: "arch".into(),
                arch: "x86_64".into(),
                summary: 0,
            }),
        );
        lan.d.handle_datagram(addr(99), &b, lan.now, &mut none);
    }
    assert_eq!(
        lan.d.peers().count(),
        1 + super::peer_table::MAX_PER_ADDRESS
    );
    // Answered with at most one ANNOUNCE, to the group; the summary requests go to the 4.
    let sent = lan.sent();
    let announces = sent
        .iter()
        .filter(|(d, m)| matches!(m.body, Body::Announce(_)) && *d == Dest::Group)
        .count();
    assert!(announces <= 1, "{sent:?}");
    assert!(
        !sent
            .iter()
            .any(|(d, m)| matches!(m.body, Body::Announce(_)) && *d != Dest::Group)
    );
    // A lookup asks one wave at most: never the whole table.
    let q = lan.ask(FILE);
    let asked = Lan::asked(&lan.sent());
    assert!(asked.len() <= WAVE, "{asked:?}");
    assert!(asked.iter().all(|(_, id)| *id == q.0));
}

#[test]
fn a_summary_request_that_comes_before_the_announcement_is_answered_with_it() {
    let mut lan = Lan::new(&[FILE]);
    // Peer 5 asks for our summary before we heard its announcement (its ANNOUNCE answering
    // our HELLO crossed its request on the wire).
    lan.receive(5, Body::SummaryRequest);
    assert!(lan.sent().is_empty(), "not answered to a stranger");
    let hello = |summary| {
        Body::Announce(Announcement {
            tcp_port: 8000,
            distro: "arch".into(),
            arch: "x86_64".into(),
            summary,
        })
    };
    lan.receive(5, hello(0));
    let parts = lan
        .sent()
        .into_iter()
        .filter(|(d, m)| *d == Dest::Peer(addr(5)) && matches!(m.body, Body::SummaryPart { .. }))
        .count();
    assert_eq!(parts, 1, "answered once it announced itself");
    // A request kept from another address than the announcement's is not answered.
    let b = bytes(6, Body::SummaryRequest);
    lan.d.handle_datagram(addr(66), &b, lan.now, &mut none);
    lan.receive(6, hello(0));
    assert!(
        !lan.sent()
            .iter()
            .any(|(_, m)| matches!(m.body, Body::SummaryPart { .. }))
    );
}
