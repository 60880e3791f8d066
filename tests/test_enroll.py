"""Issue 4: Enroll over EST (RFC 7030) with login + one-time password, key on
the token, as a job — against the real EST test server (tests/est) on
127.0.0.1 and SoftHSM2."""
import os
import signal
import subprocess
import time

from harness import GLib, JOB_IFACE, PIN, TestCase, main, wait_for


class EnrollBase(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.start_est(users={"alice": {"otps": ["OTP-1", "OTP-2", "OTP-3"]}, "bob": {"otps": ["B-1", "B-2"]}})
        e.add_est_profile("est")
        self.token_uri = "pkcs11:token=agent"

    def req(self, **kw):
        r = {"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token", "token": self.token_uri,
             "pin": PIN}
        r.update(kw)
        return {k: v for k, v in r.items() if v is not None}

    def run_job(self, timeout=60, **kw):
        e = self.env
        path = e.enroll(self.req(**kw))
        seen = e.watch_job(path)
        res = e.wait_job(path, timeout, seen)
        return path, res, seen

    def token_ids(self, label="agent"):
        return sorted({o["id"] for o in self.env.objects(label)})

    def enroll_requests(self):
        return [r for r in self.env.est_requests() if r.get("op") in ("simpleenroll", "simplereenroll")
                and r.get("status") != 401 or (r.get("op") == "simpleenroll" and r.get("login"))]


class Enroll(EnrollBase):
    def check_happy(self, key_type, expect_kt):
        e = self.env
        e.start_daemon()
        path, (ok, err, msg), seen = self.run_job(key_type=key_type, label="agent %s" % key_type)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertEqual(e.get_property(path, JOB_IFACE, "State"), "done")
        for st in ("generating-key", "requesting", "writing"):
            self.assertIn(st, seen["states"])
        uri = e.get_property(path, JOB_IFACE, "Result")
        self.assertIn("type=cert", uri)
        self.assertEqual(e.get_property(path, JOB_IFACE, "Progress"), 1.0)
        certs = {c["uri"]: c for c in e.list_certs()}
        c = certs[uri]
        self.assertEqual(c["subject"], "CN=alice")
        self.assertEqual(c["key_type"], expect_kt)
        self.assertTrue(c["has_private_key"])
        # on the token, next to its key: certificate + private + public with one id
        objs = e.objects("agent")
        mine = sorted(o["type"] for o in objs if o["id"] == c["id"])
        self.assertEqual(mine, ["certificate", "private key", "public key"])
        # the CA chain was written too, and the certificate verifies against the CA
        ca_objs = [o for o in objs if o["type"] == "certificate" and o["id"] != c["id"]]
        self.assertEqual(len(ca_objs), 1)
        pem = os.path.join(e.tmp, "issued.pem")
        subprocess.run(["openssl", "x509", "-inform", "DER", "-out", pem], input=bytes(c["der"]), check=True)
        r = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(e.est_dir, "ca.pem"), pem],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # the key cannot be read out: sensitive, not extractable
        attrs = e.pkcs11_tool("agent", "--list-objects", "--type", "privkey").stdout
        self.assertIn("sensitive", attrs)
        self.assertNotIn("extractable", attrs.replace("never extractable", "").replace("non-extractable", ""))
        log = e.log("p11certd")
        for secret in (PIN, "OTP-1"):
            self.assertNotIn(secret, log)
        self.assertIn("Enrolled CN=alice", log)

    def test_ec_p256(self):
        self.check_happy("ec-p256", "ec-p256")

    def test_ec_p384(self):
        self.check_happy("ec-p384", "ec-p384")

    def test_rsa_2048(self):
        self.check_happy("rsa-2048", "rsa-2048")

    def test_rsa_3072(self):
        self.check_happy("rsa-3072", "rsa-3072")

    def test_one_connection_cacerts_once(self):
        """A job's requests share one connection (one TLS handshake); the
        CA certificates are fetched once per profile, not per enrollment."""
        e = self.env
        e.start_daemon()
        for otp in ("OTP-1", "OTP-2"):
            _, (ok, err, msg), _ = self.run_job(otp=otp)
            self.assertTrue(ok, "%s: %s" % (err, msg))
        reqs = [r for r in e.est_requests() if r.get("op")]
        self.assertEqual([r["op"] for r in reqs if r["status"] != 401], ["cacerts", "simpleenroll", "simpleenroll"])
        first = reqs[:[r["status"] for r in reqs].index(200, 1) + 1]   # cacerts .. the first issued certificate
        self.assertEqual({r["peer_port"] for r in first}, {first[0]["peer_port"]},
                         "the first enrollment's requests came on several connections: %s" % first)
        # both certificates chain to the CA (the second one with the kept CA certificates)
        self.assertEqual(len([c for c in e.list_certs() if c.get("subject") == "CN=alice"]), 2)

    def test_digest_auth_and_label(self):
        e = self.env
        e.est_control(auth="digest")
        e.add_est_profile("est", label="agents", http_auth="digest")
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, msg)
        paths = {r["path"] for r in e.est_requests()}
        self.assertIn("/.well-known/est/agents/simpleenroll", paths)

    def test_otp_reuse_not_retried(self):
        e = self.env
        e.start_daemon()
        _, (ok, _, _), _ = self.run_job()
        self.assertTrue(ok)
        before = self.token_ids()
        _, (ok, err, msg), _ = self.run_job()
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.CaRejected")
        self.assertIn("one-time password", msg)
        rejected = [r for r in e.est_requests() if r.get("status") == 401]
        self.assertEqual(len(rejected), 1, "a rejected one-time password must not be retried")
        self.assertEqual(self.token_ids(), before, "the generated key was left behind")

    def test_wrong_pin(self):
        e = self.env
        e.start_daemon()
        _, (ok, err, msg), seen = self.run_job(pin="Wr0ngPin99")
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.PinIncorrect")
        self.assertEqual(self.token_ids(), [])
        self.assertEqual(e.est_requests(), [], "the CA was contacted despite a wrong PIN")

    def test_accepted_202_then_issued(self):
        e = self.env
        e.est_control(accepted_202=2, retry_after=1)
        e.start_daemon()
        path, (ok, err, msg), seen = self.run_job()
        self.assertTrue(ok, msg)
        self.assertIn("waiting-for-ca", seen["states"])
        self.assertGreater(seen["max_retry_at"], 0)

    def test_202_past_max_wait(self):
        e = self.env
        e.est_control(accepted_202=5, retry_after=2)
        e.add_est_profile("est", max_wait=3)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertFalse(ok)
        self.assertIn("max-wait", msg)
        self.assertEqual(self.token_ids(), [])

    def test_500_retried_then_ok(self):
        e = self.env
        e.est_control(error_500=2)
        e.start_daemon()
        path, (ok, err, msg), seen = self.run_job()
        self.assertTrue(ok, msg)
        self.assertEqual(e.get_property(path, JOB_IFACE, "Attempt"), 3)
        statuses = [r["status"] for r in e.est_requests() if r.get("op") == "simpleenroll"]
        self.assertEqual(statuses, [500, 500, 200])

    def test_500_three_times_fails(self):
        e = self.env
        e.est_control(error_500=3)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.CaUnreachable")
        self.assertIn("after 3 attempt", msg)
        self.assertIn("administrator", msg)
        self.assertEqual(len([r for r in e.est_requests() if r.get("op") == "simpleenroll"]), 3)
        self.assertEqual(self.token_ids(), [])
        # the OTP was not used up: the next try works
        _, (ok, _, msg), _ = self.run_job()
        self.assertTrue(ok, msg)

    def test_connection_closed(self):
        e = self.env
        # every request dropped (more than the attempts: a request on a kept
        # connection that dies is sent once more on a new one, as curl does
        # for a keep-alive connection the server may have closed)
        e.est_control(close_connection=20)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaUnreachable"))
        self.assertIn("Gave up after 3 attempt(s)", msg)
        self.assertEqual(self.token_ids(), [])

    def test_slow_past_timeout(self):
        e = self.env
        e.add_est_profile("est", timeout=1, max_attempts=1)
        e.est_control(slow=1, slow_seconds=4)
        e.start_daemon()
        t0 = time.monotonic()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaUnreachable"), msg)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertEqual(self.token_ids(), [])

    def test_ca_down(self):
        e = self.env
        e.add_est_profile("est", url="https://127.0.0.1:1", max_attempts=2)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaUnreachable"), msg)
        self.assertEqual(self.token_ids(), [])

    def test_untrusted_server(self):
        e = self.env
        e.add_est_profile("est", trust_anchor=os.path.join(e.est_dir, "other-ca.pem"), max_attempts=1)
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertFalse(ok)
        self.assertIn("not trusted", msg)
        self.assertEqual([r for r in e.est_requests() if r.get("op")], [], "a request got through")

    def check_bad_reply(self, switch, words):
        e = self.env
        e.est_control(**{switch: 1})
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.CaBadReply", msg)
        self.assertIn(words, msg)
        self.assertEqual(self.token_ids(), [], "nothing may be left on the token")

    def test_garbage_base64(self):
        self.check_bad_reply("garbage_base64", "base64")

    def test_wrong_key(self):
        self.check_bad_reply("wrong_key", "key")

    def test_other_ca(self):
        self.check_bad_reply("other_ca", "chain")

    def test_wrong_content_type(self):
        self.check_bad_reply("wrong_content_type", "ontent")

    def test_invalid_requests(self):
        e = self.env
        e.start_daemon()
        from harness import GLib as G
        cases = [
            ({}, "ca"),
            ({"ca": G.Variant("s", "est")}, "login"),
            ({"ca": G.Variant("s", "est"), "login": G.Variant("s", "alice")}, "otp"),
            ({"ca": G.Variant("s", "est"), "login": G.Variant("s", "a"), "otp": G.Variant("s", "o")}, "token"),
            ({"ca": G.Variant("s", "est"), "login": G.Variant("s", "a"), "otp": G.Variant("s", "o"),
              "token": G.Variant("s", self.token_uri)}, "pin"),
            ({"ca": G.Variant("s", "est"), "pin": G.Variant("i", 1234)}, "pin"),
            ({"ca": G.Variant("s", "est"), "colour": G.Variant("s", "red")}, "colour"),
            ({"ca": G.Variant("s", "local"), "key_type": G.Variant("s", "dsa-1024"), "token": G.Variant("s", self.token_uri),
              "pin": G.Variant("s", PIN)}, "key_type"),
            ({"ca": G.Variant("s", "local"), "storage": G.Variant("s", "cloud")}, "storage"),
            ({"ca": G.Variant("s", "local"), "subject": G.Variant("s", "no-equals-sign"),
              "token": G.Variant("s", self.token_uri), "pin": G.Variant("s", PIN)}, "subject"),
        ]
        for req, key in cases:
            msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}", [req])
            self.assertIn('"%s"' % key, msg)
        self.assertDBusError("NotFound", "Enroll", "a{sv}", [{"ca": GLib.Variant("s", "nosuch")}])
        self.assertDBusError("TokenNotPresent", "Enroll", "a{sv}",
                             [{k: GLib.Variant("s", v) for k, v in self.req(token="pkcs11:token=gone").items()}])
        self.assertEqual(self.token_ids(), [])


