//! inotify event buffers (`cache_watch::parse_events`): never a panic, never an endless walk;
//! at most one change per 16-byte event header the bytes can hold, and every name reported
//! is one peers may fetch (never a `.part`, a hidden name or a path).
#![no_main]
use flocon::cache::check_servable;
use flocon::cache_watch::{CacheChange, parse_events};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    parse_events(data, &mut out);
    assert!(out.len() <= data.len() / 16 + 1, "{} changes from {} bytes", out.len(), data.len());
    for change in &out {
        if let CacheChange::Added(name) | CacheChange::Removed(name) = change {
            assert!(check_servable(name).is_ok(), "{name:?} reported");
        }
    }
});
