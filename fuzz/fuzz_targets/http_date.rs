//! HTTP dates: `parse_unix` never panics on any text, and what it reads (and any time before
//! the year 10000, taken from the first 8 bytes) survives `format_unix` then `parse_unix`.
#![no_main]
use flocon::http::date;
use libfuzzer_sys::fuzz_target;

const YEAR_10000: u64 = 253_402_300_800;

fuzz_target!(|data: &[u8]| {
    if let Some(x) = date::parse_unix(&String::from_utf8_lossy(data)) {
        if x < YEAR_10000 {
            assert_eq!(date::parse_unix(&date::format_unix(x)), Some(x));
        }
    }
    if let Some(first) = data.first_chunk::<8>() {
        let x = u64::from_le_bytes(*first) % YEAR_10000;
        assert_eq!(date::parse_unix(&date::format_unix(x)), Some(x), "{x}");
    }
});
