//! An upstream mirror for tests: Debian's nginx (nginx-light) in the foreground as a single
//! process, serving a directory (a [`super::pacman::Repo`] root, laid out as
//! `/<repo>/os/<arch>/`) on one address, on loopback or inside a lab namespace. Its access log
//! is in a simple tab-separated format that [`Mirror::access_log`] parses, so tests can check
//! which paths were asked for (a barrier request makes sure every earlier request is logged).
//! With [`MirrorOptions::tls`] it serves `https://` with a certificate the test made (see
//! [`super::tls::TestCa`]), and answers the log barrier on a second, plain port. Killed on drop.
//!
//! It does not build the repository it serves.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lab::in_netns;
use super::{Daemon, TempDir, which};

/// Bound for nginx to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests under this prefix only mark the access log (see [`Mirror::access_log`]); they
/// answer 204 and are left out of every list.
const BARRIER_PREFIX: &str = "/.flocon-log-barrier/";

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// The request target as sent (not decoded).
    pub uri: String,
    pub status: u16,
    pub body_bytes: u64,
    /// The `Range` header, `-` when absent.
    pub range: String,
    pub user_agent: String,
    pub client: String,
    /// nginx's serial number of the connection the request came on.
    pub connection: String,
}

/// A running nginx.
pub struct Mirror {
    addr: SocketAddr,
    /// Where the log barrier is asked: `addr`, or a plain port beside a TLS one.
    plain_addr: SocketAddr,
    https: bool,
    ns: Option<String>,
    root: PathBuf,
    dir: TempDir,
    access_log: PathBuf,
    process: Daemon,
}

