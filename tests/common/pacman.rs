//! pacman for tests: build small (or large) packages with a `.PKGINFO` and incompressible
//! deterministic payloads, lay them out as a repository with `repo-add`, sign them with a
//! throw-away GnuPG key when a test needs real signatures, and run pacman as a client that
//! never touches the host (its own root, dbpath, cachedir, gpgdir and config): Debian's 6.0.2,
//! or pacman 7 (what Arch ships) built from source by `ci/build-pacman7.sh`, see [`Pacman`].
//!
//! Facts found by experiment with pacman 6.0.2 (Debian `pacman-package-manager`):
//! - `-Sy` and `-Sw` refuse to run unless root ("you cannot perform this operation unless you
//!   are root"), even with private dirs: see [`require_pacman`].
//! - `--root` and `--dbpath` must exist ("failed to initialize alpm library ... could not find
//!   or read directory"); the cache dir is created with a warning; the gpgdir is not needed
//!   with `SigLevel = Never`. `-Sy` writes `<dbpath>/sync/<repo>.db` and `<dbpath>/local/`.
//! - With `SigLevel = Never` pacman asks for neither `<pkg>.sig` nor `<repo>.db.sig`.
//! - With `SigLevel = Optional ...` it asks for `<repo>.db.sig` after the database and
//!   `<pkg>.sig` after each package; 404s there are silent and do not fail the run, but a
//!   `.sig` that is not a valid signature fails it ("invalid or corrupted package (PGP
//!   signature)"). Fake `.sig` files are only for clients other than pacman.
//! - Real signatures work with `SigLevel = PackageRequired PackageTrustAll DatabaseNever` and
//!   the signing key's public part imported into the gpgdir (`gpg --homedir G --import`); no
//!   `pacman-key --init` needed (pacman only warns "Public keyring not found").
//! - 6.0.2's `repo-add` copies a `<pkg>.sig` lying next to the package into the database
//!   (`%PGPSIG%`); pacman then checks that copy, still downloads the `.sig` file, and ignores
//!   its content. Repos made here are signed after `repo-add`, like Arch's (no signatures in the
//!   database), so the downloaded `.sig` is what pacman checks.
//! - `CacheServer` is not known: "directive 'CacheServer' in section ... not recognized",
//!   a warning, and the line is ignored.
//!
//! pacman 7 (7.0.0, built by `ci/build-pacman7.sh` into the prefix `$FLOCON_PACMAN7`):
//! - runs as the client of these tests with `DownloadUser = alpm` and its sandbox on, as Arch
//!   ships it: downloads happen as `alpm` into `<cachedir>/download-XXXXXX/` (mode 0700) and
//!   finished files move to the cache root when the whole batch is done;
//! - keeps no `.part` between runs (the download folder is removed at the end of each run), so
//!   a resume happens only inside one run, from one server to the next;
//! - knows `CacheServer` (tried before the `Server` lines; its errors are not counted).
//!
//! It does not start servers: see [`super::mirror`].

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{TempDir, netns_command, output_within, run_ok, show_output};

/// The architecture of packages and repositories made here.
pub const ARCH: &str = "x86_64";
/// The repository name tests use unless they need several.
pub const TEST_REPO: &str = "testrepo";
/// `builddate` and file mtimes inside packages, so the same spec gives the same bytes.
const BUILD_DATE: u64 = 1_700_000_000;
/// Bound for one pacman run.
pub const PACMAN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound for bsdtar / repo-add / gpg.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Decide whether a test that runs pacman (as a client, with packages and a repository made
/// here) runs: needs root and pacman, repo-add, bsdtar, zstd. Prints why and returns false when
/// not, or panics when `CI=true`.
#[track_caller]
pub fn require_pacman(test: &str) -> bool {
    super::require_root(test)
        && super::require_tools(test, &["pacman", "repo-add", "bsdtar", "zstd"])
}

/// Which pacman a test client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacman {
    /// Debian's `pacman-package-manager` 6.0.2 (`pacman` on the PATH).
    V6,
    /// pacman 7 built from source by `ci/build-pacman7.sh`, with `DownloadUser = alpm`.
    V7,
}

