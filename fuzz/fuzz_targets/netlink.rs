//! rtnetlink datagrams (`netlink::parse`): never a panic, never an endless walk; the counts
//! stay below the number of 16-byte headers the datagram can hold, and IPv6 link-local address
//! messages are among the address messages.
#![no_main]
use flocon::netlink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = netlink::parse(data);
    let most = (data.len() / 16) as u32;
    assert!(c.links + c.addresses <= most, "{c:?} from {} bytes", data.len());
    assert!(c.link_local <= c.addresses, "{c:?}");
});
