//! Multi-host labs out of network namespaces: one namespace holds a Linux bridge (the switch,
//! multicast snooping off so multicast floods), and each host gets its own namespace with a veth
//! pair, `eth0` inside the host and `vh<i>` on the bridge. Hosts get `10.<a>.<b>.<i+1>/24` and
//! `fd66:<a>:<b>::<i+1>/64` with a per-lab subnet, `lo` up, and a route for IPv4 multicast.
//! These addresses exist only inside the lab's namespaces. [`Lab::with`] builds IPv6-only labs
//! ([`Addressing`]): no IPv4 address on the LAN, each host's IPv6 link-local address (and the
//! ULA, if asked), with duplicate address detection off and the addresses usable before
//! `with` returns.
//!
//! Two labs joined by a [`Router`] are two subnets with unicast routing between them and no
//! multicast routing.
//!
//! Names are `flab<pid>-<n>-sw` / `flab<pid>-<n>-h<i>` (`flab<pid>-<n>-rt` for a router), unique per lab so tests run in parallel.
//! Dropping a [`Lab`] kills whatever still runs in its namespaces and deletes them (their links
//! go with them), also after a panic; creating the first lab of a process sweeps namespaces left
//! by dead test processes. It does not touch the host's own namespace or any other name.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::Duration;

use super::{
    Daemon, is_ci, is_root, netns_command, output_within, show_output, unique_number, which,
};

/// Prefix of every namespace a lab makes.
const PREFIX: &str = "flab";
/// Bound for one `ip` command.
const IP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound for [`Lab::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Serialises namespace creation and deletion inside this process (`ip netns add` racing on
/// the first mount of /run/netns is a known iproute2 problem).
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static SWEEP: Once = Once::new();

/// The addresses the hosts of a lab get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// IPv4 and IPv6 (ULA, and link-local): what [`Lab::new`] builds.
    DualStack,
    /// No IPv4 address on the LAN (loopback keeps 127.0.0.1): IPv6 link-local addresses,
    /// plus the ULA when `ula`.
    Ipv6Only { ula: bool },
}

/// One host of a lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    index: usize,
    ns: String,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    switch_port: String,
}

impl LabHost {
    pub fn index(&self) -> usize {
        self.index
    }
    /// The host's network namespace name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// Its IPv4 address on the lab network (not given to it in an IPv6-only lab).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// Its IPv6 (ULA) address on the lab network (no duplicate address detection delay; not
    /// given to it in an IPv6-only lab without the ULA).
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }
    /// Its IPv6 link-local addresses on `eth0` now (read with `ip`), tentative ones left out.
    pub fn link_local(&self) -> Vec<Ipv6Addr> {
        link_local_of(&self.ns)
    }
    /// `ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), port)
    }
    /// The name of the host's lab interface.
    pub fn iface(&self) -> &'static str {
        "eth0"
    }
}

/// A set of network namespaces wired to one bridge. See the module docs.
pub struct Lab {
    id: String,
    subnet: (u8, u8),
    switch_ns: String,
    hosts: Vec<LabHost>,
    /// Namespaces made so far, deleted on drop.
    made: Vec<String>,
}

impl Lab {
    /// Build a lab of `n_hosts` dual-stack hosts. Returns `None` (after printing why) when not
    /// root, unless `CI=true`, where that is a panic. Panics when the lab cannot be built.
    #[track_caller]
    pub fn new(n_hosts: usize) -> Option<Lab> {
        Lab::with(n_hosts, Addressing::DualStack)
    }

