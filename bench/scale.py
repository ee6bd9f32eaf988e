#!/usr/bin/env python3
"""flocon at scale: N hosts on one bridge, the lookup costs and the "everyone upgrades" burst.

Run through bench/scale.sh (root: it builds network namespaces and deletes them at the end).
For each N (BENCH_SCALE_N, default "8 48"):

  * datagrams per lookup, sent by all hosts together (from /proc/net/snmp of every namespace),
    for a miss and for a file one host holds;
  * miss latency from host 0 (median, p99 over BENCH_SCALE_LOOKUPS lookups, client side: the
    round trip of GET /query/NAME on the loopback port, kept alive), all peers awake, then one
    and then three peers frozen with SIGSTOP (suspended laptops);
  * "everyone upgrades": every host looks up the same 20 files at once, 5 and then 20 in
    parallel, with nobody holding them and with all 20 on one host: datagrams sent, datagrams
    dropped (UDP RcvbufErrors + InErrors, all namespaces) and lookups wrongly answered "nobody";
  * a host started into the LAN with its first 250 ms of datagrams dropped (nftables): how
    long until every peer lists it;
  * background: datagrams per host per announce interval while idle.

Static neighbour entries are set in every namespace, so the kernel's ARP table (shared by all
namespaces) does not overflow at large N. Traffic stays inside the namespaces made here.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("BENCH_BIN", "target/release/flocon")
PREFIX = "flsc"
PORT = 19432
LOCAL = 19433
FILES = [f"burst{k:02}-1.0-1-x86_64.pkg.tar.zst" for k in range(20)]
LOOKUPS = int(os.environ.get("BENCH_SCALE_LOOKUPS", "200"))
INTERVAL = 15  # short, so that the idle window of 30 s holds two announce intervals
GOALS = {
    "miss_median_ms": 5.0,
    "miss_p99_ms": 20.0,
    "known_within_s": 2.0,
}


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(argv, check=True, timeout=60, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def ip_batch(ns, lines):
    """Run many `ip` commands in one process (`ip -batch`), in namespace ns (or the root)."""
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    sh(argv, input="\n".join(lines) + "\n")


class Lab:
    def __init__(self, n):
        self.tag = f"{PREFIX}{os.getpid() % 10000}"
        self.sw = f"{self.tag}-sw"
        self.ns = [f"{self.tag}-{i}" for i in range(n + 1)]  # the last one joins late
        self.ip = [f"10.79.{(i + 1) // 250}.{(i + 1) % 250 + 1}" for i in range(n + 1)]
        self.mac = [f"02:fc:00:00:{(i + 1) // 256:02x}:{(i + 1) % 256:02x}" for i in range(n + 1)]
        self.procs = {}
        self.tmp = tempfile.mkdtemp(prefix="flocon-scale-")
        for ns in [self.sw] + self.ns:
            sh(["ip", "netns", "add", ns])
        ip_batch(self.sw, ["link set lo up", "link add br0 type bridge mcast_snooping 0",
                           "link set br0 up"])
        root = []
        for i, ns in enumerate(self.ns):
            root.append(f"link add sc{i} netns {self.sw} type veth peer name eth0 netns {ns}")
        ip_batch(None, root)
        ip_batch(self.sw, [f"link set sc{i} master br0 up" for i in range(len(self.ns))])
        for i, ns in enumerate(self.ns):
            lines = ["link set lo up", f"link set eth0 address {self.mac[i]}",
                     f"addr add {self.ip[i]}/16 dev eth0", "link set eth0 up",
                     "route add 224.0.0.0/4 dev eth0"]
            lines += [f"neigh replace {self.ip[j]} lladdr {self.mac[j]} dev eth0 nud permanent"
                      for j in range(len(self.ns)) if j != i]
            ip_batch(ns, lines)

    def start(self, i, files=()):
        cache = os.path.join(self.tmp, f"cache{i}")
        os.makedirs(cache, exist_ok=True)
        for k in range(30):  # a few files of its own, so summaries are not empty
            open(os.path.join(cache, f"own{i}x{k}-1.0-1-x86_64.pkg.tar.zst"), "wb").write(b"x")
        for f in files:
            open(os.path.join(cache, f), "wb").write(b"held")
        logf = open(os.path.join(self.tmp, f"h{i}.log"), "wb")
        argv = ["ip", "netns", "exec", self.ns[i], BIN, "-c", "/dev/null", "--pacman-conf",
                "/nonexistent", "--cache-dir", cache, "--port", str(PORT), "--local-port",
                str(LOCAL), "--interface", "eth0", "--announce-interval", str(INTERVAL)]
        self.procs[i] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT)

    def peers_of(self, i):
        out = sh(["ip", "netns", "exec", self.ns[i], "curl", "-s", "--max-time", "5",
                  f"http://127.0.0.1:{LOCAL}/"], check=False).stdout
        return set(re.findall(r"^peer ([0-9a-f]{16}) (\S+) ", out, re.M))

    def snmp(self):
        """Sum of the UDP counters of every namespace."""
        total = {}
        for ns in self.ns:
            text = sh(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout
            lines = [l.split() for l in text.splitlines() if l.startswith("Udp:")]
            for k, v in zip(lines[0][1:], lines[1][1:]):
                total[k] = total.get(k, 0) + int(v)
        return total

    def delete(self):
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in self.ns + [self.sw]:
            sh(["ip", "netns", "del", ns], check=False)
        if os.environ.get("BENCH_KEEP"):
            log(f"logs kept in {self.tmp}")
        else:
            sh(["rm", "-rf", self.tmp], check=False)


CLIENT = "target/release/examples/lookup_client"


def client(lab, i, names, parallel=1, start_at=0.0):
    """bench/lookup_client.rs in host i's namespace: the lookups, `parallel` at once."""
    return subprocess.Popen(["ip", "netns", "exec", lab.ns[i], CLIENT, str(LOCAL), str(parallel),
                             str(start_at)] + list(names), stdout=subprocess.PIPE, text=True)


