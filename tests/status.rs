//! `flocon status`, `flocon status --json` and `GET /metrics` against the real binary with
//! known traffic: files relayed from a loopback nginx mirror (no root needed), and files
//! relayed from a real peer in a two-host namespace lab (root). The numbers each shows are
//! checked against the traffic made; `/metrics` is read by the strict parser of the
//! Prometheus text format 0.0.4 below. Also: one clear line and exit status 1 when no daemon
//! answers.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use ::flocon::status::json::{self, Value};
use common::flocon::{self as fl, LOCAL_PORT};
use common::lab::Lab;
use common::pacman;
use common::{Daemon, Mirror, TempDir, free_loopback_addr, free_port, http_get, output_within};

const START: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(30);

// ---- a strict reader of the Prometheus text format 0.0.4 -----------------------------------

/// One sample: its name, labels in order, and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A metric family: its type, help and samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.is_empty()
            || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("bad value {s:?}"))
        }
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"} rest` -> labels and rest.
type Labels = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with '{'")?;
    if let Some(after) = rest.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in a label value")),
                },
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        } else {
            return Err("',' or '}' expected after a label".into());
        }
    }
}

/// The family a sample name belongs to, given its type.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| {
                f.kind == "histogram" || (f.kind == "summary" && suffix != "_bucket")
            }) {
                return Some(base);
            }
        }
    }
    None
}

/// Reads a whole exposition; every rule broken is an error naming the line.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (Some(word), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let rest = parts.next().unwrap_or("");
            if word != "HELP" && word != "TYPE" {
                continue;
            }
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(prev) = current.take() {
                    closed.insert(prev);
                }
                if closed.contains(name) {
                    return Err(at(format!("family {name} comes back after another")));
                }
                current = Some(name.to_owned());
            }
            let family = families.entry(name.to_owned()).or_default();
            if word == "HELP" {
                if family.help.is_some() {
                    return Err(at("HELP twice".into()));
                }
                family.help = Some(rest.to_owned());
            } else {
                if !family.kind.is_empty() {
                    return Err(at("TYPE twice".into()));
                }
                if !family.samples.is_empty() {
                    return Err(at("TYPE after samples".into()));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                family.kind = rest.to_owned();
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        let family = family_of(name, &families)
            .ok_or_else(|| at(format!("sample {name} before its # TYPE")))?
            .to_owned();
        if current.as_deref() != Some(family.as_str()) {
            return Err(at(format!("sample of {family} outside its group")));
        }
        let key = format!("{name}{labels:?}");
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        let f = families.get_mut(&family).expect("family_of found it");
        if f.kind.is_empty() {
            return Err(at(format!("sample {name} before its # TYPE")));
        }
        // NaN is no count either.
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a counter below zero".into()));
        }
        f.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, f) in &families {
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(families)
}

/// Buckets by `le`, cumulative, ending with `+Inf` equal to `_count`; a `_sum` is there.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut count = None;
    let mut sum = None;
    for s in &f.samples {
        if s.name == format!("{name}_bucket") {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or(format!("{name}: a bucket without le"))?;
            buckets.push((parse_value(&le.1)?, s.value));
        } else if s.name == format!("{name}_count") {
            count = Some(s.value);
        } else if s.name == format!("{name}_sum") {
            sum = Some(s.value);
        } else {
            return Err(format!("{name}: sample {} in a histogram", s.name));
        }
    }
    let count = count.ok_or(format!("{name}: no _count"))?;
    sum.ok_or(format!("{name}: no _sum"))?;
    if buckets.is_empty() {
        return Err(format!("{name}: no buckets"));
    }
    for w in buckets.windows(2) {
        if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) {
            return Err(format!("{name}: le not increasing: {w:?}"));
        }
        if w[0].1 > w[1].1 {
            return Err(format!("{name}: buckets not cumulative: {w:?}"));
        }
    }
    let last = buckets[buckets.len() - 1];
    if last.0 != f64::INFINITY {
        return Err(format!("{name}: no +Inf bucket"));
    }
    if last.1 != count {
        return Err(format!("{name}: +Inf bucket {} != _count {count}", last.1));
    }
    Ok(())
}

