"""Record what org.p11certd's signals show one connection, as a test user.
Usage: p11c_listen.py BUS_ADDRESS [CALL_JSON]   (run via Env.listen_as)

Prints one JSON object per line: {"ready": unique-name} once the match rule
is in place; then, with CALL_JSON ({"path", "iface", "method", "sig", "args"}
as for p11c_call.py), {"call": {...}} for that call made on this same
connection (so this connection owns a job it starts); then {"signal": {path,
iface, member, args}} for every signal that reaches it, until SIGTERM."""
import json
import signal
import sys

import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

from p11c_call import to_variant  # noqa: E402  (its copy beside this one)


def out(obj):
    sys.stdout.write(json.dumps(obj, default=repr) + "\n")
    sys.stdout.flush()


flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
conn = Gio.DBusConnection.new_for_address_sync(sys.argv[1], flags, None, None)


def on_signal(c, sender, path, iface, member, params, *user):
    out({"signal": {"path": path, "iface": iface, "member": member, "args": params.unpack()}})


conn.signal_subscribe(None, None, None, None, None, Gio.DBusSignalFlags.NONE, on_signal)
# a round trip after the subscription: the bus has the match rule from now on
conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", None, None, 0,
               10000, None)
out({"ready": conn.get_unique_name()})
if len(sys.argv) > 2:
    req = json.loads(sys.argv[2])
    params = to_variant(req["sig"], req["args"]) if req.get("sig") else None
    try:
        r = conn.call_sync("org.p11certd", req["path"], req["iface"], req["method"], params, None, 0, 60000, None)
        out({"call": {"ok": True, "result": r.unpack()}})
    except GLib.Error as e:
        out({"call": {"ok": False, "error": Gio.DBusError.get_remote_error(e) or ""}})
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
loop.run()
