#!/usr/bin/python3
"""Issue 14: is the daemon ever the bottleneck?  Two builds side by side.

Every figure is measured for each daemon given (--before BUILD_DIR: another
build, e.g. main before a change; the build of this tree is "after"), in the
same run, interleaved, each daemon on its own private system bus with its
own SoftHSM tokens.  The client is bench/client/p11c-bench (C, sd-bus), so
the client is not what limits a figure.

1. ListCerts vs the bus floor: a token with 1, 20 and 200 certificates;
   `p11c-bench ping` (Peer.Ping, answered by the bus library itself: the floor) and
   `p11c-bench rtt` (Ping/ListCerts {token} pairs), blocks interleaved
   between the daemons; medians and the ratio ListCerts / Ping.  Then --cpu-calls
   ListCerts back to back: CPU per call of the daemon and of dbus-daemon
   (user+system from /proc/PID/stat).
2. Load: --clients connections (`p11c-bench load`, --procs processes) keep
   one ListCerts {token: 20 certificates} in flight each for --seconds, while
   `p11c-bench probe` pings the daemon every 10 ms from its own connection.
   Calls/s, p50/p99, errors, Ping p99 during the load, the CPU split daemon
   / dbus-daemon / clients; once with no issuance records and once with
   --records records in STATE/issued.ini.  Threads and anonymous memory
   (RssAnon) of a fresh daemon, right after the load and --settle s later.
3. Idle: --idle s with pcscd absent (PCSCLITE_CSOCK_NAME names a socket that
   does not exist), then with pcscd running: CPU, wake-ups (context
   switches, all threads), threads.  Between the two, pcscd is started and
   the time until each daemon has noticed it is shown.

The sd-bus peer (unless --no-peer): `p11c-bench serve` takes the newest
daemon's place on its bus for a block of each round and answers the same
ListCerts reply from C values in memory (sd_bus_message_append_*), so parts
1 and 2 also show what a C service on systemd's D-Bus library costs for the
same work.  Part 2 prints the bus floor of the load: calls in flight x
dbus-daemon's CPU per call (Little's law with the bus as the only cost).

Ends with one RESULT line per daemon, and one for the peer.
"""
import argparse
import os
import subprocess
import tempfile
import time

import benchlib as B

P11C_BENCH = os.path.join(B.harness.BUILD, "bench", "p11c-bench")


def daemon_binary(build):
    return os.path.join(build, "daemon", "p11certd")


class Side:
    """One daemon build with its own Env (bus, tokens, state)."""

    def __init__(self, name, binary, certs, args):
        self.name, self.binary = name, binary
        self.env = B.new_env("bench-perf-" + name)
        for n in certs:
            self.env.add_token("c%d" % n)
            self.env.put_many_certs("c%d" % n, n)
        self.bus_pid = None

    def start(self, extra_env=None):
        if self.env.daemon is not None and self.env.daemon.poll() is None:
            self.env.stop_daemon()
        B.harness.DAEMON = self.binary
        env = dict(self.env.env, **(extra_env or {}))
        self.env.start_daemon(env=env)
        self.pid = B.daemon_pid(self.env)
        if self.bus_pid is None:
            self.bus_pid = B.child_pid(self.env.bus.pid, "dbus-daemon")

    def run(self, *argv):
        r = subprocess.run([P11C_BENCH] + [str(a) for a in argv], capture_output=True, text=True, timeout=600,
                           env=self.env.env)
        if r.returncode != 0:
            raise SystemExit("p11c-bench %s failed: %s\n%s" % (argv[0], r.stderr, self.env.log("p11certd")[-3000:]))
        return r.stdout


class Peer:
    """The sd-bus peer (`p11c-bench serve`) in place of a side's daemon: it
    fetches the daemon's ListCerts reply, the daemon is stopped, the peer
    takes the bus name and answers from memory.  A "with" block; the daemon
    is started again at its end."""

    def __init__(self, side, uri):
        self.side, self.uri, self.name = side, uri, "sd-bus peer"
        self.env, self.bus_pid, self.run = side.env, side.bus_pid, side.run

    def __enter__(self):
        s = self.side
        self.proc = subprocess.Popen([P11C_BENCH, "serve", s.env.bus_address, self.uri], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=s.env.env)
        s.env.procs.append(self.proc)
        line = self.proc.stdout.readline()
        if not line.startswith("FETCHED"):
            raise SystemExit("p11c-bench serve failed to start: %r" % line)
        s.env.stop_daemon()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "READY":
            raise SystemExit("p11c-bench serve could not take the bus name")
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        self.side.start()


