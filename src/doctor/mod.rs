//! `flocon doctor`: checks that flocon works on this host and says how to fix what does not,
//! one line each (`ok`, `FAIL`, or `note` for a fact that is not a fault), exit status 0 only
//! when nothing failed.
//!
//! The daemon's side of things comes from its JSON status ([`crate::status::JSON_PATH`]): the
//! multicast group, the peers, bans, the cache directories as its own user sees them.
//! pacman.conf is read here with the daemon's parser ([`crate::config::flocon_placement`]).
//! What the doctor finds out itself, with bounded waits, is in `probe.rs`: each peer's TCP
//! port and clock. The judging functions are pure and take those facts as values.

pub mod probe;

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::config::{Placement, RealFs, Settings, flocon_placement};
use crate::status::json::{self, Value};
use crate::status::{JSON_PATH, ask, show};

/// A peer clock further off than this is a fault (pacman and TLS dislike it, and signatures
/// made "in the future" fail).
pub const CLOCK_TOLERANCE_SECS: i64 = 300;
/// Peers whose TCP port is tried, at most.
pub const MAX_PEERS_PROBED: usize = 256;
/// Peers whose clock is asked, at most.
pub const MAX_CLOCKS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail,
    Note,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub verdict: Verdict,
    pub text: String,
}

fn ok(text: String) -> Check {
    Check {
        verdict: Verdict::Ok,
        text,
    }
}

fn fail(text: String) -> Check {
    Check {
        verdict: Verdict::Fail,
        text,
    }
}

fn note(text: String) -> Check {
    Check {
        verdict: Verdict::Note,
        text,
    }
}

/// The report's text: one line per check.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Fail => "FAIL",
            Verdict::Note => "note",
        };
        let _ = writeln!(out, "{tag} {}", c.text);
    }
    out
}

/// No check failed.
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

/// What pacman.conf at `path` says, repository by repository.
pub fn pacman_conf_checks(
    path: &Path,
    placements: &[Placement],
    warnings: &[String],
    local_port: u16,
) -> Vec<Check> {
    let flocon = format!("http://localhost:{local_port}/$repo/os/$arch");
    if placements.is_empty() {
        let why = warnings
            .first()
            .map_or_else(|| "it has no repository section".to_owned(), Clone::clone);
        return vec![fail(format!(
            "pacman.conf {}: no repository to check ({why}); pacman uses flocon only through a 'Server = {flocon}' or 'CacheServer = {flocon}' line in each repository",
            path.display()
        ))];
    }
    placements
        .iter()
        .map(|p| {
            let repo = &p.repo;
            if p.server_first {
                let at = p.first_server.as_ref().map_or("?", |(at, _)| at.as_str());
                ok(format!("pacman.conf [{repo}]: flocon is the first Server ({at})"))
            } else if let Some(at) = &p.cache_server {
                ok(format!("pacman.conf [{repo}]: flocon is a CacheServer ({at})"))
            } else {
                match &p.first_server {
                    Some((at, url)) => fail(format!(
                        "pacman.conf [{repo}]: {at}: the first Server is {url}, not flocon: put 'Server = {flocon}' above that line, or add 'CacheServer = {flocon}' to [{repo}] at {} (pacman 6.1 and later)",
                        p.header_at
                    )),
                    None => fail(format!(
                        "pacman.conf [{repo}] ({}): no Server line: add 'Server = {flocon}' (or 'CacheServer = {flocon}') to it",
                        p.header_at
                    )),
                }
            }
        })
        .collect()
}

/// One known peer, as the daemon sees it and as the doctor's probes found it.
#[derive(Debug)]
pub struct PeerProbe {
    pub id: String,
    pub addr: SocketAddr,
    pub distro: String,
    pub arch: String,
    pub compatible: bool,
    pub heard_secs_ago: u64,
    pub banned: Option<String>,
    /// Its TCP port: accepted, or why not.
    pub tcp: Result<(), io::Error>,
    /// Its clock minus ours in seconds, if it was asked and told.
    pub clock: Option<i64>,
}

