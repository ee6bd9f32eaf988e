//! The command line (arguments split on NUL bytes): `parse_args` returns, and its error is
//! one line (control characters become spaces).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> =
        data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if let Err(e) = flocon::config::parse_args(&args) {
        assert!(!e.message().contains(char::is_control), "{e:?}");
    }
});
