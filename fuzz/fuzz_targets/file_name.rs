//! File names: `classify` keeps its promise (an accepted name has no `/`, no `..`, no NUL or
//! control character, no leading `.`, no `.part` end), also for names decoded from a peer
//! request target; `percent_decode` never panics and never grows the text.
#![no_main]
use flocon::{cache, http, serve};
use libfuzzer_sys::fuzz_target;

fn check(name: &str) {
    if cache::classify(name).is_ok() {
        assert!(!name.contains('/') && !name.contains(".."), "{name:?}");
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert!(!name.starts_with('.') && !name.ends_with(".part"), "{name:?}");
        assert!(!name.is_empty() && name.len() <= cache::MAX_NAME, "{name:?}");
    }
    if cache::check_servable(name).is_ok() {
        assert_ne!(cache::classify(name), Ok(cache::FileKind::Database), "{name:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
    if let Some(decoded) = http::percent_decode(&text) {
        assert!(decoded.len() <= text.len());
    }
    if let Ok(name) = serve::request_file_name(&text) {
        check(&name);
    }
});
