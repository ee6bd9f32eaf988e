//! Which names the cache directories hold, and when that changes: a scan at start and
//! inotify after, read by the event loop (the descriptor is non-blocking and registered with
//! mio; no thread, no polling).
//!
//! Only names peers may fetch (packages and their signatures, see
//! [`crate::cache::check_servable`]) are reported; `*.part` files and pacman 7's
//! `download-*` folders never are. A finished download appears as a rename into the cache
//! (pacman 6 renames `x.part` to `x`, pacman 7 moves `download-*/x` to `x`) or as a file
//! closed after writing (`cp`); a removal (`paccache -r`, `pacman -Sc`) as a delete or a
//! rename out. When the kernel's queue overflowed or a directory went away, the caller
//! scans again. [`parse_events`] is the pure part (and a fuzz target).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::cache::check_servable;

/// What changed in a cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChange {
    /// A servable name appeared.
    Added(String),
    /// A servable name went away.
    Removed(String),
    /// Events were lost or a directory went away: scan every directory again.
    Rescan,
}

const WATCH_MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Size of `struct inotify_event` before its name.
const EVENT_HEADER: usize = 16;

/// The servable names in `dirs` (a name in two directories is listed twice). A directory that
/// cannot be read is skipped (the caller already warned about it at start).
pub fn scan<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Vec<String> {
    let mut names = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_file = entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink());
            if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                if check_servable(name).is_ok() {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

/// Turn a buffer of `struct inotify_event`s into changes. Pure and total: a truncated or
/// malformed event ends the parse (with a rescan, since something was missed).
pub fn parse_events(buf: &[u8], out: &mut Vec<CacheChange>) {
    let mut at = 0;
    while at < buf.len() {
        let Some(header) = buf.get(at..at + EVENT_HEADER) else {
            out.push(CacheChange::Rescan);
            return;
        };
        let word =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let mask = word(4);
        let len = word(12) as usize;
        let Some(raw) = buf.get(at + EVENT_HEADER..at + EVENT_HEADER + len) else {
            out.push(CacheChange::Rescan);
            return;
        };
        at += EVENT_HEADER + len;
        if mask
            & (libc::IN_Q_OVERFLOW | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED)
            != 0
        {
            out.push(CacheChange::Rescan);
            continue;
        }
        if mask & libc::IN_ISDIR != 0 {
            continue;
        }
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if check_servable(name).is_err() {
            continue;
        }
        if mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0 {
            out.push(CacheChange::Added(name.to_owned()));
        } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
            out.push(CacheChange::Removed(name.to_owned()));
        }
    }
}

/// An inotify descriptor watching the cache directories.
#[derive(Debug)]
pub struct CacheWatch {
    fd: OwnedFd,
}

impl CacheWatch {
    /// Watch `dirs`; fails only when inotify itself is unavailable. A directory that cannot be
    /// watched is reported in the returned warnings (its changes are then seen at rescans).
    pub fn open<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
    ) -> io::Result<(CacheWatch, Vec<String>)> {
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut warnings = Vec::new();
        for dir in dirs {
            let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: a valid descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), WATCH_MASK) };
            if wd < 0 {
                warnings.push(format!(
                    "cannot watch cache directory {} ({}): new files there are announced to peers only at the next rescan",
                    dir.display(),
                    io::Error::last_os_error()
                ));
            }
        }
        Ok((CacheWatch { fd }, warnings))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read what is waiting (up to `max_reads` reads) into `out`.
    pub fn read(&self, out: &mut Vec<CacheChange>, max_reads: usize) {
        let mut buf = [0u8; 8192];
        for _ in 0..max_reads {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if n == 0 {
                return;
            }
            parse_events(&buf[..n as usize], out);
        }
        // More may wait: edge-triggered, so let the caller rescan rather than lose them.
        out.push(CacheChange::Rescan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        padded.push(0);
        while padded.len() % 16 != 0 {
            padded.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&1i32.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
        out.extend_from_slice(&padded);
        out
    }

    const PKG: &str = "zstd-1.5.6-1-x86_64.pkg.tar.zst";

    #[test]
    fn renames_and_deletes_of_servable_names() {
        let mut buf = event(libc::IN_MOVED_TO, PKG);
        buf.extend(event(libc::IN_CLOSE_WRITE, &format!("{PKG}.sig")));
        buf.extend(event(libc::IN_DELETE, PKG));
        buf.extend(event(libc::IN_MOVED_FROM, PKG));
        buf.extend(event(libc::IN_MOVED_TO, &format!("{PKG}.part")));
        buf.extend(event(libc::IN_MOVED_TO | libc::IN_ISDIR, "download-abc"));
        buf.extend(event(libc::IN_CLOSE_WRITE, "core.db"));
        let mut out = Vec::new();
        parse_events(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                CacheChange::Added(PKG.into()),
                CacheChange::Added(format!("{PKG}.sig")),
                CacheChange::Removed(PKG.into()),
                CacheChange::Removed(PKG.into()),
            ]
        );
    }

    #[test]
    fn overflow_and_truncation_ask_for_a_rescan() {
        let mut out = Vec::new();
        parse_events(&event(libc::IN_Q_OVERFLOW, ""), &mut out);
        assert_eq!(out, vec![CacheChange::Rescan]);
        out.clear();
        let buf = event(libc::IN_MOVED_TO, PKG);
        parse_events(&buf[..buf.len() - 1], &mut out);
        assert_eq!(out, vec![CacheChange::Rescan]);
        out.clear();
        parse_events(&buf[..5], &mut out);
        assert_eq!(out, vec![CacheChange::Rescan]);
    }

    #[test]
    fn a_real_directory_is_scanned_and_watched() {
        let dir = std::env::temp_dir().join(format!("flocon-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(PKG), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        assert_eq!(scan([dir.as_path()]), vec![PKG.to_owned()]);
        let (watch, warnings) = CacheWatch::open([dir.as_path()]).unwrap();
        assert!(warnings.is_empty());
        std::fs::write(dir.join("a-1-1-any.pkg.tar.zst.part"), b"x").unwrap();
        std::fs::rename(
            dir.join("a-1-1-any.pkg.tar.zst.part"),
            dir.join("a-1-1-any.pkg.tar.zst"),
        )
        .unwrap();
        std::fs::remove_file(dir.join(PKG)).unwrap();
        let mut out = Vec::new();
        watch.read(&mut out, 4);
        out.retain(|c| *c != CacheChange::Rescan);
        assert_eq!(
            out,
            vec![
                CacheChange::Added("a-1-1-any.pkg.tar.zst".into()),
                CacheChange::Removed(PKG.into()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
