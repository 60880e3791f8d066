#!/usr/bin/python3
"""Load client for bench/load.py: THREADS threads, each with its own Gio
bus connection, call Manager.ListCerts(OPTIONS) in a loop for SECONDS after
a line arrives on stdin; writes one JSON object (latencies in s, errors by
name, the entry counts seen) to OUT.
Stops early when the file STOP exists.
    lc_client.py ADDRESS TOKEN_URI THREADS SECONDS OUT STOP"""
import json
import os
import sys
import threading
import time

import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

address, token, nthreads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
conns = [Gio.DBusConnection.new_for_address_sync(address, flags, None, None) for _ in range(nthreads)]
params = GLib.Variant("(a{sv})", ({"token": GLib.Variant("s", token)},) if token else ({},))
results = [None] * nthreads
go = threading.Event()


def worker(i):
    conn = conns[i]
    lat, errors, counts = [], {}, set()
    go.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(sys.argv[6]):
        t0 = time.perf_counter()
        try:
            r = conn.call_sync("org.p11certd", "/org/p11certd", "org.p11certd1.Manager", "ListCerts", params,
                               None, Gio.DBusCallFlags.NONE, 30000, None)
            lat.append(time.perf_counter() - t0)
            counts.add(r.get_child_value(0).n_children())
        except GLib.Error as e:
            name = Gio.DBusError.get_remote_error(e) or e.message
            errors[name] = errors.get(name, 0) + 1
    results[i] = (lat, errors, sorted(counts))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
for t in threads:
    t.start()
print("READY", flush=True)
sys.stdin.readline()
t_go = time.monotonic()
go.set()
for t in threads:
    t.join()
out = {"lat": [x for r in results for x in r[0]], "errors": {}, "counts": sorted({c for r in results for c in r[2]}),
       "wall": time.monotonic() - t_go}
for r in results:
    for k, v in r[1].items():
        out["errors"][k] = out["errors"].get(k, 0) + v
with open(sys.argv[5], "w") as f:
    json.dump(out, f)
