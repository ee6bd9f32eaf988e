//! Reading `/proc/self/smaps` and `/proc/self/status`: which mappings can be dropped while
//! idle, and how much is resident. Pure: the shell reads the files.
//!
//! A mapping may be dropped (`MADV_DONTNEED`) only when doing so cannot change what the
//! process reads from it: a private mapping of a file (a path, not `[vdso]` or `[heap]`),
//! readable and never writable (`r-xp` or `r--p`), none of whose pages was ever copied on
//! write: `Anonymous: 0 kB` for the copies in memory and `Swap: 0 kB` for those swapped out
//! (the RELRO pages that the dynamic linker relocated, or text a debugger put a breakpoint in,
//! are copies; a copy the kernel swapped out counts under `Swap` only, and dropping it would
//! bring back the file's unrelocated bytes). Both lines must be there and say 0. Its pages
//! then all equal the file's, and a later access maps the same bytes again from the page
//! cache.

/// One mapping that may be dropped: `[start, end)`, page-aligned as the kernel lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Droppable {
    pub start: usize,
    pub end: usize,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) that may be dropped, in order.
/// A line it does not understand ends the mapping it is in without dropping it.
pub fn droppable(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    // The mapping being read: its range, whether its header allows a drop, and what its
    // fields said so far (resident KiB, and whether an Anonymous line said 0).
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some(next) = header(line) {
            if let Some(done) = current.take().and_then(Mapping::finish) {
                out.push(done);
            }
            current = Some(next);
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        let mut words = line.split_ascii_whitespace();
        let key = words.next().unwrap_or("");
        let kib = words.next().and_then(|v| v.parse::<u64>().ok());
        match key {
            "Rss:" => m.rss_kib = kib,
            "Anonymous:" => m.anonymous_zero = Some(kib == Some(0)),
            "Swap:" => m.swap_zero = Some(kib == Some(0)),
            _ => {}
        }
    }
    if let Some(done) = current.and_then(Mapping::finish) {
        out.push(done);
    }
    out
}

struct Mapping {
    start: usize,
    end: usize,
    allowed: bool,
    rss_kib: Option<u64>,
    /// What the `Anonymous:` and `Swap:` lines said (`None`: no such line).
    anonymous_zero: Option<bool>,
    swap_zero: Option<bool>,
}

impl Mapping {
    fn finish(self) -> Option<Droppable> {
        let never_copied = self.anonymous_zero == Some(true) && self.swap_zero == Some(true);
        // Nothing resident, nothing to drop. (Also what an emulator's made-up smaps says, such
        // as qemu-user's, whose other lines are zeros too.)
        let resident = self.rss_kib.is_some_and(|kib| kib > 0);
        (self.allowed && never_copied && resident && self.start < self.end).then_some(Droppable {
            start: self.start,
            end: self.end,
        })
    }
}

/// A mapping's first line: `start-end perms offset dev inode [path]`.
fn header(line: &str) -> Option<Mapping> {
    let mut words = line.split_ascii_whitespace();
    let (start, end) = words.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
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
    // The path is the rest of the line; a file's starts with '/'.
    let path = words.next().unwrap_or("");
    let allowed = (perms == "r-xp" || perms == "r--p") && path.starts_with('/');
    Some(Mapping {
        start,
        end,
        allowed,
        rss_kib: None,
        anonymous_zero: None,
        swap_zero: None,
    })
}

/// What is resident, from `/proc/self/status`: all of it (`VmRSS`) and the process's own
/// (`RssAnon`: heap, stacks, copied pages), in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    pub total_kib: u64,
    pub anonymous_kib: u64,
}

