//! The event loop's side of the spool ([`crate::spool`]): opening it at start,
//! and once per pass removing what went (out of the cache summary too) and
//! running the peer connections that wait for spool bytes.
//!
//! Owns only that plumbing: the rules are the spool book's.

use std::path::Path;
use std::time::Instant;

use log::{info, warn};

use super::Daemon;
use crate::cache::Cache;
use crate::config::Settings;
use crate::spool::{self, Spool};
use crate::trust::Trust;

/// The spool of `settings`: its directory (given, or systemd's
/// `$CACHE_DIRECTORY`, both flocon's own: made and emptied; else `/var/tmp`
/// (or the temporary directory), where nameless spool files leave nothing behind).
pub(super) fn open(settings: &Settings) -> Spool {
    if settings.spool.max_bytes == 0 {
        info!("no spool (SpoolSize = 0): files in flight are not shared with the LAN");
        return Spool::off();
    }
    let (dir, ours) = match &settings.spool_dir {
        Some(dir) => (dir.clone(), true),
        None => {
            // /var/tmp is on disk where /tmp is often memory (tmpfs).
            let var_tmp = Path::new("/var/tmp");
            let temp = if var_tmp.is_dir() {
                var_tmp.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            spool::default_dir(std::env::var("CACHE_DIRECTORY").ok().as_deref(), &temp)
        }
    };
    let (spool, problem) = Spool::open(&dir, ours, settings.spool);
    if let Some(why) = problem {
        warn!("{why}");
    }
    spool
}

/// `name` landed in pacman's cache: a finished spool file of the same content
/// is not needed any more (when the cached copy's hash is known now; otherwise
/// the spool file goes at the end of its keep time).
pub(super) fn landed(spool: &mut Spool, trust: &mut Trust, cache: &Cache, name: &str) {
    if let Some(expected) = spool.book.expected(name) {
        if trust.answer(cache, name, Some(expected)) {
            spool.book.in_cache(name, expected);
        }
    }
}

impl Daemon {
    /// The spool's part of the status snapshot.
    pub(super) fn spool_state(&self, now: Instant) -> crate::status::SpoolState {
        let spool = &self.relay.spool;
        crate::status::SpoolState {
            dir: spool.dir().map(std::path::Path::to_path_buf),
            max_bytes: spool.book.limits().max_bytes,
            used_bytes: spool.book.used(),
            files: spool.book.status(now),
            counters: spool.book.counters,
        }
    }

    /// The spool's lines of the status page.
    pub(super) fn spool_text(&self, now: Instant) -> String {
        let spool = &self.relay.spool;
        let Some(dir) = spool.dir() else {
            return "spool: off\n".to_owned();
        };
        let c = &spool.book.counters;
        let files = spool.book.status(now);
        let mut text = format!(
            "spool: {} files in {} ({} of {} bytes), {} spooled, {} verified, {} failed, {} not spooled (no room), {} bytes served to peers from the spool\n",
            files.len(),
            dir.display(),
            spool.book.used(),
            spool.book.limits().max_bytes,
            c.files,
            c.verified,
            c.failed,
            c.refused,
            c.bytes_served
        );
        for f in files {
            let what = if f.complete { "kept" } else { "in flight" };
            text.push_str(&format!(
                "  {what} {}: {} of {} bytes, {} followers, {} s\n",
                f.name, f.written, f.size, f.followers, f.secs
            ));
        }
        text
    }

    /// Removes spool files that went (and their names from the summary), and
    /// queues the peer connections that bytes arrived for.
    pub(super) fn spool_turn(&mut self, now: Instant) {
        if self.relay.spool.look_due(now) {
            let kept: Vec<String> = self
                .relay
                .spool
                .book
                .status(now)
                .into_iter()
                .filter(|f| f.complete)
                .map(|f| f.name)
                .collect();
            for name in kept {
                landed(&mut self.relay.spool, &mut self.trust, &self.cache, &name);
            }
        }
        let mut gone = Vec::new();
        self.relay.spool.handle_timeout(now, &mut gone);
        for name in gone {
            self.multicast.core.cache_removed(&name);
        }
        while let Some(waiter) = self.relay.spool.book.poll_wake() {
            self.again.push_back(waiter);
        }
    }
}