def parse_client(out):
    rows = []
    for line in out.splitlines():
        name, status, ms = line.split()
        rows.append((name, int(status), float(ms)))
    return rows


def lookups(lab, i, names, parallel=1):
    out, _ = client(lab, i, names, parallel).communicate(timeout=600)
    return parse_client(out)


def pctl(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_mesh(lab, hosts, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(len(lab.peers_of(i)) >= len(hosts) - 1 for i in hosts):
            return True
        time.sleep(0.5)
    return False


def scenario(n):
    log(f"N = {n}: building {n + 1} namespaces")
    lab = Lab(n)
    row = {"N": n}
    try:
        for i in range(n):
            lab.start(i, FILES if i == 1 else ())
        if not wait_mesh(lab, range(n), 60):
            raise RuntimeError(f"N={n}: the hosts did not all see each other within 60 s")
        time.sleep(3)  # summaries fetched
        log(f"N = {n}: mesh complete")

        # Background: idle datagrams per host per announce interval (measured over 30 s,
        # once the start-up exchanges are over).
        time.sleep(3)
        a = lab.snmp()
        time.sleep(30)
        b = lab.snmp()
        row["idle_per_host_interval"] = (b["OutDatagrams"] - a["OutDatagrams"]) / n * INTERVAL / 30

        # Datagrams per lookup.
        for kind, names in [("miss", [f"nothere{k}-1-1-any.pkg.tar.zst" for k in range(100)]),
                            ("hit", [FILES[k % 20] for k in range(100)])]:
            a = lab.snmp()
            res = lookups(lab, 0, names)
            b = lab.snmp()
            row[f"dgrams_{kind}"] = (b["OutDatagrams"] - a["OutDatagrams"]) / len(names)
            if kind == "hit":
                row["hit_found"] = sum(1 for r in res if r[1] == 200)

        # Miss latency, awake and with frozen peers.
        for frozen in (0, 1, 3):
            stopped = list(range(2, 2 + frozen))
            for i in stopped:
                os.kill(lab.procs[i].pid, signal.SIGSTOP)
            names = [f"miss{frozen}x{k}-1-1-any.pkg.tar.zst" for k in range(LOOKUPS)]
            res = lookups(lab, 0, names)
            ms = [r[2] for r in res]
            row[f"miss_median_{frozen}"] = statistics.median(ms)
            row[f"miss_p99_{frozen}"] = pctl(ms, 99)
            for i in stopped:
                os.kill(lab.procs[i].pid, signal.SIGCONT)
        time.sleep(1)

        # Everyone upgrades.
        for held in (False, True):
            for parallel in (5, 20):
                names = FILES if held else [f.replace("burst", "none") for f in FILES]
                a = lab.snmp()
                start_at = time.time() + 1.0 + n * 0.02
                cs = [client(lab, i, names, parallel, start_at) for i in range(n)]
                results = [parse_client(c.communicate(timeout=600)[0]) for c in cs]
                time.sleep(1)
                b = lab.snmp()
                wrong = 0
                if held:
                    wrong = sum(1 for i, res in enumerate(results) if i != 1
                                for r in res if r[1] != 200)
                key = f"burst_{'held' if held else 'none'}_{parallel}"
                row[key] = {
                    "datagrams": b["OutDatagrams"] - a["OutDatagrams"],
                    "dropped": (b["RcvbufErrors"] - a["RcvbufErrors"])
                               + (b["InErrors"] - a["InErrors"]),
                    "wrong_nobody": wrong,
                    "p99_ms": pctl([r[2] for res in results for r in res], 99),
                }
                time.sleep(1.5)

        # A late host whose first 250 ms of datagrams are lost.
        late = n
        sh(["ip", "netns", "exec", lab.ns[late], "nft", "-f", "-"],
           input="table inet flsc {\n chain out {\n  type filter hook output priority 0;\n"
                 f"  udp dport {PORT} drop\n }}\n}}\n")
        t0 = time.time()
        lab.start(late)
        time.sleep(0.25)
        sh(["ip", "netns", "exec", lab.ns[late], "nft", "delete", "table", "inet", "flsc"])
        known = None
        while time.time() - t0 < 10:
            if all(any(ip == lab.ip[late] for _, ip in lab.peers_of(i)) for i in range(n)):
                known = time.time() - t0
                break
            time.sleep(0.05)
        row["late_known_s"] = known
    finally:
        lab.delete()
    return row


def ok(good):
    return "ok" if good else "MISSED"


def report(rows):
    print()
    print("| N | datagrams per lookup: miss / hit | miss median / p99, all awake | 1 frozen | 3 frozen |"
          " idle datagrams per host per interval | late host known after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        late = f"{r['late_known_s']:.2f} s" if r["late_known_s"] is not None else "never (10 s)"
        print(f"| {r['N']} | {r['dgrams_miss']:.2f} / {r['dgrams_hit']:.2f} "
              f"| {r['miss_median_0']:.2f} / {r['miss_p99_0']:.2f} ms "
              f"| {r['miss_median_1']:.2f} / {r['miss_p99_1']:.2f} ms "
              f"| {r['miss_median_3']:.2f} / {r['miss_p99_3']:.2f} ms "
              f"| {r['idle_per_host_interval']:.2f} | {late} |")
    print()
    print("| N | everyone upgrades (20 files) | datagrams | dropped | wrong \"nobody\" | p99 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        for key, what in [("burst_none_5", "nobody has them, 5 parallel"),
                          ("burst_none_20", "nobody has them, 20 parallel"),
                          ("burst_held_5", "one host has them, 5 parallel"),
                          ("burst_held_20", "one host has them, 20 parallel")]:
            b = r[key]
            print(f"| {r['N']} | {what} | {b['datagrams']} | {b['dropped']} "
                  f"| {b['wrong_nobody']} | {b['p99_ms']:.1f} ms |")
    print()
    print("Goals:")
    for r in rows:
        misses = [r[f"miss_median_{k}"] for k in (0, 1, 3)]
        p99s = [r[f"miss_p99_{k}"] for k in (0, 1, 3)]
        bursts = [r[k] for k in ("burst_none_5", "burst_none_20", "burst_held_5", "burst_held_20")]
        print(f"  N={r['N']}: miss median <= 5 ms: {ok(max(misses) <= GOALS['miss_median_ms'])}; "
              f"p99 <= 20 ms: {ok(max(p99s) <= GOALS['miss_p99_ms'])}; "
              f"no drop: {ok(all(b['dropped'] == 0 for b in bursts))}; "
              f"no wrong nobody: {ok(all(b['wrong_nobody'] == 0 for b in bursts))}; "
              f"late host known within 2 s: "
              f"{ok(r['late_known_s'] is not None and r['late_known_s'] <= 2)}; "
              f"idle <= 1 datagram per host per interval: {ok(r['idle_per_host_interval'] <= 1.0)}")
    ns = [r["N"] for r in rows]
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        grow = (b["burst_held_20"]["datagrams"] / max(1, a["burst_held_20"]["datagrams"]))
        print(f"  burst datagrams grow {grow:.1f}x from N={ns[0]} to N={ns[-1]} "
              f"(O(N) would be {ns[-1] / ns[0]:.1f}x, O(N^2) {(ns[-1] / ns[0]) ** 2:.1f}x)")


def main():
    if os.geteuid() != 0:
        sys.exit("bench/scale.py: needs root")
    sizes = [int(x) for x in os.environ.get("BENCH_SCALE_N", "8 48").split()]
    rows = [scenario(n) for n in sizes]
    os.makedirs("bench/out", exist_ok=True)
    with open("bench/out/scale.json", "w") as f:
        json.dump(rows, f, indent=1)
    report(rows)


if __name__ == "__main__":
    main()
