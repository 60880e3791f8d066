#!/usr/bin/python3
"""Issue 2: ListCerts on a token with many certificates.

Daemon: warm ListCerts over D-Bus (Gio call_sync on the harness connection,
after one warm-up call) — served from the daemon's cache.  The figure is the
round trip until the reply is received and parsed into a GVariant; turning
that into Python dicts (GVariant.unpack of 200 entries with their DER) costs
~100 ms of pure client-side Python and is reported in its own row.
Peer:   `pkcs11-tool --module libsofthsm2.so --token-label big -O --type cert`
        for the same token, a whole process per run (what a script would do).
Both are measured N times each, interleaved, in the same run.  A cold
ListCerts (after Rescan, which drops the cache) is measured for information.
"""
import argparse
import time

import benchlib as B


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="runs of each (default 30)")
    ap.add_argument("--certs", type=int, default=200, help="certificates on the token (default 200)")
    ap.add_argument("--cold", type=int, default=5, help="cold ListCerts runs after Rescan (default 5)")
    a = ap.parse_args()
    B.need_root()

    env = B.new_env("bench-listcerts")
    env.add_token("big")
    env.put_many_certs("big", a.certs)
    env.start_daemon()
    uri = "pkcs11:token=big"
    peer_argv = ["pkcs11-tool", "--module", B.harness.SOFTHSM, "--token-label", "big", "-O", "--type", "cert"]

    # sanity: both see the same certificates
    certs = env.list_certs(token=uri)
    _, r = B.run_timed(peer_argv, env=env.env)
    peer_count = r.stdout.decode().count("Certificate Object")
    assert len(certs) == a.certs, "daemon lists %d certificates, expected %d" % (len(certs), a.certs)
    assert peer_count == a.certs, "pkcs11-tool lists %d certificates, expected %d" % (peer_count, a.certs)

    params = B.GLib.Variant("(a{sv})", ({"token": B.GLib.Variant("s", uri)},))

    def raw_call():
        return env.conn.call_sync(B.harness.NAME, B.harness.PATH, B.harness.MANAGER, "ListCerts", params,
                                  None, 0, 60000, None)
    raw_call()                                      # warm-up
    daemon, peer, unpacked = [], [], []
    for i in range(a.n):
        dt, _ = B.timed(raw_call)
        daemon.append(dt)
        if i < 5:   # the Python-side unpack, for information
            unpacked.append(B.timed(env.list_certs, token=uri)[0])
        dt, _ = B.run_timed(peer_argv, env=env.env)
        peer.append(dt)

    cold = []
    for i in range(a.cold):
        env.call("Rescan")
        dt, c = B.timed(raw_call)
        assert len(c.unpack()[0]) == a.certs
        cold.append(dt)
    size = len(raw_call().get_data_as_bytes().get_data())

    print("ListCerts, one SoftHSM token with %d certificates, N=%d each, interleaved" % (a.certs, a.n))
    print("reply size %.0f kB (DER of every certificate included)\n" % (size / 1024.0))
    rows = [
        ("daemon ListCerts (warm, D-Bus)", B.ms(B.median(daemon)), B.ms(B.pct(daemon, 95)), len(daemon)),
        ("pkcs11-tool -O --type cert (process)", B.ms(B.median(peer)), B.ms(B.pct(peer, 95)), len(peer)),
        ("daemon ListCerts cold (after Rescan)", B.ms(B.median(cold)), B.ms(B.pct(cold, 95)), len(cold)),
        ("daemon warm + Python unpack (info)", B.ms(B.median(unpacked)), B.ms(B.pct(unpacked, 95)),
         len(unpacked)),
    ]
    B.table(("measurement", "median ms", "p95 ms", "n"), rows)
    ratio = B.median(daemon) / B.median(peer)
    ratio95 = B.pct(daemon, 95) / B.pct(peer, 95)
    print("\nratio daemon/peer: median %.3f, p95 %.3f; cold/peer median %.3f"
          % (ratio, ratio95, B.median(cold) / B.median(peer)))
    print("RESULT: listcerts %d certs: daemon warm median %.2f ms vs pkcs11-tool %.2f ms, ratio daemon/peer %.3f "
          "(p95 %.3f); cold %.2f ms"
          % (a.certs, B.ms(B.median(daemon)), B.ms(B.median(peer)), ratio, ratio95, B.ms(B.median(cold))))


if __name__ == "__main__":
    main()
