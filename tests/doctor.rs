//! `flocon doctor` against the real binary: every check passes (exit 0) on a healthy two-host
//! lab; an nftables rule on a peer that drops TCP 19432 makes it fail naming that peer, its
//! port and the rule to add; a pacman.conf whose first `Server` (in an included mirror list) is
//! not flocon is named by file and line; no daemon is one failed first line. The lab tests
//! need root (and `nft`); the others run on loopback.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::flocon::{self as fl, LOCAL_PORT, PEER_PORT};
use common::lab::Lab;
use common::{Daemon, TempDir, free_port, output_within};

const START: Duration = Duration::from_secs(20);
/// Bound for one doctor run (its probes wait at most 3 s each, all peers at once).
const RUN: Duration = Duration::from_secs(30);

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pacman.conf in `dir` whose `[core]` includes a mirror list that starts with `first`,
/// then a mirror; and an `[extra]` with flocon as a CacheServer.
fn pacman_conf(dir: &TempDir, first: &str, local_port: u16) -> (String, String) {
    let mirrorlist = dir.join("mirrorlist");
    std::fs::write(
        &mirrorlist,
        format!("## the mirror list\n\nServer = {first}\nServer = https://mirror.example/$repo/os/$arch\n"),
    )
    .unwrap();
    let conf = dir.join("pacman.conf");
    std::fs::write(
        &conf,
        format!(
            "[options]\nArchitecture = auto\n\n[core]\nInclude = {ml}\n\n[extra]\nCacheServer = http://localhost:{local_port}/$repo/os/$arch\nInclude = {ml}\n",
            ml = mirrorlist.display()
        ),
    )
    .unwrap();
    (conf.display().to_string(), mirrorlist.display().to_string())
}

fn flocon_server(local_port: u16) -> String {
    format!("http://localhost:{local_port}/$repo/os/$arch")
}

#[test]
fn doctor_names_the_pacman_conf_file_and_line_where_flocon_is_not_first() {
    let dir = TempDir::new("doctor-conf");
    let cache = TempDir::new("doctor-cache");
    let local = free_port();
    let daemon = Daemon::spawn(
        "flocon",
        None,
        fl::bin(),
        fl::loopback_args(cache.path(), free_port(), local),
    );
    // Its first join (which `lo` refuses) is done: the doctor reads its outcome.
    daemon.wait_for_line_containing("could not join the multicast group", START);
    let (conf, mirrorlist) = pacman_conf(&dir, "https://first.example/$repo/os/$arch", local);
    let mut cmd = Command::new(fl::bin());
    let port = local.to_string();
    cmd.args([
        "doctor",
        "-c",
        "/dev/null",
        "--local-port",
        &port,
        "--pacman-conf",
        &conf,
    ]);
    let out = output_within(cmd, RUN);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "ok   daemon: flocon {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    let line = format!(
        "FAIL pacman.conf [core]: {mirrorlist}:3: the first Server is https://first.example/$repo/os/$arch, not flocon: put 'Server = {}' above that line",
        flocon_server(local)
    );
    assert!(stdout.contains(&line), "no {line:?} in\n{stdout}");
    let line = format!("ok   pacman.conf [extra]: flocon is a CacheServer ({conf}:8)");
    assert!(stdout.contains(&line), "no {line:?} in\n{stdout}");
    // On lo there is no multicast and no peer: said, not hidden.
    assert!(
        stdout.contains("FAIL multicast: cannot join group"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ok   cache {}: readable", cache.path().display())),
        "{stdout}"
    );
    drop(daemon);
}

#[test]
fn doctor_without_a_daemon_fails_on_its_first_line() {
    let dir = TempDir::new("doctor-nodaemon");
    let port = free_port();
    let (conf, _) = pacman_conf(&dir, &flocon_server(port), port);
    let mut cmd = Command::new(fl::bin());
    let port_s = port.to_string();
    cmd.args([
        "doctor",
        "-c",
        "/dev/null",
        "--local-port",
        &port_s,
        "--pacman-conf",
        &conf,
    ]);
    let out = output_within(cmd, RUN);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "FAIL daemon: no flocon daemon answers on 127.0.0.1:{port}: connection refused"
        )),
        "{stdout}"
    );
    // pacman.conf is still checked: flocon is first in both repositories.
    assert!(
        stdout.contains("ok   pacman.conf [core]: flocon is the first Server"),
        "{stdout}"
    );
    assert!(stdout.contains("ok   pacman.conf [extra]"), "{stdout}");
}

