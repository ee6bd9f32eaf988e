//! The spool's bookkeeping, pure: which files are being fetched from upstream
//! (or were, and are kept a while), how many of their bytes are written, whether
//! the finished ones matched their sync database, who follows them, when each is
//! removed, and whether a new one fits.
//!
//! Owns the rules (one entry per file name; the last byte of a file in flight is
//! never readable before its verdict; a file whose fetch failed is gone at once;
//! a size cap and a free-space floor; a bounded number of followers per file;
//! finished files kept for a bounded time, or until pacman's cache holds the same
//! file). It does no I/O and never reads the clock: the shell ([`super::Spool`])
//! creates, writes and removes the files, measures the free space, and hands in
//! `now`. Connections waiting for bytes are named by an opaque [`Waiter`] that
//! the loop gets back from [`SpoolBook::poll_wake`] once bytes arrive.

use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::discovery::wire::Expected;

/// A connection of the event loop (slot index, generation) waiting for spool bytes.
pub type Waiter = (usize, u32);

/// One spool file, for its whole life (never reused within a run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolId(pub u64);

/// Bounds of the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of all spool files together (by their expected sizes).
    pub max_bytes: u64,
    /// Free space the file system must keep after a new file is reserved.
    pub free_floor: u64,
    /// How long a finished, verified file stays shareable.
    pub keep: Duration,
    /// Peer connections reading one file at once.
    pub max_followers: usize,
}

/// Default cap on the spool: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default free-space floor: 512 MiB.
pub const DEFAULT_FREE_FLOOR: u64 = 512 << 20;
/// Default time a finished file stays shareable.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(3600);
/// Peer connections reading one spool file at once.
pub const DEFAULT_MAX_FOLLOWERS: usize = 16;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            free_floor: DEFAULT_FREE_FLOOR,
            keep: DEFAULT_KEEP,
            max_followers: DEFAULT_MAX_FOLLOWERS,
        }
    }
}

/// Why a file is not spooled (it still streams to pacman).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The same name is being spooled already.
    Busy,
    /// The file is larger than the whole spool may be.
    TooLarge { size: u64, max: u64 },
    /// The spool holds too much (after dropping finished files nobody reads).
    Full { size: u64, used: u64, max: u64 },
    /// The file system would keep less than the floor free.
    LowSpace { size: u64, free: u64, floor: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Refusal::Busy => write!(f, "the same file is being spooled already"),
            Refusal::TooLarge { size, max } => {
                write!(
                    f,
                    "{size} bytes is more than the spool's cap of {max} bytes"
                )
            }
            Refusal::Full { size, used, max } => write!(
                f,
                "the spool holds {used} of its {max} bytes, {size} more do not fit"
            ),
            Refusal::LowSpace { size, free, floor } => write!(
                f,
                "{free} bytes free, {size} more would leave less than the floor of {floor}"
            ),
        }
    }
}

/// What a discovery answer can say about a file in the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// Being fetched: this many bytes are here.
    Fetching(u64),
    /// Here whole, verified against the sync database.
    Complete,
}

/// Why a peer cannot read a spool file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowRefusal {
    NotHere,
    /// [`Limits::max_followers`] peers read it already.
    TooManyFollowers,
}

/// A peer connection's right to read one spool file; dropping it ends the follow.
#[derive(Debug)]
pub struct Follow {
    pub id: SpoolId,
    /// The file's full size (the sync database's).
    pub size: u64,
    _ticket: Rc<()>,
}

/// The fetch's right to write one spool file: dropping it before
/// [`SpoolBook::finish`] counts as a failed fetch ([`SpoolBook::reap`]).
#[derive(Debug)]
pub struct Writing {
    pub id: SpoolId,
    _ticket: Rc<()>,
}

/// How far a follower may read now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readable {
    /// Bytes `0..n` are written (and, for the whole file, verified).
    UpTo(u64),
    /// The fetch failed or the file was removed: the follower's connection ends.
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Bytes arrive from upstream.
    Writing,
    /// Whole and verified; shareable until `until`.
    Complete { until: Instant },
}