    /// Like [`Lab::new`], the hosts addressed as `addressing` says.
    #[track_caller]
    pub fn with(n_hosts: usize, addressing: Addressing) -> Option<Lab> {
        if !is_root() {
            if is_ci() {
                panic!("Lab::new needs root and CI=true: run the tests as root in CI");
            }
            eprintln!("skipping: network-namespace lab needs root (CI=true makes this fatal)");
            return None;
        }
        if which("ip").is_none() {
            if is_ci() {
                panic!("Lab::new needs `ip` (apt-get install -y iproute2)");
            }
            eprintln!(
                "skipping: network-namespace lab needs `ip` from iproute2 (CI=true makes this fatal)"
            );
            return None;
        }
        assert!(
            n_hosts > 0 && n_hosts < 250,
            "Lab::new({n_hosts}): 1..250 hosts"
        );
        SWEEP.call_once(sweep_stale);

        let pid = std::process::id();
        let n = unique_number();
        let id = format!("{PREFIX}{pid}-{n}");
        let mix = (u64::from(pid) << 8) ^ n;
        let subnet = (16 + ((mix >> 8) % 224) as u8, (mix & 0xff) as u8);
        let mut lab = Lab {
            switch_ns: format!("{id}-sw"),
            id,
            subnet,
            hosts: Vec::new(),
            made: Vec::new(),
        };
        // Anything that fails below panics; `lab` is dropped then and removes what was made.
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let sw = lab.switch_ns.clone();
            ip(&["netns", "add", &sw]);
            lab.made.push(sw.clone());
            ip(&["-n", &sw, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            ip(&["-n", &sw, "link", "set", "br0", "up"]);
            for i in 0..n_hosts {
                let ns = format!("{}-h{i}", lab.id);
                ip(&["netns", "add", &ns]);
                lab.made.push(ns.clone());
                // New interfaces in this namespace skip IPv6 duplicate address detection, so
                // link-local and ULA addresses are usable at once.
                in_netns(&ns, || {
                    for knob in ["default", "all"] {
                        let p = format!("/proc/sys/net/ipv6/conf/{knob}/accept_dad");
                        if let Err(e) = std::fs::write(&p, "0") {
                            eprintln!("lab: cannot write {p}: {e}");
                        }
                    }
                });
                let port = format!("vh{i}");
                ip(&[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ]);
                ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
                let host_ip = Ipv4Addr::new(10, subnet.0, subnet.1, (i + 1) as u8);
                let host_ip6 = Ipv6Addr::new(
                    0xfd66,
                    u16::from(subnet.0),
                    u16::from(subnet.1),
                    0,
                    0,
                    0,
                    0,
                    (i + 1) as u16,
                );
                ip(&["-n", &ns, "link", "set", "lo", "up"]);
                let (v4, ula) = match addressing {
                    Addressing::DualStack => (true, true),
                    Addressing::Ipv6Only { ula } => (false, ula),
                };
                if v4 {
                    ip(&[
                        "-n",
                        &ns,
                        "addr",
                        "add",
                        &format!("{host_ip}/24"),
                        "dev",
                        "eth0",
                    ]);
                }
                if ula {
                    ip(&[
                        "-n",
                        &ns,
                        "addr",
                        "add",
                        &format!("{host_ip6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ]);
                }
                ip(&["-n", &ns, "link", "set", "eth0", "up"]);
                if v4 {
                    ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
                }
                lab.hosts.push(LabHost {
                    index: i,
                    ns,
                    ip: host_ip,
                    ip6: host_ip6,
                    switch_port: port,
                });
            }
        }
        if addressing != Addressing::DualStack {
            // The kernel adds the link-local address when the link comes up: wait for each.
            for h in &lab.hosts {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while link_local_of(&h.ns).is_empty() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "lab: {} has no usable IPv6 link-local address after 10 s",
                        h.ns
                    );
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        eprintln!(
            "lab {} ({addressing:?}): {} hosts on 10.{}.{}.0/24: {}",
            lab.id,
            n_hosts,
            subnet.0,
            subnet.1,
            lab.hosts
                .iter()
                .map(|h| format!("{}={}", h.ns, h.ip))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Some(lab)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    #[track_caller]
    pub fn host(&self, i: usize) -> &LabHost {
        match self.hosts.get(i) {
            Some(h) => h,
            None => panic!(
                "lab {} has {} hosts, no host {i}",
                self.id,
                self.hosts.len()
            ),
        }
    }

    /// The namespace holding the bridge.
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    /// The lab network, e.g. `10.40.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.{}.{}.0/24", self.subnet.0, self.subnet.1)
    }

    /// The address a [`Router`] takes on this lab's network (`.254`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 254)
    }

    /// The lab network's IPv4 broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 255)
    }

    /// A command that runs `program` in host `i`'s namespace.
    #[track_caller]
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        netns_command(Some(self.host(i).ns()), program)
    }

    /// Start `bin args...` on host `i` as a [`Daemon`] named `h<i>`.
    #[track_caller]
    pub fn spawn<I>(&self, i: usize, bin: impl AsRef<OsStr>, args: I) -> Daemon
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.spawn_named(i, &format!("h{i}"), bin, args)
    }

    /// Like [`Lab::spawn`] with a chosen name for the echoed lines.
    #[track_caller]
    pub fn spawn_named<I>(&self, i: usize, name: &str, bin: impl AsRef<OsStr>, args: I) -> Daemon
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        Daemon::spawn(name, Some(self.host(i).ns()), bin, args)
    }

    /// Run `program args...` on host `i` to completion (at most [`EXEC_TIMEOUT`]).
    #[track_caller]
    pub fn exec<I>(&self, i: usize, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.exec_timeout(i, program, args, EXEC_TIMEOUT)
    }

    #[track_caller]
    pub fn exec_timeout<I>(
        &self,
        i: usize,
        program: impl AsRef<OsStr>,
        args: I,
        timeout: Duration,
    ) -> Output
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let mut cmd = self.command(i, program);
        cmd.args(args);
        output_within(cmd, timeout)
    }

