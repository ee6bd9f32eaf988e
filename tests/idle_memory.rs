//! Memory given back while idle (src/memory/), on the real binary: a daemon quiet for 10 s
//! unmaps the start-up code it no longer runs and trims its heap, then still relays files
//! (the code comes back from the page cache), and does it again after that busy spell. The
//! sizes are read from the daemon's `/proc/PID/status`; the speed of it is not timed here
//! (see bench/ and docs/performance.md for the idle figures).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use ::flocon::status::json;
use common::flocon as fl;
use common::pacman;
use common::{Daemon, Mirror, TempDir, free_loopback_addr, free_port, http_get};

const START: Duration = Duration::from_secs(20);
/// The quiet spell is 10 s; this bounds the wait for its end.
const QUIET_WAIT: Duration = Duration::from_secs(40);
const GAVE_BACK: &str = "idle: gave memory back";

/// (VmRSS, RssFile) of `pid`, in KiB.
fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmRSS:"), field("RssFile:"))
}

/// (before KiB, after KiB, mappings dropped) of a give-back's log line.
fn given_back(line: &str) -> (u64, u64, u64) {
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [.., before, after, mappings] => (before, after, mappings),
        _ => panic!("no figures in {line:?}"),
    }
}

#[test]
fn a_quiet_daemon_gives_memory_back_and_still_relays() {
    if !common::require_tools(
        "a_quiet_daemon_gives_memory_back_and_still_relays",
        &["nginx"],
    ) {
        return;
    }
    let root = TempDir::new("idle-mirror");
    let repo = format!("{}/os/{}", pacman::TEST_REPO, pacman::ARCH);
    root.mkdir(&repo);
    let files: Vec<(String, Vec<u8>)> = (0..3u8)
        .map(|i| {
            let body: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8 ^ i).collect();
            (format!("idle{i}-1.0-1-x86_64.pkg.tar.zst"), body)
        })
        .collect();
    for (name, body) in &files {
        std::fs::write(root.join(&repo).join(name), body).unwrap();
    }
    let mirror = Mirror::start(root.path(), None, free_loopback_addr());
    let cache = TempDir::new("idle-cache");
    let local = free_port();
    let mut args = fl::loopback_args(cache.path(), free_port(), local);
    args.extend([
        "--upstream".to_owned(),
        mirror.server_url(),
        "-d".to_owned(),
    ]);
    let daemon = Daemon::spawn("flocon", None, fl::bin(), &args);
    daemon.wait_for_line_containing(&format!("listening on TCP 127.0.0.1:{local}"), START);
    let pid = daemon.pid();

    // Start-up done and nothing asked: after the quiet spell, the mapped code goes. The
    // daemon's own figures, read just before and after it gives back, and /proc's from here.
    let (rss_started, file_started) = resident(pid);
    let line = daemon.wait_for_line_containing(GAVE_BACK, QUIET_WAIT);
    let (before, after, mappings) = given_back(&line);
    let (rss_quiet, file_quiet) = resident(pid);
    eprintln!(
        "after start: VmRSS {rss_started} KiB, RssFile {file_started} KiB; quiet: VmRSS \
         {rss_quiet} KiB, RssFile {file_quiet} KiB; the daemon: {before} -> {after} KiB, \
         {mappings} mappings"
    );
    assert!(mappings > 0, "{line}");
    assert!(
        after * 2 <= before,
        "resident {before} KiB -> {after} KiB: not given back ({line})"
    );
    assert!(
        rss_quiet < rss_started,
        "VmRSS {rss_started} KiB after start, {rss_quiet} KiB once quiet"
    );

    // The dropped code comes back as it was: the relay works, byte for byte.
    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    for (name, body) in &files {
        let r = http_get(addr, &format!("/{repo}/{name}"), &[]);
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == *body, "{name}: wrong bytes after the drop");
    }

    // And once that busy spell is over, again: the status says twice.
    let seen = daemon.count_lines(|l| l.contains(GAVE_BACK));
    assert_eq!(seen, 1);
    let deadline = std::time::Instant::now() + QUIET_WAIT;
    while daemon.count_lines(|l| l.contains(GAVE_BACK)) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "memory not given back after the busy spell"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = http_get(addr, "/.flocon/status.json", &[]);
    assert_eq!(r.status, 200);
    let v = json::parse(&r.text()).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    let mem = v.get("memory").expect("memory in the JSON status");
    assert_eq!(mem.u64_at("given_back"), Some(2), "{}", r.text());
    let reported = mem.u64_at("resident_bytes").expect("resident_bytes") / 1024;
    let (now, _) = resident(pid);
    assert!(
        reported.abs_diff(now) < 1024,
        "status says {reported} KiB resident, /proc says {now} KiB"
    );
    let metrics = http_get(addr, "/metrics", &[]).text();
    assert!(
        metrics.contains("\nflocon_memory_given_back_total 2\n"),
        "{metrics}"
    );
    drop(daemon);
}