/// The peers of the JSON status (at most [`MAX_PEERS_PROBED`]), not probed yet.
pub fn peers_of(status: &Value) -> Vec<PeerProbe> {
    let mut out = Vec::new();
    for p in status.get("peers").map(Value::as_array).unwrap_or(&[]) {
        let (Some(ip), Some(port)) = (
            p.str_at("address").and_then(|a| a.parse::<IpAddr>().ok()),
            p.u64_at("port").and_then(|n| u16::try_from(n).ok()),
        ) else {
            continue;
        };
        // A link-local address is reached through the interface its zone names.
        let addr = match (ip, p.str_at("zone").and_then(probe::interface_index)) {
            (IpAddr::V6(v6), Some(index)) => {
                SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, index))
            }
            _ => SocketAddr::new(ip, port),
        };
        out.push(PeerProbe {
            id: p.str_at("id").unwrap_or("?").to_owned(),
            addr,
            distro: p.str_at("distro").unwrap_or("?").to_owned(),
            arch: p.str_at("arch").unwrap_or("?").to_owned(),
            compatible: p.get("compatible").and_then(Value::as_bool) == Some(true),
            heard_secs_ago: p.u64_at("heard_secs_ago").unwrap_or(0),
            banned: p.str_at("banned").map(str::to_owned),
            tcp: Err(io::Error::other("not tried")),
            clock: None,
        });
        if out.len() >= MAX_PEERS_PROBED {
            break;
        }
    }
    out
}

