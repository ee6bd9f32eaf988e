//! The tar walker on arbitrary bytes: the first byte picks a piece size, the rest is the
//! archive. Fed whole or in pieces it finds the same events and the same error; every call
//! consumes bytes or reports an event; a kept file is within its cap and wanted; each kept
//! `desc` goes through `parse_desc`.
#![no_main]
use flocon::sync_db::parse_desc;
use flocon::sync_db::tar::{TarError, TarEvent, TarLimits, TarWalker};
use libfuzzer_sys::fuzz_target;

const LIMITS: TarLimits = TarLimits { max_file: 4096 };

fn wants(path: &[u8]) -> bool {
    path.ends_with(b"/desc")
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    File(Vec<u8>, Vec<u8>),
    Oversize(Vec<u8>, u64),
    End,
}

fn walk(tar: &[u8], piece: usize) -> (Vec<Seen>, Option<TarError>, bool) {
    let mut walker = TarWalker::new(LIMITS, wants);
    let mut seen = Vec::new();
    for mut chunk in tar.chunks(piece) {
        while !chunk.is_empty() {
            let step = match walker.feed(chunk) {
                Ok(step) => step,
                Err(e) => return (seen, Some(e), walker.may_end()),
            };
            assert!(step.consumed <= chunk.len());
            assert!(step.consumed > 0 || step.event.is_some(), "no progress");
            match step.event {
                None => assert_eq!(step.consumed, chunk.len()),
                Some(TarEvent::File { path, data }) => {
                    assert!(data.len() <= LIMITS.max_file && wants(path));
                    let _ = parse_desc(data);
                    seen.push(Seen::File(path.to_vec(), data.to_vec()));
                }
                Some(TarEvent::Oversize { path, size }) => {
                    assert!(size > LIMITS.max_file as u64 && wants(path));
                    seen.push(Seen::Oversize(path.to_vec(), size));
                }
                Some(TarEvent::End) => seen.push(Seen::End),
            }
            chunk = &chunk[step.consumed..];
        }
    }
    let may_end = walker.may_end();
    (seen, None, may_end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, tar)) = data.split_first() else {
        return;
    };
    let whole = walk(tar, tar.len().max(1));
    let pieces = walk(tar, usize::from(pick) + 1);
    assert_eq!(whole, pieces);
    assert!(whole.0.iter().filter(|s| **s == Seen::End).count() <= 1);
});
