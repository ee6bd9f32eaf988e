//! The answers the relay makes itself (errors, 416, redirects to `https://` mirrors when
//! `Https = redirect`, text pages), each ending in the `Reply` state: one place for their heads.

use crate::http::response::{self, Status};

use super::conn::{PacmanConn, State};

impl PacmanConn {
    pub(super) fn reply_error(&mut self, status: Status, keep_alive: bool, with_body: bool) {
        self.drop_source();
        self.pipe.clear();
        self.server.queue_error(status, keep_alive, with_body);
        self.set_state(State::Reply);
    }

    /// 416 for a range past the end of a file whose source ignored ranges.
    pub(super) fn reply_unsatisfiable(&mut self, len: u64, keep_alive: bool) {
        let out = self.server.start_response(keep_alive);
        response::write_head(out, Status::RangeNotSatisfiable);
        response::field(out, "Content-Range", format_args!("bytes */{len}"));
        response::field(out, "Content-Length", 0u64);
        response::finish(out, keep_alive);
        self.set_state(State::Reply);
    }

    pub(super) fn reply_redirect(&mut self, location: &str, keep_alive: bool, with_body: bool) {
        self.drop_source();
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

    pub(super) fn reply_text(
        &mut self,
        status: Status,
        text: &str,
        keep_alive: bool,
        with_body: bool,
    ) {
        self.reply_page(
            status,
            "text/plain; charset=utf-8",
            text,
            keep_alive,
            with_body,
        );
    }

    pub(super) fn reply_page(
        &mut self,
        status: Status,
        content_type: &str,
        text: &str,
        keep_alive: bool,
        with_body: bool,
    ) {
        let out = self.server.start_response(keep_alive);
        response::write_head(out, status);
        response::field(out, "Content-Type", content_type);
        response::field(out, "Content-Length", text.len());
        response::field(out, "Cache-Control", "no-store");
        response::finish(out, keep_alive);
        if with_body {
            out.extend_from_slice(text.as_bytes());
        }
        self.set_state(State::Reply);
    }
}