/// The user pacman 7 downloads as (`DownloadUser`), created by [`Pacman::require`].
pub const DOWNLOAD_USER: &str = "alpm";

impl Pacman {
    /// The pacman 7 prefix: `$FLOCON_PACMAN7`, else where `ci/build-pacman7.sh` builds it.
    fn v7_prefix() -> Option<PathBuf> {
        std::env::var_os("FLOCON_PACMAN7")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/flocon/pacman-7.0.0"))
            })
    }

    /// The program to run.
    pub fn program(self) -> PathBuf {
        match self {
            Pacman::V6 => PathBuf::from("pacman"),
            Pacman::V7 => Pacman::v7_prefix().unwrap_or_default().join("bin/pacman"),
        }
    }

    /// Like [`require_pacman`], for this pacman; for pacman 7 also its build (run
    /// `ci/build-pacman7.sh`, as tests/run.sh does) and the `alpm` user (created here).
    #[track_caller]
    pub fn require(self, test: &str) -> bool {
        if !require_pacman(test) {
            return false;
        }
        if self == Pacman::V6 {
            return true;
        }
        let program = self.program();
        if !program.is_file() {
            let msg = format!(
                "{test} needs pacman 7 at {} (build it with: bash ci/build-pacman7.sh, or set FLOCON_PACMAN7)",
                program.display()
            );
            if super::is_ci() {
                panic!("{msg}; CI=true makes this fatal");
            }
            eprintln!("skipping: {msg} (CI=true makes this fatal)");
            return false;
        }
        ensure_download_user();
        true
    }

    pub fn label(self) -> &'static str {
        match self {
            Pacman::V6 => "pacman 6",
            Pacman::V7 => "pacman 7",
        }
    }
}

/// Create the system user pacman 7 downloads as, unless it exists (several tests may race
/// here: a second `useradd` failing because the user now exists is fine).
#[track_caller]
fn ensure_download_user() {
    let exists = || {
        fs::read_to_string("/etc/passwd").is_ok_and(|p| {
            p.lines()
                .any(|l| l.split(':').next() == Some(DOWNLOAD_USER))
        })
    };
    if exists() {
        return;
    }
    let out = output_within(
        {
            let mut c = Command::new("useradd");
            c.args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/",
                "--shell",
                "/usr/sbin/nologin",
                DOWNLOAD_USER,
            ]);
            c
        },
        TOOL_TIMEOUT,
    );
    if !exists() {
        panic!(
            "cannot create the user {DOWNLOAD_USER} for pacman 7: {}",
            show_output(&out)
        );
    }
}

/// What to build: `name-version-rel-arch.pkg.tar.zst`.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub name: String,
    /// pkgver, may hold an epoch (`1:2.0`).
    pub version: String,
    pub rel: String,
    /// `x86_64` or `any`.
    pub arch: String,
    pub payload_size: u64,
    /// Seed of the payload; by default derived from name, version and rel, so another seed
    /// gives the same file name with other bytes.
    pub seed: Option<u64>,
}

impl PackageSpec {
    pub fn new(name: &str, version: &str, payload_size: u64) -> PackageSpec {
        PackageSpec {
            name: name.to_string(),
            version: version.to_string(),
            rel: "1".to_string(),
            arch: ARCH.to_string(),
            payload_size,
            seed: None,
        }
    }

    /// `name-version-rel-arch.pkg.tar.zst`.
    pub fn file_name(&self) -> String {
        package_file_name(&self.name, &self.version, &self.rel, &self.arch)
    }
}

pub fn package_file_name(name: &str, version: &str, rel: &str, arch: &str) -> String {
    format!("{name}-{version}-{rel}-{arch}.pkg.tar.zst")
}

