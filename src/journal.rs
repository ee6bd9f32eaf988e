//! Log lines for systemd's journal: when stderr is the journal's stream (systemd sets
//! `JOURNAL_STREAM=<device>:<inode>` to the stream it connected, and that is still fd 2), each
//! line starts with its syslog priority, `<3>` for an error to `<7>` for debug, which journald
//! takes as the line's priority (so `journalctl -p warning` works), and carries no time of its
//! own (journald stamps each line). Anywhere else, `main.rs` keeps `simple_logger`'s format.
//!
//! Owns only that decision and the line format; not where logs go (stderr, as ever).

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The syslog priority journald reads from a `<N>` prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file that `stderr`
/// (`(device, inode)` of fd 2) is: only then does systemd read our stderr as the journal.
pub fn is_journal_stream(journal_stream: &str, stderr: (u64, u64)) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stderr.0) && ino.parse::<u64>().ok() == Some(stderr.1)
}

/// `(device, inode)` of fd 2, if it has them.
pub fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// True when systemd connected stderr to the journal.
pub fn stderr_is_journal() -> bool {
    match (std::env::var("JOURNAL_STREAM"), stderr_identity()) {
        (Ok(value), Some(id)) => is_journal_stream(&value, id),
        _ => false,
    }
}

/// One line as journald wants it: `<6>[target] message`.
pub fn format_line(level: Level, target: &str, message: &std::fmt::Arguments<'_>) -> String {
    format!("<{}>[{target}] {message}\n", priority(level))
}

/// The logger used when stderr is the journal.
pub struct JournalLogger {
    level: LevelFilter,
}

impl JournalLogger {
    /// Installs it as the `log` crate's logger, at `level`.
    pub fn init(level: LevelFilter) -> Result<(), log::SetLoggerError> {
        log::set_boxed_logger(Box::new(JournalLogger { level }))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl Log for JournalLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record.level(), record.target(), record.args());
        // One write per line, so lines of the helper thread never interleave with the loop's;
        // a full or closed journal stream loses the line rather than stopping the daemon.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslog_ones() {
        assert_eq!(
            [
                Level::Error,
                Level::Warn,
                Level::Info,
                Level::Debug,
                Level::Trace
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }

    #[test]
    fn the_stream_must_be_stderr_itself() {
        assert!(is_journal_stream("8:123456", (8, 123456)));
        for other in [
            "8:123457",
            "9:123456",
            "8",
            "",
            "x:y",
            "8:123456:1",
            " 8:123456",
        ] {
            assert!(!is_journal_stream(other, (8, 123456)), "{other:?}");
        }
    }

    #[test]
    fn a_line_has_the_prefix_and_no_time() {
        let line = format_line(
            Level::Warn,
            "flocon::relay",
            &format_args!("upstream {} failed", "x"),
        );
        assert_eq!(line, "<4>[flocon::relay] upstream x failed\n");
    }
}
