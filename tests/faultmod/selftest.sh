#!/bin/bash
# Self-test of the p11c-fault PKCS#11 wrapper module.
# Usage: selftest.sh /path/to/p11c-fault.so
# Needs softhsm2-util, pkcs11-tool and SoftHSM2 (or P11C_FAULT_MODULE).
set -u

MOD=${1:?usage: $0 /path/to/p11c-fault.so}
case $MOD in /*) ;; *) MOD=$PWD/$MOD ;; esac
[ -f "$MOD" ] || { echo "no such module: $MOD" >&2; exit 2; }
for tool in softhsm2-util pkcs11-tool; do
  command -v $tool >/dev/null || { echo "SKIP: $tool not found" >&2; exit 77; }
done

T=$(mktemp -d /tmp/p11c-fault-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir "$T/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$T/tokens" > "$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
unset P11C_FAULT_MODULE
export P11C_FAULT_FILE=$T/faults
export P11C_FAULT_LOG=$T/calls.log
PIN=Passw0rdA

softhsm2-util --init-token --free --label t --pin $PIN --so-pin S0-Passw0rd >/dev/null ||
  { echo "softhsm2-util --init-token failed" >&2; exit 2; }

passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2-}" ] && sed 's/^/#   /' <<<"$2"; }
faults() { printf '%s\n' "$@" > "$T/faults.new" && mv "$T/faults.new" "$T/faults"; }
nofaults() { rm -f "$T/faults"; }
p11() { pkcs11-tool --module "$MOD" "$@" 2>&1; }
login_O() { p11 --login --pin $PIN -O; }
# Count lines of the call log starting with "$1 " (and matching optional $2)
calls() { grep -c "^$1 rv=${2-}" "$T/calls.log" 2>/dev/null || true; }

# 1. pass-through
nofaults
out=$(login_O); rc=$?
[ $rc = 0 ] && ok "no faults: login + -O works" || fail "no faults: login + -O works (rc=$rc)" "$out"
out=$(p11 -L); rc=$?
[ $rc = 0 ] && grep -q 'token label *: t' <<<"$out" && ok "no faults: -L shows token" ||
  fail "no faults: -L shows token" "$out"

# 2. keygen + sign go through the wrapper too (C_GenerateKeyPair, C_SignInit, C_Sign)
out=$(p11 --login --pin $PIN --keypairgen --key-type EC:prime256v1 --id 01 --label k1); rc=$?
[ $rc = 0 ] && ok "keypairgen through wrapper" || fail "keypairgen through wrapper (rc=$rc)" "$out"
printf '%032d' 7 > "$T/data"   # 32 bytes, as if a SHA-256 digest
out=$(p11 --login --pin $PIN --sign --id 01 -m ECDSA -i "$T/data" -o "$T/sig"); rc=$?
[ $rc = 0 ] && [ -s "$T/sig" ] && ok "sign through wrapper" || fail "sign through wrapper (rc=$rc)" "$out"

# 3. rv= on every call
faults 'C_Login rv=CKR_PIN_LOCKED'
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_PIN_LOCKED <<<"$out" && ok "rv=CKR_PIN_LOCKED fails login" ||
  fail "rv=CKR_PIN_LOCKED fails login (rc=$rc)" "$out"
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_PIN_LOCKED <<<"$out" && ok "rv= without count is permanent" ||
  fail "rv= without count is permanent (rc=$rc)" "$out"

# 4. hex rv
faults 'C_Login rv=0xa0'
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_PIN_INCORRECT <<<"$out" && ok "rv=0xa0 (hex)" || fail "rv=0xa0 (hex) (rc=$rc)" "$out"

# 5. count=1 (persisted across processes by rewriting the fault file)
faults '# comment line' 'C_Login rv=CKR_PIN_INCORRECT count=1   # trailing comment'
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_PIN_INCORRECT <<<"$out" && ok "count=1: first login fails" ||
  fail "count=1: first login fails (rc=$rc)" "$out"
grep -q 'count=0' "$T/faults" && grep -q '^# comment line$' "$T/faults" &&
  ok "count=1: file rewritten with count=0, comments kept" ||
  fail "count=1: file rewritten with count=0, comments kept" "$(cat "$T/faults")"
out=$(login_O); rc=$?
[ $rc = 0 ] && ok "count=1: second login works" || fail "count=1: second login works (rc=$rc)" "$out"

# 6. after=1: first C_Login passes, then fails
faults 'C_Login rv=CKR_DEVICE_ERROR after=1 count=1'
out=$(login_O); rc1=$?
out2=$(login_O); rc2=$?
out3=$(login_O); rc3=$?
[ $rc1 = 0 ] && [ $rc2 != 0 ] && grep -q CKR_DEVICE_ERROR <<<"$out2" && [ $rc3 = 0 ] &&
  ok "after=1 count=1: pass, fail, pass" ||
  fail "after=1 count=1: pass, fail, pass (rc=$rc1,$rc2,$rc3)" "$out$out2$out3"

# 7. token flags
faults 'C_GetTokenInfo flags+=CKF_USER_PIN_LOCKED'
out=$(p11 -L)
grep -q 'user PIN locked' <<<"$out" && ok "flags+=CKF_USER_PIN_LOCKED shown by -L" ||
  fail "flags+=CKF_USER_PIN_LOCKED shown by -L" "$out"
faults 'C_GetTokenInfo flags+=CKF_USER_PIN_FINAL_TRY|CKF_USER_PIN_COUNT_LOW'
out=$(p11 -L)
grep -q 'final user PIN try' <<<"$out" && grep -q 'user PIN count low' <<<"$out" &&
  ok "flags+=A|B" || fail "flags+=A|B" "$out"
faults 'C_GetTokenInfo flags-=CKF_LOGIN_REQUIRED'
out=$(p11 -L)
grep -q 'token label' <<<"$out" && ! grep -q 'login required' <<<"$out" &&
  ok "flags-=CKF_LOGIN_REQUIRED" || fail "flags-=CKF_LOGIN_REQUIRED" "$out"

# 8. delay
faults 'C_GetTokenInfo delay=1500'
t0=$(date +%s%N); out=$(p11 -L); rc=$?; t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[ $rc = 0 ] && [ $ms -ge 1500 ] && ok "delay=1500 takes >= 1500 ms ($ms ms)" ||
  fail "delay=1500 takes >= 1500 ms ($ms ms, rc=$rc)" "$out"

# 9. token yanked
faults '* rv=CKR_DEVICE_REMOVED'
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_DEVICE_REMOVED <<<"$out" && ok "* rv=CKR_DEVICE_REMOVED makes -O fail" ||
  fail "* rv=CKR_DEVICE_REMOVED makes -O fail (rc=$rc)" "$out"
out=$(p11 -I); rc=$?
[ $rc = 0 ] && ok "* does not touch C_Initialize/C_GetInfo" || fail "* does not touch C_Initialize/C_GetInfo (rc=$rc)" "$out"

# 10. token absent
faults 'C_GetSlotList hide=1' 'C_GetSlotInfo absent=1'
out=$(p11 -L); rc=$?
! grep -q 'token label' <<<"$out" && grep -q '(empty)' <<<"$out" &&
  ok "hide=1 + absent=1: -L shows no token present" || fail "hide=1 + absent=1: -L shows no token present" "$out"
out=$(login_O); rc=$?
[ $rc != 0 ] && ok "hide=1: -O finds no token" || fail "hide=1: -O finds no token (rc=$rc)" "$out"

# 11. change while running is picked up; missing file = no faults
nofaults
out=$(login_O); rc=$?
[ $rc = 0 ] && ok "fault file removed: login works again" || fail "fault file removed: login works again (rc=$rc)" "$out"

# 12. garbage lines are ignored with one warning
faults 'this is garbage' 'C_Bogus rv=CKR_OK' 'C_Login rv=NOT_A_RV' 'C_Login frobnicate=1' \
       'C_Login rv=CKR_PIN_EXPIRED'
out=$(login_O); rc=$?
[ $rc != 0 ] && grep -q CKR_PIN_EXPIRED <<<"$out" && ok "garbage lines ignored, valid rule applied" ||
  fail "garbage lines ignored, valid rule applied (rc=$rc)" "$out"
n=$(grep -c 'p11c-fault: ignoring' <<<"$out")
[ "$n" = 4 ] && ok "one warning per garbage line ($n)" || fail "one warning per garbage line ($n)" "$out"

# 12b. grow= and overcount= only where they mean something
faults 'C_Login grow=4' 'C_Sign overcount=2' 'C_FindObjects overcount=0' 'C_GetAttributeValue grow=x'
out=$(login_O); rc=$?
n=$(grep -c 'p11c-fault: ignoring' <<<"$out")
[ $rc = 0 ] && [ "$n" = 4 ] && ok "grow=/overcount= on the wrong call or out of range ignored ($n warnings)" ||
  fail "grow=/overcount= on the wrong call or out of range ignored (rc=$rc, $n warnings)" "$out"

# 13. call log
nofaults
: > "$T/calls.log"
login_O >/dev/null
faults 'C_Login rv=CKR_PIN_INCORRECT'
login_O >/dev/null
n_ok=$(calls C_Login 0x00000000); n_bad=$(calls C_Login 0x000000a0); n_all=$(calls C_Login)
[ "$n_ok" = 1 ] && [ "$n_bad" = 1 ] && [ "$n_all" = 2 ] && ok "call log: 2 C_Login lines (1 ok, 1 0xa0)" ||
  fail "call log: 2 C_Login lines (got ok=$n_ok bad=$n_bad all=$n_all)" "$(cat "$T/calls.log")"
bad=$(grep -Evc '^C_[A-Za-z]+(@[!-~]+)? rv=0x[0-9a-f]{8}$' "$T/calls.log")
[ "$bad" = 0 ] && ok "call log lines well-formed" || fail "call log lines well-formed" "$(cat "$T/calls.log")"
n_tok=$(grep -c '^C_Login@' "$T/calls.log"); n_named=$(grep -c "^C_Login@t " "$T/calls.log")
[ "$n_tok" = 2 ] && [ "$n_named" = 2 ] && ok "call log: each C_Login names its token" ||
  fail "call log: each C_Login names its token (got $n_tok, $n_named as t)" "$(cat "$T/calls.log")"

# 14. bad real module -> C_GetFunctionList fails cleanly
out=$(P11C_FAULT_MODULE=$T/nonexistent.so p11 -L); rc=$?
[ $rc != 0 ] && grep -q 'cannot load real module' <<<"$out" && ok "missing real module reported" ||
  fail "missing real module reported (rc=$rc)" "$out"

echo "$passed passed, $failed failed"
[ $failed = 0 ]
