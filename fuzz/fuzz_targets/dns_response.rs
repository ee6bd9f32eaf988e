//! DNS answers and the resolver's files: `parse_response` is total, and what it accepts
//! is sane; `parse_resolv_conf` and `hosts_lookup` never panic and stay bounded.
#![no_main]
use flocon::dns::{MAX_NAMESERVERS, QType, hosts_lookup, parse_resolv_conf, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let id = u16::from_be_bytes([data[0], data[1]]);
    let qtype = if data[2] & 1 == 0 { QType::A } else { QType::Aaaa };
    let body = &data[3..];
    for name in ["mirror.example.org", "a.b", "x"] {
        if let Ok(answer) = parse_response(body, id, name, qtype) {
            assert!(!answer.addrs.is_empty());
            for addr in &answer.addrs {
                assert_eq!(addr.is_ipv4(), qtype == QType::A);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let servers = parse_resolv_conf(&text);
    assert!(!servers.is_empty() && servers.len() <= MAX_NAMESERVERS);
    let _ = hosts_lookup(&text, "mirror.example.org");
});
