//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream` for tests: send raw request
//! bytes, read whole responses (body by Content-Length, chunked, or until close), every read
//! and write bounded by a timeout. Deliberately independent of the daemon's own parser.
//!
//! It does not follow redirects, pool connections or speak TLS.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default bound for connecting and for a whole response.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// Headers in the order received, names as sent.
    pub header_list: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that can carry several requests (keep-alive or pipelined).
pub struct HttpConn {
    stream: TcpStream,
    /// Bytes read past the end of the previous response.
    buf: Vec<u8>,
    timeout: Duration,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        HttpConn::connect_timeout(addr, HTTP_TIMEOUT)
    }

    /// Connect within `timeout`; later reads and writes are bounded by it too.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        HttpConn::from_stream(stream, timeout)
    }

    /// Wrap an already connected stream (e.g. one made inside a lab namespace).
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<HttpConn> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
            timeout,
        })
    }

    /// The socket, for tests that read slowly, half-close or stop mid-body.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Send raw bytes as they are.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)?;
        self.stream.flush()
    }

    /// Read one full response. `head_request` must be true for a response to HEAD (it has
    /// no body whatever its Content-Length says).
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid(format!(
                    "response head longer than {MAX_HEAD} bytes"
                )));
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let mut resp = parse_head(&head)?;
        let no_body = head_request
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = self.read_chunked(deadline)?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
            while self.buf.len() < len {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "body shorter than Content-Length: got {} of {len} bytes",
                            self.buf.len()
                        ),
                    ));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill(deadline)? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Read just a response head, leaving any body bytes for [`HttpConn::read_body_bytes`].
    pub fn read_head(&mut self) -> io::Result<Response> {
        self.read_response(true)
    }

    /// Read up to `n` body bytes (fewer if the peer closes); for tests that stop mid-body.
    pub fn read_body_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            if self.fill(deadline)? == 0 {
                break;
            }
        }
        let take = n.min(self.buf.len());
        Ok(self.buf.drain(..take).collect())
    }

    fn read_chunked(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers up to the empty line.
                while !self.read_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
            }
            body.extend(self.buf.drain(..size));
            if self.buf.drain(..2).as_slice() != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF".to_string()));
            }
        }
    }

    fn read_line(&mut self, deadline: Instant) -> io::Result<String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long".to_string()));
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a line",
                ));
            }
        }
    }

    /// One read into the buffer; 0 at end of stream. Fails with `TimedOut` past `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no complete response within {:?} ({} bytes buffered)",
                    self.timeout,
                    self.buf.len()
                ),
            ));
        }
        self.stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no complete response within {:?} ({} bytes buffered)",
                            self.timeout,
                            self.buf.len()
                        ),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Build a GET request head for `path` with `Host`, the given headers and
/// `Connection: close` (unless the caller passes its own Connection header).
pub fn build_request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Send `raw` on a new connection and read one response (no body if `raw` is a HEAD request).
pub fn request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    request_timeout(addr, raw, HTTP_TIMEOUT)
}

pub fn request_timeout(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Response> {
    let mut conn = HttpConn::connect_timeout(addr, timeout)?;
    conn.send(raw)?;
    conn.read_response(raw.starts_with(b"HEAD "))
}

/// GET `path` from `addr`; panics (naming the request) on any I/O or protocol error.
#[track_caller]
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    match try_http_get(addr, path, headers) {
        Ok(r) => r,
        Err(e) => panic!("GET http://{addr}{path} failed: {e}"),
    }
}

/// GET that returns the error instead of panicking.
pub fn try_http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    request(
        addr,
        &build_request("GET", &addr.to_string(), path, headers),
    )
}

/// HEAD `path` from `addr`; panics on error.
#[track_caller]
pub fn http_head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let raw = build_request("HEAD", &addr.to_string(), path, headers);
    match request(addr, &raw) {
        Ok(r) => r,
        Err(e) => panic!("HEAD http://{addr}{path} failed: {e}"),
    }
}

fn parse_head(head: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    if !version.starts_with("HTTP/") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut header_list = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        let value = value.trim().to_string();
        header_list.push((name.to_string(), value.clone()));
        headers
            .entry(name.trim().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(Response {
        version,
        status,
        reason,
        headers,
        header_list,
        body: Vec::new(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
