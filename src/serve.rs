//! The peer file server: one accepted TCP connection from another flocon host.
//!
//! Owns answering `GET`/`HEAD` of `/<file name>` from the local cache
//! (ranges, `If-Modified-Since`, errors), sending bodies with `sendfile` in
//! bounded chunks, and the send timeout; a file unlike its sync database, or
//! not hashed yet, is answered 404 ([`crate::trust::Trust::serve_verdict`]).
//! The server skeleton it shares with
//! the relay ([`crate::server`]) reads request heads and keeps the head and
//! idle timeouts, keep-alive and the lingering close. It does not accept
//! connections, register sockets or keep timers: the event loop runs it and
//! acts on the [`Want`] it returns.
//!
//! LIFECYCLE: `Head` (reading a request; idle until its first byte) ->
//! `Send` (head bytes, then the file body) -> back to `Head` (keep-alive) or
//! `Linger` (our write side shut, draining the client's leftovers briefly) ->
//! closed. Any timeout or socket error closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;

use crate::cache::{Cache, CachedFile};
use crate::http::range::{self, RangeRequest};
use crate::http::request::{Method, RequestHead};
use crate::http::response::{self, Status};
use crate::http::{date, percent_decode};
use crate::inbound::{Drain, HeadStep};
use crate::net::{self, Io, Want};
use crate::server::{Flush, HeadExpiry, ServerConn};
use crate::spool::{Follow, FollowRefusal, Readable, Spool, Waiter};
use crate::trust::{Trust, Verdict};

/// A response that makes no progress at all (the client stopped reading).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes moved for one connection in one turn of the loop before others run.
const TURN_BUDGET: usize = 4 << 20;
/// Size of the loop's read buffer ([`Context::scratch`]).
pub const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size go out in the same send as their head.
const INLINE_BODY: usize = 16 * 1024;
/// The copy buffer when `sendfile` is refused.
const COPY_CHUNK: usize = 64 * 1024;

/// Totals since start, for the state report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub requests: u64,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
    pub refused_busy: u64,
}

/// What a run of a connection needs from the daemon.
pub struct Context<'a> {
    pub cache: &'a mut Cache,
    /// Whether a cached file agrees with its sync database.
    pub trust: &'a mut Trust,
    /// The loop's one read buffer, lent for this run.
    pub scratch: &'a mut [u8],
    pub now: Instant,
    pub counters: &'a mut Counters,
    /// The daemon is stopping: close when idle, finish transfers in flight.
    pub stopping: bool,
    /// Packages this host is fetching from upstream, readable as they arrive.
    pub spool: &'a mut Spool,
    /// This connection, as the spool wakes it when bytes arrive.
    pub waiter: Waiter,
}

#[derive(Debug)]
struct FileBody {
    file: std::rc::Rc<std::fs::File>,
    offset: u64,
    /// Exclusive.
    end: u64,
    sendfile: bool,
    /// A spool file still being fetched: readable only as far as the spool says.
    spool: Option<Follow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Send,
    Linger { until: Instant },
}

pub struct PeerConn {
    server: ServerConn,
    state: State,
    body: Option<FileBody>,
}

