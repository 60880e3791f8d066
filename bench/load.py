#!/usr/bin/python3
"""Issue 9: the daemon under load, and beside certmonger.

Tokens: "fixed" (20 certificates: what the clients list) and "ea", "eb"
(where enrollments run).  --clients concurrent clients (threads, each with
its own Gio bus connection, spread over --procs processes: bench/lc_client.py)
call ListCerts {token: pkcs11:token=fixed} in a loop for --duration seconds:
  1. idle: no enrollments;
  2. load: local-CA enrollments (request {ca: local, storage: token, token,
     pin, subject}) run back to back on ea and eb, one at a time on each.
The reply stays the same size in both phases (the enrollments land on other
tokens), so the latencies compare.  The daemon is restarted before each
phase, so both start from the same state; a phase is cut short (clients told
to stop) if the daemon's RSS passes --max-rss-mb.  Reported: calls/s, p50/p99 latency,
errors (must be 0), enrollments done, daemon RSS, fds and threads at start
and end.

Then certmonger in the same run: `certmonger -s -n` on a private session bus
(`dbus-daemon --nofork` with Debian's session.conf minus its service
directories, so nothing is bus-activated; state under the temporary directory),
`getcert list -s` latency N=--n, interleaved with the same kind of process
per call for the daemon (`gdbus call --system ... ListCerts`) and the
in-process ListCerts call; then --idle seconds (default 60) idle CPU, RSS and
wake-ups (context switches) of both daemons, side by side.
"""
import argparse
import json
import os
import shutil
import subprocess
import time

import benchlib as B

