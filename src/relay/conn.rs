//! One pacman connection to the relay: the shell around the relay's cores.
//!
//! Owns the connection's [`State`] (every change goes through `set_state`,
//! logged `old -> new`), reading pacman's requests and deciding what each is
//! (a relayed file, the status page, `flocon query`), the deadlines of each
//! state, the local answers (errors, redirects, 416, text), and the end of
//! each response. The server skeleton ([`crate::server`]) does the HTTP
//! server side; moving bytes from a source is in `transfer.rs`; which source
//! is next is the [`SourcePlan`]'s rule. It does not register sockets or
//! keep timers: the loop runs it with an [`Input`] and acts on its [`Want`].
//!
//! LIFECYCLE: `Head` (reading a request) -> `Lookup` (a question is open),
//! `Resolving` (an upstream's host), `Connect` (waiting for the loop to open
//! a source connection, within the same loop pass) and/or `Fetch` (a source:
//! connecting, request, response head, body) -> `Reply` (a locally made
//! answer) -> back
//! to `Head` (keep-alive) or `Linger` -> `Closed`. A source that fails moves
//! the request on to the next source, not the connection on to another
//! state. `Status` waits one turn for the loop to hand in a status page (text,
//! JSON or metrics).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;

use super::fetch::{Asked, Span};
use super::pipe::Pipe;
use super::plan::SourcePlan;
use super::policy::Origin;
use super::source::{Kept, Source, SourceKind};
use super::verify::BodyCheck;
use super::{CLIENT_TIMEOUT, Context, Input, Page, Release, TURN_BUDGET, Wait, split_repo_path};
use crate::cache::{self, FileKind};
use crate::discovery::{PeerRef, QuestionId};
use crate::http::percent_decode;
use crate::http::request::{Limits, Method, RequestHead};
use crate::http::response::Status;
use crate::http::url::Url;
use crate::inbound::{Drain, HeadStep};
use crate::net::Want;
use crate::resolver::{Addresses, LookupId, ResolveError};
use crate::server::{Flush, HeadExpiry, ServerConn};
use crate::sync_db::FileIdentity;

/// How long a request waits for an upstream's host name before going on without it.
pub(crate) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
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
    /// Waiting for the loop to open (or take from its pool, with `reuse`) a
    /// connection to `addr` for the source `kind` ([`Want::Connect`]).
    Connect {
        kind: SourceKind,
        addr: SocketAddr,
        reuse: bool,
    },
    Fetch,
    Reply,
    /// Waiting for the loop to hand in a status page.
    Status(Page),
    /// Closed: what it held went back to the loop.
    Closed,
    Linger {
        until: Instant,
    },
}

impl State {
    /// For the `old -> new` log line.
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Head => "head",
            State::Lookup { .. } => "lookup",
            State::Resolving { .. } => "resolving",
            State::Connect { .. } => "connect",
            State::Fetch => "fetch",
            State::Reply => "reply",
            State::Status(_) => "status",
            State::Closed => "closed",
            State::Linger { .. } => "linger",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Relay,
    Query,
}

/// One request from pacman being answered.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) purpose: Purpose,
    pub(super) file: String,
    pub(super) repo: String,
    pub(super) arch: String,
    pub(super) kind: FileKind,
    pub(super) head_only: bool,
    pub(super) range: Option<String>,
    pub(super) if_modified_since: Option<String>,
    pub(super) keep_alive: bool,
    /// The sources tried and left.
    pub(super) plan: SourcePlan,
    /// The response head went to pacman: from now on only continuations.
    pub(super) head_sent: bool,
    /// What the body delivers; `None` until a head was accepted or when the
    /// body is delimited by the source closing.
    pub(super) span: Option<Span>,
    /// Body bytes taken from sources so far.
    pub(super) received: u64,
    /// The whole file's length as pacman's answer gave it, if it did.
    pub(super) complete: Option<u64>,
    pub(super) origin: Option<Origin>,
    pub(super) started: Instant,
    /// What the sync database says the file must be (packages only).
    pub(super) identity: Option<FileIdentity>,
    /// The body checked against it while it streams, when it can be.
    pub(super) check: Option<BodyCheck>,
    /// This host leads the file's download from upstream (discovery answers CLAIMs for it):
    /// released when the request ends.
    pub(super) leads: bool,
    /// The spool file the body is also written to while it streams from
    /// upstream, for the LAN to read ([`crate::spool`]).
    pub(super) spool: Option<crate::spool::SpoolWriter>,
}

impl Job {
    /// What is asked of a source now (of a peer: `from_peer`): pacman's
    /// request, or the rest of a body pacman has begun.
    pub(super) fn asked(&self, from_peer: bool) -> Asked<'_> {
        Asked {
            range: self.range.as_deref(),
            head_only: self.head_only,
            continuation: self.head_sent,
            rest: self.span.map(|span| Span {
                start: span.start + self.received,
                end: span.end,
            }),
            from_peer,
            file_size: self.identity.map(|id| id.size),
            complete: self.complete,
        }
    }
}

