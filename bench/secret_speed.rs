//! What the shared secret costs per datagram (README, "Shared secret"): sealing and opening
//! an authenticated datagram (HMAC-SHA256, the replay check) of the smallest and the largest
//! size, against two references measured in the same run: the discovery core's own work on
//! one datagram, and one datagram sent and received over loopback.
//!
//!     cargo run --release --example secret_speed
//!
//! Each line is the mean over 200,000 rounds on one core.
use flocon::secret::{DatagramAuth, Secret};
use std::time::Instant;
fn main() {
    {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut buf = [0u8; 2048];
        let n = 200_000u32;
        let t = Instant::now();
        for _ in 0..n {
            a.send_to(&[7u8; 32], to).unwrap();
            b.recv_from(&mut buf).unwrap();
        }
        let e = t.elapsed();
        println!(
            "reference: a 32-byte datagram sent and received over loopback in {:.2} us",
            e.as_secs_f64() * 1e6 / f64::from(n)
        );
    }
    {
        use flocon::discovery::wire::{Announcement, Body, Message};
        use flocon::discovery::{Discovery, Identity, Params, emit};
        let now = Instant::now();
        let me = Identity {
            host_id: 1,
            tcp_port: 19432,
            distro: "arch".into(),
            arch: "x86_64".into(),
        };
        let mut core = Discovery::new(me, Params::default(), now, 7);
        let mut ann = Vec::new();
        emit(
            &Message {
                host_id: 2,
                body: Body::Announce(Announcement {
                    tcp_port: 19432,
                    distro: "arch".into(),
                    arch: "x86_64".into(),
                    summary: 0,
                }),
            },
            &mut ann,
        );
        let from: std::net::SocketAddr = "10.0.0.2:19432".parse().unwrap();
        let n = 200_000u32;
        let t = Instant::now();
        for _ in 0..n {
            core.handle_datagram(from, &ann, now, &mut |_, _| false);
            while core.poll_transmit().is_some() {}
        }
        let e = t.elapsed();
        println!(
            "reference: the core handles a {}-byte ANNOUNCE of a known peer in {:.2} us",
            ann.len(),
            e.as_secs_f64() * 1e6 / f64::from(n)
        );
    }
    let key = Secret::from_bytes(b"a benchmark secret of 32 bytes!!").unwrap();
    let tx = DatagramAuth::new(key.clone());
    for size in [30usize, 1384] {
        let mut rx = DatagramAuth::new(key.clone());
        let mut inner = vec![7u8; size];
        let n = 200_000u64;
        let t = Instant::now();
        let mut ok = 0;
        for i in 0..n {
            let ms = 1_800_000_000_000 + i / 8; // 8 per ms: the cache stays under its bound in the window
            inner[..8].copy_from_slice(&i.to_be_bytes());
            let s = tx.seal(&inner, ms);
            if rx.open(&s, ms).is_ok() {
                ok += 1;
            }
        }
        let e = t.elapsed();
        println!(
            "{size}-byte datagram: {n} seal+open in {:?}: {:.2} us each, {ok} taken, {} remembered",
            e,
            e.as_secs_f64() * 1e6 / n as f64,
            rx.remembered()
        );
        let t = Instant::now();
        for i in 0..n {
            let _ = tx.seal(&inner, i);
        }
        let e = t.elapsed();
        println!(
            "{size}-byte datagram: seal alone {:.2} us",
            e.as_secs_f64() * 1e6 / n as f64
        );
    }
}
