//! `Range` against a length (the first 8 bytes, little endian; the rest is the header value),
//! and `Content-Range`: a Part lies inside the representation, a Content-Range is ordered.
#![no_main]
use flocon::http::range::{self, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, value)) = data.split_first_chunk::<8>() else { return };
    let (len, value) = (u64::from_le_bytes(*len), String::from_utf8_lossy(value));
    if let RangeRequest::Part(r) = range::evaluate(Some(&value), len) {
        assert!(r.start <= r.end && r.end < len, "{r:?} outside {len}");
        assert!(r.len() >= 1 && r.len() <= len);
    }
    if let Some(cr) = range::parse_content_range(&value) {
        assert!(cr.range.start <= cr.range.end);
        assert!(cr.complete_len.is_none_or(|n| cr.range.end < n));
        assert!(cr.range.len() >= 1); // must not overflow
    }
});
