#!/usr/bin/python3
"""Issue 4: EC P-256 enrollment end to end through the daemon, beside the
unavoidable parts measured alone, interleaved in the same run.

Daemon: Manager.Enroll {ca: est, login alice + OTP, storage token, token
        agent, pin, key_type ec-p256} to the real EST test server
        (tests/est/estserver.py on 127.0.0.1), timed from the call until the
        job's Finished signal arrives (the new certificate is then deleted
        again with DeleteCert, untimed, so every run sees the same token).
Parts, on a second SoftHSM token "parts":
  (a) key generation: `pkcs11-tool --keypairgen --key-type EC:prime256v1
      --login --pin` (includes process start and login) and in-process
      C_GenerateKeyPair through ctypes (session already logged in);
  (b) CSR signature: `openssl req -new` with a software P-256 key (process),
      and in-process SHA-256 + C_Sign (CKM_ECDSA) of a CSR-sized blob on the token;
  (c) the EST request alone: `curl --cacert ca.pem -u alice:OTP --data-binary
      @csr.b64 -H 'Content-Type: application/pkcs10' .../simpleenroll` with
      the CSR from (b);
  (d) for information: writing a certificate object (in-process C_CreateObject),
      and `curl .../cacerts` (the daemon also fetches the CA chain: one
      cacerts request per enrollment, as the EST server log shows).
Reports medians and the ratio daemon / sum of parts (in-process a+b + curl c,
and process a+b + curl c).
"""
import argparse
import base64
import os
import time