class EstAuthAndApproval(EnrollBase):
    """Issue 16: the http-auth key against a strict RFC 7030 server (Digest:
    Basic credentials get a bare 401), and manual approval with long
    Retry-After values."""

    def credentialed(self):
        return [r for r in self.env.est_requests() if r.get("op") == "simpleenroll" and r.get("credentials")]

    def test_auto_against_strict_digest(self):
        e = self.env
        e.est_control(auth="digest", strict=True)
        e.add_est_profile("est", http_auth=None)             # the default: auto
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertEqual([r["credentials"] for r in self.credentialed()], ["digest"])
        # wrong one-time password: one request carries it, then the job ends
        before = self.token_ids()
        _, (ok, err, msg), _ = self.run_job(otp="WRONG-1")
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("one-time password", msg)
        self.assertEqual(len(self.credentialed()), 2, "a rejected one-time password was sent again")
        self.assertEqual(self.token_ids(), before, "the key of the failed enrollment was left behind")

    def test_basic_against_strict_digest_says_what_to_set(self):
        e = self.env
        e.est_control(auth="digest", strict=True)
        e.add_est_profile("est", http_auth="basic")
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("http-auth=", msg)
        self.assertEqual(len(self.credentialed()), 1)
        self.assertEqual(self.token_ids(), [])
        # the profile fixed: the same one-time password works
        e.add_est_profile("est", http_auth="digest")
        e.stop_daemon()
        e.start_daemon()
        _, (ok, err, msg), _ = self.run_job()
        self.assertTrue(ok, msg)

    def test_approval_retry_after_3600_waits(self):
        """The strict server refuses Retry-After under 60 s and answers 3600:
        with max-wait=3600 (the default) the job waits, showing when it asks
        again; the test cancels it."""
        e = self.env
        e.est_control(accepted_202=1, retry_after=5, strict=True)
        e.start_daemon()
        path = e.enroll(self.req())
        seen = e.watch_job(path)
        wait_for(lambda: "waiting-for-ca" in seen["states"], 20, "waiting-for-ca")
        retry_at = e.get_property(path, JOB_IFACE, "RetryAt")
        self.assertAlmostEqual(retry_at - time.time(), 3600, delta=60)
        self.assertEqual(e.get_property(path, JOB_IFACE, "State"), "waiting-for-ca")
        e.call("Cancel", path=path, iface=JOB_IFACE)
        self.assertEqual(e.wait_job(path, 20, seen)[1], "org.p11certd.Error.Cancelled")
        self.assertEqual(self.token_ids(), [])

    def test_approval_retry_after_past_max_wait_fails_at_once(self):
        e = self.env
        e.est_control(accepted_202=1, retry_after=5, strict=True)
        e.add_est_profile("est", max_wait=600)
        e.start_daemon()
        t0 = time.monotonic()
        _, (ok, err, msg), seen = self.run_job()
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("3600 s", msg)
        self.assertIn("max-wait=600", msg)
        self.assertNotIn("waiting-for-ca", seen["states"])
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(self.token_ids(), [])


