//! The Prometheus text exposition format 0.0.4 of a [`Snapshot`] ([`super::METRICS_PATH`]):
//! each family has its `# HELP` and `# TYPE` lines before its samples; counters end in
//! `_total`; the lookup latency is a histogram in seconds with cumulative buckets. Pure.

use std::fmt::Write as _;

use super::Snapshot;
use crate::relay::{LATENCY_BUCKETS_MS, LatencyHistogram};

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.sample_named(self.name, labels, value);
    }

    fn sample_named(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value with `\`, `"` and newlines escaped, as the format wants.
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn histogram(out: &mut String, name: &'static str, help: &str, h: &LatencyHistogram) {
    let mut f = family(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (i, count) in h.cumulative().iter().enumerate() {
        let le = match LATENCY_BUCKETS_MS.get(i) {
            Some(&ms) => format!("{}", ms as f64 / 1000.0),
            None => "+Inf".to_owned(),
        };
        f.sample_named(&bucket, &[("le", &le)], count);
    }
    f.sample_named(
        &format!("{name}_sum"),
        &[],
        h.sum_micros as f64 / 1_000_000.0,
    );
    f.sample_named(&format!("{name}_count"), &[], h.count);
}

/// The metrics text of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let r = &s.relay;
    let o = &mut out;
    family(
        o,
        "flocon_build_info",
        "gauge",
        "Always 1; the version is a label.",
    )
    .sample(&[("version", &s.version)], 1);
    family(
        o,
        "flocon_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    )
    .sample(&[], s.uptime_secs);
    family(
        o,
        "flocon_relay_requests_total",
        "counter",
        "Package, signature and database requests pacman made to the relay.",
    )
    .sample(&[], r.requests);
    let mut f = family(
        o,
        "flocon_relay_files_total",
        "counter",
        "Files relayed to pacman to their end, by source.",
    );
    f.sample(&[("source", "peer")], r.from_peers);
    f.sample(&[("source", "upstream")], r.from_upstream);
    let mut f = family(
        o,
        "flocon_relay_bytes_total",
        "counter",
        "Body bytes relayed to pacman, by source (bytes from peers did not cross the Internet).",
    );
    f.sample(&[("source", "peer")], r.bytes_from_peers);
    f.sample(&[("source", "upstream")], r.bytes_from_upstream);
    for (name, help, value) in [
        (
            "flocon_relay_redirects_total",
            "Redirects sent to pacman (https mirrors, mirror redirects).",
            r.redirects,
        ),
        (
            "flocon_relay_not_found_total",
            "Requests answered 404 (no peer and no mirror had the file).",
            r.not_found,
        ),
        (
            "flocon_relay_failures_total",
            "Sources that failed (refused, stalled, bad answers).",
            r.failures,
        ),
        (
            "flocon_relay_failovers_total",
            "Transfers moved to the next source in the middle of a body.",
            r.failovers,
        ),
        (
            "flocon_relay_bodies_verified_total",
            "Package bodies that matched their sync database's size and SHA-256.",
            r.verified,
        ),
        (
            "flocon_relay_bodies_wrong_total",
            "Package bodies unlike their sync database (the peers that sent them are banned).",
            r.verify_failures,
        ),
        (
            "flocon_peer_bans_total",
            "Peers banned for sending bytes unlike the sync database.",
            r.bans,
        ),
    ] {
        family(o, name, "counter", help).sample(&[], value);
    }
    let mut f = family(
        o,
        "flocon_lookups_total",
        "counter",
        "Questions to the LAN (who has this file) answered, by outcome.",
    );
    f.sample(&[("result", "found")], r.lookups_found);
    f.sample(
        &[("result", "none")],
        r.lookups.saturating_sub(r.lookups_found),
    );
    histogram(
        o,
        "flocon_lookup_duration_seconds",
        "How long questions to the LAN took to be answered.",
        &r.lookup_latency,
    );
    let compatible = s.peers.iter().filter(|p| p.compatible).count();
    let mut f = family(
        o,
        "flocon_peers",
        "gauge",
        "Peers heard on the multicast group, by whether they share this host's distribution and architecture.",
    );
    f.sample(&[("compatible", "true")], compatible);
    f.sample(&[("compatible", "false")], s.peers.len() - compatible);
    family(o, "flocon_peers_banned", "gauge", "Bans in force.").sample(&[], s.bans.len());
    family(
        o,
        "flocon_transfers_in_flight",
        "gauge",
        "Downloads being relayed to pacman now.",
    )
    .sample(&[], s.transfers.len());
    family(
        o,
        "flocon_multicast_interfaces_joined",
        "gauge",
        "Interfaces the multicast group is joined on.",
    )
    .sample(&[], s.multicast.joined.len());
    if let Some(n) = s.multicast.udp_receive_buffer_errors {
        family(
            o,
            "flocon_udp_receive_buffer_errors_total",
            "counter",
            "UDP datagrams the kernel dropped for a full receive buffer (every UDP socket of this network namespace).",
        )
        .sample(&[], n);
    }
    family(
        o,
        "flocon_cache_summary_names",
        "gauge",
        "Names in this host's cache summary (what its peers know it holds).",
    )
    .sample(&[], s.multicast.summary_names);
    if let Some(secret) = &s.secret {
        let mut f = family(
            o,
            "flocon_secret_refused_total",
            "counter",
            "Datagrams and peer requests refused for a missing or wrong shared secret, and (repeated_datagram) datagrams dropped as taken once already.",
        );
        f.sample(&[("what", "datagram")], secret.datagrams_refused);
        f.sample(&[("what", "repeated_datagram")], secret.datagrams_repeated);
        f.sample(&[("what", "request")], secret.requests_refused);
    }
    let c = &s.server;
    family(
        o,
        "flocon_peer_server_connections",
        "gauge",
        "Connections from peers open now.",
    )
    .sample(&[], s.server_connections);
    for (name, help, value) in [
        (
            "flocon_peer_server_requests_total",
            "Requests peers made to this host's file server.",
            c.requests,
        ),
        (
            "flocon_peer_server_files_total",
            "Files this host's file server sent to peers.",
            c.files,
        ),
        (
            "flocon_peer_server_bytes_total",
            "Body bytes this host's file server sent to peers.",
            c.bytes,
        ),
    ] {
        family(o, name, "counter", help).sample(&[], value);
    }
    let sp = &s.spool;
    let in_flight = sp.files.iter().filter(|f| !f.complete).count();
    let mut f = family(
        o,
        "flocon_spool_files",
        "gauge",
        "Packages in the spool, shared with the LAN: being fetched from upstream, or kept whole.",
    );
    f.sample(&[("state", "in_flight")], in_flight);
    f.sample(&[("state", "kept")], sp.files.len() - in_flight);
    family(
        o,
        "flocon_spool_followers",
        "gauge",
        "Peer connections reading spool files now.",
    )
    .sample(&[], sp.files.iter().map(|f| f.followers).sum::<usize>());
    for (name, help, value) in [
        (
            "flocon_spool_bytes_served_total",
            "Bytes peers read from this host's spool: bytes the LAN did not download again.",
            sp.counters.bytes_served,
        ),
        (
            "flocon_spool_files_total",
            "Packages fetched from upstream and spooled for the LAN.",
            sp.counters.files,
        ),
        (
            "flocon_spool_not_spooled_total",
            "Packages fetched without spooling for lack of room (size cap or free-space floor).",
            sp.counters.refused,
        ),
    ] {
        family(o, name, "counter", help).sample(&[], value);
    }
    let mem = &s.memory;
    if let Some(resident) = mem.resident_bytes {
        // The name every Prometheus client library's process collector uses.
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes (VmRSS).",
        )
        .sample(&[], resident);
    }
    if let Some(anonymous) = mem.anonymous_bytes {
        family(
            o,
            "flocon_memory_anonymous_bytes",
            "gauge",
            "The daemon's own resident memory (RssAnon): heap, stacks, copied pages.",
        )
        .sample(&[], anonymous);
    }
    family(
        o,
        "flocon_memory_given_back_total",
        "counter",
        "Quiet spells after which the daemon unmapped unused code and trimmed its heap.",
    )
    .sample(&[], mem.given_back);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Snapshot;
    use std::time::Duration;

    #[test]
    fn families_have_help_and_type_before_samples() {
        let mut s = Snapshot {
            version: "0.1 \"x\"\\".into(),
            ..Snapshot::default()
        };
        s.relay.requests = 3;
        s.relay.from_peers = 1;
        s.relay.bytes_from_peers = 1000;
        s.relay.lookups = 2;
        s.relay.lookups_found = 1;
        s.relay.lookup_latency.observe(Duration::from_millis(2));
        s.relay.lookup_latency.observe(Duration::from_millis(300));
        let text = render(&s);
        assert!(
            text.contains("flocon_build_info{version=\"0.1 \\\"x\\\"\\\\\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("flocon_relay_bytes_total{source=\"peer\"} 1000\n"));
        assert!(text.contains("flocon_lookups_total{result=\"none\"} 1\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_sum 0.302\n"));
        assert!(text.contains("flocon_lookup_duration_seconds_count 2\n"));
        // Every sample's family was declared (HELP then TYPE) before it.
        let mut declared: Vec<&str> = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(lines[i - 1].starts_with(&format!("# HELP {name} ")));
                assert!(!declared.contains(&name), "{name} twice");
                declared.push(name);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = declared.last().copied().unwrap_or("");
                assert!(
                    name.starts_with(family),
                    "{line} outside its family {family}"
                );
            }
        }
    }
}
