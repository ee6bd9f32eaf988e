//! The pacman-facing relay: one loopback connection from pacman, and for each
//! of its requests, the source the answer streams from.
//!
//! Owns what happens to a request for `/$repo/os/$arch/<file>`: packages and
//! signatures are asked of the LAN peers first (a discovery question), then of
//! the upstream mirrors; databases only come from one upstream that stays the
//! same while it works. It streams the answer through one bounded buffer with
//! back-pressure, fails over before and in the middle of a body (a `Range`
//! request to the next source), redirects pacman to `https://` mirrors, and
//! answers the status page and `flocon query`. It does not poll, register
//! sockets, own timers or speak multicast: the event loop runs it, and the
//! discovery core answers its questions.
//!
//! LIFECYCLE of a connection: `Head` (reading a request) -> `Lookup` (a
//! question is open) and/or `Fetch` (a source socket: connecting, request,
//! response head, body) -> `Reply` (a locally made answer) -> back to `Head`
//! (keep-alive) or `Linger` -> closed. A source that fails moves the request
//! on to the next source, not the connection on to another state.
//!
//! KEPT-ALIVE SOURCES: a source connection whose response allows another
//! request stays with its pacman connection (still in the poll set) for that
//! connection's next request to the same address; pacman asks one mirror line
//! for file after file, so that is the common case and it costs no
//! `epoll_ctl`. Otherwise, and when pacman's connection closes, it goes to
//! the shared idle pool (out of the poll set) for any connection to take.

mod fetch;
mod pipe;
mod plan;
mod policy;
mod pool;
mod source;

use fetch::{Asked, Failure, Judgement, Span};
use pipe::Pipe;
use plan::{SourcePlan, Step};
use source::{Kept, RequestFields, Source, SourceKind, SourcePhase, SourceStep};

pub use fetch::STALL_TIMEOUT;
pub use policy::{Counters, Origin, PEER_BACKOFF, Policy};
pub use pool::{BUFFER, LARGE_BUFFER, LARGE_BUFFERS, Pool};

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::net::TcpStream;

use crate::cache::{self, FileKind};
use crate::config::{Upstreams, expand};
use crate::discovery::{Discovery, PeerRef, QuestionId};
use crate::dns::{Lookup, LookupId, Resolver};
use crate::http::percent_decode;
use crate::http::request::{Limits, Method, RequestHead};
use crate::http::response::{self, ResponseHead, Status};
use crate::http::url::Url;
use crate::inbound::{Drain, HeadStep};
use crate::net::{self, Io, Want};
use crate::server::{Flush, HeadExpiry, ServerConn};

/// pacman not reading what we have for it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const TURN_BUDGET: usize = 4 << 20;

/// Relay state shared by every pacman connection: the upstream mirrors, what
/// is remembered across requests, and what transfers reuse.
pub struct Relay {
    pub upstreams: Upstreams,
    pub policy: Policy,
    pub pool: Pool<TcpStream>,
}

impl Relay {
    pub fn new(upstreams: Upstreams) -> Relay {
        Relay {
            upstreams,
            policy: Policy::default(),
            pool: Pool::default(),
        }
    }
}

/// Something a connection waits on, answered through the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A discovery question: who has the file.
    Question(QuestionId),
    /// An upstream host name being resolved.
    Lookup(LookupId),
}

/// What a run of a pacman connection needs from the daemon.
pub struct Context<'a> {
    pub now: Instant,
    pub relay: &'a mut Relay,
    pub discovery: &'a mut Discovery,
    pub resolver: &'a mut Resolver,
    /// Questions and name lookups this run opened, for the loop to route
    /// their answers here.
    pub asked: &'a mut Vec<Wait>,
    pub stopping: bool,
    /// Kept source connections this run let go of (its next request went
    /// elsewhere), still registered under the source token `id`: the loop
    /// deregisters them and parks them in the pool.
    pub retired: &'a mut Vec<Retired>,
    /// The loop's one read buffer, lent for this run.
    pub scratch: &'a mut [u8],
}

/// A kept-alive source connection a pacman connection let go of: its source
/// token id (registered under it if the loop registered that id), address
/// and socket.
pub type Retired = (u32, SocketAddr, TcpStream);

/// What a connection is run for.
#[derive(Debug)]
pub enum Input {
    /// Readiness, a deadline, or another turn.
    Ready,
    /// The answer to its discovery question.
    Answer(Option<PeerRef>),
    /// The address of the upstream host it resolves (`None`: no address).
    Address(Option<IpAddr>),
    /// The status page it waits for ([`PacmanConn::wants_status`]).
    Status(String),
}

/// What a closing connection leaves to the loop: the question or lookup to
/// cancel, its outbound socket (registered or not), and the kept-alive
/// connection for the pool.
pub struct Leftovers {
    pub wait: Option<Wait>,
    pub source: Option<(u32, TcpStream)>,
    pub kept: Option<Retired>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Head,
    Lookup {
        question: QuestionId,
        since: Instant,
    },
    /// Resolving the host of upstream `index`, to fetch `url` from it.
    Resolving {
        lookup: LookupId,
        since: Instant,
        index: usize,
        url: Url,
    },
    Fetch,
    Reply,
    /// Waiting for the loop to hand in the status page.
    Status,
    /// Closed: what it held went back to the loop.
    Closed,
    Linger {
        until: Instant,
    },
}

