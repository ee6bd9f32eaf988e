//! The JSON reader of `flocon status` and `flocon doctor` (`status::json::parse`, reading
//! whatever answers on the loopback port) never panics; what it reads is given to the
//! status text and the doctor's peer list, which never panic either; and any string, written
//! by the daemon's JSON writer, reads back the same.
#![no_main]
use flocon::status::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(value) = json::parse(&text) {
        let _ = flocon::status::show::status(&value);
        let _ = flocon::doctor::peers_of(&value);
        let _ = flocon::doctor::daemon_checks(&value);
    }
    let mut out = String::new();
    json::escape_into(&mut out, &text);
    assert_eq!(json::parse(&out), Ok(json::Value::String(text.into_owned())));
});
