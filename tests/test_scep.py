"""Issue 16: SCEP (RFC 8894) enrollment — against Debian's real SCEP server
(micromdm `scepserver`, with -challenge) and, for what that one cannot be
made to do, the project's own test server (tests/scep/scepserver.py).
Keys on a SoftHSM token, in the system store and in a PKCS#12 file."""
import os
import subprocess
import time

from harness import GLib, JOB_IFACE, PIN, TestCase, main, wait_for


class ScepBase(TestCase):
    def setUp(self):
        super().setUp()
        self.env.add_token("agent")

    def req(self, **kw):
        r = {"ca": "scep", "otp": "Chall-1", "storage": "token", "token": "pkcs11:token=agent", "pin": PIN,
             "subject": "CN=agent-7,O=Shop"}
        r.update(kw)
        return {k: v for k, v in r.items() if v is not None}

    def run_job(self, timeout=60, **kw):
        e = self.env
        path = e.enroll(self.req(**kw))
        seen = e.watch_job(path)
        return path, e.wait_job(path, timeout, seen), seen

    def objects(self):
        return sorted((o["type"], o["id"]) for o in self.env.objects("agent"))

    def issued(self, path):
        uri = self.env.get_property(path, JOB_IFACE, "Result")
        return [c for c in self.env.list_certs() if c["uri"] == uri][0]

    def verify(self, cert, ca_pem):
        pem = os.path.join(self.env.tmp, "issued.pem")
        subprocess.run(["openssl", "x509", "-inform", "DER", "-out", pem], input=bytes(cert["der"]), check=True)
        r = subprocess.run(["openssl", "verify", "-CAfile", ca_pem, pem], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class RealScepServer(ScepBase):
    """Debian's scepserver: what a real SCEP CA does."""

    def setUp(self):
        super().setUp()
        # -allowrenew 0: renewal at any time (default: 14 days before expiry)
        self.env.start_scep(challenge="Chall-1", extra=["-allowrenew", "0"])
        self.env.add_scep_profile("scep")

    def pkioperations(self):
        return self.env.log("scep").count("op=PKIOperation")

    def test_rsa_enrollment_on_token(self):
        e = self.env
        e.start_daemon()
        cas = {c["name"]: c for c in e.call("ListCas")[0]}
        self.assertEqual(cas["scep"]["type"], "scep")
        self.assertEqual(cas["scep"]["key_type"], "rsa-2048")
        self.assertEqual(cas["scep"]["otp_name"], "challenge password")
        path, (ok, err, msg), seen = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))
        for st in ("requesting", "generating-key", "writing"):
            self.assertIn(st, seen["states"])
        c = self.issued(path)
        self.assertEqual(c["key_type"], "rsa-2048")
        self.assertIn("CN=agent-7", c["subject"])
        self.assertTrue(c["has_private_key"])
        self.verify(c, e.scep_ca)
        mine = sorted(o["type"] for o in e.objects("agent") if o["id"] == c["id"])
        self.assertEqual(mine, ["certificate", "private key", "public key"])
        self.assertEqual(self.pkioperations(), 1)
        log = e.log("p11certd")
        for secret in (PIN, "Chall-1"):
            self.assertNotIn(secret, log)

    def test_wrong_challenge(self):
        e = self.env
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job(otp="Wrong-Chall-9")
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("challenge password", msg)
        # clients explain it from the details, not the message
        details = e.get_property(path, JOB_IFACE, "ErrorDetails")
        self.assertEqual((details["reason"], details["fail_info"]), ("credentials", "badRequest"))
        self.assertEqual(self.pkioperations(), 1, "a rejected challenge password was sent again")
        self.assertEqual(self.objects(), [], "the key of the failed enrollment was left behind")
        self.assertNotIn("Wrong-Chall-9", e.log("p11certd"))

    def test_ec_refused_before_any_key(self):
        e = self.env
        e.start_daemon()
        msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}",
                                   [{k: GLib.Variant("s", v) for k, v in self.req(key_type="ec-p256").items()}])
        self.assertIn("key_type", msg)
        self.assertIn("RSA", msg)
        self.assertEqual(self.objects(), [])
        self.assertEqual(self.pkioperations(), 0)

    def test_system_and_file_storage(self):
        e = self.env
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job(storage="system", name="svc", token=None, pin=None)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertEqual(e.get_property(path, JOB_IFACE, "Result"), "system:svc")
        self.verify(self.issued(path), e.scep_ca)
        out = os.path.join(e.tmp, "out.p12")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            path = e.enroll(self.req(storage="file", token=None, pin=None, password="P12pass99A", fd=0), fds=[fd])
        finally:
            os.close(fd)
        ok, err, msg = e.wait_job(path, 60)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        r = subprocess.run(["openssl", "pkcs12", "-in", out, "-nokeys", "-passin", "pass:P12pass99A"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("agent-7", r.stdout)

    def test_cli_wizard_asks_the_challenge_password(self):
        """p11certctl: ca list/show name the protocol; the wizard asks the
        challenge password (not a login) on a terminal."""
        import pexpect
        from harness import CTL
        e = self.env
        e.start_daemon()
        out = e.ctl("ca", "list", check=True).stdout
        line = [ln for ln in out.splitlines() if ln.startswith("scep")][0]
        self.assertIn("scep", line.split()[1])
        self.assertIn("challenge", line)
        self.assertIn("challenge password (SCEP)", e.ctl("ca", "show", "scep", check=True).stdout)
        # only a fingerprint is configured: the CA certificate comes from the server
        pem = e.ctl("ca", "show", "scep", "--pem", check=True).stdout
        with open(e.scep_ca) as f:
            self.assertEqual(pem.strip(), f.read().strip())
        pin_file = os.path.join(e.tmp, "pin")
        with open(os.open(pin_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(PIN + "\n")
        child = pexpect.spawn(CTL, ["--address", e.bus_address, "enroll", "--ca", "scep", "--storage", "token",
                                    "--token", "pkcs11:token=agent", "--pin-file", pin_file,
                                    "--subject", "CN=agent-7"], env=e.env, encoding="utf-8", timeout=60)
        transcript = []
        child.logfile_read = type("T", (), {"write": lambda self, s: transcript.append(s),
                                            "flush": lambda self: None})()
        child.expect("Challenge password: ")
        child.sendline("Chall-1")
        child.expect(r"Request the certificate now\?")
        child.sendline("y")
        child.expect("written successfully")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0, "".join(transcript))
        self.assertNotIn("Login", "".join(transcript))
        self.assertNotIn("Chall-1", "".join(transcript), "the challenge password was echoed")

    def test_renewal_req_on_token_and_system(self):
        e = self.env
        # scepserver checks -challenge on RenewalReq too; unattended renewal
        # has no challenge password, so this CA runs without one
        e.start_scep(challenge=None, name="scep2", extra=["-allowrenew", "0"])
        e.add_scep_profile("scep")
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job(label="scep cert")
        self.assertTrue(ok, msg)
        old = self.issued(path)
        rpath = e.call("Renew", "sa{sv}", [old["uri"], {"pin": GLib.Variant("s", PIN)}])[0]
        ok, err, msg = e.wait_job(rpath, 60)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        new = self.issued(rpath)
        self.assertNotEqual(new["sha256"], old["sha256"])
        self.assertNotEqual(new["id"], old["id"])
        self.verify(new, e.scep_ca)
        self.assertEqual(e.log("scep2").count("op=PKIOperation"), 2)
        # the old certificate and key are gone, the new ones are there
        self.assertEqual(sorted(o["id"] for o in e.objects("agent") if o["type"] != "certificate" or
                                o["id"] in (old["id"], new["id"])), [new["id"]] * 3)
        # the system store: RenewalReq signed with the key file
        path, (ok, err, msg), _ = self.run_job(storage="system", name="svc", token=None, pin=None)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        old = self.issued(path)
        rpath = e.call("Renew", "sa{sv}", ["system:svc", {}])[0]
        ok, err, msg = e.wait_job(rpath, 60)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        new = [c for c in e.list_certs() if c["uri"] == "system:svc"][0]
        self.assertNotEqual(new["sha256"], old["sha256"])
        self.verify(new, e.scep_ca)


class OwnScepServer(ScepBase):
    """tests/scep/scepserver.py: what a real CA does only now and then."""

    def setUp(self):
        super().setUp()
        self.env.start_test_scep()
        self.env.add_scep_profile("scep")

    def ops(self, key="pki_status"):
        return [r.get(key) for r in self.env.scep_requests() if r.get("op") == "PKIOperation"]

    def test_pending_then_success(self):
        e = self.env
        e.scep_control(pending=2)
        e.start_daemon()
        path, (ok, err, msg), seen = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertIn("waiting-for-ca", seen["states"])
        self.assertGreater(seen["max_retry_at"], 0)
        self.assertEqual(self.ops("message_type"), ["PKCSReq", "CertPoll", "CertPoll"])
        self.assertEqual(self.ops(), ["PENDING", "PENDING", "SUCCESS"])
        self.verify(self.issued(path), os.path.join(e.scep_dir, "ca.pem"))
        # the request went out with the strongest cipher announced
        self.assertEqual(set(self.ops("cipher")), {"aes128_cbc"})

    def test_pending_past_max_wait(self):
        e = self.env
        e.scep_control(pending=10)
        e.add_scep_profile("scep", max_wait=2)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("max-wait", msg)
        self.assertEqual(self.objects(), [])

    def check_bad(self, switch, words, err="org.p11certd.Error.CaBadReply"):
        e = self.env
        e.scep_control(**{switch: 1})
        e.start_daemon()
        _, (ok, got, msg), _ = self.run_job()
        self.assertEqual((ok, got), (False, err), msg)
        self.assertIn(words, msg)
        self.assertEqual(self.objects(), [], "the key of the failed enrollment was left behind")
        self.assertEqual(len(self.ops("op")), 1, "the request was sent again")

    def test_garbage_reply(self):
        self.check_bad("garbage", "not a signed PKCS#7")

    def test_reply_encrypted_to_another_certificate(self):
        self.check_bad("wrong_recipient", "encrypted to another certificate")

    def test_reply_encrypted_to_another_key(self):
        self.check_bad("wrong_key", "does not decrypt")

    def test_bad_signature(self):
        self.check_bad("bad_signature", "signature")

    def test_certificate_for_another_key(self):
        self.check_bad("cert_other_key", "none for the key of the request")

    def test_certificate_not_from_the_ca(self):
        self.check_bad("cert_other_ca", "does not chain")

    def test_fail_info(self):
        e = self.env
        e.scep_control(fail="badTime")
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("clock", msg)
        self.assertEqual(e.get_property(path, JOB_IFACE, "ErrorDetails")["reason"], "clock")
        self.assertEqual(self.objects(), [])

    def test_slow_server(self):
        e = self.env
        e.scep_control(slow=1, slow_seconds=4)
        e.add_scep_profile("scep", timeout=1, max_attempts=1)
        e.start_daemon()
        t0 = time.monotonic()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaUnreachable"), msg)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertEqual(self.objects(), [])

    def test_ca_pinned_by_fingerprint_or_trust_anchor(self):
        """A CA certificate without the profile's fingerprint is refused
        before any key is made; a trust-anchor profile works."""
        e = self.env
        e.add_scep_profile("scep", ca_fingerprint="AB:" * 31 + "AB")
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaBadReply"), msg)
        self.assertIn("ca-fingerprint", msg)
        self.assertEqual(self.objects(), [], "a key was made for an untrusted CA")
        self.assertEqual(self.ops("op"), [], "a request went to an untrusted CA")
        e.stop_daemon()
        e.add_scep_profile("scep", ca_fingerprint=None, trust_anchor=os.path.join(e.scep_dir, "ca.pem"))
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))

    def test_500_retried(self):
        e = self.env
        e.scep_control(error_500=2)
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertEqual(e.get_property(path, JOB_IFACE, "Attempt"), 3)
        self.assertEqual(self.ops("status"), [500, 500, 200])

    def test_old_ca_des3_and_get(self):
        """A CA announcing only DES3 (no POST, no SHA-256): triple DES, SHA-1,
        the message in the GET query."""
        e = self.env
        e.scep_control(caps=["DES3"])
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))
        r = [r for r in e.scep_requests() if r.get("op") == "PKIOperation"]
        self.assertEqual([(x["method"], x["cipher"], x["digest"]) for x in r], [("GET", "tripledes_3key", "sha1")])

    def test_ca_without_renewal(self):
        e = self.env
        e.start_daemon()
        path, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, msg)
        old = self.issued(path)
        before = self.objects()
        e.scep_control(caps=["AES", "SHA-256", "POSTPKIOperation"])
        rpath = e.call("Renew", "sa{sv}", [old["uri"], {"pin": GLib.Variant("s", PIN)}])[0]
        ok, err, msg = e.wait_job(rpath, 60)
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("does not renew", msg)
        self.assertIn("enroll again", msg)
        self.assertEqual(self.objects(), before, "a key was made for a CA that does not renew")


if __name__ == "__main__":
    main()
