//! Response heads: writing ours, and reading the ones peers and mirrors send.
//!
//! Owns status codes and reasons, the head writer both servers use, the small
//! error pages, and the response-head parser of the outbound client (with its
//! body framing). It does no I/O.

use std::fmt::Write as _;

use super::range::{ContentRange, parse_content_range, parse_u64};
use super::request::{HeadError, Limits, MAX_HEADERS};

/// The statuses flocon sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    PartialContent,
    Found,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    UriTooLong,
    RangeNotSatisfiable,
    HeaderFieldsTooLarge,
    InternalServerError,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::Found => 302,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::BadGateway => 502,
            Status::ServiceUnavailable => 503,
            Status::GatewayTimeout => 504,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::PartialContent => "Partial Content",
            Status::Found => "Found",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UriTooLong => "URI Too Long",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::BadGateway => "Bad Gateway",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::GatewayTimeout => "Gateway Timeout",
        }
    }
}

/// What follows the status line of every head.
const SERVER_FIELD: &str = concat!("\r\nServer: flocon/", env!("CARGO_PKG_VERSION"), "\r\n");

/// Starts a response head in `out`: the status line and the `Server` field.
/// Add fields with [`field`], then end it with [`finish`].
pub fn write_head(out: &mut Vec<u8>, status: Status) {
    status_line(out, status.code(), status.reason());
}

