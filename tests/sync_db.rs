//! The sync database reader (`flocon::sync_db`) on real databases: `repo-add` makes one
//! (gzip), `gzip`, `zstd`, `xz` and `bsdtar` turn the same tar into the other formats and
//! into damaged, hash-less and oversize variants. Unlike the other integration tests this one
//! calls the library directly: the reader is not wired into the daemon yet. Files go to a
//! temporary directory only.
//!
//! The time of each budgeted call on a database as large as Arch's `extra.db` is measured by
//! `bash bench/sync_db.sh`, not here.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pacman::{Signatures, make_package, make_repo_signed};
use common::{TempDir, require_tools, run_ok};
use flocon::sync_db::{
    Compression, DbError, DbLoader, FileIdentity, Progress, RepoIndexes, Sha256, SyncIndex,
};

const TOOLS: &[&str] = &["repo-add", "bsdtar", "zstd", "xz", "gzip", "sha256sum"];
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

fn sh(dir: &Path, script: &str) {
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir).arg("-ec").arg(script);
    run_ok(cmd, TOOL_TIMEOUT);
}

/// The four files of one database, and what each package file really is.
struct Fixture {
    _tmp: TempDir,
    dir: PathBuf,
    /// (file name, size, SHA-256 by `sha256sum`) of every package.
    packages: Vec<(String, u64, Sha256)>,
}

