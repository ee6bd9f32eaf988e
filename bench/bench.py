#!/usr/bin/env python3
"""flocon benchmark driver, started by bench/run.sh (which installs the tools and builds flocon).

Builds a three-namespace lab (a bridge and two hosts, `h0` the pacman host and `h1` the peer
that also holds the mirror), generates real packages of four sizes (plus 46 more for pacman),
then measures side by side, alternating flocon and reference runs:

- the peer file server (h1, loopback clients) against nginx and a single-threaded server
  (darkhttpd when installed, else lighttpd): 200 MiB throughput (curl), 4 KiB req/s (wrk);
- the relay (h0 pacman port -> peer h1 over the lab link, lookup included) against nginx as a
  streaming reverse proxy in front of the same peer server: throughput, req/s, added TTFB;
- the relay with verification on (issue 13 item 6): h0's daemon restarted, last, with a
  pacman.conf naming the repository's sync database, so it hashes each relayed package while
  it streams; throughput and CPU per GiB against the same nginx proxy;
- the relay from an `https://` mirror (issue 15): h1's nginx serves the big file over TLS with a
  certificate from a CA this script makes; h0's second flocon (no peers, `--ca-file`) fetches
  it with rustls against nginx proxying the same TLS mirror (certificate checked too):
  throughput and CPU per GiB;
- `pacman -Sw` of 50 packages through flocon (from the peer) against straight from nginx;
- memory idle and with 64 slow relays, idle wake-ups and CPU, CPU per GiB, binary size.

Everything runs inside namespaces this script makes and deletes; every process it starts is
stopped by its PID. Results go to bench/out/results.{tsv,md}. `BENCH_QUICK=1`: smoke run.
`python3 bench/bench.py --ttfb N URL...` is the TTFB client it runs inside a namespace.
"""

import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
BIN = os.environ.get("BENCH_BIN") or os.path.join(ROOT, "target", "release", "flocon")
QUICK = os.environ.get("BENCH_QUICK") == "1"
KEEP = os.environ.get("BENCH_KEEP") == "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30

if QUICK:
    SIZES = [("4k", 4 << 10), ("1m", 1 << 20), ("4m", 4 << 20), ("32m", 32 << 20)]
    CURL_REPS, WRK_REPS, WRK_SECS, TTFB_N, PACMAN_REPS, MEM_SECS = 1, 1, 2, 100, 1, 5
    IDLE_SECS, DEADLINE = 10, 240
else:
    SIZES = [("4k", 4 << 10), ("1m", 1 << 20), ("20m", 20 << 20), ("200m", 200 << 20)]
    CURL_REPS, WRK_REPS, WRK_SECS, TTFB_N, PACMAN_REPS, MEM_SECS = 5, 5, 10, 1000, 5, 20
    IDLE_SECS, DEADLINE = 60, 1500
IDLE_SECS = int(os.environ.get("BENCH_IDLE_SECONDS", IDLE_SECS))
CURL_REPS = int(os.environ.get("BENCH_CURL_REPS", CURL_REPS))
# Only these parts (comma-separated): idle, peer, relay, miss, pacman, memory, https, verified,
# binary.
ONLY = {x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}
SLOW_READERS, SLOW_RATE = 64, "2M"
# The 50 packages pacman downloads: the four bench-* ones and these extra ones.
MIX = [("4k", 30), ("1m", 12), (SIZES[2][0], 4)]

REPO, ARCH = "testrepo", "x86_64"
# The miss path: a repository only the mirror has (not h1's cache), asked in a rotation of
# MISS_FOUND files it holds and MISS_ABSENT names nobody has (upstream 404s).
MISS_REPO, MISS_FOUND, MISS_ABSENT = "mirroronly", 7, 3
FLOCON_PORT, FLOCON_LOCAL = 19432, 19433
MIRROR_PORT, NGINX_FILES_PORT, SINGLE_PORT, PROXY_PORT = 8080, 8081, 8082, 8090
# The https part: h1's TLS mirror, h0's nginx proxy to it, and h0's second flocon (its own
# discovery port, so it knows no peer and fetches every file from the TLS mirror).
TLS_MIRROR_PORT, TLS_PROXY_PORT = 8443, 8091
TLS_FLOCON_PORT, TLS_FLOCON_LOCAL = 19442, 19443
TLS_NAME = "mirror.flocon.test"
NS_PREFIX = "fbench"


def label(size_name):
    """"200m" -> "200 MiB"."""
    return size_name[:-1] + {"k": " KiB", "m": " MiB"}[size_name[-1]]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- /proc ----------------------------------------------------------------------------------


def proc_children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def proc_tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += proc_children(p)
    return out


