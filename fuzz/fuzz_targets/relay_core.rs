//! The relay's pure core as one request's life: a `SourcePlan` fed LAN answers, failures,
//! response heads (arbitrary bytes through `parse_response` and `fetch::judge`), body bytes
//! and clock steps, with the back-off of `Policy` and the exchange `Timer`, driven with a fake
//! clock, with a file whose size the sync database may know (a wrong size is a lie: the peer
//! is banned). Checked after every step: never two sources at once; never a step after the final
//! one (a reply, a redirect, giving up), and after its own reply or giving up the plan has
//! nothing else to offer;
//! no redirect once pacman has a head; no peer tried twice or more than three; every
//! upstream at most once; backed-off, banned and tried peers are left out of the LAN's question;
//! every deadline set is in the future; an accepted answer's numbers agree with each other.
#![no_main]
use std::collections::HashSet;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use flocon::cache::FileKind;
use flocon::config::HttpsMode;
use flocon::discovery::PeerRef;
use flocon::http::request::Limits;
use flocon::http::response::{self, Framing};
use flocon::relay::fetch::{self, Asked, Failure, Judgement, Span, Timer};
use flocon::relay::plan::{MAX_PEER_TRIES, SourcePlan, Step, Upstream};
use flocon::relay::policy::{Origin, Policy};
use flocon::relay::pool::{MAX_IDLE, Pool};
use libfuzzer_sys::fuzz_target;

const TEMPLATES: [&str; 4] = [
    "http://a.example/core",
    "https://s.example/core",
    "http://b.example:8080/core",
    "ftp://bad/core",
];

/// The source a request is on, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    Peer(u64),
    Upstream(usize),
}

struct Request {
    plan: SourcePlan,
    /// The upstream URLs a lazy plan has not asked for yet.
    unlisted: Option<Vec<Upstream>>,
    asking: bool,
    on: Option<On>,
    timer: Option<Timer>,
    head_sent: bool,
    span: Option<Span>,
    received: u64,
    /// The whole file's length as the accepted answer gave it.
    complete: Option<u64>,
    over: bool,
    /// The plan itself ended the request (a reply or giving up).
    plan_final: bool,
    peers: HashSet<u64>,
    upstreams: HashSet<usize>,
    /// `Https = redirect`: https mirrors are a 302 for pacman; else flocon fetches them.
    redirect_https: bool,
}

fn peer(id: u64) -> PeerRef {
    PeerRef {
        host_id: id,
        addr: ([10, 0, 0, id as u8], 7000).into(),
    }
}

fn failure(op: u8, arg: u8) -> Failure {
    let code = 300 + u16::from(arg) * 2;
    match op % 13 {
        0 => Failure::Unreachable(ErrorKind::ConnectionRefused),
        1 => Failure::Connect(ErrorKind::ConnectionReset),
        2 => Failure::ConnectTimedOut,
        3 => Failure::Stalled,
        4 => Failure::RequestLost,
        5 => Failure::ClosedBeforeAnswer,
        6 => Failure::Chunked,
        7 => Failure::Continuation(code),
        8 => Failure::NotFound(if arg & 1 == 0 { 404 } else { 410 }),
        9 => Failure::Status(code),
        10 => Failure::LostAfter(u64::from(arg)),
        11 => Failure::EndedEarly,
        _ => Failure::Stalled,
    }
}

impl Request {
    /// Performs a step of the plan, checking it.
    fn take(&mut self, step: Step, backed_off: &[u64], now: Instant) {
        assert!(!self.over, "a step after the final one: {step:?}");
        assert!(self.on.is_none(), "two sources at once: {step:?}");
        assert!(!self.asking, "a step while the LAN is asked: {step:?}");
        match step {
            Step::AskPeers { exclude } => {
                for id in backed_off.iter().chain(self.peers.iter()) {
                    assert!(exclude.contains(id), "{id} not left out of {exclude:?}");
                }
                self.asking = true;
            }
            Step::ListUpstreams => {
                let list = self.unlisted.take().expect("upstreams asked for twice");
                self.plan.set_upstreams(list);
                let step = self.plan.next(backed_off, self.head_sent);
                self.take(step, backed_off, now);
            }
            Step::Peer(p) => {
                assert!(self.peers.insert(p.host_id), "peer {} twice", p.host_id);
                assert!(self.peers.len() as u32 <= MAX_PEER_TRIES);
                self.start(On::Peer(p.host_id), now);
            }
            Step::Upstream { index, url } => {
                assert!(!url.https || !self.redirect_https, "fetched {url:?} in redirect mode");
                assert!(self.upstreams.insert(index), "upstream {index} twice");
                self.start(On::Upstream(index), now);
            }
            Step::Redirect(url) => {
                assert!(url.https && self.redirect_https, "redirected to {url:?}");
                assert!(!self.head_sent, "a redirect after a head");
                self.finish();
            }
            Step::Reply(_) => {
                assert!(!self.head_sent, "a reply after a head");
                self.plan_final = true;
                self.finish();
            }
            Step::Abandon => {
                self.plan_final = true;
                self.finish();
            }
        }
    }

