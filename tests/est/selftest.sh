#!/bin/bash
# Self-test of tests/est/estserver.py: start it in a temporary directory and
# enroll against it as a generic EST client would, with curl and openssl only.
# Prints "N passed, N failed"; exits non-zero on any failure.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/est-selftest.XXXXXX)
D=$T/srv
SPID=
PASS=0
FAIL=0

cleanup() {
    if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
    if [ "$FAIL" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$T"; else echo "kept $T"; fi
}
trap cleanup EXIT

ok()   { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $1"; }
# check NAME COMMAND...: the command's exit status decides.
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi; }
# expect NAME WANTED ACTUAL
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (wanted '$2', got '$3')"; fi; }

# ------------------------------------------------------------ server

mkdir -p "$D"
cat > "$D/users.json" <<'EOF'
{"alice": {"otps": ["OTP-1", "OTP-2", "OTP-3", "OTP-4", "OTP-5", "OTP-6",
                    "OTP-7", "OTP-8", "OTP-9", "OTP-10", "OTP-11", "OTP-12",
                    "OTP-13", "OTP-14", "OTP-15", "OTP-16"]}}
EOF
timeout 300 /usr/bin/python3 "$HERE/estserver.py" --dir "$D" --port 0 \
    --ready-file "$T/ready" 2>"$T/server.err" &
SPID=$!

deadline=$((SECONDS + 30))
until [ -s "$T/ready" ]; do
    if ! kill -0 "$SPID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "server did not start"; cat "$T/server.err"; FAIL=1; exit 1
    fi
    sleep 0.05
done
PORT=$(cat "$T/ready")
BASE=https://127.0.0.1:$PORT/.well-known/est
echo "# server on port $PORT, dir $D"

# control JSON: set the misbehaviour switches (atomically)
control() { printf '%s\n' "$1" > "$D/control.json.tmp" && mv "$D/control.json.tmp" "$D/control.json"; }

# req OUT URL [curl args...]: body to OUT, headers to OUT.h, prints the status
req() {
    local out=$1 url=$2; shift 2
    curl -sS --cacert "$D/ca.pem" --max-time 20 -o "$out" -D "$out.h" \
        -w '%{http_code}' "$@" "$url" 2>"$out.err"
}
# post OUT OP CSR [curl args...]   (request content type: $CT or application/pkcs10)
post() {
    local out=$1 op=$2 csr=$3; shift 3
    req "$out" "$BASE/$op" --data-binary "@$csr" \
        -H "Content-Type: ${CT:-application/pkcs10}" "$@"
}
header() { tr -d '\r' < "$1.h" | sed -n "s/^$2: //Ip" | tail -n 1; }
# p7certs IN OUT: base64 PKCS#7 certs-only -> PEM certificates
p7certs() { openssl base64 -d -in "$1" | openssl pkcs7 -inform DER -print_certs -out "$2"; }
pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey; }
pubkey_of_key()  { openssl pkey -in "$1" -pubout; }
same_key() { [ "$(pubkey_of_cert "$1")" = "$(pubkey_of_key "$2")" ]; }
lines_max_64() { awk 'length($0) > 64 { bad = 1 } END { exit bad }' "$1"; }
# newcsr NAME SUBJECT [openssl req args]: NAME.key, NAME.der, NAME.b64
newcsr() {
    local n=$T/$1 subj=$2; shift 2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$n.key" -subj "$subj" -outform DER -out "$n.der" "$@" 2>/dev/null &&
    openssl base64 -in "$n.der" -out "$n.b64"
}
log_count() { grep -c "$1" "$D/requests.log"; }

# ------------------------------------------------------------ cacerts

code=$(req "$T/ca.b64" "$BASE/cacerts")
expect "cacerts: 200" 200 "$code"
expect "cacerts: content type" "application/pkcs7-mime" "$(header "$T/ca.b64" Content-Type)"
expect "cacerts: transfer encoding" "base64" "$(header "$T/ca.b64" Content-Transfer-Encoding)"
check "cacerts: decodes as PKCS#7" p7certs "$T/ca.b64" "$T/cacerts.pem"
expect "cacerts: holds the CA certificate" \
    "$(openssl x509 -in "$D/ca.pem" -noout -fingerprint -sha256)" \
    "$(openssl x509 -in "$T/cacerts.pem" -noout -fingerprint -sha256 2>&1)"