pub struct PacmanConn {
    pub(super) server: ServerConn,
    pub(super) state: State,
    pub(super) pipe: Pipe,
    pub(super) job: Option<Job>,
    pub(super) source: Option<Source>,
    pub(super) kept: Option<Kept>,
    /// Source sockets let go of, for the loop ([`Self::poll_release`]).
    pub(super) released: Vec<Release>,
    pub(super) next_source_id: u32,
    pub(super) limits: Limits,
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
            released: Vec::new(),
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

    /// The status page the loop must hand in ([`Input::Status`]), if one is awaited.
    pub fn wants_status(&self) -> Option<Page> {
        match self.state {
            State::Status(page) => Some(page),
            _ => None,
        }
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

    /// The transfer in flight, for the JSON status and the metrics.
    pub fn transfer(&self) -> Option<crate::status::Transfer> {
        let job = self.job.as_ref().filter(|j| j.purpose == Purpose::Relay)?;
        Some(crate::status::Transfer {
            file: job.file.clone(),
            source: self.source.as_ref().map(Source::describe),
            received: job.received,
            total: job.span.map(|s| s.end - s.start),
        })
    }

    pub(super) fn resolved(&mut self, answer: Result<Addresses, ResolveError>, cx: &mut Context) {
        let (index, url) = match &self.state {
            State::Resolving { index, url, .. } => (*index, url.clone()),
            _ => return,
        };
        self.set_state(State::Fetch);
        self.connect_upstream(index, url, answer, cx);
    }

    pub(super) fn answered(&mut self, peer: Option<PeerRef>, cx: &mut Context) {
        let State::Lookup { since, .. } = self.state else {
            return;
        };
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let waited = cx.now.duration_since(since);
        cx.relay.policy.count_lookup(waited, peer.is_some());
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
        // Nobody to follow and this host won the file's claim: it leads, whatever comes next
        // (a fetch, a redirect, a 404, pacman gone), and releases the lead when the request
        // ends, so that its followers do not wait for it in vain.
        if peer.is_none() && !job.leads && cx.discovery.is_leading(&job.file) {
            job.leads = true;
        }
        let backed_off = cx.excluded_peers();
        let step = job.plan.answered(peer, &backed_off, job.head_sent);
        self.set_state(State::Fetch);
        self.take_step(step, cx);
    }

    /// Runs the connection as far as it can go now, after `input`.
    pub fn run(&mut self, cx: &mut Context, input: Input) -> Want {
        match input {
            Input::Ready => {}
            Input::Answer(peer) => self.answered(peer, cx),
            Input::Address(address) => self.resolved(address, cx),
            Input::Status(text) => {
                if let State::Status(page) = self.state {
                    let keep_alive = self.job.as_ref().is_some_and(|j| j.keep_alive);
                    let head_only = self.job.as_ref().is_some_and(|j| j.head_only);
                    let content_type = page.content_type();
                    self.reply_page(Status::Ok, content_type, &text, keep_alive, !head_only);
                }
            }
            Input::Connected(answer) => self.connected(answer, cx),
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
                State::Lookup { .. } | State::Resolving { .. } | State::Connect { .. } => {
                    return self.want(false);
                }
                // The loop hands the page in on the next turn.
                State::Status(_) => return self.want(true),
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

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Head => Some(self.server.head_deadline()),
            // The question has its own deadline; this is only a safety net.
            State::Lookup { since, .. } => Some(since + Duration::from_secs(5)),
            // getaddrinfo gives up as resolv.conf says (5 s a try by default, more with several
            // nameservers): the upstream is skipped before pacman's 10 s low-speed limit.
            State::Resolving { since, .. } => Some(since + RESOLVE_TIMEOUT),
            State::Status(_) | State::Closed | State::Connect { .. } => None,
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
    pub(super) fn on_deadline(&mut self, cx: &mut Context) -> Option<Want> {
        match self.state {
            State::Head => match self.server.head_expired() {
                HeadExpiry::RequestTimeout => {
                    debug!("pacman {}: request head timed out", self.server.remote);
                    self.drop_source();
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
                // As if nobody had answered: a query says so, a relayed
                // request goes on without the LAN.
                cx.discovery.cancel(question);
                self.answered(None, cx);
                None
            }
            State::Status(_) | State::Connect { .. } => None,
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

    pub(super) fn want(&self, again: bool) -> Want {
        if let Some(connect) = self.want_connect() {
            return connect;
        }
        Want::Io {
            deadline: self.deadline(),
            again,
            source: self.source.as_ref().map(|s| s.id),
        }
    }

    // ---- requests ----------------------------------------------------------

    /// Starts answering one complete request head.
    pub(super) fn start(&mut self, head: &RequestHead, cx: &mut Context) {
        let keep_alive = self.server.keep_alive(head, cx.stopping);
        let with_body = head.method != Method::Head;
        if head.has_body {
            return self.reply_error(Status::BadRequest, false, with_body);
        }
        if head.method == Method::Other {
            return self.reply_error(Status::MethodNotAllowed, keep_alive, with_body);
        }
        if !super::is_local_host(head.host.as_deref(), cx.relay.machine_name.as_deref()) {
            if let Some(held) = cx.relay.foreign_hosts.check(cx.now) {
                warn!(
                    "pacman {}: refused a request for host {:?} (only this machine's names are served; {held} more held back)",
                    self.server.remote,
                    head.host.as_deref().unwrap_or_default()
                );
            }
            return self.reply_error(Status::Forbidden, false, with_body);
        }
        let path = head
            .target
            .split_once('?')
            .map_or(head.target.as_str(), |(p, _)| p);
        let started = cx.now;
        let new_job = |purpose, file: String, repo: &str, arch: &str, kind| Job {
            purpose,
            file,
            repo: repo.to_owned(),
            arch: arch.to_owned(),
            kind,
            head_only: !with_body,
            range: head.range.clone(),
            if_modified_since: head.if_modified_since.clone(),
            keep_alive,
            plan: SourcePlan::lazy(kind, true),
            head_sent: false,
            span: None,
            received: 0,
            complete: None,
            origin: None,
            started,
            identity: None,
            check: None,
            leads: false,
            spool: None,
        };
        if let Some(page) = Page::at(path) {
            self.job = Some(new_job(
                Purpose::Query,
                String::new(),
                "",
                "",
                FileKind::Package,
            ));
            self.set_state(State::Status(page));
            return;
        }
        if let Some(raw) = path.strip_prefix("/query/") {
            let Some(file) = percent_decode(raw) else {
                return self.reply_error(Status::BadRequest, keep_alive, with_body);
            };
            if cache::check_servable(&file).is_err() {
                return self.reply_error(Status::BadRequest, keep_alive, with_body);
            }
            let (expected, exclude) = (cx.trust.expected(&file), cx.excluded_peers());
            let question = cx.discovery.ask(&file, expected, &exclude, cx.now);
            cx.asked.push(Wait::Question(question));
            self.job = Some(new_job(Purpose::Query, file, "", "", FileKind::Package));
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
        let mut job = new_job(Purpose::Relay, file, repo, arch, kind);
        if kind == FileKind::Package {
            job.identity = cx.trust.identity(&job.file);
        }
        job.check = BodyCheck::wanted(kind, job.identity, job.range.is_some(), job.head_only);
        // A resumed `.part` whose content the database knows: its first bytes were never
        // seen here, so the rest cannot be checked; it comes from upstream, not the LAN.
        let unverifiable = job.range.is_some() && job.identity.is_some_and(|i| i.sha256.is_some());
        job.plan = SourcePlan::lazy(kind, cx.stopping || unverifiable);
        // The peer a package came from: its signature comes from it (only
        // it, then upstream, so the two agree); the package itself never goes
        // back to it without a fresh question (see `SourcePlan::start`).
        let package = job.file.trim_end_matches(".sig");
        let origin = if job.plan.wants_origin() {
            cx.relay.policy.origin_of(package)
        } else {
            None
        };
        let reachable = match origin {
            Some(Origin::Peer(id)) if !cx.relay.policy.is_backed_off(id, cx.now) => cx
                .discovery
                .peer(id)
                .map(crate::discovery::Peer::peer_ref)
                .filter(|p| !cx.relay.policy.is_banned(p.host_id, p.addr.ip(), cx.now)),
            _ => None,
        };
        let backed_off = cx.excluded_peers();
        let step = job.plan.start(origin, reachable, &backed_off);
        self.job = Some(job);
        self.set_state(State::Fetch);
        self.take_step(step, cx);
    }

    pub(super) fn flush_out(&mut self, budget: &mut usize, now: Instant) -> Option<Want> {
        match self.server.flush(budget, now, false) {
            Flush::Done => None,
            Flush::Blocked => Some(self.want(false)),
            Flush::Closed => Some(Want::Close),
        }
    }

    pub(super) fn response_done(&mut self, cx: &mut Context) {
        self.drop_source();
        cx.relay.buffers.give_buffer(self.pipe.release());
        if let Some(job) = self.job.take().filter(|j| j.leads) {
            cx.discovery.release(&job.file);
        }
        match self.server.response_done(cx.now, cx.stopping) {
            Some(until) => self.set_state(State::Linger { until }),
            None => self.set_state(State::Head),
        }
    }

    /// Every change of state goes through here, logged as `old -> new`.
    pub(super) fn set_state(&mut self, state: State) {
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