/// The value of the sample `name` with exactly these labels.
#[track_caller]
fn metric(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let all = families.values().flat_map(|f| f.samples.iter());
    let found: Vec<&Sample> = all
        .filter(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
        })
        .collect();
    match found.as_slice() {
        [one] => one.value,
        _ => panic!("{name}{labels:?}: {} samples", found.len()),
    }
}

#[test]
fn the_strict_reader_refuses_broken_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let f = parse_exposition(good).unwrap();
    assert_eq!(metric(&f, "a_total", &[("x", "1")]), 3.0);
    for bad in [
        "a 1\n",                                              // no TYPE
        "# TYPE a counter\na 1",                              // no final newline
        "# TYPE a counter\na{x=\"1\",} 1\n",                  // trailing comma
        "# TYPE a counter\na{x=1} 1\n",                       // unquoted
        "# TYPE a counter\na{x=\"\\t\"} 1\n",                 // bad escape
        "# TYPE a counter\na{1x=\"1\"} 1\n",                  // bad label name
        "# TYPE a counter\na one\n",                          // bad value
        "# TYPE a counter\na -1\n",                           // negative counter
        "# TYPE a counter\na 1\na 2\n",                       // same series twice
        "# TYPE 1a counter\n",                                // bad name
        "# TYPE a counter\n# TYPE b gauge\nb 1\na 1\n",       // outside its group
        "# TYPE a counter\na 1\n# TYPE a counter\n",          // TYPE twice
        "# TYPE a counter\n# TYPE b gauge\n# TYPE a gauge\n", // family comes back
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
        "# TYPE a weird\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- the daemon on loopback ----------------------------------------------------------------

fn flocon(args: &[&str]) -> Output {
    let mut cmd = Command::new(fl::bin());
    cmd.args(args);
    output_within(cmd, RUN)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn relay_counter(v: &Value, name: &str) -> u64 {
    v.get("relay")
        .and_then(|r| r.u64_at(name))
        .unwrap_or_else(|| panic!("no relay.{name} in the JSON status"))
}

#[test]
fn status_json_and_metrics_count_upstream_traffic() {
    if !common::require_tools("status_json_and_metrics_count_upstream_traffic", &["nginx"]) {
        return;
    }
    let root = TempDir::new("status-mirror");
    let repo = format!("{}/os/{}", pacman::TEST_REPO, pacman::ARCH);
    root.mkdir(&repo);
    let sizes = [1000usize, 70_000, 300_000];
    let names: Vec<String> = (0..sizes.len())
        .map(|i| format!("st{i}-1.0-1-x86_64.pkg.tar.zst"))
        .collect();
    for (name, &size) in names.iter().zip(&sizes) {
        std::fs::write(root.join(&repo).join(name), vec![7u8; size]).unwrap();
    }
    let mirror = Mirror::start(root.path(), None, free_loopback_addr());
    let cache = TempDir::new("status-cache");
    let local = free_port();
    let mut args = fl::loopback_args(cache.path(), free_port(), local);
    args.extend(["--upstream".to_owned(), mirror.server_url()]);
    let daemon = Daemon::spawn("flocon", None, fl::bin(), &args);
    daemon.wait_for_line_containing(&format!("listening on TCP 127.0.0.1:{local}"), START);
    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    for (name, &size) in names.iter().zip(&sizes) {
        let r = http_get(addr, &format!("/{repo}/{name}"), &[]);
        assert_eq!((r.status, r.body.len()), (200, size), "{name}");
    }
    let missing = http_get(addr, &format!("/{repo}/none-1-1-x86_64.pkg.tar.zst"), &[]);
    assert_eq!(missing.status, 404);
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let port = local.to_string();
    let base = ["-c", "/dev/null", "--local-port", &port];

    // --json: the daemon's JSON status as it is, with the numbers of the traffic above.
    let out = flocon(&[&["status", "--json"][..], &base].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v = json::parse(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v.u64_at("format"), Some(1));
    assert_eq!(relay_counter(&v, "requests"), 4);
    assert_eq!(relay_counter(&v, "files_from_upstream"), 3);
    assert_eq!(relay_counter(&v, "bytes_from_upstream"), total);
    assert_eq!(relay_counter(&v, "files_from_peers"), 0);
    assert_eq!(relay_counter(&v, "bytes_from_peers"), 0);
    assert_eq!(relay_counter(&v, "not_found"), 1);
    // No peer on lo: each package question is answered "nobody" at once.
    assert_eq!(relay_counter(&v, "lookups"), 4);
    assert_eq!(relay_counter(&v, "lookups_found"), 0);
    assert_eq!(v.get("peers").map(|p| p.as_array().len()), Some(0));
    assert_eq!(v.get("transfers").map(|t| t.as_array().len()), Some(0));
    let dirs = v.get("cache_dirs").map(Value::as_array).unwrap_or(&[]);
    assert_eq!(dirs.len(), 1);
    assert_eq!(dirs[0].get("readable").and_then(Value::as_bool), Some(true));
    // `lo` cannot carry multicast: the JSON says so, per interface.
    let m = v.get("multicast").expect("multicast");
    assert_eq!(m.get("joined").map(|j| j.as_array().len()), Some(0));
    let errors = m.get("join_errors").map(Value::as_array).unwrap_or(&[]);
    assert_eq!(errors.len(), 1, "{stdout}");
    assert_eq!(errors[0].str_at("interface"), Some("lo"));

    // For a person.
    let out = flocon(&[&["status"][..], &base].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("peers: 0\n"), "{stdout}");
    assert!(stdout.contains("transfers in flight: 0\n"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "from upstream:  3 files, {total} bytes (362.3 KiB)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("from peers:     0 files, 0 bytes (0 B)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("share from peers: 0.0% of the bytes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the LAN saved:  0 B of Internet downloads"),
        "{stdout}"
    );

    // /metrics: strict format, the same numbers.
    let r = http_get(addr, "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(metric(&m, "flocon_relay_requests_total", &[]), 4.0);
    assert_eq!(
        metric(&m, "flocon_relay_files_total", &[("source", "upstream")]),
        3.0
    );
    assert_eq!(
        metric(&m, "flocon_relay_files_total", &[("source", "peer")]),
        0.0
    );
    assert_eq!(
        metric(&m, "flocon_relay_bytes_total", &[("source", "upstream")]),
        total as f64
    );
    assert_eq!(
        metric(&m, "flocon_lookups_total", &[("result", "none")]),
        4.0
    );
    assert_eq!(metric(&m, "flocon_lookup_duration_seconds_count", &[]), 4.0);
    assert_eq!(
        metric(
            &m,
            "flocon_lookup_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(metric(&m, "flocon_relay_not_found_total", &[]), 1.0);
    assert_eq!(metric(&m, "flocon_peers", &[("compatible", "true")]), 0.0);
    assert_eq!(metric(&m, "flocon_transfers_in_flight", &[]), 0.0);
    assert_eq!(m["flocon_relay_files_total"].kind, "counter");
    assert_eq!(m["flocon_peers"].kind, "gauge");
    assert_eq!(m["flocon_lookup_duration_seconds"].kind, "histogram");
    drop(daemon);
}

#[test]
fn status_without_a_daemon_is_one_line_and_status_1() {
    let port = free_port().to_string();
    for args in [
        &["status", "-c", "/dev/null", "--local-port", &port][..],
        &["status", "--json", "-c", "/dev/null", "--local-port", &port][..],
    ] {
        let out = flocon(args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "flocon: no flocon daemon answers on 127.0.0.1:{port}: connection refused"
            )),
            "{stderr}"
        );
    }
    let out = flocon(&["--json", "-c", "/dev/null"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--json without status is a usage error"
    );
}

// ---- files from a real peer, in a lab ------------------------------------------------------

#[test]
fn status_and_metrics_count_files_from_a_peer() {
    if !common::require_root("status_and_metrics_count_files_from_a_peer") {
        return;
    }
    let Some(lab) = Lab::new(2) else { return };
    let hosts = fl::spawn_hosts(&lab, 2, &[]);
    fl::wait_mesh(&lab, &hosts, Duration::from_secs(10));
    let sizes = [5000usize, 123_457, 2_000_000];
    let mut total = 0u64;
    let names: Vec<String> = (0..sizes.len())
        .map(|i| format!("fromlan{i}-1.0-1-x86_64.pkg.tar.zst"))
        .collect();
    for (name, &size) in names.iter().zip(&sizes) {
        hosts[1].put(name, &vec![3u8; size]);
        total += size as u64;
    }
    for (name, &size) in names.iter().zip(&sizes) {
        let path = format!("/core/os/x86_64/{name}");
        let r = fl::local_get(&lab, 0, &path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status, r.body.len()), (200, size), "{name}");
    }
    let port = LOCAL_PORT.to_string();
    let base = ["-c", "/dev/null", "--local-port", &port];
    let out = lab.exec(0, fl::bin(), [&["status", "--json"][..], &base].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v = json::parse(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(relay_counter(&v, "files_from_peers"), 3);
    assert_eq!(relay_counter(&v, "bytes_from_peers"), total);
    assert_eq!(relay_counter(&v, "files_from_upstream"), 0);
    assert_eq!(relay_counter(&v, "lookups"), 3);
    assert_eq!(relay_counter(&v, "lookups_found"), 3);
    let peers = v.get("peers").map(Value::as_array).unwrap_or(&[]);
    assert_eq!(peers.len(), 1, "{stdout}");
    let peer = &peers[0];
    assert_eq!(
        peer.str_at("id"),
        Some(format!("{:016x}", hosts[1].id).as_str())
    );
    assert_eq!(
        peer.str_at("address"),
        Some(hosts[1].ip.to_string().as_str())
    );
    assert_eq!(peer.u64_at("port"), Some(u64::from(fl::PEER_PORT)));
    assert_eq!(peer.u64_at("files_to_us"), Some(3));
    assert_eq!(peer.u64_at("bytes_to_us"), Some(total));
    assert_eq!(peer.get("banned"), Some(&Value::Null));
    assert_eq!(peer.get("compatible").and_then(Value::as_bool), Some(true));

    let out = lab.exec(0, fl::bin(), [&["status"][..], &base].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("peers: 1\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:{}", hosts[1].ip, fl::PEER_PORT))
            && stdout.contains("3 files (2.0 MiB) to us, summary of 3 names, answers in ")
            && stdout.contains(" ms, not banned"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("from peers:     3 files, {total} bytes (2.0 MiB)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("share from peers: 100.0% of the bytes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the LAN saved:  2.0 MiB of Internet downloads"),
        "{stdout}"
    );

    let r = fl::local_get(&lab, 0, "/metrics").expect("GET /metrics");
    let m = parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(
        metric(&m, "flocon_relay_files_total", &[("source", "peer")]),
        3.0
    );
    assert_eq!(
        metric(&m, "flocon_relay_bytes_total", &[("source", "peer")]),
        total as f64
    );
    assert_eq!(
        metric(&m, "flocon_lookups_total", &[("result", "found")]),
        3.0
    );
    assert_eq!(metric(&m, "flocon_lookup_duration_seconds_count", &[]), 3.0);
    assert_eq!(metric(&m, "flocon_peers", &[("compatible", "true")]), 1.0);
    assert_eq!(metric(&m, "flocon_peer_bans_total", &[]), 0.0);
    // The peer's own server counted what it sent.
    let r = fl::local_get(&lab, 1, "/metrics").expect("GET /metrics on h1");
    let m1 = parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(metric(&m1, "flocon_peer_server_files_total", &[]), 3.0);
    assert_eq!(
        metric(&m1, "flocon_peer_server_bytes_total", &[]),
        total as f64
    );
}