impl State {
    /// For the `old -> new` log line.
    fn name(&self) -> &'static str {
        match self {
            State::Head => "head",
            State::Lookup { .. } => "lookup",
            State::Resolving { .. } => "resolving",
            State::Fetch => "fetch",
            State::Reply => "reply",
            State::Status => "status",
            State::Closed => "closed",
            State::Linger { .. } => "linger",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Relay,
    Query,
}

/// One request from pacman being answered.
#[derive(Debug)]
struct Job {
    purpose: Purpose,
    file: String,
    repo: String,
    kind: FileKind,
    head_only: bool,
    range: Option<String>,
    if_modified_since: Option<String>,
    keep_alive: bool,
    /// The sources tried and left.
    plan: SourcePlan,
    /// The response head went to pacman: from now on only continuations.
    head_sent: bool,
    /// What the body delivers; `None` until a head was accepted or when the
    /// body is delimited by the source closing.
    span: Option<Span>,
    /// Body bytes taken from sources so far.
    received: u64,
    origin: Option<Origin>,
    started: Instant,
}

pub struct PacmanConn {
    server: ServerConn,
    state: State,
    pipe: Pipe,
    job: Option<Job>,
    source: Option<Source>,
    kept: Option<Kept>,
    next_source_id: u32,
    limits: Limits,
}

impl PacmanConn {
    pub fn new(stream: TcpStream, remote: SocketAddr, now: Instant) -> PacmanConn {
        PacmanConn {
            server: ServerConn::new(stream, remote, now),
            state: State::Head,
            pipe: Pipe::new(),
            job: None,
            source: None,
            kept: None,
            next_source_id: 0,
            limits: Limits::default(),
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.server.stream
    }

    /// The loop saw pacman's socket become readable.
    pub fn readable(&mut self) {
        self.server.reader.readable();
    }

    /// The outbound socket the loop registers (by its id: a new id is a new
    /// socket).
    pub fn source_mut(&mut self) -> Option<(u32, &mut TcpStream)> {
        self.source.as_mut().map(|s| (s.id, &mut s.stream))
    }

    /// The loop saw the source token readable (or closed, `read_closed`):
    /// the transfer's source, or the kept connection when no transfer runs.
    pub fn source_event(&mut self, read_closed: bool) {
        match (self.source.as_mut(), self.kept.as_mut()) {
            (Some(source), _) => source.event(read_closed),
            (None, Some(kept)) => kept.event = true,
            (None, None) => {}
        }
    }

    /// Closes the connection: what it leaves for the loop to cancel,
    /// deregister and pool. Its own socket closes when it is dropped.
    pub fn close(&mut self) -> Leftovers {
        let wait = match self.state {
            State::Lookup { question, .. } => Some(Wait::Question(question)),
            State::Resolving { lookup, .. } => Some(Wait::Lookup(lookup)),
            _ => None,
        };
        self.set_state(State::Closed);
        Leftovers {
            wait,
            source: self.source.take().map(|s| (s.id, s.stream)),
            kept: self
                .kept
                .take()
                .filter(|k| !k.event)
                .map(|k| (k.id, k.addr, k.stream)),
        }
    }

    /// Whether the loop must hand in the status page ([`Input::Status`]).
    pub fn wants_status(&self) -> bool {
        self.state == State::Status
    }

    /// One line for the status page when a transfer is in flight.
    pub fn describe(&self) -> Option<String> {
        let job = self.job.as_ref().filter(|j| j.purpose == Purpose::Relay)?;
        let source = self
            .source
            .as_ref()
            .map_or_else(|| "looking up peers".to_owned(), Source::describe);
        let total = job
            .span
            .map_or_else(|| "?".to_owned(), |s| (s.end - s.start).to_string());
        Some(format!(
            "{} from {source}: {}/{total} bytes",
            job.file, job.received
        ))
    }

    fn resolved(&mut self, address: Option<IpAddr>, cx: &mut Context) {
        let (index, url) = match &self.state {
            State::Resolving { index, url, .. } => (*index, url.clone()),
            _ => return,
        };
        self.set_state(State::Fetch);
        match address {
            Some(ip) => {
                let addr = SocketAddr::new(ip, url.port);
                self.connect(SourceKind::Upstream { index, url }, addr, cx);
            }
            None => {
                cx.relay.policy.warn_unresolved(&url.host, cx.now);
                self.next_source(cx);
            }
        }
    }

    fn answered(&mut self, peer: Option<PeerRef>, cx: &mut Context) {
        let State::Lookup { since, .. } = self.state else {
            return;
        };
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let waited = cx.now.duration_since(since);
        if job.purpose == Purpose::Query {
            let (status, text) = match peer {
                Some(p) => (
                    Status::Ok,
                    format!(
                        "{}: peer {:016x} at {} has it ({} ms)\n",
                        job.file,
                        p.host_id,
                        p.addr,
                        waited.as_millis()
                    ),
                ),
                None => (
                    Status::NotFound,
                    format!("{}: no peer has it ({} ms)\n", job.file, waited.as_millis()),
                ),
            };
            let keep_alive = job.keep_alive;
            self.reply_text(status, &text, keep_alive, true);
            return;
        }
        debug!(
            "{}: lookup answered in {} ms: {}",
            job.file,
            waited.as_millis(),
            peer.map_or_else(|| "nobody".to_owned(), |p| p.addr.to_string())
        );
        let backed_off = cx.relay.policy.backed_off(cx.now);
        let step = job.plan.answered(peer, &backed_off);
        self.set_state(State::Fetch);
        self.take_step(step, cx);
    }

    /// Runs the connection as far as it can go now, after `input`.
    pub fn run(&mut self, cx: &mut Context, input: Input) -> Want {
        match input {
            Input::Ready => {}
            Input::Answer(peer) => self.answered(peer, cx),
            Input::Address(address) => self.resolved(address, cx),
            Input::Status(text) if self.state == State::Status => {
                let keep_alive = self.job.as_ref().is_some_and(|j| j.keep_alive);
                let head_only = self.job.as_ref().is_some_and(|j| j.head_only);
                self.reply_text(Status::Ok, &text, keep_alive, !head_only);
            }
            Input::Status(_) => {}
        }
        if let Some(deadline) = self.deadline() {
            if cx.now >= deadline {
                if let Some(want) = self.on_deadline(cx) {
                    return want;
                }
            }
        }
        let mut budget = TURN_BUDGET;
        loop {
            if budget == 0 {
                return self.want(true);
            }
            match self.state {
                State::Head => {
                    let step = self
                        .server
                        .read_head(cx.scratch, cx.now, &mut budget, cx.stopping);
                    match step {
                        HeadStep::Head(head) => self.start(&head, cx),
                        HeadStep::Refused(e) => {
                            debug!("pacman {}: {e}", self.server.remote);
                            self.reply_error(e.status(), false, true);
                        }
                        HeadStep::Blocked => return self.want(false),
                        HeadStep::Yield => return self.want(true),
                        HeadStep::Closed => return Want::Close,
                    }
                }
                State::Lookup { .. } | State::Resolving { .. } => return self.want(false),
                // The loop hands the page in on the next turn.
                State::Status => return self.want(true),
                State::Closed => return Want::Close,
                State::Reply => match self.flush_out(&mut budget, cx.now) {
                    Some(want) => return want,
                    None => self.response_done(cx),
                },
                State::Fetch => match self.pump(&mut budget, cx) {
                    Some(want) => return want,
                    None => self.response_done(cx),
                },
                State::Linger { .. } => match self.server.drain(cx.scratch, &mut budget) {
                    Drain::More => {}
                    Drain::Blocked => return self.want(false),
                    Drain::Closed => return Want::Close,
                },
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Head => Some(self.server.head_deadline()),
            // The question has its own deadline; this is only a safety net.
            State::Lookup { since, .. } => Some(since + Duration::from_secs(5)),
            // The resolver gives up within 6 s; this is only a safety net.
            State::Resolving { since, .. } => Some(since + Duration::from_secs(10)),
            State::Status | State::Closed => None,
            State::Reply => Some(self.server.last_progress + CLIENT_TIMEOUT),
            State::Fetch => {
                let client = self.server.last_progress + CLIENT_TIMEOUT;
                match &self.source {
                    // A full pipe means pacman is slow, not the source.
                    Some(s) if !self.source_waits_on_pipe() => Some(s.timer.deadline().min(client)),
                    _ => Some(client),
                }
            }
            State::Linger { until } => Some(until),
        }
    }

    /// A deadline passed. `Some` to stop here, `None` to go on running.
    fn on_deadline(&mut self, cx: &mut Context) -> Option<Want> {
        match self.state {
            State::Head => match self.server.head_expired() {
                HeadExpiry::RequestTimeout => {
                    debug!("pacman {}: request head timed out", self.server.remote);
                    self.source = None;
                    self.pipe.clear();
                    self.set_state(State::Reply);
                    None
                }
                HeadExpiry::Close => Some(Want::Close),
            },
            State::Linger { .. } => Some(Want::Close),
            State::Resolving { lookup, .. } => {
                cx.resolver.cancel(lookup);
                self.set_state(State::Fetch);
                self.next_source(cx);
                None
            }
            State::Lookup { question, .. } => {
                cx.discovery.cancel(question);
                self.set_state(State::Fetch);
                if let Some(job) = self.job.as_mut() {
                    let backed_off = cx.relay.policy.backed_off(cx.now);
                    let step = job.plan.answered(None, &backed_off);
                    self.take_step(step, cx);
                }
                None
            }
            State::Status => None,
            State::Reply | State::Closed => Some(Want::Close),
            State::Fetch => {
                let due = match &self.source {
                    Some(s) if !self.source_waits_on_pipe() => s.timer.due(cx.now),
                    _ => None,
                };
                if let Some(failure) = due {
                    self.source_failed(failure, cx);
                    None
                } else if cx.now >= self.server.last_progress + CLIENT_TIMEOUT {
                    debug!("pacman {}: not reading, closing", self.server.remote);
                    Some(Want::Close)
                } else {
                    None
                }
            }
        }
    }

    fn want(&self, again: bool) -> Want {
        Want::Io {
            deadline: self.deadline(),
            again,
            source: self.source.as_ref().map(|s| s.id),
        }
    }

    // ---- requests ----------------------------------------------------------

    /// Starts answering one complete request head.
    fn start(&mut self, head: &RequestHead, cx: &mut Context) {
        let keep_alive = self.server.keep_alive(head, cx.stopping);
        let with_body = head.method != Method::Head;
        if head.has_body {
            return self.reply_error(Status::BadRequest, false, with_body);
        }
        if head.method == Method::Other {
            return self.reply_error(Status::MethodNotAllowed, keep_alive, with_body);
        }
        let path = head
            .target
            .split_once('?')
            .map_or(head.target.as_str(), |(p, _)| p);
        let new_job = |purpose, file: String, repo: &str, kind| Job {
            purpose,
            file,
            repo: repo.to_owned(),
            kind,
            head_only: !with_body,
            range: head.range.clone(),
            if_modified_since: head.if_modified_since.clone(),
            keep_alive,
            plan: SourcePlan::new(kind, Vec::new(), true),
            head_sent: false,
            span: None,
            received: 0,
            origin: None,
            started: cx.now,
        };
        if path == "/" || path == "/status" {
            self.job = Some(new_job(
                Purpose::Query,
                String::new(),
                "",
                FileKind::Package,
            ));
            self.set_state(State::Status);
            return;
        }
        if let Some(raw) = path.strip_prefix("/query/") {
            let Some(file) = percent_decode(raw) else {
                return self.reply_error(Status::BadRequest, keep_alive, with_body);
            };
            if cache::check_servable(&file).is_err() {
                return self.reply_error(Status::BadRequest, keep_alive, with_body);
            }
            let question = cx.discovery.ask(&file, &[], cx.now);
            cx.asked.push(Wait::Question(question));
            self.job = Some(new_job(Purpose::Query, file, "", FileKind::Package));
            self.set_state(State::Lookup {
                question,
                since: cx.now,
            });
            return;
        }
        let Some((repo, arch, file)) = split_repo_path(path) else {
            debug!(
                "pacman {}: {} is not /$repo/os/$arch/<file>",
                self.server.remote, head.target
            );
            return self.reply_error(Status::NotFound, keep_alive, with_body);
        };
        let kind = match cache::classify(&file) {
            Ok(kind) => kind,
            Err(e) => {
                debug!("pacman {}: {file:?} refused: {e}", self.server.remote);
                let status = if e.is_malformed() {
                    Status::BadRequest
                } else {
                    Status::NotFound
                };
                return self.reply_error(status, keep_alive, with_body);
            }
        };
        cx.relay.policy.counters.requests += 1;
        debug!("pacman {} GET {repo}/{arch}/{file}", self.server.remote);
        let mut job = new_job(Purpose::Relay, file, repo, kind);
        let templates: Vec<String> = cx
            .relay
            .upstreams
            .templates_for(repo)
            .iter()
            .map(|t| expand(t, repo, arch))
            .collect();
        let first = match kind {
            FileKind::Database => cx.relay.policy.db_mirror(repo),
            _ => 0,
        };
        let upstreams =
            SourcePlan::upstreams_for(&templates, first, &encode_path_segment(&job.file));
        job.plan = SourcePlan::new(kind, upstreams, cx.stopping);
        // The peer a package came from is asked again first: for its
        // signature (only it, then upstream, so the two agree) and for the
        // package itself (then the others, if it no longer has it).
        let package = job.file.trim_end_matches(".sig");
        let origin = if job.plan.wants_origin() {
            cx.relay.policy.origin_of(package)
        } else {
            None
        };
        let reachable = match origin {
            Some(Origin::Peer(id)) if !cx.relay.policy.is_backed_off(id, cx.now) => {
                cx.discovery.peer(id).map(crate::discovery::Peer::peer_ref)
            }
            _ => None,
        };
        let backed_off = cx.relay.policy.backed_off(cx.now);
        let step = job.plan.start(origin, reachable, &backed_off);
        self.job = Some(job);
        self.set_state(State::Fetch);
        self.take_step(step, cx);
    }

    /// Moves the current job on to the next source.
    fn next_source(&mut self, cx: &mut Context) {
        self.source = None;
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let backed_off = cx.relay.policy.backed_off(cx.now);
        let step = job.plan.next(&backed_off, job.head_sent);
        self.take_step(step, cx);
    }

    /// Performs a step of the job's [`SourcePlan`]: ask the LAN, connect to a
    /// peer, resolve and connect to an upstream, or answer pacman locally.
    fn take_step(&mut self, mut step: Step, cx: &mut Context) {
        loop {
            let Some(job) = self.job.as_mut() else {
                return;
            };
            let (keep_alive, with_body) = (job.keep_alive, !job.head_only);
            match step {
                Step::AskPeers { exclude } => {
                    let question = cx.discovery.ask(&job.file, &exclude, cx.now);
                    cx.asked.push(Wait::Question(question));
                    self.set_state(State::Lookup {
                        question,
                        since: cx.now,
                    });
                    return;
                }
                Step::Peer(peer) => {
                    return self.connect(SourceKind::Peer(peer), peer.addr, cx);
                }
                Step::Upstream { index, url } => match cx.resolver.lookup(&url.host, cx.now) {
                    Lookup::Ready(Some(ip)) => {
                        let addr = SocketAddr::new(ip, url.port);
                        return self.connect(SourceKind::Upstream { index, url }, addr, cx);
                    }
                    Lookup::Ready(None) => {
                        cx.relay.policy.warn_unresolved(&url.host, cx.now);
                        let backed_off = cx.relay.policy.backed_off(cx.now);
                        step = job.plan.next(&backed_off, job.head_sent);
                    }
                    Lookup::Pending(lookup) => {
                        cx.asked.push(Wait::Lookup(lookup));
                        self.set_state(State::Resolving {
                            lookup,
                            since: cx.now,
                            index,
                            url,
                        });
                        return;
                    }
                },
                Step::Redirect(url) => {
                    cx.relay.policy.counters.redirects += 1;
                    debug!("{}: redirecting pacman to {}", job.file, url.to_text());
                    return self.reply_redirect(&url.to_text(), keep_alive, with_body);
                }
                Step::Reply(status) => {
                    if status == Status::NotFound {
                        cx.relay.policy.counters.not_found += 1;
                        debug!("{}: not found on peers or upstream", job.file);
                    } else {
                        info!("{}: every upstream failed", job.file);
                    }
                    return self.reply_error(status, keep_alive, with_body);
                }
                Step::Abandon => {
                    info!(
                        "{}: no source left to continue from: closing so pacman moves on",
                        job.file
                    );
                    let until = self.server.abort(cx.now);
                    self.set_state(State::Linger { until });
                    return;
                }
            }
        }
    }

    /// Opens the source socket and queues its request.
    fn connect(&mut self, kind: SourceKind, addr: SocketAddr, cx: &mut Context) {
        self.connect_with(kind, addr, true, cx);
    }

    /// Opens (or, with `reuse`, takes a kept-alive) source connection and
    /// queues its request.
    fn connect_with(&mut self, kind: SourceKind, addr: SocketAddr, reuse: bool, cx: &mut Context) {
        let Some(job) = self.job.as_ref() else {
            return;
        };
        // The connection this one kept from its last transfer, if it goes to
        // the same address (it keeps its id: it is registered already);
        // otherwise it goes back to the pool.
        let mut kept = None;
        if let Some(k) = self.kept.take() {
            if reuse && k.addr == addr && (!k.event || net::is_idle_open(&k.stream)) {
                kept = Some((k.id, k.stream));
            } else if !k.event {
                cx.retired.push((k.id, k.addr, k.stream));
            }
        }
        let (id, idle) = match kept {
            Some((id, stream)) => (Some(id), Some(stream)),
            None if reuse => (None, cx.relay.pool.take(addr, cx.now, net::is_idle_open)),
            None => (None, None),
        };
        let reused = idle.is_some();
        let stream = match idle.map_or_else(|| TcpStream::connect(addr), Ok) {
            Ok(s) => s,
            Err(e) => {
                debug!("connect to {addr}: {e}");
                return self.fail_kind(kind, Failure::Unreachable(e.kind()), cx);
            }
        };
        if !reused {
            let _ = stream.set_nodelay(true);
        }
        let continuation = job.span.filter(|_| job.head_sent).map(|span| {
            // A continuation: exactly the bytes pacman has not had yet.
            format!("bytes={}-{}", span.start + job.received, span.end - 1)
        });
        let fields = if job.head_sent {
            RequestFields {
                head_only: job.head_only,
                range: continuation.as_deref(),
                if_modified_since: None,
            }
        } else {
            RequestFields {
                head_only: job.head_only,
                range: job.range.as_deref(),
                if_modified_since: job.if_modified_since.as_deref(),
            }
        };
        let request = Source::request(&kind, &encode_path_segment(&job.file), &fields);
        let id = id.unwrap_or_else(|| {
            self.next_source_id = self.next_source_id.wrapping_add(1);
            self.next_source_id
        });
        debug!("{}: fetching from {}", job.file, kind.describe());
        self.source = Some(Source::new(id, kind, addr, stream, reused, request, cx.now));
        self.set_state(State::Fetch);
    }

    fn fail_kind(&mut self, kind: SourceKind, failure: Failure, cx: &mut Context) {
        self.note_failure(&kind, failure, cx);
        self.next_source(cx);
    }

    fn source_failed(&mut self, failure: Failure, cx: &mut Context) {
        let Some(source) = self.source.take() else {
            return;
        };
        let unanswered = matches!(source.phase, SourcePhase::Request | SourcePhase::Head)
            && !source.answered
            && source.head_buf.is_empty();
        if source.reused && unanswered {
            debug!(
                "kept-alive connection to {} was closed: reconnecting",
                source.addr
            );
            return self.connect_with(source.kind, source.addr, false, cx);
        }
        self.note_failure(&source.kind, failure, cx);
        let from_peer = matches!(source.kind, SourceKind::Peer(_));
        let describe = source.describe();
        let received = self.job.as_ref().map_or(0, |j| j.received);
        if source.reusable {
            // An error answer read to its end: the connection carries the
            // next request (to this address, or from the pool).
            self.keep(source);
        }
        if let Some(job) = self.job.as_mut() {
            if job.head_sent {
                cx.relay.policy.counters.failovers += 1;
                info!(
                    "{}: {describe} failed after {received} bytes ({failure}): continuing from the \
                     next source",
                    job.file,
                );
            }
            // A body delimited by close can't be continued.
            let continuable = !job.head_sent || job.span.is_some();
            job.plan.failed(failure, from_peer, continuable);
        }
        self.next_source(cx);
    }

    fn note_failure(&mut self, kind: &SourceKind, failure: Failure, cx: &mut Context) {
        let why = failure;
        let penalize = failure.penalizes(matches!(kind, SourceKind::Peer(_)));
        match kind {
            SourceKind::Peer(p) if penalize => {
                cx.relay.policy.penalize(p, cx.now, &why.to_string());
            }
            SourceKind::Peer(p) => debug!("peer {} did not serve it: {why}", p.addr),
            SourceKind::Upstream { url, .. } => {
                if penalize {
                    cx.relay.policy.counters.failures += 1;
                    info!("upstream {} failed: {why}", url.to_text());
                } else {
                    debug!("upstream {}: {why}", url.to_text());
                }
            }
        }
    }

    // ---- moving bytes ------------------------------------------------------

    /// Moves bytes between the source, the pipe and pacman until everything
    /// blocks. `None` when the response is complete.
    fn pump(&mut self, budget: &mut usize, cx: &mut Context) -> Option<Want> {
        loop {
            if *budget == 0 {
                return Some(self.want(true));
            }
            if self.state != State::Fetch {
                // A failure turned into a local reply, a lookup or a close.
                return match self.state {
                    State::Reply => self.flush_out(budget, cx.now),
                    State::Linger { .. } => Some(self.want(true)),
                    _ => Some(self.want(false)),
                };
            }
            let mut progress = false;
            let mut client_blocked = false;
            // 1. To pacman: the head, then body bytes.
            if self.server.out_pos < self.server.out.len() {
                // The head, and the body bytes already here, in one call.
                match net::write2(
                    &self.server.stream,
                    &self.server.out[self.server.out_pos..],
                    self.pipe.data(),
                ) {
                    Io::Done(n) => {
                        let head = n.min(self.server.out.len() - self.server.out_pos);
                        self.server.out_pos += head;
                        self.pipe.consume(n - head);
                        progress = true;
                        self.server.last_progress = cx.now;
                        if self.server.out_pos == self.server.out.len() {
                            self.server.out.clear();
                            self.server.out_pos = 0;
                        }
                    }
                    Io::WouldBlock => client_blocked = true,
                    Io::Closed | Io::Error(_) => return Some(Want::Close),
                }
            } else if !self.pipe.is_empty() {
                match net::write(&mut self.server.stream, self.pipe.data()) {
                    Io::Done(n) => {
                        self.pipe.consume(n);
                        *budget = budget.saturating_sub(n);
                        progress = true;
                        self.server.last_progress = cx.now;
                        if let Some(source) = self.source.as_mut() {
                            // The source's silence while the pipe was full
                            // was ours: its stall clock starts now.
                            if source.phase == SourcePhase::Body {
                                source.timer.pipe_drained(cx.now);
                            }
                        }
                    }
                    Io::WouldBlock => client_blocked = true,
                    Io::Closed | Io::Error(_) => return Some(Want::Close),
                }
            }
            // 2. From the source.
            if self.source.is_some() {
                match self.source_step(budget, cx) {
                    SourceStep::Head(_) => progress = true,
                    SourceStep::Progress => progress = true,
                    SourceStep::Blocked => {}
                    SourceStep::Done => {
                        self.source_done(cx);
                        progress = true;
                    }
                    SourceStep::Failed(failure) => {
                        self.source_failed(failure, cx);
                        continue;
                    }
                }
            }
            // 3. Finished?
            if self.source.is_none()
                && self.state == State::Fetch
                && self.pipe.is_empty()
                && self.server.out_pos >= self.server.out.len()
            {
                return None;
            }
            if !progress || (client_blocked && self.source_waits_on_pipe()) {
                return Some(self.want(false));
            }
        }
    }

    fn source_waits_on_pipe(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|s| s.phase == SourcePhase::Body)
            && self.pipe.is_full()
    }

    fn source_step(&mut self, budget: &mut usize, cx: &mut Context) -> SourceStep {
        let (Some(source), Some(job)) = (self.source.as_mut(), self.job.as_mut()) else {
            return SourceStep::Blocked;
        };
        let step = source.step(
            &mut self.pipe,
            cx.scratch,
            budget,
            cx.now,
            &mut cx.relay.policy.counters,
            &mut job.received,
            job.head_only,
            &self.limits,
        );
        match step {
            SourceStep::Head(head) => self.source_head(head, cx),
            step => step,
        }
    }

    /// Acts on a source's response head, as [`fetch::judge`] sees it: accept
    /// it (queue pacman's head), pass a redirect or a 416 on, or fail over.
    fn source_head(&mut self, head: ResponseHead, cx: &mut Context) -> SourceStep {
        let (Some(job), Some(source)) = (self.job.as_mut(), self.source.as_mut()) else {
            return SourceStep::Blocked;
        };
        let from_peer = matches!(source.kind, SourceKind::Peer(_));
        let leftover = source.head_buf.split_off(head.len);
        source.head_buf = Vec::new();
        source.answered = true;
        // An answer not taken (an error, a redirect) leaves the connection
        // usable when all of it is here already.
        source.reusable = fetch::reusable_after(&head, leftover.len());
        let asked = Asked {
            range: job.range.as_deref(),
            head_only: job.head_only,
            continuation: job.head_sent,
            rest: job.span.map(|span| Span {
                start: span.start + job.received,
                end: span.end,
            }),
            from_peer,
        };
        let accepted = match fetch::judge(&head, &asked) {
            Judgement::Accept(accepted) => accepted,
            Judgement::Continue {
                remaining,
                keep_alive,
            } => {
                source.remaining = remaining;
                source.keep_alive = keep_alive;
                source.phase = SourcePhase::Body;
                self.pipe.provide(&mut cx.relay.pool);
                self.take_leftover(leftover, &mut cx.relay.policy.counters);
                return SourceStep::Progress;
            }
            Judgement::Redirect(location) => {
                cx.relay.policy.counters.redirects += 1;
                let (keep_alive, with_body) = (job.keep_alive, !job.head_only);
                if let Some(source) = self.source.take().filter(|s| s.reusable) {
                    self.keep(source);
                }
                self.reply_redirect(&location, keep_alive, with_body);
                return SourceStep::Progress;
            }
            Judgement::Unsatisfiable(len) => {
                let keep_alive = job.keep_alive;
                self.source = None;
                self.reply_unsatisfiable(len, keep_alive);
                return SourceStep::Progress;
            }
            Judgement::Fail(failure) => return SourceStep::Failed(failure),
        };
        if accepted.skip > 0 {
            debug!(
                "{}: source ignored Range, cutting {} out",
                job.file,
                job.range.as_deref().unwrap_or_default()
            );
        }
        job.span = accepted.span;
        job.head_sent = true;
        job.origin = Some(match source.kind {
            SourceKind::Peer(p) => Origin::Peer(p.host_id),
            SourceKind::Upstream { .. } => Origin::Upstream,
        });
        if let (FileKind::Database, SourceKind::Upstream { index, .. }) = (job.kind, &source.kind) {
            if matches!(head.code, 200 | 206 | 304) {
                cx.relay.policy.keep_db_mirror(&job.repo, *index);
            }
        }
        let keep_alive = job.keep_alive && accepted.length.is_some();
        let out = self.server.start_response(keep_alive);
        fetch::write_pacman_head(out, &accepted, &head, job.head_only, keep_alive);
        source.skip = accepted.skip;
        source.remaining = accepted.remaining;
        source.keep_alive = accepted.keep_alive;
        source.phase = SourcePhase::Body;
        self.pipe.provide(&mut cx.relay.pool);
        self.take_leftover(leftover, &mut cx.relay.policy.counters);
        SourceStep::Progress
    }

    fn take_leftover(&mut self, mut leftover: Vec<u8>, counters: &mut Counters) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if let Some(r) = source.remaining {
            leftover.truncate(usize::try_from(r).unwrap_or(usize::MAX));
        }
        let n = leftover.len();
        if n == 0 {
            return;
        }
        let dropped = source.take_skip(n);
        self.pipe.push(&leftover[dropped..]);
        source.count(n, counters);
        if let Some(job) = self.job.as_mut() {
            job.received += (n - dropped) as u64;
        }
    }

