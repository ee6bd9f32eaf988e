//! The commands' side of the loopback port: one blocking `GET` to the daemon on this host,
//! with a bounded connect, a bounded wait for the answer and a bounded answer size. Used by
//! `flocon query`, `flocon status` and `flocon doctor` (separate processes, not the daemon:
//! blocking is fine here).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long connecting to the daemon may take (it is on loopback: a refusal is immediate).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the daemon may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
pub const MAX_ANSWER: u64 = 8 << 20;

/// `GET path` from the daemon on 127.0.0.1:`port`: the status code and the body.
pub fn get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer)?;
    split_answer(&answer)
}

/// The status code and body of a whole HTTP/1.x answer.
pub fn split_answer(answer: &[u8]) -> io::Result<(u16, String)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&answer[..end]);
    if !head.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = String::from_utf8_lossy(&answer[end + 4..]).into_owned();
    Ok((code, body))
}

/// One line for a daemon that did not answer.
pub fn no_daemon(port: u16, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused (is flocon running?)".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "no answer in time".to_owned(),
        _ => e.to_string(),
    };
    format!("no flocon daemon answers on 127.0.0.1:{port}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_split() {
        let (code, body) = split_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((code, body.as_str()), (200, "{}"));
        assert!(split_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(split_answer(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(split_answer(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