FIXED = "pkcs11:token=fixed"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument("--procs", type=int, default=5, help="processes the clients are spread over (default 5)")
    ap.add_argument("--duration", type=float, default=20, help="seconds of each phase (default 20)")
    ap.add_argument("--fixed-certs", type=int, default=20, help="certificates on the listed token (default 20)")
    ap.add_argument("-n", type=int, default=30, help="getcert list / ListCerts runs (default 30)")
    ap.add_argument("--idle", type=float, default=60, help="idle seconds for CPU/wake-ups (default 60)")
    ap.add_argument("--max-rss-mb", type=int, default=5000,
                    help="stop a phase early when the daemon's RSS passes this (default 5000)")
    ap.add_argument("--no-certmonger", action="store_true", help="skip the certmonger comparison")
    a = ap.parse_args()
    B.need_root()

    env = B.new_env("bench-load")
    for t in ("fixed", "ea", "eb"):
        env.add_token(t)
    env.put_many_certs("fixed", a.fixed_certs)
    env.start_daemon()
    pin = B.harness.PIN

    # warm the local CA (created on first use) and the enrollment path
    finished = {}

    def on_finished(conn, sender, path, iface, name, params, *user):
        finished[path] = (time.monotonic(), params.unpack())
    env.conn.signal_subscribe(B.harness.NAME, B.harness.JOB_IFACE, "Finished", None, None,
                              B.Gio.DBusSignalFlags.NONE, on_finished)

    def start_enroll(token, i):
        return env.enroll({"ca": "local", "storage": "token", "token": "pkcs11:token=" + token, "pin": pin,
                           "subject": "CN=load-%s-%d" % (token, i)})
    samples = {}
    cur = {}

    def fresh_daemon(name):
        if env.daemon is not None and env.daemon.poll() is None:
            env.stop_daemon()
        env.start_daemon()
        cur["pid"] = B.daemon_pid(env)
        assert len(env.list_certs(token=FIXED)) == a.fixed_certs
        # warm the local CA (created on first use) and the enrollment path
        p = start_enroll("ea", 0)
        B.harness.wait_for(lambda: p in finished, 30, "warm-up enrollment")
        assert finished[p][1][0], finished[p]
        samples[name + ": start"] = B.proc_sample(cur["pid"])

    def phase(name, enroll):
        fresh_daemon(name)
        pid = cur["pid"]
        stop_file = os.path.join(env.tmp, "stop-" + name)
        out_files = [os.path.join(env.tmp, "lc-%s-%d.json" % (name, i)) for i in range(a.procs)]
        per = [a.clients // a.procs + (1 if i < a.clients % a.procs else 0) for i in range(a.procs)]
        procs = []
        for i in range(a.procs):
            pr = subprocess.Popen(["timeout", "-k", "5", str(int(a.duration + 120)), "/usr/bin/python3",
                                   os.path.join(B.HERE, "lc_client.py"), env.bus_address, FIXED, str(per[i]),
                                   str(a.duration), out_files[i], stop_file],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env.env,
                                  start_new_session=True)
            env.procs.append(pr)
            procs.append(pr)
        for pr in procs:
            line = pr.stdout.readline()
            assert line.startswith(b"READY"), "load client failed to start: %r" % line
        enrolls = {"started": {}, "ok": 0, "failed": [], "durations": []}
        running = {}
        stop_at = [None]

        def next_enroll(token):
            n = len(enrolls["started"])
            path = start_enroll(token, n)
            enrolls["started"][path] = time.monotonic()
            running[token] = path
        t_go = time.monotonic()
        if enroll:
            for t in ("ea", "eb"):
                next_enroll(t)
        s0 = B.proc_sample(pid)
        for pr in procs:
            pr.stdin.write(b"go\n")
            pr.stdin.flush()
        stop_at[0] = time.monotonic() + a.duration

        aborted = []

        def step():
            if not aborted:
                rss = B.proc_sample(pid)["rss_kb"]
                if rss > a.max_rss_mb * 1024:
                    aborted.append("phase %s stopped after %.1f s: daemon RSS %d MB > --max-rss-mb %d"
                                   % (name, time.monotonic() - t_go, rss // 1024, a.max_rss_mb))
                    open(stop_file, "w").close()
                    stop_at[0] = 0
            for token, path in list(running.items()):
                if path in finished:
                    t1, (ok, err, msg) = finished[path]
                    enrolls["durations"].append(t1 - enrolls["started"][path])
                    if ok:
                        enrolls["ok"] += 1
                    else:
                        enrolls["failed"].append("%s: %s" % (err, msg))
                    del running[token]
                    if time.monotonic() < stop_at[0]:
                        next_enroll(token)
            if env.daemon.poll() is not None:
                raise SystemExit("p11certd exited (%s) under load:\n%s" % (env.daemon.returncode,
                                                                             env.log("p11certd")[-5000:]))
            return all(pr.poll() is not None for pr in procs) and not running
        B.harness.wait_for(step, a.duration + 120, "load phase %s" % name)
        wall = time.monotonic() - t_go
        samples[name + ": end"] = B.proc_sample(pid)
        s1 = B.proc_sample(pid)
        lat, errors, counts = [], {}, set()
        for pr, f in zip(procs, out_files):
            if pr.returncode != 0 or not os.path.exists(f):
                errors["client process exit %s" % pr.returncode] = errors.get("client process exit", 0) + 1
                continue
            r = json.load(open(f))
            lat += r["lat"]
            counts.update(r["counts"])
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {"lat": lat, "errors": errors, "counts": sorted(counts), "wall": wall, "enrolls": enrolls,
                "cpu_s": s1["cpu"] - s0["cpu"], "end": s1, "aborted": aborted, "start": samples[name + ": start"]}

    idle = phase("idle", False)
    load = phase("load", True)
    pid = cur["pid"]
    # let lingering jobs (job-linger=30 s) go, then look again
    settle = time.monotonic() + 35
    B.harness.wait_for(lambda: time.monotonic() > settle, 40, "jobs to linger out")
    samples["load: 35 s later"] = B.proc_sample(pid)
    total_certs = len(env.list_certs())

    print("ListCerts {token: fixed (%d certificates)} from %d clients (%d processes), %.0f s per phase\n"
          % (a.fixed_certs, a.clients, a.procs, a.duration))
    rows = []
    for name, ph in (("idle (no enrollments)", idle), ("under load (enrollments)", load)):
        n = len(ph["lat"])
        rows.append((name, n, n / ph["wall"], B.ms(B.median(ph["lat"])), B.ms(B.pct(ph["lat"], 99)),
                     B.ms(max(ph["lat"]) if ph["lat"] else float("nan")), sum(ph["errors"].values()),
                     ph["cpu_s"] / ph["wall"] * 100))
    B.table(("phase", "calls", "calls/s", "p50 ms", "p99 ms", "max ms", "errors", "daemon CPU %"), rows)
    for name, ph in (("idle", idle), ("load", load)):
        for line in ph["aborted"]:
            print("  " + line)
        if ph["errors"]:
            print("  %s errors: %s" % (name, ph["errors"]))
        if ph["counts"] != [a.fixed_certs]:
            print("  %s: replies had %s entries (expected %d)" % (name, ph["counts"], a.fixed_certs))
    e = load["enrolls"]
    grow = (idle["end"]["rss_kb"] - idle["start"]["rss_kb"]) / max(1, len(idle["lat"]))
    print("\ndaemon RSS growth over the idle phase: %.1f kB per ListCerts call (%d calls, %d -> %d kB)%s"
          % (grow, len(idle["lat"]), idle["start"]["rss_kb"], idle["end"]["rss_kb"],
             "  <-- LEAK? memory is not given back (see the table below)" if grow > 1 else ""))
    print("enrollments during load: %d done, %d failed, median %.0f ms, p99 %.0f ms (2 tokens, back to back)"
          % (e["ok"], len(e["failed"]), B.ms(B.median(e["durations"])), B.ms(B.pct(e["durations"], 99))))
    for f in e["failed"][:5]:
        print("  failed: " + f)
    print("certificates listed in total afterwards: %d\n" % total_certs)
    B.table(("daemon", "RSS kB", "fds", "threads", "CPU s"),
            [(k, v["rss_kb"], v["fds"], v["threads"], v["cpu"]) for k, v in samples.items()])

    cm = None
    if not a.no_certmonger:
        cm = certmonger_part(env, pid, a)

    errs = sum(idle["errors"].values()) + sum(load["errors"].values())
    p99_ratio = B.pct(load["lat"], 99) / B.pct(idle["lat"], 99)
    line = ("RESULT: load %d clients: %.0f calls/s idle, %.0f under load (%d enrollments); p50 %.1f -> %.1f ms, "
            "p99 %.1f -> %.1f ms (load/idle p99 %.2f); errors %d; idle phase RSS %d -> %d kB (%.0f kB/ListCerts), load phase RSS -> %d kB, fds %d -> %d"
            % (a.clients, len(idle["lat"]) / a.duration, len(load["lat"]) / a.duration, e["ok"],
               B.ms(B.median(idle["lat"])), B.ms(B.median(load["lat"])), B.ms(B.pct(idle["lat"], 99)),
               B.ms(B.pct(load["lat"], 99)), p99_ratio, errs, idle["start"]["rss_kb"], idle["end"]["rss_kb"],
               grow, samples["load: 35 s later"]["rss_kb"], load["start"]["fds"], samples["load: 35 s later"]["fds"]))
    if cm:
        line += ("; vs certmonger: getcert list %.1f ms vs gdbus ListCerts %.1f ms, idle CPU %.0f vs %.0f ms, "
                 "wake-ups %d vs %d, RSS %d vs %d kB" % cm)
    print(line)


def certmonger_part(env, pid, a):
    if shutil.which("certmonger") is None and not os.path.exists("/usr/sbin/certmonger"):
        r = subprocess.run(["apt-get", "install", "-y", "-q", "certmonger"], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0:
            print("\ncertmonger not available (apt-get install failed): %s" % r.stderr[-500:])
            return None
    d = os.path.join(env.tmp, "certmonger")
    os.makedirs(d)
    sock = os.path.join(d, "session_bus")
    limit = int(a.idle + 300)
    # Debian's session.conf minus the service directories: certmonger.service there would
    # bus-activate a second certmonger that takes the name before ours does
    with open("/usr/share/dbus-1/session.conf") as f:
        conf = f.read().replace("<standard_session_servicedirs />", "").replace(
            "<listen>unix:tmpdir=/tmp</listen>", "<listen>unix:path=%s</listen>" % sock)
    conf_path = os.path.join(d, "session.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    bus, blines = B.spawn_lines(env, "session-bus", ["dbus-daemon", "--config-file=" + conf_path, "--print-address",
                                                     "--nofork"], limit=limit)
    B.harness.wait_for(lambda: blines or bus.poll() is not None, 10, "session bus address")
    address = blines[0][1].strip()
    cm_env = {"DBUS_SESSION_BUS_ADDRESS": address, "HOME": d, "XDG_CONFIG_HOME": os.path.join(d, "config"),
              "XDG_DATA_HOME": os.path.join(d, "data"), "XDG_CACHE_HOME": os.path.join(d, "cache")}
    cm, clines = B.spawn_lines(env, "certmonger", ["certmonger", "-s", "-n"], limit=limit, extra_env=cm_env)
    genv = dict(env.env, **cm_env)

    def getcert_ok():
        if cm.poll() is not None:
            raise SystemExit("certmonger exited: %s" % clines)
        return subprocess.run(["getcert", "list", "-s"], env=genv, capture_output=True).returncode == 0
    B.harness.wait_for(getcert_ok, 20, "certmonger answering")
    cm_pid = B.child_pid(cm.pid, "certmonger")
    # give certmonger something to list: track a few certificate files (no CA, nothing to renew)
    for i in range(5):
        key, cert = B.harness.make_cert("cm-%d" % i, days=365)
        cf = os.path.join(d, "c%d.pem" % i)
        with open(cf, "wb") as f:
            f.write(cert.public_bytes(B.harness.serialization.Encoding.PEM))
        subprocess.run(["getcert", "start-tracking", "-s", "-f", cf, "-I", "bench%d" % i], env=genv,
                           capture_output=True, text=True)
    end = time.monotonic() + 2
    B.harness.wait_for(lambda: time.monotonic() > end, 5, "certmonger to settle")

    getcert_argv = ["getcert", "list", "-s"]
    gdbus_argv = ["gdbus", "call", "--system", "--dest", B.harness.NAME, "--object-path", B.harness.PATH,
                  "--method", B.harness.MANAGER + ".ListCerts", "{'token': <'%s'>}" % FIXED]
    params = B.GLib.Variant("(a{sv})", ({"token": B.GLib.Variant("s", FIXED)},))
    B.run_timed(getcert_argv, env=genv)
    B.run_timed(gdbus_argv, env=env.env)
    g, q, c = [], [], []
    for i in range(a.n):
        g.append(B.run_timed(getcert_argv, env=genv)[0])
        q.append(B.run_timed(gdbus_argv, env=env.env)[0])
        c.append(B.timed(env.conn.call_sync, B.harness.NAME, B.harness.PATH, B.harness.MANAGER, "ListCerts",
                         params, None, 0, 30000, None)[0])
    n_listed = B.run_timed(getcert_argv, env=genv)[1].stdout.decode().count("Request ID")
    print("\ncertmonger (session bus, getcert lists %d tracked certificate files) vs p11certd, N=%d, interleaved\n"
          % (n_listed, a.n))
    B.table(("measurement", "median ms", "p95 ms"), [
        ("getcert list -s (process)", B.ms(B.median(g)), B.ms(B.pct(g, 95))),
        ("gdbus call ListCerts fixed (process)", B.ms(B.median(q)), B.ms(B.pct(q, 95))),
        ("ListCerts fixed in-process call_sync", B.ms(B.median(c)), B.ms(B.pct(c, 95))),
    ])
    print("ratio gdbus ListCerts / getcert list: %.2f" % (B.median(q) / B.median(g)))
    idle = B.idle_watch({"p11certd": pid, "certmonger": cm_pid}, a.idle)
    print("\nidle %.0f s, side by side:\n" % a.idle)
    B.table(("process", "CPU ms", "ctx switches", "RSS kB", "fds", "threads"),
            [(n, v["cpu_ms"], v["switches"], v["rss_kb"], v["fds"], v["threads"]) for n, v in idle.items()])
    return (B.ms(B.median(g)), B.ms(B.median(q)), idle["certmonger"]["cpu_ms"], idle["p11certd"]["cpu_ms"],
            idle["certmonger"]["switches"], idle["p11certd"]["switches"], idle["certmonger"]["rss_kb"],
            idle["p11certd"]["rss_kb"])


if __name__ == "__main__":
    main()
