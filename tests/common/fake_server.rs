//! A scripted HTTP server for tests that need an upstream misbehaving in a way nginx will not:
//! a body cut short, a stall in the middle, a chunked answer, a trickle, no answer at all.
//! A `std::net::TcpListener` on 127.0.0.1 with one thread per connection: each request head is
//! read (up to the blank line) and recorded, then handed with the socket to the test's
//! behaviour ([`FakeServer::start`]: one request per connection; [`FakeServer::start_keep_alive`]:
//! more on the same connection while the behaviour says so). Counts the connections it
//! accepted. Stops accepting on drop; behaviours that wait should poll [`Conn::stopped`].
//!
//! It does not parse requests beyond the head (requests with a body are not supported).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// One accepted connection handed to a behaviour.
pub struct Conn {
    pub stream: TcpStream,
    /// The request head as received (request line and fields, up to the blank line).
    pub head: String,
    stop: Arc<AtomicBool>,
    /// How many requests came on this connection before this one.
    pub earlier: usize,
    /// Bytes read past the current head (the start of a pipelined request).
    pending: Vec<u8>,
}

impl Conn {
    /// The request target (`/path`).
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// A request header's value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }

    /// True once the server is being dropped.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Write all of `data`; false when the peer is gone.
    pub fn send(&mut self, data: &[u8]) -> bool {
        self.stream
            .write_all(data)
            .and_then(|()| self.stream.flush())
            .is_ok()
    }

    /// Hold the connection open, sending nothing, until `max` passes or the server stops.
    pub fn stall(&self, max: Duration) {
        let until = Instant::now() + max;
        while !self.stopped() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A request header's value in a raw head, by case-insensitive name.
pub fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What runs for each request.
enum Handler {
    Once(Box<dyn Fn(Conn) + Send + Sync>),
    /// Returns true to read another request on the same connection.
    KeepAlive(Box<dyn Fn(&mut Conn) -> bool + Send + Sync>),
}

/// The running server; stops accepting on drop.
pub struct FakeServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Listen on a free port of 127.0.0.1 and run `behaviour` for every request, one request
    /// per connection (the connection closes when `behaviour` returns).
    #[track_caller]
    pub fn start(behaviour: impl Fn(Conn) + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_handler(Handler::Once(Box::new(behaviour)))
    }

    /// Like [`FakeServer::start`], but the connection stays open for another request as long
    /// as `behaviour` returns true.
    #[track_caller]
    pub fn start_keep_alive(
        behaviour: impl Fn(&mut Conn) -> bool + Send + Sync + 'static,
    ) -> FakeServer {
        FakeServer::start_handler(Handler::KeepAlive(Box::new(behaviour)))
    }

    #[track_caller]
    fn start_handler(handler: Handler) -> FakeServer {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(e) => panic!("fake server: cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = listener.local_addr().expect("fake server: local address");
        listener
            .set_nonblocking(true)
            .expect("fake server: non-blocking listener");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let accept = {
            let (heads, stop, connections) = (
                Arc::clone(&heads),
                Arc::clone(&stop),
                Arc::clone(&connections),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let (heads, stop, handler) =
                                (Arc::clone(&heads), Arc::clone(&stop), Arc::clone(&handler));
                            thread::spawn(move || serve(stream, &heads, stop, &handler));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeServer {
            addr,
            heads,
            connections,
            stop,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port/$repo/os/$arch`, for `--upstream`.
    pub fn server_url(&self) -> String {
        format!("http://{}/$repo/os/$arch", self.addr)
    }

    /// Every request head received so far, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The request targets received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.split(' ').nth(1).unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    heads: &Mutex<Vec<String>>,
    stop: Arc<AtomicBool>,
    handler: &Handler,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Some((head, pending)) = read_head(&mut stream, Vec::new()) else {
        return;
    };
    let mut conn = Conn {
        stream,
        head,
        stop,
        earlier: 0,
        pending,
    };
    loop {
        heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.head.clone());
        match handler {
            Handler::Once(behaviour) => return behaviour(conn),
            Handler::KeepAlive(behaviour) => {
                if !behaviour(&mut conn) || conn.stopped() {
                    return;
                }
            }
        }
        let pending = std::mem::take(&mut conn.pending);
        match read_head(&mut conn.stream, pending) {
            Some((head, pending)) => {
                conn.head = head;
                conn.pending = pending;
                conn.earlier += 1;
            }
            None => return,
        }
    }
}

/// Reads one request head (after the bytes already in `buf`); the head and what follows it.
fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
