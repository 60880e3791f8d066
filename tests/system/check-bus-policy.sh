#!/bin/bash
# tests/system/check-bus-policy.sh POLICY_FILE   (run as root)
#
# (c) The D-Bus system bus policy dbus/org.p11certd.conf:
#  1. lints: a tiny dbus-daemon config that includes it starts (dbus-daemon
#     exits 1 on any error in an included file it is told to <include>);
#  2. is enforced as intended, on a private system bus built from Debian's
#     system.conf (<user>messagebus</user>, so the policy is enforced) with
#     this file as the only extra policy:
#       - an unprivileged user (nobody) cannot own org.p11certd,
#       - root can,
#       - nobody may send to org.p11certd on org.p11certd1.Manager and
#         org.freedesktop.DBus.Peer, and not on any other interface.
# Needs dbus-daemon, busctl, setpriv and /usr/bin/python3 with python3-dbus.
set -u

policy=${1:?usage: check-bus-policy.sh POLICY_FILE}
policy=$(realpath "$policy")
fail=0
pids=()
T=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
chmod 755 "$T"

if [[ $(id -u) -ne 0 ]]; then
  echo "FAIL: must run as root (dbus-daemon drops to messagebus, tests use nobody)"; exit 1
fi
unpriv=nobody

# --- 1. lint -----------------------------------------------------------------
cat > "$T/lint.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/lint-bus</listen>
  <auth>EXTERNAL</auth>
  <include>$policy</include>
</busconfig>
CONF
echo "checking: dbus-daemon starts with $policy included"
timeout 2 dbus-daemon --config-file="$T/lint.conf" --nofork --print-address=1 >"$T/lint.out" 2>"$T/lint.err"
rc=$?
if [[ $rc -eq 124 ]] && grep -q "^unix:path=$T/lint-bus" "$T/lint.out"; then
  echo "ok: policy lints"
else
  echo "FAIL: dbus-daemon refused the policy (exit $rc):"; cat "$T/lint.err"; exit 1
fi

# --- 2. enforcement on a private system bus -------------------------------------
mkdir "$T/policy.d" && cp "$policy" "$T/policy.d/"
sed -e "s|<listen>.*</listen>|<listen>unix:path=$T/bus</listen>|" \
    -e '/<pidfile>/d' -e '/<fork\/>/d' -e '/<syslog\/>/d' \
    -e '/<includedir>/d' -e '/<include .*>/d' -e '/<standard_system_servicedirs\/>/d' \
    -e "s|</busconfig>|  <includedir>$T/policy.d</includedir>\n</busconfig>|" \
    /usr/share/dbus-1/system.conf > "$T/system.conf"
timeout 120 dbus-daemon --config-file="$T/system.conf" --nofork --print-address=3 3>"$T/addr" 2>"$T/bus.err" &
pids+=($!)
for _ in $(seq 100); do [[ -s $T/addr ]] && break; sleep 0.05; done
if [[ ! -s $T/addr ]]; then echo "FAIL: private system bus did not start:"; cat "$T/bus.err"; exit 1; fi
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$T/bus
echo "private system bus at $DBUS_SYSTEM_BUS_ADDRESS (policy enforced, messagebus user)"

cat > "$T/own.py" <<'PY'
import sys, dbus, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SystemBus()
try:
    r = bus.request_name("org.p11certd", dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
except dbus.exceptions.DBusException as e:
    print("denied:", e.get_dbus_name(), flush=True); sys.exit(3)
print("owned" if r == dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER else "not-owned:%d" % r, flush=True)
if len(sys.argv) > 1:
    GLib.timeout_add_seconds(int(sys.argv[1]), lambda: sys.exit(0))
    GLib.MainLoop().run()
PY

echo "checking: $unpriv cannot own org.p11certd"
out=$(timeout 10 setpriv --reuid=$unpriv --regid=nogroup --clear-groups /usr/bin/python3 "$T/own.py" 2>&1)
if [[ $out == *"denied: org.freedesktop.DBus.Error.AccessDenied"* ]]; then
  echo "ok: $out"
else
  echo "FAIL: $unpriv: $out"; fail=1
fi

echo "checking: root can own org.p11certd"
timeout 60 /usr/bin/python3 "$T/own.py" 50 >"$T/owner.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $T/owner.out ]] && break; sleep 0.05; done
if grep -qx owned "$T/owner.out"; then
  echo "ok: root owns org.p11certd"
else
  echo "FAIL: root: $(cat "$T/owner.out")"; exit 1
fi

# call IFACE METHOD as nobody; prints the error name or "ok"
call() {
  timeout 10 setpriv --reuid=$unpriv --regid=nogroup --clear-groups \
    busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" --timeout=5 call \
    org.p11certd /org/p11certd "$1" "$2" "${@:3}" 2>&1
}
expect_allowed() {
  local out; out=$(call "$@")
  if [[ $out == *AccessDenied* || $out == *"Access denied"* ]]; then
    echo "FAIL: $unpriv -> $1.$2 denied: $out"; fail=1
  else
    echo "ok: $unpriv -> $1.$2 passes the bus (${out:-reply})"
  fi
}
expect_denied() {
  local out; out=$(call "$@")
  if [[ $out == *AccessDenied* || $out == *"Access denied"* ]]; then
    echo "ok: $unpriv -> $1.$2 denied by the bus"
  else
    echo "FAIL: $unpriv -> $1.$2 not denied: $out"; fail=1
  fi
}
echo "checking: what $unpriv may send to org.p11certd"
expect_allowed org.freedesktop.DBus.Peer Ping
expect_allowed org.p11certd1.Manager ListTokens
expect_allowed org.p11certd1.Token ChangePin ssa{sv} a b 0
expect_allowed org.p11certd1.Job Cancel
expect_allowed org.freedesktop.DBus.Properties GetAll s org.p11certd1.Manager
expect_allowed org.freedesktop.DBus.Introspectable Introspect
expect_allowed org.freedesktop.DBus.ObjectManager GetManagedObjects
expect_denied org.example.NotOurs Frobnicate
expect_denied org.p11certd1.Debug Crash

[[ $fail -eq 0 ]] && echo "PASS: bus policy" || echo "FAIL: bus policy"
exit $fail
