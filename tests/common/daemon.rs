//! A process under test: started with stdout and stderr captured line by line into a shared
//! buffer (and echoed to the test's stderr behind `[name]`, so a failing test shows what the
//! process said), with bounded waits for lines and for exit, signals to its real pid, and
//! kill + reap on drop.
//!
//! It does not interpret what the process prints; tests pass predicates.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::netns_command;

/// Lines seen so far and how many of the two streams have ended.
#[derive(Default)]
struct Captured {
    lines: Vec<String>,
    closed_streams: u8,
}

#[derive(Default)]
struct Shared {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A panicking reader thread cannot leave the buffer half-written; keep going.
        self.captured.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running process whose output is captured; killed and reaped on drop.
pub struct Daemon {
    name: String,
    child: Child,
    shared: Arc<Shared>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Start `program args...`, inside network namespace `ns` when given (through
    /// `ip netns exec`, which execs the program: [`Daemon::pid`] is the program's own pid).
    /// `name` prefixes the echoed lines.
    #[track_caller]
    pub fn spawn<I>(name: &str, ns: Option<&str>, program: impl AsRef<OsStr>, args: I) -> Daemon
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let mut cmd = netns_command(ns, program);
        cmd.args(args);
        Daemon::spawn_command(name, cmd)
    }

    /// Start a prepared command (for extra environment or a working directory; build it with
    /// [`super::netns_command`] to run it in a namespace). Stdin is closed, stdout and stderr
    /// are captured.
    #[track_caller]
    pub fn spawn_command(name: &str, mut cmd: Command) -> Daemon {
        let shown = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("[{name}] cannot start {shown}: {e}"),
        };
        eprintln!("[{name}] started pid {}: {shown}", child.id());
        let shared = Arc::new(Shared::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(name, out, Arc::clone(&shared)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(name, err, Arc::clone(&shared)));
        }
        Daemon {
            name: name.to_string(),
            child,
            shared,
            readers,
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (the program's own, also when started in a namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far (stdout and stderr interleaved as they arrived).
    pub fn lines(&self) -> Vec<String> {
        self.shared.lock().lines.clone()
    }

    /// How many lines were printed so far: a mark for [`Daemon::wait_for_line_after`].
    pub fn line_count(&self) -> usize {
        self.shared.lock().lines.len()
    }

    /// The first line printed so far that matches, if any.
    pub fn find_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.shared.lock().lines.iter().find(|l| pred(l)).cloned()
    }

    /// How many lines printed so far match.
    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.shared.lock().lines.iter().filter(|l| pred(l)).count()
    }

    /// How many lines match, once at least `at_least` do or `timeout` has passed (or the
    /// process closed its output). Another process's log can lag behind what a test has
    /// already seen happen, so a count of lines it expects is taken this way.
    pub fn count_lines_when(
        &self,
        pred: impl Fn(&str) -> bool,
        at_least: usize,
        timeout: Duration,
    ) -> usize {
        let count = |lines: &[String]| lines.iter().filter(|l| pred(l)).count();
        self.wait_lines(timeout, |lines| {
            Some(count(lines)).filter(|&n| n >= at_least)
        })
        .unwrap_or_else(|stop| count(&stop.lines))
    }

    /// Wait for a line (any printed so far counts) matching `pred`; returns it. Panics after
    /// `timeout`, or as soon as the process has closed its output, showing the last lines.
    #[track_caller]
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.wait_for_line_after(0, pred, timeout).1
    }

    /// Wait for a line containing `needle` (the panic message names it).
    #[track_caller]
    pub fn wait_for_line_containing(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_after_described(0, &|l: &str| l.contains(needle), timeout, needle)
            .1
    }