code=$(req "$T/ca2.b64" "$BASE/somelabel/cacerts")
expect "cacerts with label: 200" 200 "$code"
check "CA has CA:TRUE" sh -c "openssl x509 -in '$D/ca.pem' -noout -text | grep -q 'CA:TRUE'"
check "TLS to localhost name verifies" curl -sS --cacert "$D/ca.pem" -o /dev/null \
    "https://localhost:$PORT/.well-known/est/cacerts"
code=$(req "$T/nf" "$BASE/csrattrs")
expect "csrattrs: 404 (not supported)" 404 "$code"
code=$(req "$T/m" "$BASE/simpleenroll")
expect "GET simpleenroll: 405" 405 "$code"

# ------------------------------------------------------------ simpleenroll

newcsr a "/CN=alice/O=Example" -addext "subjectAltName=email:alice@example.org"
code=$(post "$T/e1" simpleenroll "$T/a.b64" -u alice:OTP-1)
expect "simpleenroll: 200" 200 "$code"
expect "simpleenroll: content type" "application/pkcs7-mime; smime-type=certs-only" \
    "$(header "$T/e1" Content-Type)"
expect "simpleenroll: transfer encoding" base64 "$(header "$T/e1" Content-Transfer-Encoding)"
check "simpleenroll: base64 lines <= 64 chars" lines_max_64 "$T/e1"
check "simpleenroll: decodes as PKCS#7" p7certs "$T/e1" "$T/a.pem"
check "simpleenroll: verifies against ca.pem" openssl verify -CAfile "$D/ca.pem" "$T/a.pem"
check "simpleenroll: certificate key = CSR key" same_key "$T/a.pem" "$T/a.key"
expect "simpleenroll: subject copied" "subject=CN = alice, O = Example" \
    "$(openssl x509 -in "$T/a.pem" -noout -subject)"
check "simpleenroll: subjectAltName copied" sh -c \
    "openssl x509 -in '$T/a.pem' -noout -ext subjectAltName | grep -q 'email:alice@example.org'"
check "simpleenroll: clientAuth EKU" sh -c \
    "openssl x509 -in '$T/a.pem' -noout -ext extendedKeyUsage | grep -q 'TLS Web Client Authentication'"
check "simpleenroll: valid for about a day" sh -c \
    "openssl x509 -in '$T/a.pem' -noout -checkend 82800 && ! openssl x509 -in '$T/a.pem' -noout -checkend 90000"

code=$(post "$T/e2" simpleenroll "$T/a.b64" -u alice:OTP-1)
expect "reused OTP: 401" 401 "$code"
expect "reused OTP: Basic challenge" 'Basic realm="est"' "$(header "$T/e2" WWW-Authenticate)"
code=$(post "$T/e3" simpleenroll "$T/a.b64" -u alice:WRONG)
expect "wrong password: 401" 401 "$code"
code=$(post "$T/e4" simpleenroll "$T/a.b64" -u mallory:OTP-2)
expect "unknown user: 401" 401 "$code"
code=$(post "$T/e5" simpleenroll "$T/a.b64")
expect "no credentials: 401" 401 "$code"
check "consumed OTP recorded in users.json" grep -q '"used"' "$D/users.json"

# one-line base64 body, with a label
openssl base64 -A -in "$T/a.der" -out "$T/a1.b64"
code=$(post "$T/e6" mylabel/simpleenroll "$T/a1.b64" -u alice:OTP-2)
expect "simpleenroll, label + one-line base64: 200" 200 "$code"

# broken requests
code=$(CT=application/x-www-form-urlencoded post "$T/e7" simpleenroll "$T/a.b64" -u alice:OTP-3)
expect "wrong request content type: 415" 415 "$code"
printf 'not*base64!' > "$T/junk.b64"
code=$(post "$T/e8" simpleenroll "$T/junk.b64" -u alice:OTP-3)
expect "non-base64 CSR: 400" 400 "$code"
cp "$T/a.der" "$T/bad.der"
size=$(stat -c %s "$T/bad.der")
last=$(od -An -tu1 -j $((size - 1)) -N1 "$T/bad.der" | tr -d ' ')
# shellcheck disable=SC2059  # the octal escape is the point
printf "\\$(printf %03o $(( (last + 1) % 256 )))" |
    dd of="$T/bad.der" bs=1 seek=$((size - 1)) conv=notrunc 2>/dev/null