/// The daemon's own facts: multicast, the cache directories.
pub fn daemon_checks(status: &Value) -> Vec<Check> {
    let mut out = Vec::new();
    let none = Value::Null;
    let m = status.get("multicast").unwrap_or(&none);
    let group = m.str_at("group").unwrap_or("?");
    let port = status
        .get("host")
        .and_then(|h| h.u64_at("peer_port"))
        .unwrap_or(19432);
    let joined: Vec<&str> = m
        .get("joined")
        .map(|j| j.as_array().iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in &joined {
        out.push(ok(format!("multicast: group {group} joined on {name}")));
    }
    let group6 = m.str_at("group6").unwrap_or("?");
    let joined6: Vec<&str> = m
        .get("joined6")
        .map(|j| j.as_array().iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in &joined6 {
        out.push(ok(format!("multicast: group {group6} joined on {name}")));
    }
    for e in m.get("join_errors").map(Value::as_array).unwrap_or(&[]) {
        out.push(fail(format!(
            "multicast: cannot join group {group} on {}: {}: check that the interface is up and has an IPv4 address or an IPv6 link-local address, or leave it out with --interface",
            e.str_at("interface").unwrap_or("?"),
            e.str_at("error").unwrap_or("?")
        )));
    }
    if joined.is_empty() && joined6.is_empty() {
        out.push(fail(format!(
            "multicast: group {group} joined on no interface: flocon finds no peer until an up, multicast-capable interface with an IPv4 address or an IPv6 link-local address exists ('systemctl reload flocon' retries at once)"
        )));
    }
    let peers = status.get("peers").map(Value::as_array).unwrap_or(&[]);
    let hello_ago = m.u64_at("hello_secs_ago").unwrap_or(0);
    let since_hello = m.u64_at("peers_heard_since_hello").unwrap_or(0);
    if peers.is_empty() {
        out.push(fail(format!(
            "multicast: no peer heard ({} since the last HELLO): if other hosts of this LAN run flocon, multicast does not get through: allow UDP {port} from the LAN in each host's firewall (see README, Firewall), and check that the hosts are on one network segment (same VLAN, no client isolation on the Wi-Fi, IGMP snooping with a querier)",
            show::seconds(hello_ago)
        )));
    } else if since_hello == 0 && hello_ago >= 5 {
        out.push(fail(format!(
            "multicast: {} peers known but none answered this host's HELLO {} ago: multicast from this host does not reach them: allow UDP {port} from the LAN in their firewalls, and check the network between them",
            peers.len(),
            show::seconds(hello_ago)
        )));
    } else {
        out.push(ok(format!(
            "multicast: {} peers heard, {since_hello} since this host's HELLO {} ago",
            peers.len(),
            show::seconds(hello_ago)
        )));
    }
    for line in status
        .get("static_peers")
        .map(Value::as_array)
        .unwrap_or(&[])
    {
        let line = line.as_str().unwrap_or("?");
        if line.contains(": unresolved") {
            out.push(fail(format!(
                "{line}: check the Peer line's host name (the system resolver, as for mirrors, must know it)"
            )));
        } else {
            out.push(ok(line.to_owned()));
        }
    }
    if let Some(secret) = status.get("secret").filter(|s| **s != Value::Null) {
        out.push(ok(format!(
            "shared secret: set; {} datagrams and {} peer requests refused since start",
            secret.u64_at("datagrams_refused").unwrap_or(0),
            secret.u64_at("requests_refused").unwrap_or(0)
        )));
        for src in secret.get("sources").map(Value::as_array).unwrap_or(&[]) {
            out.push(note(format!(
                "shared secret: refused {} datagrams and {} requests from {}: a host without the secret, with another one, or whose clock is more than 30 s off this host's (if it is one of yours: compare the secret files, and turn on time synchronisation)",
                src.u64_at("datagrams").unwrap_or(0),
                src.u64_at("requests").unwrap_or(0),
                src.str_at("address").unwrap_or("?")
            )));
        }
    }
    for d in status.get("cache_dirs").map(Value::as_array).unwrap_or(&[]) {
        let path = d.str_at("path").unwrap_or("?");
        match d.str_at("error") {
            None => out.push(ok(format!("cache {path}: readable by flocon's user"))),
            Some(e) => out.push(fail(format!(
                "cache {path}: flocon's user cannot read it ({e}): make it readable by others, 'chmod o+rx {path}' (pacman creates it 0755), or set CacheDir in /etc/flocon.conf"
            ))),
        }
    }
    out
}

/// The peers: distribution and architecture, bans, TCP, clocks. `networks`: this host's IPv4
/// networks, for the firewall rule.
pub fn peer_checks(
    me: &str,
    peers: &[PeerProbe],
    networks: &[(std::net::Ipv4Addr, u8)],
) -> Vec<Check> {
    let mut out = Vec::new();
    if !peers.is_empty() && !peers.iter().any(|p| p.compatible) {
        out.push(fail(format!(
            "peers: none is {me} like this host: they share only files identical by their sync database hash; if a distribution or architecture is wrong, set Distro or Architecture in /etc/flocon.conf"
        )));
    }
    for p in peers {
        let who = format!("peer {} at {}", p.id, p.addr.ip());
        let kind = format!("{}/{}", p.distro, p.arch);
        if !p.compatible {
            out.push(note(format!(
                "{who} is {kind}, this host {me}: only files identical by their sync database hash are shared with it"
            )));
        }
        if let Some(why) = &p.banned {
            out.push(fail(format!(
                "{who} is banned: {why}: its cache holds a bad copy; on that host, 'flocon status' and its log name the file: delete it there (the ban ends by itself)"
            )));
        }
        match &p.tcp {
            Ok(()) => out.push(ok(format!(
                "{who} ({kind}): TCP port {} answers",
                p.addr.port()
            ))),
            Err(e) => {
                let lan = probe::lan_of(p.addr.ip(), networks);
                let family = if p.addr.is_ipv4() { "ip" } else { "ip6" };
                out.push(fail(format!(
                    "{who} ({kind}) heard by multicast {} ago, but its TCP port {} does not answer ({}): on that host, let the LAN in: nft add rule inet filter input {family} saddr {lan} tcp dport {} accept",
                    show::seconds(p.heard_secs_ago),
                    p.addr,
                    describe_connect_error(e),
                    p.addr.port()
                )));
            }
        }
        if let Some(off) = p.clock {
            if off.abs() > CLOCK_TOLERANCE_SECS {
                let way = if off > 0 { "ahead of" } else { "behind" };
                out.push(fail(format!(
                    "{who}: its clock is {} {way} this host's: turn on time synchronisation on the host that is wrong ('timedatectl set-ntp true')",
                    show::seconds(off.unsigned_abs())
                )));
            } else {
                out.push(ok(format!(
                    "{who}: clock within {} of this host's ({off:+} s)",
                    show::seconds(CLOCK_TOLERANCE_SECS as u64)
                )));
            }
        }
    }
    out
}

fn describe_connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => "no answer in 3 s: a firewall drops it".to_owned(),
        io::ErrorKind::ConnectionRefused => {
            "refused: a firewall rejects it, or nothing listens".to_owned()
        }
        _ => e.to_string(),
    }
}

