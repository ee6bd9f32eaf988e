//! Lookups through a flocon daemon's loopback port, for bench/scale.py: `GET /query/NAME` over
//! kept-alive connections, `PARALLEL` at once, starting at a given Unix time, each timed.
//!
//!     lookup_client PORT PARALLEL START_UNIX_SECONDS NAME...
//!
//! Prints one line per lookup: `NAME STATUS MILLISECONDS`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: lookup_client PORT PARALLEL START_UNIX_SECONDS NAME...");
        std::process::exit(2);
    }
    let port: u16 = args[0].parse().expect("port");
    let parallel: usize = args[1].parse::<usize>().expect("parallel").max(1);
    let start: f64 = args[2].parse().expect("start time");
    let names = &args[3..];
    let chunks: Vec<Vec<String>> = (0..parallel)
        .map(|k| names.iter().skip(k).step_by(parallel).cloned().collect())
        .filter(|c: &Vec<String>| !c.is_empty())
        .collect();
    // Connect first, then wait for the common start.
    let conns: Vec<TcpStream> = chunks
        .iter()
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    if start > now {
        std::thread::sleep(Duration::from_secs_f64(start - now));
    }
    let threads: Vec<_> = chunks
        .into_iter()
        .zip(conns)
        .map(|(chunk, conn)| std::thread::spawn(move || lookups(conn, chunk)))
        .collect();
    let mut out = String::new();
    for t in threads {
        for (name, status, ms) in t.join().expect("thread") {
            out.push_str(&format!("{name} {status} {ms:.3}\n"));
        }
    }
    print!("{out}");
}

fn lookups(conn: TcpStream, names: Vec<String>) -> Vec<(String, u16, f64)> {
    conn.set_nodelay(true).ok();
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut writer = conn.try_clone().expect("clone");
    let mut reader = BufReader::new(conn);
    let mut results = Vec::new();
    for name in names {
        let t = Instant::now();
        write!(
            writer,
            "GET /query/{name} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .expect("send");
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        results.push((name, status, t.elapsed().as_secs_f64() * 1000.0));
    }
    results
}