def proc_cpu(pids):
    """utime + stime of `pids`, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                v = v.split()
                if v and v[0].isdigit():
                    out[k] = int(v[0])
    except OSError:
        pass
    return out


def status_sum(pids, key):
    return sum(proc_status(p).get(key, 0) for p in pids)


def wakeups(pids):
    return status_sum(pids, "voluntary_ctxt_switches") + status_sum(
        pids, "nonvoluntary_ctxt_switches"
    )


def reset_hwm(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS
        except OSError:
            pass


class Window:
    """Noise over the measurement windows it was entered for: the steal share of all CPU time
    (from /proc/stat), and the share used by processes outside the benchmark (user + system
    time of the machine less what the benchmark's servers, clients and this driver used;
    approximate: softirq work is left out of both, and so is niced work, which yields to the
    benchmark)."""

    def __init__(self):
        self.total = self.steal = self.busy = self.ours = 0.0
        self.start = None

    @staticmethod
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        ours = (kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime
                + sum(proc_cpu(p.pids()) for p in PROCS))
        return sum(v) / CLK_TCK, v[7] / CLK_TCK, (v[0] + v[2]) / CLK_TCK, ours

    def __enter__(self):
        self.start = self.read()
        return self

    def __exit__(self, *exc):
        now = self.read()
        self.total += now[0] - self.start[0]
        self.steal += now[1] - self.start[1]
        self.busy += now[2] - self.start[2]
        self.ours += now[3] - self.start[3]

    def share(self):
        if not self.total:
            return None
        return (self.steal / self.total, max(0.0, self.busy - self.ours) / self.total)


# ---- processes and namespaces ---------------------------------------------------------------

PROCS = []


def run(argv, timeout=60, check=True, ns=None, **kw):
    if ns:
        argv = ["ip", "netns", "exec", ns] + list(argv)
    r = subprocess.run(
        argv, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


class Proc:
    """A server started in a namespace (`ip netns exec` execs, so our child is the server)."""

    def __init__(self, name, ns, argv, logdir):
        self.name = name
        self.log = open(os.path.join(logdir, f"{name}.log"), "wb")
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns] + argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        PROCS.append(self)

    @property
    def pid(self):
        return self.p.pid

    def pids(self):
        return proc_tree(self.pid) if self.p.poll() is None else []

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            kids = proc_tree(self.pid)
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                for pid in reversed(kids):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.p.wait(timeout=5)
        self.log.close()


class Lab:
    """A bridge namespace and hosts h0, h1 on veth pairs, 10.77.<n>.{1,2}/24; h0 also has
    10.77.<n>.3 (`proxy_ip`), the source address of nginx's proxy connections."""

    def __init__(self):
        self.id = f"{NS_PREFIX}{os.getpid()}"
        self.made = []
        sweep_stale()
        n = os.getpid() % 250 + 1
        self.sw = f"{self.id}-sw"
        self.ns = [f"{self.id}-h0", f"{self.id}-h1"]
        self.ip = [f"10.77.{n}.1", f"10.77.{n}.2"]
        self.proxy_ip = f"10.77.{n}.3"
        self._ip("netns", "add", self.sw)
        self.made.append(self.sw)
        self._ip("-n", self.sw, "link", "set", "lo", "up")
        self._ip("-n", self.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self._ip("-n", self.sw, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            self._ip("netns", "add", ns)
            self.made.append(ns)
            self._ip("-n", self.sw, "link", "add", f"vh{i}", "type", "veth", "peer", "name",
                     "eth0", "netns", ns)
            self._ip("-n", self.sw, "link", "set", f"vh{i}", "master", "br0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "addr", "add", f"{self.ip[i]}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        # h1's peer port takes at most 64 connections from one address; nginx's idle keepalive
        # connections (32 per worker) would fill that alone, and refuse h0's relay.
        self._ip("-n", self.ns[0], "addr", "add", f"{self.proxy_ip}/24", "dev", "eth0")
        log(f"lab {self.id}: h0={self.ip[0]} (nginx proxy from {self.proxy_ip}) h1={self.ip[1]}")

    @staticmethod
    def _ip(*args):
        run(["ip"] + list(args), timeout=15)

    def delete(self):
        for ns in reversed(self.made):
            remove_netns(ns)
        self.made = []


def remove_netns(ns):
    """Kill what still runs in `ns` (a namespace this script made) and delete it."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=15)
    for pid in r.stdout.split():
        if pid.isdigit() and int(pid) > 1:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=15)


def sweep_stale():
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{NS_PREFIX}(\d+)-", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            log(f"removing stale namespace {name}")
            remove_netns(name)


# ---- packages -------------------------------------------------------------------------------


def pkg_file(name):
    return f"{name}-1.0-1-{ARCH}.pkg.tar.zst"


def make_package(outdir, name, size, stage_root):
    """A real package: .PKGINFO and `size` random bytes in usr/share/<name>/payload.bin."""
    stage = tempfile.mkdtemp(dir=stage_root)
    try:
        payload_dir = os.path.join(stage, "usr", "share", name)
        os.makedirs(payload_dir)
        with open(os.path.join(stage, ".PKGINFO"), "w") as f:
            f.write(
                f"pkgname = {name}\npkgbase = {name}\npkgver = 1.0-1\n"
                f"pkgdesc = flocon benchmark package\nurl = https://example.invalid/\n"
                f"builddate = 1700000000\npackager = flocon bench <bench@flocon.invalid>\n"
                f"size = {size}\narch = {ARCH}\nlicense = BSD-3-Clause\n"
            )
        with open(os.path.join(payload_dir, "payload.bin"), "wb") as f:
            left = size
            while left:
                n = min(left, MIB)
                f.write(os.urandom(n))
                left -= n
        out = os.path.join(outdir, pkg_file(name))
        run(["bsdtar", "--zstd", "--uid", "0", "--gid", "0", "--uname", "root", "--gname",
             "root", "-cf", out, ".PKGINFO", "usr"], cwd=stage, timeout=300)
        with open(out + ".sig", "wb") as f:
            f.write(b"\x88" + os.urandom(118))  # looks like a signature packet, is not one
        os.chmod(out, 0o644)
        os.chmod(out + ".sig", 0o644)
        return pkg_file(name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def make_repo(work):
    repo_dir = os.path.join(work, "mirror", REPO, "os", ARCH)
    os.makedirs(repo_dir)
    bench, mix = {}, []
    for label, size in SIZES:
        bench[label] = make_package(repo_dir, f"bench-{label}", size, work)
    sizes = dict(SIZES)
    for label, count in MIX:
        for i in range(1, count + 1):
            mix.append(make_package(repo_dir, f"mix-{label}-{i:02d}", sizes[label], work))
    files = list(bench.values()) + mix
    run(["repo-add", "-q", f"{REPO}.db.tar.gz"] + files, cwd=repo_dir, timeout=300)
    for kind in ("db", "files"):
        link = os.path.join(repo_dir, f"{REPO}.{kind}")
        os.remove(link)
        shutil.copy(link + ".tar.gz", link)
    for dirpath, _, _ in os.walk(work):
        os.chmod(dirpath, 0o755)
    total = sum(os.path.getsize(os.path.join(repo_dir, f)) for f in files)
    log(f"repo: {len(files)} packages, {total / MIB:.0f} MiB, in {repo_dir}")
    return repo_dir, bench, files


# ---- servers --------------------------------------------------------------------------------


def flocon_argv(cache, extra=(), pacman_conf="/nonexistent"):
    """flocon with its defaults; `pacman_conf` names the sync databases it reads (none by
    default: nothing is verified)."""
    return [BIN, "-c", "/dev/null", "--pacman-conf", pacman_conf, "--cache-dir", cache,
            "--port", str(FLOCON_PORT), "--local-port", str(FLOCON_LOCAL),
            "--interface", "eth0"] + list(extra)


NGINX_COMMON = """daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
{body}
}}
"""


def nginx_conf(prefix, body):
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(prefix=prefix, body=body))
    return ["nginx", "-c", path, "-p", prefix]


def single_threaded_server(work, root):
    """darkhttpd when installed (Debian has it from trixie on), else lighttpd (single process)."""
    dark = os.environ.get("DARKHTTPD") or shutil.which("darkhttpd")
    if dark:
        return "darkhttpd", [dark, root, "--port", str(SINGLE_PORT), "--addr", "127.0.0.1",
                             "--no-listing", "--no-server-id"]
    conf = os.path.join(work, "lighttpd.conf")
    with open(conf, "w") as f:
        f.write(
            f'server.document-root = "{root}"\n'
            f"server.port = {SINGLE_PORT}\n"
            f'server.bind = "127.0.0.1"\n'
            f'server.errorlog = "{work}/lighttpd.err"\n'
            f"server.max-keep-alive-requests = 1000\n"
            f'mimetype.assign = ("" => "application/octet-stream")\n'
        )
    return "lighttpd", ["lighttpd", "-D", "-f", conf]


def wait_http(ns, url, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
                ns=ns, check=False, timeout=10)
        if r.stdout.strip() == "200":
            return True
        time.sleep(0.2)
    return False


# ---- clients --------------------------------------------------------------------------------


def curl_speed(ns, url, expect_size):
    """One download; bytes/s (curl's speed_download), None on failure."""
    r = run(["curl", "-s", "-o", "/dev/null", "--max-time", "120", "-w",
             "%{http_code} %{size_download} %{speed_download}", url],
            ns=ns, check=False, timeout=150)
    parts = r.stdout.split()
    if len(parts) != 3 or parts[0] != "200" or int(parts[1]) != expect_size:
        log(f"  curl {url}: {r.stdout.strip()} {r.stderr.strip()}")
        return None
    return float(parts[2])


def wrk(ns, url, secs):
    r = run(["wrk", "-t2", "-c32", f"-d{secs}s", url], ns=ns, check=False, timeout=secs + 60)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    n = re.search(r"(\d+) requests in", r.stdout)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", r.stdout)
    errs = re.search(r"Socket errors:.*", r.stdout)
    if not m or bad:
        log(f"  wrk {url}: {r.stdout.strip()} {r.stderr.strip()}")
        return None, 0, r.stdout
    if errs:
        log(f"  wrk {url}: {errs.group(0)}")
    return float(m.group(1)), int(n.group(1)) if n else 0, r.stdout


def wrk_mix(ns, script, url, secs):
    """wrk with a Lua script that rotates paths; non-2xx answers are expected. Returns
    (req/s or None, requests, non-2xx answers, socket error text or "")."""
    r = run(["wrk", "-t2", "-c32", f"-d{secs}s", "-s", script, url], ns=ns, check=False,
            timeout=secs + 60)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    n = re.search(r"(\d+) requests in", r.stdout)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", r.stdout)
    errs = re.search(r"Socket errors:(.*)", r.stdout)
    if not m or not n:
        log(f"  wrk {url}: {r.stdout.strip()} {r.stderr.strip()}")
        return None, 0, 0, ""
    if errs:
        log(f"  wrk {url}: Socket errors:{errs.group(1)}")
    return (float(m.group(1)), int(n.group(1)), int(bad.group(1)) if bad else 0,
            errs.group(1).strip() if errs else "")


class MirrorLog:
    """The mirror's access log, one line per request: nginx's `$connection` (its serial number
    of accepted connections, shared by the workers) and `$status`. Buffered by nginx (flushed
    every second), so a window is read a moment after its traffic ended."""

    FORMAT = "log_format conns '$connection $status';"

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.top = 0  # the highest serial seen so far

    def window(self):
        """Since the last call: (requests, {status: count}, the connections that carried them
        (serial numbers past the highest one seen before))."""
        time.sleep(1.5)  # nginx's flush=1s
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return 0, {}, 0
        end = data.rfind(b"\n") + 1
        self.pos += end
        statuses, serials = {}, set()
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                serials.add(int(parts[0]))
                statuses[parts[1]] = statuses.get(parts[1], 0) + 1
        top0 = self.top
        self.top = max([top0] + list(serials))
        fresh = {c for c in serials if c > top0}
        return sum(statuses.values()), statuses, len(fresh)


def passive_opens(ns):
    """TCP connections accepted so far in namespace `ns` (Tcp PassiveOpens of its
    /proc/net/snmp)."""
    r = run(["cat", "/proc/net/snmp"], ns=ns, check=False, timeout=10)
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2 or "PassiveOpens" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("PassiveOpens")])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pctl(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def alternate(targets, rnd):
    return list(targets) if rnd % 2 == 0 else list(reversed(targets))


def ttfb_client(n, urls):
    """Run inside a namespace: `n` rounds, one fresh connection per request to each URL (order
    alternating), time from connect to the first response byte; prints JSON lists in seconds."""
    targets = []
    for u in urls:
        m = re.match(r"http://([^/:]+):(\d+)(/.*)", u)
        targets.append((m.group(1), int(m.group(2)), m.group(3)))
    res = [[] for _ in targets]
    for i in range(n):
        for k in alternate(range(len(targets)), i):
            host, port, path = targets[k]
            req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: flocon-bench\r\n"
                   f"Connection: close\r\n\r\n").encode()
            t0 = time.perf_counter()
            s = socket.create_connection((host, port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            data = s.recv(65536)
            t1 = time.perf_counter()
            if not data.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"{host}:{port}{path}: {data[:100]!r}")
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            want = int(m.group(1)) if m else None
            got = len(body)
            while want is None or got < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            s.close()
            res[k].append(t1 - t0)
    print(json.dumps(res))


# ---- results --------------------------------------------------------------------------------

ROWS = []


def fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("MiB/s", "req/s"):
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.3f}"
    if unit in ("MiB", "s", "wake-ups/s", "CPU s/GiB", "CPU ms/1k req"):
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"
    if unit == "CPU s/min":
        return f"{v:.3f}"
    return f"{v:g}"


