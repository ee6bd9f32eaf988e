//! HTTP/1.1 as flocon speaks it, without I/O.
//!
//! This module owns the pure pieces both servers (the peer file server and the
//! pacman-facing relay) and the outbound client share: request-head parsing with
//! limits, `Range` parsing, HTTP dates, percent-decoding, and response-head
//! writing and parsing. It never touches a socket or the clock: callers pass
//! bytes and times in and get decisions out, which is what the unit tests and the
//! fuzz targets drive.

pub mod date;
pub mod range;
pub mod request;
pub mod response;
pub mod url;

pub use range::{ByteRange, RangeRequest};
pub use request::{HeadError, Limits, Method, RequestHead};
pub use response::{Framing, ResponseHead, Status};

/// Appends `n` in decimal: what heads use instead of `format!`, which costs
/// more than the rest of a small answer's head.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Decodes `%XX` escapes once. `+` stays `+` (pacman puts file names in URLs as
/// they are, and `+` is common in package versions). Returns `None` for a
/// truncated or non-hex escape, or for a result that is not UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_is_done_once_and_keeps_plus() {
        let cases = [
            ("a+b-1:2.pkg.tar.zst", Some("a+b-1:2.pkg.tar.zst")),
            ("a%2Bb", Some("a+b")),
            ("%3a", Some(":")),
            ("%252e", Some("%2e")),
            ("%2F", Some("/")),
            ("%00", Some("\0")),
            ("%", None),
            ("%4", None),
            ("%zz", None),
            ("%ff", None),
        ];
        for (raw, want) in cases {
            assert_eq!(percent_decode(raw).as_deref(), want, "{raw}");
        }
    }
}
