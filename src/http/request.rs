//! Request heads as both flocon servers read them: `httparse` under hard limits.
//!
//! Owns the decision "is this head complete, acceptable, and what does it ask
//! for"; it does not look at the path's meaning (that is the servers' job) and
//! never reads a body (flocon's servers accept none).

use super::Status;

/// Bounds on one request head. A head past them is refused with the status of
/// [`HeadError::status`], never buffered further.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes from the first byte of the request line to the blank line, included.
    pub max_head: usize,
    /// Header fields; at most [`MAX_HEADERS`].
    pub max_headers: usize,
    /// Bytes of the request target.
    pub max_target: usize,
}

/// The hard ceiling for [`Limits::max_headers`] (the parse array's size).
pub const MAX_HEADERS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_headers: 32,
            max_target: 2048,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Anything else: answered 405.
    Other,
}

/// What a complete, acceptable request head says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The request target exactly as sent (not decoded).
    pub target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub range: Option<String>,
    pub if_modified_since: Option<String>,
    pub user_agent: Option<String>,
    /// The `Host` field, if any.
    pub host: Option<String>,
    /// The `Authorization` field, if any (peer requests with a shared secret).
    pub authorization: Option<String>,
    /// Whether the client lets the connection stay open after the answer.
    pub keep_alive: bool,
    /// The head announced a body (`Content-Length` > 0 or `Transfer-Encoding`).
    pub has_body: bool,
    /// Bytes the head took in the buffer; what follows is the next request.
    pub len: usize,
}

/// Why a head was refused. Each maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Head larger than `max_head` (431).
    TooLarge,
    /// More header fields than `max_headers` (431).
    TooManyHeaders,
    /// Request target longer than `max_target` (414).
    TargetTooLong,
    /// Not HTTP/1.x syntax (400).
    Malformed,
}

impl HeadError {
    pub fn status(self) -> Status {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => Status::HeaderFieldsTooLarge,
            HeadError::TargetTooLong => Status::UriTooLong,
            HeadError::Malformed => Status::BadRequest,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::TooLarge => "HTTP head too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::TargetTooLong => "request target too long",
            HeadError::Malformed => "malformed HTTP head",
        })
    }
}

/// Parses the head at the start of `buf`. `Ok(None)` means "not complete yet":
/// call again when more bytes arrived (not before: a partial head is not
/// re-parsed for nothing).
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut fields[..max_headers]);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // Still incomplete: refuse as soon as the limits are passed.
            let line_end = buf.windows(2).position(|w| w == b"\r\n");
            if line_end.is_none() && buf.len() > limits.max_target + 16 {
                return Err(HeadError::TargetTooLong);
            }
            if buf.len() >= limits.max_head {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > limits.max_head {
        return Err(HeadError::TooLarge);
    }
    let target = req.path.unwrap_or("");
    if target.len() > limits.max_target {
        return Err(HeadError::TargetTooLong);
    }
    let minor_version = req.version.unwrap_or(1);
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let mut head = RequestHead {
        method,
        target: target.to_owned(),
        minor_version,
        range: None,
        if_modified_since: None,
        user_agent: None,
        host: None,
        authorization: None,
        keep_alive: minor_version >= 1,
        has_body: false,
        len,
    };
    for field in req.headers.iter() {
        let value = || String::from_utf8_lossy(field.value).trim().to_owned();
        let name = field.name;
        if name.eq_ignore_ascii_case("range") {
            head.range = Some(value());
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            head.if_modified_since = Some(value());
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = Some(value());
        } else if name.eq_ignore_ascii_case("host") {
            head.host = Some(value());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value().split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.has_body = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            match value().parse::<u64>() {
                Ok(0) => {}
                Ok(_) => head.has_body = true,
                Err(_) => return Err(HeadError::Malformed),
            }
        }
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn pacman_request_is_parsed() {
        let raw = "GET /core/os/x86_64/zstd-1.5.6-1-x86_64.pkg.tar.zst HTTP/1.1\r\n\
                   Host: localhost:19433\r\n\
                   User-Agent: pacman/6.0.2 (Linux x86_64) libalpm/13.0.2\r\n\
                   Accept: */*\r\n\
                   Range: bytes=100-\r\n\r\nGET /next";
        let head = parse_str(raw).unwrap().unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(
            head.target,
            "/core/os/x86_64/zstd-1.5.6-1-x86_64.pkg.tar.zst"
        );
        assert_eq!(head.range.as_deref(), Some("bytes=100-"));
        assert!(head.keep_alive);
        assert!(!head.has_body);
        assert_eq!(&raw[head.len..], "GET /next");
    }

    #[test]
    fn table() {
        use HeadError::*;
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(3000));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(40));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
        type Want = Result<Option<(Method, bool, bool)>, HeadError>;
        let cases: Vec<(&str, Want)> = vec![
            (
                "GET / HTTP/1.1\r\n\r\n",
                Ok(Some((Method::Get, true, false))),
            ),
            (
                "HEAD /x HTTP/1.0\r\n\r\n",
                Ok(Some((Method::Head, false, false))),
            ),
            (
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                Ok(Some((Method::Get, true, false))),
            ),
            (
                "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n",
                Ok(Some((Method::Get, false, false))),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
                Ok(Some((Method::Other, true, true))),
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Ok(Some((Method::Get, true, false))),
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Some((Method::Get, true, true))),
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                Err(Malformed),
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\n", Ok(None)),
            ("GET / HTTP/1.1\r", Ok(None)),
            ("", Ok(None)),
            ("GET / HTTP/2.0\r\n\r\n", Err(Malformed)),
            ("\x00\x01\x02\r\n\r\n", Err(Malformed)),
            ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", Err(Malformed)),
            (&long_target, Err(TargetTooLong)),
            (&long_target[..2500], Err(TargetTooLong)),
            (&many, Err(TooManyHeaders)),
            (&big, Err(TooLarge)),
            (&big[..8500], Err(TooLarge)),
        ];
        for (raw, want) in cases {
            let got = parse_str(raw).map(|o| o.map(|h| (h.method, h.keep_alive, h.has_body)));
            assert_eq!(got, want, "{:?}", &raw[..raw.len().min(60)]);
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(HeadError::TooLarge.status().code(), 431);
        assert_eq!(HeadError::TooManyHeaders.status().code(), 431);
        assert_eq!(HeadError::TargetTooLong.status().code(), 414);
        assert_eq!(HeadError::Malformed.status().code(), 400);
    }

    #[test]
    fn every_prefix_of_a_head_is_partial_never_an_error() {
        let raw = b"GET /a-1-1-any.pkg.tar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(
                parse(&raw[..end], &Limits::default()),
                Ok(None),
                "prefix {end}"
            );
        }
        assert!(parse(raw, &Limits::default()).unwrap().is_some());
    }
}
