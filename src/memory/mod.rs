//! Giving memory back while idle. A daemon that has only announced itself for an hour should
//! hold no more than the pages its idle loop touches, yet after start-up (the configuration,
//! the cache scan, the sync databases' decoders, the TLS set-up) the kernel leaves every page
//! that code touched mapped, and 64 KiB around each (fault-around). Those are clean pages of
//! the binary and its libraries: the kernel can drop them at any time, but until it does they
//! count in the daemon's resident size, and mapped code is the last thing it reclaims.
//!
//! So once the loop has been quiet for a while ([`idle::IdleTrim`]), it unmaps every
//! read-only file mapping none of whose pages was ever copied ([`maps::droppable`]) with
//! `MADV_DONTNEED`: the bytes stay in the page cache, and the next access maps them again (a
//! minor fault, no disk read), so only what the idle loop uses comes back. And it asks glibc's
//! allocator to return its free pages (`malloc_trim`), heap holes left by a busy spell
//! included.
//!
//! Safety: the only other thread is the resolver's, and it maps nothing while no lookup is in
//! flight; the loop gives memory back only then ([`crate::event_loop`]), so the mappings read
//! from `/proc/self/smaps` are the ones `madvise` acts on.

pub mod idle;
pub mod maps;

use std::fs;

pub use maps::Resident;

/// What one [`give_back`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GivenBack {
    /// Mappings dropped.
    pub mappings: usize,
    pub before: Option<Resident>,
    pub after: Option<Resident>,
}

/// Drops the droppable mappings and trims the heap. Call only while no other thread can map
/// or unmap anything (see the module's text).
pub fn give_back() -> GivenBack {
    let mut done = GivenBack {
        before: resident(),
        ..GivenBack::default()
    };
    if let Ok(smaps) = fs::read_to_string("/proc/self/smaps") {
        for m in maps::droppable(&smaps) {
            // SAFETY: [start, end) is a whole private, read-only file mapping of this process
            // none of whose pages is a private copy (maps::droppable), and nothing can unmap it
            // meanwhile (the caller's duty). MADV_DONTNEED only removes its page-table entries:
            // every later read maps the same file bytes again. No Rust reference into it can
            // observe a change, because there is none.
            let r = unsafe {
                libc::madvise(
                    m.start as *mut libc::c_void,
                    m.end - m.start,
                    libc::MADV_DONTNEED,
                )
            };
            if r == 0 {
                done.mappings += 1;
            }
        }
    }
    trim_heap();
    done.after = resident();
    done
}

#[cfg(target_env = "gnu")]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim_heap() {}

/// This process's resident sizes now, from `/proc/self/status`.
pub fn resident() -> Option<Resident> {
    maps::resident(&fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn giving_back_drops_mapped_code_and_the_process_goes_on() {
        // Touch some code and data first, so there is something mapped.
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        let done = give_back();
        assert!(done.mappings > 0, "{done:?}");
        // The file-backed part: other tests running meanwhile may allocate (anonymous).
        let file = |r: Resident| r.total_kib - r.anonymous_kib.min(r.total_kib);
        let (before, after) = (done.before.unwrap(), done.after.unwrap());
        assert!(file(after) < file(before), "{done:?}");
        // The code and read-only data come back as they were.
        let again: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v, again);
        assert!(resident().unwrap().total_kib > 0);
    }
}
