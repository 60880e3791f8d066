"""Make one D-Bus call (JSON request on stdin, JSON answer on stdout).
Run by the test harness as an unprivileged user via setpriv."""
import json
import sys

import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402


def to_variant(sig, args):
    # a{sv} arguments arrive as {"key": ["s", value]}
    out = []
    for t, a in zip(split_sig(sig), args):
        if t == "a{sv}":
            a = {k: GLib.Variant(v[0], v[1]) for k, v in a.items()}
        out.append(a)
    return GLib.Variant("(%s)" % sig, tuple(out))


def split_sig(sig):
    parts, i = [], 0
    while i < len(sig):
        j = i
        depth = 0
        while True:
            c = sig[j]
            if c in "({":
                depth += 1
            elif c in ")}":
                depth -= 1
            j += 1
            if depth == 0 and c != "a":
                break
        parts.append(sig[i:j])
        i = j
    return parts


def main():
    req = json.load(sys.stdin)
    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    conn = Gio.DBusConnection.new_for_address_sync(req["address"], flags, None, None)
    params = to_variant(req["sig"], req["args"]) if req.get("sig") else None
    try:
        r = conn.call_sync("org.p11certd", req["path"], req["iface"], req["method"], params, None, 0, 60000, None)
        json.dump({"ok": True, "result": repr(r.unpack())}, sys.stdout)
    except GLib.Error as e:
        name = Gio.DBusError.get_remote_error(e) or ""
        Gio.DBusError.strip_remote_error(e)
        json.dump({"ok": False, "error": name, "message": e.message}, sys.stdout)


if __name__ == "__main__":
    main()
