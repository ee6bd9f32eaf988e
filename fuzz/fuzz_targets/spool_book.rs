//! The spool's bookkeeping (`flocon::spool::SpoolBook`) as a state machine: fetches begun,
//! bytes written, verdicts, failures, dropped writers, followers taken and dropped, waits,
//! files landing in the cache and clock steps, with a fake clock. Checked after every step:
//! nothing panics; a follower never may read past what was written, and the last byte of a
//! file in flight only after its verdict; the spool never holds more than its cap; followers
//! stay within their bound; a file removed is gone for its followers.
#![no_main]
use std::time::{Duration, Instant};

use flocon::discovery::wire::Expected;
use flocon::spool::{Follow, Limits, Readable, SpoolBook, Writing};
use flocon::sync_db::Sha256;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["a-1-1-any.pkg.tar.zst", "b-1-1-any.pkg.tar.zst", "c-1-1-any.pkg.tar.zst"];

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let limits = Limits {
        max_bytes: 1000,
        free_floor: 100,
        keep: Duration::from_secs(10),
        max_followers: 3,
    };
    let mut book = SpoolBook::new(limits);
    let mut writers: Vec<(Writing, u64, u64)> = Vec::new(); // (writer, written, size)
    let mut follows: Vec<Follow> = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let name = NAMES[usize::from(arg) % 3];
        match op % 10 {
            0 => {
                let size = u64::from(bytes.next().unwrap_or(0)) * 5 + 1;
                let free = u64::from(arg) * 10;
                let expected = Expected { size, sha256: Sha256([arg & 1; 32]) };
                if let Ok(w) = book.begin(name, expected, free, now) {
                    assert!(free >= size + limits.free_floor);
                    writers.push((w, 0, size));
                }
            }
            1 => {
                if let Some((w, written, size)) = writers.get_mut(usize::from(arg) % 4) {
                    let n = u64::from(bytes.next().unwrap_or(0)).min(*size - *written);
                    *written += n;
                    book.wrote(w.id, n);
                }
            }
            2 => {
                if !writers.is_empty() {
                    let (w, _, _) = writers.remove(usize::from(arg) % writers.len());
                    book.finish(w.id, arg & 1 == 0, now);
                }
            }
            3 => {
                if !writers.is_empty() {
                    let (w, _, _) = writers.remove(usize::from(arg) % writers.len());
                    if arg & 1 == 0 {
                        book.fail(w.id);
                    } // else dropped: reaped below
                }
            }
            4 => {
                if let Ok(f) = book.follow(name) {
                    follows.push(f);
                }
            }
            5 => {
                if !follows.is_empty() {
                    follows.remove(usize::from(arg) % follows.len());
                }
            }
            6 => {
                if let Some(f) = follows.get(usize::from(arg) % 4) {
                    book.wait(f.id, (usize::from(arg), 0));
                }
            }
            7 => {
                let expected = Expected { size: u64::from(arg), sha256: Sha256([arg & 1; 32]) };
                book.in_cache(name, expected);
            }
            8 => now += Duration::from_secs(u64::from(arg) / 16),
            _ => book.served(u64::from(arg)),
        }
        book.reap();
        book.handle_timeout(now);
        assert!(book.used() <= limits.max_bytes, "the spool holds more than its cap");
        for (w, written, size) in &writers {
            // A writer still listed: what a follower may read is what was written, less the last byte.
            if let Readable::UpTo(n) = book.readable(w.id) {
                assert!(n <= *written && n < *size, "readable past the bytes written");
            }
        }
        for f in &follows {
            if let Readable::UpTo(n) = book.readable(f.id) {
                assert!(n <= f.size);
            }
        }
        for s in book.status(now) {
            assert!(s.followers <= limits.max_followers);
            assert!(s.written <= s.size);
        }
        while book.poll_wake().is_some() {}
        while let Some(removed) = book.poll_removed() {
            assert_eq!(book.readable(removed.id), Readable::Gone, "removed but readable");
        }
        let _ = book.poll_timeout();
    }
});
