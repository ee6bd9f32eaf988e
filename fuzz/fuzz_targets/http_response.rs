//! Response heads from upstream mirrors and peers: never a panic, and the body framing of an
//! accepted head is consistent (a 206 has a Content-Range that matches its length).
#![no_main]
use flocon::http::{Framing, Limits, response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for method_was_head in [false, true] {
        let Ok(Some(h)) = response::parse_response(data, &limits, method_was_head) else {
            continue;
        };
        assert!(h.len <= data.len() && h.len <= limits.max_head);
        if method_was_head || h.code == 204 || h.code == 304 || (100..200).contains(&h.code) {
            assert_eq!(h.framing, Framing::Empty);
        }
        if h.framing == Framing::UntilClose {
            assert!(!h.keep_alive, "a body until close cannot keep the connection");
        }
        if let Some(cr) = h.content_range {
            assert!(cr.range.start <= cr.range.end);
            assert!(cr.complete_len.is_none_or(|n| cr.range.end < n));
        }
        if h.code == 206 {
            let cr = h.content_range.expect("206 accepted without a Content-Range");
            if let Framing::Length(n) = h.framing {
                assert_eq!(n, cr.range.len());
            }
        }
    }
});
