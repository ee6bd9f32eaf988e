//! `/proc/self/smaps` and `/proc/self/status` text (src/memory/maps.rs): any text reads
//! without a panic, and what it allows to drop is only ever a non-empty range whose header
//! line names a readable, non-writable, private mapping of a path, and whose lines before the
//! next header say `Anonymous: 0 kB` and `Swap: 0 kB` (no page of it was ever copied).
#![no_main]
use flocon::memory::maps;
use libfuzzer_sys::fuzz_target;

/// A header as smaps writes it: `start-end perms offset dev inode [path]`; its range, perms
/// and path.
fn header(line: &str) -> Option<((usize, usize), &str, &str)> {
    let mut words = line.split_ascii_whitespace();
    let (a, b) = words.next()?.split_once('-')?;
    let range = (
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    );
    let perms = words.next()?;
    let offset = words.next()?;
    let dev = words.next()?;
    let inode = words.next()?;
    if perms.len() != 4
        || u64::from_str_radix(offset, 16).is_err()
        || !dev.contains(':')
        || inode.parse::<u64>().is_err()
    {
        return None;
    }
    Some((range, perms, words.next().unwrap_or("")))
}

/// Whether the last `key` line of `block` says 0.
fn says_zero(block: &[&str], key: &str) -> bool {
    block
        .iter()
        .rev()
        .find_map(|l| {
            let mut words = l.split_ascii_whitespace();
            (words.next() == Some(key))
                .then(|| words.next().and_then(|v| v.parse::<u64>().ok()) == Some(0))
        })
        .unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = maps::resident(&text);
    let dropped = maps::droppable(&text);
    let lines: Vec<&str> = text.lines().collect();
    for d in &dropped {
        assert!(d.start < d.end, "{d:?}");
        let ok = lines.iter().enumerate().any(|(i, l)| {
            let Some((range, perms, path)) = header(l) else {
                return false;
            };
            let end = lines[i + 1..]
                .iter()
                .position(|l| header(l).is_some())
                .map_or(lines.len(), |n| i + 1 + n);
            let block = &lines[i + 1..end];
            range == (d.start, d.end)
                && (perms == "r-xp" || perms == "r--p")
                && path.starts_with('/')
                && says_zero(block, "Anonymous:")
                && says_zero(block, "Swap:")
        });
        assert!(
            ok,
            "{d:?} dropped without a read-only, never-copied mapping's lines"
        );
    }
    assert!(dropped.len() <= lines.len());
});
