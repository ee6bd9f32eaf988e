//! The `flocon` command: parse the command line and config, set up logging,
//! then run the daemon (or the `query` client) until it stops.
//!
//! Exit status: 0 after a clean stop, 1 when the daemon cannot run (a port in
//! use, for example), 2 for a usage or configuration error.

use std::process::ExitCode;

use flocon::config::{self, Invocation, Settings};
use flocon::event_loop::{Daemon, Options};
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
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .init();
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
    let options = Options {
        cache_dirs: settings.cache_dirs.clone(),
        port: settings.port,
        bind: std::net::Ipv4Addr::UNSPECIFIED,
        max_connections: settings.max_connections,
    };
    let mut daemon = match Daemon::new(options) {
        Ok(daemon) => daemon,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn query(file: &str, settings: &Settings) -> ExitCode {
    init_logging(settings.debug);
    let _ = file;
    error!("query: the local daemon does not answer questions yet");
    ExitCode::from(1)
}