/// Build `dir/name-version-1-x86_64.pkg.tar.zst` holding a `.PKGINFO` and
/// `usr/share/<name>/payload.bin` of `payload_size` pseudo-random bytes; returns its path.
#[track_caller]
pub fn make_package(dir: &Path, name: &str, version: &str, payload_size: u64) -> PathBuf {
    make_package_spec(dir, &PackageSpec::new(name, version, payload_size))
}

/// Build a package from a full spec into `dir`; returns its path.
#[track_caller]
pub fn make_package_spec(dir: &Path, spec: &PackageSpec) -> PathBuf {
    let out = dir.join(spec.file_name());
    let stage = dir.join(format!(
        ".stage-{}-{}",
        spec.file_name(),
        super::unique_number()
    ));
    let result = build_package(&stage, &out, spec);
    let _ = fs::remove_dir_all(&stage);
    if let Err(e) = result {
        panic!("cannot build package {}: {e}", out.display());
    }
    out
}

fn build_package(stage: &Path, out: &Path, spec: &PackageSpec) -> Result<(), String> {
    let payload_dir = stage.join("usr/share").join(&spec.name);
    fs::create_dir_all(&payload_dir)
        .map_err(|e| format!("mkdir {}: {e}", payload_dir.display()))?;
    let pkginfo = format!(
        "# Generated by flocon tests\n\
         pkgname = {name}\n\
         pkgbase = {name}\n\
         pkgver = {ver}-{rel}\n\
         pkgdesc = flocon test package {name}\n\
         url = https://example.invalid/{name}\n\
         builddate = {BUILD_DATE}\n\
         packager = flocon tests <tests@flocon.invalid>\n\
         size = {size}\n\
         arch = {arch}\n\
         license = BSD-3-Clause\n",
        name = spec.name,
        ver = spec.version,
        rel = spec.rel,
        size = spec.payload_size,
        arch = spec.arch,
    );
    fs::write(stage.join(".PKGINFO"), pkginfo).map_err(|e| format!("write .PKGINFO: {e}"))?;
    let seed = spec.seed.unwrap_or_else(|| {
        fnv1a(format!("{}\0{}\0{}", spec.name, spec.version, spec.rel).as_bytes())
    });
    let payload = payload_dir.join("payload.bin");
    write_pseudo_random(&payload, spec.payload_size, seed)
        .map_err(|e| format!("write {}: {e}", payload.display()))?;
    let mtime = UNIX_EPOCH + Duration::from_secs(BUILD_DATE);
    for p in [
        stage.join(".PKGINFO"),
        payload.clone(),
        payload_dir.clone(),
        stage.join("usr/share"),
        stage.join("usr"),
    ] {
        set_mtime(&p, mtime);
    }
    let mut cmd = Command::new("bsdtar");
    cmd.current_dir(stage)
        .args([
            "--zstd", "--uid", "0", "--gid", "0", "--uname", "root", "--gname", "root", "-cf",
        ])
        .arg(out)
        .args([".PKGINFO", "usr"]);
    let o = output_within(cmd, TOOL_TIMEOUT);
    if !o.status.success() {
        return Err(format!("bsdtar failed: {}\n{}", o.status, show_output(&o)));
    }
    Ok(())
}

fn set_mtime(p: &Path, t: SystemTime) {
    if let Ok(f) = File::options().read(true).open(p) {
        let _ = f.set_modified(t);
    }
}

/// FNV-1a, to derive seeds from names.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Write `size` bytes of xorshift64* output from `seed` to `path`, in 1 MiB chunks
/// (about 1 GB/s; zstd cannot shrink it).
pub fn write_pseudo_random(path: &Path, size: u64, seed: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        fill_pseudo_random(&mut chunk[..n], &mut state);
        w.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// Fill `buf` from the xorshift64* generator `state`.
pub fn fill_pseudo_random(buf: &mut [u8], state: &mut u64) {
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&next_random(state).to_le_bytes());
    }
    let rest = words.into_remainder();
    let last = next_random(state).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Which `.sig` files a repository gets next to its packages.
