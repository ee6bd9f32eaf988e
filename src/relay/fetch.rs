//! One outbound exchange with a source, judged without I/O: what its response head means
//! for the request ([`judge`]: stream it, cut a range out of it, continue a body, pass a
//! redirect on, or fail over), and the head pacman gets for an accepted answer
//! ([`write_pacman_head`]). Why a source failed and when it has failed by silence are in
//! `failure.rs` ([`Failure`], [`Timer`]), re-exported here.
//!
//! Pure: heads and numbers in, decisions out. It does not read sockets,
//! choose the next source ([`super::plan`]) or remember anything across
//! requests ([`super::policy`]).

use std::borrow::Cow;

use crate::http::date;
use crate::http::range::{self, ContentRange, RangeRequest};
use crate::http::response::{self, Framing, ResponseHead};

pub use super::failure::{
    Failure, PEER_CONNECT_TIMEOUT, STALL_TIMEOUT, Timer, UPSTREAM_CONNECT_TIMEOUT,
};

/// The part of the representation pacman gets: `start..end` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

/// What was asked of the source, as far as judging its answer goes.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// pacman's `Range` field (a first request only).
    pub range: Option<&'a str>,
    pub head_only: bool,
    /// pacman has its head already: only the rest of the body will do.
    pub continuation: bool,
    /// The rest pacman has not had (`None`: the body had no known end, so
    /// no answer can continue it).
    pub rest: Option<Span>,
    pub from_peer: bool,
    /// The file's size as the sync database says (`%CSIZE%`), when it knows.
    pub file_size: Option<u64>,
    /// The whole file's length as the answer pacman got said it (a 200's length, a 206's
    /// complete length), when it said it: a continuation must agree.
    pub complete: Option<u64>,
}

impl<'a> Asked<'a> {
    /// The `Range` field to send: pacman's own on a first request (a
    /// `.part` resumed), on a continuation exactly the rest pacman has not
    /// had (none when the body had no known end).
    pub fn range_field(&self) -> Option<Cow<'a, str>> {
        if self.continuation {
            let rest = self.rest?;
            Some(Cow::Owned(format!(
                "bytes={}-{}",
                rest.start,
                rest.end.saturating_sub(1)
            )))
        } else {
            self.range.map(Cow::Borrowed)
        }
    }
}

/// An answer taken: what pacman gets and how much to read from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Status pacman gets (206 where a whole file is cut to pacman's range).
    pub code: u16,
    pub content_range: Option<ContentRange>,
    pub framing: Framing,
    /// The body's length as the source delimits it (`None`: until close).
    pub length: Option<u64>,
    /// What the body delivers (`None`: no body to continue).
    pub span: Option<Span>,
    /// Leading body bytes to drop (the source ignored `Range`).
    pub skip: u64,
    /// Body bytes to read from the source.
    pub remaining: Option<u64>,
    /// The source's connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// What a response head means for the request ([`judge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Accept(Accepted),
    /// A continuation that fits: read `remaining` more body bytes.
    Continue {
        remaining: Option<u64>,
        keep_alive: bool,
    },
    /// An upstream's redirect, passed on to pacman.
    Redirect(String),
    /// A whole file of this length sent to a range past its end: 416.
    Unsatisfiable(u64),
    Fail(Failure),
}