class Jobs(EnrollBase):
    def test_cancel_requesting(self):
        e = self.env
        e.est_control(slow=1, slow_seconds=20)
        e.start_daemon()
        path = e.enroll(self.req())
        seen = e.watch_job(path)
        wait_for(lambda: "requesting" in seen["states"], 20, "requesting")
        e.call("Cancel", path=path, iface=JOB_IFACE)
        ok, err, msg = e.wait_job(path, 20, seen)
        self.assertEqual((ok, err), (False, "org.p11certd.Error.Cancelled"))
        self.assertEqual(e.get_property(path, JOB_IFACE, "State"), "cancelled")
        self.assertEqual(self.token_ids(), [])

    def test_cancel_waiting_for_ca(self):
        e = self.env
        e.est_control(accepted_202=1, retry_after=60)
        e.start_daemon()
        path = e.enroll(self.req())
        seen = e.watch_job(path)
        wait_for(lambda: "waiting-for-ca" in seen["states"], 20, "waiting-for-ca")
        t0 = time.monotonic()
        e.call("Cancel", path=path, iface=JOB_IFACE)
        ok, err, _ = e.wait_job(path, 20, seen)
        self.assertLess(time.monotonic() - t0, 5, "cancel did not interrupt the wait")
        self.assertEqual(err, "org.p11certd.Error.Cancelled")
        self.assertEqual(self.token_ids(), [])

    def test_cancel_queued_and_serialised(self):
        """Two jobs on one token run one after the other; the queued one can be cancelled."""
        e = self.env
        e.est_control(slow=1, slow_seconds=3)
        e.start_daemon()
        first = e.enroll(self.req())
        s1 = e.watch_job(first)
        wait_for(lambda: "requesting" in s1["states"], 20, "first requesting")
        second = e.enroll(self.req(otp="OTP-2"))
        self.assertEqual(e.get_property(second, JOB_IFACE, "State"), "queued")
        third = e.enroll(self.req(otp="OTP-3"))
        s3 = e.watch_job(third)
        e.call("Cancel", path=third, iface=JOB_IFACE)
        self.assertEqual(e.wait_job(third, 20, s3)[1], "org.p11certd.Error.Cancelled")
        self.assertEqual(e.get_property(second, JOB_IFACE, "State"), "queued")
        self.assertTrue(e.wait_job(first, 30, s1)[0])
        self.assertTrue(e.wait_job(second, 30)[0])
        self.assertEqual(len([c for c in e.list_certs() if c["subject"] == "CN=alice"]), 2)

    def test_cancel_finished_and_by_others(self):
        e = self.env
        e.start_daemon()
        path, (ok, _, _), _ = self.run_job()
        self.assertTrue(ok)
        self.assertDBusError("Failed", "Cancel", path=path, iface=JOB_IFACE)

    def test_two_tokens_in_parallel(self):
        e = self.env
        e.add_token("second")
        e.est_control(slow=2, slow_seconds=2)
        e.start_daemon()
        t0 = time.monotonic()
        a = e.enroll(self.req())
        b = e.enroll(self.req(token="pkcs11:token=second", login="bob", otp="B-1"))
        sa, sb = e.watch_job(a), e.watch_job(b)
        self.assertTrue(e.wait_job(a, 30, sa)[0])
        self.assertTrue(e.wait_job(b, 30, sb)[0])
        self.assertLess(time.monotonic() - t0, 3.9, "enrollments on two tokens did not overlap")

    def test_finished_job_goes_away(self):
        e = self.env
        e.extra_config = ""
        e.start_daemon()
        path, (ok, _, _), _ = self.run_job()
        self.assertTrue(ok)
        objs = e.call("GetManagedObjects", iface="org.freedesktop.DBus.ObjectManager")[0]
        self.assertIn(path, objs)
        self.assertEqual(objs[path][JOB_IFACE]["State"], "done")


