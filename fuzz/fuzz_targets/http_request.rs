//! Request heads: whatever the bytes, `parse` returns, and a complete head lies inside the
//! buffer and inside the limits. Run twice: with the daemon's limits and with tiny ones.
#![no_main]
use flocon::http::{Limits, request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tiny = Limits { max_head: 256, max_headers: 4, max_target: 64 };
    for limits in [Limits::default(), tiny] {
        if let Ok(Some(h)) = request::parse(data, &limits) {
            assert!(h.len <= data.len() && h.len <= limits.max_head);
            assert!(h.target.len() <= limits.max_target);
            // The head is complete within its own bytes: what follows does not change it.
            assert_eq!(request::parse(&data[..h.len], &limits), Ok(Some(h)));
        }
    }
});
