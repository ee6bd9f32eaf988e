//! The DNS resolver core as a state machine: lookups, cancels, replies (raw bytes, or the
//! query it sent turned into an answer and mutated), nameserver changes and clock steps,
//! with a fake clock. Checked: nothing panics, queries go only to port 53 of a configured
//! nameserver, every lookup that was not cancelled gets exactly one event, and by the end of
//! the retry schedule none is left waiting.
#![no_main]
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flocon::dns::{Lookup, LookupId, Resolver};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["mirror.example.org", "a.example", "localhost", "bad..name"];

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let servers: Vec<IpAddr> = vec!["10.0.0.53".parse().unwrap(), "10.0.0.54".parse().unwrap()];
    let mut core = Resolver::new(servers.clone(), "10.1.1.1 hosts.example\n".into(), 3);
    let mut pending: HashSet<LookupId> = HashSet::new();
    let mut last_query: Option<(SocketAddr, Vec<u8>)> = None;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 6 {
            0 => match core.lookup(NAMES[usize::from(arg) % NAMES.len()], now) {
                Lookup::Ready(_) => {}
                Lookup::Pending(id) => assert!(pending.insert(id), "lookup id reused"),
            },
            1 => {
                if let Some(&id) = pending.iter().next() {
                    core.cancel(id);
                    pending.remove(&id);
                }
            }
            2 => {
                // The last query, answered: QR set, one A record, then mutated.
                if let Some((to, query)) = &last_query {
                    let mut reply = query.clone();
                    reply[2] |= 0x80;
                    reply[7] = 1;
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]);
                    let at = usize::from(arg) % reply.len();
                    if arg & 1 == 1 {
                        reply[at] ^= bytes.next().unwrap_or(0xff);
                    }
                    core.handle_datagram(*to, &reply, now);
                }
            }
            3 => {
                let len = usize::from(bytes.next().unwrap_or(0));
                let raw: Vec<u8> = bytes.by_ref().take(len).collect();
                let from = SocketAddr::new(servers[usize::from(arg) % 2], 53);
                core.handle_datagram(from, &raw, now);
            }
            4 => now += Duration::from_millis(u64::from(arg) * 10),
            _ => core.set_nameservers(servers.clone(), String::new()),
        }
        core.handle_timeout(now);
        while let Some((to, query)) = core.poll_transmit() {
            assert_eq!(to.port(), 53);
            assert!(servers.contains(&to.ip()), "query to {to}");
            last_query = Some((to, query));
        }
        while let Some((id, _)) = core.poll_event() {
            assert!(pending.remove(&id), "event for {id:?}, not pending");
        }
    }
    // Two rounds of 1 s over two nameservers, and then some.
    for _ in 0..8 {
        now += Duration::from_secs(1);
        core.handle_timeout(now);
        while core.poll_transmit().is_some() {}
        while let Some((id, _)) = core.poll_event() {
            assert!(pending.remove(&id));
        }
    }
    assert!(pending.is_empty(), "lookups never answered: {pending:?}");
});