    fn source_done(&mut self, cx: &mut Context) {
        let Some(source) = self.source.take() else {
            return;
        };
        let Some(job) = self.job.as_mut() else {
            return;
        };
        if let Some(span) = job.span {
            if job.received < span.end - span.start {
                // Should not happen (remaining counts down to the span), but
                // never promise bytes we don't have.
                self.source = Some(source);
                return self.source_failed(Failure::EndedEarly, cx);
            }
        }
        match source.kind {
            SourceKind::Peer(_) => cx.relay.policy.counters.from_peers += 1,
            SourceKind::Upstream { .. } => cx.relay.policy.counters.from_upstream += 1,
        }
        let describe = source.describe();
        if source.keep_alive && source.remaining == Some(0) {
            self.kept = Some(Kept::from(source));
        }
        if job.kind == FileKind::Package {
            if let Some(origin) = job.origin {
                cx.relay.policy.remember_origin(&job.file, origin);
            }
        }
        debug!(
            "{}: {} bytes from {} in {} ms",
            job.file,
            job.received,
            describe,
            cx.now.duration_since(job.started).as_millis()
        );
    }

    /// Keeps a source connection whose answer was read to its end for this
    /// connection's next request (pacman asks the same mirror line for the
    /// next file); a request to another address returns it to the pool.
    fn keep(&mut self, source: Source) {
        self.kept = Some(Kept::from(source));
    }