openssl base64 -in "$T/bad.der" -out "$T/bad.b64"
code=$(post "$T/e9" simpleenroll "$T/bad.b64" -u alice:OTP-3)
expect "CSR with a bad signature: 400" 400 "$code"

# HTTP transport variants a client may use
code=$(post "$T/e10" simpleenroll "$T/a.b64" -u alice:OTP-12 -H 'Transfer-Encoding: chunked')
expect "chunked request body: 200" 200 "$code"
code=$(post "$T/e11" simpleenroll "$T/a.b64" -u alice:OTP-13 -H 'Expect: 100-continue')
expect "Expect: 100-continue: 200" 200 "$code"
code=$(curl -sS --cacert "$D/ca.pem" -w '%{http_code}:%{num_connects} ' \
       -o /dev/null "$BASE/cacerts" -o /dev/null "$BASE/cacerts")
expect "keep-alive: two requests, one connection" "200:1 200:0 " "$code"

# the same OTP from 5 clients at once: exactly one certificate
pids=()
for i in 1 2 3 4 5; do
    post "$T/p$i" simpleenroll "$T/a.b64" -u alice:OTP-11 > "$T/p$i.code" &
    pids+=($!)
done
wait "${pids[@]}"
expect "parallel use of one OTP: one 200, four 401" "200 401 401 401 401" \
    "$(for f in "$T"/p?.code; do cat "$f"; echo; done | sort | xargs)"

# ------------------------------------------------------------ simplereenroll

newcsr r "/CN=alice/O=Example"
code=$(post "$T/r1" simplereenroll "$T/r.b64" --cert "$T/a.pem" --key "$T/a.key")
expect "simplereenroll with client cert: 200" 200 "$code"
check "simplereenroll: decodes" p7certs "$T/r1" "$T/r.pem"
check "simplereenroll: verifies" openssl verify -CAfile "$D/ca.pem" "$T/r.pem"
check "simplereenroll: new key" same_key "$T/r.pem" "$T/r.key"
code=$(post "$T/r2" simplereenroll "$T/r.b64")
case $code in 4??) ok "simplereenroll without client cert: 4xx ($code)";;
              *) bad "simplereenroll without client cert: 4xx (got $code)";; esac
newcsr o "/CN=bob"
code=$(post "$T/r3" simplereenroll "$T/o.b64" --cert "$T/a.pem" --key "$T/a.key")
expect "simplereenroll, other subject: 400" 400 "$code"
check "simplereenroll, other subject: says why" grep -q "does not match" "$T/r3"
control '{"other_ca": 1}'
post "$T/ox" simpleenroll "$T/a.b64" -u alice:OTP-10 >/dev/null
control '{}'
p7certs "$T/ox" "$T/ox.pem"
post "$T/r4" simplereenroll "$T/r.b64" --cert "$T/ox.pem" --key "$T/a.key" >/dev/null; rc=$?
check "simplereenroll, client cert from another CA: TLS refused" test "$rc" -ne 0
check "simplereenroll, refused handshake logged" grep -q '"event": "tls-handshake-failed"' "$D/requests.log"
check "log records the client certificate" grep -q '"client_cert": true' "$D/requests.log"

# ------------------------------------------------------------ misbehaviour

control '{"accepted_202": 1, "retry_after": 2}'
code=$(post "$T/s1" simpleenroll "$T/a.b64" -u alice:OTP-3)
expect "202 switch: 202" 202 "$code"
expect "202 switch: Retry-After" 2 "$(header "$T/s1" Retry-After)"
code=$(post "$T/s2" simpleenroll "$T/a.b64" -u alice:OTP-3)
expect "202 switch: same OTP + CSR then 200" 200 "$code"
check "202 switch: certificate after retry" p7certs "$T/s2" "$T/s2.pem"
code=$(post "$T/s3" simpleenroll "$T/a.b64" -u alice:OTP-3)
expect "202 switch: OTP used once only" 401 "$code"

