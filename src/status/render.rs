//! The JSON status ([`super::JSON_PATH`]): a [`Snapshot`] written as one JSON object. Host
//! ids are 16 hex digits (a `u64` does not fit a JavaScript number); counts and bytes are
//! integers; a missing value is `null`. README's "Is it working?" describes the members.
//! Pure.

use super::json::Writer;
use super::{JSON_FORMAT, Snapshot};

/// The JSON text of `s`.
pub fn json(s: &Snapshot) -> String {
    let mut w = Writer::new();
    w.open_object();
    w.key("format").number(JSON_FORMAT);
    w.key("version").string(&s.version);
    w.key("uptime_secs").number(s.uptime_secs);
    w.key("host").open_object();
    w.key("id").string(&format!("{:016x}", s.host_id));
    w.key("distro").string(&s.distro);
    w.key("arch").string(&s.arch);
    w.key("peer_port").number(u64::from(s.peer_port));
    w.key("local_port").number(u64::from(s.local_port));
    w.close_object();

    let m = &s.multicast;
    w.key("multicast").open_object();
    w.key("group")
        .opt_string(m.group.map(|g| g.to_string()).as_deref());
    w.key("joined").open_array();
    for name in &m.joined {
        w.string(name);
    }
    w.close_array();
    w.key("group6")
        .opt_string(m.group6.map(|g| g.to_string()).as_deref());
    w.key("joined6").open_array();
    for name in &m.joined6 {
        w.string(name);
    }
    w.close_array();
    w.key("join_errors").open_array();
    for (name, error) in &m.join_errors {
        w.open_object();
        w.key("interface").string(name);
        w.key("error").string(error);
        w.close_object();
    }
    w.close_array();
    w.key("hello_secs_ago").number(m.hello_secs_ago);
    w.key("peers_heard_since_hello")
        .number(m.peers_heard_since_hello as u64);
    w.key("summary_version")
        .number(u64::from(m.summary_version));
    w.key("summary_names").number(m.summary_names);
    w.key("refused_announcements")
        .number(m.refused_announcements);
    w.key("refused_answers").number(m.refused_answers);
    w.key("off_link_datagrams").number(m.off_link_datagrams);
    match m.udp_receive_buffer_errors {
        Some(n) => w.key("udp_receive_buffer_errors").number(n),
        None => w.key("udp_receive_buffer_errors").null(),
    };
    w.close_object();

    w.key("static_peers").open_array();
    for line in &s.static_peers {
        w.string(line);
    }
    w.close_array();
    match &s.secret {
        None => {
            w.key("secret").null();
        }
        Some(secret) => {
            w.key("secret").open_object();
            w.key("datagrams_refused").number(secret.datagrams_refused);
            w.key("datagrams_repeated")
                .number(secret.datagrams_repeated);
            w.key("requests_refused").number(secret.requests_refused);
            w.key("sources").open_array();
            for (ip, datagrams, requests) in &secret.sources {
                w.open_object();
                w.key("address").string(&ip.to_string());
                w.key("datagrams").number(*datagrams);
                w.key("requests").number(*requests);
                w.close_object();
            }
            w.close_array();
            w.close_object();
        }
    }

    w.key("peers").open_array();
    for p in &s.peers {
        w.open_object();
        w.key("id").string(&format!("{:016x}", p.host_id));
        w.key("address").string(&p.addr.ip().to_string());
        w.key("port").number(u64::from(p.addr.port()));
        w.key("zone").opt_string(p.zone.as_deref());
        w.key("heard_at").open_array();
        for a in &p.heard_at {
            w.string(a);
        }
        w.close_array();
        w.key("distro").string(&p.distro);
        w.key("arch").string(&p.arch);
        w.key("compatible").boolean(p.compatible);
        w.key("heard_secs_ago").number(p.heard_secs_ago);
        w.key("files_to_us").number(p.files_to_us);
        w.key("bytes_to_us").number(p.bytes_to_us);
        w.key("backed_off").boolean(p.backed_off);
        w.key("banned").opt_string(p.banned.as_deref());
        match p.summary_names {
            Some(n) => w.key("summary_names").number(n),
            None => w.key("summary_names").null(),
        };
        match p.answer_us {
            Some(us) => w.key("answer_us").number(us),
            None => w.key("answer_us").null(),
        };
        w.key("silent").boolean(p.silent);
        w.close_object();
    }
    w.close_array();

    w.key("bans").open_array();
    for b in &s.bans {
        w.open_object();
        w.key("id").string(&format!("{:016x}", b.host_id));
        w.key("address").string(&b.ip.to_string());
        w.key("secs_left").number(b.secs_left);
        w.key("reason").string(&b.reason);
        w.close_object();
    }
    w.close_array();

    w.key("transfers").open_array();
    for t in &s.transfers {
        w.open_object();
        w.key("file").string(&t.file);
        w.key("source").opt_string(t.source.as_deref());
        w.key("received").number(t.received);
        w.key("total").opt_number(t.total);
        w.close_object();
    }
    w.close_array();

    let r = &s.relay;
    w.key("relay").open_object();
    for (name, value) in [
        ("requests", r.requests),
        ("files_from_peers", r.from_peers),
        ("bytes_from_peers", r.bytes_from_peers),
        ("files_from_upstream", r.from_upstream),
        ("bytes_from_upstream", r.bytes_from_upstream),
        ("redirects", r.redirects),
        ("not_found", r.not_found),
        ("failures", r.failures),
        ("failovers", r.failovers),
        ("verified", r.verified),
        ("verify_failures", r.verify_failures),
        ("lookups", r.lookups),
        ("lookups_found", r.lookups_found),
        ("bans", r.bans),
    ] {
        w.key(name).number(value);
    }
    w.close_object();

    let c = &s.server;
    w.key("peer_server").open_object();
    for (name, value) in [
        ("connections_now", s.server_connections as u64),
        ("connections", c.connections),
        ("requests", c.requests),
        ("files", c.files),
        ("bytes", c.bytes),
        ("errors", c.errors),
        ("refused_busy", c.refused_busy),
    ] {
        w.key(name).number(value);
    }
    w.close_object();

    let sp = &s.spool;
    w.key("spool").open_object();
    w.key("dir")
        .opt_string(sp.dir.as_ref().map(|d| d.to_string_lossy()).as_deref());
    for (name, value) in [
        ("max_bytes", sp.max_bytes),
        ("used_bytes", sp.used_bytes),
        ("files_spooled", sp.counters.files),
        ("verified", sp.counters.verified),
        ("failed", sp.counters.failed),
        ("not_spooled", sp.counters.refused),
        ("bytes_served_to_peers", sp.counters.bytes_served),
        ("followers_refused", sp.counters.followers_refused),
    ] {
        w.key(name).number(value);
    }
    w.key("files").open_array();
    for f in &sp.files {
        w.open_object();
        w.key("file").string(&f.name);
        w.key("written").number(f.written);
        w.key("size").number(f.size);
        w.key("complete").boolean(f.complete);
        w.key("followers").number(f.followers as u64);
        w.key("secs").number(f.secs);
        w.close_object();
    }
    w.close_array();
    w.close_object();

    let mem = &s.memory;
    w.key("memory").open_object();
    w.key("resident_bytes").opt_number(mem.resident_bytes);
    w.key("anonymous_bytes").opt_number(mem.anonymous_bytes);
    w.key("given_back").number(mem.given_back);
    w.close_object();

    w.key("cache_dirs").open_array();
    for d in &s.cache_dirs {
        w.open_object();
        w.key("path").string(&d.path.to_string_lossy());
        w.key("readable").boolean(d.error.is_none());
        w.key("error").opt_string(d.error.as_deref());
        w.close_object();
    }
    w.close_array();
    w.close_object();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::json::{Value, parse};
    use super::super::*;
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        let mut s = Snapshot {
            version: "1.2.3".into(),
            uptime_secs: 42,
            host_id: 0xfedc_ba98_7654_3210,
            distro: "arch".into(),
            arch: "x86_64".into(),
            peer_port: 19432,
            local_port: 19433,
            ..Snapshot::default()
        };
        s.multicast = Multicast {
            group: Some(Ipv4Addr::new(239, 255, 19, 32)),
            joined: vec!["eth0".into()],
            group6: Some("ff02::19:432".parse().unwrap()),
            joined6: vec!["eth0".into()],
            join_errors: vec![("wlan0".into(), "No such device".into())],
            hello_secs_ago: 40,
            peers_heard_since_hello: 1,
            summary_version: 3,
            summary_names: 120,
            udp_receive_buffer_errors: Some(2),
            refused_announcements: 4,
            refused_answers: 5,
            off_link_datagrams: 6,
        };
        s.peers.push(PeerStatus {
            host_id: 7,
            addr: "10.0.0.7:19432".parse().unwrap(),
            zone: None,
            heard_at: vec!["10.0.0.7:19432".into(), "[fe80::7%eth0]:19432".into()],
            distro: "arch".into(),
            arch: "x86_64".into(),
            compatible: true,
            heard_secs_ago: 3,
            files_to_us: 2,
            bytes_to_us: 4096,
            backed_off: false,
            banned: Some("sent \"x\" unlike\nits database".into()),
            summary_names: Some(120),
            answer_us: Some(350),
            silent: false,
        });
        s.transfers.push(Transfer {
            file: "a+b-1:2-1-x86_64.pkg.tar.zst".into(),
            source: None,
            received: 10,
            total: Some(100),
        });
        s.relay.requests = 5;
        s.relay.from_peers = 2;
        s.relay.bytes_from_peers = 4096;
        s.relay
            .lookup_latency
            .observe(std::time::Duration::from_millis(3));
        s.cache_dirs.push(CacheDir {
            path: "/var/cache/pacman/pkg".into(),
            error: Some("permission denied".into()),
        });
        s.spool = SpoolState {
            dir: Some("/var/cache/flocon".into()),
            max_bytes: 1 << 30,
            used_bytes: 300,
            files: vec![crate::spool::SpoolStatus {
                name: "big-1-1-x86_64.pkg.tar.zst".into(),
                written: 120,
                size: 300,
                complete: false,
                followers: 2,
                secs: 3,
            }],
            counters: crate::spool::SpoolCounters {
                bytes_served: 240,
                ..Default::default()
            },
        };
        s.memory = MemoryState {
            resident_bytes: Some(1_600_000),
            anonymous_bytes: Some(300_000),
            given_back: 3,
        };
        s
    }

    #[test]
    fn the_memory_in_json_metrics_and_the_status_text() {
        let text = json(&sample());
        let v = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mem = v.get("memory").unwrap();
        assert_eq!(mem.u64_at("resident_bytes"), Some(1_600_000));
        assert_eq!(mem.u64_at("anonymous_bytes"), Some(300_000));
        assert_eq!(mem.u64_at("given_back"), Some(3));
        let shown = crate::status::show::status(&v);
        assert!(
            shown.contains(
                "memory: 1.5 MiB resident, 293.0 KiB of it its own; given back after 3 quiet spells"
            ),
            "{shown}"
        );
        let metrics = crate::status::metrics::render(&sample());
        assert!(
            metrics.contains("process_resident_memory_bytes 1600000\n"),
            "{metrics}"
        );
        assert!(metrics.contains("flocon_memory_anonymous_bytes 300000\n"));
        assert!(metrics.contains("flocon_memory_given_back_total 3\n"));
        // Without /proc: nulls, no gauge, and no line.
        let mut s = sample();
        s.memory = MemoryState::default();
        let v = parse(&json(&s)).unwrap();
        assert!(
            v.get("memory")
                .unwrap()
                .get("resident_bytes")
                .unwrap()
                .is_null()
        );
        assert!(!crate::status::show::status(&v).contains("memory:"));
        assert!(!crate::status::metrics::render(&s).contains("process_resident"));
    }

    #[test]
    fn static_peers_and_secret_refusals_read_back_and_show() {
        let mut s = sample();
        assert!(json(&s).contains("\"static_peers\":[],\"secret\":null"));
        s.static_peers = vec!["static peer nas: 10.8.0.2:19432".into()];
        s.secret = Some(SecretStatus {
            datagrams_refused: 9,
            datagrams_repeated: 2,
            requests_refused: 3,
            sources: vec![("10.0.0.66".parse().unwrap(), 7, 3)],
        });
        let text = json(&s);
        let v = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let secret = v.get("secret").unwrap();
        assert_eq!(secret.u64_at("datagrams_refused"), Some(9));
        assert_eq!(secret.u64_at("requests_refused"), Some(3));
        let shown = super::super::show::status(&v);
        assert!(
            shown.contains("static peer nas: 10.8.0.2:19432\n"),
            "{shown}"
        );
        assert!(
            shown.contains("shared secret: refused 9 datagrams and 3 peer requests; 2 repeated datagrams dropped"),
            "{shown}"
        );
        assert!(
            shown.contains("  refused from 10.0.0.66: 7 datagrams, 3 requests"),
            "{shown}"
        );
        let metrics = super::super::metrics::render(&s);
        assert!(metrics.contains("flocon_secret_refused_total{what=\"datagram\"} 9\n"));
    }

    #[test]
    fn the_spool_in_json_and_in_the_status_text() {
        let text = json(&sample());
        let v = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let sp = v.get("spool").unwrap();
        assert_eq!(sp.str_at("dir"), Some("/var/cache/flocon"));
        assert_eq!(sp.u64_at("bytes_served_to_peers"), Some(240));
        let f = &sp.get("files").unwrap().as_array()[0];
        assert_eq!(f.str_at("file"), Some("big-1-1-x86_64.pkg.tar.zst"));
        assert_eq!(
            (f.u64_at("written"), f.u64_at("size"), f.u64_at("followers")),
            (Some(120), Some(300), Some(2))
        );
        let shown = crate::status::show::status(&v);
        assert!(
            shown.contains("  in flight big-1-1-x86_64.pkg.tar.zst: 120/300 bytes, 2 followers"),
            "{shown}"
        );
        assert!(shown.contains("240 bytes served to peers"), "{shown}");
        let metrics = crate::status::metrics::render(&sample());
        assert!(metrics.contains("flocon_spool_files{state=\"in_flight\"} 1\n"));
        assert!(metrics.contains("flocon_spool_followers 2\n"));
        assert!(metrics.contains("flocon_spool_bytes_served_total 240\n"));
    }

    #[test]
    fn the_json_reads_back() {
        let text = json(&sample());
        let v = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v.u64_at("format"), Some(JSON_FORMAT));
        assert_eq!(
            v.get("host").and_then(|h| h.str_at("id")),
            Some("fedcba9876543210")
        );
        let peer = &v.get("peers").unwrap().as_array()[0];
        assert_eq!(peer.str_at("address"), Some("10.0.0.7"));
        assert_eq!(peer.u64_at("port"), Some(19432));
        assert_eq!(peer.get("zone"), Some(&Value::Null));
        assert_eq!(
            peer.get("heard_at").unwrap().as_array()[1].as_str(),
            Some("[fe80::7%eth0]:19432")
        );
        assert_eq!(peer.u64_at("bytes_to_us"), Some(4096));
        assert_eq!(
            peer.str_at("banned"),
            Some("sent \"x\" unlike\nits database")
        );
        let t = &v.get("transfers").unwrap().as_array()[0];
        assert_eq!(t.get("source"), Some(&Value::Null));
        assert_eq!(t.u64_at("total"), Some(100));
        let relay = v.get("relay").unwrap();
        assert_eq!(relay.u64_at("bytes_from_peers"), Some(4096));
        assert_eq!(relay.u64_at("requests"), Some(5));
        let m = v.get("multicast").unwrap();
        assert_eq!(m.get("joined").unwrap().as_array().len(), 1);
        assert_eq!(m.str_at("group6"), Some("ff02::19:432"));
        assert_eq!(m.get("joined6").unwrap().as_array().len(), 1);
        assert_eq!(
            m.get("join_errors").unwrap().as_array()[0].str_at("interface"),
            Some("wlan0")
        );
        let dir = &v.get("cache_dirs").unwrap().as_array()[0];
        assert_eq!(dir.get("readable").and_then(Value::as_bool), Some(false));
    }
}
