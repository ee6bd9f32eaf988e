//! Writes the seed corpus of the `discovery_datagram` target: one datagram made by `emit`
//! for each message kind. Run from `fuzz/`: `cargo run --example discovery_seeds`.
use flocon::discovery::emit;
use flocon::discovery::wire::{Announcement, Body, Message};

fn announcement(tcp_port: u16, distro: &str, arch: &str) -> Announcement {
    Announcement { tcp_port, distro: distro.to_owned(), arch: arch.to_owned() }
}

fn main() -> std::io::Result<()> {
    let id = 0x0102_0304_0506_0708;
    let seeds = [
        ("announce", Body::Announce(announcement(19432, "arch", "x86_64"))),
        ("announce-arm", Body::Announce(announcement(u16::MAX, "archarm", "aarch64"))),
        ("hello", Body::Hello(announcement(19432, "arch", "x86_64"))),
        ("goodbye", Body::Goodbye),
        ("who-has-package", Body::WhoHas { question: 7, name: b"zstd-1.5.6-1-x86_64.pkg.tar.zst".to_vec() }),
        ("who-has-epoch", Body::WhoHas { question: 8, name: b"python-1:3.12.7-1-x86_64.pkg.tar.zst.sig".to_vec() }),
        ("who-has-plus", Body::WhoHas { question: u32::MAX, name: b"libc++-19.1.4-1-x86_64.pkg.tar.zst".to_vec() }),
        ("who-has-empty", Body::WhoHas { question: 0, name: Vec::new() }),
        ("have", Body::Have { question: 42 }),
        ("have-not", Body::HaveNot { question: 43 }),
    ];
    let dir = std::path::Path::new("corpus/discovery_datagram");
    std::fs::create_dir_all(dir)?;
    for (name, body) in seeds {
        let mut out = Vec::new();
        emit(&Message { host_id: id, body }, &mut out);
        std::fs::write(dir.join(name), out)?;
    }
    Ok(())
}
