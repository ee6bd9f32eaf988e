//! The `flocon` command: parse the command line and config, set up logging,
//! then run the daemon until it stops, or one of the commands that ask it
//! (`query`, `status`, `doctor`).
//!
//! Exit status: 0 after a clean stop, 1 when the daemon cannot run (a port in
//! use, for example), 2 for a usage or configuration error.

use std::process::ExitCode;

use flocon::config::{self, Invocation, Settings};
use flocon::event_loop::Daemon;
use flocon::status::{self, ask};
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
        Invocation::Status { json, settings } => status(json, &settings),
        Invocation::Doctor(settings) => doctor(&settings),
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
    let path = format!("/query/{}", flocon::relay::encode_path_segment(file));
    match ask::get(settings.local_port, &path) {
        Ok((code, body)) => {
            print!("{body}");
            if code == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("flocon: {}", ask::no_daemon(settings.local_port, &e));
            ExitCode::from(1)
        }
    }
}

/// `flocon status [--json]`: what the daemon on this host is doing. Exit status 1, with one
/// line, when no daemon answers or the answer is not its JSON status.
fn status(json: bool, settings: &Settings) -> ExitCode {
    let port = settings.local_port;
    let body = match ask::get(port, status::JSON_PATH) {
        Ok((200, body)) => body,
        Ok((code, _)) => {
            eprintln!(
                "flocon: 127.0.0.1:{port} answers {code} to {}: not this version's flocon",
                status::JSON_PATH
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("flocon: {}", ask::no_daemon(port, &e));
            return ExitCode::from(1);
        }
    };
    match status::json::parse(&body) {
        Ok(_) if json => print!("{body}"),
        Ok(value) => print!("{}", status::show::status(&value)),
        Err(e) => {
            eprintln!("flocon: the answer on 127.0.0.1:{port} is not flocon's JSON status: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// `flocon doctor`: one line per check; exit status 0 only when none failed.
fn doctor(settings: &Settings) -> ExitCode {
    let checks = flocon::doctor::run(settings);
    print!("{}", flocon::doctor::render(&checks));
    if flocon::doctor::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
