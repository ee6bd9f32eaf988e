//! Moving one answer from a source to pacman: performing the steps of the
//! request's [`SourcePlan`] (ask the LAN, resolve, fetch from a source,
//! redirect, give up), streaming the source's bytes through the pipe to
//! pacman with back-pressure, acting on the judgement of its head
//! ([`super::fetch::judge`]), and failing over when it fails.
//!
//! Part of [`PacmanConn`] (a second `impl` block); it does not choose the
//! next source (the plan does), nor get, register or close sockets (it asks
//! the loop, through `sockets.rs`).

use log::{debug, info, warn};

use super::conn::{PacmanConn, State};
use super::fetch::{self, Failure, Judgement};
use super::plan::{SourcePlan, Step};
use super::policy::{Counters, Origin};
use super::source::{Source, SourceKind, SourceStep};
use super::verify::Check;
use super::{Context, Wait, encode_path_segment};
use crate::cache::FileKind;
use crate::config::HttpsMode;
use crate::config::expand;
use crate::http::response::{ResponseHead, Status};
use crate::net::{self, Io, Want};
use crate::resolver::Lookup;

impl PacmanConn {
    /// Moves the current job on to the next source.
    pub(super) fn next_source(&mut self, cx: &mut Context) {
        self.drop_source();
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let backed_off = cx.excluded_peers();
        let step = job.plan.next(&backed_off, job.head_sent);
        self.take_step(step, cx);
    }