def add_row(section, name, unit, flocon, ref_name, ref, goal=None, noise=None, notes=""):
    """goal: ("ratio>=", x), ("ratio<=", x) or ("abs<=", x) on flocon's figure."""
    ratio = flocon / ref if flocon is not None and ref not in (None, 0) else None
    holds, goal_text = None, ""
    if goal:
        kind, x = goal
        if kind == "ratio>=":
            goal_text = f">= {x:.1f}x"
            holds = None if ratio is None else ratio >= x
        elif kind == "ratio<=":
            goal_text = f"<= {x:.2f}x"
            holds = None if ratio is None else ratio <= x
        else:
            goal_text = f"<= {x:g} {unit}"
            holds = None if flocon is None else flocon <= x
    ROWS.append({
        "section": section, "measurement": name, "unit": unit, "flocon": flocon,
        "reference": ref_name, "reference_value": ref, "ratio": ratio, "goal": goal_text,
        "holds": holds, "noise": noise, "notes": notes,
    })
    r = ROWS[-1]
    log(f"ROW {name}: flocon {fmt(flocon, unit)} {unit} | {ref_name} {fmt(ref, unit)} | "
        f"ratio {'—' if ratio is None else f'{ratio:.2f}'} | {goal_text} "
        f"{'' if holds is None else ('holds' if holds else 'FAILS')} {notes}")
    return r


def unavailable(section, name, unit, ref_name, goal=None, why="relay: not available"):
    add_row(section, name, unit, None, ref_name, None, goal, None, why)


def ratio_text(r):
    """Two decimals, three when two would round a failing ratio onto its goal."""
    if r["ratio"] is None:
        return "—"
    text = f"{r['ratio']:.2f}x"
    m = re.match(r"([<>]=) ([\d.]+)x", r["goal"])
    if r["holds"] is False and m:
        shown, x = float(text[:-1]), float(m.group(2))
        if (m.group(1) == ">=" and shown >= x) or (m.group(1) == "<=" and shown <= x):
            text = f"{r['ratio']:.3f}x"
    return text


def cells(r):
    return [
        r["measurement"], r["unit"], fmt(r["flocon"], r["unit"]), r["reference"],
        fmt(r["reference_value"], r["unit"]),
        ratio_text(r),
        r["goal"] or "—",
        {None: "—", True: "yes", False: "NO"}[r["holds"]],
        "—" if r["noise"] is None else f"{100 * r['noise'][0]:.1f}%",
        "—" if r["noise"] is None else f"{100 * r['noise'][1]:.0f}%",
        r["notes"],
    ]


HEADER = ["measurement", "unit", "flocon", "reference", "ref value", "ratio", "goal", "holds",
          "steal", "others", "notes"]


SECTIONS = ["peer server", "relay", "pacman", "memory", "idle", "binary"]