#[derive(Debug)]
struct Entry {
    id: SpoolId,
    name: String,
    expected: Expected,
    written: u64,
    phase: Phase,
    /// One count per [`Follow`] held.
    ticket: Rc<()>,
    waiters: Vec<Waiter>,
    started: Instant,
    /// The writer's [`Writing`] ticket: gone while writing means the fetch was dropped.
    writer: Weak<()>,
}

impl Entry {
    fn followers(&self) -> usize {
        Rc::strong_count(&self.ticket) - 1
    }

    fn readable(&self) -> u64 {
        match self.phase {
            // The last byte waits for the verdict, as on the relay's own path.
            Phase::Writing => self.written.min(self.expected.size.saturating_sub(1)),
            Phase::Complete { .. } => self.expected.size,
        }
    }
}

/// A spool file the shell must delete (and take out of the summary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub id: SpoolId,
    pub name: String,
    pub why: RemoveReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// The upstream fetch failed, was cut short, or its bytes were wrong.
    Failed,
    /// Kept for [`Limits::keep`] already.
    Expired,
    /// pacman's cache has the same file now.
    InCache,
    /// Room was needed for a new file.
    Evicted,
}

/// One file in the spool, for the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolStatus {
    pub name: String,
    pub written: u64,
    pub size: u64,
    pub complete: bool,
    pub followers: usize,
    pub secs: u64,
}

/// Totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Files spooled while fetched from upstream.
    pub files: u64,
    /// Of those, finished and verified.
    pub verified: u64,
    /// Of those, failed (fetch cut, wrong bytes).
    pub failed: u64,
    /// Files not spooled for lack of room.
    pub refused: u64,
    /// Bytes served from spool files to peers: bytes the LAN did not download.
    pub bytes_served: u64,
    /// Peer requests refused because a file had its most followers.
    pub followers_refused: u64,
}

/// The spool's bookkeeping (see the module doc).
#[derive(Debug)]
pub struct SpoolBook {
    limits: Limits,
    entries: Vec<Entry>,
    next_id: u64,
    wake: VecDeque<Waiter>,
    removed: VecDeque<Removed>,
    pub counters: SpoolCounters,
}

