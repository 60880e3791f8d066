#!/usr/bin/python3
"""Issue 16: SCEP enrollment end to end through the daemon beside its parts
alone, and EST enrollment with HTTP Digest vs Basic — interleaved, same run.

SCEP (Debian's real `scepserver` on 127.0.0.1, -challenge):
  daemon: Manager.Enroll {ca: scep, otp: the challenge password, storage
          token, key_type rsa-2048} → the job's Finished signal (GetCACaps +
          GetCACert + RSA keygen on the token + CSR and signer certificate
          signed there + PKCSReq + C_Decrypt of the reply + writing); the
          certificate is deleted again, untimed.
  parts:  (a) RSA-2048 C_GenerateKeyPair on a second SoftHSM token,
              in-process (ctypes, session logged in);
          (b) the server's round trip measured with the package's own client:
              `scepclient` with a ready software key (a process per run: its
              GetCACert + PKCSReq + CSR/signing in software), in a fresh
              directory each time (it reuses csr.pem/self.pem it finds).
EST (tests/est/estserver.py, its auth switched between runs):
  Basic (http-auth=basic: one request), Digest against the strict server
  (http-auth=digest: challenge + answer), auto against a Basic server
  (probe + Basic) — each an EC P-256 Enroll → Finished.
"""
import argparse
import os
import shutil
import tempfile
import time

import benchlib as B
import p11ctypes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=11, help="runs of each (default 11)")
    a = ap.parse_args()
    B.need_root()
    pin = B.harness.PIN
    otps = ["OTP-%d" % i for i in range(4 * a.n + 20)]

    env = B.new_env("bench-scep")
    env.add_token("agent")
    env.add_token("parts")
    env.start_scep(challenge="Chall-1", extra=["-allowrenew", "0"])   # same subject again and again
    env.add_scep_profile("scep")
    env.start_est(users={"alice": {"otps": otps}})
    env.add_est_profile("est-basic", http_auth="basic")
    env.add_est_profile("est-digest", http_auth="digest")
    env.add_est_profile("est-auto", http_auth="auto")
    env.start_daemon()
    timed = B.timed_enroller(env, pin, timeout=120)
    otp_iter = iter(otps)

    def enroll(req):
        return timed(dict(req, storage="token", token="pkcs11:token=agent", pin=pin))

    def daemon_scep():
        return enroll({"ca": "scep", "otp": "Chall-1", "key_type": "rsa-2048", "subject": "CN=bench"})

    def daemon_est(profile, control):
        env.est_control(**control)
        return enroll({"ca": profile, "login": "alice", "otp": next(otp_iter), "key_type": "ec-p256"})

    tok = p11ctypes.Token(B.harness.SOFTHSM, "parts", pin)
    key_pem = os.path.join(env.tmp, "client-key.pem")
    B.run_timed(["openssl", "genrsa", "-traditional", "-out", key_pem, "2048"])   # scepclient reads PKCS#1 only

    def ctypes_keygen(i):
        t0 = time.perf_counter()
        hpub, hpriv = tok.keygen_rsa2048((0x4000 + i).to_bytes(2, "big"))
        dt = time.perf_counter() - t0
        tok.destroy(hpub, hpriv)
        return dt

    def scepclient():
        d = tempfile.mkdtemp(dir=env.tmp)
        shutil.copy(key_pem, os.path.join(d, "key.pem"))
        dt, _ = B.run_timed(["scepclient", "-server-url", env.scep_url, "-challenge", "Chall-1",
                             "-private-key", "key.pem", "-certificate", "cert.pem", "-cn", "bench"], cwd=d)
        assert os.path.getsize(os.path.join(d, "cert.pem")) > 100, "scepclient wrote no certificate"
        shutil.rmtree(d)
        return dt

    basic = {"auth": "basic"}
    digest = {"auth": "digest", "strict": True}
    runs = {
        "scep": daemon_scep, "keygen": lambda: ctypes_keygen(i), "scepclient": scepclient,
        "est_basic": lambda: daemon_est("est-basic", basic),
        "est_digest": lambda: daemon_est("est-digest", digest),
        "est_auto": lambda: daemon_est("est-auto", basic),
    }
    i = 999
    for fn in runs.values():          # warm-up: one of each
        fn()
    res = {k: [] for k in runs}
    for i in range(a.n):
        for k, fn in runs.items():
            res[k].append(fn())
    tok.close()

    m = {k: B.median(v) for k, v in res.items()}
    print("SCEP enrollment (RSA-2048) through the daemon vs its parts, and EST Basic vs Digest; N=%d each, "
          "interleaved" % a.n)
    print()
    rows = [
        ("daemon Enroll SCEP rsa-2048 -> Finished", res["scep"]),
        ("(a) C_GenerateKeyPair RSA-2048 in-process", res["keygen"]),
        ("(b) scepclient (process, software key)", res["scepclient"]),
        ("daemon Enroll EST ec-p256, http-auth=basic", res["est_basic"]),
        ("daemon Enroll EST ec-p256, http-auth=digest (strict)", res["est_digest"]),
        ("daemon Enroll EST ec-p256, http-auth=auto (Basic CA)", res["est_auto"]),
    ]
    B.table(("measurement", "median ms", "p95 ms", "n"),
            [(name, B.ms(B.median(v)), B.ms(B.pct(v, 95)), len(v)) for name, v in rows])
    parts = m["keygen"] + m["scepclient"]
    print()
    print("SCEP: sum of parts (a)+(b) %.1f ms; daemon / parts %.2f; daemon - parts %.1f ms"
          % (B.ms(parts), m["scep"] / parts, B.ms(m["scep"] - parts)))
    print("EST: digest / basic %.2f (+%.1f ms); auto / basic %.2f (+%.1f ms)"
          % (m["est_digest"] / m["est_basic"], B.ms(m["est_digest"] - m["est_basic"]),
             m["est_auto"] / m["est_basic"], B.ms(m["est_auto"] - m["est_basic"])))
    print("RESULT: scep rsa-2048: daemon median %.1f ms vs keygen %.1f + scepclient %.1f = %.1f ms, ratio %.2f; "
          "EST basic %.1f ms, digest %.1f ms (x%.2f), auto %.1f ms (x%.2f)"
          % (B.ms(m["scep"]), B.ms(m["keygen"]), B.ms(m["scepclient"]), B.ms(parts), m["scep"] / parts,
             B.ms(m["est_basic"]), B.ms(m["est_digest"]), m["est_digest"] / m["est_basic"],
             B.ms(m["est_auto"]), m["est_auto"] / m["est_basic"]))


if __name__ == "__main__":
    main()