/// [`Resident`] from the text of `/proc/self/status`; `None` when a line is missing.
pub fn resident(status: &str) -> Option<Resident> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(Resident {
        total_kib: field("VmRSS")?,
        anonymous_kib: field("RssAnon")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six mappings as a glibc process shows them (fields cut down to those read and a few
    /// others).
    const SMAPS: &str = "\
5559c9625000-5559c96a9000 r--p 00000000 fe:00 5375460                    /usr/bin/flocon
Size:                528 kB
Rss:                 236 kB
Anonymous:             0 kB
Swap:                  0 kB
5559c96a9000-5559c98a8000 r-xp 00083000 fe:00 5375460                    /usr/bin/flocon
Size:               2044 kB
Rss:                1212 kB
Pss:                1212 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
5559c98a8000-5559c98b2000 r--p 00281000 fe:00 5375460                    /usr/bin/flocon
Rss:                  40 kB
Anonymous:            40 kB
Swap:                  0 kB
5559e73d3000-5559e73f4000 rw-p 00000000 00:00 0                          [heap]
Rss:                 108 kB
Anonymous:           108 kB
Swap:                  0 kB
7f9d035a3000-7f9d035a5000 rw-p 001d3000 fe:00 326279                     /usr/lib/libc.so.6
Rss:                   8 kB
Anonymous:             8 kB
Swap:                  0 kB
7f9d035e3000-7f9d035e5000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f9d03616000-7f9d03618000 r-xp 00031000 fe:00 325843                     /usr/lib/my lib.so
Rss:                   8 kB
Anonymous:             0 kB
Swap:                  0 kB
";

    #[test]
    fn only_unmodified_read_only_file_mappings_are_dropped() {
        assert_eq!(
            droppable(SMAPS),
            vec![
                Droppable {
                    start: 0x5559c9625000,
                    end: 0x5559c96a9000
                },
                Droppable {
                    start: 0x5559c96a9000,
                    end: 0x5559c98a8000
                },
                // RELRO (copied pages), the heap, a writable mapping and the vDSO are not;
                // a path with a space is still a file.
                Droppable {
                    start: 0x7f9d03616000,
                    end: 0x7f9d03618000
                },
            ]
        );
    }

    #[test]
    fn a_mapping_with_a_copy_in_swap_is_kept() {
        // A relocated RELRO page the kernel swapped out is no longer "Anonymous" but "Swap":
        // dropping the mapping would map the file's unrelocated bytes back.
        let text = "\
7f9d0359f000-7f9d035a3000 r--p 001cf000 fe:00 326279 /usr/lib/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
SwapPss:               4 kB
";
        assert_eq!(droppable(text), vec![]);
        // Without a Swap line at all (a kernel or a read that does not say): kept too.
        let text = "7f00-8f00 r--p 0 fe:00 1 /usr/lib/libc.so.6\nRss: 4 kB\nAnonymous: 0 kB\n";
        assert_eq!(droppable(text), vec![]);
        let text =
            "7f00-8f00 r--p 0 fe:00 1 /usr/lib/libc.so.6\nRss: 4 kB\nAnonymous: 0 kB\nSwap: 0 kB\n";
        assert_eq!(droppable(text).len(), 1);
        // Nothing resident: nothing to drop.
        let text =
            "7f00-8f00 r--p 0 fe:00 1 /usr/lib/libc.so.6\nRss: 0 kB\nAnonymous: 0 kB\nSwap: 0 kB\n";
        assert_eq!(droppable(text), vec![]);
    }

    #[test]
    fn a_mapping_without_its_anonymous_line_is_kept() {
        // Older kernels, or a cut-short read: without the proof that nothing was copied,
        // nothing is dropped.
        let text = "7f00-8f00 r-xp 00000000 fe:00 1 /usr/lib/libc.so.6\nRss: 4 kB\n";
        assert_eq!(droppable(text), vec![]);
        let text =
            "7f00-8f00 r-xp 00000000 fe:00 1 /usr/lib/libc.so.6\nAnonymous: 4 kB\nRss: 4 kB\n";
        assert_eq!(droppable(text), vec![]);
    }

    #[test]
    fn garbage_drops_nothing() {
        for text in [
            "",
            "zz-yy r-xp 0 fe:00 1 /x\nAnonymous: 0 kB\nSwap: 0 kB\nRss: 1 kB\n",
            "8f00-7f00 r-xp 0 fe:00 1 /x\nAnonymous: 0 kB\nSwap: 0 kB\nRss: 1 kB\n",
            "7f00-8f00 r-xp 0 fe00 1 /x\nAnonymous: 0 kB\nSwap: 0 kB\nRss: 1 kB\n",
            "7f00-8f00 rwxp 0 fe:00 1 /x\nAnonymous: 0 kB\nSwap: 0 kB\nRss: 1 kB\n",
            "7f00-8f00 r-xs 0 fe:00 1 /x\nAnonymous: 0 kB\nSwap: 0 kB\nRss: 1 kB\n",
            "Anonymous: 0 kB\nRss: 1 kB\n",
        ] {
            assert_eq!(droppable(text), vec![], "{text:?}");
        }
    }

    #[test]
    fn the_resident_sizes_are_read_from_the_status() {
        let status = "Name:\tflocon\nVmHWM:\t    3364 kB\nVmRSS:\t    3364 kB\nRssAnon:\t     280 kB\nRssFile:\t    3084 kB\n";
        assert_eq!(
            resident(status),
            Some(Resident {
                total_kib: 3364,
                anonymous_kib: 280
            })
        );
        assert_eq!(resident("VmRSS:\t 1 kB\n"), None);
        assert_eq!(resident("VmRSS:\t x kB\nRssAnon: 1 kB\n"), None);
    }
}