    /// Like [`Lab::exec`], panicking with the output unless the command succeeded.
    #[track_caller]
    pub fn exec_ok<I>(&self, i: usize, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let mut cmd = self.command(i, program);
        cmd.args(args);
        let shown = format!("{cmd:?}");
        let out = output_within(cmd, EXEC_TIMEOUT);
        if !out.status.success() {
            panic!("{shown} failed: {}\n{}", out.status, show_output(&out));
        }
        out
    }

    /// Run `f` in a thread inside host `i`'s namespace: sockets it makes belong to that host.
    #[track_caller]
    pub fn run_in<R: Send>(&self, i: usize, f: impl FnOnce() -> R + Send) -> R {
        in_netns(self.host(i).ns(), f)
    }

    /// Pull host `i`'s cable: its switch port goes down, so it loses carrier and nothing
    /// reaches it or leaves it; its own configuration (addresses, routes) is kept.
    #[track_caller]
    pub fn unplug(&self, i: usize) {
        let h = self.host(i);
        ip(&["-n", &self.switch_ns, "link", "set", &h.switch_port, "down"]);
    }

    /// Plug host `i`'s cable back in.
    #[track_caller]
    pub fn plug(&self, i: usize) {
        let h = self.host(i);
        ip(&["-n", &self.switch_ns, "link", "set", &h.switch_port, "up"]);
    }

    /// Cut host `i` off at the switch without its noticing: its bridge port stops forwarding
    /// (`bridge link set ... state 0`), but its link stays up, with carrier, and no interface or
    /// address event reaches the host.
    #[track_caller]
    pub fn isolate(&self, i: usize) {
        self.set_port_state(i, "0");
    }

    /// Let host `i`'s bridge port forward again (`state 3`).
    #[track_caller]
    pub fn reconnect(&self, i: usize) {
        self.set_port_state(i, "3");
    }

    #[track_caller]
    fn set_port_state(&self, i: usize, state: &str) {
        let port = &self.host(i).switch_port;
        bridge(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            "dev",
            port,
            "state",
            state,
        ]);
    }

    /// Take host `i`'s `eth0` down (`ip link set eth0 down` inside the host): the host sees its
    /// interface go away; the kernel drops the routes through it.
    #[track_caller]
    pub fn link_down(&self, i: usize) {
        ip(&["-n", self.host(i).ns(), "link", "set", "eth0", "down"]);
    }

    /// Bring host `i`'s `eth0` back up and restore its multicast route.
    #[track_caller]
    pub fn link_up(&self, i: usize) {
        let ns = self.host(i).ns();
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "route", "replace", "224.0.0.0/4", "dev", "eth0"]);
    }
}

/// A router namespace joining two labs (two subnets): one leg on each lab's bridge at `.254`
/// of its subnet, IPv4 forwarding on, no multicast routing (so the group stays in each
/// subnet, as a real router keeps it), and a route to the other subnet in every host. IPv4
/// only; a lab joins at most one router (its bridge port is named `vrt`).
/// Dropping it deletes its namespace (its legs go with it).
pub struct Router {
    ns: String,
}

