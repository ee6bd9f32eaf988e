//! The discovery sockets: a non-blocking UDP socket on the peer port for each IP family (IPv4
//! on `0.0.0.0`, IPv6 on `[::]`, IPv6-only) that join the family's multicast group on the
//! chosen interfaces, send the core's datagrams and receive everyone's.
//!
//! This is the thin I/O shell around `protocol.rs`. It owns the sockets and the list of joined
//! interfaces; it makes no protocol decision and never registers with or polls a `mio::Poll`:
//! the event loop registers each of `sockets_mut()` under its own token and calls `recv` /
//! `send` when told to. Built with socket2: no SO_REUSEADDR, non-blocking, close-on-exec,
//! multicast TTL (hops) 1, multicast loop off, multicast-all off (only groups joined on this
//! socket are delivered to it). Where the kernel has no IPv6 the IPv6 socket is left out, and
//! IPv4 works alone; an interface with an IPv6 link-local address but no IPv4 address is
//! joined on IPv6 alone.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockRef, Socket, Type};

use super::join_schedule::JoinReport;
use super::protocol::{Dest, Transmit};

/// Most interfaces looked at in one `join` (getifaddrs entries beyond this are ignored).
const MAX_IFADDRS: usize = 4096;

/// One network interface as `join` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Its first IPv4 address, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// The netmask of that address: with it, the subnet of hosts on this link.
    pub netmask: Option<Ipv4Addr>,
    /// Its first IPv6 link-local address (`fe80::/10`), if it has one: the IPv6 group is
    /// joined, and sent to, on interfaces that have one.
    pub ipv6_link_local: Option<Ipv6Addr>,
}

impl InterfaceInfo {
    /// Whether `ip` is in this interface's IPv4 subnet (a host on this link).
    pub fn is_on_link(&self, ip: Ipv4Addr) -> bool {
        match (self.ipv4, self.netmask) {
            (Some(own), Some(mask)) => {
                let m = u32::from(mask);
                u32::from(own) & m == u32::from(ip) & m
            }
            _ => false,
        }
    }
}

impl InterfaceInfo {
    fn has(&self, flag: libc::c_int) -> bool {
        self.flags & (flag as u32) != 0
    }

    /// Why this interface cannot carry the group, or `None` if it can. Loopback interfaces and
    /// the bridges and links of containers and virtual machines are refused unless `named` (the
    /// user asked for this one by name).
    fn unfit(&self, named: bool) -> Option<&'static str> {
        if !self.has(libc::IFF_UP) {
            Some("interface is down")
        } else if !self.has(libc::IFF_MULTICAST) {
            Some("interface is not multicast-capable")
        } else if !named && self.has(libc::IFF_LOOPBACK) {
            Some("loopback interface")
        } else if !named && is_virtual_bridge(&self.name) {
            Some("a container or virtual machine network")
        } else if self.ipv4.is_none() && self.ipv6_link_local.is_none() {
            Some("interface has no IPv4 address and no IPv6 link-local address")
        } else {
            None
        }
    }
}

/// Names of the bridges and links that container and virtual machine managers make (Docker,
/// libvirt, LXC, Podman, CNI, veth pairs): the hosts behind them are not the LAN, so they are
/// joined only when named with `--interface`.
pub const VIRTUAL_PREFIXES: [&str; 8] = [
    "docker", "virbr", "veth", "br-", "lxcbr", "podman", "cni", "vnet",
];