#[derive(Clone, Copy)]
pub enum Signatures<'a> {
    /// None at all.
    None,
    /// A fixed 119-byte blob that is not a valid signature: for clients other than pacman
    /// (pacman with `SigLevel = Never` never asks for it; with `Optional` it would reject it).
    Fake,
    /// Real detached signatures by a test key (pair with [`PacmanClient::import_key`] and
    /// `SigLevel = PackageRequired PackageTrustAll DatabaseNever`).
    Gpg(&'a TestKey),
}

/// A repository laid out as a mirror serves it: `<root>/<name>/os/<arch>/`.
#[derive(Debug, Clone)]
pub struct Repo {
    /// The mirror's document root.
    pub root: PathBuf,
    pub name: String,
    pub arch: String,
    /// `<root>/<name>/os/<arch>`, holding packages, signatures and the database.
    pub dir: PathBuf,
    /// Paths of the packages in `dir`.
    pub packages: Vec<PathBuf>,
}

/// Make repository `repo_name` under mirror root `root` from `packages` (moved into place if
/// they are elsewhere), with fake `.sig` files. See [`make_repo_signed`].
#[track_caller]
pub fn make_repo(root: &Path, repo_name: &str, packages: &[PathBuf]) -> Repo {
    make_repo_signed(root, repo_name, packages, Signatures::Fake)
}

/// Make repository `repo_name` under `root`: packages into `<root>/<repo>/os/x86_64/`,
/// signatures as asked, then `repo-add` making `<repo>.db.tar.gz` and `<repo>.files.tar.gz`.
/// `<repo>.db` and `<repo>.files` are regular copies rather than repo-add's symlinks, so any
/// server (one that refuses symlinks too) serves them as files.
#[track_caller]
pub fn make_repo_signed(
    root: &Path,
    repo_name: &str,
    packages: &[PathBuf],
    sigs: Signatures<'_>,
) -> Repo {
    let dir = root.join(repo_name).join("os").join(ARCH);
    if let Err(e) = fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let mut repo = Repo {
        root: root.to_path_buf(),
        name: repo_name.to_string(),
        arch: ARCH.to_string(),
        dir,
        packages: Vec::new(),
    };
    repo.add(packages, sigs);
    repo
}

impl Repo {
    /// Add packages (or newer versions) and update the database with `repo-add`.
    #[track_caller]
    pub fn add(&mut self, packages: &[PathBuf], sigs: Signatures<'_>) {
        let mut placed = Vec::new();
        for p in packages {
            let Some(file_name) = p.file_name() else {
                panic!("not a package path: {}", p.display());
            };
            let dest = self.dir.join(file_name);
            let moved = if p == &dest {
                Ok(())
            } else {
                fs::rename(p, &dest).or_else(|_| fs::copy(p, &dest).map(|_| ()))
            };
            if let Err(e) = moved {
                panic!(
                    "cannot place {} in {}: {e}",
                    p.display(),
                    self.dir.display()
                );
            }
            placed.push(dest);
        }
        if placed.is_empty() {
            return;
        }
        let db = self.dir.join(format!("{}.db.tar.gz", self.name));
        let mut cmd = Command::new("repo-add");
        cmd.current_dir(&self.dir)
            .arg("-q")
            .arg(&db)
            .args(placed.iter().map(|p| p.file_name().unwrap_or_default()));
        let out = output_within(cmd, TOOL_TIMEOUT);
        if !out.status.success() {
            panic!("repo-add failed: {}\n{}", out.status, show_output(&out));
        }
        for kind in ["db", "files"] {
            let link = self.dir.join(format!("{}.{kind}", self.name));
            let target = self.dir.join(format!("{}.{kind}.tar.gz", self.name));
            let _ = fs::remove_file(&link);
            if let Err(e) = fs::copy(&target, &link) {
                panic!(
                    "cannot copy {} to {}: {e}",
                    target.display(),
                    link.display()
                );
            }
            let _ = fs::remove_file(self.dir.join(format!("{}.{kind}.tar.gz.old", self.name)));
        }
        // Signatures come after repo-add: 6.0.2's repo-add embeds an existing `.sig` in the
        // database (%PGPSIG%), and pacman then checks that copy instead of the `.sig` file.
        // Arch's databases carry no signatures, so pacman checks the file, as it does here.
        for p in &placed {
            match sigs {
                Signatures::None => {}
                Signatures::Fake => {
                    write_fake_sig(p);
                }
                Signatures::Gpg(key) => {
                    key.sign(p);
                }
            }
        }
        for p in placed {
            if !self.packages.contains(&p) {
                self.packages.push(p);
            }
        }
    }

