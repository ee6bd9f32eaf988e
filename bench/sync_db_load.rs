//! Benchmark: the time of each budgeted call of the sync database loader (`DbLoader::poll_load`)
//! on a 15,000-entry database shaped like Arch Linux's `extra.db` (every `desc` carries an
//! incompressible 448-character `%PGPSIG%`), in gzip, zstd, xz and plain tar, at three budgets.
//! The event loop calls the loader once per turn, so this is how long the loop can be held.
//!
//!     bash bench/sync_db.sh
//!
//! Needs `bsdtar`, `gzip`, `zstd` and `xz`. Files go to a temporary directory, removed at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flocon::sync_db::{DbLoader, Progress};

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("flocon-sync-db-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .current_dir(dir)
        .arg("-ec")
        .arg(script)
        .status()
        .expect("run sh");
    assert!(status.success(), "{script}: {status}");
}

/// A `desc` shaped like Arch's `extra.db` ones: description, dependencies and a base64
/// `%PGPSIG%` (which does not compress), about 1.3 KB.
fn extra_like_desc(i: usize, state: &mut u64) -> String {
    let mut sig = String::new();
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for _ in 0..448 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        sig.push(B64[(*state % 64) as usize] as char);
    }
    format!(
        "%FILENAME%\npackage-number-{i}-1.2.{i}-1-x86_64.pkg.tar.zst\n\n%NAME%\npackage-number-{i}\n\n\
         %BASE%\npackage-number-{i}\n\n%VERSION%\n1.2.{i}-1\n\n\
         %DESC%\nA package that exists to make the database as large as Arch's extra\n\n\
         %CSIZE%\n{}\n\n%ISIZE%\n{}\n\n%SHA256SUM%\n{:064x}\n\n%PGPSIG%\n{sig}\n\n\
         %URL%\nhttps://example.org/package-number-{i}\n\n%LICENSE%\nGPL-3.0-or-later\n\n\
         %ARCH%\nx86_64\n\n%BUILDDATE%\n1700000000\n\n%PACKAGER%\nSomeone <someone@example.org>\n\n\
         %DEPENDS%\nglibc\ngcc-libs\nzlib\nopenssl\npackage-number-{}\n\n\
         %MAKEDEPENDS%\ncmake\nninja\n\n",
        100_000 + i,
        400_000 + i,
        i * 2_654_435_761 + 1,
        i / 2
    )
}

/// CPU time of this thread: what a call costs, whatever else the machine runs.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    const ENTRIES: usize = 15_000;
    let tmp = Scratch::new();
    let tree = tmp.join("tree");
    fs::create_dir(&tree).expect("mkdir tree");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..ENTRIES {
        let dir = tree.join(format!("package-number-{i}-1.2.{i}-1"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("desc"), extra_like_desc(i, &mut state)).unwrap();
    }
    sh(
        tmp.path(),
        "cd tree && bsdtar -cf ../db.tar * && cd .. && gzip -c -n db.tar > db.gz && \
         zstd -q -c db.tar > db.zst && xz -c db.tar > db.xz",
    );
    println!("entries: {ENTRIES}");
    for file in ["db.tar", "db.gz", "db.zst", "db.xz"] {
        println!(
            "{file}: {} bytes",
            fs::metadata(tmp.join(file)).unwrap().len()
        );
    }
    for budget in [8 * 1024, 16 * 1024, 64 * 1024] {
        for file in ["db.gz", "db.zst", "db.xz", "db.tar"] {
            // From the page cache, as a database pacman just wrote would be.
            let mut loader = DbLoader::open(&tmp.join(file));
            let mut times = Vec::new();
            let mut cpu_times = Vec::new();
            let start = Instant::now();
            let index = loop {
                let t = Instant::now();
                let cpu = thread_cpu_time();
                let progress = loader.poll_load(budget);
                cpu_times.push(thread_cpu_time().saturating_sub(cpu));
                times.push(t.elapsed());
                match progress {
                    Progress::More => {}
                    Progress::Done(index) => break index,
                    Progress::Failed(e) => panic!("{file}: {e}"),
                }
            };
            let total = start.elapsed();
            assert_eq!(index.len(), ENTRIES, "{file}");
            let id = index
                .lookup("package-number-77-1.2.77-1-x86_64.pkg.tar.zst")
                .unwrap();
            assert_eq!(id.size, 100_077);
            let over_1ms = cpu_times
                .iter()
                .filter(|t| **t > Duration::from_millis(1))
                .count();
            times.sort();
            cpu_times.sort();
            let us = |t: Duration| t.as_secs_f64() * 1e6;
            let pick = |v: &[Duration], q: f64| us(v[((v.len() - 1) as f64 * q) as usize]);
            println!(
                "budget {:>5} B, {file:>6}: {:>5} calls, total {:>6.1} ms; per call, CPU: median \
                 {:>6.1} us, p99 {:>6.1} us, max {:>7.1} us, {over_1ms} over 1 ms; wall max {:>7.1} us",
                budget,
                times.len(),
                total.as_secs_f64() * 1e3,
                pick(&cpu_times, 0.5),
                pick(&cpu_times, 0.99),
                pick(&cpu_times, 1.0),
                pick(&times, 1.0),
            );
        }
    }
}