def cpu_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(B.CLK_TCK)


def status_of(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Threads", "RssAnon", "VmRSS"):
                out[k] = int(v.split()[0])
    return out


def read_results(path):
    with open(path) as f:
        head = f.readline().split()
        summary = {head[i]: float(head[i + 1]) for i in range(0, len(head), 2)}
        errors, lat = {}, []
        for line in f:
            if line.startswith("error "):
                _, name, n = line.split()
                errors[name] = int(n)
            else:
                lat.append(int(line) / 1e6)
    return summary, errors, lat


# ------------------------------------------------------------------ 1

def listcerts_part(sides, certs, a):
    rows = []
    res = {}
    n_of = {1: a.n, 20: a.n, 200: max(20, a.n // 3)}
    cpu_calls = {1: a.cpu_calls, 20: a.cpu_calls, 200: max(100, a.cpu_calls // 8)}
    names = [s.name for s in sides] + ([] if a.no_peer else ["sd-bus peer"])
    for n in certs:
        uri = "pkcs11:token=c%d" % n
        pings = {m: [] for m in names}      # the floor: Ping alone, in its own block
        mixed = {m: [] for m in names}      # Ping right after a ListCerts (information)
        lists = {m: [] for m in names}
        cpu = {m: [0.0, 0.0, 0] for m in names}

        def latencies(srv):
            for line in srv.run("ping", srv.env.bus_address, n_of[n] // a.rounds).splitlines():
                pings[srv.name].append(float(line.split()[1]) / 1e6)
            for line in srv.run("rtt", srv.env.bus_address, uri, n_of[n] // a.rounds).splitlines():
                kind, us = line.split()[:2]
                if kind == "ping":
                    mixed[srv.name].append(float(us) / 1e6)
                else:
                    if int(line.split()[2]) != n:
                        raise SystemExit("%s: ListCerts returned %s entries, expected %d" % (srv.name, line, n))
                    lists[srv.name].append(float(us) / 1e6)

        def cpu_per_call(srv):
            d0, b0 = cpu_of(srv.pid), cpu_of(srv.bus_pid)
            srv.run("calls", srv.env.bus_address, uri, cpu_calls[n] // a.rounds)
            d1, b1 = cpu_of(srv.pid), cpu_of(srv.bus_pid)
            cpu[srv.name][0] += d1 - d0
            cpu[srv.name][1] += b1 - b0
            cpu[srv.name][2] += cpu_calls[n] // a.rounds

        for s in sides:
            s.run("rtt", s.env.bus_address, uri, 3)       # warm-up (the cold list)
        for rnd in range(a.rounds):
            for s in sides:
                latencies(s)
            for s in sides:
                cpu_per_call(s)
            if not a.no_peer:
                with Peer(sides[-1], uri) as peer:
                    latencies(peer)
                    cpu_per_call(peer)
                sides[-1].run("rtt", sides[-1].env.bus_address, uri, 3)   # warm again
        for m in names:
            p, l = B.median(pings[m]), B.median(lists[m])
            dc, bc, calls = cpu[m]
            r = {"ping": p, "list": l, "ratio": l / p, "list_p95": B.pct(lists[m], 95),
                 "daemon_us": dc / calls * 1e6, "bus_us": bc / calls * 1e6}
            res[(m, n)] = r
            rows.append(("%d" % n, m, B.ms(p), B.ms(B.median(mixed[m])), B.ms(l), B.ms(r["list_p95"]),
                         r["ratio"], r["daemon_us"], r["bus_us"]))
    print("\n1. ListCerts {token} vs Peer.Ping (C sd-bus client, interleaved), CPU per ListCerts from /proc/PID/stat\n")
    B.table(("certs", "server", "Ping ms", "Ping after list ms", "ListCerts ms", "p95 ms", "ratio to Ping",
             "server CPU us/call", "dbus-daemon CPU us/call"), rows)
    print("(Ping: a block of Pings alone, the floor the ratio uses; 'after list': the Ping of each"
          " Ping/ListCerts pair, for information.  sd-bus peer: p11c-bench serve, the same reply from C values"
          " in memory through sd_bus_message_append_*, in the daemon's place on the same bus)")
    return res


# ------------------------------------------------------------------ 2

def write_records(state_dir, count):
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "issued.ini")
    if count == 0:
        if os.path.exists(path):
            os.unlink(path)
        return
    with open(path, "w") as f:
        for i in range(count):
            f.write("[%064X]\nca=est\nuri=pkcs11:token=elsewhere;id=%%%02x\nnot-after=%d\n\n"
                    % (i + 1, i % 256, 2000000000))
    os.chmod(path, 0o600)


def run_load(srv, uri, a):
    """--clients connections keep one ListCerts {uri} in flight each for
    --seconds while a probe pings srv every 10 ms; the figures."""
    tmp = tempfile.mkdtemp(dir=srv.env.tmp)
    per = [a.clients // a.procs + (1 if i < a.clients % a.procs else 0) for i in range(a.procs)]
    outs = [os.path.join(tmp, "load-%d" % i) for i in range(a.procs)]
    procs = []
    for i in range(a.procs):
        p = subprocess.Popen([P11C_BENCH, "load", srv.env.bus_address, uri, str(per[i]), str(a.seconds), "20",
                              outs[i]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=srv.env.env)
        srv.env.procs.append(p)
        procs.append(p)
    for p in procs:
        line = p.stdout.readline()
        assert line.startswith(b"READY"), "load client failed to start: %r" % line
    probe_out = os.path.join(tmp, "probe")
    d0, b0 = cpu_of(srv.pid), cpu_of(srv.bus_pid)
    t0 = time.monotonic()
    probe = subprocess.Popen([P11C_BENCH, "probe", srv.env.bus_address, str(a.seconds), "10", probe_out],
                             env=srv.env.env)
    srv.env.procs.append(probe)
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs + [probe]:
        p.wait(a.seconds + 120)
        if p.returncode != 0:
            raise SystemExit("load client exited %s" % p.returncode)
    wall = time.monotonic() - t0
    d1, b1 = cpu_of(srv.pid), cpu_of(srv.bus_pid)
    lat, errors, client_cpu = [], {}, 0.0
    for o in outs:
        summ, errs, l = read_results(o)
        lat += l
        client_cpu += summ["cpu"]
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
    psum, perrs, plat = read_results(probe_out)
    client_cpu += psum["cpu"]
    for k, v in perrs.items():
        errors["probe " + k] = errors.get("probe " + k, 0) + v
    return {"calls": len(lat), "rate": len(lat) / a.seconds, "p50": B.pct(lat, 50), "p99": B.pct(lat, 99),
            "max": max(lat), "errors": sum(errors.values()), "error_names": errors, "ping_p99": B.pct(plat, 99),
            "ping_p50": B.pct(plat, 50), "daemon_cpu": (d1 - d0) / wall * 100,
            "bus_cpu": (b1 - b0) / wall * 100, "client_cpu": client_cpu / wall * 100,
            "bus_us": (b1 - b0) / max(1, len(lat) + len(plat)) * 1e6}


def load_part(sides, a):
    res = {}
    rows, mem_rows = [], []
    uri = "pkcs11:token=c20"

    def row(records, name, r):
        rows.append((records, name, r["calls"], r["rate"], B.ms(r["p50"]), B.ms(r["p99"]), B.ms(r["max"]),
                     r["errors"], B.ms(r["ping_p50"]), B.ms(r["ping_p99"]), r["daemon_cpu"], r["bus_cpu"],
                     r["client_cpu"], r["bus_us"], a.clients * r["bus_us"] / 1000.0))

    for records in (0, a.records):
        for s in sides:
            if s.env.daemon is not None and s.env.daemon.poll() is None:
                s.env.stop_daemon()
            write_records(s.env.state_dir, records)
            s.start()
            s.run("rtt", s.env.bus_address, uri, 2)
            fresh = status_of(s.pid)
            r = run_load(s, uri, a)
            after = status_of(s.pid)
            settle_end = time.monotonic() + a.settle
            B.harness.wait_for(lambda: time.monotonic() > settle_end, a.settle + 10, "settle")
            settled = status_of(s.pid)
            r.update(fresh=fresh, after=after, settled=settled)
            res[(s.name, records)] = r
            row(str(records), s.name, r)
            mem_rows.append((str(records), s.name, fresh["Threads"], after["Threads"], settled["Threads"],
                             fresh["RssAnon"], after["RssAnon"], settled["RssAnon"],
                             settled["RssAnon"] - fresh["RssAnon"]))
    if not a.no_peer:
        sides[-1].run("rtt", sides[-1].env.bus_address, uri, 2)
        with Peer(sides[-1], uri) as peer:
            r = run_load(peer, uri, a)
        res[("sd-bus peer", 0)] = r
        row("-", "sd-bus peer", r)
    print("\n2. %d clients (%d processes, C sd-bus) x ListCerts {token: 20 certificates} for %.0f s; "
          "Ping probe every 10 ms\n" % (a.clients, a.procs, a.seconds))
    B.table(("records", "server", "calls", "calls/s", "p50 ms", "p99 ms", "max ms", "errors", "Ping p50 ms",
             "Ping p99 ms", "server CPU %", "dbus-daemon CPU %", "clients CPU %", "dbus-daemon us/call",
             "bus floor p50 ms"), rows)
    print("(bus floor p50: Little's law with the bus as the only cost: %d calls in flight x dbus-daemon's CPU per"
          " call.  The Ping probe waits in the same queues as the calls)" % a.clients)
    for (name, records), r in sorted(res.items()):
        if r["errors"]:
            print("  %s, %d records: errors %s" % (name, records, r["error_names"]))
    print("\nthreads and anonymous memory (kB): fresh, right after the load, %.0f s later\n" % a.settle)
    B.table(("records", "daemon", "threads fresh", "after load", "settled", "RssAnon fresh", "after load",
             "settled", "settled - fresh"), mem_rows)
    return res


# ------------------------------------------------------------------ 3

def idle_part(sides, a):
    from pcscenv import PcscEnv
    res = {}
    absent = {"PCSCLITE_CSOCK_NAME": os.path.join(sides[0].env.tmp, "no-pcscd", "pcscd.comm")}
    for s in sides:
        s.start(absent)
    settle_end = time.monotonic() + 5
    B.harness.wait_for(lambda: time.monotonic() > settle_end, 10, "settle")
    res["absent"] = B.idle_watch({s.name: s.pid for s in sides}, a.idle)

    # pcscd appears: how long until each daemon is connected to it
    pcsc = PcscEnv(sides[0].env.tmp, lifetime=int(a.idle + 300))
    run_dir = os.path.dirname(absent["PCSCLITE_CSOCK_NAME"])
    pcsc.run_dir = run_dir
    pcsc.socket = absent["PCSCLITE_CSOCK_NAME"]
    marks = {s.name: len(s.env.log("p11certd")) for s in sides}
    t0 = time.monotonic()
    pcsc.start()
    seen = {}

    def noticed():
        for s in sides:
            if s.name not in seen and "PC/SC service available" in s.env.log("p11certd")[marks[s.name]:]:
                seen[s.name] = time.monotonic() - t0
        return len(seen) == len(sides)
    try:
        B.harness.wait_for(noticed, 30, "daemons to connect to pcscd")
    except AssertionError:
        pass
    res["noticed"] = seen
    for s in sides:
        s.start({"PCSCLITE_CSOCK_NAME": pcsc.socket})
    settle_end = time.monotonic() + 5
    B.harness.wait_for(lambda: time.monotonic() > settle_end, 10, "settle")
    res["present"] = B.idle_watch({s.name: s.pid for s in sides}, a.idle)
    pcsc.stop()
    print("\n3. idle %.0f s, per daemon (wake-ups = context switches over all threads)\n" % a.idle)
    rows = []
    for case in ("absent", "present"):
        for s in sides:
            v = res[case][s.name]
            rows.append(("pcscd " + case, s.name, v["cpu_ms"], v["switches"], v["threads"], v["rss_kb"]))
    B.table(("case", "daemon", "CPU ms", "wake-ups", "threads", "RSS kB"), rows)
    for s in sides:
        t = seen.get(s.name)
        print("  %s: connected to pcscd %s after it started" % (s.name, "%.2f s" % t if t is not None
                                                                 else "NOT within 30 s"))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="another build directory to measure side by side (e.g. main's)")
    ap.add_argument("-n", type=int, default=400, help="Ping/ListCerts pairs for 1 and 20 certificates (default 400)")
    ap.add_argument("--cpu-calls", type=int, default=3000, help="ListCerts calls for the CPU figure (default 3000)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--procs", type=int, default=2, help="processes the load clients run in (default 2)")
    ap.add_argument("--seconds", type=float, default=15, help="load duration (default 15)")
    ap.add_argument("--records", type=int, default=1000, help="issuance records in the second load (default 1000)")
    ap.add_argument("--settle", type=float, default=20, help="seconds after the load before threads/memory")
    ap.add_argument("--idle", type=float, default=60, help="idle seconds (default 60)")
    ap.add_argument("--no-peer", action="store_true", help="do not measure the sd-bus peer server")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: listcerts,load,idle")
    a = ap.parse_args()
    B.need_root()
    if not os.path.exists(P11C_BENCH):
        raise SystemExit("build bench/client first: ninja -C build (%s missing)" % P11C_BENCH)
    skip = set(filter(None, a.skip.split(",")))
    certs = (1, 20, 200)
    sides = []
    if a.before:
        sides.append(Side("before", daemon_binary(a.before), certs, a))
    sides.append(Side("after" if a.before else "daemon", daemon_binary(B.harness.BUILD), certs, a))
    for s in sides:
        s.start()
    lc = listcerts_part(sides, certs, a) if "listcerts" not in skip else {}
    ld = load_part(sides, a) if "load" not in skip else {}
    idle = idle_part(sides, a) if "idle" not in skip else {}

    print()
    for s in sides:
        parts = []
        if lc:
            parts.append("ListCerts/Ping %s" % ", ".join("%d: %.2f" % (n, lc[(s.name, n)]["ratio"]) for n in certs))
            parts.append("CPU us/call daemon vs dbus-daemon %s" % ", ".join(
                "%d: %.0f vs %.0f" % (n, lc[(s.name, n)]["daemon_us"], lc[(s.name, n)]["bus_us"]) for n in certs))
        if ld:
            for records in (0, a.records):
                r = ld[(s.name, records)]
                parts.append("load %d records %.0f calls/s p99 %.1f ms errors %d Ping p99 %.1f ms "
                             "CPU %.0f/%.0f/%.0f %% anon +%d kB threads %d->%d"
                             % (records, r["rate"], B.ms(r["p99"]), r["errors"], B.ms(r["ping_p99"]),
                                r["daemon_cpu"], r["bus_cpu"], r["client_cpu"],
                                r["settled"]["RssAnon"] - r["fresh"]["RssAnon"], r["fresh"]["Threads"],
                                r["settled"]["Threads"]))
        if idle:
            parts.append("idle wake-ups pcscd absent %d, present %d" % (idle["absent"][s.name]["switches"],
                                                                      idle["present"][s.name]["switches"]))
        print("RESULT: perf %s: %s" % (s.name, "; ".join(parts)))
    if not a.no_peer and (lc or ld):
        parts = []
        if lc:
            parts.append("ListCerts/Ping %s" % ", ".join("%d: %.2f" % (n, lc[("sd-bus peer", n)]["ratio"])
                                                        for n in certs))
            parts.append("CPU us/call peer vs dbus-daemon %s" % ", ".join(
                "%d: %.0f vs %.0f" % (n, lc[("sd-bus peer", n)]["daemon_us"], lc[("sd-bus peer", n)]["bus_us"])
                for n in certs))
        if ld:
            r = ld[("sd-bus peer", 0)]
            parts.append("load %.0f calls/s p99 %.1f ms errors %d Ping p99 %.1f ms CPU %.0f/%.0f/%.0f %%"
                         % (r["rate"], B.ms(r["p99"]), r["errors"], B.ms(r["ping_p99"]), r["daemon_cpu"],
                            r["bus_cpu"], r["client_cpu"]))
        print("RESULT: perf sd-bus peer: %s" % "; ".join(parts))


if __name__ == "__main__":
    main()