impl Router {
    /// The router between lab `a` and lab `b`.
    #[track_caller]
    pub fn between(a: &Lab, b: &Lab) -> Router {
        let ns = format!("{PREFIX}{}-{}-rt", std::process::id(), unique_number());
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        ip(&["netns", "add", &ns]);
        let router = Router { ns: ns.clone() };
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        in_netns(&ns, || {
            if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                panic!("router: cannot turn on IPv4 forwarding: {e}");
            }
        });
        for (leg, lab, other) in [("ra", a, b), ("rb", b, a)] {
            ip(&[
                "-n",
                &lab.switch_ns,
                "link",
                "add",
                "vrt",
                "type",
                "veth",
                "peer",
                "name",
                leg,
                "netns",
                &ns,
            ]);
            ip(&[
                "-n",
                &lab.switch_ns,
                "link",
                "set",
                "vrt",
                "master",
                "br0",
                "up",
            ]);
            let gateway = lab.gateway();
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                leg,
            ]);
            ip(&["-n", &ns, "link", "set", leg, "up"]);
            for h in &lab.hosts {
                ip(&[
                    "-n",
                    &h.ns,
                    "route",
                    "add",
                    &other.subnet(),
                    "via",
                    &gateway.to_string(),
                ]);
            }
        }
        eprintln!("router {ns}: {} <-> {}", a.subnet(), b.subnet());
        router
    }

    /// The router's namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        remove_netns(&self.ns);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for ns in self.made.iter().rev() {
            remove_netns(ns);
        }
    }
}

/// Run `f` in a new thread that has joined network namespace `ns` (a name under /run/netns).
/// Sockets made there stay in that namespace after the thread ends. Panics in `f` propagate.
#[track_caller]
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/run/netns/{ns}");
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => panic!("cannot open network namespace {path}: {e}"),
            };
            // SAFETY: `file` is an open namespace fd for the duration of the call; setns only
            // changes this thread's network namespace, and this thread ends after `f`, so no
            // other code runs in it unexpectedly.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                panic!("setns({path}) failed: {}", std::io::Error::last_os_error());
            }
            drop(file);
            f()
        });
        match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The IPv6 link-local addresses of `eth0` in namespace `ns`, tentative ones left out.
fn link_local_of(ns: &str) -> Vec<Ipv6Addr> {
    let mut cmd = Command::new(which("ip").unwrap_or_else(|| "ip".into()));
    cmd.args([
        "-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
    ]);
    let out = output_within(cmd, IP_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("tentative"))
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
            cidr.split('/').next()?.parse().ok()
        })
        .collect()
}

/// Run one `ip` command, panicking with its output if it fails.
#[track_caller]
fn ip(args: &[&str]) {
    iproute2("ip", args);
}

/// `bridge <args>` (iproute2), panicking on failure.
#[track_caller]
fn bridge(args: &[&str]) {
    iproute2("bridge", args);
}

/// Run an iproute2 `program` with `args`, panicking with its output if it fails.
#[track_caller]
fn iproute2(program: &str, args: &[&str]) {
    let mut cmd = Command::new(which(program).unwrap_or_else(|| program.into()));
    cmd.args(args);
    let out = output_within(cmd, IP_TIMEOUT);
    if !out.status.success() {
        panic!(
            "{program} {} failed: {}\n{}",
            args.join(" "),
            out.status,
            show_output(&out)
        );
    }
}

/// Kill what runs in `ns` (only processes inside a namespace a lab made) and delete it.
/// Never panics: it runs from Drop.
fn remove_netns(ns: &str) {
    let ip_bin = which("ip").unwrap_or_else(|| "ip".into());
    let mut pids_cmd = Command::new(&ip_bin);
    pids_cmd.args(["netns", "pids", ns]);
    if let Ok(out) = pids_cmd.output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            .filter(|p| *p > 1)
        {
            // SAFETY: kill has no memory effects; the pid was listed as running inside a
            // namespace this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut del = Command::new(&ip_bin);
    del.args(["netns", "del", ns]);
    match del.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "lab: ip netns del {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("lab: cannot run ip netns del {ns}: {e}"),
    }
}

/// Delete lab namespaces left behind by test processes that are gone (or by an earlier
/// process that had our pid). Best effort.
fn sweep_stale() {
    let ip_bin = which("ip").unwrap_or_else(|| "ip".into());
    let Ok(out) = Command::new(&ip_bin).args(["netns", "list"]).output() else {
        return;
    };
    let me = std::process::id();
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let owner_alive = pid != me && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !owner_alive {
            eprintln!("lab: removing stale namespace {name}");
            remove_netns(name);
        }
    }
}
