//! systemd's `Type=notify` protocol against the real binary: `READY=1` comes
//! once every listener is up, `STOPPING=1` when SIGTERM arrives; and the journal's log format
//! (`<N>` syslog priorities) when `JOURNAL_STREAM` names stderr, the terminal's otherwise.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, TempDir, free_port};

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("no sd_notify datagram within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The daemon on loopback only, serving `dir`.
fn daemon_command(dir: &TempDir, port: u16, local: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flocon"));
    cmd.args(common::flocon::loopback_args(dir.path(), port, local));
    cmd
}

#[test]
fn ready_after_listeners_and_stopping_on_sigterm() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (port, local) = (free_port(), free_port());
    let mut cmd = daemon_command(&dir, port, local);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut daemon = Daemon::spawn_command("flocon", cmd);

    assert_eq!(receive(&socket), "READY=1");
    // Ready means ready: both TCP listeners accept at once.
    for p in [port, local] {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], p)),
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("port {p} not accepting after READY=1: {e}"));
    }
    daemon.wait_for_line_containing("listening on UDP", Duration::from_secs(5));

    daemon.signal(libc::SIGTERM);
    assert_eq!(receive(&socket), "STOPPING=1");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_start_is_normal() {
    let dir = TempDir::new("nonotify");
    let (port, local) = (free_port(), free_port());
    let mut cmd = daemon_command(&dir, port, local);
    cmd.env_remove("NOTIFY_SOCKET");
    let mut daemon = Daemon::spawn_command("flocon", cmd);
    daemon.wait_for_line_containing("serving cache directory", Duration::from_secs(20));
    assert!(daemon.find_line(|l| l.contains("sd_notify")).is_none());
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// Runs the daemon with stderr on a file and `JOURNAL_STREAM` set to `journal_stream(file)`,
/// until it is ready, then stops it; the lines it wrote.
fn log_lines_with_journal_stream(
    label: &str,
    journal_stream: impl Fn(&fs::File) -> String,
) -> Vec<String> {
    let dir = TempDir::new(label);
    let log = dir.join("stderr.log");
    let file = fs::File::create(&log).expect("create the log file");
    let value = journal_stream(&file);
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (port, local) = (free_port(), free_port());
    let mut cmd = daemon_command(&dir, port, local);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("JOURNAL_STREAM", &value)
        .stderr(file.try_clone().expect("dup the log file"))
        .stdout(Stdio::null());
    let mut child = cmd.spawn().expect("spawn flocon");
    assert_eq!(receive(&notify), "READY=1");
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait for flocon");
    assert_eq!(status.code(), Some(0));
    let text = fs::read_to_string(&log).expect("read the log");
    text.lines().map(str::to_owned).collect()
}

#[test]
fn under_the_journal_each_line_carries_its_syslog_priority_and_no_time() {
    use std::os::unix::fs::MetadataExt;
    let lines = log_lines_with_journal_stream("journal", |f| {
        let m = f.metadata().expect("stat the log file");
        format!("{}:{}", m.dev(), m.ino())
    });
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>[flocon") && l.contains("starting")),
        "{lines:#?}"
    );
    for line in &lines {
        let priority = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "a line without a syslog priority: {line:?}"
        );
        if line.contains("could not join") {
            assert!(line.starts_with("<4>"), "a warning is priority 4: {line}");
        }
        if line.contains("stopped") {
            assert!(line.starts_with("<6>"), "{line}");
        }
    }
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_the_terminal_format() {
    let lines = log_lines_with_journal_stream("nojournal", |_| "0:0".to_owned());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("INFO") && l.contains("starting")),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:#?}");
}
