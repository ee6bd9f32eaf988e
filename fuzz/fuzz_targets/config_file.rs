//! flocon's own config file: `parse_config_file` returns, and its error is one line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = flocon::config::parse_config_file("fuzz.conf", &text) {
        assert!(!e.message().contains(char::is_control), "{e:?}");
    }
});
