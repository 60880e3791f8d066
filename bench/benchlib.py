"""Shared helpers for the p11certd benchmarks (bench/*.py).

Reuses tests/harness.py (private system bus with the project's policy,
SoftHSM2 tokens, the built daemon, the EST test server) and
tests/pcscenv.py.  Run with /usr/bin/python3 as root.
"""
import atexit
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import harness  # noqa: E402,F401
from harness import Env, GLib, Gio  # noqa: E402,F401


def need_root():
    if os.geteuid() != 0:
        sys.exit("benchmarks run as root (they start a system bus, SoftHSM tokens, pcscd)")
    if not os.path.exists(harness.DAEMON):
        sys.exit("build the daemon first: ninja -C build (%s missing)" % harness.DAEMON)


def new_env(name):
    """An Env that is closed (its processes killed by PID) on exit and on SIGTERM/SIGINT."""
    env = Env(name)
    closed = []

    def close():
        if not closed:
            closed.append(1)
            env.close()
    atexit.register(close)

    def on_signal(signum, frame):
        close()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return env


# ---------------------------------------------------------------- statistics

def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def median(values):
    v = sorted(values)
    if not v:
        return float("nan")
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def ms(seconds):
    return seconds * 1000.0


def table(headers, rows):
    """Print a plain aligned table."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(x):
    if isinstance(x, float):
        if x != x:
            return "n/a"
        return "%.2f" % x if abs(x) < 100 else "%.0f" % x
    return str(x)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return time.perf_counter() - t0, r


def run_timed(argv, env=None, check=True, **kw):
    """Run a process to completion; (seconds, CompletedProcess)."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, **kw)
    dt = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s %s" % (argv[0], r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    return dt, r


# ---------------------------------------------------------------- /proc

def child_pid(parent_pid, comm=None, timeout=10):
    """The PID of the process under `timeout` (harness spawns timeout -k 5 N argv)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open("/proc/%d/task/%d/children" % (parent_pid, parent_pid)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            try:
                with open("/proc/%d/comm" % k) as f:
                    c = f.read().strip()
            except OSError:
                continue
            if comm is None or c == comm:
                return k
        if time.monotonic() > deadline:
            raise RuntimeError("no child %s of %d" % (comm, parent_pid))
        time.sleep(0.02)


def daemon_pid(env):
    return child_pid(env.daemon.pid, "p11certd")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    """CPU seconds (user+sys), context switches over all threads, RSS kB, fd count, threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / float(CLK_TCK)
    per_tid = {}
    tids = os.listdir("/proc/%d/task" % pid)
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        per_tid[tid] = per_tid.get(tid, 0) + int(line.split()[1])
        except OSError:
            pass
    switches = sum(per_tid.values())
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return {"cpu": cpu, "switches": switches, "per_tid": per_tid, "rss_kb": rss, "fds": fds, "threads": len(tids)}


def switches_between(before, after):
    """Context switches between two samples, per thread: threads that started
    count from 0; threads that ended are lost (their counts vanish with them)."""
    return sum(n - before["per_tid"].get(tid, 0) for tid, n in after["per_tid"].items())


def idle_watch(pids, seconds, context=None):
    """Let @pids (name -> pid) sit idle for @seconds, iterating the GLib main
    context meanwhile; returns name -> {cpu_ms, switches, rss_kb, fds, threads}."""
    before = {n: proc_sample(p) for n, p in pids.items()}
    end = time.monotonic() + seconds
    ctx = context or GLib.MainContext.default()
    while time.monotonic() < end:
        tid = GLib.timeout_add(200, lambda: False)
        ctx.iteration(True)
        if ctx.find_source_by_id(tid):
            GLib.source_remove(tid)
    after = {n: proc_sample(p) for n, p in pids.items()}
    out = {}
    for n in pids:
        out[n] = {"cpu_ms": (after[n]["cpu"] - before[n]["cpu"]) * 1000.0,
                  "switches": switches_between(before[n], after[n]),
                  "rss_kb": after[n]["rss_kb"], "fds": after[n]["fds"],
                  "threads": "%d->%d" % (before[n]["threads"], after[n]["threads"])}
    return out


def spawn_lines(env, name, argv, limit=900, extra_env=None):
    """Start argv under `timeout` (killed with the Env) with stdout piped; a
    thread appends (time.monotonic(), line) for every line as it arrives.
    Returns (Popen, lines list)."""
    import threading
    p = subprocess.Popen(["timeout", "-k", "5", str(limit)] + argv, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env.env, **(extra_env or {})),
                         start_new_session=True)
    env.procs.append(p)
    lines = []

    def pump():
        for raw in p.stdout:
            lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
    threading.Thread(target=pump, daemon=True).start()
    return p, lines


# ---------------------------------------------------------------- enrollments

def timed_enroller(env, pin, timeout=60):
    """enroll(request) -> seconds from the Enroll call until the job's
    Finished signal arrives; a failed job raises.  The new certificate is
    deleted again, untimed, so every run sees the same token."""
    finished = {}

    def on_finished(conn, sender, path, iface, signal, params, *user):
        finished[path] = (time.perf_counter(), params.unpack())
    env.conn.signal_subscribe(harness.NAME, harness.JOB_IFACE, "Finished", None, None,
                              Gio.DBusSignalFlags.NONE, on_finished)

    def enroll(request):
        t0 = time.perf_counter()
        path = env.enroll(request)
        harness.wait_for(lambda: path in finished, timeout, "job %s Finished" % path)
        t1, (ok, err, msg) = finished[path]
        if not ok:
            raise RuntimeError("enrollment failed: %s %s\n%s" % (err, msg, env.log("p11certd")[-4000:]))
        env.call("DeleteCert", "ssa{sv}", [env.get_property(path, harness.JOB_IFACE, "Result"), pin, {}])
        return t1 - t0
    return enroll