import benchlib as B
import p11ctypes

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=15, help="runs of each (default 15)")
    ap.add_argument("--before", help="another build directory whose daemon enrolls too, interleaved "
                                     "(its own bus, token and EST server)")
    a = ap.parse_args()
    B.need_root()
    otps = ["OTP-%d" % i for i in range(4 * a.n + 20)]
    pin = B.harness.PIN
    this_daemon = B.harness.DAEMON

    def daemon_side(name, binary, **profile):
        """An Env with token "agent", an EST server and profile "est", the daemon @binary."""
        env = B.new_env("bench-enroll" + name)
        env.add_token("agent")
        env.start_est(users={"alice": {"otps": otps}})
        env.add_est_profile("est", **profile)
        B.harness.DAEMON = binary
        env.start_daemon()
        B.harness.DAEMON = this_daemon
        timed = B.timed_enroller(env, pin)
        otp_iter = iter(otps)

        def enroll():
            return timed({"ca": "est", "login": "alice", "otp": next(otp_iter), "storage": "token",
                          "token": "pkcs11:token=agent", "pin": pin, "key_type": "ec-p256"})
        return env, enroll

    # the daemon before the change knows no http-auth key and always sent Basic at once
    before = daemon_side("-before", os.path.join(a.before, "daemon", "p11certd"), http_auth=None) if a.before else None
    env, daemon_enroll = daemon_side("", this_daemon)
    env.add_token("parts")
    otp_iter = iter(otps[2 * a.n + 10:])
    url = "https://127.0.0.1:%d/.well-known/est/simpleenroll" % env.est_port
    ca_pem = os.path.join(env.est_dir, "ca.pem")

    tok = p11ctypes.Token(B.harness.SOFTHSM, "parts", pin)
    key_pem = os.path.join(env.tmp, "sw-key.pem")
    B.run_timed(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key_pem])
    csr_der = os.path.join(env.tmp, "csr.der")
    csr_b64 = os.path.join(env.tmp, "csr.b64")
    _, cert = B.harness.make_cert("alice")
    cert_der = B.harness.der(cert)
    subject_der = cert.subject.public_bytes()

    def pkcs11_tool_keygen(i):
        obj_id = "%04x" % (0x1000 + i)
        dt, _ = B.run_timed(["pkcs11-tool", "--module", B.harness.SOFTHSM, "--token-label", "parts", "--login",
                             "--pin", pin, "--keypairgen", "--key-type", "EC:prime256v1", "--id", obj_id],
                            env=env.env)
        tok.destroy_id(bytes.fromhex(obj_id))
        return dt

    def ctypes_keygen(i):
        obj_id = (0x2000 + i).to_bytes(2, "big")
        t0 = time.perf_counter()
        hpub, hpriv = tok.keygen_p256(obj_id)
        dt = time.perf_counter() - t0
        return dt, hpub, hpriv

    def openssl_req():
        return B.run_timed(["openssl", "req", "-new", "-key", key_pem, "-subj", "/CN=alice", "-sha256",
                            "-outform", "DER", "-out", csr_der])[0]

    def ctypes_sign(hpriv):
        blob = open(csr_der, "rb").read()      # a CSR-sized message (the TBS is a little shorter)
        return B.timed(tok.sign, hpriv, blob)[0]

    def curl_est():
        with open(csr_b64, "wb") as f:
            f.write(base64.encodebytes(open(csr_der, "rb").read()))
        out = os.path.join(env.tmp, "est-reply.b64")
        dt, r = B.run_timed(["curl", "-sS", "-f", "--cacert", ca_pem, "-u", "alice:" + next(otp_iter),
                             "--data-binary", "@" + csr_b64, "-H", "Content-Type: application/pkcs10",
                             "-o", out, url])
        assert os.path.getsize(out) > 100, "EST reply too short"
        return dt

    def curl_cacerts():
        return B.run_timed(["curl", "-sS", "-f", "--cacert", ca_pem, "-o", os.path.join(env.tmp, "cacerts.b64"),
                            url.replace("simpleenroll", "cacerts")])[0]

    def ctypes_write(i):
        obj_id = (0x3000 + i).to_bytes(2, "big")
        t0 = time.perf_counter()
        h = tok.create_cert(cert_der, subject_der, obj_id, "bench %d" % i)
        dt = time.perf_counter() - t0
        tok.destroy(h)
        return dt

    # warm-up: one of everything
    daemon_enroll()
    if before:
        before[1]()
    pkcs11_tool_keygen(999)
    _, hp, hk = ctypes_keygen(999)
    tok.destroy(hp, hk)
    openssl_req()
    curl_est()
    requests_before = len(env.est_requests())

    res = {k: [] for k in ("daemon", "before", "p11tool_keygen", "ct_keygen", "openssl_req", "ct_sign", "curl",
                           "ct_write", "cacerts")}
    for i in range(a.n):
        if before and i % 2:
            res["before"].append(before[1]())
        res["daemon"].append(daemon_enroll())
        if before and not i % 2:
            res["before"].append(before[1]())
        res["p11tool_keygen"].append(pkcs11_tool_keygen(i))
        dt, hpub, hpriv = ctypes_keygen(i)
        res["ct_keygen"].append(dt)
        res["openssl_req"].append(openssl_req())
        res["ct_sign"].append(ctypes_sign(hpriv))
        tok.destroy(hpub, hpriv)
        res["curl"].append(curl_est())
        res["ct_write"].append(ctypes_write(i))
        res["cacerts"].append(curl_cacerts())
    tok.close()

    reqs = env.est_requests()[requests_before:]
    ops = {}
    for r in reqs:
        ops[r.get("op")] = ops.get(r.get("op"), 0) + 1

    m = {k: B.median(v) for k, v in res.items()}
    print("EC P-256 enrollment through the daemon vs its parts alone, N=%d each, interleaved" % a.n)
    print()
    rows = [("daemon before (--before) Enroll -> Finished", res["before"])] if before else []
    rows += [
        ("daemon Enroll -> Finished signal", res["daemon"]),
        ("(a) pkcs11-tool --keypairgen (process)", res["p11tool_keygen"]),
        ("(a) C_GenerateKeyPair in-process", res["ct_keygen"]),
        ("(b) openssl req, software key (process)", res["openssl_req"]),
        ("(b) SHA-256 + C_Sign ECDSA in-process", res["ct_sign"]),
        ("(c) curl EST simpleenroll (process)", res["curl"]),
        ("(d) C_CreateObject certificate (info)", res["ct_write"]),
        ("(d) curl EST cacerts (info)", res["cacerts"]),
    ]
    B.table(("measurement", "median ms", "p95 ms", "n"),
            [(name, B.ms(B.median(v)), B.ms(B.pct(v, 95)), len(v)) for name, v in rows])
    parts_inproc = m["ct_keygen"] + m["ct_sign"] + m["curl"]
    parts_proc = m["p11tool_keygen"] + m["openssl_req"] + m["curl"]
    parts_write = parts_inproc + m["ct_write"]
    parts_all = parts_write + m["cacerts"]
    print()
    sides = [("daemon", "daemon / sum")] + ([("before", "before / sum")] if before else [])
    B.table(("sum of part medians", "ms") + tuple(h for _, h in sides), [
        ("in-process keygen + C_Sign + curl", B.ms(parts_inproc)) + tuple(m[k] / parts_inproc for k, _ in sides),
        ("  ... + C_CreateObject", B.ms(parts_write)) + tuple(m[k] / parts_write for k, _ in sides),
        ("  ... + C_CreateObject + curl cacerts", B.ms(parts_all)) + tuple(m[k] / parts_all for k, _ in sides),
        ("pkcs11-tool + openssl req + curl", B.ms(parts_proc)) + tuple(m[k] / parts_proc for k, _ in sides),
    ])
    print("\nrequests counted by the EST server in the timed runs (daemon + curl): %s"
          % ", ".join("%s %d" % kv for kv in sorted(ops.items())))
    print("daemon overhead over in-process parts: %.1f ms per enrollment" % B.ms(m["daemon"] - parts_inproc))
    line = ("RESULT: enroll ec-p256: daemon median %.1f ms vs sum of parts %.1f ms (keygen+sign in-process + curl "
            "+ C_CreateObject), ratio daemon/parts %.2f; vs process parts %.1f ms, ratio %.2f"
            % (B.ms(m["daemon"]), B.ms(parts_write), m["daemon"] / parts_write, B.ms(parts_proc),
               m["daemon"] / parts_proc))
    if before:
        line += "; before: %.1f ms, ratio %.2f" % (B.ms(m["before"]), m["before"] / parts_write)
    print(line)


if __name__ == "__main__":
    main()