class CrashRecovery(EnrollBase):
    def test_sigkill_after_keygen(self):
        e = self.env
        e.est_control(slow=1, slow_seconds=30)
        e.start_daemon()
        path = e.enroll(self.req())
        seen = e.watch_job(path)
        wait_for(lambda: "requesting" in seen["states"], 20, "requesting")
        e.wait_est_holding()
        self.assertEqual(len(self.token_ids()), 1, "the key should exist while the CA is asked")
        pending = os.listdir(os.path.join(e.state_dir, "pending"))
        self.assertEqual(len([p for p in pending if p.endswith(".ini")]), 1)
        e.kill(e.daemon, signal.SIGKILL)
        wait_for(lambda: not e.name_has_owner(), 10, "name released")
        e.start_daemon()
        self.assertIn("interrupted enrollment", e.log("p11certd"))
        # the next login to the token (here: an enrollment) removes the orphan
        e.est_control()
        _, (ok, err, msg), _ = self.run_job(otp="OTP-2")
        self.assertTrue(ok, msg)
        certs = [c for c in e.list_certs() if c["subject"] == "CN=alice"]
        self.assertEqual(len(certs), 1)
        ids = {o["id"] for o in e.objects("agent") if o["type"] in ("private key", "public key")}
        self.assertEqual(ids, {certs[0]["id"]}, "the orphan key of the killed job is still there")
        self.assertEqual([p for p in os.listdir(os.path.join(e.state_dir, "pending")) if p.endswith(".ini")], [])
        self.assertIn("interrupted enrollment", e.log("p11certd"))


if __name__ == "__main__":
    main()
