//! `Range` request headers and `Content-Range` response headers, bytes only.
//!
//! Owns the arithmetic of byte ranges (RFC 9110 §14) against a known length;
//! it does not know where the bytes come from. Offsets are `u64` everywhere, so
//! files past 4 GiB work on 32-bit targets too.

/// An inclusive byte range inside a representation of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` header asks of a representation of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send it all with 200 (absent, malformed, or several
    /// ranges, which RFC 9110 lets a server ignore).
    Whole,
    /// One satisfiable range: 206 with `Content-Range`.
    Part(ByteRange),
    /// A well-formed range that lies outside: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates `Range: bytes=a-b`, `a-` or `-n` against `len`.
pub fn evaluate(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(value) = header else {
        return RangeRequest::Whole;
    };
    let Some(spec) = strip_prefix_ignore_case(value.trim(), "bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    match (parse_u64(first), parse_u64(last)) {
        // `-n`: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(ByteRange {
                    start: len.saturating_sub(n),
                    end: len - 1,
                })
            }
        }
        // `a-`: from a to the end.
        (Some(a), None) if last.is_empty() => {
            if a >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(ByteRange {
                    start: a,
                    end: len - 1,
                })
            }
        }
        (Some(a), Some(b)) if a <= b => {
            if a >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(ByteRange {
                    start: a,
                    end: b.min(len - 1),
                })
            }
        }
        _ => RangeRequest::Whole,
    }
}

/// A parsed `Content-Range: bytes a-b/len` (len may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub range: ByteRange,
    pub complete_len: Option<u64>,
}

/// Parses a `Content-Range` response header of a 206. `None` when malformed.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = strip_prefix_ignore_case(value.trim(), "bytes ")?.trim();
    let (range, complete) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (start, end) = (parse_u64(a)?, parse_u64(b)?);
    // No representation holds 2^64 bytes: `end + 1` must fit (found by the
    // `range` fuzz target).
    if start > end || end == u64::MAX {
        return None;
    }
    let complete_len = match complete {
        "*" => None,
        n => {
            let n = parse_u64(n)?;
            if end >= n {
                return None;
            }
            Some(n)
        }
    };
    Some(ContentRange {
        range: ByteRange { start, end },
        complete_len,
    })
}

/// Digits only (no sign, no spaces, no overflow).
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `s` without `prefix`, compared ignoring ASCII case.
pub(crate) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        Part(ByteRange { start, end })
    }

    #[test]
    fn range_table() {
        let cases = [
            (None, 10, Whole),
            (Some("bytes=0-9"), 10, part(0, 9)),
            (Some("bytes=0-99"), 10, part(0, 9)),
            (Some("bytes=5-"), 10, part(5, 9)),
            (Some("bytes=9-"), 10, part(9, 9)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-3"), 10, part(7, 9)),
            (Some("bytes=-30"), 10, part(0, 9)),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-1"), 0, Unsatisfiable),
            (Some("BYTES=1-2"), 10, part(1, 2)),
            (Some("bytes= 1 - 2 "), 10, part(1, 2)),
            (Some("bytes=5-4"), 10, Whole),
            (Some("bytes=0-1,3-4"), 10, Whole),
            (Some("bytes=-"), 10, Whole),
            (Some("bytes=a-b"), 10, Whole),
            (Some("bytes=+1-2"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=99999999999999999999999-"), 10, Whole),
            (
                Some("bytes=4294967296-"),
                5_000_000_000,
                part(4_294_967_296, 4_999_999_999),
            ),
            (Some("bytes=18446744073709551615-"), u64::MAX, Unsatisfiable),
            (
                Some("bytes=0-18446744073709551615"),
                u64::MAX,
                part(0, u64::MAX - 1),
            ),
        ];
        for (header, len, want) in cases {
            assert_eq!(evaluate(header, len), want, "{header:?} of {len}");
        }
    }

    #[test]
    fn content_range_table() {
        let ok = |s, e, l| {
            Some(ContentRange {
                range: ByteRange { start: s, end: e },
                complete_len: l,
            })
        };
        let cases = [
            ("bytes 0-9/10", ok(0, 9, Some(10))),
            ("bytes 5-9/*", ok(5, 9, None)),
            ("bytes 5-10/10", None),
            ("bytes 9-5/10", None),
            ("bytes */10", None),
            ("bytes 0-9", None),
            ("bytes 0-18446744073709551615/*", None),
            ("bytes 0-18446744073709551614/*", ok(0, u64::MAX - 1, None)),
            ("0-9/10", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_content_range(value), want, "{value}");
        }
    }
}