control '{"error_500": 2}'
n0=$(wc -l < "$D/requests.log")
c1=$(post "$T/f1" simpleenroll "$T/a.b64" -u alice:OTP-4)
c2=$(post "$T/f2" simpleenroll "$T/a.b64" -u alice:OTP-4)
c3=$(post "$T/f3" simpleenroll "$T/a.b64" -u alice:OTP-4)
expect "500 switch: two 500s then 200" "500 500 200" "$c1 $c2 $c3"
check "500 switch: count used up in control.json" grep -q '"error_500": 0' "$D/control.json"
expect "500 switch: exactly three attempts logged" 3 \
    "$(tail -n +$((n0 + 1)) "$D/requests.log" | grep -c '"path": "/.well-known/est/simpleenroll"')"

control '{"close_connection": 1}'
post "$T/c1" simpleenroll "$T/a.b64" -u alice:OTP-5 >/dev/null; rc=$?
check "close_connection: curl fails" test "$rc" -ne 0
code=$(post "$T/c2" simpleenroll "$T/a.b64" -u alice:OTP-5)
expect "close_connection: then 200" 200 "$code"

control '{"close_connection": 1, "apply_to_cacerts": true}'
req "$T/c3" "$BASE/cacerts" >/dev/null; rc=$?
check "close_connection on cacerts: curl fails" test "$rc" -ne 0
control '{"error_500": 1}'
code=$(req "$T/c4" "$BASE/cacerts")
expect "error_500 without apply_to_cacerts: cacerts still 200" 200 "$code"
control '{}'

control '{"garbage_base64": 1}'
code=$(post "$T/g1" simpleenroll "$T/a.b64" -u alice:OTP-6)
expect "garbage_base64: 200" 200 "$code"
check "garbage_base64: does not decode" sh -c "! (openssl base64 -d -in '$T/g1' | openssl pkcs7 -inform DER -noout)"

control '{"wrong_content_type": 1}'
code=$(post "$T/w1" simpleenroll "$T/a.b64" -u alice:OTP-6)
expect "wrong_content_type: 200" 200 "$code"
expect "wrong_content_type: text/html" "text/html; charset=utf-8" "$(header "$T/w1" Content-Type)"

control '{"wrong_key": 1}'
code=$(post "$T/k1" simpleenroll "$T/a.b64" -u alice:OTP-6)
expect "wrong_key: 200" 200 "$code"
p7certs "$T/k1" "$T/k1.pem"
check "wrong_key: CA-signed" openssl verify -CAfile "$D/ca.pem" "$T/k1.pem"
check "wrong_key: key differs from CSR" sh -c "! [ \"\$(openssl x509 -in '$T/k1.pem' -noout -pubkey)\" = \"\$(openssl pkey -in '$T/a.key' -pubout)\" ]"

control '{"other_ca": 1}'
code=$(post "$T/x1" simpleenroll "$T/a.b64" -u alice:OTP-6)
expect "other_ca: 200" 200 "$code"
p7certs "$T/x1" "$T/x1.pem"
check "other_ca: does not verify against ca.pem" sh -c "! openssl verify -CAfile '$D/ca.pem' '$T/x1.pem'"
check "other_ca: verifies against other-ca.pem" openssl verify -CAfile "$D/other-ca.pem" "$T/x1.pem"
code=$(post "$T/x2" simpleenroll "$T/a.b64" -u alice:OTP-6)
expect "misbehaviour kept the OTP; next request 200" 200 "$code"

control '{"slow": 1, "slow_seconds": 3}'
post "$T/sl1" simpleenroll "$T/a.b64" -u alice:OTP-7 --max-time 1 >/dev/null; rc=$?
expect "slow: client times out (curl 28)" 28 "$rc"
deadline=$((SECONDS + 10))
until grep -q '"slow_seconds"' "$D/requests.log" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
check "slow: server saw the client go and issued nothing" sh -c \
    "grep '\"slow_seconds\"' '$D/requests.log' | grep -q 'client went away'"
