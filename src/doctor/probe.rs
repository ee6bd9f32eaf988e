//! What `flocon doctor` finds out for itself, from its own process with bounded waits: whether
//! each peer's TCP port answers (one non-blocking connect per peer, all at once, in a private
//! `mio::Poll`), a peer's clock (the `Date` of an error answer from its file server), and the
//! IPv4 networks of this host's interfaces (for the firewall rule it suggests). It never
//! touches the daemon's sockets.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token};

/// How long a peer's TCP port may take to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a peer may take to answer the clock request.
pub const CLOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to every address at once: for each, `Ok` when it accepted within `timeout`, else
/// why not (`TimedOut` for silence: a firewall that drops).
pub fn connect_all(addrs: &[SocketAddr], timeout: Duration) -> Vec<Result<(), io::Error>> {
    let mut results: Vec<Option<Result<(), io::Error>>> = addrs.iter().map(|_| None).collect();
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            return addrs
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                .collect();
        }
    };
    let mut streams: Vec<Option<mio::net::TcpStream>> = Vec::with_capacity(addrs.len());
    for (i, addr) in addrs.iter().enumerate() {
        match mio::net::TcpStream::connect(*addr) {
            Ok(mut s) => match poll
                .registry()
                .register(&mut s, Token(i), Interest::WRITABLE)
            {
                Ok(()) => streams.push(Some(s)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    streams.push(None);
                }
            },
            Err(e) => {
                results[i] = Some(Err(e));
                streams.push(None);
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let mut events = Events::with_capacity(64);
    let mut poll = poll;
    while results.iter().any(Option::is_none) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(deadline - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for event in &events {
            let i = event.token().0;
            let Some(stream) = streams.get(i).and_then(Option::as_ref) else {
                continue;
            };
            if results[i].is_some() {
                continue;
            }
            // Events can be spurious: connected only once the peer address is known.
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => results[i] = Some(Err(e)),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => results[i] = Some(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => results[i] = Some(Err(e)),
                },
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::TimedOut))))
        .collect()
}

/// The peer's clock minus this host's, in seconds, from the `Date` of its file server's
/// answer to a request for a name it never serves; `None` when it gives no date.
pub fn clock_offset(addr: SocketAddr, timeout: Duration) -> io::Result<Option<i64>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let before = SystemTime::now();
    // The Host field carries no zone (`[fe80::1]:19432`, not `[fe80::1%2]:19432`).
    let host = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    stream.write_all(
        format!("HEAD /.flocon-clock HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut answer = Vec::new();
    stream.take(16 * 1024).read_to_end(&mut answer)?;
    let after = SystemTime::now();
    let answer = String::from_utf8_lossy(&answer);
    let Some(date) = date_field(&answer) else {
        return Ok(None);
    };
    let Some(theirs) = crate::http::date::parse_unix(date) else {
        return Ok(None);
    };
    let mid =
        crate::http::date::unix_seconds(before) / 2 + crate::http::date::unix_seconds(after) / 2;
    Ok(Some(theirs as i64 - mid as i64))
}

/// The value of the `Date` field of an answer's head.
pub fn date_field(answer: &str) -> Option<&str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("date")
            .then(|| value.trim())
    })
}

/// The IPv4 networks of this host's interfaces: (address, prefix length).
pub fn local_networks() -> Vec<(Ipv4Addr, u8)> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family field is always readable.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: both are AF_INET addresses, so they are sockaddr_in.
        let (addr, mask) = unsafe {
            (
                (*ifa.ifa_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr,
                (*ifa.ifa_netmask.cast::<libc::sockaddr_in>())
                    .sin_addr
                    .s_addr,
            )
        };
        let addr = Ipv4Addr::from(u32::from_be(addr));
        let prefix = u32::from_be(mask).leading_ones() as u8;
        if !addr.is_loopback() {
            out.push((addr, prefix));
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// The index of interface `name` (`if_nametoindex`), `None` when there is none.
pub fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The network (`a.b.c.d/n`) among `networks` that holds `ip`; else `ip/24` for IPv4 or
/// `ip/64` for IPv6, as a guess at the LAN.
pub fn lan_of(ip: IpAddr, networks: &[(Ipv4Addr, u8)]) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mask = |n: u8| {
                if n == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(n))
                }
            };
            for &(addr, n) in networks {
                let m = mask(n);
                if u32::from(addr) & m == u32::from(v4) & m {
                    return format!("{}/{n}", Ipv4Addr::from(u32::from(addr) & m));
                }
            }
            format!("{}/24", Ipv4Addr::from(u32::from(v4) & mask(24)))
        }
        IpAddr::V6(v6) if crate::discovery::is_link_local(&v6) => "fe80::/10".to_owned(),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", seg[0], seg[1], seg[2], seg[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_holds_the_peer() {
        let nets = [
            (Ipv4Addr::new(192, 168, 1, 20), 24),
            (Ipv4Addr::new(10, 7, 3, 2), 16),
        ];
        assert_eq!(
            lan_of("192.168.1.5".parse().unwrap(), &nets),
            "192.168.1.0/24"
        );
        assert_eq!(lan_of("10.7.200.9".parse().unwrap(), &nets), "10.7.0.0/16");
        assert_eq!(
            lan_of("172.16.4.4".parse().unwrap(), &nets),
            "172.16.4.0/24"
        );
        assert_eq!(
            lan_of("fd66:1:2:3::9".parse().unwrap(), &nets),
            "fd66:1:2:3::/64"
        );
        assert_eq!(lan_of("fe80::1:9".parse().unwrap(), &nets), "fe80::/10");
        assert!(interface_index("lo").is_some());
        assert_eq!(interface_index("no-such-if0"), None);
    }

    #[test]
    fn the_date_field_is_found() {
        let a = "HTTP/1.1 404 Not Found\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nDate: x";
        assert_eq!(date_field(a), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(date_field("HTTP/1.1 404 Not Found\r\n\r\n"), None);
    }

    #[test]
    fn a_closed_port_is_refused_and_an_open_one_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = connect_all(&[open, closed], Duration::from_secs(2));
        assert!(r[0].is_ok(), "{:?}", r[0]);
        assert_eq!(
            r[1].as_ref().map_err(io::Error::kind).err(),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }
}
