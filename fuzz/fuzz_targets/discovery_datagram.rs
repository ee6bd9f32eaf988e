//! Discovery datagrams: `parse` is total, and an accepted datagram is canonical: `emit`
//! writes back the very same bytes, which parse to the same message.
#![no_main]
use flocon::discovery::{emit, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse(data) else { return };
    let mut out = Vec::new();
    emit(&msg, &mut out);
    assert_eq!(out, data);
    assert_eq!(parse(&out), Ok(msg));
});
