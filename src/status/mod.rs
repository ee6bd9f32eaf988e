//! What the daemon tells about itself on the loopback port, and what the `flocon status` and
//! `flocon doctor` commands make of it.
//!
//! Owns the [`Snapshot`] (plain data the event loop fills in when a page is asked for), its
//! two machine-readable forms, JSON at [`JSON_PATH`] (`render.rs`) and the Prometheus text
//! format at [`METRICS_PATH`] (`metrics.rs`), the small JSON writer and bounded reader both
//! sides use (`json.rs`), the blocking loopback client of the commands (`ask.rs`) and the text
//! `flocon status` prints for a person (`show.rs`). It does not gather the facts (the event
//! loop does) and does not judge them (`crate::doctor` does). Everything but `ask.rs` is pure.

pub mod ask;
pub mod json;
pub mod metrics;
pub mod render;
pub mod show;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::relay;
use crate::serve;

/// The JSON status. Its first part starts with `.`, which no repository name may, so it can
/// never be a package path (`/$repo/os/$arch/<file>`).
pub const JSON_PATH: &str = "/.flocon/status.json";
/// The Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The `"format"` member of the JSON status; it changes when a member changes meaning.
pub const JSON_FORMAT: u64 = 1;

/// Everything the status pages tell, at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: String,
    pub uptime_secs: u64,
    /// This host as announced.
    pub host_id: u64,
    pub distro: String,
    pub arch: String,
    /// The peer port (TCP file server and UDP discovery) and the loopback port.
    pub peer_port: u16,
    pub local_port: u16,
    pub multicast: Multicast,
    /// Every peer in the table, compatible or not.
    pub peers: Vec<PeerStatus>,
    /// Bans in force (their peer may have left the table).
    pub bans: Vec<BanStatus>,
    pub transfers: Vec<Transfer>,
    pub relay: relay::Counters,
    pub server: serve::Counters,
    /// Peer connections open now.
    pub server_connections: usize,
    pub cache_dirs: Vec<CacheDir>,
    /// One line per static peer (`Peer =`): as given, and its addresses or why it has none.
    pub static_peers: Vec<String>,
    /// With a shared secret: what was refused for want of it.
    pub secret: Option<SecretStatus>,
    /// Packages fetched from upstream and shared while in flight.
    pub spool: SpoolState,
    pub memory: MemoryState,
}

/// The daemon's memory (README "Memory"): resident now, and how often it was given back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// `VmRSS` and `RssAnon` in bytes; `None` without `/proc`.
    pub resident_bytes: Option<u64>,
    pub anonymous_bytes: Option<u64>,
    /// Quiet spells after which memory was given back.
    pub given_back: u64,
}

/// What was refused for want of the shared secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretStatus {
    pub datagrams_refused: u64,
    pub datagrams_repeated: u64,
    pub requests_refused: u64,
    /// (address, datagrams, requests), most refused first, at most
    /// [`crate::secret::refusals::MAX_SOURCES`].
    pub sources: Vec<(IpAddr, u64, u64)>,
}

/// The spool (issue 15): its files, and what it saved the LAN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolState {
    /// `None`: no spool.
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub used_bytes: u64,
    pub files: Vec<crate::spool::SpoolStatus>,
    pub counters: crate::spool::SpoolCounters,
}

/// The multicast side: where the group is joined, and whether peers are heard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multicast {
    pub group: Option<Ipv4Addr>,
    /// Interfaces the group is joined on (the last join).
    pub joined: Vec<String>,
    /// The IPv6 group (`None` without IPv6) and the interfaces it is joined on.
    pub group6: Option<Ipv6Addr>,
    pub joined6: Vec<String>,
    /// Interfaces where joining failed, and why.
    pub join_errors: Vec<(String, String)>,
    /// Seconds since the last HELLO went to the group (at start, on a rejoin).
    pub hello_secs_ago: u64,
    /// Peers heard since that HELLO (peers answer a HELLO at once).
    pub peers_heard_since_hello: usize,
    /// This host's cache summary: its version and how many names it lists.
    pub summary_version: u32,
    pub summary_names: u64,
    /// UDP datagrams the kernel dropped for a full receive buffer (`RcvbufErrors` of
    /// /proc/net/snmp: every UDP socket of the network namespace, not only flocon's).
    pub udp_receive_buffer_errors: Option<u64>,
    /// Announcements refused (a host id from another address than its own, or too many hosts
    /// at one address), and questions left unanswered because their source asked too fast.
    pub refused_announcements: u64,
    pub refused_answers: u64,
    /// Datagrams dropped because their source is not a host of the link they came in on.
    pub off_link_datagrams: u64,
}

/// `RcvbufErrors` of the `Udp:` lines of /proc/net/snmp.
pub fn udp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// One peer of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub host_id: u64,
    /// Its file server.
    pub addr: SocketAddr,
    /// The name of the interface a link-local `addr` is reached on (its zone), if it is one.
    pub zone: Option<String>,
    /// The source addresses it is heard from (one per IP family), zones by name.
    pub heard_at: Vec<String>,
    pub distro: String,
    pub arch: String,
    /// Same distribution and architecture as this host.
    pub compatible: bool,
    pub heard_secs_ago: u64,
    /// Whole answers it gave this host's relay, and their body bytes.
    pub files_to_us: u64,
    pub bytes_to_us: u64,
    /// Skipped for a minute after a failure.
    pub backed_off: bool,
    /// Why it is banned, if it is.
    pub banned: Option<String>,
    /// Names in its cache summary as held here; `None`: none held (asked about every file).
    pub summary_names: Option<u64>,
    /// Its smoothed answer time to questions, in microseconds, once measured.
    pub answer_us: Option<u64>,
    /// It left a question unanswered and was not heard since: not asked until it is.
    pub silent: bool,
}

/// A ban in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanStatus {
    pub host_id: u64,
    pub ip: IpAddr,
    pub secs_left: u64,
    pub reason: String,
}

/// A relayed download in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub file: String,
    /// `peer <id> at <addr>` or `upstream <url>`; `None` while peers are asked.
    pub source: Option<String>,
    pub received: u64,
    pub total: Option<u64>,
}

/// A cache directory, and whether the daemon (as its own user) can list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDir {
    pub path: PathBuf,
    /// `None` when it can be read, else why not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcvbuf_errors_are_read_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
Udp: 10 0 7 12 5 0 0 3 0\n\
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdpLite: 0 0 0 0 9 0\n";
        assert_eq!(udp_rcvbuf_errors(snmp), Some(5));
        assert_eq!(udp_rcvbuf_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(udp_rcvbuf_errors(""), None);
        let real = std::fs::read_to_string("/proc/net/snmp").unwrap();
        assert!(udp_rcvbuf_errors(&real).is_some());
    }
}
