//! Interfaces and addresses coming and going, as the kernel announces them (rtnetlink): a
//! laptop joining Wi-Fi, a cable plugged in, a DHCP lease with a new address. The event loop
//! rejoins the multicast group on such a change by itself (as SIGUSR2 does), so a host is
//! seen by its peers within a second of its network coming up, with no polling.
//!
//! Owns the `NETLINK_ROUTE` socket, subscribed to link and IPv4/IPv6 address events, and a pure
//! reader of its datagrams ([`parse`]) that only says whether anything relevant changed. It does
//! not decide what to join (`discovery/multicast.rs` does) nor when (the loop).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The length of a `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
const NLMSG_ALIGNTO: usize = 4;
/// The length of a `struct ifaddrmsg`.
const IFADDRMSG_LEN: usize = 8;

/// What one read from the socket tells.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// RTM_NEWLINK / RTM_DELLINK messages: an interface appeared, went, or changed state.
    pub links: u32,
    /// RTM_NEWADDR / RTM_DELADDR messages: an address was added or removed.
    pub addresses: u32,
    /// Of those, the ones about an IPv6 link-local address (`ifa_family` AF_INET6,
    /// `ifa_scope` RT_SCOPE_LINK): the address the IPv6 group is used from. The kernel also
    /// sends one when such an address stops being tentative (duplicate address detection
    /// done), the moment it can be sent from.
    pub link_local: u32,
    /// Bytes that were not a whole message (a truncated or malformed datagram).
    pub malformed: bool,
}

impl Changes {
    /// Worth a rejoin.
    pub fn any(&self) -> bool {
        self.links > 0 || self.addresses > 0
    }
}

/// Reads the netlink messages in one datagram (`nlmsghdr` after `nlmsghdr`, each padded to 4
/// bytes) and counts the link and address ones; anything else is skipped.
pub fn parse(mut bytes: &[u8]) -> Changes {
    let mut changes = Changes::default();
    while !bytes.is_empty() {
        if bytes.len() < HEADER_LEN {
            changes.malformed = true;
            break;
        }
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < HEADER_LEN || len > bytes.len() {
            changes.malformed = true;
            break;
        }
        match kind {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => changes.links += 1,
            libc::RTM_NEWADDR | libc::RTM_DELADDR => {
                changes.addresses += 1;
                // struct ifaddrmsg after the header: family, prefix length, flags, scope, index.
                let body = &bytes[HEADER_LEN..len];
                if body.len() >= IFADDRMSG_LEN
                    && i32::from(body[0]) == libc::AF_INET6
                    && body[3] == libc::RT_SCOPE_LINK
                {
                    changes.link_local += 1;
                }
            }
            _ => {}
        }
        let padded = len.div_ceil(NLMSG_ALIGNTO) * NLMSG_ALIGNTO;
        bytes = bytes.get(padded..).unwrap_or(&[]);
    }
    changes
}

/// The rtnetlink socket.
#[derive(Debug)]
pub struct LinkWatch {
    fd: OwnedFd,
}

impl LinkWatch {
    /// A non-blocking `NETLINK_ROUTE` socket subscribed to link and address events.
    pub fn open() -> io::Result<LinkWatch> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: `addr` is a valid sockaddr_nl and its size is passed with it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkWatch { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every datagram waiting (at most `max` of them) and sums what they tell. An
    /// overrun of the socket's buffer (`ENOBUFS`: events were lost) counts as a change.
    pub fn read(&self, buf: &mut [u8], max: usize) -> Changes {
        let mut total = Changes::default();
        for _ in 0..max {
            // SAFETY: recv(2) into `buf`, whose length is passed; the fd is ours.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        total.links += 1;
                        continue;
                    }
                    _ => break, // EAGAIN: drained
                }
            }
            let n = n as usize;
            if n == 0 {
                break;
            }
            let c = parse(&buf[..n.min(buf.len())]);
            total.links += c.links;
            total.addresses += c.addresses;
            total.link_local += c.link_local;
            total.malformed |= c.malformed;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: usize) -> Vec<u8> {
        let len = HEADER_LEN + payload;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.resize(len.div_ceil(4) * 4, 0);
        m
    }

    #[test]
    fn counts_link_and_address_messages_and_skips_the_rest() {
        let mut d = message(libc::RTM_NEWLINK, 17);
        d.extend(message(libc::RTM_NEWADDR, 40));
        d.extend(message(libc::RTM_NEWROUTE, 30));
        d.extend(message(libc::RTM_DELADDR, 40));
        d.extend(message(libc::RTM_DELLINK, 3));
        let c = parse(&d);
        assert_eq!(
            c,
            Changes {
                links: 2,
                addresses: 2,
                link_local: 0,
                malformed: false
            }
        );
        assert!(c.any());
        let routes = parse(&message(libc::RTM_NEWROUTE, 30));
        assert!(!routes.any());
    }

    #[test]
    fn ipv6_link_local_address_messages_are_told_apart() {
        let addr = |kind: u16, family: i32, scope: u8| {
            let mut m = message(kind, 24);
            m[HEADER_LEN] = family as u8;
            m[HEADER_LEN + 1] = 64;
            m[HEADER_LEN + 3] = scope;
            m
        };
        let mut d = addr(libc::RTM_NEWADDR, libc::AF_INET6, libc::RT_SCOPE_LINK);
        d.extend(addr(libc::RTM_DELADDR, libc::AF_INET6, libc::RT_SCOPE_LINK));
        d.extend(addr(
            libc::RTM_NEWADDR,
            libc::AF_INET6,
            libc::RT_SCOPE_UNIVERSE,
        ));
        d.extend(addr(libc::RTM_NEWADDR, libc::AF_INET, libc::RT_SCOPE_LINK));
        d.extend(message(libc::RTM_NEWADDR, 4)); // too short for an ifaddrmsg
        let c = parse(&d);
        assert_eq!((c.addresses, c.link_local, c.malformed), (5, 2, false));
    }

    #[test]
    fn bad_lengths_stop_the_walk() {
        let mut short = message(libc::RTM_NEWLINK, 0);
        short.truncate(10);
        assert!(parse(&short).malformed);
        let mut zero = message(libc::RTM_NEWLINK, 0);
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            parse(&zero),
            Changes {
                malformed: true,
                ..Changes::default()
            }
        );
        let mut long = message(libc::RTM_NEWADDR, 4);
        long[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&long).malformed);
        assert_eq!(parse(&[]), Changes::default());
    }

    #[test]
    fn the_socket_opens_unprivileged_and_reads_nothing_when_quiet() {
        let watch = LinkWatch::open().expect("NETLINK_ROUTE socket");
        let mut buf = [0u8; 8192];
        let c = watch.read(&mut buf, 4);
        assert!(!c.malformed);
    }
}