/// Runs every check for `settings` (the daemon at `settings.local_port`, pacman.conf at
/// `settings.pacman_conf`): the report's lines.
pub fn run(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    let status = match ask::get(settings.local_port, JSON_PATH) {
        Ok((200, body)) => json::parse(&body).map_err(|e| {
            format!(
                "the answer on 127.0.0.1:{} is not flocon's JSON status ({e})",
                settings.local_port
            )
        }),
        Ok((code, _)) => Err(format!(
            "127.0.0.1:{} answers {code} to {JSON_PATH}: is it an older flocon? restart it",
            settings.local_port
        )),
        Err(e) => Err(format!(
            "{}: start it with 'sudo systemctl enable --now flocon'",
            ask::no_daemon(settings.local_port, &e)
        )),
    };
    match &status {
        Ok(v) => checks.push(ok(format!(
            "daemon: flocon {} answers on 127.0.0.1:{}",
            v.str_at("version").unwrap_or("?"),
            settings.local_port
        ))),
        Err(why) => checks.push(fail(format!("daemon: {why}"))),
    }
    let (placements, warnings) =
        flocon_placement(&settings.pacman_conf, &RealFs, settings.local_port);
    checks.extend(pacman_conf_checks(
        &settings.pacman_conf,
        &placements,
        &warnings,
        settings.local_port,
    ));
    let Ok(status) = status else {
        return checks;
    };
    checks.extend(daemon_checks(&status));
    let mut peers = peers_of(&status);
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    for (p, r) in peers
        .iter_mut()
        .zip(probe::connect_all(&addrs, probe::CONNECT_TIMEOUT))
    {
        p.tcp = r;
    }
    for p in peers.iter_mut().filter(|p| p.tcp.is_ok()).take(MAX_CLOCKS) {
        p.clock = probe::clock_offset(p.addr, probe::CLOCK_TIMEOUT)
            .ok()
            .flatten();
    }
    let host = status.get("host");
    let me = format!(
        "{}/{}",
        host.and_then(|h| h.str_at("distro")).unwrap_or("?"),
        host.and_then(|h| h.str_at("arch")).unwrap_or("?")
    );
    checks.extend(peer_checks(&me, &peers, &probe::local_networks()));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryFs;

    fn verdicts(checks: &[Check]) -> Vec<Verdict> {
        checks.iter().map(|c| c.verdict).collect()
    }

    #[test]
    fn pacman_conf_names_the_file_and_line() {
        let fs = MemoryFs::new()
            .with(
                "/p.conf",
                "[core]\nInclude = /ml\n[extra]\nCacheServer = http://localhost:19433/$repo/os/$arch\n[x]\n",
            )
            .with("/ml", "\nServer = https://m.example/$repo/os/$arch\n");
        let (placements, warnings) = flocon_placement(Path::new("/p.conf"), &fs, 19433);
        let checks = pacman_conf_checks(Path::new("/p.conf"), &placements, &warnings, 19433);
        assert_eq!(
            verdicts(&checks),
            [Verdict::Fail, Verdict::Ok, Verdict::Fail]
        );
        assert!(
            checks[0]
                .text
                .contains("/ml:2: the first Server is https://m.example/$repo/os/$arch"),
            "{}",
            checks[0].text
        );
        assert!(
            checks[0]
                .text
                .contains("Server = http://localhost:19433/$repo/os/$arch")
        );
        assert!(checks[1].text.contains("CacheServer (/p.conf:4)"));
        assert!(checks[2].text.contains("[x] (/p.conf:5): no Server line"));
        let none = pacman_conf_checks(
            Path::new("/nope"),
            &[],
            &["/nope: cannot read".into()],
            19433,
        );
        assert_eq!(verdicts(&none), [Verdict::Fail]);
        assert!(none[0].text.contains("/nope: cannot read"));
    }

    #[test]
    fn daemon_facts_are_judged() {
        let v = json::parse(
            r#"{"host":{"peer_port":19432},"multicast":{"group":"239.255.19.32","joined":["eth0"],
            "join_errors":[{"interface":"wlan0","error":"No such device"}],"hello_secs_ago":30,
            "peers_heard_since_hello":0},"peers":[{"id":"a","address":"10.0.0.2","port":19432}],
            "cache_dirs":[{"path":"/c","readable":false,"error":"Permission denied"}]}"#,
        )
        .unwrap();
        let checks = daemon_checks(&v);
        assert_eq!(
            verdicts(&checks),
            [Verdict::Ok, Verdict::Fail, Verdict::Fail, Verdict::Fail]
        );
        assert!(checks[1].text.contains("wlan0: No such device"));
        assert!(
            checks[2]
                .text
                .contains("none answered this host's HELLO 30 s ago")
        );
        assert!(checks[3].text.contains("chmod o+rx /c"));
        let guarded = json::parse(
            r#"{"multicast":{"joined":["eth0"]},"peers":[{"id":"a"}],
            "static_peers":["static peer nas: 10.8.0.2:19432","static peer gone.lan: unresolved (the system resolver found no address)"],
            "secret":{"datagrams_refused":4,"requests_refused":1,
            "sources":[{"address":"10.0.0.9","datagrams":4,"requests":1}]}}"#,
        )
        .unwrap();
        let checks = daemon_checks(&guarded);
        assert_eq!(
            verdicts(&checks),
            [
                Verdict::Ok,
                Verdict::Ok,
                Verdict::Ok,
                Verdict::Fail,
                Verdict::Ok,
                Verdict::Note
            ]
        );
        assert!(checks[3].text.contains("gone.lan: unresolved"));
        assert!(
            checks[4]
                .text
                .contains("4 datagrams and 1 peer requests refused")
        );
        assert!(checks[5].text.contains("from 10.0.0.9"));
        // IPv6 only: the IPv6 group joined is joined; a link-local peer is probed through
        // the interface its zone names.
        let v6 = json::parse(
            r#"{"multicast":{"group":"239.255.19.32","joined":[],"group6":"ff02::19:432",
            "joined6":["lo"],"peers_heard_since_hello":1},
            "peers":[{"id":"b","address":"fe80::2","port":19432,"zone":"lo"}]}"#,
        )
        .unwrap();
        let checks = daemon_checks(&v6);
        assert_eq!(verdicts(&checks), [Verdict::Ok, Verdict::Ok]);
        assert!(checks[0].text.contains("group ff02::19:432 joined on lo"));
        let probes = peers_of(&v6);
        assert_eq!(probes[0].addr.to_string(), "[fe80::2%1]:19432");
        let lonely = json::parse(r#"{"multicast":{"joined":["eth0"]},"peers":[]}"#).unwrap();
        let checks = daemon_checks(&lonely);
        assert_eq!(verdicts(&checks), [Verdict::Ok, Verdict::Fail]);
        assert!(checks[1].text.contains("no peer heard"));
    }

    #[test]
    fn an_unreachable_peer_gets_its_firewall_rule() {
        let peer = |ip: &str, compatible, tcp: io::Result<()>, clock| PeerProbe {
            id: "00000000000000aa".into(),
            addr: SocketAddr::new(ip.parse().unwrap(), 19432),
            distro: "arch".into(),
            arch: if compatible { "x86_64" } else { "aarch64" }.into(),
            compatible,
            heard_secs_ago: 4,
            banned: None,
            tcp,
            clock,
        };
        let nets = [("10.9.8.1".parse().unwrap(), 24)];
        let checks = peer_checks(
            "arch/x86_64",
            &[
                peer("10.9.8.2", true, Ok(()), Some(-2)),
                peer("10.9.8.3", true, Err(io::ErrorKind::TimedOut.into()), None),
                peer("10.9.8.4", false, Ok(()), Some(3600)),
            ],
            &nets,
        );
        assert_eq!(
            verdicts(&checks),
            [
                Verdict::Ok,
                Verdict::Ok,
                Verdict::Fail,
                Verdict::Note,
                Verdict::Ok,
                Verdict::Fail
            ]
        );
        assert!(checks[1].text.contains("(-2 s)"));
        assert!(
            checks[2].text.contains("10.9.8.3:19432 does not answer"),
            "{}",
            checks[2].text
        );
        assert!(checks[2].text.contains(
            "nft add rule inet filter input ip saddr 10.9.8.0/24 tcp dport 19432 accept"
        ));
        assert!(checks[5].text.contains("1 h 0 min ahead of"));
        let only_other = peer_checks(
            "arch/x86_64",
            &[peer("10.9.8.4", false, Ok(()), None)],
            &nets,
        );
        assert_eq!(
            verdicts(&only_other),
            [Verdict::Fail, Verdict::Note, Verdict::Ok]
        );
        assert!(passed(&[ok("x".into()), note("y".into())]));
        assert!(!passed(&[ok("x".into()), fail("y".into())]));
    }
}