code=$(post "$T/sl2" simpleenroll "$T/a.b64" -u alice:OTP-7)
expect "slow: the OTP survived the abandoned request" 200 "$code"

# ------------------------------------------------------------ digest

control '{"auth": "digest"}'
code=$(post "$T/d1" simpleenroll "$T/a.b64" --digest -u alice:OTP-8)
expect "digest: 200" 200 "$code"
check "digest: certificate decodes" p7certs "$T/d1" "$T/d1.pem"
code=$(post "$T/d2" simpleenroll "$T/a.b64" --digest -u alice:OTP-8)
expect "digest: reused OTP 401" 401 "$code"
check "digest: challenge is Digest MD5 qop=auth" sh -c \
    "tr -d '\r' < '$T/d2.h' | grep -i '^WWW-Authenticate: Digest realm=\"est\", qop=\"auth\", algorithm=MD5, nonce='"
code=$(post "$T/d3" simpleenroll "$T/a.b64" --digest -u alice:WRONG)
expect "digest: wrong password 401" 401 "$code"
code=$(post "$T/d4" simpleenroll "$T/a.b64" -u alice:OTP-9)
expect "digest mode: Basic credentials 401" 401 "$code"
control '{}'

# ------------------------------------------------------------ RSA key
openssl req -new -newkey rsa:2048 -nodes -keyout "$T/rsa.key" -subj /CN=alice \
    -outform DER -out "$T/rsa.der" 2>/dev/null && openssl base64 -in "$T/rsa.der" -out "$T/rsa.b64"
code=$(post "$T/rs1" simpleenroll "$T/rsa.b64" -u alice:OTP-14)
expect "RSA-2048 CSR: 200" 200 "$code"
p7certs "$T/rs1" "$T/rs1.pem"
check "RSA-2048 CSR: certificate key = CSR key" same_key "$T/rs1.pem" "$T/rsa.key"

# ------------------------------------------------------------ log, shutdown

check "log never contains an OTP" sh -c "! grep -q 'OTP-' '$D/requests.log'"
check "log is one JSON object per line" sh -c \
    "grep -vc '^{.*}\$' '$D/requests.log' | grep -qx 0"
kill "$SPID"; wait "$SPID"; rc=$?; SPID=
expect "SIGTERM: clean exit" 0 "$rc"

# ------------------------------------------------------------ second server:
# --digest on the command line, --validity 1 (expired client certificates)
D2=$T/srv2
mkdir -p "$D2"
echo '{"bob": {"otps": ["B-1"]}}' > "$D2/users.json"
timeout 120 /usr/bin/python3 "$HERE/estserver.py" --dir "$D2" --ready-file "$T/ready2" \
    --digest --validity 1 2>"$T/server2.err" &
SPID=$!
deadline=$((SECONDS + 30))
until [ -s "$T/ready2" ] || ! kill -0 "$SPID" 2>/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
BASE=https://127.0.0.1:$(cat "$T/ready2")/.well-known/est
D=$D2
newcsr b /CN=bob
code=$(post "$T/b1" simpleenroll "$T/b.b64" -u bob:B-1)
expect "--digest: Basic refused" 401 "$code"
code=$(post "$T/b2" simpleenroll "$T/b.b64" --digest -u bob:B-1)
expect "--digest: Digest accepted" 200 "$code"
p7certs "$T/b2" "$T/b.pem"
check "--digest: separate CA per directory" sh -c "! openssl verify -CAfile '$T/srv/ca.pem' '$T/b.pem'"
deadline=$((SECONDS + 10))
until ! openssl x509 -in "$T/b.pem" -noout -checkend 0 >/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
check "--validity 1: certificate expired" sh -c "! openssl x509 -in '$T/b.pem' -noout -checkend 0"
post "$T/b3" simplereenroll "$T/b.b64" --cert "$T/b.pem" --key "$T/b.key" >/dev/null; rc=$?
check "expired client certificate: TLS refused" test "$rc" -ne 0
check "expired client certificate: logged" grep -q 'certificate has expired' "$D2/requests.log"
kill "$SPID"; wait "$SPID"; rc=$?; SPID=
expect "second server: SIGTERM clean exit" 0 "$rc"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
