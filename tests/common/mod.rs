//! Shared helpers for the integration tests: start processes and read their output
//! ([`daemon`]), talk HTTP over plain sockets ([`http`]), build multi-host labs out of network
//! namespaces ([`lab`]), make pacman packages, repositories and clients ([`pacman`]) and run an
//! upstream mirror ([`mirror`]). Also small things every test wants: [`TempDir`], free ports,
//! bounded waits, commands with a timeout, and the root/tool checks that decide whether a test
//! runs or is skipped.
//!
//! It owns no part of the daemon and never imports the crate: tests talk to the real binary over
//! real sockets. Every wait here is bounded and panics with what it awaited and what it saw.
//! Network traffic goes only to loopback or to lab namespaces the test made itself.
//!
//! Each test file does `mod common;` and uses a part of this, so unused items must not warn.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod fake_peer;
pub mod fake_server;
pub mod flocon;
pub mod http;
pub mod lab;
pub mod mirror;
pub mod pacman;
pub mod relay;
pub mod tls;

pub use daemon::Daemon;
pub use http::{HttpConn, Response, http_get};
pub use lab::Lab;
pub use mirror::Mirror;

use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long helpers wait when the caller does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// True when the environment says we run in CI (`CI=true`): skipping is then an error.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Decide whether a test that needs root runs: true when root; otherwise prints why the test
/// is skipped and returns false, or panics when `CI=true` (there every test must run).
#[track_caller]
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if is_ci() {
        panic!("{test} needs root and CI=true: run the tests as root in CI");
    }
    eprintln!("skipping: {test} needs root (CI=true makes this fatal)");
    false
}

/// Where `program` is on `PATH`, if anywhere.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Decide whether a test that needs external programs runs: true when all are installed;
/// otherwise prints which are missing and returns false, or panics when `CI=true`.
#[track_caller]
pub fn require_tools(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test} needs {} (as root, bash ci/install-packages.sh installs the Debian packages of ci/debian-packages.txt)",
        missing.join(", ")
    );
    if is_ci() {
        panic!("{msg}; CI=true makes this fatal");
    }
    eprintln!("skipping: {msg} (CI=true makes this fatal)");
    false
}

/// Poll `probe` every few milliseconds until it returns `Some`, at most `timeout`.
/// Panics with `what` and the last value `describe` gives when it times out.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last seen: {}",
                describe()
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A unique directory under the system temp dir, removed with everything in it on drop.
/// Set `FLOCON_KEEP_TMP=1` to keep it for debugging (its path is printed).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A number unique within this process (for names of dirs, namespaces, ...).
pub fn unique_number() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

impl TempDir {
    /// Make `<tmp>/flocon-<label>-<pid>-<n>-<nanos>`.
    #[track_caller]
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "flocon-{label}-{}-{}-{nanos}",
            std::process::id(),
            unique_number()
        ));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create temp dir {}: {e}", path.display());
        }
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Create (with parents) a subdirectory and return its path.
    #[track_caller]
    pub fn mkdir(&self, p: impl AsRef<Path>) -> PathBuf {
        let dir = self.path.join(p);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FLOCON_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
#[track_caller]
pub fn free_tcp_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("cannot bind 127.0.0.1:0 (tcp): {e}"),
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
#[track_caller]
pub fn free_udp_port() -> u16 {
    match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("cannot bind 127.0.0.1:0 (udp): {e}"),
    }
}

/// A port number free on 127.0.0.1 for both TCP and UDP a moment ago (also free on the
/// wildcard address, since daemons bind their peer and discovery sockets there).
///
/// It is picked below the kernel's ephemeral range (`ip_local_port_range`), not with
/// `bind(0)`: a port from that range can be taken by any outgoing connection (the tests make
/// thousands) between this check and the daemon's own bind, which then fails.
#[track_caller]
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, end) = (10_000u16, ephemeral_low.max(12_000));
    let span = u64::from(end - first);
    // Threads of one test binary take turns; binaries start at a place of their own.
    let seed = u64::from(std::process::id()) * 7919;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + ((seed + n) % span) as u16;
        // One at a time: a socket on 127.0.0.1:p would make binding 0.0.0.0:p fail.
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("found no port in {first}..{end} free for both TCP and UDP in 2000 tries");
}

/// `127.0.0.1:<free port>`.
/// The descriptor of process `pid` open on a file under `dir` (`/proc/PID/fd/N`): how a test
/// reaches a spool file, which has no name (`O_TMPFILE`).
pub fn fd_under(pid: u32, dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|fd| std::fs::read_link(fd).is_ok_and(|target| target.starts_with(dir)))
}

pub fn free_loopback_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// A command that runs `program` inside network namespace `ns` (through `ip netns exec`,
/// which execs it, so the child's pid is the program's), or directly when `ns` is `None`.
/// Proxy variables are removed so HTTP clients never leave the test's own addresses.
pub fn netns_command(ns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new(which("ip").unwrap_or_else(|| PathBuf::from("ip")));
            c.arg("netns").arg("exec").arg(ns).arg(program);
            c
        }
        None => Command::new(program),
    };
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run `cmd` to completion with stdin closed and output captured, killing it and panicking
/// if it takes longer than `timeout`. Output is returned whatever the exit status.
#[track_caller]
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start {shown}: {e}"),
    };
    let mut out = child.stdout.take().map(read_all_in_thread);
    let mut err = child.stderr.take().map(read_all_in_thread);
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => panic!("cannot wait for {shown}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.take().map(|h| h.join().unwrap_or_default());
            let stderr = err.take().map(|h| h.join().unwrap_or_default());
            panic!(
                "{shown} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout.unwrap_or_default()),
                String::from_utf8_lossy(&stderr.unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    // The pipes close when the process (and anything it left behind holding them) is gone;
    // a background child keeping them open would block here, so give it a bound as well.
    let stdout = join_within(out, deadline.max(Instant::now() + Duration::from_secs(2)));
    let stderr = join_within(err, deadline.max(Instant::now() + Duration::from_secs(2)));
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Like [`output_within`], but panics (showing the output) unless the command succeeded.
#[track_caller]
pub fn run_ok(cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let out = output_within(cmd, timeout);
    if !out.status.success() {
        panic!("{shown} failed: {}\n{}", out.status, show_output(&out));
    }
    out
}

/// Stdout and stderr of `out` as text, for panic messages.
pub fn show_output(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_all_in_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_within(h: Option<thread::JoinHandle<Vec<u8>>>, deadline: Instant) -> Vec<u8> {
    let Some(h) = h else { return Vec::new() };
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        b"<output still held open by a leftover process>".to_vec()
    }
}
