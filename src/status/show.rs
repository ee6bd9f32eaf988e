//! What `flocon status` prints for a person, made from the JSON status (so that what a
//! person reads and what a script reads cannot disagree). Pure; members that are missing or
//! of the wrong type show as `?`, never a panic.

use std::fmt::Write as _;

use super::json::Value;

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `12.0 MiB`, ...
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in seconds for a person: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn seconds(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn num(v: &Value, name: &str) -> String {
    v.u64_at(name)
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    v.str_at(name).unwrap_or("?")
}

/// The share of `part` in `part + other`, in percent with one decimal, or `-` when both are 0.
pub fn share(part: u64, other: u64) -> String {
    let total = part as u128 + other as u128;
    if total == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", part as f64 * 100.0 / total as f64)
}

/// The whole text of `flocon status`.
pub fn status(v: &Value) -> String {
    let mut out = String::new();
    let none = Value::Null;
    let host = v.get("host").unwrap_or(&none);
    let _ = writeln!(
        out,
        "flocon {} up {}: host {} ({}/{}), peer port {}",
        text(v, "version"),
        v.u64_at("uptime_secs")
            .map_or_else(|| "?".to_owned(), seconds),
        text(host, "id"),
        text(host, "distro"),
        text(host, "arch"),
        num(host, "peer_port"),
    );
    let m = v.get("multicast").unwrap_or(&none);
    let joined: Vec<&str> = m
        .get("joined")
        .map(|j| j.as_array().iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "multicast group {}: joined on {}; {} peers heard since the last HELLO ({} ago)",
        text(m, "group"),
        if joined.is_empty() {
            "no interface".to_owned()
        } else {
            joined.join(", ")
        },
        num(m, "peers_heard_since_hello"),
        m.u64_at("hello_secs_ago")
            .map_or_else(|| "?".to_owned(), seconds),
    );
    if let Some(group6) = m.str_at("group6") {
        let joined6: Vec<&str> = m
            .get("joined6")
            .map(|j| j.as_array().iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "multicast group {group6}: joined on {}",
            if joined6.is_empty() {
                "no interface".to_owned()
            } else {
                joined6.join(", ")
            },
        );
    }
    let _ = writeln!(
        out,
        "cache summary: version {}, {} names; UDP datagrams dropped for a full buffer on this host: {}",
        num(m, "summary_version"),
        num(m, "summary_names"),
        num(m, "udp_receive_buffer_errors"),
    );
    let _ = writeln!(
        out,
        "refused: {} announcements (a host id from another address, or too many hosts at one), {} questions (asked too fast), {} datagrams from off the link",
        num(m, "refused_announcements"),
        num(m, "refused_answers"),
        num(m, "off_link_datagrams"),
    );
    for e in m.get("join_errors").map(Value::as_array).unwrap_or(&[]) {
        let _ = writeln!(
            out,
            "  cannot join on {}: {}",
            text(e, "interface"),
            text(e, "error")
        );
    }
    for line in v.get("static_peers").map(Value::as_array).unwrap_or(&[]) {
        let _ = writeln!(out, "{}", line.as_str().unwrap_or("?"));
    }
    if let Some(secret) = v.get("secret").filter(|s| **s != Value::Null) {
        let _ = writeln!(
            out,
            "shared secret: refused {} datagrams and {} peer requests; {} repeated datagrams dropped",
            num(secret, "datagrams_refused"),
            num(secret, "requests_refused"),
            num(secret, "datagrams_repeated"),
        );
        for src in secret.get("sources").map(Value::as_array).unwrap_or(&[]) {
            let _ = writeln!(
                out,
                "  refused from {}: {} datagrams, {} requests",
                text(src, "address"),
                num(src, "datagrams"),
                num(src, "requests"),
            );
        }
    }

    let peers = v.get("peers").map(Value::as_array).unwrap_or(&[]);
    let _ = writeln!(out, "\npeers: {}", peers.len());
    for p in peers {
        let addr = match (text(p, "address"), p.str_at("zone")) {
            (a, Some(zone)) => format!("[{a}%{zone}]:{}", num(p, "port")),
            (a, None) if a.contains(':') => format!("[{a}]:{}", num(p, "port")),
            (a, None) => format!("{a}:{}", num(p, "port")),
        };
        let kind = format!("{}/{}", text(p, "distro"), text(p, "arch"));
        let _ = write!(
            out,
            "  {addr:<22} {kind:<18} heard {:>9} ago  {} files ({}) to us",
            p.u64_at("heard_secs_ago")
                .map_or_else(|| "?".to_owned(), seconds),
            num(p, "files_to_us"),
            p.u64_at("bytes_to_us")
                .map_or_else(|| "?".to_owned(), bytes),
        );
        if p.get("compatible").and_then(Value::as_bool) == Some(false) {
            out.push_str(", other distribution/architecture (identical files only)");
        }
        match p.u64_at("summary_names") {
            Some(n) => {
                let _ = write!(out, ", summary of {n} names");
            }
            None => out.push_str(", no summary (asked about every file)"),
        }
        if let Some(us) = p.u64_at("answer_us") {
            let _ = write!(out, ", answers in {:.1} ms", us as f64 / 1000.0);
        }
        if p.get("silent").and_then(Value::as_bool) == Some(true) {
            out.push_str(", SILENT: not asked until heard again");
        }
        if p.get("backed_off").and_then(Value::as_bool) == Some(true) {
            out.push_str(", skipped for a minute after a failure");
        }
        match p.str_at("banned") {
            Some(why) => {
                let _ = write!(out, ", BANNED: {why}");
            }
            None => out.push_str(", not banned"),
        }
        out.push('\n');
    }
    let bans = v.get("bans").map(Value::as_array).unwrap_or(&[]);
    for b in bans {
        let _ = writeln!(
            out,
            "  ban: peer {} at {} for {} more: {}",
            text(b, "id"),
            text(b, "address"),
            b.u64_at("secs_left")
                .map_or_else(|| "?".to_owned(), seconds),
            text(b, "reason")
        );
    }

    let transfers = v.get("transfers").map(Value::as_array).unwrap_or(&[]);
    let _ = writeln!(out, "\ntransfers in flight: {}", transfers.len());
    for t in transfers {
        let total = t
            .u64_at("total")
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  {} from {}: {}/{total} bytes",
            text(t, "file"),
            t.str_at("source").unwrap_or("(asking the peers)"),
            num(t, "received"),
        );
    }

    if let Some(sp) = v.get("spool").filter(|sp| sp.str_at("dir").is_some()) {
        let files = sp.get("files").map(Value::as_array).unwrap_or(&[]);
        let served = sp.u64_at("bytes_served_to_peers").unwrap_or(0);
        let _ = writeln!(
            out,
            "\nspool (files in flight shared with the LAN): {} files, {served} bytes served to peers ({})",
            files.len(),
            bytes(served)
        );
        for f in files {
            let state = if f.get("complete") == Some(&Value::Bool(true)) {
                "kept"
            } else {
                "in flight"
            };
            let _ = writeln!(
                out,
                "  {state} {}: {}/{} bytes, {} followers",
                text(f, "file"),
                num(f, "written"),
                num(f, "size"),
                num(f, "followers"),
            );
        }
    }

    if let Some(mem) = v.get("memory") {
        if let (Some(resident), Some(own)) =
            (mem.u64_at("resident_bytes"), mem.u64_at("anonymous_bytes"))
        {
            let _ = writeln!(
                out,
                "\nmemory: {} resident, {} of it its own; given back after {} quiet spells",
                bytes(resident),
                bytes(own),
                num(mem, "given_back"),
            );
        }
    }

    let r = v.get("relay").unwrap_or(&none);
    let peer_bytes = r.u64_at("bytes_from_peers").unwrap_or(0);
    let upstream_bytes = r.u64_at("bytes_from_upstream").unwrap_or(0);
    let _ = writeln!(out, "\nsince start:");
    let _ = writeln!(
        out,
        "  from peers:     {} files, {peer_bytes} bytes ({})",
        num(r, "files_from_peers"),
        bytes(peer_bytes)
    );
    let _ = writeln!(
        out,
        "  from upstream:  {} files, {upstream_bytes} bytes ({})",
        num(r, "files_from_upstream"),
        bytes(upstream_bytes)
    );
    let _ = writeln!(
        out,
        "  share from peers: {} of the bytes",
        share(peer_bytes, upstream_bytes)
    );
    let _ = writeln!(
        out,
        "  the LAN saved:  {} of Internet downloads",
        bytes(peer_bytes)
    );
    let _ = writeln!(
        out,
        "  {} requests, {} lookups ({} found on a peer), {} failovers, {} failures, {} not found, {} bans",
        num(r, "requests"),
        num(r, "lookups"),
        num(r, "lookups_found"),
        num(r, "failovers"),
        num(r, "failures"),
        num(r, "not_found"),
        num(r, "bans"),
    );
    let s = v.get("peer_server").unwrap_or(&none);
    let _ = writeln!(
        out,
        "  served to peers: {} files, {} ({} requests)",
        num(s, "files"),
        s.u64_at("bytes").map_or_else(|| "?".to_owned(), bytes),
        num(s, "requests"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::json::parse;

    #[test]
    fn sizes_and_times_for_a_person() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(seconds(59), "59 s");
        assert_eq!(seconds(185), "3 min 5 s");
        assert_eq!(seconds(7800), "2 h 10 min");
        assert_eq!(seconds(3 * 86400 + 4 * 3600), "3 d 4 h");
        assert_eq!(share(1, 3), "25.0%");
        assert_eq!(share(0, 0), "-");
    }

    #[test]
    fn status_text_tolerates_anything() {
        for text in ["{}", "[]", "null", r#"{"peers": 5, "relay": []}"#] {
            let out = status(&parse(text).unwrap());
            assert!(out.contains("peers: 0"), "{out}");
        }
    }
}
