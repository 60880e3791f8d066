#!/bin/bash
# tests/system/check-security.sh BUILDDIR
#
# (b) `systemd-analyze security --offline=yes` exposure of the configured
#     units: p11certd.service <= 2.5, p11certd-renew.service <= 0.5.
#
# --threshold= takes the exposure in tenths (measured on systemd 252: a
# unit rated 1.9 passes --threshold=19 and fails --threshold=18), so 25
# means 2.5.  The script also parses the printed "Overall exposure level"
# and compares it itself.  Units are copied with the ExecStart= binary
# replaced by /bin/true, as in check-units.sh (the install paths do not
# exist at test time).
set -u

build=${1:?usage: check-security.sh BUILDDIR}
declare -A limit=([p11certd.service]=25 [p11certd-renew.service]=5)
fail=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

for u in p11certd.service p11certd-renew.service; do
  sed -E 's|^(ExecStart=[-@:+!]*)[^ ]+|\1/bin/true|' "$build/systemd/$u" > "$T/$u"
done

for u in p11certd.service p11certd-renew.service; do
  max=${limit[$u]}
  echo "checking: systemd-analyze security --offline=yes --threshold=$max $u (exposure <= $((max / 10)).$((max % 10)))"
  (cd "$T" && systemd-analyze security --offline=yes --threshold="$max" "$u") >"$T/out" 2>&1
  rc=$?
  line=$(grep 'Overall exposure level' "$T/out")
  score=$(sed -E 's/.*: ([0-9]+)\.([0-9]).*/\1\2/' <<<"$line")
  echo "  $line"
  if [[ ! $score =~ ^[0-9]+$ ]]; then
    echo "FAIL: $u: no exposure level in output:"; cat "$T/out"; fail=1; continue
  fi
  if [[ $rc -ne 0 || $((10#$score)) -gt $max ]]; then
    echo "FAIL: $u: exposure too high (rc $rc); items that count:"
    grep '✗' "$T/out"
    fail=1
  else
    echo "ok: $u"
  fi
done

[[ $fail -eq 0 ]] && echo "PASS: security" || echo "FAIL: security"
exit $fail