    /// `<dir>/<file>`.
    pub fn file(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    /// The database file `<repo>.db`.
    pub fn db_file(&self) -> PathBuf {
        self.dir.join(format!("{}.db", self.name))
    }

    /// The URL path of a file, `/<repo>/os/<arch>/<file>`.
    pub fn url_path(&self, file_name: &str) -> String {
        format!("/{}/os/{}/{}", self.name, self.arch, file_name)
    }

    /// The package file names, in the order added.
    pub fn package_names(&self) -> Vec<String> {
        self.packages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }
}

/// A `Server =` line value for a mirror at `base` (`http://host:port`):
/// `http://host:port/$repo/os/$arch`.
pub fn server_url(base: &str) -> String {
    format!("{}/$repo/os/$arch", base.trim_end_matches('/'))
}

/// Write `<package>.sig`: a fixed blob that is not a valid signature.
#[track_caller]
pub fn write_fake_sig(package: &Path) -> PathBuf {
    let mut sig = package.as_os_str().to_owned();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    let mut blob = vec![0u8; 119];
    let mut state = fnv1a(package.file_name().unwrap_or_default().as_encoded_bytes());
    fill_pseudo_random(&mut blob, &mut state);
    blob[0] = 0x88; // looks like an OpenPGP signature packet tag, is not one
    if let Err(e) = fs::write(&sig, blob) {
        panic!("cannot write {}: {e}", sig.display());
    }
    sig
}

/// A throw-away ed25519 signing key in its own GnuPG home (its agent is stopped on drop).
pub struct TestKey {
    home: TempDir,
    fingerprint: String,
    public_key: PathBuf,
}

impl TestKey {
    #[track_caller]
    pub fn generate() -> TestKey {
        let home = TempDir::new("gpg");
        set_private(home.path());
        let mut gen_cmd = gpg(home.path());
        gen_cmd.args([
            "--quick-gen-key",
            "flocon tests <tests@flocon.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        run_ok(gen_cmd, TOOL_TIMEOUT);
        let mut list = gpg(home.path());
        list.args(["--with-colons", "--list-keys"]);
        let out = run_ok(list, TOOL_TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(fingerprint) = text
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .map(str::to_string)
        else {
            panic!("no fingerprint in gpg --list-keys output:\n{text}");
        };
        let public_key = home.join("public.asc");
        let mut export = gpg(home.path());
        export
            .args(["--armor", "--output"])
            .arg(&public_key)
            .arg("--export");
        run_ok(export, TOOL_TIMEOUT);
        TestKey {
            home,
            fingerprint,
            public_key,
        }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The armored public key file.
    pub fn public_key(&self) -> &Path {
        &self.public_key
    }

    /// Write a detached binary signature `<file>.sig`; returns its path.
    #[track_caller]
    pub fn sign(&self, file: &Path) -> PathBuf {
        let mut sig = file.as_os_str().to_owned();
        sig.push(".sig");
        let sig = PathBuf::from(sig);
        let _ = fs::remove_file(&sig);
        let mut cmd = gpg(self.home.path());
        cmd.args(["--detach-sign", "--no-armor", "--output"])
            .arg(&sig)
            .arg(file);
        run_ok(cmd, TOOL_TIMEOUT);
        sig
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        // Signing started a gpg-agent for this home; stop it before the dir goes.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir").arg(home).args([
        "--batch",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    cmd
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

/// What goes in a test client's pacman.conf.
#[derive(Debug, Clone)]
pub struct PacmanConf {
    pub repo: String,
    /// `Server =` lines, in order (see [`server_url`]).
    pub servers: Vec<String>,
    /// `CacheServer =` lines (pacman >= 6.1; 6.0.2 warns and ignores them).
    pub cache_servers: Vec<String>,
    pub sig_level: String,
    pub parallel_downloads: u32,
    /// Extra `CacheDir =` lines after the client's own cache dir.
    pub extra_cache_dirs: Vec<PathBuf>,
}

impl PacmanConf {
    /// `[testrepo]` with the given `Server =` lines and `SigLevel = Never`.
    pub fn new(servers: &[String]) -> PacmanConf {
        PacmanConf {
            repo: TEST_REPO.to_string(),
            servers: servers.to_vec(),
            cache_servers: Vec::new(),
            sig_level: "Never".to_string(),
            parallel_downloads: 5,
            extra_cache_dirs: Vec::new(),
        }
    }

    /// Check real package signatures (see [`Signatures::Gpg`]).
    pub fn require_package_signatures(mut self) -> PacmanConf {
        self.sig_level = "PackageRequired PackageTrustAll DatabaseNever".to_string();
        self
    }
}

/// A pacman that runs on its own files only: `<dir>/root`, `<dir>/root/db`, `<dir>/cache`,
/// `<dir>/gnupg`, `<dir>/pacman.conf`.
#[derive(Debug, Clone)]
pub struct PacmanClient {
    pub pacman: Pacman,
    pub root: PathBuf,
    pub dbpath: PathBuf,
    pub cachedir: PathBuf,
    pub gpgdir: PathBuf,
    pub conf_path: PathBuf,
    pub logfile: PathBuf,
}

impl PacmanClient {
    /// Make the directories under `dir` and write the config, for pacman 6.
    #[track_caller]
    pub fn new(dir: &Path, conf: &PacmanConf) -> PacmanClient {
        PacmanClient::of(Pacman::V6, dir, conf)
    }

    /// Make the directories under `dir` and write the config, for `pacman`.
    #[track_caller]
    pub fn of(pacman: Pacman, dir: &Path, conf: &PacmanConf) -> PacmanClient {
        let root = dir.join("root");
        let client = PacmanClient {
            pacman,
            dbpath: root.join("db"),
            logfile: root.join("pacman.log"),
            root,
            cachedir: dir.join("cache"),
            gpgdir: dir.join("gnupg"),
            conf_path: dir.join("pacman.conf"),
        };
        for d in [&client.dbpath, &client.cachedir, &client.gpgdir] {
            if let Err(e) = fs::create_dir_all(d) {
                panic!("cannot create {}: {e}", d.display());
            }
        }
        set_private(&client.gpgdir);
        client.write_conf(conf);
        client
    }

    /// (Re)write pacman.conf, e.g. to point at other servers between runs.
    #[track_caller]
    pub fn write_conf(&self, conf: &PacmanConf) {
        let mut text = format!(
            "[options]\n\
             Architecture = {ARCH}\n\
             SigLevel = {}\n\
             ParallelDownloads = {}\n\
             CacheDir = {}/\n",
            conf.sig_level,
            conf.parallel_downloads,
            self.cachedir.display()
        );
        for d in &conf.extra_cache_dirs {
            text.push_str(&format!("CacheDir = {}/\n", d.display()));
        }
        if self.pacman == Pacman::V7 {
            // As Arch ships it: downloads as this user, inside the sandbox (on by default).
            text.push_str(&format!("DownloadUser = {DOWNLOAD_USER}\n"));
        }
        text.push_str(&format!("\n[{}]\n", conf.repo));
        for s in &conf.cache_servers {
            text.push_str(&format!("CacheServer = {s}\n"));
        }
        for s in &conf.servers {
            text.push_str(&format!("Server = {s}\n"));
        }
        if let Err(e) = fs::write(&self.conf_path, text) {
            panic!("cannot write {}: {e}", self.conf_path.display());
        }
    }

    /// Import a test key's public part into this client's gpgdir.
    #[track_caller]
    pub fn import_key(&self, key: &TestKey) {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir")
            .arg(&self.gpgdir)
            .args(["--batch", "--quiet", "--no-autostart", "--import"])
            .arg(key.public_key());
        run_ok(cmd, TOOL_TIMEOUT);
    }

    /// The command `pacman --config C --root R --dbpath D --cachedir K --gpgdir G --logfile L
    /// --noconfirm --noprogressbar <args>`, in namespace `ns` if given, with `LC_ALL=C`.
    pub fn command(&self, ns: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = netns_command(ns, self.pacman.program());
        cmd.arg("--config")
            .arg(&self.conf_path)
            .arg("--root")
            .arg(&self.root)
            .arg("--dbpath")
            .arg(&self.dbpath)
            .arg("--cachedir")
            .arg(&self.cachedir)
            .arg("--gpgdir")
            .arg(&self.gpgdir)
            .arg("--logfile")
            .arg(&self.logfile)
            .args(["--noconfirm", "--noprogressbar"])
            .args(args)
            .env("LC_ALL", "C");
        cmd
    }

    /// Run pacman with `args` (at most [`PACMAN_TIMEOUT`]); the output whatever the status.
    #[track_caller]
    pub fn run(&self, ns: Option<&str>, args: &[&str]) -> Output {
        self.run_timeout(ns, args, PACMAN_TIMEOUT)
    }

    #[track_caller]
    pub fn run_timeout(&self, ns: Option<&str>, args: &[&str], timeout: Duration) -> Output {
        let out = output_within(self.command(ns, args), timeout);
        eprintln!(
            "[pacman {}] exit {}\n{}",
            args.join(" "),
            out.status,
            show_output(&out)
        );
        out
    }

    /// `pacman -Sy`, panicking unless it succeeds.
    #[track_caller]
    pub fn sync_db(&self, ns: Option<&str>) -> Output {
        self.run_expect_ok(ns, &["-Sy"])
    }

    /// `pacman -Sw <packages>` (download only), panicking unless it succeeds.
    #[track_caller]
    pub fn download(&self, ns: Option<&str>, packages: &[&str]) -> Output {
        let mut args = vec!["-Sw"];
        args.extend_from_slice(packages);
        self.run_expect_ok(ns, &args)
    }

    #[track_caller]
    pub fn run_expect_ok(&self, ns: Option<&str>, args: &[&str]) -> Output {
        let out = self.run(ns, args);
        if !out.status.success() {
            panic!(
                "pacman {} failed: {}\n{}",
                args.join(" "),
                out.status,
                show_output(&out)
            );
        }
        out
    }

    /// Where a downloaded file lands.
    pub fn cached(&self, file_name: &str) -> PathBuf {
        self.cachedir.join(file_name)
    }

    /// Where pacman keeps `file_name` while downloading it: `<cachedir>/<file>.part` (pacman 6),
    /// or `<cachedir>/download-XXXXXX/<file>.part` (pacman 7), if such a file exists now.
    pub fn partial(&self, file_name: &str) -> Option<PathBuf> {
        let part = format!("{file_name}.part");
        let top = self.cachedir.join(&part);
        if top.exists() {
            return Some(top);
        }
        fs::read_dir(&self.cachedir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("download-"))
            .map(|e| e.path().join(&part))
            .find(|p| p.exists())
    }

    /// The synced database file for `repo`.
    pub fn synced_db(&self, repo: &str) -> PathBuf {
        self.dbpath.join("sync").join(format!("{repo}.db"))
    }
}

/// True when the two files have the same bytes (compared in chunks).
#[track_caller]
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| match File::open(p) {
        Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
        Err(e) => panic!("cannot open {}: {e}", p.display()),
    };
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    n
}