    /// Performs a step of the job's [`SourcePlan`]: ask the LAN, connect to a
    /// peer, resolve and connect to an upstream, or answer pacman locally.
    pub(super) fn take_step(&mut self, mut step: Step, cx: &mut Context) {
        loop {
            let Some(job) = self.job.as_mut() else {
                return;
            };
            let (keep_alive, with_body) = (job.keep_alive, !job.head_only);
            match step {
                Step::AskPeers { exclude } => {
                    let expected = cx.trust.expected(&job.file);
                    // A package download that nobody can serve is claimed: one host of
                    // those that want it now fetches it, the others follow it.
                    // (Only a whole file checked against the database: a continuation or an
                    // unchecked body cannot be spooled, and the spool is how a leader streams
                    // it to its followers.)
                    let whole = job.range.is_none() && !job.head_only && !job.head_sent;
                    let whole = whole && job.check.is_some() && cx.relay.spool.dir().is_some();
                    // (And only when its first mirror is fetched, not redirected to: a
                    // redirected download goes through nobody's spool.)
                    let redirected = cx.relay.https == HttpsMode::Redirect
                        && cx
                            .relay
                            .upstreams
                            .templates_for(&job.repo)
                            .first()
                            .is_some_and(|t| t.starts_with("https://"));
                    let question = if job.kind == FileKind::Package && whole && !redirected {
                        cx.discovery
                            .ask_to_fetch(&job.file, expected, &exclude, cx.now)
                    } else {
                        cx.discovery.ask(&job.file, expected, &exclude, cx.now)
                    };
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
                Step::ListUpstreams => {
                    // Databases start at the mirror that last answered them.
                    let first = match job.kind {
                        FileKind::Database => cx.relay.policy.db_mirror(&job.repo),
                        _ => 0,
                    };
                    let templates: Vec<String> = cx
                        .relay
                        .upstreams
                        .templates_for(&job.repo)
                        .iter()
                        .map(|t| expand(t, &job.repo, &job.arch))
                        .collect();
                    let path = encode_path_segment(&job.file);
                    job.plan
                        .set_upstreams(SourcePlan::upstreams_for(&templates, first, &path));
                    job.plan.set_https(cx.relay.https);
                    let backed_off = cx.excluded_peers();
                    step = job.plan.next(&backed_off, job.head_sent);
                }
                Step::Upstream { index, url } => {
                    let whole = job.range.is_none() && !job.head_only && !job.head_sent;
                    let whole = whole && job.check.is_some() && cx.relay.spool.dir().is_some();
                    if job.kind == FileKind::Package && whole && !job.leads {
                        // Latecomers that claim it follow this host.
                        let expected = cx.trust.expected(&job.file);
                        cx.discovery.lead(&job.file, expected, cx.now);
                        job.leads = true;
                    }
                    match cx.resolver.lookup(&url.host, cx.now) {
                        Lookup::Ready(answer) => {
                            return self.connect_upstream(index, url, answer, cx);
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
                    }
                }
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

    pub(super) fn source_failed(&mut self, failure: Failure, cx: &mut Context) {
        let Some(source) = self.source.take() else {
            return;
        };
        let (kind, addr, describe) = (source.kind.clone(), source.addr, source.describe());
        if source.reused && source.unanswered() {
            debug!("kept-alive connection to {addr} was closed: reconnecting");
            self.close_source(source);
            return self.connect_with(kind, addr, false, cx);
        }
        if source.reusable {
            // An error answer read to its end: the connection carries the
            // next request (to this address, or from the pool).
            self.keep(source);
        } else {
            self.close_source(source);
        }
        if self.try_next_address(&kind, failure, cx) {
            return;
        }
        self.note_failure(&kind, failure, cx);
        let from_peer = kind.is_peer();
        let received = self.job.as_ref().map_or(0, |j| j.received);
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

    pub(super) fn note_failure(&mut self, kind: &SourceKind, failure: Failure, cx: &mut Context) {
        let why = failure;
        let penalize = failure.penalizes(matches!(kind, SourceKind::Peer(_)));
        match kind {
            SourceKind::Peer(p) if failure.is_lie() => {
                cx.relay.policy.counters.failures += 1;
                cx.relay.policy.ban(p, cx.now, &why.to_string());
            }
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
    pub(super) fn pump(&mut self, budget: &mut usize, cx: &mut Context) -> Option<Want> {
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
            // 0. New bytes are checked before any of them can go to pacman, so
            // the last one goes only once the verdict is known.
            if let Some(want) = self.check_new_bytes(cx) {
                return Some(want);
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
                            if source.in_body() {
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
            if let Some(want) = self.check_new_bytes(cx) {
                return Some(want);
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

    /// Feeds the bytes that came into the pipe since the last call to the job's body check,
    /// and to its spool file (the same chunk); the spool file gets its verdict with the
    /// check's.
    fn feed_check(&mut self, spool: &mut crate::spool::Spool, now: std::time::Instant) -> Check {
        let Some(job) = self.job.as_mut() else {
            self.pipe.mark_checked();
            return Check::Partial;
        };
        let Some(check) = job.check.as_mut() else {
            self.pipe.mark_checked();
            return Check::Partial;
        };
        let bytes = self.pipe.unchecked();
        let verdict = check.feed(bytes);
        if let Some(writer) = job.spool.as_mut() {
            if !spool.write(writer, bytes) {
                job.spool = None;
            }
        }
        if verdict != Check::Partial {
            if let Some(writer) = job.spool.take() {
                spool.finish(writer, verdict == Check::Match, now);
            }
        }
        self.pipe.mark_checked();
        verdict
    }

    /// Checks the new bytes; on a mismatch, closes pacman's connection short of the last
    /// byte and bans the peers that sent any of the body (`Some`: stop here).
    fn check_new_bytes(&mut self, cx: &mut Context) -> Option<Want> {
        if self.feed_check(&mut cx.relay.spool, cx.now) != Check::Mismatch
            || self.state != State::Fetch
        {
            return None;
        }
        let job = self.job.as_ref()?;
        let check = job.check.as_ref()?;
        cx.relay.policy.counters.verify_failures += 1;
        let reason = format!(
            "sent {} bytes unlike the sync database's sha256 {}",
            job.file,
            check.expected()
        );
        if check.peers().is_empty() {
            warn!(
                "{}: the upstream's bytes are unlike the sync database's sha256 {}                  (is the database out of date?): closing pacman's connection",
                job.file,
                check.expected()
            );
        }
        for peer in check.peers().to_vec() {
            cx.relay.policy.ban(&peer, cx.now, &reason);
        }
        info!(
            "{}: wrong bytes held back: closing pacman's connection before the last byte",
            job.file
        );
        self.pipe.clear();
        self.drop_source();
        let until = self.server.abort(cx.now);
        self.set_state(State::Linger { until });
        Some(self.want(true))
    }

    pub(super) fn source_waits_on_pipe(&self) -> bool {
        self.source.as_ref().is_some_and(Source::in_body) && self.pipe.is_full()
    }

    pub(super) fn source_step(&mut self, budget: &mut usize, cx: &mut Context) -> SourceStep {
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
    pub(super) fn source_head(&mut self, head: ResponseHead, cx: &mut Context) -> SourceStep {
        let (Some(job), Some(source)) = (self.job.as_mut(), self.source.as_mut()) else {
            return SourceStep::Blocked;
        };
        let from_peer = matches!(source.kind, SourceKind::Peer(_));
        let leftover = source.take_head_bytes(head.len);
        // An answer not taken (an error, a redirect) leaves the connection
        // usable when all of it is here already.
        source.reusable = fetch::reusable_after(&head, leftover.len());
        let accepted = match fetch::judge(&head, &job.asked(from_peer)) {
            Judgement::Accept(accepted) => accepted,
            Judgement::Continue {
                remaining,
                keep_alive,
            } => {
                if let Some(check) = job.check.as_mut() {
                    check.source(source.kind.peer());
                }
                source.start_body(remaining, 0);
                source.keep_alive = keep_alive;
                self.pipe.provide(&mut cx.relay.buffers);
                self.take_leftover(leftover, &mut cx.relay.policy.counters);
                return SourceStep::Progress;
            }
            Judgement::Redirect(location) => {
                // A relative `Location` is relative to the mirror, not to flocon: resolved
                // here, or pacman would come back to flocon with it.
                let resolved = match &source.kind {
                    SourceKind::Upstream { url, .. } => url.resolve(&location),
                    SourceKind::Peer(_) => None,
                };
                let Some(location) = resolved else {
                    debug!("{}: unusable redirect to {location:?}", job.file);
                    return SourceStep::Failed(Failure::Status(head.code));
                };
                cx.relay.policy.counters.redirects += 1;
                let (keep_alive, with_body) = (job.keep_alive, !job.head_only);
                match self.source.take() {
                    Some(source) if source.reusable => self.keep(source),
                    Some(source) => self.close_source(source),
                    None => {}
                }
                self.reply_redirect(&location, keep_alive, with_body);
                return SourceStep::Progress;
            }
            Judgement::Unsatisfiable(len) => {
                let keep_alive = job.keep_alive;
                self.drop_source();
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
        job.complete = match accepted.content_range {
            Some(cr) => cr.complete_len,
            None if accepted.code == 200 => accepted.length,
            None => None,
        };
        job.head_sent = true;
        if let Some(check) = job.check.as_mut() {
            check.source(source.kind.peer());
            // A whole package from upstream, from its first byte: the LAN may read it
            // while it streams (a spool file), within the spool's bounds.
            let from_start = check.fed() == 0 && accepted.skip == 0 && job.received == 0;
            if from_start && job.spool.is_none() && !from_peer {
                let expected = crate::discovery::wire::Expected {
                    size: check.size(),
                    sha256: check.expected(),
                };
                job.spool = cx.relay.spool.begin(&job.file, expected, cx.now);
                if job.spool.is_some() {
                    cx.discovery.cache_added(&job.file);
                    // The hosts that follow this one's claim fetch it from us now.
                    let key = cx.trust.expected(&job.file);
                    cx.discovery.serving(&job.file, key, cx.now);
                    job.leads = true;
                } else if job.leads {
                    // Not streamed to the LAN: latecomers fetch it themselves.
                    cx.discovery.release(&job.file);
                    job.leads = false;
                }
            }
        }
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
        source.start_body(accepted.remaining, accepted.skip);
        source.keep_alive = accepted.keep_alive;
        self.pipe.provide(&mut cx.relay.buffers);
        self.take_leftover(leftover, &mut cx.relay.policy.counters);
        SourceStep::Progress
    }

    pub(super) fn take_leftover(&mut self, mut leftover: Vec<u8>, counters: &mut Counters) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if let Some(r) = source.remaining() {
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

    pub(super) fn source_done(&mut self, cx: &mut Context) {
        let Some(source) = self.source.take() else {
            return;
        };
        let Some(job) = self.job.as_mut() else {
            return self.close_source(source);
        };
        if let Some(span) = job.span {
            if job.received < span.end - span.start {
                // Should not happen (remaining counts down to the span), but
                // never promise bytes we don't have.
                self.source = Some(source);
                return self.source_failed(Failure::EndedEarly, cx);
            }
        }
        if self.feed_check(&mut cx.relay.spool, cx.now) == Check::Mismatch {
            // `check_new_bytes` closes pacman's connection on the next step.
            return self.close_source(source);
        }
        let Some(job) = self.job.as_mut() else {
            return self.close_source(source);
        };
        if job
            .check
            .as_ref()
            .is_some_and(|c| c.verdict() == Check::Match)
        {
            cx.relay.policy.counters.verified += 1;
        }
        if job.kind == FileKind::Database && !job.head_only && job.span.is_some() {
            cx.relay.policy.counters.databases_relayed += 1;
        }
        match &source.kind {
            SourceKind::Peer(p) => {
                cx.relay.policy.counters.from_peers += 1;
                cx.relay.policy.count_peer_file(p.host_id, source.bytes);
            }
            SourceKind::Upstream { .. } => cx.relay.policy.counters.from_upstream += 1,
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
            source.describe(),
            cx.now.duration_since(job.started).as_millis()
        );
        if source.keep_alive && source.remaining() == Some(0) {
            self.keep(source);
        } else {
            self.close_source(source);
        }
    }
}
