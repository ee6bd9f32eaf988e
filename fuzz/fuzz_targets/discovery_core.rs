//! The discovery core as a state machine: a sequence of datagrams (raw, or well-formed
//! messages from a few hosts), questions, cancels, joins and clock steps, driven with a fake
//! clock, with cache summaries (versions, deltas, parts, requests), cache changes, static
//! peers and resumes from suspend, files in flight (answered FETCHING, and FETCHING answers),
//! and claims (one fetcher per file: downloads asked with `ask_to_fetch`, CLAIM / LEADING /
//! SERVING from peers, leads taken and released); sources are IPv4 addresses and IPv6
//! link-local ones on two interfaces (a host heard on both families is one peer). Checked after
//! every step: nothing panics, the peer table and the queues stay bounded, every datagram it
//! wants sent parses, and every question gets exactly one answer unless it was cancelled,
//! never naming a peer the question excluded.
#![no_main]
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flocon::discovery::wire::{Announcement, Body, ClaimState, Expected, Message};
use flocon::discovery::{
    Discovery, Event, Identity, JoinReport, Params, QuestionId, TRANSMIT_QUEUE_LIMIT, emit,
    fingerprint, parse,
};
use flocon::sync_db::Sha256;
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 3] = ["a-1-1-any.pkg.tar.zst", "b-1-1-any.pkg.tar.zst.sig", "../x"];

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let me = Identity {
        host_id: 1,
        tcp_port: 19432,
        distro: "arch".into(),
        arch: "x86_64".into(),
    };
    let params = Params {
        announce_interval: Duration::from_secs(2),
        lookup_timeout: Duration::from_millis(250),
        max_peers: 4,
    };
    let mut core = Discovery::new(me, params, now, 7);
    let mut open: HashSet<QuestionId> = HashSet::new();
    let mut excluded: HashMap<QuestionId, u64> = HashMap::new();
    let mut cancelled: HashSet<QuestionId> = HashSet::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let host = u64::from(arg % 6) + 1; // 1 is this host's own id
        let from: SocketAddr = match (op / 12) % 3 {
            0 => format!("10.0.0.{}:19432", arg % 6),
            n => format!("[fe80::{}%{n}]:19432", arg % 6),
        }
        .parse()
        .unwrap();
        match op % 12 {
            0 => {
                let len = usize::from(bytes.next().unwrap_or(0));
                let raw: Vec<u8> = bytes.by_ref().take(len).collect();
                core.handle_datagram_with(
                    from,
                    &raw,
                    now,
                    &mut |_, _| arg & 1 == 0,
                    &mut |_, _| (arg & 2 == 0).then_some(u64::from(arg)),
                );
            }
            1 => {
                let ann = Announcement {
                    tcp_port: 19432,
                    distro: if arg & 8 == 0 { "arch" } else { "archarm" }.into(),
                    arch: "x86_64".into(),
                    summary: u32::from(arg >> 6),
                };
                let question = u32::from(bytes.next().unwrap_or(0));
                let body = match arg >> 5 {
                    0 => Body::Announce(ann),
                    1 => Body::Hello(ann),
                    2 => Body::Goodbye,
                    3 => Body::WhoHas {
                        question,
                        name: FILES[usize::from(arg) % 3].as_bytes().to_vec(),
                        expected: (arg & 16 != 0).then_some(Expected {
                            size: u64::from(question),
                            sha256: Sha256([arg; 32]),
                        }),
                    },
                    4 => Body::Have { question },
                    5 if arg & 1 == 0 => Body::HaveNot { question },
                    5 => Body::Fetching {
                        question,
                        bytes: u64::from(arg),
                    },
                    6 => match question % 3 {
                        0 => Body::SummaryRequest,
                        1 => Body::SummaryDelta {
                            version: u32::from(arg & 7) + 1,
                            added: if arg & 1 == 0 { vec![fingerprint(FILES[0])] } else { vec![] },
                            removed: if arg & 2 == 0 { vec![fingerprint(FILES[1])] } else { vec![] },
                        },
                        _ => Body::SummaryPart {
                            version: u32::from(arg & 3) + 1,
                            part: u16::from(arg & 1),
                            parts: 1 + u16::from(arg & 2 != 0),
                            fingerprints: if arg & 4 == 0 { vec![fingerprint(FILES[0])] } else { vec![] },
                        },
                    },
                    _ => Body::Claim {
                        state: match question % 4 { 0 => ClaimState::Claiming, 1 => ClaimState::Leading, 2 => ClaimState::Serving, _ => ClaimState::Released },
                        name: FILES[usize::from(arg) % 3].as_bytes().to_vec(),
                        expected: (question & 2 != 0).then_some(Expected {
                            size: 1,
                            sha256: Sha256([arg & 1; 32]),
                        }),
                    },
                };
                let mut out = Vec::new();
                emit(&Message { host_id: host, body }, &mut out);
                core.handle_datagram_with(
                    from,
                    &out,
                    now,
                    &mut |_, _| arg & 1 == 0,
                    &mut |_, _| (arg & 2 == 0).then_some(u64::from(arg)),
                );
            }
            2 => {
                let exclude = [u64::from(arg % 6) + 1];
                // A known content is asked of every peer, compatible or not.
                let expected = (arg & 64 != 0).then_some(Expected {
                    size: 1,
                    sha256: Sha256([arg; 32]),
                });
                let file = FILES[usize::from(arg) % 3];
                let q = if bytes.next().unwrap_or(0) & 1 == 0 {
                    core.ask(file, expected, &exclude, now)
                } else {
                    core.ask_to_fetch(file, expected, &exclude, now)
                };
                assert!(open.insert(q), "question id {q:?} reused while open");
                excluded.insert(q, exclude[0]);
            }
            3 => {
                if let Some(&q) = open.iter().next() {
                    core.cancel(q);
                    open.remove(&q);
                    cancelled.insert(q);
                }
            }
            4 => now += Duration::from_millis(u64::from(arg) * 20),
            5 => core.rejoin(now),
            6 => {
                let report = JoinReport {
                    joined: if arg & 1 == 0 { vec!["eth0".into()] } else { Vec::new() },
                    errors: Vec::new(),
                };
                core.handle_join(now, &report);
            }
            7 if arg & 1 == 0 => core.goodbye(),
            7 => {
                // Static peers: some of the hosts above (on the link or not) and one IPv6.
                let all: [SocketAddr; 4] = [
                    "10.0.0.2:19432".parse().unwrap(),
                    "10.0.0.3:19432".parse().unwrap(),
                    "10.9.0.1:19432".parse().unwrap(),
                    "[fd00::1]:19432".parse().unwrap(),
                ];
                core.set_static_peers(&all[..usize::from(arg >> 1) % 5]);
            }
            8 => core.cache_added(FILES[usize::from(arg) % 3]),
            9 => core.cache_removed(FILES[usize::from(arg) % 3]),
            10 => {
                let file = FILES[usize::from(arg) % 3];
                if arg & 1 == 0 {
                    let expected = (arg & 2 != 0).then_some(Expected {
                        size: 1,
                        sha256: Sha256([arg & 1; 32]),
                    });
                    if arg & 4 == 0 {
                        core.lead(file, expected, now);
                    } else {
                        core.serving(file, expected, now);
                    }
                } else {
                    core.release(file);
                }
            }
            _ => {
                if arg & 1 == 0 {
                    core.set_cache_names(FILES.iter().take(usize::from(arg) % 4).copied(), now);
                } else {
                    now += Duration::from_secs(u64::from(arg));
                    core.handle_resume(now, Duration::from_secs(u64::from(arg)));
                }
            }
        }
        core.handle_timeout(now);
        // A join that is due stays due until the loop reports one (`poll_join`); any other
        // deadline in the past is handled by `handle_timeout` above.
        if let Some(t) = core.poll_timeout().filter(|_| !core.poll_join(now)) {
            assert!(t + Duration::from_secs(3600) > now, "a deadline far in the past");
        }
        let mut sent = 0;
        while let Some(t) = core.poll_transmit() {
            assert!(parse(&t.payload).is_ok(), "the core sent a datagram it can't parse");
            sent += 1;
            assert!(sent <= TRANSMIT_QUEUE_LIMIT + 16);
        }
        while let Some(event) = core.poll_event() {
            if let Event::Answer { question, peer } = event {
                assert!(!cancelled.contains(&question), "answer to a cancelled question");
                assert!(open.remove(&question), "answer to a question not open");
                if let Some(p) = peer {
                    assert_ne!(p.host_id, 1, "this host answered itself");
                    assert_ne!(Some(&p.host_id), excluded.get(&question), "an excluded peer");
                }
            }
        }
        assert!(core.peers().count() <= 4);
        assert!(core.peers().all(|p| p.host_id != 1));
        // A peer is reached at one of its own bound addresses, its zone kept.
        assert!(core.peers().all(|p| p.is_from(p.udp) && p.addr.ip() == p.udp.ip()));
        assert!(core.peers().all(|p| match (p.addr, p.udp) {
            (SocketAddr::V6(a), SocketAddr::V6(u)) => a.scope_id() == u.scope_id(),
            (a, u) => a.is_ipv4() == u.is_ipv4(),
        }));
    }
    // Every open question ends by its deadline: one per wave, and a question has at most
    // as many waves as there are peers; then a claim's window and its wait for a leader to
    // serve (at most 3 s).
    for _ in 0..20 {
        now += Duration::from_millis(300);
        core.handle_timeout(now);
        while let Some(event) = core.poll_event() {
            if let Event::Answer { question, .. } = event {
                open.remove(&question);
            }
        }
    }
    assert!(open.is_empty(), "questions left open past their deadline: {open:?}");
});