impl PeerConn {
    pub fn new(stream: TcpStream, remote: SocketAddr, now: Instant) -> PeerConn {
        PeerConn {
            server: ServerConn::new(stream, remote, now),
            state: State::Head,
            body: None,
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.server.stream
    }

    /// The loop saw the accepted socket become readable.
    pub fn readable(&mut self) {
        self.server.reader.readable();
    }

    /// Runs the connection as far as it can go now: after readiness, after its
    /// deadline passed, or when asked to run again.
    pub fn run(&mut self, cx: &mut Context) -> Want {
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
                        HeadStep::Head(head) => self.answer(&head, cx),
                        HeadStep::Refused(e) => {
                            debug!("peer {}: {e}", self.server.remote);
                            cx.counters.errors += 1;
                            self.respond_error(e.status(), false, true);
                        }
                        HeadStep::Blocked => return self.want(false),
                        HeadStep::Yield => return self.want(true),
                        HeadStep::Closed => return Want::Close,
                    }
                }
                State::Send => match self.send_some(&mut budget, cx) {
                    Some(want) => return want,
                    None => self.response_done(cx.now),
                },
                State::Linger { .. } => match self.server.drain(cx.scratch, &mut budget) {
                    Drain::More => {}
                    Drain::Blocked => return self.want(false),
                    Drain::Closed => return Want::Close,
                },
            }
        }
    }

    /// The deadline passed: `Some` to stop, `None` to go on (a 408 was queued).
    fn on_deadline(&mut self, cx: &mut Context) -> Option<Want> {
        match self.state {
            State::Head => match self.server.head_expired() {
                HeadExpiry::RequestTimeout => {
                    debug!("peer {}: request head timed out", self.server.remote);
                    cx.counters.errors += 1;
                    self.body = None;
                    self.state = State::Send;
                    None
                }
                HeadExpiry::Close => Some(Want::Close),
            },
            State::Send => {
                debug!("peer {}: send stalled, closing", self.server.remote);
                cx.counters.errors += 1;
                Some(Want::Close)
            }
            State::Linger { .. } => Some(Want::Close),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(match self.state {
            State::Head => self.server.head_deadline(),
            State::Send => self.server.last_progress + SEND_TIMEOUT,
            State::Linger { until } => until,
        })
    }

    fn want(&self, again: bool) -> Want {
        Want::Io {
            deadline: self.deadline(),
            again,
            source: None,
        }
    }

    /// Writes the pending head, then the body. `None` when the response is
    /// complete.
    fn send_some(&mut self, budget: &mut usize, cx: &mut Context) -> Option<Want> {
        loop {
            if *budget == 0 {
                return Some(self.want(true));
            }
            if self.server.has_output() {
                let more = self.body.as_ref().is_some_and(|b| b.offset < b.end);
                match self.server.flush(budget, cx.now, more) {
                    Flush::Done => continue,
                    Flush::Blocked => return Some(self.want(false)),
                    Flush::Closed => return Some(Want::Close),
                }
            }
            let body = self.body.as_mut()?;
            if body.offset >= body.end {
                self.body = None;
                return None;
            }
            // A spool file is read only as far as its bytes arrived (and, for the
            // last, were verified); then the spool wakes this connection.
            let limit = match &body.spool {
                None => body.end,
                Some(follow) => match cx.spool.book.readable(follow.id) {
                    Readable::UpTo(n) => n.min(body.end),
                    Readable::Gone => {
                        debug!(
                            "peer {}: the spool file's fetch failed: closing so the peer fails over",
                            self.server.remote
                        );
                        return Some(Want::Close);
                    }
                },
            };
            if body.offset >= limit {
                if let Some(follow) = &body.spool {
                    cx.spool.book.wait(follow.id, cx.waiter);
                }
                return Some(self.want(false));
            }
            let from_spool = body.spool.is_some();
            let want = (limit - body.offset).min(*budget as u64);
            if body.sendfile {
                match net::sendfile(&self.server.stream, &body.file, body.offset, want) {
                    Io::Done(n) => {
                        body.offset += n as u64;
                        cx.counters.bytes += n as u64;
                        if from_spool {
                            cx.spool.book.served(n as u64);
                        }
                        *budget = budget.saturating_sub(n);
                        self.server.last_progress = cx.now;
                    }
                    Io::WouldBlock => return Some(self.want(false)),
                    Io::Error(e) if net::sendfile_unsupported(&e) => {
                        debug!("sendfile refused ({e}), copying instead");
                        body.sendfile = false;
                    }
                    Io::Closed | Io::Error(_) => {
                        // The file shrank under us or the socket failed: the
                        // promised length can't be kept, so close.
                        return Some(Want::Close);
                    }
                }
            } else {
                let n = (want as usize).min(COPY_CHUNK);
                let out = &mut self.server.out;
                out.resize(n, 0);
                match net::pread(&body.file, out, body.offset) {
                    Io::Done(got) => {
                        out.truncate(got);
                        body.offset += got as u64;
                        cx.counters.bytes += got as u64;
                        if from_spool {
                            cx.spool.book.served(got as u64);
                        }
                    }
                    _ => return Some(Want::Close),
                }
            }
        }
    }

    fn response_done(&mut self, now: Instant) {
        self.state = match self.server.response_done(now, false) {
            Some(until) => State::Linger { until },
            None => State::Head,
        };
    }

    fn respond_error(&mut self, status: Status, keep_alive: bool, with_body: bool) {
        self.body = None;
        self.server.queue_error(status, keep_alive, with_body);
        self.state = State::Send;
    }

    /// Builds the answer to one complete request head.
    fn answer(&mut self, head: &RequestHead, cx: &mut Context) {
        cx.counters.requests += 1;
        let keep_alive = self.server.keep_alive(head, cx.stopping);
        let with_body = head.method != Method::Head;
        let outcome = self.answer_file(head, keep_alive, with_body, cx);
        match outcome {
            Ok(status) => debug!(
                "peer {} {} {} -> {}",
                self.server.remote,
                method_name(head.method),
                head.target,
                status.code()
            ),
            Err((status, why)) => {
                debug!(
                    "peer {} {} {} -> {} ({why})",
                    self.server.remote,
                    method_name(head.method),
                    head.target,
                    status.code()
                );
                if status != Status::NotFound && status != Status::NotModified {
                    cx.counters.errors += 1;
                }
                self.respond_error(status, keep_alive, with_body);
            }
        }
        if self.state == State::Send && self.body.is_some() {
            cx.counters.files += 1;
        }
    }

    /// Queues a file answer, or says which error page to send and why.
    fn answer_file(
        &mut self,
        head: &RequestHead,
        keep_alive: bool,
        with_body: bool,
        cx: &mut Context,
    ) -> Result<Status, (Status, String)> {
        if head.has_body {
            return Err((Status::BadRequest, "request with a body".into()));
        }
        if head.method == Method::Other {
            return Err((Status::MethodNotAllowed, "method".into()));
        }
        let name = request_file_name(&head.target)?;
        let file = match cx.cache.open(&name, cx.now) {
            Ok(Some(file)) => file,
            Ok(None) => return self.answer_spool(&name, head, keep_alive, with_body, cx),
            Err(e) if e.is_malformed() => return Err((Status::BadRequest, e.to_string())),
            Err(e) => return Err((Status::NotFound, e.to_string())),
        };
        // Never a copy unlike its sync database, nor one not checked yet.
        match cx.trust.serve_verdict(&name, &file.path, file.stamp) {
            Verdict::Good | Verdict::Unchecked => {}
            Verdict::NotYet => {
                return self
                    .answer_spool(&name, head, keep_alive, with_body, cx)
                    .map_err(|_| (Status::NotFound, "not verified yet".into()));
            }
            Verdict::Bad => {
                return Err((Status::NotFound, "unlike its sync database entry".into()));
            }
        }
        let status = self.queue_file(file, head, keep_alive, with_body, cx.counters);
        Ok(status)
    }

    /// Answers from the spool: a package this host is fetching from upstream (or
    /// fetched and verified), its bytes sent as they arrive.
    fn answer_spool(
        &mut self,
        name: &str,
        head: &RequestHead,
        keep_alive: bool,
        with_body: bool,
        cx: &mut Context,
    ) -> Result<Status, (Status, String)> {
        if crate::cache::check_servable(name).is_err() {
            return Err((Status::NotFound, "not a servable name".into()));
        }
        let (follow, file) = match cx.spool.follow(name) {
            Ok(pair) => pair,
            Err(FollowRefusal::NotHere) => {
                return Err((Status::NotFound, "not in the cache".into()));
            }
            Err(FollowRefusal::TooManyFollowers) => {
                return Err((
                    Status::ServiceUnavailable,
                    "the spool file has its most readers".into(),
                ));
            }
        };
        let modified = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let len = follow.size;
        let status = self.queue_body(
            (file, len, modified),
            head,
            keep_alive,
            with_body,
            cx.counters,
            Some(follow),
        );
        Ok(status)
    }

    fn queue_file(
        &mut self,
        file: CachedFile,
        head: &RequestHead,
        keep_alive: bool,
        with_body: bool,
        counters: &mut Counters,
    ) -> Status {
        self.queue_body(
            (file.file, file.len, file.modified),
            head,
            keep_alive,
            with_body,
            counters,
            None,
        )
    }

    /// Queues the answer for a file of `len` bytes modified at `modified` (Unix
    /// seconds); `spool`: a spool file, sent only as far as its bytes arrived.
    fn queue_body(
        &mut self,
        (data, len, modified): (std::rc::Rc<std::fs::File>, u64, u64),
        head: &RequestHead,
        keep_alive: bool,
        with_body: bool,
        counters: &mut Counters,
        spool: Option<Follow>,
    ) -> Status {
        self.state = State::Send;
        let not_modified = head
            .if_modified_since
            .as_deref()
            .and_then(date::parse_unix)
            .is_some_and(|since| modified <= since);
        let (status, range) = if not_modified {
            (Status::NotModified, None)
        } else {
            match range::evaluate(head.range.as_deref(), len) {
                RangeRequest::Whole => (Status::Ok, Some((0, len))),
                RangeRequest::Part(r) => (Status::PartialContent, Some((r.start, r.end + 1))),
                RangeRequest::Unsatisfiable => (Status::RangeNotSatisfiable, None),
            }
        };
        let out = self.server.start_response(keep_alive);
        response::write_head(out, status);
        match status {
            Status::RangeNotSatisfiable => {
                response::field(out, "Content-Range", format_args!("bytes */{}", len));
                response::field(out, "Content-Length", 0u64);
            }
            Status::NotModified => {}
            _ => {
                let (start, end) = range.unwrap_or((0, 0));
                response::field(out, "Content-Type", "application/octet-stream");
                response::field(out, "Content-Length", end - start);
                if status == Status::PartialContent {
                    response::field(
                        out,
                        "Content-Range",
                        format_args!("bytes {start}-{}/{}", end - 1, len),
                    );
                }
            }
        }
        response::field(out, "Last-Modified", date::Imf(modified));
        response::field(out, "Accept-Ranges", "bytes");
        response::finish(out, keep_alive);
        self.body = match range {
            Some((start, end)) if with_body && end > start => Some(FileBody {
                file: data,
                offset: start,
                end,
                sendfile: true,
                spool,
            }),
            _ => None,
        };
        // A small body (a signature, a tiny package) leaves with its head in
        // one send: cheaper than a sendfile call for a few kilobytes.
        if let Some(body) = self.body.as_mut() {
            let len = body.end - body.offset;
            if len <= INLINE_BODY as u64 && body.spool.is_none() {
                let out = &mut self.server.out;
                let head_len = out.len();
                out.resize(head_len + len as usize, 0);
                if let Io::Done(n) = net::pread(&body.file, &mut out[head_len..], body.offset) {
                    // A short read (the file shrank) leaves the rest to the
                    // copy path, which then fails and closes.
                    out.truncate(head_len + n);
                    body.offset += n as u64;
                    counters.bytes += n as u64;
                    body.sendfile = false;
                } else {
                    out.truncate(head_len);
                }
            }
        }
        status
    }
}

/// The file name a peer-server request target names: `/<name>`, query
/// dropped, percent-decoded once.
pub fn request_file_name(target: &str) -> Result<String, (Status, String)> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(raw) = path.strip_prefix('/') else {
        return Err((Status::BadRequest, "target is not an absolute path".into()));
    };
    percent_decode(raw).ok_or_else(|| (Status::BadRequest, "bad percent-encoding".into()))
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other => "(other method)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_file_names() {
        let ok = |t: &str, want: &str| assert_eq!(request_file_name(t).unwrap(), want, "{t}");
        ok("/a-1-1-any.pkg.tar.zst", "a-1-1-any.pkg.tar.zst");
        ok(
            "/a+b-1:2-1-any.pkg.tar.zst?x=1",
            "a+b-1:2-1-any.pkg.tar.zst",
        );
        ok("/a%2Bb", "a+b");
        ok("/%2e%2e%2fetc", "../etc");
        ok("/", "");
        for bad in ["a", "*", "http://x/a", "/%zz", "/%"] {
            assert_eq!(
                request_file_name(bad).unwrap_err().0,
                Status::BadRequest,
                "{bad}"
            );
        }
    }
}
