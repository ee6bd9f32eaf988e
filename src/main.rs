//! The `flocon` command: parse the command line and config, set up logging,
//! then run the daemon (or the `query` client) until it stops.
//!
//! Exit status: 0 after a clean stop, 1 when the daemon cannot run (a port in
//! use, for example), 2 for a usage or configuration error.

use std::process::ExitCode;

use flocon::config::{self, Invocation, Settings};
use flocon::event_loop::Daemon;
use flocon::{journal, notify};
use log::{error, info, warn};

fn main() -> ExitCode {
    let invocation = match config::load(std::env::args().skip(1)) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("flocon: {e}");
            eprintln!("Try 'flocon --help' for more information.");
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Version(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Run(settings) => run(settings),
        Invocation::Query { file, settings } => query(&file, &settings),
    }
}

fn init_logging(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    // Only fails when a logger is already set, which cannot happen here.
    if journal::stderr_is_journal() {
        // Under systemd: `<N>` priority prefixes for journald, no time of our own.
        let _ = journal::JournalLogger::init(level);
    } else {
        let _ = simple_logger::SimpleLogger::new()
            .with_level(level)
            .env()
            .init();
    }
}

fn run(settings: Settings) -> ExitCode {
    init_logging(settings.debug);
    info!("flocon {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(file) = &settings.config_file {
        info!("configuration read from {}", file.display());
    }
    for w in &settings.warnings {
        warn!("{w}");
    }
    let mut daemon = match Daemon::new(&settings) {
        Ok(daemon) => daemon,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    // Every socket is bound: tell systemd (Type=notify), if it asked.
    if let Err(e) = notify::notify("READY=1") {
        warn!("sd_notify READY=1: {e}");
    }
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `flocon query FILE`: asks the daemon running on this host which peer has
/// FILE. Exit status 0 when a peer has it, 1 when none has or the daemon
/// cannot be reached.
fn query(file: &str, settings: &Settings) -> ExitCode {
    match ask_local_daemon(file, settings.local_port) {
        Ok((code, body)) => {
            print!("{body}");
            if code == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "flocon: cannot ask the local daemon on 127.0.0.1:{}: {e}",
                settings.local_port
            );
            ExitCode::from(1)
        }
    }
}

fn ask_local_daemon(file: &str, port: u16) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let encoded = flocon::relay::encode_path_segment(file);
    write!(
        stream,
        "GET /query/{encoded} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_owned()))
}