/// Judges a source's response head against what was asked of it.
pub fn judge(head: &ResponseHead, asked: &Asked) -> Judgement {
    if head.framing == Framing::Chunked {
        return Judgement::Fail(Failure::Chunked);
    }
    let length = body_length(head.framing);
    // The size of the whole file as the head says it, against the database's.
    if let (Some(want), false, 200 | 206) = (asked.file_size, asked.head_only, head.code) {
        let whole = match (head.code, head.content_range) {
            (206, Some(cr)) => cr.complete_len,
            (200, _) => length,
            _ => None,
        };
        if let Some(got) = whole.filter(|&n| n != want) {
            return Judgement::Fail(Failure::WrongSize(got));
        }
    }
    if asked.continuation {
        // A continuation must be exactly the rest of the span, of a file of the same length
        // (else its bytes belong to another file, spliced onto what pacman has).
        let fits = match (head.code, head.content_range, asked.rest) {
            (206, Some(cr), Some(rest)) => {
                cr.range.start == rest.start
                    && cr.range.end + 1 == rest.end
                    && match (cr.complete_len, asked.complete) {
                        (Some(theirs), Some(ours)) => theirs == ours,
                        _ => true,
                    }
            }
            _ => false,
        };
        if !fits {
            return Judgement::Fail(Failure::Continuation(head.code));
        }
        return Judgement::Continue {
            remaining: length,
            keep_alive: head.keep_alive && length.is_some(),
        };
    }
    match head.code {
        200 | 206 | 304 | 416 => {}
        301 | 302 | 303 | 307 | 308 if !asked.from_peer && head.location.is_some() => {
            return Judgement::Redirect(head.location.clone().unwrap_or_default());
        }
        404 | 410 => return Judgement::Fail(Failure::NotFound(head.code)),
        code => return Judgement::Fail(Failure::Status(code)),
    }
    // Accepted: what pacman gets is what this source said, except that a
    // whole file sent to a ranged request is cut to the range here (pacman
    // can't resume from a 200).
    let mut code = head.code;
    let mut content_range = head.content_range;
    let mut framing = head.framing;
    let mut skip = 0;
    if let (200, Some(asked_range), Framing::Length(n), false) =
        (code, asked.range, head.framing, asked.head_only)
    {
        match range::evaluate(Some(asked_range), n) {
            RangeRequest::Whole => {}
            RangeRequest::Part(r) => {
                code = 206;
                content_range = Some(ContentRange {
                    range: r,
                    complete_len: Some(n),
                });
                framing = Framing::Length(r.len());
                skip = r.start;
            }
            RangeRequest::Unsatisfiable => return Judgement::Unsatisfiable(n),
        }
    }
    let mut span = match (code, content_range, length) {
        (206, Some(ContentRange { range, .. }), _) => Some(Span {
            start: range.start,
            end: range.end + 1,
        }),
        (200, _, Some(n)) => Some(Span { start: 0, end: n }),
        _ => None,
    };
    if asked.head_only || head.code == 304 || head.code == 416 {
        span = None;
    }
    // Read up to the end of what pacman gets; only a source read to its end
    // may carry another request.
    let remaining = match (framing, length) {
        (Framing::Length(n), Some(_)) => Some(skip + n),
        _ => length,
    };
    Judgement::Accept(Accepted {
        code,
        content_range,
        framing,
        length,
        span,
        skip,
        remaining,
        keep_alive: head.keep_alive && length.is_some() && remaining == length,
    })
}

/// Whether an answer that is not taken (an error, a redirect) leaves its
/// connection usable: it allows another request and all of its body is among
/// the `leftover` bytes read with the head.
pub fn reusable_after(head: &ResponseHead, leftover: usize) -> bool {
    head.keep_alive && body_length(head.framing) == Some(leftover as u64)
}

fn body_length(framing: Framing) -> Option<u64> {
    match framing {
        Framing::Length(n) => Some(n),
        Framing::Empty => Some(0),
        Framing::Chunked | Framing::UntilClose => None,
    }
}