/// nginx knobs for tests that need a slow or odd mirror.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// `limit_rate` in bytes per second (per connection) when set.
    pub limit_rate: Option<u64>,
    /// Extra directives pasted into the `server { }` block.
    pub extra_server_conf: String,
    /// Serve TLS on the address with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Mirror {
    /// Serve `root` on `addr` (in namespace `ns` if given; the address must exist there).
    #[track_caller]
    pub fn start(root: &Path, ns: Option<&str>, addr: SocketAddr) -> Mirror {
        Mirror::start_with(root, ns, addr, &MirrorOptions::default())
    }

    #[track_caller]
    pub fn start_with(
        root: &Path,
        ns: Option<&str>,
        addr: SocketAddr,
        options: &MirrorOptions,
    ) -> Mirror {
        let Some(nginx) = which("nginx") else {
            panic!("nginx is not installed (apt-get install -y nginx-light)");
        };
        let dir = TempDir::new("mirror");
        let access_log = dir.join("access.log");
        let conf_path = dir.join("nginx.conf");
        let d = dir.path().display();
        let limit = options
            .limit_rate
            .map(|r| format!("limit_rate {r};"))
            .unwrap_or_default();
        let listen_on = |addr: SocketAddr| match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let (listen, plain_addr) = match &options.tls {
            None => (format!("listen {};", listen_on(addr)), addr),
            Some((cert, key)) => {
                let plain = SocketAddr::new(addr.ip(), super::free_tcp_port());
                let listen = format!(
                    "listen {} ssl; listen {};\n        ssl_certificate {};\n        \
                     ssl_certificate_key {};",
                    listen_on(addr),
                    listen_on(plain),
                    cert.display(),
                    key.display()
                );
                (listen, plain)
            }
        };
        let conf = format!(
            r#"daemon off;
master_process off;
user root root;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    log_format flocon_tests "$request_method\t$request_uri\t$status\t$body_bytes_sent\t$http_range\t$http_user_agent\t$remote_addr\t$connection";
    access_log {d}/access.log flocon_tests;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    keepalive_timeout 30;
    server {{
        {listen}
        server_name _;
        root {root};
        autoindex off;
        location ^~ {BARRIER_PREFIX} {{ return 204; }}
        {limit}
        {extra}
    }}
}}
"#,
            root = root.display(),
            extra = options.extra_server_conf,
        );
        if let Err(e) = fs::write(&conf_path, conf) {
            panic!("cannot write {}: {e}", conf_path.display());
        }
        let name = format!("nginx {addr}");
        let process = Daemon::spawn(
            &name,
            ns,
            nginx,
            [
                "-p".as_ref(),
                dir.path().as_os_str(),
                "-e".as_ref(),
                "stderr".as_ref(),
                "-c".as_ref(),
                conf_path.as_os_str(),
            ],
        );
        let mut mirror = Mirror {
            addr,
            plain_addr,
            https: options.tls.is_some(),
            ns: ns.map(str::to_string),
            root: root.to_path_buf(),
            dir,
            access_log,
            process,
        };
        mirror.wait_listening();
        mirror
    }

    /// Poll-connect until nginx accepts (from inside its namespace), bounded.
    #[track_caller]
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.plain_addr;
        loop {
            let connected = match &self.ns {
                Some(ns) => in_netns(ns, || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                }),
                None => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            };
            if connected {
                return;
            }
            if let Some(status) = self.process.try_exit() {
                panic!(
                    "nginx for {addr} exited with {status} before listening; output:\n{}",
                    self.process.lines().join("\n")
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "nginx did not listen on {addr} within {START_TIMEOUT:?}; output:\n{}",
                    self.process.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` (`https://` for a TLS mirror).
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `http://addr/$repo/os/$arch`, for a `Server =` line.
    pub fn server_url(&self) -> String {
        super::pacman::server_url(&self.base_url())
    }

    /// The document root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// nginx's own process (its error log goes to its stderr, captured there).
    pub fn process(&mut self) -> &mut Daemon {
        &mut self.process
    }

    /// Every request finished before this call, in order. nginx writes a log line just after
    /// the last byte of its response, so a client can see the response before the line exists;
    /// this first sends a barrier request and waits for it to be logged (nginx runs as one
    /// process, so everything answered earlier has been logged by then).
    #[track_caller]
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        self.log_barrier();
        self.access_log_now()
    }

    /// The access log as it is on disk right now, without the barrier (may miss the requests
    /// answered last).
    pub fn access_log_now(&self) -> Vec<AccessLogEntry> {
        self.raw_lines()
            .iter()
            .filter_map(|l| parse_access_line(l))
            .filter(|e| !e.uri.starts_with(BARRIER_PREFIX))
            .collect()
    }

    /// Access-log lines (tab-separated: method, uri, status, bytes, range, user agent,
    /// client) of every request finished before this call.
    #[track_caller]
    pub fn access_log_lines(&self) -> Vec<String> {
        self.log_barrier();
        self.raw_lines()
            .into_iter()
            .filter(|l| !l.contains(BARRIER_PREFIX))
            .collect()
    }

    /// The request targets of every request finished before this call, in order.
    #[track_caller]
    pub fn requested_paths(&self) -> Vec<String> {
        self.access_log().into_iter().map(|e| e.uri).collect()
    }

    /// How many requests finished before this call had target `uri`.
    #[track_caller]
    pub fn request_count(&self, uri: &str) -> usize {
        self.access_log().iter().filter(|e| e.uri == uri).count()
    }

    /// Forget the requests logged so far (after a barrier, so none is logged late).
    #[track_caller]
    pub fn clear_access_log(&self) {
        self.log_barrier();
        let _ = fs::write(&self.access_log, b"");
    }

    fn raw_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Send a barrier request (from the mirror's namespace) and wait until it is logged.
    #[track_caller]
    fn log_barrier(&self) {
        let path = format!("{BARRIER_PREFIX}{}", super::unique_number());
        let addr = self.plain_addr;
        let get = || super::http::try_http_get(addr, &path, &[]);
        let result = match &self.ns {
            Some(ns) => in_netns(ns, get),
            None => get(),
        };
        if let Err(e) = result {
            panic!("mirror at {addr} did not answer a log barrier request: {e}");
        }
        super::wait_until(
            &format!("the log barrier {path} in the access log of the mirror at {addr}"),
            Duration::from_secs(5),
            || {
                self.raw_lines()
                    .iter()
                    .any(|l| l.contains(&path))
                    .then_some(())
            },
            || self.raw_lines().join("\n"),
        );
    }

    /// Wait until an access-log entry matches `pred` (nginx logs when a response ends).
    #[track_caller]
    pub fn wait_for_request(
        &self,
        pred: impl Fn(&AccessLogEntry) -> bool,
        timeout: Duration,
    ) -> AccessLogEntry {
        super::wait_until(
            &format!(
                "a matching request in the access log of the mirror at {}",
                self.addr
            ),
            timeout,
            || self.access_log_now().into_iter().find(|e| pred(e)),
            || self.raw_lines().join("\n"),
        )
    }
}

fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 7 {
        return None;
    }
    Some(AccessLogEntry {
        method: f[0].to_string(),
        uri: f[1].to_string(),
        status: f[2].parse().ok()?,
        body_bytes: f[3].parse().unwrap_or(0),
        range: f[4].to_string(),
        user_agent: f[5].to_string(),
        client: f[6].to_string(),
        connection: f.get(7).unwrap_or(&"").to_string(),
    })
}
