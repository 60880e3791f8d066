#!/bin/bash
# tests/system/check-desktop.sh DESKTOP AUTOSTART METAINFO
# The desktop app's launcher, autostart entry and AppStream metainfo (as
# built, translations merged) pass desktop-file-validate and
# appstreamcli validate; the autostart entry starts the app without a window
# (--background) and the launcher is D-Bus activatable.
set -u
fail=0
for f in "$1" "$2"; do
  if out=$(desktop-file-validate "$f" 2>&1) && [ -z "$out" ]; then
    echo "ok: desktop-file-validate $(basename "$f")"
  else
    echo "FAIL: desktop-file-validate $f:"; echo "$out"; fail=1
  fi
done
if out=$(appstreamcli validate --no-net --pedantic "$3" 2>&1); then
  echo "ok: appstreamcli validate $(basename "$3")"
else
  echo "FAIL: appstreamcli validate $3:"; echo "$out"; fail=1
fi
grep -q '^Exec=.*p11certd-tokens --background$' "$2" || { echo "FAIL: autostart entry does not use --background"; fail=1; }
grep -q '^DBusActivatable=true$' "$1" || { echo "FAIL: launcher is not DBusActivatable"; fail=1; }
exit $fail