    fn flush_out(&mut self, budget: &mut usize, now: Instant) -> Option<Want> {
        match self.server.flush(budget, now, false) {
            Flush::Done => None,
            Flush::Blocked => Some(self.want(false)),
            Flush::Closed => Some(Want::Close),
        }
    }

    fn response_done(&mut self, cx: &mut Context) {
        self.source = None;
        cx.relay.pool.give_buffer(self.pipe.release());
        self.job = None;
        match self.server.response_done(cx.now, cx.stopping) {
            Some(until) => self.set_state(State::Linger { until }),
            None => self.set_state(State::Head),
        }
    }

    // ---- local answers -----------------------------------------------------

    fn reply_error(&mut self, status: Status, keep_alive: bool, with_body: bool) {
        self.source = None;
        self.pipe.clear();
        self.server.queue_error(status, keep_alive, with_body);
        self.set_state(State::Reply);
    }

    /// 416 for a range past the end of a file whose source ignored ranges.
    fn reply_unsatisfiable(&mut self, len: u64, keep_alive: bool) {
        let out = self.server.start_response(keep_alive);
        response::write_head(out, Status::RangeNotSatisfiable);
        response::field(out, "Content-Range", format_args!("bytes */{len}"));
        response::field(out, "Content-Length", 0u64);
        response::finish(out, keep_alive);
        self.set_state(State::Reply);
    }