impl Fixture {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const FORMATS: [(&str, Compression); 4] = [
    ("db.gz", Compression::Gzip),
    ("db.zst", Compression::Zstd),
    ("db.xz", Compression::Xz),
    ("db.tar", Compression::Uncompressed),
];

/// Five packages in a repository made by `repo-add`; `db.gz` is its `testrepo.db`, `db.tar`
/// the tar inside, `db.zst` and `db.xz` that tar recompressed; `tree/` the tar unpacked.
fn fixture() -> Fixture {
    let tmp = TempDir::new("sync-db");
    let build = tmp.mkdir("build");
    let packages: Vec<PathBuf> = (0..5)
        .map(|i| make_package(&build, &format!("pkg{i}"), "1.0", 100 + i * 37))
        .collect();
    let repo = make_repo_signed(&tmp.join("mirror"), "testrepo", &packages, Signatures::None);
    let dir = tmp.mkdir("db");
    fs::copy(repo.db_file(), dir.join("db.gz")).unwrap();
    sh(
        &dir,
        "gzip -dc db.gz > db.tar; zstd -q -c db.tar > db.zst; xz -c db.tar > db.xz; \
         mkdir tree; bsdtar -xf db.tar -C tree",
    );
    let packages = repo
        .packages
        .iter()
        .map(|p| {
            let out = run_ok(
                {
                    let mut cmd = Command::new("sha256sum");
                    cmd.arg(p);
                    cmd
                },
                TOOL_TIMEOUT,
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let hex = text.split_whitespace().next().unwrap_or_default();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let size = fs::metadata(p).unwrap().len();
            (name, size, Sha256::from_hex(hex.as_bytes()).unwrap())
        })
        .collect();
    Fixture {
        _tmp: tmp,
        dir,
        packages,
    }
}

fn load(path: &Path) -> Result<SyncIndex, DbError> {
    DbLoader::open(path).load_all()
}

fn sorted(index: &SyncIndex) -> Vec<(String, FileIdentity)> {
    let mut all: Vec<_> = index.iter().map(|(n, id)| (n.to_owned(), id)).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn load_with_budget(bytes: &[u8], budget: usize) -> (Result<SyncIndex, DbError>, usize) {
    let mut loader = DbLoader::new(bytes);
    let mut calls = 0;
    loop {
        calls += 1;
        match loader.poll_load(budget) {
            Progress::More => {}
            Progress::Done(index) => return (Ok(index), calls),
            Progress::Failed(e) => return (Err(e), calls),
        }
    }
}

#[test]
fn every_format_gives_the_real_sizes_and_hashes() {
    if !require_tools("sync_db", TOOLS) {
        return;
    }
    let f = fixture();
    for (file, compression) in FORMATS {
        let bytes = fs::read(f.file(file)).unwrap();
        assert_eq!(
            flocon::sync_db::decompress::detect(&bytes[..bytes.len().min(512)]),
            Some(compression),
            "{file}"
        );
        let index = load(&f.file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(index.len(), f.packages.len(), "{file}");
        for (name, size, sha256) in &f.packages {
            let id = index
                .lookup(name)
                .unwrap_or_else(|| panic!("{file}: {name}"));
            assert_eq!(id.size, *size, "{file}: {name}");
            assert_eq!(id.sha256, Some(*sha256), "{file}: {name}");
            assert_eq!(index.lookup(&format!("{name}.sig")), None);
        }
        assert_eq!(index.lookup("not-in-any-1.0-1-x86_64.pkg.tar.zst"), None);
        let stats = index.stats();
        assert_eq!(
            (
                stats.without_hash,
                stats.oversize,
                stats.bad_desc,
                stats.duplicates
            ),
            (0, 0, 0, 0),
            "{file}"
        );
    }
}

#[test]
fn every_budget_gives_the_one_shot_index() {
    if !require_tools("sync_db", TOOLS) {
        return;
    }
    let f = fixture();
    let whole = sorted(&load(&f.file("db.tar")).unwrap());
    for (file, _) in FORMATS {
        let bytes = fs::read(f.file(file)).unwrap();
        let tar_len = fs::metadata(f.file("db.tar")).unwrap().len() as usize;
        // Every budget up to 2 KiB, then every 61st up to the whole tar.
        let budgets = (1..=2048).chain((2049..=tar_len + 61).step_by(61));
        for budget in budgets {
            let (index, calls) = load_with_budget(&bytes, budget);
            let index = index.unwrap_or_else(|e| panic!("{file}, budget {budget}: {e}"));
            assert_eq!(sorted(&index), whole, "{file}, budget {budget}");
            assert!(
                calls > tar_len / budget / 4,
                "{file}, budget {budget}: {calls} calls"
            );
        }
    }
}

#[test]
fn truncated_and_garbage_files_fail_cleanly() {
    if !require_tools("sync_db", TOOLS) {
        return;
    }
    let f = fixture();
    for (file, compression) in FORMATS {
        let bytes = fs::read(f.file(file)).unwrap();
        // Cut anywhere before the end of the archive: never a result, never a panic. (The
        // last fifth of a compressed file may hold only the end marker and the zeros after
        // it, which the reader does not need; a plain tar may be cut after one zero block.)
        let step = (bytes.len() / 97).max(1);
        for cut in (1..bytes.len() * 4 / 5).step_by(step) {
            let got = DbLoader::new(&bytes[..cut]).load_all();
            let past_the_end = compression == Compression::Uncompressed
                && bytes[cut.saturating_sub(512)..].iter().all(|&b| b == 0);
            if !past_the_end {
                assert!(
                    got.is_err(),
                    "{file} cut at {cut} of {} loaded",
                    bytes.len()
                );
            }
        }
        let half = DbLoader::new(&bytes[..bytes.len() / 2]).load_all();
        assert_eq!(half.unwrap_err(), DbError::Truncated, "{file}");
        // Damage in the middle of the compressed data.
        if compression != Compression::Uncompressed {
            let mut damaged = bytes.clone();
            let middle = damaged.len() / 2;
            for b in &mut damaged[middle..middle + 8] {
                *b ^= 0xa5;
            }
            let got = DbLoader::new(&damaged[..]).load_all();
            assert!(
                matches!(got, Err(DbError::Corrupt(c)) if c == compression)
                    || matches!(got, Err(DbError::Tar(_))),
                "{file}: {got:?}"
            );
        }
    }
    // Not a database at all, and formats pacman knows but flocon does not read.
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(f.file("garbage"), &garbage).unwrap();
    assert_eq!(
        load(&f.file("garbage")).unwrap_err(),
        DbError::UnknownFormat
    );
    sh(
        &f.dir,
        "bzip2 -c db.tar > db.bz2 2>/dev/null || printf 'BZh91AY&SY' > db.bz2",
    );
    assert_eq!(load(&f.file("db.bz2")).unwrap_err(), DbError::UnknownFormat);
    fs::write(f.file("empty"), b"").unwrap();
    assert_eq!(load(&f.file("empty")).unwrap_err(), DbError::Empty);
    assert!(matches!(
        load(&f.file("missing")).unwrap_err(),
        DbError::Open(std::io::ErrorKind::NotFound)
    ));
    // A directory or a FIFO where the file should be: refused at once, never read.
    assert_eq!(load(&f.dir).unwrap_err(), DbError::NotAFile);
    sh(&f.dir, "mkfifo fifo.db");
    assert_eq!(load(&f.file("fifo.db")).unwrap_err(), DbError::NotAFile);
}

#[test]
fn entry_without_hash_and_oversize_entry() {
    if !require_tools("sync_db", TOOLS) {
        return;
    }
    let f = fixture();
    let tree = f.file("tree");
    let mut entries: Vec<PathBuf> = fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    // Entry 0 loses its %SHA256SUM% block; entry 1 gets a desc over 64 KiB.
    let desc0 = entries[0].join("desc");
    let text = fs::read_to_string(&desc0).unwrap();
    let start = text.find("%SHA256SUM%").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    fs::write(&desc0, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let mut desc1 = fs::OpenOptions::new()
        .append(true)
        .open(entries[1].join("desc"))
        .unwrap();
    writeln!(desc1, "%OPTDEPENDS%").unwrap();
    for i in 0..5000 {
        writeln!(desc1, "optional-dependency-{i}").unwrap();
    }
    drop(desc1);
    sh(
        &f.dir,
        "cd tree && bsdtar -czf ../edited.db * && cd .. && \
         bsdtar --format=pax -cf - -C tree . | zstd -q -c > edited-pax.db",
    );
    let name0 = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name1 = entries[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for file in ["edited.db", "edited-pax.db"] {
        let index = load(&f.file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(index.len(), f.packages.len() - 1, "{file}");
        let stats = index.stats();
        assert_eq!((stats.oversize, stats.without_hash), (1, 1), "{file}");
        let (file0, size0, _) = f
            .packages
            .iter()
            .find(|(n, _, _)| n.starts_with(&format!("{name0}-")))
            .unwrap();
        let id0 = index.lookup(file0).unwrap();
        assert_eq!((id0.size, id0.sha256), (*size0, None), "{file}");
        let file1 = &f
            .packages
            .iter()
            .find(|(n, _, _)| n.starts_with(&format!("{name1}-")))
            .unwrap()
            .0;
        assert_eq!(index.lookup(file1), None, "{file}");
    }
}

#[test]
fn a_broken_repository_leaves_the_others_alone() {
    if !require_tools("sync_db", TOOLS) {
        return;
    }
    let f = fixture();
    let bytes = fs::read(f.file("db.zst")).unwrap();
    fs::write(f.file("broken.db"), &bytes[..bytes.len() / 3]).unwrap();
    let mut repos = RepoIndexes::new(["broken", "core", "missing"]);
    for (repo, file) in [
        ("broken", "broken.db"),
        ("core", "db.xz"),
        ("missing", "nope.db"),
    ] {
        repos.set(repo, load(&f.file(file)));
    }
    assert_eq!(repos.error("broken"), Some(DbError::Truncated));
    assert!(matches!(repos.error("missing"), Some(DbError::Open(_))));
    for (name, size, sha256) in &f.packages {
        let (repo, id) = repos.lookup(name).unwrap();
        assert_eq!((repo, id.size, id.sha256), ("core", *size, Some(*sha256)));
    }
    assert_eq!(repos.lookup("nothere-1-1-any.pkg.tar.zst"), None);
}
