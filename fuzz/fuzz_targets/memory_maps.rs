//! `/proc/self/smaps` and `/proc/self/status` text (src/memory/maps.rs): any text reads
//! without a panic, and what it allows to drop is only ever a readable, non-writable,
//! private file mapping that said `Anonymous: 0 kB`, with a non-empty range.
#![no_main]
use flocon::memory::maps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = maps::resident(&text);
    let dropped = maps::droppable(&text);
    for d in &dropped {
        assert!(d.start < d.end, "{d:?}");
        // Some line with that range is a header of a readable, non-writable, private
        // mapping of a path.
        let is_its_header = |l: &&str| {
            let mut words = l.split_ascii_whitespace();
            let range = words.next().and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            });
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            range == Some((d.start, d.end))
                && (perms == "r-xp" || perms == "r--p")
                && path.starts_with('/')
        };
        assert!(text.lines().any(|l| is_its_header(&l)), "{d:?}");
    }
    assert!(dropped.len() <= text.lines().count());
});
