#!/usr/bin/python3
"""Issue 6: hotplug latency and idle cost.

Real pcscd + vpcd virtual reader + vicc virtual card (tests/pcscenv.py), the
daemon on the private bus with a SoftHSM token.  For each of N insert/remove
cycles the time from the card appearing (taken just before vicc is started,
resp. killed) to
  * the D-Bus TokenInserted / TokenRemoved signal arriving at a client (this
    process, subscribed on the harness connection), and, in the same run,
  * a minimal PC/SC client blocking in SCardGetStatusChange on the same
    reader (bench/pcsc_watch.py, ctypes on libpcsclite; it timestamps
    itself with CLOCK_MONOTONIC), and `pcsc_scan -n` (pcsc-tools; lines
    timestamped here as they arrive through a pipe, under stdbuf -oL).
The extra delay the daemon adds is daemon - SCardGetStatusChange peer, per event.
Then everything sits idle for --idle seconds (default 60): CPU time, RSS and
context switches (wake-ups) of the daemon, beside the peer client and pcsc_scan.
"""
import argparse
import os
import re
import time

import benchlib as B
from pcscenv import PcscEnv

READER0 = "Test VPCD 00 00"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--cycles", type=int, default=20, help="insert/remove cycles (default 20)")
    ap.add_argument("--idle", type=float, default=60, help="idle seconds measured at the end (default 60)")
    a = ap.parse_args()
    B.need_root()
    env = B.new_env("bench-hotplug")
    pcsc = PcscEnv(env.tmp, lifetime=int(a.idle + 30 * a.cycles + 300))
    import atexit
    atexit.register(pcsc.close)
    pcsc.start()
    env.env["PCSCLITE_CSOCK_NAME"] = os.environ["PCSCLITE_CSOCK_NAME"]
    env.add_token("soft")
    env.start_daemon()
    pid = B.daemon_pid(env)

    events = []

    def on_signal(conn, sender, path, iface, name, params, *user):
        t = time.monotonic()
        token, info = params.unpack()
        if info.get("reader") == READER0:
            events.append(("IN" if name == "TokenInserted" else "OUT", t))
    for name in ("TokenInserted", "TokenRemoved"):
        env.conn.signal_subscribe(B.harness.NAME, B.harness.MANAGER, name, B.harness.PATH, None,
                                  B.Gio.DBusSignalFlags.NONE, on_signal)

    cards = []   # CardInserted / CardRemoved: sent before the modules read the card

    def on_card(conn, sender, path, iface, name, params, *user):
        t = time.monotonic()
        reader, info = params.unpack()
        if reader == READER0:
            cards.append(("IN" if name == "CardInserted" else "OUT", t))
    for name in ("CardInserted", "CardRemoved"):
        env.conn.signal_subscribe(B.harness.NAME, B.harness.MANAGER, name, B.harness.PATH, None,
                                  B.Gio.DBusSignalFlags.NONE, on_card)

    watch, wlines = B.spawn_lines(env, "pcsc_watch", ["/usr/bin/python3", os.path.join(B.HERE, "pcsc_watch.py"),
                                                      READER0])
    scan, slines = B.spawn_lines(env, "pcsc_scan", ["stdbuf", "-oL", "pcsc_scan", "-n"])
    B.harness.wait_for(lambda: any(l.startswith("READY") for _, l in wlines) or watch.poll() is not None, 10,
                       "pcsc_watch READY")
    if watch.poll() is not None:
        raise SystemExit("pcsc_watch failed: %s" % wlines)
    B.harness.wait_for(lambda: any("Card state" in l for _, l in slines), 10, "pcsc_scan initial state")

    def peer_events():
        return [(l.split()[0], float(l.split()[1])) for _, l in wlines if l.startswith(("IN ", "OUT "))]

    def scan_events():
        out, reader, state = [], None, {}
        for t, l in slines:
            l = ANSI.sub("", l)
            m = re.search(r"Reader \d+: (.*)$", l)
            if m:
                reader = m.group(1).strip()
            elif "Card state" in l and reader == READER0:
                now = "IN" if "Card inserted" in l else "OUT" if "Card removed" in l else None
                if now and state.get(reader) != now:
                    if reader in state:
                        out.append((now, t))
                    state[reader] = now
        return out

    starts = []
    for i in range(a.cycles):
        for kind in ("IN", "OUT"):
            n = len(starts) + 1
            t0 = time.monotonic()
            if kind == "IN":
                pcsc.insert_card(0)
            else:
                pcsc.remove_card(0)
            starts.append((kind, t0))
            B.harness.wait_for(lambda: len(events) >= n and len(cards) >= n and len(peer_events()) >= n
                               and len(scan_events()) >= n,
                               10, "event %d (%s) at daemon, pcsc_watch and pcsc_scan" % (n, kind))
            # a short quiet time so pcscd's 400 ms reader poll phase is not locked to our loop
            end = time.monotonic() + 0.3 + 0.05 * (i % 4)
            B.harness.wait_for(lambda: time.monotonic() > end, 2, "pause")

    pe, se = peer_events(), scan_events()
    assert [k for k, _ in events] == [k for k, _ in starts] == [k for k, _ in pe] == [k for k, _ in se] \
        == [k for k, _ in cards], (events, cards, pe, se)
    d = {"IN": [], "OUT": []}
    for (kind, t0), (_, td), (_, tp), (_, ts), (_, tc) in zip(starts, events, pe, se, cards):
        d[kind].append((td - t0, tp - t0, ts - t0, td - tp, tc - t0, tc - tp))

    print("Hotplug, %d insert/remove cycles, reader '%s', times from vicc start/kill\n" % (a.cycles, READER0))
    rows = []
    for kind, label in (("IN", "insert"), ("OUT", "remove")):
        cols = list(zip(*d[kind]))
        for idx, who in ((0, "daemon Token* signal"), (4, "daemon Card* signal"), (1, "SCardGetStatusChange peer"),
                         (2, "pcsc_scan -n (pipe)"), (3, "extra delay Token* - peer"), (5, "extra delay Card* - peer")):
            rows.append(("%s: %s" % (label, who), B.ms(B.median(cols[idx])), B.ms(B.pct(cols[idx], 95)),
                         B.ms(min(cols[idx])), B.ms(max(cols[idx]))))
    B.table(("event: observer", "median ms", "p95 ms", "min ms", "max ms"), rows)

    # idle
    pids = {"p11certd": pid, "pcsc_watch (peer)": B.child_pid(watch.pid),
            "pcsc_scan": B.child_pid(scan.pid, "pcsc_scan")}
    before_rss = B.proc_sample(pid)["rss_kb"]
    idle = B.idle_watch(pids, a.idle)
    print("\nIdle %.0f s after the cycles (card out), measured side by side:\n" % a.idle)
    B.table(("process", "CPU ms", "ctx switches", "RSS kB", "fds", "threads"),
            [(n, v["cpu_ms"], v["switches"], v["rss_kb"], v["fds"], v["threads"]) for n, v in idle.items()])
    print("daemon RSS before idle %d kB, after %d kB" % (before_rss, idle["p11certd"]["rss_kb"]))
    alive = env.daemon.poll() is None
    ins, outs = list(zip(*d["IN"])), list(zip(*d["OUT"]))
    print("RESULT: hotplug insert: CardInserted median %.1f ms, pcsc_scan %.1f ms; "
          "TokenInserted median %.1f ms vs PC/SC peer %.1f ms (ratio %.2f, extra %.1f ms median, "
          "%.1f ms p95); remove: %.1f vs %.1f ms (extra %.1f ms); idle %.0f s: daemon %.0f ms CPU, %d wake-ups, "
          "%d kB RSS%s"
          % (B.ms(B.median(ins[4])), B.ms(B.median(ins[2])),
             B.ms(B.median(ins[0])), B.ms(B.median(ins[1])), B.median(ins[0]) / B.median(ins[1]),
             B.ms(B.median(ins[3])), B.ms(B.pct(ins[3], 95)), B.ms(B.median(outs[0])), B.ms(B.median(outs[1])),
             B.ms(B.median(outs[3])), a.idle, idle["p11certd"]["cpu_ms"], idle["p11certd"]["switches"],
             idle["p11certd"]["rss_kb"], "" if alive else " (DAEMON EXITED)"))


if __name__ == "__main__":
    main()