/// Heads are written piece by piece, not through `format!`: they are the
/// only per-request formatting of a small-file answer.
fn status_line(out: &mut Vec<u8>, code: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    super::push_decimal(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(SERVER_FIELD.as_bytes());
}

/// Like [`write_head`] for a status code relayed from another server.
pub fn write_head_code(out: &mut Vec<u8>, code: u16) {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    status_line(out, code, reason);
}

/// Appends the field `name: value`.
pub fn field(out: &mut Vec<u8>, name: &str, value: impl FieldValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value.put(out);
    out.extend_from_slice(b"\r\n");
}

/// A field value [`field`] can append: text, a number, or `format_args!`.
pub trait FieldValue {
    fn put(&self, out: &mut Vec<u8>);
}

impl FieldValue for &str {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl FieldValue for &String {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl FieldValue for u64 {
    fn put(&self, out: &mut Vec<u8>) {
        super::push_decimal(out, *self);
    }
}

impl FieldValue for usize {
    fn put(&self, out: &mut Vec<u8>) {
        (*self as u64).put(out);
    }
}

impl FieldValue for super::date::Imf {
    fn put(&self, out: &mut Vec<u8>) {
        super::date::write_unix(out, self.0);
    }
}

impl FieldValue for std::fmt::Arguments<'_> {
    fn put(&self, out: &mut Vec<u8>) {
        let _ = Text(out).write_fmt(*self);
    }
}

/// Ends the head, saying whether the connection stays open.
pub fn finish(out: &mut Vec<u8>, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete short error answer: head and a one-line plain-text body (no
/// body for HEAD requests).
pub fn error_page(out: &mut Vec<u8>, status: Status, keep_alive: bool, with_body: bool) {
    error_page_at(out, status, keep_alive, with_body, None);
}

/// [`error_page`] with a `Date` field when `date` (Unix seconds) is given: what
/// `flocon doctor` reads a peer's clock from.
pub fn error_page_at(
    out: &mut Vec<u8>,
    status: Status,
    keep_alive: bool,
    with_body: bool,
    date: Option<u64>,
) {
    let body_len = status.reason().len() + 5;
    write_head(out, status);
    if let Some(secs) = date {
        field(out, "Date", crate::http::date::Imf(secs));
    }
    field(out, "Content-Type", "text/plain");
    field(out, "Content-Length", body_len);
    if status == Status::MethodNotAllowed {
        field(out, "Allow", "GET, HEAD");
    }
    finish(out, keep_alive);
    if with_body {
        let _ = writeln!(Text(out), "{} {}", status.code(), status.reason());
    }
}

/// `fmt::Write` over a byte vector.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

/// What the outbound client needs of a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub code: u16,
    pub framing: Framing,
    /// The `Content-Length` field as sent (for a HEAD answer it describes
    /// the body a GET would get).
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub last_modified: Option<String>,
    pub location: Option<String>,
    pub keep_alive: bool,
    /// Bytes the head took.
    pub len: usize,
}

/// Parses a response head (of a response to a request with `method_was_head`
/// telling whether the body is absent). `Ok(None)`: not complete yet.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    method_was_head: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS);
    let mut resp = httparse::Response::new(&mut fields[..max_headers]);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > limits.max_head {
        return Err(HeadError::TooLarge);
    }
    let code = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let mut head = ResponseHead {
        code,
        framing: Framing::UntilClose,
        content_length: None,
        content_range: None,
        last_modified: None,
        location: None,
        keep_alive: minor >= 1,
        len,
    };
    let mut length = None;
    let mut chunked = false;
    for f in resp.headers.iter() {
        let value = std::str::from_utf8(f.value)
            .map_err(|_| HeadError::Malformed)?
            .trim();
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_u64(value).ok_or(HeadError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(HeadError::Malformed);
            }
        } else if name.eq_ignore_ascii_case("content-range") {
            // Only a 206 must carry a usable one (a 416 says `bytes */len`).
            head.content_range = parse_content_range(value);
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("location") {
            head.location = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                if token.trim().eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.trim().eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    head.keep_alive = true;
                }
            }
        }
    }
    head.content_length = length;
    head.framing = if method_was_head || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        head.keep_alive = false;
        Framing::UntilClose
    };
    if code == 206 {
        let Some(cr) = head.content_range else {
            return Err(HeadError::Malformed);
        };
        if head.framing != Framing::Empty && head.framing != Framing::Length(cr.range.len()) {
            return Err(HeadError::Malformed);
        }
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_writer() {
        let mut out = Vec::new();
        write_head(&mut out, Status::PartialContent);
        field(&mut out, "Content-Range", "bytes 0-1/2");
        finish(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 206 Partial Content\r\nServer: flocon/"));
        assert!(text.ends_with("Content-Range: bytes 0-1/2\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn field_values_of_every_kind() {
        let mut out = Vec::new();
        write_head_code(&mut out, 304);
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            field(&mut out, "N", n);
        }
        field(&mut out, "U", 12usize);
        field(&mut out, "S", &String::from("text"));
        field(&mut out, "A", format_args!("bytes {}-{}/{}", 1, 2, "*"));
        field(&mut out, "D", super::super::date::Imf(784_111_777));
        let text = String::from_utf8(out).unwrap();
        let fields: Vec<&str> = text.split("\r\n").skip(2).collect();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\nServer: flocon/"));
        assert_eq!(
            fields,
            [
                "N: 0",
                "N: 7",
                "N: 10",
                "N: 4096",
                "N: 18446744073709551615",
                "U: 12",
                "S: text",
                "A: bytes 1-2/*",
                "D: Sun, 06 Nov 1994 08:49:37 GMT",
                "",
            ]
        );
    }

    #[test]
    fn error_pages_have_length_matching_body() {
        for status in [
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::HeaderFieldsTooLarge,
        ] {
            let mut out = Vec::new();
            error_page(&mut out, status, true, true);
            let head = parse_response(&out, &Limits::default(), false)
                .unwrap()
                .unwrap();
            assert_eq!(head.code, status.code());
            assert_eq!(head.framing, Framing::Length((out.len() - head.len) as u64));
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text.contains("Allow: GET, HEAD"),
                status == Status::MethodNotAllowed
            );
        }
    }

    #[test]
    fn response_table() {
        let l = Limits::default();
        let p = |s: &str, head| parse_response(s.as_bytes(), &l, head);
        let h = p(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: x\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.code, h.framing, h.keep_alive),
            (200, Framing::Length(5), true)
        );
        assert_eq!(h.last_modified.as_deref(), Some("x"));
        let h = p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = p("HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = p(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = p(
            "HTTP/1.1 206 Partial\r\nContent-Range: bytes 2-4/10\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.content_range.unwrap().complete_len, Some(10));
        let h = p(
            "HTTP/1.1 302 Found\r\nLocation: https://m/x\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.location.as_deref(), Some("https://m/x"));
        assert_eq!(p("HTTP/1.1 200 OK\r\nContent-Len", false), Ok(None));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 206 OK\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 206 OK\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 3\r\n\r\n",
            // Found by the http_response fuzz target: used to overflow.
            "HTTP/1.1 206 OK\r\nContent-Range: bytes 0-18446744073709551615/*\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert_eq!(p(bad, false), Err(HeadError::Malformed), "{bad}");
        }
    }
}
