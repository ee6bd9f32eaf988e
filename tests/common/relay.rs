//! The daemon alone on `lo`, as the relay for a test: no pacman.conf, an empty cache, free
//! ports, the given `--upstream` templates and options, debug logs.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Daemon, TempDir, free_port};

/// How long the daemon may take to listen.
const START: Duration = Duration::from_secs(20);

/// A running daemon and its loopback (pacman-facing) address.
pub struct Relay {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    _cache: TempDir,
}

/// Start the daemon on `lo` with these `--upstream` templates, in order, and `extra` options.
pub fn relay_with(upstreams: &[String], extra: &[&str]) -> Relay {
    let cache = TempDir::new("relay-cache");
    let port = free_port().to_string();
    let local = free_port();
    let local_s = local.to_string();
    let mut args: Vec<String> = [
        "-c",
        "/dev/null",
        "--pacman-conf",
        "/nonexistent/pacman.conf",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--port",
        &port,
        "--local-port",
        &local_s,
        "--interface",
        "lo",
        "-d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    for u in upstreams {
        args.push("--upstream".into());
        args.push(u.clone());
    }
    let daemon = Daemon::spawn("flocon", None, env!("CARGO_BIN_EXE_flocon"), &args);
    daemon.wait_for_line_containing(&format!("listening on TCP 127.0.0.1:{local}"), START);
    Relay {
        daemon,
        addr: SocketAddr::from(([127, 0, 0, 1], local)),
        _cache: cache,
    }
}