    fn reply_redirect(&mut self, location: &str, keep_alive: bool, with_body: bool) {
        self.source = None;
        let body = format!("302 Found: {location}\n");
        let out = self.server.start_response(keep_alive);
        response::write_head(out, Status::Found);
        response::field(out, "Location", location);
        response::field(out, "Content-Type", "text/plain");
        response::field(out, "Content-Length", body.len());
        response::finish(out, keep_alive);
        if with_body {
            out.extend_from_slice(body.as_bytes());
        }
        self.set_state(State::Reply);
    }

    fn reply_text(&mut self, status: Status, text: &str, keep_alive: bool, with_body: bool) {
        let out = self.server.start_response(keep_alive);
        response::write_head(out, status);
        response::field(out, "Content-Type", "text/plain; charset=utf-8");
        response::field(out, "Content-Length", text.len());
        response::field(out, "Cache-Control", "no-store");
        response::finish(out, keep_alive);
        if with_body {
            out.extend_from_slice(text.as_bytes());
        }
        self.set_state(State::Reply);
    }

    /// Every change of state goes through here, logged as `old -> new`.
    fn set_state(&mut self, state: State) {
        if self.state != state {
            debug!(
                "pacman {}: {} -> {}",
                self.server.remote,
                self.state.name(),
                state.name()
            );
            self.state = state;
        }
    }
}

/// Splits `/$repo/os/$arch/<file>`; the file name is percent-decoded once.
/// Repository and architecture must be plain tokens.
pub fn split_repo_path(path: &str) -> Option<(&str, &str, String)> {
    let mut parts = path.strip_prefix('/')?.splitn(4, '/');
    let (repo, os, arch, raw) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
    };
    if os != "os" || !token(repo) || !token(arch) {
        return None;
    }
    Some((repo, arch, percent_decode(raw)?))
}