    /// Wait for a matching line with index >= `start` (a [`Daemon::line_count`] taken earlier);
    /// returns its index and text.
    #[track_caller]
    pub fn wait_for_line_after(
        &self,
        start: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> (usize, String) {
        self.wait_for_line_after_described(start, &pred, timeout, "a line matching the predicate")
    }

    #[track_caller]
    fn wait_for_line_after_described(
        &self,
        start: usize,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) -> (usize, String) {
        let mut next = start;
        let found = self.wait_lines(timeout, |lines| {
            while next < lines.len() {
                if pred(&lines[next]) {
                    return Some((next, lines[next].clone()));
                }
                next += 1;
            }
            None
        });
        // A `match`, not a closure: the panic names the test's line (`track_caller`).
        let stop = match found {
            Ok(line) => return line,
            Err(stop) => stop,
        };
        let why = if stop.closed {
            "the process closed its output (it probably exited)".to_string()
        } else {
            format!("timed out after {timeout:?}")
        };
        let tail = tail_text(&stop.lines, 40);
        panic!(
            "[{}] {why} while waiting for {what:?} (from line {start}); last lines:\n{tail}",
            self.name
        )
    }

    /// Runs `check` on the lines printed so far, and again whenever more arrive, until it
    /// gives an answer; `Err` when `timeout` passes or the process closes its output first.
    fn wait_lines<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<R>,
    ) -> Result<R, Stopped> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock();
        loop {
            if let Some(answer) = check(&guard.lines) {
                return Ok(answer);
            }
            let closed = guard.closed_streams as usize >= self.readers.len();
            let now = Instant::now();
            if closed || now >= deadline {
                return Err(Stopped {
                    closed,
                    lines: guard.lines.clone(),
                });
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Send `sig` (e.g. `libc::SIGUSR1`) to the process. Panics if it has already exited.
    #[track_caller]
    pub fn signal(&mut self, sig: libc::c_int) {
        if let Some(status) = self.try_exit() {
            panic!(
                "[{}] cannot send signal {sig}: already exited with {status}; last lines:\n{}",
                self.name,
                tail_text(&self.lines(), 20)
            );
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            panic!("[{}] pid {} does not fit pid_t", self.name, self.child.id());
        };
        // SAFETY: kill has no memory effects; the pid is our own unreaped child, so it cannot
        // have been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            panic!(
                "[{}] kill({pid}, {sig}) failed: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
    }

    /// The exit status if the process has exited (reaps it), without waiting.
    #[track_caller]
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(s) => self.status = s,
                Err(e) => panic!("[{}] cannot wait for the process: {e}", self.name),
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Wait at most `timeout` for the process to exit; returns its status once its output is
    /// fully read. Panics (showing the last lines) if it is still running.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                self.finish_reading(Instant::now() + Duration::from_secs(2));
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "[{}] still running {timeout:?} after being waited for; last lines:\n{}",
                    self.name,
                    tail_text(&self.lines(), 40)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL the process (if still running) and reap it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.finish_reading(Instant::now() + Duration::from_secs(1));
        self.status
    }

    /// Wait (bounded) for the reader threads to reach end of file so `lines()` is complete.
    fn finish_reading(&mut self, deadline: Instant) {
        while !self.readers.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit_quiet().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Reader threads end at EOF; they are detached if a leftover grandchild holds a pipe.
    }
}

impl Daemon {
    fn try_exit_quiet(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    name: &str,
    stream: R,
    shared: Arc<Shared>,
) -> thread::JoinHandle<()> {
    let name = name.to_string();
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        raw.pop();
                    }
                    let line = String::from_utf8_lossy(&raw).into_owned();
                    eprintln!("[{name}] {line}");
                    shared.lock().lines.push(line);
                    shared.changed.notify_all();
                }
            }
        }
        shared.lock().closed_streams += 1;
        shared.changed.notify_all();
    })
}

/// Why [`Daemon::wait_lines`] gave up: the process closed its output, or time ran out; and
/// the lines printed by then.
struct Stopped {
    closed: bool,
    lines: Vec<String>,
}

fn tail_text(lines: &[String], n: usize) -> String {
    let from = lines.len().saturating_sub(n);
    let mut s = String::new();
    if from > 0 {
        s.push_str(&format!("  ... ({from} earlier lines)\n"));
    }
    for l in &lines[from..] {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    if lines.is_empty() {
        s.push_str("  <no output>\n");
    }
    s
}