impl SpoolBook {
    pub fn new(limits: Limits) -> SpoolBook {
        SpoolBook {
            limits,
            entries: Vec::new(),
            next_id: 1,
            wake: VecDeque::new(),
            removed: VecDeque::new(),
            counters: SpoolCounters::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes reserved by the files in the spool (their full sizes).
    pub fn used(&self) -> u64 {
        self.entries.iter().map(|e| e.expected.size).sum()
    }

    fn index(&self, id: SpoolId) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    /// Reserves room for a file of `expected` content fetched from upstream now;
    /// `free` is what the file system has free. Finished files nobody reads are
    /// dropped, oldest first, when that makes room.
    pub fn begin(
        &mut self,
        name: &str,
        expected: Expected,
        free: u64,
        now: Instant,
    ) -> Result<Writing, Refusal> {
        if let Some(i) = self.entries.iter().position(|e| e.name == name) {
            let e = &self.entries[i];
            if e.phase == Phase::Writing || e.followers() > 0 {
                return Err(Refusal::Busy);
            }
            // A finished copy nobody reads (pacman asks again): the new fetch replaces it.
            self.remove_at(i, RemoveReason::Evicted);
        }
        let size = expected.size;
        let max = self.limits.max_bytes;
        let refused = if size > max {
            Some(Refusal::TooLarge { size, max })
        } else if free < size.saturating_add(self.limits.free_floor) {
            Some(Refusal::LowSpace {
                size,
                free,
                floor: self.limits.free_floor,
            })
        } else {
            while self.used() + size > max {
                let idle = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| {
                        matches!(e.phase, Phase::Complete { .. }) && e.followers() == 0
                    })
                    .min_by_key(|(_, e)| e.started)
                    .map(|(i, _)| i);
                match idle {
                    Some(i) => self.remove_at(i, RemoveReason::Evicted),
                    None => break,
                }
            }
            let used = self.used();
            (used + size > max).then_some(Refusal::Full { size, used, max })
        };
        if let Some(refusal) = refused {
            self.counters.refused += 1;
            return Err(refusal);
        }
        let id = SpoolId(self.next_id);
        self.next_id += 1;
        self.counters.files += 1;
        let ticket = Rc::new(());
        self.entries.push(Entry {
            id,
            name: name.to_owned(),
            expected,
            written: 0,
            phase: Phase::Writing,
            ticket: Rc::new(()),
            waiters: Vec::new(),
            started: now,
            writer: Rc::downgrade(&ticket),
        });
        Ok(Writing {
            id,
            _ticket: ticket,
        })
    }

    /// `n` more bytes are written to the file; its waiting followers are woken.
    pub fn wrote(&mut self, id: SpoolId, n: u64) {
        let Some(i) = self.index(id) else {
            return;
        };
        let e = &mut self.entries[i];
        if e.phase != Phase::Writing || n == 0 {
            return;
        }
        e.written = e.written.saturating_add(n).min(e.expected.size);
        self.wake.extend(e.waiters.drain(..));
    }

    /// The fetch ended: with every byte written and verified the file stays
    /// shareable for [`Limits::keep`]; otherwise it is removed at once.
    pub fn finish(&mut self, id: SpoolId, verified: bool, now: Instant) {
        let Some(i) = self.index(id) else {
            return;
        };
        let e = &mut self.entries[i];
        if e.phase != Phase::Writing {
            return;
        }
        if verified && e.written == e.expected.size {
            e.phase = Phase::Complete {
                until: now + self.limits.keep,
            };
            self.counters.verified += 1;
            self.wake.extend(e.waiters.drain(..));
        } else {
            self.fail(id);
        }
    }

    /// The fetch failed (or its bytes were wrong, or pacman left): the file is
    /// removed and its followers' connections end, so that they fail over.
    pub fn fail(&mut self, id: SpoolId) {
        if let Some(i) = self.index(id) {
            if self.entries[i].phase == Phase::Writing {
                self.counters.failed += 1;
            }
            self.remove_at(i, RemoveReason::Failed);
        }
    }

    fn remove_at(&mut self, i: usize, why: RemoveReason) {
        let mut e = self.entries.swap_remove(i);
        self.wake.extend(e.waiters.drain(..));
        self.removed.push_back(Removed {
            id: e.id,
            name: e.name,
            why,
        });
    }

    /// What a WHO_HAS for `name` (with the asker's expected content, if known)
    /// can be answered from the spool.
    pub fn holding(&self, name: &str, wanted: Option<Expected>) -> Option<Holding> {
        let e = self.entries.iter().find(|e| e.name == name)?;
        if wanted.is_some_and(|w| w != e.expected) {
            return None;
        }
        Some(match e.phase {
            Phase::Writing => Holding::Fetching(e.written),
            Phase::Complete { .. } => Holding::Complete,
        })
    }

    /// The content the spool file `name` is fetched as, if there is one.
    pub fn expected(&self, name: &str) -> Option<Expected> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.expected)
    }

    /// A peer asks for `name`: its right to read it, within the followers' bound.
    pub fn follow(&mut self, name: &str) -> Result<Follow, FollowRefusal> {
        let e = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or(FollowRefusal::NotHere)?;
        if e.followers() >= self.limits.max_followers {
            self.counters.followers_refused += 1;
            return Err(FollowRefusal::TooManyFollowers);
        }
        Ok(Follow {
            id: e.id,
            size: e.expected.size,
            _ticket: Rc::clone(&e.ticket),
        })
    }

    /// How far a follower of `id` may read now.
    pub fn readable(&self, id: SpoolId) -> Readable {
        match self.index(id) {
            Some(i) => Readable::UpTo(self.entries[i].readable()),
            None => Readable::Gone,
        }
    }

    /// `waiter` read everything readable: it is woken when more is (or the file goes).
    pub fn wait(&mut self, id: SpoolId, waiter: Waiter) {
        match self.index(id) {
            Some(i) => {
                let w = &mut self.entries[i].waiters;
                if !w.contains(&waiter) {
                    w.push(waiter);
                }
            }
            None => self.wake.push_back(waiter),
        }
    }

    /// `n` bytes of a spool file went to a peer.
    pub fn served(&mut self, n: u64) {
        self.counters.bytes_served += n;
    }

    /// pacman's cache holds `name` now, with this content: a finished spool file of
    /// the same content is not needed any more (one still being written stays, and one still
    /// read stays until its last reader is done: the next look removes it).
    pub fn in_cache(&mut self, name: &str, content: Expected) {
        if let Some(i) = self.entries.iter().position(|e| {
            e.name == name
                && e.expected == content
                && matches!(e.phase, Phase::Complete { .. })
                && e.followers() == 0
        }) {
            self.remove_at(i, RemoveReason::InCache);
        }
    }

    /// Fails every file whose writer was dropped without a verdict (pacman left,
    /// the transfer ended another way): cheap, run once per loop pass.
    pub fn reap(&mut self) {
        while let Some(e) = self
            .entries
            .iter()
            .find(|e| e.phase == Phase::Writing && e.writer.strong_count() == 0)
        {
            let id = e.id;
            self.fail(id);
        }
    }

    /// Removes finished files kept long enough (those still read wait for their
    /// followers to finish).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            match e.phase {
                Phase::Complete { until } if now >= until && e.followers() == 0 => {
                    self.remove_at(i, RemoveReason::Expired);
                }
                _ => i += 1,
            }
        }
    }

    /// When a finished file is due to go. One still read past its time is not a deadline (it
    /// would stay in the past and spin the loop): it goes at the first
    /// [`SpoolBook::handle_timeout`] after its last reader is done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.followers() == 0)
            .filter_map(|e| match e.phase {
                Phase::Complete { until } => Some(until),
                Phase::Writing => None,
            })
            .min()
    }

    /// The next connection to run: bytes arrived for it, or its file went.
    pub fn poll_wake(&mut self) -> Option<Waiter> {
        self.wake.pop_front()
    }

    /// The next spool file to delete.
    pub fn poll_removed(&mut self) -> Option<Removed> {
        self.removed.pop_front()
    }

    /// The names in the spool (each counts in the cache summary while here).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Whether a finished file is here.
    pub fn has_complete(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.phase, Phase::Complete { .. }))
    }

    /// Whether `name` is in the spool (for the cache summary).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// The files in the spool, for the status page.
    pub fn status(&self, now: Instant) -> Vec<SpoolStatus> {
        let mut list: Vec<SpoolStatus> = self
            .entries
            .iter()
            .map(|e| SpoolStatus {
                name: e.name.clone(),
                written: e.written,
                size: e.expected.size,
                complete: matches!(e.phase, Phase::Complete { .. }),
                followers: e.followers(),
                secs: now.saturating_duration_since(e.started).as_secs(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync_db::Sha256;

    fn content(size: u64, b: u8) -> Expected {
        Expected {
            size,
            sha256: Sha256([b; 32]),
        }
    }

    fn book(max_bytes: u64) -> SpoolBook {
        SpoolBook::new(Limits {
            max_bytes,
            free_floor: 100,
            keep: Duration::from_secs(60),
            max_followers: 2,
        })
    }

    const FREE: u64 = 1 << 40;

    #[test]
    fn bytes_are_readable_as_written_the_last_only_after_the_verdict() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let w = b.begin("a.pkg.tar.zst", content(10, 1), FREE, t0).unwrap();
        let id = w.id;
        assert_eq!(b.holding("a.pkg.tar.zst", None), Some(Holding::Fetching(0)));
        let f = b.follow("a.pkg.tar.zst").unwrap();
        assert_eq!((f.id, f.size), (id, 10));
        assert_eq!(b.readable(id), Readable::UpTo(0));
        b.wait(id, (3, 0));
        b.wait(id, (3, 0));
        assert_eq!(b.poll_wake(), None);
        b.wrote(id, 4);
        assert_eq!(b.poll_wake(), Some((3, 0)));
        assert_eq!(b.poll_wake(), None, "woken once");
        assert_eq!(b.readable(id), Readable::UpTo(4));
        b.wrote(id, 6);
        assert_eq!(b.readable(id), Readable::UpTo(9), "the last byte is held");
        assert_eq!(
            b.holding("a.pkg.tar.zst", None),
            Some(Holding::Fetching(10))
        );
        b.wait(id, (3, 0));
        b.finish(id, true, t0);
        assert_eq!(b.poll_wake(), Some((3, 0)));
        assert_eq!(b.readable(id), Readable::UpTo(10));
        assert_eq!(b.holding("a.pkg.tar.zst", None), Some(Holding::Complete));
        assert_eq!(b.counters.verified, 1);
    }

    #[test]
    fn a_question_for_other_content_is_not_answered() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let _w = b.begin("a", content(10, 1), FREE, t0).unwrap();
        assert_eq!(b.holding("a", Some(content(10, 2))), None);
        assert_eq!(b.holding("a", Some(content(11, 1))), None);
        assert_eq!(
            b.holding("a", Some(content(10, 1))),
            Some(Holding::Fetching(0))
        );
        assert_eq!(b.holding("b", None), None);
    }

    #[test]
    fn a_failed_or_unverified_fetch_is_gone_and_its_followers_woken() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let w = b.begin("a", content(10, 1), FREE, t0).unwrap();
        let id = w.id;
        let _f = b.follow("a").unwrap();
        b.wait(id, (1, 7));
        b.fail(id);
        assert_eq!(b.poll_wake(), Some((1, 7)));
        assert_eq!(b.readable(id), Readable::Gone);
        let r = b.poll_removed().unwrap();
        assert_eq!((r.id, r.why), (id, RemoveReason::Failed));
        assert!(!b.contains("a"));
        // Wrong bytes: written whole but not verified.
        let id = b.begin("a", content(10, 1), FREE, t0).unwrap().id;
        b.wrote(id, 10);
        b.finish(id, false, t0);
        assert_eq!(b.readable(id), Readable::Gone);
        // Short: verified can't be claimed for a file not written whole.
        let id = b.begin("a", content(10, 1), FREE, t0).unwrap().id;
        b.wrote(id, 9);
        b.finish(id, true, t0);
        assert_eq!(b.readable(id), Readable::Gone);
        assert_eq!(b.counters.failed, 3);
        // Waiting on a file already gone wakes at once.
        b.wait(id, (2, 2));
        assert_eq!(b.poll_wake(), Some((2, 2)));
    }

    #[test]
    fn followers_are_bounded_and_counted_by_their_tickets() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let _w = b.begin("a", content(10, 1), FREE, t0).unwrap();
        let f1 = b.follow("a").unwrap();
        let _f2 = b.follow("a").unwrap();
        assert_eq!(b.follow("a").unwrap_err(), FollowRefusal::TooManyFollowers);
        assert_eq!(b.status(t0)[0].followers, 2);
        drop(f1);
        assert!(b.follow("a").is_ok());
        assert_eq!(b.follow("b").unwrap_err(), FollowRefusal::NotHere);
        assert_eq!(b.counters.followers_refused, 1);
    }

    #[test]
    fn one_fetch_per_name() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let w = b.begin("a", content(10, 1), FREE, t0).unwrap();
        let id = w.id;
        assert_eq!(
            b.begin("a", content(10, 1), FREE, t0).unwrap_err(),
            Refusal::Busy
        );
        b.wrote(id, 10);
        b.finish(id, true, t0);
        // A finished copy read by nobody is replaced by a new fetch.
        let id2 = b.begin("a", content(10, 1), FREE, t0).unwrap().id;
        assert_ne!(id, id2);
        assert_eq!(b.poll_removed().unwrap().why, RemoveReason::Evicted);
    }

    #[test]
    fn the_cap_and_the_floor_refuse_and_finished_files_make_room() {
        let t0 = Instant::now();
        let mut b = book(100);
        assert_eq!(
            b.begin("big", content(101, 1), FREE, t0).unwrap_err(),
            Refusal::TooLarge {
                size: 101,
                max: 100
            }
        );
        assert_eq!(
            b.begin("x", content(50, 1), 149, t0).unwrap_err(),
            Refusal::LowSpace {
                size: 50,
                free: 149,
                floor: 100
            }
        );
        let a = b.begin("a", content(60, 1), FREE, t0).unwrap().id;
        assert_eq!(
            b.begin("b", content(50, 1), FREE, t0).unwrap_err(),
            Refusal::Full {
                size: 50,
                used: 60,
                max: 100
            }
        );
        b.wrote(a, 60);
        b.finish(a, true, t0);
        // Finished and read: kept.
        let f = b.follow("a").unwrap();
        assert!(b.begin("b", content(50, 1), FREE, t0).is_err());
        drop(f);
        // Finished and idle: dropped for the new file.
        let _b = b.begin("b", content(50, 1), FREE, t0).unwrap();
        assert_eq!(b.poll_removed().unwrap().why, RemoveReason::Evicted);
        assert_eq!(b.used(), 50);
        assert_eq!(b.counters.refused, 4);
    }

    #[test]
    fn finished_files_go_after_the_keep_time_or_when_in_the_cache() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let a = b.begin("a", content(10, 1), FREE, t0).unwrap().id;
        let c = b.begin("c", content(10, 3), FREE, t0).unwrap().id;
        assert_eq!(b.poll_timeout(), None, "nothing finished");
        for id in [a, c] {
            b.wrote(id, 10);
            b.finish(id, true, t0);
        }
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        // The cache got `c` with other bytes: kept; with the same bytes: gone.
        b.in_cache("c", content(10, 4));
        assert!(b.contains("c"));
        b.in_cache("c", content(10, 3));
        assert!(!b.contains("c"));
        assert_eq!(b.poll_removed().unwrap().why, RemoveReason::InCache);
        // A follower keeps it past its time until it is done, and its time is then no
        // deadline (one in the past would wake the loop at once, again and again).
        let f = b.follow("a").unwrap();
        b.handle_timeout(t0 + Duration::from_secs(61));
        assert!(b.contains("a"));
        assert_eq!(b.poll_timeout(), None);
        // Nor does the cache take it from its reader.
        b.in_cache("a", content(10, 1));
        assert!(b.contains("a"));
        drop(f);
        b.handle_timeout(t0 + Duration::from_secs(61));
        assert!(!b.contains("a"));
        assert_eq!(b.poll_removed().unwrap().why, RemoveReason::Expired);
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn a_file_being_written_is_not_dropped_by_the_cache() {
        let t0 = Instant::now();
        let mut b = book(1000);
        let _w = b.begin("a", content(10, 1), FREE, t0).unwrap();
        b.in_cache("a", content(10, 1));
        b.handle_timeout(t0 + Duration::from_secs(100_000));
        assert!(b.contains("a"));
        assert_eq!(b.poll_removed(), None);
    }
}

#[cfg(test)]
mod reap_tests {
    use super::*;
    use crate::sync_db::Sha256;

    #[test]
    fn a_writer_dropped_without_a_verdict_fails_its_file() {
        let t0 = Instant::now();
        let mut b = SpoolBook::new(Limits::default());
        let expected = Expected {
            size: 5,
            sha256: Sha256([0; 32]),
        };
        let w = b.begin("a", expected, u64::MAX, t0).unwrap();
        let id = w.id;
        b.reap();
        assert!(b.contains("a"));
        drop(w);
        b.reap();
        assert_eq!(b.readable(id), Readable::Gone);
        assert_eq!(b.counters.failed, 1);
        // A finished file has no writer any more and stays.
        let w = b.begin("a", expected, u64::MAX, t0).unwrap();
        b.wrote(w.id, 5);
        b.finish(w.id, true, t0);
        drop(w);
        b.reap();
        assert!(b.contains("a"));
    }
}