def write_results(meta):
    ROWS.sort(key=lambda r: SECTIONS.index(r["section"]))  # stable: order within a section kept
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.tsv"), "w") as f:
        f.write("\t".join(["section", "measurement", "unit", "flocon", "reference",
                           "reference_value", "ratio", "goal", "holds", "steal_share",
                           "others_share", "notes"]) + "\n")
        for r in ROWS:
            vals = [r["section"], r["measurement"], r["unit"], r["flocon"], r["reference"],
                    r["reference_value"], None if r["ratio"] is None else round(r["ratio"], 4),
                    r["goal"], r["holds"],
                    None if r["noise"] is None else round(r["noise"][0], 4),
                    None if r["noise"] is None else round(r["noise"][1], 4), r["notes"]]
            f.write("\t".join("" if v is None else str(v) for v in vals) + "\n")
    lines = [f"# flocon benchmark ({'quick' if QUICK else 'full'} run)", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: {v}")
    lines.append("")
    lines.append("ratio = flocon / reference. steal: the hypervisor's share of all CPU time in the "
                 "row's measurement windows; others: the share used by processes outside the "
                 "benchmark in those windows (approximate; niced work left out).")
    lines.append("")
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join(["---"] * len(HEADER)) + "|")
    for r in ROWS:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |")
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # The terminal table: notes last, unpadded.
    rows = [HEADER] + [cells(r) for r in ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    print()
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print()
    log(f"written {OUT}/results.tsv and {OUT}/results.md")


# ---- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, work, lab):
        self.work, self.lab = work, lab
        self.logs = os.path.join(OUT, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.h0, self.h1 = lab.ns
        self.h0ip, self.h1ip = lab.ip

    def start(self):
        self.repo_dir, self.bench, self.files = make_repo(self.work)
        self.big = self.bench[SIZES[-1][0]]
        self.small = self.bench["4k"]
        self.big_size = os.path.getsize(os.path.join(self.repo_dir, self.big))
        self.small_size = os.path.getsize(os.path.join(self.repo_dir, self.small))
        h0cache = os.path.join(self.work, "h0cache")
        os.makedirs(h0cache)
        # h1: the peer (flocon peer server), the mirror and the reference file servers.
        self.peer = Proc("flocon-h1", self.h1, flocon_argv(self.repo_dir), self.logs)
        mirror_root = os.path.join(self.work, "mirror")
        self.mirror_log = MirrorLog(os.path.join(self.work, "nginx-h1", "mirror-access.log"))
        self.make_miss_repo(mirror_root)
        body = (f"    {MirrorLog.FORMAT}\n"
                f"    server {{ listen {MIRROR_PORT}; root {mirror_root};\n"
                f"             access_log {self.mirror_log.path} conns buffer=64k flush=1s; }}\n"
                f"    server {{ listen 127.0.0.1:{NGINX_FILES_PORT}; root {self.repo_dir}; }}")
        self.nginx = Proc("nginx-h1", self.h1, nginx_conf(os.path.join(self.work, "nginx-h1"),
                                                          body), self.logs)
        self.single_name, argv = single_threaded_server(self.work, self.repo_dir)
        self.single = Proc(self.single_name + "-h1", self.h1, argv, self.logs)
        # h0: the pacman host: flocon's relay and nginx as a streaming reverse proxy.
        self.h0cache = h0cache
        self.relay = Proc("flocon-h0", self.h0, flocon_argv(h0cache, self.relay_upstream()),
                          self.logs)
        t_relay_start = time.time()
        body = f"""    upstream peer {{ server {self.h1ip}:{FLOCON_PORT}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{PROXY_PORT};
        location / {{
            rewrite ^/[^/]+/os/[^/]+/([^/]+)$ /$1 break;
            proxy_pass http://peer;
            proxy_bind {self.lab.proxy_ip};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_buffer_size 256k;
            # Only there to pass nginx's config check (busy buffers < all buffers - one);
            # with proxy_buffering off they are not used.
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
        }}
    }}"""
        self.proxy = Proc("nginx-proxy-h0", self.h0,
                          nginx_conf(os.path.join(self.work, "nginx-h0"), body), self.logs)
        for ns, url in [
            (self.h1, f"http://127.0.0.1:{FLOCON_PORT}/{self.small}"),
            (self.h1, f"http://127.0.0.1:{NGINX_FILES_PORT}/{self.small}"),
            (self.h1, f"http://127.0.0.1:{SINGLE_PORT}/{self.small}"),
            (self.h1, f"http://127.0.0.1:{MIRROR_PORT}/{REPO}/os/{ARCH}/{REPO}.db"),
            (self.h0, f"http://{self.h1ip}:{FLOCON_PORT}/{self.small}"),
            (self.h0, f"http://127.0.0.1:{PROXY_PORT}/{REPO}/os/{ARCH}/{self.small}"),
        ]:
            if not wait_http(ns, url):
                raise RuntimeError(f"server not answering: {url} (logs in {self.logs})")
        # Idle RSS a moment after start, before any traffic reached the relay daemon.
        time.sleep(max(0.0, 1.0 - (time.time() - t_relay_start)))
        self.idle_rss = (status_sum(self.relay.pids(), "VmRSS") / 1024,
                         status_sum(self.proxy.pids(), "VmRSS") / 1024)
        # Page cache: read every file once so no run pays for the disk.
        for f in self.files:
            with open(os.path.join(self.repo_dir, f), "rb") as fh:
                while fh.read(8 * MIB):
                    pass
        self.relay_ok = self.probe_relay()

    def make_miss_repo(self, mirror_root):
        """Files only the mirror has: copies of the 4 KiB package in a repository h1's cache
        does not hold, and names nobody has; the paths in the order the miss row asks them."""
        d = os.path.join(mirror_root, MISS_REPO, "os", ARCH)
        os.makedirs(d)
        os.chmod(os.path.dirname(d), 0o755)
        os.chmod(os.path.dirname(os.path.dirname(d)), 0o755)
        os.chmod(d, 0o755)
        found = [pkg_file(f"mirroronly-{i:02d}") for i in range(1, MISS_FOUND + 1)]
        for name in found:
            shutil.copy(os.path.join(self.repo_dir, self.small), os.path.join(d, name))
            os.chmod(os.path.join(d, name), 0o644)
        absent = [pkg_file(f"nowhere-{i:02d}") for i in range(1, MISS_ABSENT + 1)]
        # Interleaved: 404s spread over the rotation, not in a row.
        order = found[:]
        for k, name in enumerate(absent):
            order.insert(1 + k * (len(order) + 1) // len(absent), name)
        self.miss_paths = [f"/{MISS_REPO}/os/{ARCH}/{n}" for n in order]
        self.miss_script = os.path.join(self.work, "miss.lua")
        with open(self.miss_script, "w") as f:
            f.write("local paths = {" + ", ".join(f'"{p}"' for p in self.miss_paths) + "}\n"
                    "local i = 0\n"
                    "request = function()\n"
                    "  i = i % #paths + 1\n"
                    '  return wrk.format("GET", paths[i])\n'
                    "end\n")
        os.chmod(self.miss_script, 0o644)

    def relay_upstream(self):
        return ["--upstream", f"http://{self.h1ip}:{MIRROR_PORT}/$repo/os/$arch"]

    def relay_url(self, f):
        return f"http://127.0.0.1:{FLOCON_LOCAL}/{REPO}/os/{ARCH}/{f}"

    def proxy_url(self, f):
        return f"http://127.0.0.1:{PROXY_PORT}/{REPO}/os/{ARCH}/{f}"

    def status_page(self):
        r = run(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{FLOCON_LOCAL}/status"],
                ns=self.h0, check=False, timeout=10)
        return r.stdout

    def probe_relay(self):
        """Whether the relay answers, and that the peer is known (so files come from h1)."""
        url = self.relay_url(self.small)
        r = run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "-w",
                 "%{http_code} %{size_download}", url], ns=self.h0, check=False, timeout=20)
        if r.stdout.split() != ["200", str(self.small_size)]:
            log(f"relay: not available ({url} -> {r.stdout.strip() or r.returncode})")
            return False
        end = time.time() + 20
        while time.time() < end:
            q = run(["curl", "-s", "--max-time", "5",
                     f"http://127.0.0.1:{FLOCON_LOCAL}/query/{self.small}"],
                    ns=self.h0, check=False, timeout=10)
            if self.h1ip in q.stdout:
                break
            time.sleep(0.5)
        else:
            log("relay answers, but h0 never found h1 as a peer: relay rows come from upstream")
        log("relay status:\n" + self.status_page().rstrip())
        return True

    def via(self, before):
        """'relay: N from peer, M from upstream' since `before` (a from_peers() taken earlier)."""
        after = self.from_peers()
        if None in before + after:
            return ""
        return f"relay: {after[0] - before[0]} from peer, {after[1] - before[1]} from upstream"

    def from_peers(self):
        m = re.search(r"(\d+) files \((\d+) bytes\) from peers, (\d+) files", self.status_page())
        return (int(m.group(1)), int(m.group(3))) if m else (None, None)

    def verified(self):
        """(bodies verified, wrong) from the relay's status page."""
        m = re.search(r"(\d+) bodies verified, (\d+) wrong", self.status_page())
        return (int(m.group(1)), int(m.group(2))) if m else (None, None)

    # -- measurements --

    def throughput(self, section, ns, targets, size):
        """targets: [(name, url, pids-callable)] -> {name: (median bytes/s, cpu s/GiB)}."""
        speeds = {t[0]: [] for t in targets}
        cpu = {t[0]: 0.0 for t in targets}
        moved = {t[0]: 0 for t in targets}
        noise = Window()
        for rnd in range(CURL_REPS + 1):
            for name, url, pids in alternate(targets, rnd):
                ps = pids()
                c0 = proc_cpu(ps)
                with noise:
                    s = curl_speed(ns, url, size)
                if rnd == 0:
                    continue  # warm-up
                cpu[name] += proc_cpu(ps) - c0
                speeds[name].append(s)
                if s is not None:
                    moved[name] += size
        out = {}
        for name in speeds:
            med = median(speeds[name])
            per_gib = cpu[name] / (moved[name] / GIB) if moved[name] else None
            out[name] = (None if med is None else med / MIB, per_gib)
            log(f"  {section} {name}: {[None if s is None else round(s / MIB) for s in speeds[name]]}"
                f" MiB/s, {cpu[name]:.2f} CPU s")
        return out, noise.share()

    def rps(self, section, ns, targets):
        rates = {t[0]: [] for t in targets}
        cpu = {t[0]: 0.0 for t in targets}
        reqs = {t[0]: 0 for t in targets}
        noise = Window()
        for rnd in range(WRK_REPS):
            for name, url, pids in alternate(targets, rnd):
                ps = pids()
                c0 = proc_cpu(ps)
                with noise:
                    rate, n, _ = wrk(ns, url, WRK_SECS)
                cpu[name] += proc_cpu(ps) - c0
                rates[name].append(rate)
                reqs[name] += n
        out = {}
        for name in rates:
            per_k = 1000 * cpu[name] / reqs[name] * 1000 if reqs[name] else None
            out[name] = (median(rates[name]), per_k)
            log(f"  {section} {name}: {[None if r is None else round(r) for r in rates[name]]}"
                f" req/s, {cpu[name]:.2f} CPU s for {reqs[name]} requests")
        return out, noise.share()

    def peer_server(self):
        sec = "peer server"
        log(f"{sec}: {self.big} ({self.big_size / MIB:.0f} MiB), curl, median of {CURL_REPS}")
        s = self.single_name
        targets = [
            ("nginx", f"http://127.0.0.1:{NGINX_FILES_PORT}/{self.big}", self.nginx.pids),
            ("flocon", f"http://127.0.0.1:{FLOCON_PORT}/{self.big}", self.peer.pids),
            (s, f"http://127.0.0.1:{SINGLE_PORT}/{self.big}", self.single.pids),
        ]
        big = label(SIZES[-1][0])
        res, noise = self.throughput(sec, self.h1, targets, self.big_size)
        add_row(sec, f"peer server {big} throughput", "MiB/s", res["flocon"][0], "nginx",
                res["nginx"][0], ("ratio>=", 1.0), noise)
        add_row(sec, f"peer server {big} throughput", "MiB/s", res["flocon"][0], s,
                res[s][0], None, noise)
        add_row(sec, "CPU per GiB served", "CPU s/GiB", res["flocon"][1], "nginx",
                res["nginx"][1], None, noise, "all nginx processes")
        self.cpu_served = res

        log(f"{sec}: {self.small}, wrk -t2 -c32 -d{WRK_SECS}s, median of {WRK_REPS}")
        targets = [(n, u.replace(self.big, self.small), p) for n, u, p in targets]
        res, noise = self.rps(sec, self.h1, targets)
        add_row(sec, "peer server 4 KiB req/s", "req/s", res["flocon"][0], s, res[s][0],
                ("ratio>=", 1.0), noise)
        add_row(sec, "peer server 4 KiB req/s", "req/s", res["flocon"][0], "nginx",
                res["nginx"][0], ("ratio>=", 0.8), noise, "nginx: 2 workers")
        add_row(sec, "CPU per 1000 4 KiB requests", "CPU ms/1k req", res["flocon"][1], "nginx",
                res["nginx"][1], None, noise)

    def relay_rows(self):
        sec = "relay"
        big = label(SIZES[-1][0])
        names = [f"relay {big} throughput", "relay 4 KiB req/s", "relay added TTFB, median",
                 "relay added TTFB, p99", "CPU per GiB relayed"]
        if not self.relay_ok:
            unavailable(sec, names[0], "MiB/s", "nginx proxy", ("ratio>=", 1.0))
            unavailable(sec, names[1], "req/s", "nginx proxy", ("ratio>=", 1.0))
            unavailable(sec, names[2], "ms", "nginx proxy", ("abs<=", 1.0))
            unavailable(sec, names[3], "ms", "nginx proxy")
            unavailable(sec, names[4], "CPU s/GiB", "nginx proxy")
            return
        peers0 = self.from_peers()
        log(f"{sec}: {self.big} via h0 relay vs nginx proxy (both from h1's peer server)")
        targets = [
            ("nginx proxy", self.proxy_url(self.big), self.proxy.pids),
            ("flocon", self.relay_url(self.big), self.relay.pids),
            ("direct", f"http://{self.h1ip}:{FLOCON_PORT}/{self.big}", lambda: []),
        ]
        res, noise = self.throughput(sec, self.h0, targets, self.big_size)
        via = self.via(peers0)
        add_row(sec, names[0], "MiB/s", res["flocon"][0], "nginx proxy", res["nginx proxy"][0],
                ("ratio>=", 1.0), noise, f"{via}; direct from peer {fmt(res['direct'][0], 'MiB/s')} MiB/s")
        add_row(sec, names[4], "CPU s/GiB", res["flocon"][1], "nginx proxy",
                res["nginx proxy"][1], None, noise, "relaying process only")

        log(f"{sec}: {self.small}, wrk -t2 -c32 -d{WRK_SECS}s, median of {WRK_REPS}")
        targets = [(n, u.replace(self.big, self.small), p) for n, u, p in targets[:2]]
        peers0 = self.from_peers()
        res, noise = self.rps(sec, self.h0, targets)
        via = self.via(peers0)
        add_row(sec, names[1], "req/s", res["flocon"][0], "nginx proxy", res["nginx proxy"][0],
                ("ratio>=", 1.0), noise, via)

        log(f"{sec}: TTFB of {self.small}, {TTFB_N} fresh connections each, interleaved")
        urls = [f"http://{self.h1ip}:{FLOCON_PORT}/{self.small}", self.relay_url(self.small),
                self.proxy_url(self.small)]
        with Window() as noise:
            r = run([sys.executable, os.path.abspath(__file__), "--ttfb", str(TTFB_N)] + urls,
                    ns=self.h0, check=False, timeout=max(120, TTFB_N))
        if r.returncode != 0:
            log(f"  ttfb client failed: {r.stdout}{r.stderr}")
            unavailable(sec, names[2], "ms", "nginx proxy", ("abs<=", 1.0), "TTFB client failed")
            unavailable(sec, names[3], "ms", "nginx proxy", None, "TTFB client failed")
            return
        direct, relay, proxy = json.loads(r.stdout)
        d_relay = [1000 * (a - b) for a, b in zip(relay, direct)]
        d_proxy = [1000 * (a - b) for a, b in zip(proxy, direct)]
        note = (f"absolute medians: direct {1000 * median(direct):.3f}, relay "
                f"{1000 * median(relay):.3f}, proxy {1000 * median(proxy):.3f} ms")
        add_row(sec, names[2], "ms", median(d_relay), "nginx proxy", median(d_proxy),
                ("abs<=", 1.0), noise.share(), note)
        note = (f"absolute p99: direct {1000 * pctl(direct, 99):.3f}, relay "
                f"{1000 * pctl(relay, 99):.3f}, proxy {1000 * pctl(proxy, 99):.3f} ms")
        add_row(sec, names[3], "ms", pctl(d_relay, 99), "nginx proxy", pctl(d_proxy, 99), None,
                noise.share(), note)

    def miss_path(self):
        """Files only the mirror has, with a share of upstream 404s: the relay against the same
        wrk client straight to the mirror, counting the mirror's new connections in both."""
        sec = "relay"
        name = f"relay miss path req/s ({MISS_ABSENT} in {MISS_FOUND + MISS_ABSENT} upstream 404s)"
        if not self.relay_ok:
            unavailable(sec, name, "req/s", "mirror direct", ("ratio>=", 0.8))
            return
        log(f"{sec}: miss path, {len(self.miss_paths)} paths of {MISS_REPO} in rotation "
            f"({MISS_ABSENT} absent), wrk -t2 -c32 -d{WRK_SECS}s, median of {WRK_REPS}")
        targets = [
            ("mirror direct", f"http://{self.h1ip}:{MIRROR_PORT}", lambda: []),
            ("flocon", f"http://127.0.0.1:{FLOCON_LOCAL}", self.relay.pids),
        ]
        rates = {t[0]: [] for t in targets}
        tot = {t[0]: {"client": 0, "non2xx": 0, "mirror": 0, "accepts": 0, "conns": 0,
                      "errors": []} for t in targets}
        # CPU of the processes on the path: h0's relay, h1's daemon (it answers the relay's
        # "who has" with no), the mirror's nginx.
        groups = {"relay": self.relay.pids, "h1 daemon": self.peer.pids,
                  "mirror": self.nginx.pids}
        cpu = {t[0]: {g: 0.0 for g in groups} for t in targets}
        noise = Window()
        peers0 = self.from_peers()
        self.mirror_log.window()  # start from here
        for rnd in range(WRK_REPS):
            for which, url, _ in alternate(targets, rnd):
                pids = {g: f() for g, f in groups.items()}
                c0 = {g: proc_cpu(ps) for g, ps in pids.items()}
                opens0 = passive_opens(self.h1)
                with noise:
                    rate, n, non2xx, errs = wrk_mix(self.h0, self.miss_script, url, WRK_SECS)
                for g, ps in pids.items():
                    cpu[which][g] += proc_cpu(ps) - c0[g]
                reqs, statuses, conns = self.mirror_log.window()
                opens1 = passive_opens(self.h1)
                accepts = None if None in (opens0, opens1) else opens1 - opens0
                rates[which].append(rate)
                t = tot[which]
                t["client"] += n
                t["non2xx"] += non2xx
                t["mirror"] += reqs
                t["accepts"] = None if None in (accepts, t["accepts"]) else t["accepts"] + accepts
                t["conns"] += conns
                if errs and not re.fullmatch(r"connect 0, read 0, write 0, timeout 0", errs):
                    t["errors"].append(errs)
                log(f"  {which}: {None if rate is None else round(rate)} req/s, {n} requests "
                    f"({non2xx} non-2xx); mirror: {reqs} requests {statuses} on {conns} new "
                    f"connections; h1 accepted {accepts} TCP connections")
        via = self.via(peers0)

        def summary(which):
            t = tot[which]
            share = f"{100 * t['non2xx'] / t['client']:.0f}%" if t["client"] else "—"
            per_k = ", ".join(f"{g} {1e6 * c / t['client']:.1f}" for g, c in cpu[which].items()
                              if c > 0 and t["client"])
            text = (f"{which}: {t['client']} requests ({share} 404), mirror saw {t['mirror']} "
                    f"requests on {t['conns']} new connections (h1 accepted {t['accepts']}); "
                    f"CPU ms/1k req: {per_k}")
            if t["errors"]:
                text += f", wrk socket errors: {'; '.join(t['errors'])}"
            return text

        add_row(sec, name, "req/s", median(rates["flocon"]), "mirror direct",
                median(rates["mirror direct"]), ("ratio>=", 0.8), noise.share(),
                f"{summary('flocon')}; {summary('mirror direct')}; {via}")

    def verified_relay(self):
        """Issue 13 item 6: the relay with verification on. h0's daemon is restarted with a
        pacman.conf whose DBPath holds the repository's sync database (the `repo-add` one),
        so every relayed package has its real size and SHA-256: flocon hashes the body while
        it streams and holds its last byte back until the verdict. Against the same nginx
        proxy as the other relay rows, alternating; CPU from /proc/PID/stat before and after
        each download. Run last: the daemon it replaces is not started again."""
        sec = "relay"
        big = label(SIZES[-1][0])
        names = [f"relay {big} throughput, verified", "CPU per GiB relayed, verified"]
        if not self.relay_ok:
            unavailable(sec, names[0], "MiB/s", "nginx proxy", ("ratio>=", 1.0))
            unavailable(sec, names[1], "CPU s/GiB", "nginx proxy")
            return
        dbpath = os.path.join(self.work, "h0-dbpath")
        os.makedirs(os.path.join(dbpath, "sync"))
        shutil.copy(os.path.join(self.repo_dir, f"{REPO}.db"),
                    os.path.join(dbpath, "sync", f"{REPO}.db"))
        conf = os.path.join(self.work, "h0-pacman.conf")
        with open(conf, "w") as f:
            f.write(f"[options]\nDBPath = {dbpath}/\n\n[{REPO}]\n")
        for path in (dbpath, os.path.join(dbpath, "sync")):
            os.chmod(path, 0o755)
        self.relay.stop()
        PROCS.remove(self.relay)  # stopped on purpose: not an early exit
        self.relay = Proc("flocon-h0-verified", self.h0,
                          flocon_argv(self.h0cache, self.relay_upstream(), conf), self.logs)
        if not wait_http(self.h0, self.relay_url(self.small)) or not self.probe_relay():
            unavailable(sec, names[0], "MiB/s", "nginx proxy", ("ratio>=", 1.0),
                        "verified relay: not available")
            unavailable(sec, names[1], "CPU s/GiB", "nginx proxy", None,
                        "verified relay: not available")
            return
        # The database is read, and h1 has hashed the big file (questions go by content: a
        # peer answers HAVE only for a file whose hash it knows).
        end = time.time() + 60
        ready = ""
        while time.time() < end:
            status = self.status_page()
            q = run(["curl", "-s", "--max-time", "5",
                     f"http://127.0.0.1:{FLOCON_LOCAL}/query/{self.big}"],
                    ns=self.h0, check=False, timeout=10)
            if re.search(rf"database {REPO} .*: \d+ files indexed", status) and \
                    self.h1ip in q.stdout:
                ready = q.stdout.strip()
                break
            time.sleep(0.5)
        log(f"{sec}: verified relay: {ready or 'h1 never offered ' + self.big}")
        peers0, checked0 = self.from_peers(), self.verified()
        log(f"{sec}: {self.big} via h0 relay with verification on vs nginx proxy")
        targets = [
            ("nginx proxy", self.proxy_url(self.big), self.proxy.pids),
            ("flocon", self.relay_url(self.big), self.relay.pids),
        ]
        res, noise = self.throughput(sec, self.h0, targets, self.big_size)
        via = self.via(peers0)
        checked1 = self.verified()
        check = ""
        if None not in checked0 + checked1:
            check = (f"{checked1[0] - checked0[0]} bodies verified, "
                     f"{checked1[1] - checked0[1]} wrong")
        add_row(sec, names[0], "MiB/s", res["flocon"][0], "nginx proxy", res["nginx proxy"][0],
                ("ratio>=", 1.0), noise, f"{via}; {check} (warm-up included)")
        add_row(sec, names[1], "CPU s/GiB", res["flocon"][1], "nginx proxy",
                res["nginx proxy"][1], None, noise,
                "relaying process only, utime+stime from /proc/PID/stat; nginx proxy: all its "
                "processes")

    def https_relay(self):
        """Issue 15: relaying from an https:// mirror. A file only the TLS mirror has (the big
        package under another name, so no peer holds it), fetched by a second flocon on h0 that
        knows no peer (its own discovery port) and trusts the run's CA, against nginx on h0
        proxying the same TLS mirror with the certificate and name checked. Both from h1's one
        nginx TLS server; alternating; CPU from /proc/PID/stat."""
        sec = "relay"
        big = label(SIZES[-1][0])
        names = [f"relay {big} throughput, https mirror", "CPU per GiB relayed, https mirror"]
        tls = os.path.join(self.work, "tls")
        os.makedirs(tls)
        ca, ca_key = os.path.join(tls, "ca.pem"), os.path.join(tls, "ca.key")
        cert, key = os.path.join(tls, "mirror.pem"), os.path.join(tls, "mirror.key")
        csr, ext = os.path.join(tls, "mirror.csr"), os.path.join(tls, "mirror.ext")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run(["openssl", "req", "-x509"] + ec + ["-days", "2", "-subj", "/CN=flocon bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
             "keyUsage=critical,keyCertSign,cRLSign", "-keyout", ca_key, "-out", ca])
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{TLS_NAME},IP:{self.h1ip}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "req", "-new"] + ec + ["-subj", f"/CN={TLS_NAME}", "-keyout", key,
             "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert])
        for path in (tls, ca, cert, key):
            os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
        name = "tlsonly-1.0-1-x86_64.pkg.tar.zst"
        root = os.path.join(self.work, "tls-mirror")
        d = os.path.join(root, REPO, "os", ARCH)
        os.makedirs(d)
        for path in (root, os.path.join(root, REPO), os.path.dirname(d), d):
            os.chmod(path, 0o755)
        os.link(os.path.join(self.repo_dir, self.big), os.path.join(d, name))
        small = "tlsonly-small-1.0-1-x86_64.pkg.tar.zst"
        os.link(os.path.join(self.repo_dir, self.small), os.path.join(d, small))
        # TLS 1.3 as real mirrors speak it (Debian 12's nginx offers only up to 1.2 unless
        # told); the log names each client's protocol and suite (flocon's user agent, or
        # curl's through the proxy).
        tls_log = os.path.join(self.work, "tls-mirror.log")
        body = (f"    log_format tls '$http_user_agent\t$ssl_protocol\t$ssl_cipher';\n"
                f"    server {{ listen {TLS_MIRROR_PORT} ssl; root {root};\n"
                f"             ssl_protocols TLSv1.2 TLSv1.3; access_log {tls_log} tls;\n"
                f"             ssl_certificate {cert}; ssl_certificate_key {key}; }}")
        Proc("nginx-tls-h1", self.h1, nginx_conf(os.path.join(self.work, "nginx-tls-h1"), body),
             self.logs)
        body = f"""    upstream tlsmirror {{ server {self.h1ip}:{TLS_MIRROR_PORT}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{TLS_PROXY_PORT};
        location / {{
            proxy_pass https://tlsmirror;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name {TLS_NAME};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
        }}
    }}"""
        proxy = Proc("nginx-tls-proxy-h0", self.h0,
                     nginx_conf(os.path.join(self.work, "nginx-tls-h0"), body), self.logs)
        cache = os.path.join(self.work, "h0-tls-cache")
        os.makedirs(cache)
        argv = [a for a in flocon_argv(cache, ["--upstream",
                f"https://{self.h1ip}:{TLS_MIRROR_PORT}/$repo/os/$arch", "--ca-file", ca])]
        argv[argv.index("--port") + 1] = str(TLS_FLOCON_PORT)
        argv[argv.index("--local-port") + 1] = str(TLS_FLOCON_LOCAL)
        relay = Proc("flocon-tls-h0", self.h0, argv, self.logs)
        path = f"/{REPO}/os/{ARCH}/{name}"
        relay_url = f"http://127.0.0.1:{TLS_FLOCON_LOCAL}{path}"
        proxy_url = f"http://127.0.0.1:{TLS_PROXY_PORT}{path}"
        for url in (relay_url, proxy_url):
            url = url.replace(name, small)
            if not wait_http(self.h0, url):
                for n in names:
                    unavailable(sec, n, "MiB/s" if "throughput" in n else "CPU s/GiB",
                                "nginx proxy (TLS)", ("ratio>=", 1.0) if "throughput" in n
                                else None, f"not answering: {url} (logs in {self.logs})")
                return
        log(f"{sec}: {self.big} as {name} from h1's TLS mirror via h0: flocon (rustls) vs "
            "nginx proxy (OpenSSL)")
        targets = [
            ("nginx proxy (TLS)", proxy_url, proxy.pids),
            ("flocon", relay_url, relay.pids),
        ]
        res, noise = self.throughput(sec, self.h0, targets, self.big_size)
        status = run(["curl", "-s", "--max-time", "5",
                      f"http://127.0.0.1:{TLS_FLOCON_LOCAL}/status"], ns=self.h0, check=False,
                     timeout=10).stdout
        m = re.search(r"(\d+) files \((\d+) bytes\) from peers, (\d+) files", status)
        via = f"relay: {m.group(1)} from peer, {m.group(3)} from upstream; " if m else ""
        seen = set()
        try:
            with open(tls_log) as f:
                for line in f:
                    agent, proto, cipher = (line.rstrip("\n").split("\t") + ["", "", ""])[:3]
                    who = "flocon" if agent.startswith("flocon") else "nginx proxy"
                    seen.add(f"{who} {proto} {cipher}")
        except OSError:
            pass
        suites = "; ".join(sorted(seen)) or "suites not logged"
        add_row(sec, names[0], "MiB/s", res["flocon"][0], "nginx proxy (TLS)",
                res["nginx proxy (TLS)"][0], ("ratio>=", 1.0), noise,
                f"{via}{suites}; both check the certificate (warm-up included in the count)")
        add_row(sec, names[1], "CPU s/GiB", res["flocon"][1], "nginx proxy (TLS)",
                res["nginx proxy (TLS)"][1], None, noise,
                "relaying process only (decrypting included); nginx proxy: all its processes")

    def pacman(self):
        sec = "pacman"
        name = "pacman -Sw, 50 packages"
        if not self.relay_ok:
            unavailable(sec, name, "s", "nginx direct", ("ratio<=", 1.10))
            return
        wanted = [f[: -len(f"-1.0-1-{ARCH}.pkg.tar.zst")] for f in self.files]
        total = sum(os.path.getsize(os.path.join(self.repo_dir, f)) for f in self.files)
        servers = {
            "flocon": f"http://127.0.0.1:{FLOCON_LOCAL}/$repo/os/$arch",
            "nginx direct": f"http://{self.h1ip}:{MIRROR_PORT}/$repo/os/$arch",
        }
        times = {k: [] for k in servers}
        log(f"{sec}: -Sw {len(wanted)} packages ({total / MIB:.0f} MiB), {PACMAN_REPS} runs each")
        noise = Window()
        failed = ""
        peers0 = self.from_peers()
        for rnd in range(PACMAN_REPS):
            for which in alternate(list(servers), rnd):
                d = os.path.join(self.work, f"pacman-{which.replace(' ', '-')}-{rnd}")
                root, cache = os.path.join(d, "root"), os.path.join(d, "cache")
                for sub in (os.path.join(root, "db"), cache, os.path.join(d, "gnupg")):
                    os.makedirs(sub)
                conf = os.path.join(d, "pacman.conf")
                with open(conf, "w") as f:
                    f.write(f"[options]\nArchitecture = {ARCH}\nSigLevel = Never\n"
                            f"ParallelDownloads = 5\nCacheDir = {cache}/\n\n"
                            f"[{REPO}]\nServer = {servers[which]}\n")
                base = ["pacman", "--config", conf, "--root", root, "--dbpath",
                        os.path.join(root, "db"), "--cachedir", cache, "--gpgdir",
                        os.path.join(d, "gnupg"), "--logfile", os.path.join(root, "pacman.log"),
                        "--noconfirm", "--noprogressbar"]
                env = dict(os.environ, LC_ALL="C")
                r = run(base + ["-Sy"], ns=self.h0, check=False, timeout=120, env=env)
                if r.returncode != 0:
                    failed = f"{which}: -Sy failed: {r.stdout[-300:]}{r.stderr[-300:]}"
                    log(failed)
                    break
                t0 = time.perf_counter()
                with noise:
                    r = run(base + ["-Sw"] + wanted, ns=self.h0, check=False, timeout=300,
                            env=env)
                dt = time.perf_counter() - t0
                got = sum(os.path.getsize(os.path.join(cache, f)) for f in self.files
                          if os.path.exists(os.path.join(cache, f)))
                if r.returncode != 0 or got != total:
                    failed = (f"{which}: -Sw exit {r.returncode}, {got} of {total} bytes: "
                              f"{r.stderr.strip()[-300:]}")
                    log(failed)
                    break
                times[which].append(dt)
                log(f"  {which}: {dt:.2f} s")
                shutil.rmtree(d, ignore_errors=True)
            if failed:
                break
        peers1 = self.from_peers()
        via = ""
        if None not in peers0 + peers1:
            via = (f"relay: {peers1[0] - peers0[0]} files from the peer, "
                   f"{peers1[1] - peers0[1]} from upstream (the database); ")
        add_row(sec, name, "s", median(times["flocon"]), "nginx direct",
                median(times["nginx direct"]), ("ratio<=", 1.10), noise.share(),
                failed or f"{via}{total / MIB:.0f} MiB, ParallelDownloads = 5")

    def memory(self):
        sec = "memory"
        add_row(sec, "RSS 1 s after start", "MiB", self.idle_rss[0], "nginx proxy",
                self.idle_rss[1], None, None,
                "VmRSS before the first quiet spell (the idle rows give the idle size); "
                "nginx: master + workers summed")
        name = f"peak RSS, {SLOW_READERS} slow relays of {label(SIZES[-1][0])}"
        if not self.relay_ok:
            unavailable(sec, name, "MiB", "nginx proxy", ("abs<=", 16.0))
            return
        log(f"{sec}: {SLOW_READERS} readers at {SLOW_RATE}/s of {self.big}, {MEM_SECS} s")
        peak, notes = {}, {}
        noise = Window()
        for which, proc, url in [("flocon", self.relay, self.relay_url(self.big)),
                                 ("nginx proxy", self.proxy, self.proxy_url(self.big))]:
            pids = proc.pids()
            reset_hwm(pids)
            script = (f'for i in $(seq {SLOW_READERS}); do curl -s -o /dev/null --limit-rate '
                      f'{SLOW_RATE} --max-time {MEM_SECS} -w "%{{size_download}}\\n" "$1" & '
                      f'done; wait')
            with noise:
                p = subprocess.Popen(["ip", "netns", "exec", self.h0, "bash", "-c", script,
                                      "bash", url], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
                sampled = 0
                try:
                    end = time.time() + MEM_SECS + 30
                    while p.poll() is None and time.time() < end:
                        sampled = max(sampled, status_sum(proc.pids(), "VmRSS"))
                        time.sleep(0.25)
                    out, _ = p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    for pid in reversed(proc_tree(p.pid)):
                        os.kill(pid, signal.SIGKILL)
                    out, _ = p.communicate()
            hwm = status_sum(proc.pids(), "VmHWM")
            peak[which] = max(hwm, sampled) / 1024
            got = sum(int(x) for x in out.split() if x.isdigit())
            n = sum(1 for x in out.split() if x.isdigit() and int(x) > 0)
            expect = SLOW_READERS * int(SLOW_RATE[:-1]) * MEM_SECS
            notes[which] = (f"{which}: {n} readers got {got / MIB:.0f} MiB "
                            f"({expect} MiB at the rate limit)")
            log(f"  {notes[which]}, peak {peak[which]:.2f} MiB")
        add_row(sec, name, "MiB", peak["flocon"], "nginx proxy", peak["nginx proxy"],
                ("abs<=", 16.0), noise.share(),
                f"VmHWM; {notes['flocon']}; {notes['nginx proxy']}")

    def idle(self, after_load):
        """Wake-ups and CPU over IDLE_SECS with no traffic: once right after start (the steady
        state: both daemons up, one peer known) and once after all the load (connections of
        the runs closed, their timers maybe not)."""
        sec = "idle"
        when = "after the load" if after_load else "after start"
        log(f"{sec} {when}: {IDLE_SECS} s with no traffic")
        time.sleep((3 if QUICK else 15) if after_load else 1)
        groups = {"flocon": self.relay.pids(), "flocon h1": self.peer.pids(),
                  "nginx proxy": self.proxy.pids()}
        w0 = {k: wakeups(v) for k, v in groups.items()}
        c0 = {k: proc_cpu(v) for k, v in groups.items()}
        with Window() as noise:
            time.sleep(IDLE_SECS)
        w = {k: (wakeups(v) - w0[k]) / IDLE_SECS for k, v in groups.items()}
        c = {k: (proc_cpu(v) - c0[k]) * 60 / IDLE_SECS for k, v in groups.items()}
        add_row(sec, f"wake-ups per second, idle {when}", "wake-ups/s", w["flocon"],
                "nginx proxy", w["nginx proxy"], ("abs<=", 2.0), noise.share(),
                f"{w['flocon'] * 60:.0f}/min over {IDLE_SECS} s (h0, knows 1 peer); "
                f"the peer daemon h1: {w['flocon h1'] * 60:.0f}/min")
        add_row(sec, f"CPU seconds per idle minute, {when}", "CPU s/min", c["flocon"],
                "nginx proxy", c["nginx proxy"], None, noise.share(),
                f"utime+stime, {1 / CLK_TCK:.2f} s resolution; h1: {c['flocon h1']:.3f}")
        # Resident size at the end of the window: flocon gave memory back 10 s into it.
        rss = {k: status_sum(v, "VmRSS") / 1024 for k, v in groups.items()}
        anon = status_sum(groups["flocon"], "RssAnon") / 1024
        r = run(["curl", "-s", "--max-time", "5",
                 f"http://127.0.0.1:{FLOCON_LOCAL}/.flocon/status.json"],
                ns=self.h0, check=False, timeout=10)
        m = re.search(r'"given_back":(\d+)', r.stdout)
        add_row("memory", f"RSS idle {when}", "MiB", rss["flocon"], "nginx proxy",
                rss["nginx proxy"], ("abs<=", 3.0), None,
                f"VmRSS at the end of the {IDLE_SECS} s window; RssAnon {anon:.2f} MiB; "
                f"memory given back {m.group(1) if m else '?'} times so far; "
                f"h1 daemon {rss['flocon h1']:.2f} MiB; nginx: master + workers summed")

    def binary(self):
        sec = "binary"
        stripped = os.path.join(self.work, "flocon.stripped")
        shutil.copy(BIN, stripped)
        run(["strip", stripped], timeout=60)
        nginx_bin = shutil.which("nginx")
        add_row(sec, "release binary, stripped", "MiB", os.path.getsize(stripped) / MIB,
                "nginx", os.path.getsize(nginx_bin) / MIB if nginx_bin else None,
                ("abs<=", 2.0), None, "nginx: Debian's /usr/sbin/nginx, without its libraries")

    def stop(self):
        for p in reversed(PROCS):
            p.stop()


def versions(single):
    out = {}
    for name, argv in [("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"]),
                       ("curl", ["curl", "--version"]), ("pacman", ["pacman", "--version"])]:
        try:
            r = run(argv, check=False, timeout=10)
            text = (r.stdout + r.stderr).strip()
            m = re.search(r"\d+\.\d+(\.\d+)?", text)
            out[name] = m.group(0) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            out[name] = "missing"
    if single == "lighttpd":
        r = run(["lighttpd", "-v"], check=False, timeout=10)
        m = re.search(r"\d+\.\d+\.\d+", r.stdout)
        out["lighttpd"] = m.group(0) if m else "?"
    else:
        out["darkhttpd"] = "installed"
    return ", ".join(f"{k} {v}" for k, v in out.items())


def bin_commit():
    """For BENCH_BIN inside a git work tree: the commit that tree is at (it may have been built
    from another state; a hint, not a proof)."""
    r = run(["git", "-C", os.path.dirname(os.path.abspath(BIN)), "rev-parse", "--short", "HEAD"],
            check=False, timeout=10)
    return f" (in a work tree at {r.stdout.strip()})" if r.returncode == 0 else ""


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    git = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False, timeout=10)
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                check=False, timeout=10)
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git.stdout.strip() + (" (work tree modified)" if dirty.stdout.strip() else ""),
        "binary": (f"BENCH_BIN={BIN}{bin_commit()}" if os.environ.get("BENCH_BIN")
                   else "target/release/flocon built from that commit"),
        "machine": f"{os.cpu_count()} CPUs, {model}, kernel {os.uname().release}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ttfb":
        ttfb_client(int(sys.argv[2]), sys.argv[3:])
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, pacman)", file=sys.stderr)
        return 2
    if not os.access(BIN, os.X_OK):
        print(f"bench: {BIN} missing: run bench/run.sh (it builds it)", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise SystemExit(f"bench: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: on_signal("SIGALRM (time limit)", None))
    signal.alarm(DEADLINE)  # the whole run is bounded
    t_start = time.time()
    meta = machine()
    if os.getloadavg()[0] > 1.5:
        log(f"warning: load average {os.getloadavg()[0]:.1f} at start: other work is running, "
            "expect noisy figures (see the 'others' column)")
    meta["mode"] = ("BENCH_QUICK=1 (smoke run: small files, 1 repetition)" if QUICK
                    else "full")
    work = tempfile.mkdtemp(prefix="flocon-bench-", dir=os.environ.get("BENCH_WORK", "/var/tmp"))
    os.chmod(work, 0o755)
    lab = None
    bench = None
    failure = None
    try:
        lab = Lab()
        bench = Bench(work, lab)
        bench.start()
        meta["tools"] = versions(bench.single_name)
        meta["files"] = ", ".join(f"{k} = {os.path.getsize(os.path.join(bench.repo_dir, v)):,} B"
                                  for k, v in bench.bench.items())
        meta["relay"] = "answering" if bench.relay_ok else "not available"
        steps = [
            ("idle", lambda: bench.idle(after_load=False)),
            ("peer", bench.peer_server),
            ("relay", bench.relay_rows),
            ("miss", bench.miss_path),
            ("pacman", bench.pacman),
            ("memory", bench.memory),
            ("idle", lambda: bench.idle(after_load=True)),
            ("https", bench.https_relay),
            ("verified", bench.verified_relay),  # last: it restarts h0's daemon
            ("binary", bench.binary),
        ]
        for name, step in steps:
            if not ONLY or name in ONLY:
                step()
        for p in PROCS:
            if not p.alive():
                log(f"warning: {p.name} exited early (code {p.p.returncode}), see its log")
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        failure = e
        log(f"aborted: {e!r}")
    finally:
        signal.alarm(0)
        if bench:
            bench.stop()
        for p in PROCS:
            if p.alive():
                p.stop()
        if lab:
            lab.delete()
        if KEEP:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["duration"] = f"{time.time() - t_start:.0f} s"
    if ROWS:
        write_results(meta)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
