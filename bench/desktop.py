#!/usr/bin/python3
"""Issue 18: the desktop app's launch on a token with many certificates.

App:  p11certd-tokens started (Xvfb, private session bus, the daemon on the
      private system bus), until its window first paints the full list —
      the app logs "List shown: N token(s), M certificate(s)" from the frame
      that first draws the listing (a tick callback, G_MESSAGES_DEBUG=p11d);
      the time is taken here when the line arrives through a pipe.  The app is killed and started again.
Peer: `p11certctl list` (the CLI on the same bus: ListCerts and a printed
      table), a whole process per run.
Both N times, interleaved, in the same run.
"""
import argparse
import os
import subprocess
import threading
import time

import benchlib as B
from guienv import APP, Gui


def launch_once(gui, env, certs):
    e = dict(env.env)
    e.update(gui.env)
    e.update(G_MESSAGES_DEBUG="p11d", LANGUAGE="en", LC_ALL="C.UTF-8")
    e.pop("G_DEBUG", None)
    shown = threading.Event()
    t0 = time.perf_counter()
    # GLib writes debug messages to stdout
    p = subprocess.Popen(["timeout", "60", APP], env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    when = []

    def pump():
        for line in p.stdout:
            if b"List shown:" in line and b"%d certificate" % certs in line and not when:
                when.append(time.perf_counter())
                shown.set()
    threading.Thread(target=pump, daemon=True).start()
    ok = shown.wait(60)
    if p.poll() is None:
        os.killpg(p.pid, 15)
    p.wait()
    if not ok:
        raise SystemExit("the app did not show %d certificates within 60 s (exit %s)" % (certs, p.returncode))
    return when[0] - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="launches / CLI runs (default 10)")
    ap.add_argument("--certs", type=int, default=200, help="certificates on the token (default 200)")
    a = ap.parse_args()
    B.need_root()
    env = B.new_env("bench-desktop")
    env.add_token("big")
    env.put_many_certs("big", a.certs)
    env.start_daemon()
    gui = Gui()
    import atexit
    atexit.register(gui.close)
    gui.start()

    r = env.ctl("list", check=True)
    assert r.stdout.count("\n") >= a.certs, r.stdout[-500:]
    launch_once(gui, env, a.certs)            # warm-up (page cache, fonts)
    app, cli = [], []
    for _ in range(a.n):
        app.append(launch_once(gui, env, a.certs))
        cli.append(B.timed(env.ctl, "list", check=True)[0])
    print("Launch with %d certificates on one token, %d runs each, interleaved\n" % (a.certs, a.n))
    B.table(("what", "median ms", "p95 ms", "min ms", "max ms"),
            [("p11certd-tokens: start → list painted", B.ms(B.median(app)), B.ms(B.pct(app, 95)),
              B.ms(min(app)), B.ms(max(app))),
             ("p11certctl list (process)", B.ms(B.median(cli)), B.ms(B.pct(cli, 95)),
              B.ms(min(cli)), B.ms(max(cli)))])
    print("RESULT: desktop launch → %d certificates painted: median %.0f ms vs p11certctl list %.0f ms (ratio %.1f)"
          % (a.certs, B.ms(B.median(app)), B.ms(B.median(cli)), B.median(app) / B.median(cli)))


if __name__ == "__main__":
    main()