/// Whether `name` is one of [`VIRTUAL_PREFIXES`]' interfaces.
pub fn is_virtual_bridge(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The interfaces to join among `all`: every up, multicast-capable, non-loopback interface with
/// an IPv4 address or an IPv6 link-local address that is not a container or virtual machine
/// network when `wanted` is empty, otherwise the named ones (each must exist, be up,
/// multicast-capable and have one of those addresses). Unfit named interfaces are reported as
/// errors.
pub fn select_interfaces(
    all: &[InterfaceInfo],
    wanted: &[String],
) -> (Vec<InterfaceInfo>, Vec<(String, io::Error)>) {
    let mut chosen = Vec::new();
    let mut errors = Vec::new();
    if wanted.is_empty() {
        chosen.extend(all.iter().filter(|i| i.unfit(false).is_none()).cloned());
        return (chosen, errors);
    }
    for (n, name) in wanted.iter().enumerate() {
        if wanted[..n].contains(name) {
            continue;
        }
        match all.iter().find(|i| &i.name == name) {
            None => errors.push((
                name.clone(),
                io::Error::new(io::ErrorKind::NotFound, "no such interface"),
            )),
            Some(i) => match i.unfit(true) {
                Some(why) => errors.push((name.clone(), io::Error::other(why))),
                None => chosen.push(i.clone()),
            },
        }
    }
    (chosen, errors)
}

/// The host's interfaces from getifaddrs(3), one entry per name, with the first IPv4 address
/// and the first IPv6 link-local address.
pub fn list_interfaces() -> io::Result<Vec<InterfaceInfo>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocates into `head`; we pass a valid
    // pointer to our local and free the list with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: Vec<InterfaceInfo> = Vec::new();
    let mut cur = head;
    let mut seen = 0;
    while !cur.is_null() && seen < MAX_IFADDRS {
        seen += 1;
        // SAFETY: `cur` is a non-null node of the list returned by getifaddrs, which stays
        // valid until freeifaddrs; we only read it.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a non-null, NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let mut ipv4 = None;
        let mut netmask = None;
        let mut ipv6_link_local = None;
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr whose sa_family says
            // which struct it is; we read the family first.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                ipv4 = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                if !ifa.ifa_netmask.is_null() {
                    // SAFETY: for an AF_INET address, ifa_netmask (non-null) is a sockaddr_in.
                    let mask = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                    netmask = Some(Ipv4Addr::from(u32::from_be(mask.sin_addr.s_addr)));
                }
            } else if i32::from(family) == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if is_link_local(&ip) {
                    ipv6_link_local = Some(ip);
                }
            }
        }
        match out.iter_mut().find(|i| i.name == name) {
            Some(i) => {
                i.flags |= ifa.ifa_flags;
                if i.ipv4.is_none() {
                    i.ipv4 = ipv4;
                    i.netmask = netmask;
                }
                if i.ipv6_link_local.is_none() {
                    i.ipv6_link_local = ipv6_link_local;
                }
            }
            None => out.push(InterfaceInfo {
                name,
                flags: ifa.ifa_flags,
                ipv4,
                netmask,
                ipv6_link_local,
            }),
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no reference
    // into the list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn interface_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Whether `ip` is an IPv6 link-local unicast address (`fe80::/10`).
pub fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether `group` is an IPv6 multicast address of link-local scope (`ffx2::/16`): the only
/// scope the IPv6 group may have, since it is joined and sent to per link.
pub fn is_link_scope_multicast(group: &Ipv6Addr) -> bool {
    group.is_multicast() && group.segments()[0] & 0x000f == 0x0002
}

/// The name of the interface a link-local IPv6 `addr` is scoped to (its zone), if it is one.
pub fn zone_of(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    if v6.scope_id() == 0 {
        return None;
    }
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname may write; it returns NULL (and
    // writes nothing useful) for an unknown index.
    let p = unsafe { libc::if_indextoname(v6.scope_id(), name.as_mut_ptr()) };
    if p.is_null() {
        return Some(v6.scope_id().to_string());
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `name`.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// `addr` for people: an IPv6 one with its zone by interface name, `[fe80::1%eth0]:19432`.
pub fn show_addr(addr: SocketAddr) -> String {
    match (addr, zone_of(addr)) {
        (SocketAddr::V6(v6), Some(zone)) => format!("[{}%{zone}]:{}", v6.ip(), v6.port()),
        _ => addr.to_string(),
    }
}

/// An IP family the group is joined in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// An interface the group is joined on, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Joined {
    name: String,
    index: u32,
    family: Family,
    /// The interface as listed at the join (its address and netmask: the link's subnet).
    info: InterfaceInfo,
}

/// The discovery sockets. See the module documentation.
#[derive(Debug)]
pub struct MulticastSocket {
    socket: mio::net::UdpSocket,
    /// The IPv6 socket, `None` where the kernel has no IPv6.
    socket6: Option<mio::net::UdpSocket>,
    group: Ipv4Addr,
    group6: Ipv6Addr,
    port: u16,
    /// The IPv6 socket is read first next time (the two take turns, so a flood on one
    /// family cannot starve the other).
    v6_first: bool,
    joined: Vec<Joined>,
    /// Datagrams dropped: source not on the link they came in on.
    off_link: u64,
    /// A group send that stopped at an interface with WouldBlock: its payload and the index in
    /// `joined` to go on from, so a retry does not repeat the interfaces already done.
    resume: Option<(Vec<u8>, usize)>,
    /// The static peers' addresses (`Peer =`): their datagrams are taken even from off the
    /// link, the one exception to the on-link rule.
    static_sources: Vec<std::net::IpAddr>,
}

/// Socket buffer asked for, each way.
pub const SOCKET_BUFFER: usize = 4 << 20;

impl MulticastSocket {
    /// Sockets bound to `0.0.0.0:port` for multicast `group` and `[::]:port` for `group6`,
    /// not yet joined anywhere. `port` 0 binds an ephemeral port (tests; the IPv6 socket takes
    /// the same one); the groups are then sent to that port too. The IPv6 socket is left out,
    /// quietly, when the kernel has no IPv6 (`EAFNOSUPPORT`, `net.ipv6.conf.all.disable_ipv6`)
    /// or its port is taken.
    pub fn open(port: u16, group: Ipv4Addr, group6: Ipv6Addr) -> io::Result<Self> {
        if !group.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{group} is not an IPv4 multicast address"),
            ));
        }
        if !is_link_scope_multicast(&group6) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{group6} is not an IPv6 link-scope multicast address (ff02::/16)"),
            ));
        }
        // socket2 creates it with SOCK_CLOEXEC.
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // No SO_REUSEADDR: with it, any local user could bind the same port beside the
        // daemon and receive the unicast questions peers send here.
        socket.set_nonblocking(true)?;
        socket.set_multicast_loop_v4(false)?;
        socket.set_multicast_ttl_v4(1)?;
        // A refinement only (other sockets' groups are also filtered by the
        // datagrams' magic): kernels or emulators without it (qemu-user
        // answers ENOPROTOOPT) still work.
        if let Err(e) = socket.set_multicast_all_v4(false) {
            log::debug!("IP_MULTICAST_ALL off not supported here: {e}");
        }
        // Room for bursts (every host of a large LAN asking one holder at once: with 4 MiB,
        // bench/scale.py's 1,980 questions at once dropped none): the kernel caps these at net.core.rmem_max /
        // wmem_max for an unprivileged process (208 KiB by default); what it gave is logged.
        for (what, result) in [
            ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
            ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
        ] {
            if let Err(e) = result {
                log::debug!("discovery: cannot size the {what} buffer: {e}");
            }
        }
        log::debug!(
            "discovery: socket buffers {} bytes to receive, {} to send",
            socket.recv_buffer_size().unwrap_or(0),
            socket.send_buffer_size().unwrap_or(0)
        );
        // The interface each datagram arrives on (to drop sources that are not on that link).
        if let Err(e) = set_pktinfo(&socket) {
            log::debug!("discovery: no IP_PKTINFO here ({e}): sources are not checked by link");
        }
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
        let std_socket: std::net::UdpSocket = socket.into();
        let port = std_socket.local_addr()?.port();
        let socket6 = match open_v6(port) {
            Ok(s) => Some(s),
            Err(e) => {
                log::info!("discovery: no IPv6 socket on UDP [::]:{port} ({e}): IPv4 only");
                None
            }
        };
        Ok(MulticastSocket {
            socket: mio::net::UdpSocket::from_std(std_socket),
            socket6,
            group,
            group6,
            port,
            v6_first: false,
            joined: Vec::new(),
            off_link: 0,
            resume: None,
            static_sources: Vec::new(),
        })
    }

    /// The IPv4 group this socket joins.
    pub fn group(&self) -> Ipv4Addr {
        self.group
    }

    /// The IPv6 group, `None` when there is no IPv6 socket.
    pub fn group6(&self) -> Option<Ipv6Addr> {
        self.socket6.as_ref().map(|_| self.group6)
    }

    /// Names of the interfaces the IPv4 group (or, with `v6`, the IPv6 group) is joined on.
    pub fn joined_in(&self, v6: bool) -> Vec<String> {
        let family = if v6 { Family::V6 } else { Family::V4 };
        self.joined
            .iter()
            .filter(|j| j.family == family)
            .map(|j| j.name.clone())
            .collect()
    }

    /// The local port (the peer port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Names of the interfaces the group is joined on (in either family), each once.
    pub fn joined(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for j in &self.joined {
            if !names.contains(&j.name) {
                names.push(j.name.clone());
            }
        }
        names
    }

    /// (Re)join the group: leave it everywhere first, then join it on each interface chosen by
    /// `select_interfaces(list_interfaces(), interfaces)`. Report it to `Discovery::handle_join`;
    /// a report with no joined interface is a failure to retry.
    pub fn join(&mut self, interfaces: &[String]) -> JoinReport {
        let sock = SockRef::from(&self.socket);
        for j in self.joined.drain(..) {
            // The interface may be gone (ENODEV); the membership went with it then.
            match (j.family, &self.socket6) {
                (Family::V4, _) => {
                    let _ = sock.leave_multicast_v4_n(
                        &self.group,
                        &InterfaceIndexOrAddress::Index(j.index),
                    );
                }
                (Family::V6, Some(s6)) => {
                    let _ = SockRef::from(s6).leave_multicast_v6(&self.group6, j.index);
                }
                (Family::V6, None) => {}
            }
        }
        self.resume = None;
        let mut report = JoinReport::default();
        let all = match list_interfaces() {
            Ok(all) => all,
            Err(e) => {
                report.errors.push(("getifaddrs".to_owned(), e));
                return report;
            }
        };
        let (chosen, errors) = select_interfaces(&all, interfaces);
        report.errors = errors;
        for iface in chosen {
            let index = match interface_index(&iface.name) {
                Ok(index) => index,
                Err(e) => {
                    report.errors.push((iface.name, e));
                    continue;
                }
            };
            // Still a member from before (a leave that failed): that is joined too.
            let joined = |r: io::Result<()>| match r {
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(()),
                other => other,
            };
            let mut families = Vec::new();
            let mut error = None;
            if iface.ipv4.is_some() {
                match joined(
                    sock.join_multicast_v4_n(&self.group, &InterfaceIndexOrAddress::Index(index)),
                ) {
                    Ok(()) => families.push(Family::V4),
                    Err(e) => error = Some(e),
                }
            }
            if let (Some(_), Some(s6)) = (iface.ipv6_link_local, &self.socket6) {
                match joined(SockRef::from(s6).join_multicast_v6(&self.group6, index)) {
                    Ok(()) => families.push(Family::V6),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            if families.is_empty() {
                let e = error.unwrap_or_else(|| {
                    io::Error::other("interface has no IPv4 address and IPv6 is off")
                });
                report.errors.push((iface.name, e));
                continue;
            }
            report.joined.push(iface.name.clone());
            for family in families {
                self.joined.push(Joined {
                    name: iface.name.clone(),
                    index,
                    family,
                    info: iface.clone(),
                });
            }
        }
        report
    }

    /// Send one datagram. `Dest::Group` goes out once per joined interface and family (nothing
    /// is sent when none is joined); `Dest::Peer` is a unicast `sendto` on the socket of the
    /// address's family (a link-local IPv6 address carries its interface as scope id). Errors
    /// come back unchanged:
    /// on `WouldBlock` keep the `Transmit` and call again later (a group send goes on with the
    /// interfaces not done yet); any other error is the first one met, after every interface
    /// was tried.
    pub fn send(&mut self, t: &Transmit) -> io::Result<()> {
        match t.dest {
            Dest::Peer(addr @ SocketAddr::V4(_)) => {
                self.socket.send_to(&t.payload, addr).map(|_| ())
            }
            Dest::Peer(addr @ SocketAddr::V6(_)) => match &self.socket6 {
                Some(s6) => s6.send_to(&t.payload, addr).map(|_| ()),
                None => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
            Dest::Group => {
                let start = match self.resume.take() {
                    Some((payload, at)) if payload == t.payload => at,
                    _ => 0,
                };
                let to = SocketAddr::V4(SocketAddrV4::new(self.group, self.port));
                let mut first_error = None;
                for at in start..self.joined.len() {
                    let index = self.joined[at].index;
                    let sent = match (self.joined[at].family, &self.socket6) {
                        (Family::V4, _) => set_multicast_if_index(&self.socket, index)
                            .and_then(|()| self.socket.send_to(&t.payload, to)),
                        // The scope id of a link-local group picks the interface.
                        (Family::V6, Some(s6)) => {
                            let to6 = SocketAddrV6::new(self.group6, self.port, 0, index);
                            s6.send_to(&t.payload, SocketAddr::V6(to6))
                        }
                        (Family::V6, None) => continue,
                    };
                    match sent {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.resume = Some((t.payload.clone(), at));
                            return Err(e);
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }

    /// Receive one datagram (non-blocking: `WouldBlock` when there is none). `Ok(None)`: one
    /// was read and dropped, its source not a host of the link it came in on (counted in
    /// [`Self::off_link`]); the caller counts it against its per-turn budget, so a flood of
    /// them cannot hold the loop. A datagram longer than `buf` is cut; use a buffer of at least
    /// `wire::MAX_DATAGRAM + 1` bytes so that such datagrams fail to parse instead of being cut
    /// to a valid length.
    /// Both sockets are read, taking turns: `WouldBlock` only when neither has a datagram.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        let v6_first = self.v6_first;
        self.v6_first = !v6_first;
        let order = if v6_first {
            [true, false]
        } else {
            [false, true]
        };
        let mut got = Err(io::Error::from(io::ErrorKind::WouldBlock));
        for v6 in order {
            let fd = match (v6, &self.socket6) {
                (false, _) => self.socket.as_raw_fd(),
                (true, Some(s6)) => s6.as_raw_fd(),
                (true, None) => continue,
            };
            got = recv_with_interface(fd, buf);
            if !matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break;
            }
        }
        let (n, from, arrived_on) = got?;
        if self.on_link(from, arrived_on) {
            return Ok(Some((n, from)));
        }
        self.off_link += 1;
        log::debug!(
            "discovery: dropped a datagram from {from}: not a host on the link it came in on"
        );
        Ok(None)
    }

    /// Whether `from`, which came in on interface `arrived_on` (when the kernel said), is a
    /// host of that link: the interface is joined in `from`'s family, and `from` is in its
    /// IPv4 subnet, or is an IPv6 link-local address scoped to that interface. When the kernel
    /// gives no arrival interface (no `IP_PKTINFO`, as under some emulators), any IPv4 source
    /// is, and any IPv6 link-local one.
    fn on_link(&self, from: SocketAddr, arrived_on: Option<u32>) -> bool {
        if self.static_sources.contains(&from.ip()) {
            return true;
        }
        match (from, arrived_on) {
            (SocketAddr::V4(v4), Some(index)) => self
                .joined
                .iter()
                .any(|j| j.family == Family::V4 && j.index == index && j.info.is_on_link(*v4.ip())),
            (SocketAddr::V4(_), None) => true,
            (SocketAddr::V6(v6), arrived_on) => {
                is_link_local(v6.ip())
                    && self.joined.iter().any(|j| {
                        j.family == Family::V6
                            && j.index == v6.scope_id()
                            && arrived_on.is_none_or(|i| i == j.index)
                    })
            }
        }
    }

    /// The addresses of the static peers, whose datagrams `recv` takes even from off the link.
    pub fn set_static_sources(&mut self, sources: Vec<std::net::IpAddr>) {
        self.static_sources = sources;
    }

    /// Datagrams dropped since start because their source was not on the link they came in on.
    pub fn off_link(&self) -> u64 {
        self.off_link
    }

    /// The sockets (IPv4, then IPv6 when there is one), for the event loop to register
    /// (readable, and writable while transmits wait), both under the one discovery token.
    pub fn sockets_mut(&mut self) -> impl Iterator<Item = &mut mio::net::UdpSocket> {
        std::iter::once(&mut self.socket).chain(self.socket6.as_mut())
    }
}

/// The IPv6 socket on `[::]:port`: IPv6 only (IPv4 has its own socket), hops 1, loop off,
/// multicast-all off, the arrival interface reported (`IPV6_RECVPKTINFO`).
fn open_v6(port: u16) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(true)?;
    socket.set_nonblocking(true)?;
    socket.set_multicast_loop_v6(false)?;
    socket.set_multicast_hops_v6(1)?;
    if let Err(e) = socket.set_multicast_all_v6(false) {
        log::debug!("IPV6_MULTICAST_ALL off not supported here: {e}");
    }
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            log::debug!("discovery: cannot size the IPv6 {what} buffer: {e}");
        }
    }
    if let Err(e) = set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) {
        log::debug!("discovery: no IPV6_RECVPKTINFO here ({e}): arrival interfaces unknown");
    }
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// recvmsg(2) on `fd` with `IP_PKTINFO` / `IPV6_PKTINFO`: the datagram, its source (an IPv6
/// link-local source with its interface as scope id), and the index of the interface it
/// arrived on.
fn recv_with_interface(
    fd: libc::c_int,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u32>)> {
    // SAFETY: plain-old-data structs, zeroed, then filled by recvmsg.
    let mut src: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one in_pktinfo or in6_pktinfo control message (and an aligned spare).
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr, fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut src as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points to memory we own that outlives the call, with
    // its length given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = match i32::from(src.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family is AF_INET: the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(&src as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family is AF_INET6: the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(&src as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                0,
                sin6.sin6_scope_id,
            ))
        }
        _ => {
            return Err(io::Error::other(
                "a datagram from an unknown address family",
            ));
        }
    };
    let mut arrived_on = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within
    // msg_controllen; each header's data is read only for IP_PKTINFO (an in_pktinfo) and
    // IPV6_PKTINFO (an in6_pktinfo).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                arrived_on = u32::try_from(info.ipi_ifindex).ok();
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                arrived_on = Some(info.ipi6_ifindex);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, from, arrived_on))
}