    fn start(&mut self, on: On, now: Instant) {
        self.on = Some(on);
        let timer = Timer::start(now, matches!(on, On::Peer(_)), true);
        assert!(timer.deadline() > now);
        self.timer = Some(timer);
    }

    fn finish(&mut self) {
        self.over = true;
        self.on = None;
        self.timer = None;
    }

    fn fail(&mut self, f: Failure, policy: &mut Policy, now: Instant) {
        let Some(on) = self.on.take() else {
            return;
        };
        self.timer = None;
        let from_peer = matches!(on, On::Peer(_));
        if let (On::Peer(id), true) = (on, f.is_lie()) {
            policy.ban(&peer(id), now, &f.to_string());
            assert!(policy.is_banned(id, peer(id).addr.ip(), now));
        } else if let (On::Peer(id), true) = (on, f.penalizes(from_peer)) {
            policy.penalize(&peer(id), now, &f.to_string());
            assert!(policy.is_backed_off(id, now));
        }
        let continuable = !self.head_sent || self.span.is_some();
        self.plan.failed(f, from_peer, continuable);
        let backed_off = policy.excluded(now, std::iter::empty());
        let step = self.plan.next(&backed_off, self.head_sent);
        self.take(step, &backed_off, now);
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut bytes = data.iter().copied();
    let setup = bytes.next().unwrap_or(0);
    let kind = match setup % 3 {
        0 => FileKind::Package,
        1 => FileKind::Signature,
        _ => FileKind::Database,
    };
    let count = usize::from(setup >> 2) % (TEMPLATES.len() + 1);
    let templates: Vec<String> = TEMPLATES[..count].iter().map(|t| t.to_string()).collect();
    let first = usize::from(setup >> 5);
    let mut policy = Policy::default();
    let mut pool: Pool<u8> = Pool::default();
    let stopping = setup & 0x10 != 0;
    let upstreams = SourcePlan::upstreams_for(&templates, first, "f-1-1-any.pkg.tar.zst");
    let (mut plan, unlisted) = if setup & 0x02 == 0 {
        (SourcePlan::lazy(kind, stopping), Some(upstreams))
    } else {
        (SourcePlan::new(kind, upstreams, stopping), None)
    };
    let redirect_https = setup & 0x08 != 0;
    plan.set_https(if redirect_https {
        HttpsMode::Redirect
    } else {
        HttpsMode::Fetch
    });
    let mut r = Request {
        plan,
        unlisted,
        asking: false,
        on: None,
        timer: None,
        head_sent: false,
        span: None,
        complete: None,
        received: 0,
        over: false,
        plan_final: false,
        peers: HashSet::new(),
        upstreams: HashSet::new(),
        redirect_https,
    };
    let origin = match bytes.next().unwrap_or(0) % 4 {
        0 => None,
        1 => Some(Origin::Upstream),
        n => Some(Origin::Peer(u64::from(n))),
    };
    let reachable = match origin {
        Some(Origin::Peer(id)) if bytes.next().unwrap_or(0) & 1 == 0 => Some(peer(id)),
        _ => None,
    };
    // A checked body (the sync database knows the file): its size is 100.
    let file_size = (setup & 0x01 != 0 && kind == FileKind::Package).then_some(100u64);
    let backed_off = policy.excluded(now, std::iter::empty());
    let step = r.plan.start(origin, reachable, &backed_off);
    r.take(step, &backed_off, now);

    while let Some(op) = bytes.next() {
        if r.over {
            if r.plan_final {
                // After its own reply or giving up, the plan has nothing else.
                let step = r.plan.next(&policy.excluded(now, std::iter::empty()), r.head_sent);
                assert!(
                    matches!(step, Step::Reply(_) | Step::Abandon),
                    "a source after the final step: {step:?}"
                );
            }
            break;
        }
        let arg = bytes.next().unwrap_or(0);
        match op % 8 {
            // The LAN answers.
            0 if r.asking => {
                r.asking = false;
                let answer = (arg % 8 != 0).then(|| peer(u64::from(arg % 8)));
                let backed_off = policy.excluded(now, std::iter::empty());
                // The discovery core never names a peer left out.
                let answer = answer.filter(|p| !r.peers.contains(&p.host_id))
                    .filter(|p| !backed_off.contains(&p.host_id));
                let step = r.plan.answered(answer, &backed_off, r.head_sent);
                r.take(step, &backed_off, now);
            }
            // The source fails.
            1 => r.fail(failure(arg, bytes.next().unwrap_or(0)), &mut policy, now),
            // A response head from the source.
            2 if r.on.is_some() => {
                let len = usize::from(bytes.next().unwrap_or(0));
                let raw: Vec<u8> = bytes.by_ref().take(len).collect();
                let head_only = arg & 1 != 0;
                let head = match response::parse_response(&raw, &Limits::default(), head_only) {
                    Ok(Some(head)) => head,
                    Ok(None) => continue,
                    Err(e) => {
                        r.fail(Failure::BadResponse(e), &mut policy, now);
                        continue;
                    }
                };
                let ranges = [None, Some("bytes=10-"), Some("bytes=0-0"), Some("bytes=-5")];
                let asked = Asked {
                    range: ranges[usize::from(arg >> 1) % 4],
                    head_only,
                    continuation: r.head_sent,
                    rest: r.span.map(|s| Span {
                        start: s.start + r.received,
                        end: s.end,
                    }),
                    from_peer: matches!(r.on, Some(On::Peer(_))),
                    file_size,
                    complete: r.complete,
                };
                let _ = fetch::reusable_after(&head, raw.len().saturating_sub(head.len));
                match fetch::judge(&head, &asked) {
                    Judgement::Accept(a) => {
                        assert!(!r.head_sent, "accepted twice");
                        // Never a whole file of another size than the database's.
                        if let (Some(want), 200, Some(n)) = (file_size, head.code, a.length) {
                            assert!(head_only || n == want, "{n} bytes accepted, not {want}");
                        }
                        if let Some(span) = a.span {
                            assert!(span.start <= span.end);
                            assert!(!head_only);
                        }
                        if let Framing::Length(n) = a.framing {
                            assert_eq!(a.remaining, Some(a.skip + n));
                        }
                        if a.keep_alive {
                            assert_eq!(a.remaining, a.length);
                        }
                        let mut out = Vec::new();
                        fetch::write_pacman_head(&mut out, &a, &head, head_only, arg & 4 != 0);
                        let parsed = response::parse_response(&out, &Limits::default(), head_only);
                        assert!(matches!(parsed, Ok(Some(_))), "pacman's head does not parse");
                        r.head_sent = true;
                        r.span = a.span;
                        r.complete = match a.content_range {
                            Some(cr) => cr.complete_len,
                            None if a.code == 200 => a.length,
                            None => None,
                        };
                        r.received = 0;
                        if let Some(t) = r.timer.as_mut() {
                            t.bytes(now);
                            assert!(t.deadline() > now);
                        }
                    }
                    Judgement::Continue { .. } => {
                        assert!(r.head_sent && r.span.is_some());
                    }
                    Judgement::Redirect(_) => {
                        assert!(!asked.from_peer && !r.head_sent);
                        r.finish();
                    }
                    Judgement::Unsatisfiable(_) => {
                        assert!(!r.head_sent);
                        r.finish();
                    }
                    Judgement::Fail(f) => r.fail(f, &mut policy, now),
                }
            }
            // Body bytes.
            3 if r.head_sent && r.on.is_some() => {
                let left = r.span.map_or(u64::MAX, |s| s.end - s.start - r.received);
                r.received += u64::from(arg).min(left);
                if let Some(t) = r.timer.as_mut() {
                    t.bytes(now);
                    assert!(t.deadline() > now);
                }
            }
            // The body ends: the response is complete.
            4 if r.head_sent && r.on.is_some() => {
                let complete = r.span.is_none_or(|s| r.received == s.end - s.start);
                if complete {
                    r.finish();
                } else {
                    r.fail(Failure::EndedEarly, &mut policy, now);
                }
            }
            // The clock moves; a silent source fails.
            5 => {
                now += Duration::from_millis(u64::from(arg) * 40);
                if let Some(f) = r.timer.as_ref().and_then(|t| t.due(now)) {
                    r.fail(f, &mut policy, now);
                }
                pool.handle_timeout(now);
                if let Some(t) = pool.poll_timeout() {
                    assert!(t > now, "an idle connection past its time");
                }
                for id in policy.excluded(now, std::iter::empty()) {
                    let ip = peer(id).addr.ip();
                    assert!(policy.is_backed_off(id, now) || policy.is_banned(id, ip, now));
                }
            }
            // pacman takes bytes from a full pipe.
            6 => {
                if let Some(t) = r.timer.as_mut() {
                    t.pipe_drained(now);
                    assert!(t.deadline() > now);
                }
            }
            // A kept-alive connection is parked or taken.
            7 => {
                let addr = ([10, 0, 0, arg % 4], 80).into();
                if arg & 0x80 == 0 {
                    pool.park(addr, arg, now);
                } else {
                    let _ = pool.take(addr, now, |s| s & 1 == 0);
                }
                assert!(pool.idle() <= MAX_IDLE);
            }
            _ => {}
        }
    }
});