/// The head pacman gets for an accepted answer (`head` is the source's).
pub fn write_pacman_head(
    out: &mut Vec<u8>,
    a: &Accepted,
    head: &ResponseHead,
    head_only: bool,
    keep_alive: bool,
) {
    let code = a.code;
    response::write_head_code(out, code);
    match a.framing {
        Framing::Length(n) => response::field(out, "Content-Length", n),
        Framing::Empty if head_only => {
            if let Some(n) = head.content_length.filter(|_| code != 304) {
                response::field(out, "Content-Length", n);
            }
        }
        Framing::Empty if code != 304 => response::field(out, "Content-Length", 0u64),
        _ => {}
    }
    if let (206, Some(cr)) = (code, a.content_range) {
        let complete = cr
            .complete_len
            .map_or_else(|| "*".to_owned(), |n| n.to_string());
        response::field(
            out,
            "Content-Range",
            format_args!("bytes {}-{}/{complete}", cr.range.start, cr.range.end),
        );
    }
    if let Some(lm) = &head.last_modified {
        if date::parse_unix(lm).is_some() {
            response::field(out, "Last-Modified", lm);
        }
    }
    response::field(out, "Accept-Ranges", "bytes");
    response::finish(out, keep_alive);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::range::ByteRange;
    use crate::http::request::Limits;
    use std::io::ErrorKind;

    fn head(text: &str, head_only: bool) -> ResponseHead {
        let text = text.replace('\n', "\r\n") + "\r\n";
        match response::parse_response(text.as_bytes(), &Limits::default(), head_only) {
            Ok(Some(h)) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    const GET: Asked = Asked {
        range: None,
        head_only: false,
        continuation: false,
        rest: None,
        from_peer: false,
        file_size: None,
        complete: None,
    };

    fn accepted(j: Judgement) -> Accepted {
        match j {
            Judgement::Accept(a) => a,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn a_size_unlike_the_databases_is_refused_before_pacman_sees_a_head() {
        let sized = Asked {
            file_size: Some(1000),
            from_peer: true,
            ..GET
        };
        let h = head("HTTP/1.1 200 OK\nContent-Length: 1000\n", false);
        assert!(matches!(judge(&h, &sized), Judgement::Accept(_)));
        let h = head("HTTP/1.1 200 OK\nContent-Length: 999\n", false);
        let failure = Failure::WrongSize(999);
        assert_eq!(judge(&h, &sized), Judgement::Fail(failure));
        assert!(failure.is_lie() && failure.penalizes(true));
        assert!(Failure::WrongHash.is_lie() && !Failure::Stalled.is_lie());
        // A range's total counts, on a first request and on a continuation.
        let h = head(
            "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-9/1001\nContent-Length: 10\n",
            false,
        );
        assert_eq!(judge(&h, &sized), Judgement::Fail(Failure::WrongSize(1001)));
        let continuation = Asked {
            continuation: true,
            rest: Some(Span {
                start: 500,
                end: 1000,
            }),
            ..sized
        };
        let h = head(
            "HTTP/1.1 206 Partial Content\nContent-Range: bytes 500-999/1001\nContent-Length: 500\n",
            false,
        );
        assert_eq!(
            judge(&h, &continuation),
            Judgement::Fail(Failure::WrongSize(1001))
        );
        let h = head(
            "HTTP/1.1 206 Partial Content\nContent-Range: bytes 500-999/1000\nContent-Length: 500\n",
            false,
        );
        assert!(matches!(
            judge(&h, &continuation),
            Judgement::Continue { .. }
        ));
        // HEAD, errors and a size the database does not know: not judged by size.
        let h = head("HTTP/1.1 200 OK\nContent-Length: 5\n", true);
        let head_only = Asked {
            head_only: true,
            ..sized
        };
        assert!(matches!(judge(&h, &head_only), Judgement::Accept(_)));
        let h = head("HTTP/1.1 404 Not Found\nContent-Length: 5\n", false);
        assert_eq!(judge(&h, &sized), Judgement::Fail(Failure::NotFound(404)));
        let h = head("HTTP/1.1 200 OK\nContent-Length: 5\n", false);
        assert!(matches!(judge(&h, &GET), Judgement::Accept(_)));
    }

    #[test]
    fn a_whole_file_is_streamed_and_its_connection_kept() {
        let h = head("HTTP/1.1 200 OK\nContent-Length: 1000\n", false);
        let a = accepted(judge(&h, &GET));
        assert_eq!(a.code, 200);
        assert_eq!(
            a.span,
            Some(Span {
                start: 0,
                end: 1000
            })
        );
        assert_eq!((a.remaining, a.skip, a.keep_alive), (Some(1000), 0, true));
        let h = head("HTTP/1.1 200 OK\nConnection: close\n", false);
        let a = accepted(judge(&h, &GET));
        assert_eq!((a.span, a.remaining, a.keep_alive), (None, None, false));
    }

    #[test]
    fn a_source_that_ignores_range_is_cut_to_the_range() {
        let h = head("HTTP/1.1 200 OK\nContent-Length: 1000\n", false);
        let asked = Asked {
            range: Some("bytes=100-"),
            ..GET
        };
        let a = accepted(judge(&h, &asked));
        assert_eq!(a.code, 206);
        assert_eq!(a.framing, Framing::Length(900));
        assert_eq!(a.skip, 100);
        assert_eq!(
            a.remaining,
            Some(1000),
            "read to the end of the source's body"
        );
        assert!(a.keep_alive);
        assert_eq!(
            a.span,
            Some(Span {
                start: 100,
                end: 1000
            })
        );
        let mut out = Vec::new();
        write_pacman_head(&mut out, &a, &h, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 206 "), "{text}");
        assert!(
            text.contains("Content-Range: bytes 100-999/1000\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 900\r\n"), "{text}");

        // A closed range leaves the rest of the body unread: not kept.
        let asked = Asked {
            range: Some("bytes=0-9"),
            ..GET
        };
        let a = accepted(judge(&h, &asked));
        assert_eq!((a.remaining, a.keep_alive), (Some(10), false));

        let asked = Asked {
            range: Some("bytes=5000-"),
            ..GET
        };
        assert_eq!(judge(&h, &asked), Judgement::Unsatisfiable(1000));
    }

    #[test]
    fn a_resume_asks_pacmans_range_and_a_continuation_the_rest() {
        let resume = Asked {
            range: Some("bytes=4096-"),
            ..GET
        };
        assert_eq!(resume.range_field().as_deref(), Some("bytes=4096-"));
        assert_eq!(GET.range_field(), None);
        // pacman asked 4096- of a 10,000-byte file and has had 1000 bytes of it.
        let continuation = Asked {
            continuation: true,
            rest: Some(Span {
                start: 4096 + 1000,
                end: 10_000,
            }),
            ..resume
        };
        assert_eq!(
            continuation.range_field().as_deref(),
            Some("bytes=5096-9999")
        );
        let no_end = Asked {
            rest: None,
            ..continuation
        };
        assert_eq!(no_end.range_field(), None);
    }

    #[test]
    fn a_continuation_must_be_exactly_the_rest() {
        let h = head(
            "HTTP/1.1 206 Partial\nContent-Length: 500\nContent-Range: bytes 500-999/1000\n",
            false,
        );
        let asked = Asked {
            continuation: true,
            rest: Some(Span {
                start: 500,
                end: 1000,
            }),
            ..GET
        };
        assert_eq!(
            judge(&h, &asked),
            Judgement::Continue {
                remaining: Some(500),
                keep_alive: true
            }
        );
        let asked = Asked {
            continuation: true,
            rest: Some(Span {
                start: 400,
                end: 1000,
            }),
            ..GET
        };
        assert_eq!(
            judge(&h, &asked),
            Judgement::Fail(Failure::Continuation(206))
        );
        let whole = head("HTTP/1.1 200 OK\nContent-Length: 1000\n", false);
        let j = judge(&whole, &asked);
        assert_eq!(j, Judgement::Fail(Failure::Continuation(200)));
        // The right range of a file of another length: the bytes of another file.
        let same_file = Asked {
            continuation: true,
            rest: Some(Span {
                start: 500,
                end: 1000,
            }),
            complete: Some(1000),
            ..GET
        };
        assert!(matches!(judge(&h, &same_file), Judgement::Continue { .. }));
        let other_file = head(
            "HTTP/1.1 206 Partial\nContent-Length: 500\nContent-Range: bytes 500-999/2000\n",
            false,
        );
        assert_eq!(
            judge(&other_file, &same_file),
            Judgement::Fail(Failure::Continuation(206))
        );
        // A length the first answer did not give, or this one does not: nothing to compare.
        let unknown = head(
            "HTTP/1.1 206 Partial\nContent-Length: 500\nContent-Range: bytes 500-999/*\n",
            false,
        );
        assert!(matches!(
            judge(&unknown, &same_file),
            Judgement::Continue { .. }
        ));
    }

    #[test]
    fn error_answers_fail_over_and_some_count_against_the_source() {
        let cases = [
            ("HTTP/1.1 404 Not Found\nContent-Length: 0\n", false, false),
            ("HTTP/1.1 410 Gone\nContent-Length: 0\n", false, false),
            ("HTTP/1.1 500 Boom\nContent-Length: 0\n", true, true),
            ("HTTP/1.1 403 Forbidden\nContent-Length: 0\n", false, true),
        ];
        for (text, upstream_penalized, peer_penalized) in cases {
            let h = head(text, false);
            let Judgement::Fail(f) = judge(&h, &GET) else {
                panic!("{text}");
            };
            assert_eq!(f.penalizes(false), upstream_penalized, "{text}");
            assert_eq!(f.penalizes(true), peer_penalized, "{text}");
            assert_eq!(f.to_string(), format!("answered {}", h.code));
            assert!(reusable_after(&h, 0));
            assert!(!reusable_after(&h, 1), "bytes past the answer");
        }
        let h = head("HTTP/1.1 404 Not Found\nContent-Length: 9\n", false);
        assert!(!reusable_after(&h, 5), "body not all here");
        assert!(reusable_after(&h, 9));
        let h = head("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", false);
        assert_eq!(judge(&h, &GET), Judgement::Fail(Failure::Chunked));
        assert!(!Failure::Chunked.penalizes(true));
        assert!(Failure::Stalled.penalizes(false));
        assert!(!Failure::Unreachable(ErrorKind::ConnectionRefused).penalizes(false));
        assert!(Failure::Unreachable(ErrorKind::ConnectionRefused).penalizes(true));
    }

    #[test]
    fn upstream_redirects_are_passed_on_but_not_a_peers() {
        let h = head(
            "HTTP/1.1 302 Found\nLocation: https://m.example/x\nContent-Length: 0\n",
            false,
        );
        assert_eq!(
            judge(&h, &GET),
            Judgement::Redirect("https://m.example/x".into())
        );
        let from_peer = Asked {
            from_peer: true,
            ..GET
        };
        assert_eq!(judge(&h, &from_peer), Judgement::Fail(Failure::Status(302)));
    }

    #[test]
    fn not_modified_and_head_answers_have_no_span() {
        let h = head(
            "HTTP/1.1 304 Not Modified\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\n",
            false,
        );
        let a = accepted(judge(&h, &GET));
        assert_eq!((a.span, a.remaining, a.keep_alive), (None, Some(0), true));
        let mut out = Vec::new();
        write_pacman_head(&mut out, &a, &h, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.contains("Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"));

        let h = head("HTTP/1.1 200 OK\nContent-Length: 1000\n", true);
        let asked = Asked {
            head_only: true,
            range: Some("bytes=10-"),
            ..GET
        };
        let a = accepted(judge(&h, &asked));
        assert_eq!((a.code, a.span, a.remaining), (200, None, Some(0)));
        let mut out = Vec::new();
        write_pacman_head(&mut out, &a, &h, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
    }

    #[test]
    fn a_partial_answer_spans_its_content_range() {
        let h = head(
            "HTTP/1.1 206 Partial\nContent-Length: 10\nContent-Range: bytes 10-19/*\n",
            false,
        );
        let a = accepted(judge(&h, &GET));
        assert_eq!(a.span, Some(Span { start: 10, end: 20 }));
        assert_eq!(
            a.content_range,
            Some(ContentRange {
                range: ByteRange { start: 10, end: 19 },
                complete_len: None
            })
        );
    }
}
