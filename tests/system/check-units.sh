#!/bin/bash
# tests/system/check-units.sh BUILDDIR
#
# (a) `systemd-analyze verify --man=no` on the configured units in
#     BUILDDIR/systemd must succeed and print nothing on stderr or stdout.
#
# verify refuses units whose ExecStart= binary does not exist, and the
# configured units point at the install location (@libexecdir@/p11certd,
# @bindir@/p11certctl), which is not installed while testing.  So the units
# are copied to a temporary directory and only the executable path of each
# ExecStart= is replaced by /bin/true (arguments kept); nothing else is
# changed.  Also checks that no @placeholder@ is left and that the D-Bus
# activation file and the unit agree on the daemon's path.
set -u

build=${1:?usage: check-units.sh BUILDDIR}
units=(p11certd.service p11certd-renew.service p11certd-renew.timer)
fail=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

for u in "${units[@]}"; do
  f=$build/systemd/$u
  if [[ ! -f $f ]]; then
    echo "FAIL: $f not configured"; exit 1
  fi
  if grep -n '@[A-Za-z_]*@' "$f"; then
    echo "FAIL: $u: unsubstituted @placeholder@"; fail=1
  fi
  sed -E 's|^(ExecStart=[-@:+!]*)[^ ]+|\1/bin/true|' "$f" > "$T/$u"
done

daemon_exec=$(sed -n 's/^ExecStart=//p' "$build/systemd/p11certd.service")
act_exec=$(sed -n 's/^Exec=//p' "$build/dbus/org.p11certd.service")
echo "checking: p11certd.service ExecStart=$daemon_exec matches activation file Exec=$act_exec"
if [[ $daemon_exec != "$act_exec" || $daemon_exec != /*/p11certd ]]; then
  echo "FAIL: ExecStart= and the activation file's Exec= differ"; fail=1
fi
grep -q '^SystemdService=p11certd.service$' "$build/dbus/org.p11certd.service" \
  || { echo "FAIL: activation file lacks SystemdService=p11certd.service"; fail=1; }
grep -q '^BusName=org.p11certd$' "$build/systemd/p11certd.service" \
  || { echo "FAIL: p11certd.service lacks BusName=org.p11certd"; fail=1; }

echo "checking: systemd-analyze verify --man=no ${units[*]} (ExecStart binaries replaced by /bin/true)"
(cd "$T" && systemd-analyze verify --man=no "${units[@]}") >"$T/out" 2>"$T/err"
rc=$?
if [[ $rc -ne 0 || -s $T/err || -s $T/out ]]; then
  echo "FAIL: systemd-analyze verify exited $rc with output:"
  cat "$T/out" "$T/err"
  fail=1
else
  echo "ok: verify clean ($(systemd-analyze --version | head -1))"
fi

[[ $fail -eq 0 ]] && echo "PASS: units" || echo "FAIL: units"
exit $fail