/// Percent-encodes a file name for a request line: everything but the
/// characters a path segment may hold as they are (so `:` and `+` stay, as
/// pacman sends them).
pub fn encode_path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths() {
        assert_eq!(
            split_repo_path("/core/os/x86_64/a+b-1:2-1-x86_64.pkg.tar.zst"),
            Some(("core", "x86_64", "a+b-1:2-1-x86_64.pkg.tar.zst".to_owned()))
        );
        assert_eq!(
            split_repo_path("/extra/os/aarch64/x%3Ay"),
            Some(("extra", "aarch64", "x:y".to_owned()))
        );
        assert_eq!(
            split_repo_path("/core/os/x86_64/sub/file"),
            Some(("core", "x86_64", "sub/file".to_owned()))
        );
        for bad in [
            "/core/x86_64/f",
            "/core/os/x86_64",
            "/../os/x86_64/f",
            "/core/os/x86 64/f",
            "//os/x86_64/f",
            "core/os/x86_64/f",
            "/core/os/x86_64/%zz",
        ] {
            assert_eq!(split_repo_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn path_segments_are_encoded_once() {
        assert_eq!(
            encode_path_segment("libc++-1:17.0-1-x86_64.pkg.tar.zst"),
            "libc++-1:17.0-1-x86_64.pkg.tar.zst"
        );
        assert_eq!(encode_path_segment("a b%c/d?"), "a%20b%25c%2Fd%3F");
        for name in ["a b", "x%y", "ü-1-1-any.pkg.tar.zst"] {
            assert_eq!(
                percent_decode(&encode_path_segment(name)).as_deref(),
                Some(name)
            );
        }
    }
}