fn set_pktinfo(socket: &Socket) -> io::Result<()> {
    set_int_option(socket, libc::IPPROTO_IP, libc::IP_PKTINFO)
}

/// Turn on a boolean socket option.
fn set_int_option(socket: &Socket, level: libc::c_int, option: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid descriptor and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// IP_MULTICAST_IF by interface index (an `ip_mreqn`), so the choice holds even when two
/// interfaces share an address or the address changes.
fn set_multicast_if_index(socket: &mio::net::UdpSocket, index: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: libc::c_int::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?,
    };
    // SAFETY: the fd is the open socket borrowed for the call; the pointer and length describe
    // a live, fully initialised ip_mreqn, which Linux accepts for IP_MULTICAST_IF.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast::<libc::c_void>(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const G6: Ipv6Addr = crate::discovery::DEFAULT_GROUP6;

    fn iface(name: &str, flags: libc::c_int, ipv4: Option<[u8; 4]>) -> InterfaceInfo {
        InterfaceInfo {
            netmask: ipv4.map(|_| Ipv4Addr::new(255, 255, 255, 0)),
            name: name.into(),
            flags: flags as u32,
            ipv4: ipv4.map(Ipv4Addr::from),
            ipv6_link_local: None,
        }
    }

    fn host() -> Vec<InterfaceInfo> {
        let ok = libc::IFF_UP | libc::IFF_MULTICAST;
        vec![
            iface(
                "lo",
                libc::IFF_UP | libc::IFF_LOOPBACK,
                Some([127, 0, 0, 1]),
            ),
            iface("eth0", ok, Some([192, 168, 1, 2])),
            iface("eth1", libc::IFF_MULTICAST, Some([10, 0, 0, 2])),
            iface("wg0", libc::IFF_UP, Some([10, 9, 0, 1])),
            iface("br0", ok, None),
            iface("wlan0", ok, Some([192, 168, 2, 3])),
            iface("lomc", ok | libc::IFF_LOOPBACK, Some([127, 0, 0, 1])),
            iface("docker0", ok, Some([172, 17, 0, 1])),
            iface("virbr0", ok, Some([192, 168, 122, 1])),
            iface("br-5f3a9c", ok, Some([172, 18, 0, 1])),
            iface("veth12ab", ok, Some([169, 254, 1, 1])),
        ]
    }

    fn names(v: &[InterfaceInfo]) -> Vec<&str> {
        v.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn all_fit_interfaces_by_default() {
        let (chosen, errors) = select_interfaces(&host(), &[]);
        assert_eq!(names(&chosen), vec!["eth0", "wlan0"]);
        assert!(errors.is_empty());
    }

    #[test]
    fn container_and_vm_bridges_only_when_named() {
        let (chosen, _) = select_interfaces(&host(), &[]);
        assert!(chosen.iter().all(|i| !is_virtual_bridge(&i.name)));
        let wanted = vec!["docker0".to_string(), "virbr0".to_string()];
        let (chosen, errors) = select_interfaces(&host(), &wanted);
        assert_eq!(names(&chosen), vec!["docker0", "virbr0"]);
        assert!(errors.is_empty());
        assert!(!is_virtual_bridge("eth0") && !is_virtual_bridge("enp3s0"));
        assert!(!is_virtual_bridge("wlan0") && !is_virtual_bridge("bridge0"));
    }

    #[test]
    fn named_interfaces_only_and_why_not() {
        let wanted: Vec<String> = ["wlan0", "eth1", "wg0", "br0", "nope", "lomc", "wlan0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (chosen, errors) = select_interfaces(&host(), &wanted);
        assert_eq!(names(&chosen), vec!["wlan0", "lomc"]);
        let errs: Vec<(String, String)> = errors
            .into_iter()
            .map(|(n, e)| (n, e.to_string()))
            .collect();
        assert_eq!(
            errs,
            vec![
                ("eth1".into(), "interface is down".into()),
                ("wg0".into(), "interface is not multicast-capable".into()),
                (
                    "br0".into(),
                    "interface has no IPv4 address and no IPv6 link-local address".into()
                ),
                ("nope".into(), "no such interface".into()),
            ]
        );
    }

    #[test]
    fn lists_real_interfaces() {
        let all = list_interfaces().expect("getifaddrs");
        // Every Linux host has a loopback interface.
        assert!(all.iter().any(|i| i.has(libc::IFF_LOOPBACK)));
        assert!(interface_index("lo").is_ok());
        assert!(interface_index("no-such-if0").is_err());
        assert!(interface_index("a\0b").is_err());
    }

    #[test]
    fn open_refuses_a_unicast_group() {
        let e = MulticastSocket::open(0, Ipv4Addr::new(10, 0, 0, 1), G6).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn socket_options_and_unicast_round_trip() {
        let group = Ipv4Addr::new(239, 255, 19, 32);
        let mut a = MulticastSocket::open(0, group, G6).expect("open a");
        let mut b = MulticastSocket::open(0, group, G6).expect("open b");
        {
            let s = SockRef::from(&*a.sockets_mut().next().unwrap());
            assert!(!s.reuse_address().unwrap(), "nobody may share the port");
            assert!(!s.multicast_loop_v4().unwrap());
            assert_eq!(s.multicast_ttl_v4().unwrap(), 1);
            assert!(!s.multicast_all_v4().unwrap());
        }
        let port = a.port();
        if let Some(s6) = a.sockets_mut().nth(1) {
            let s6 = SockRef::from(&*s6);
            assert!(!s6.reuse_address().unwrap(), "nobody may share the port");
            assert!(s6.only_v6().unwrap(), "IPv4 has its own socket");
            assert!(!s6.multicast_loop_v6().unwrap());
            assert_eq!(s6.multicast_hops_v6().unwrap(), 1);
            assert_eq!(s6.local_addr().unwrap().as_socket().unwrap().port(), port);
        }
        // Nothing joined: a group send is a no-op, not an error.
        let to_group = Transmit {
            dest: Dest::Group,
            payload: b"x".to_vec(),
        };
        assert!(a.send(&to_group).is_ok());
        let to_b = Transmit {
            dest: Dest::Peer(SocketAddr::from((Ipv4Addr::LOCALHOST, b.port()))),
            payload: b"FLOC hello".to_vec(),
        };
        a.send(&to_b).expect("unicast send");
        let mut buf = [0u8; 2048];
        // It arrives on `lo`, which b has not joined: not a host of a joined link, dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        let dropped = loop {
            match b.recv(&mut buf) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(dropped, None);
        assert_eq!(b.off_link(), 1);
        // With `lo` counted as joined (its subnet 127.0.0.0/8), the next one is received,
        // with its source.
        b.joined.push(Joined {
            name: "lo".into(),
            index: interface_index("lo").unwrap(),
            family: Family::V4,
            info: InterfaceInfo {
                name: "lo".into(),
                flags: 0,
                ipv4: Some(Ipv4Addr::LOCALHOST),
                netmask: Some(Ipv4Addr::new(255, 0, 0, 0)),
                ipv6_link_local: None,
            },
        });
        a.send(&to_b).expect("unicast send");
        let (n, from) = loop {
            match b.recv(&mut buf) {
                Ok(got) => break got.expect("taken from lo once it counts as joined"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(&buf[..n], b"FLOC hello");
        assert_eq!(from.port(), a.port());
        // Non-blocking: nothing more to read.
        assert_eq!(
            b.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn on_link_means_in_the_subnet_of_a_joined_interface() {
        let eth0 = InterfaceInfo {
            name: "eth0".into(),
            flags: 0,
            ipv4: Some(Ipv4Addr::new(192, 168, 1, 10)),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            ipv6_link_local: None,
        };
        assert!(eth0.is_on_link(Ipv4Addr::new(192, 168, 1, 77)));
        assert!(!eth0.is_on_link(Ipv4Addr::new(192, 168, 2, 77)));
        assert!(!eth0.is_on_link(Ipv4Addr::new(8, 8, 8, 8)));
        let no_mask = InterfaceInfo {
            netmask: None,
            ..eth0.clone()
        };
        assert!(!no_mask.is_on_link(Ipv4Addr::new(192, 168, 1, 77)));
        let mut s = MulticastSocket::open(0, Ipv4Addr::new(239, 255, 19, 32), G6).unwrap();
        s.joined.push(Joined {
            name: "eth0".into(),
            index: 7,
            family: Family::V4,
            info: eth0,
        });
        let from = |ip: [u8; 4]| SocketAddr::from((ip, 19432));
        assert!(s.on_link(from([192, 168, 1, 77]), Some(7)));
        assert!(
            !s.on_link(from([192, 168, 1, 77]), Some(8)),
            "another interface"
        );
        assert!(!s.on_link(from([10, 0, 0, 1]), Some(7)), "off-link source");
        assert!(
            s.on_link(from([10, 0, 0, 1]), None),
            "the kernel did not say"
        );
        s.set_static_sources(vec![std::net::IpAddr::from([10, 0, 0, 1])]);
        assert!(s.on_link(from([10, 0, 0, 1]), Some(7)), "a static peer");
        assert!(!s.on_link(from([10, 0, 0, 2]), Some(7)));
    }

    #[test]
    fn an_ipv6_source_is_on_link_when_link_local_and_scoped_to_a_joined_interface() {
        let mut s = MulticastSocket::open(0, Ipv4Addr::new(239, 255, 19, 32), G6).unwrap();
        let eth0 = InterfaceInfo {
            name: "eth0".into(),
            flags: 0,
            ipv4: None,
            netmask: None,
            ipv6_link_local: Some("fe80::1".parse().unwrap()),
        };
        s.joined.push(Joined {
            name: "eth0".into(),
            index: 7,
            family: Family::V6,
            info: eth0.clone(),
        });
        let from = |ip: &str, scope: u32| {
            SocketAddr::V6(SocketAddrV6::new(ip.parse().unwrap(), 19432, 0, scope))
        };
        assert!(s.on_link(from("fe80::2", 7), Some(7)));
        assert!(
            s.on_link(from("fe80::2", 7), None),
            "the kernel did not say"
        );
        assert!(!s.on_link(from("fe80::2", 8), Some(8)), "not joined there");
        assert!(
            !s.on_link(from("fe80::2", 8), Some(7)),
            "scope is not the arrival"
        );
        assert!(
            !s.on_link(from("2001:db8::2", 7), Some(7)),
            "not link-local"
        );
        assert!(!s.on_link(from("::1", 0), None), "loopback is not a link");
        // An IPv4 source on an interface joined in IPv6 only is not on a joined link.
        assert!(!s.on_link(SocketAddr::from(([192, 168, 1, 7], 19432)), Some(7)));
        assert_eq!(s.joined(), vec!["eth0".to_string()]);
        s.joined.push(Joined {
            family: Family::V4,
            ..s.joined[0].clone()
        });
        assert_eq!(
            s.joined(),
            vec!["eth0".to_string()],
            "one name per interface"
        );
        assert_eq!(s.joined_in(true), vec!["eth0".to_string()]);
        assert_eq!(s.joined_in(false), vec!["eth0".to_string()]);
    }

    #[test]
    fn link_local_and_link_scope() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(is_link_local(&"febf::1".parse().unwrap()));
        assert!(!is_link_local(&"fec0::1".parse().unwrap()));
        assert!(!is_link_local(&"::1".parse().unwrap()));
        assert!(is_link_scope_multicast(&G6));
        assert!(is_link_scope_multicast(&"ff12::1234".parse().unwrap()));
        assert!(!is_link_scope_multicast(&"ff05::1".parse().unwrap()));
        assert!(!is_link_scope_multicast(&"fe80::1".parse().unwrap()));
        let e = MulticastSocket::open(0, Ipv4Addr::new(239, 1, 1, 1), "ff05::1".parse().unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // An interface with only an IPv6 link-local address is fit.
        let v6_only = InterfaceInfo {
            name: "eth0".into(),
            flags: (libc::IFF_UP | libc::IFF_MULTICAST) as u32,
            ipv4: None,
            netmask: None,
            ipv6_link_local: Some("fe80::1".parse().unwrap()),
        };
        let (chosen, errors) = select_interfaces(&[v6_only], &[]);
        assert_eq!(names(&chosen), vec!["eth0"]);
        assert!(errors.is_empty());
    }

    #[test]
    fn joining_unfit_or_missing_interfaces_fails() {
        let mut s = MulticastSocket::open(0, Ipv4Addr::new(239, 255, 19, 32), G6).expect("open");
        let report = s.join(&["no-such-if0".to_string()]);
        assert!(!report.is_success());
        assert_eq!(report.errors.len(), 1);
        assert!(s.joined().is_empty());
    }
}