/// A two-host lab with flocon on each, known to each other, and a pacman.conf for h0 that
/// puts flocon first.
fn healthy_lan(test: &str) -> Option<(Lab, Vec<fl::Host>, TempDir, String)> {
    if !common::require_root(test) || !common::require_tools(test, &["nft"]) {
        return None;
    }
    let lab = Lab::new(2)?;
    let hosts = fl::spawn_hosts(&lab, 2, &[]);
    fl::wait_mesh(&lab, &hosts, Duration::from_secs(10));
    let dir = TempDir::new("doctor-lab");
    let (conf, _) = pacman_conf(&dir, &flocon_server(LOCAL_PORT), LOCAL_PORT);
    Some((lab, hosts, dir, conf))
}

fn doctor_in(lab: &Lab, i: usize, conf: &str) -> Output {
    let port = LOCAL_PORT.to_string();
    lab.exec_timeout(
        i,
        fl::bin(),
        [
            "doctor",
            "-c",
            "/dev/null",
            "--local-port",
            &port,
            "--pacman-conf",
            conf,
        ],
        RUN,
    )
}

#[test]
fn doctor_passes_on_a_healthy_lan_and_names_a_firewalled_peer() {
    let test = "doctor_passes_on_a_healthy_lan_and_names_a_firewalled_peer";
    let Some((lab, hosts, _dir, conf)) = healthy_lan(test) else {
        return;
    };
    let out = doctor_in(&lab, 0, &conf);
    let (stdout, stderr) = texts(&out);
    eprintln!("flocon doctor on h0:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let peer = format!("peer {:016x} at {}", hosts[1].id, hosts[1].ip);
    for want in [
        "ok   multicast: group 239.255.19.32 joined on eth0".to_owned(),
        "ok   multicast: 1 peers heard".to_owned(),
        "ok   pacman.conf [core]: flocon is the first Server".to_owned(),
        format!(
            "ok   {peer} ({}/{}): TCP port {PEER_PORT} answers",
            hosts[1].distro, hosts[1].arch
        ),
        format!("ok   {peer}: clock within 5 min 0 s of this host's"),
        format!("ok   cache {}: readable", hosts[0].cache.path().display()),
    ] {
        assert!(stdout.contains(&want), "no {want:?} in\n{stdout}");
    }

    // A firewall on h1 that drops its TCP port (UDP still passes: it is heard by multicast).
    for args in [
        &["add", "table", "inet", "flocontest"][..],
        &[
            "add",
            "chain",
            "inet",
            "flocontest",
            "input",
            "{",
            "type",
            "filter",
            "hook",
            "input",
            "priority",
            "0",
            ";",
            "}",
        ][..],
        &[
            "add",
            "rule",
            "inet",
            "flocontest",
            "input",
            "tcp",
            "dport",
            "19432",
            "drop",
        ][..],
    ] {
        lab.exec_ok(1, "nft", args);
    }
    let out = doctor_in(&lab, 0, &conf);
    let (stdout, stderr) = texts(&out);
    eprintln!("flocon doctor on h0, h1 firewalled:\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{stdout}");
    let want = format!(
        "FAIL {peer} ({}/{}) heard by multicast",
        hosts[1].distro, hosts[1].arch
    );
    assert!(fails[0].starts_with(&want), "{stdout}");
    assert!(
        fails[0].contains(&format!(
            "its TCP port {}:{PEER_PORT} does not answer (no answer in 3 s: a firewall drops it)",
            hosts[1].ip
        )),
        "{stdout}"
    );
    assert!(
        fails[0].ends_with(&format!(
            "nft add rule inet filter input ip saddr {} tcp dport {PEER_PORT} accept",
            lab.subnet()
        )),
        "{stdout}"
    );
    // From h1's side, h0 still answers.
    let out = doctor_in(&lab, 1, &conf);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
}
