"""Issue 7: renewal over EST simplereenroll authenticated by the current
certificate (through the token), RenewDue, RenewalNeeded, CertificateExpiring."""
import os
import time

from harness import Gio, GLib, JOB_IFACE, PIN, TestCase, main, wait_for



class RenewBase(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.start_est(users={"alice": {"otps": ["OTP-%d" % i for i in range(1, 9)]}}, validity=3600)
        e.add_est_profile("est")
        self.signals = []

    def listen(self, *names):
        def on_signal(conn, sender, path, iface, name, params, *user):
            self.signals.append((name, params.unpack()))
        for n in names:
            self.env.conn.signal_subscribe("org.p11certd", "org.p11certd1.Manager", n, "/org/p11certd", None,
                                           Gio.DBusSignalFlags.NONE, on_signal)

    def enroll_token(self, otp="OTP-1", **kw):
        e = self.env
        req = {"ca": "est", "login": "alice", "otp": otp, "token": "pkcs11:token=agent", "pin": PIN,
               "label": "agent cert"}
        req.update(kw)
        path = e.enroll(req)
        ok, err, msg = e.wait_job(path, 60)
        self.assertTrue(ok, msg)
        return e.get_property(path, JOB_IFACE, "Result")

    def renew(self, uri, **opts):
        e = self.env
        o = {k: GLib.Variant("b" if isinstance(v, bool) else "s", v) for k, v in opts.items()}
        path = e.call("Renew", "sa{sv}", [uri, o])[0]
        return path, e.wait_job(path, 60)

    def cert(self, uri):
        return [c for c in self.env.list_certs() if c["uri"] == uri][0]


class Renew(RenewBase):
    def test_token_renew_rekey(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        old = self.cert(uri)
        self.assertEqual(old["ca"], "est")
        path, (ok, err, msg) = self.renew(uri, pin=PIN)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        self.assertEqual(e.get_property(path, JOB_IFACE, "Operation"), "renew")
        new_uri = e.get_property(path, JOB_IFACE, "Result")
        new = self.cert(new_uri)
        self.assertEqual(new["subject"], old["subject"])
        self.assertNotEqual(new["sha256"], old["sha256"])
        self.assertNotEqual(new["id"], old["id"])                  # a new key
        self.assertEqual(new["label"], "agent cert")
        self.assertEqual(new["ca"], "est")
        # on the token: the new certificate with its keys; the old certificate and key are gone
        user_objs = sorted((o["type"], o["id"]) for o in e.objects("agent") if o["label"] == "agent cert")
        self.assertEqual(user_objs, sorted([("certificate", new["id"]), ("private key", new["id"]),
                                            ("public key", new["id"])]))
        # the CA saw a client-certificate-authenticated reenroll
        reenroll = [r for r in e.est_requests() if r.get("op") == "simplereenroll"]
        self.assertEqual(len(reenroll), 1)
        self.assertTrue(reenroll[0]["client_cert"])
        self.assertEqual(reenroll[0]["status"], 200)
        self.assertNotIn(PIN, e.log("p11certd"))
        self.assertIn("Renewed", e.log("p11certd"))

    def test_token_renew_keep_key(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        old = self.cert(uri)
        path, (ok, err, msg) = self.renew(uri, pin=PIN, rekey=False)
        self.assertTrue(ok, msg)
        new = self.cert(e.get_property(path, JOB_IFACE, "Result"))
        self.assertEqual(new["id"], old["id"])
        self.assertNotEqual(new["sha256"], old["sha256"])
        certs = [o for o in e.objects("agent") if o["type"] == "certificate" and o["id"] == old["id"]]
        self.assertEqual(len(certs), 1)

    def test_wrong_pin_keeps_old(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        before = sorted((o["type"], o["id"]) for o in e.objects("agent"))
        path, (ok, err, msg) = self.renew(uri, pin="Wr0ngPin77")
        self.assertEqual(err, "org.p11certd.Error.PinIncorrect")
        self.assertEqual(sorted((o["type"], o["id"]) for o in e.objects("agent")), before)

    def test_ca_down_keeps_old_then_succeeds(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        before = sorted((o["type"], o["id"]) for o in e.objects("agent"))
        e.est_control(error_500=3)
        path, (ok, err, msg) = self.renew(uri, pin=PIN)
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaUnreachable"))
        self.assertEqual(sorted((o["type"], o["id"]) for o in e.objects("agent")), before,
                         "a failed renewal touched the token")
        path, (ok, err, msg) = self.renew(uri, pin=PIN)
        self.assertTrue(ok, msg)

    def test_ca_wants_login_for_renewal(self):
        """A CA that wants an HTTP login on top of the client certificate for
        simplereenroll (401 + Basic): the error says so and what to do."""
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        before = sorted((o["type"], o["id"]) for o in e.objects("agent"))
        e.est_control(reenroll_auth="basic")
        path, (ok, err, msg) = self.renew(uri, pin=PIN)
        self.assertEqual((ok, err), (False, "org.p11certd.Error.CaRejected"), msg)
        self.assertIn("wants a login", msg)
        self.assertIn("certificate authentication for re-enrollment", msg)
        self.assertIn("enroll again with a one-time password", msg)
        self.assertNotIn("did not accept the client certificate", msg)
        reenroll = [r for r in e.est_requests() if r.get("op") == "simplereenroll"]
        self.assertEqual([(r["status"], r.get("client_subject")) for r in reenroll], [(401, "CN=alice")])
        self.assertEqual(sorted((o["type"], o["id"]) for o in e.objects("agent")), before)

    def test_sigkill_mid_renewal(self):
        """Killed while the CA is asked: the old certificate and key are intact,
        the new key is removed at the next login, renewal then works."""
        import signal
        e = self.env
        e.start_daemon()
        uri = self.enroll_token()
        old = self.cert(uri)
        e.est_control(slow=1, slow_seconds=30)
        path = e.call("Renew", "sa{sv}", [uri, {"pin": GLib.Variant("s", PIN)}])[0]
        seen = e.watch_job(path)
        wait_for(lambda: "requesting" in seen["states"], 20, "requesting")
        # killed while only the CA is awaited (a kill during a token write
        # can leave SoftHSM's non-atomic file store damaged)
        e.wait_est_holding()
        e.kill(e.daemon, signal.SIGKILL)
        wait_for(lambda: not e.name_has_owner(), 10, "name released")
        e.est_control()
        e.start_daemon()
        self.assertIn(uri, [c["uri"] for c in e.list_certs()], "the old certificate was lost")
        self.assertEqual(self.cert(uri)["sha256"], old["sha256"])
        path, (ok, err, msg) = self.renew(uri, pin=PIN)     # the next login cleans up, then renews
        self.assertTrue(ok, msg)
        new = self.cert(e.get_property(path, JOB_IFACE, "Result"))
        ids = {o["id"] for o in e.objects("agent") if o["type"] in ("private key", "public key")}
        self.assertEqual(ids, {new["id"]}, "an orphan key of the killed renewal is left")
        self.assertIn("interrupted enrollment", e.log("p11certd"))

    def test_unknown_profile(self):
        e = self.env
        e.put_cert_for_key("agent", "77", "imported", "Imported Elsewhere")
        e.start_daemon()
        uri = [c["uri"] for c in e.list_certs() if c["label"] == "imported"][0]
        msg = self.assertDBusError("NotFound", "Renew", "sa{sv}", [uri, {"pin": GLib.Variant("s", PIN)}])
        self.assertIn("not issued through a CA profile", msg)
        self.assertDBusError("NotFound", "Renew", "sa{sv}", ["pkcs11:token=agent;id=%99;type=cert", {}])
        uri2 = self.enroll_token()
        msg = self.assertDBusError("InvalidArgs", "Renew", "sa{sv}", [uri2, {}])
        self.assertIn('"pin"', msg)

    def test_system_renew_due(self):
        e = self.env
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        path = e.enroll({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "system", "name": "svc"})
        self.assertTrue(e.wait_job(path, 60)[0])
        old = open(os.path.join(e.state_dir, "system", "svc", "cert.pem")).read()
        self.assertTrue(e.list_certs(storage="system")[0]["renewal_due"])
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(len(res["jobs"]), 1)
        self.assertEqual(res["needs_person"], [])
        self.assertTrue(e.wait_job(res["jobs"][0], 60)[0])
        self.assertNotEqual(open(os.path.join(e.state_dir, "system", "svc", "cert.pem")).read(), old)
        reenroll = [r for r in e.est_requests() if r.get("op") == "simplereenroll"]
        self.assertEqual([r["status"] for r in reenroll], [200])

    def test_token_needs_person_or_pin_file(self):
        e = self.env
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        uri = self.enroll_token()
        self.listen("RenewalNeeded")
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(res["jobs"], [])
        self.assertEqual(res["needs_person"], [uri])
        wait_for(lambda: self.signals, 5, "RenewalNeeded")
        name, (suri, not_after, info) = self.signals[0]
        self.assertEqual(suri, uri)
        self.assertGreater(not_after, time.time())
        self.assertEqual(info["ca"], "est")
        # an admin-chosen PIN source makes it unattended; an unsafe file is refused
        pin_file = os.path.join(e.tmp, "token.pin")
        with open(pin_file, "w") as f:
            f.write(PIN + "\n")
        os.chmod(pin_file, 0o644)
        e.add_est_profile("est", pin_file=pin_file)
        e.stop_daemon()
        e.start_daemon()
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(res["jobs"], [], "a world-readable PIN file was used")
        self.assertIn("0600", e.log("p11certd"))
        os.chmod(pin_file, 0o600)
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(len(res["jobs"]), 1)
        self.assertTrue(e.wait_job(res["jobs"][0], 60)[0])

    def test_local_ca_renew(self):
        e = self.env
        e.start_daemon()
        path = e.enroll({"ca": "local", "token": "pkcs11:token=agent", "pin": PIN, "subject": "CN=lab"})
        self.assertTrue(e.wait_job(path, 60)[0])
        uri = e.get_property(path, JOB_IFACE, "Result")
        path, (ok, err, msg) = self.renew(uri, pin=PIN)
        self.assertTrue(ok, msg)
        self.assertEqual(len([c for c in e.list_certs() if c["subject"] == "CN=lab"]), 1)

    def test_certificate_expiring(self):
        e = self.env
        e.kill(e.est)
        e.start_est(users={"alice": {"otps": ["S-1"]}}, validity=6)
        e.add_est_profile("est")
        e.extra_config = "[renewal]\nwarn-days=0\n"
        e.start_daemon()
        self.listen("CertificateExpiring")
        uri = self.enroll_token(otp="S-1")
        not_after = self.cert(uri)["not_after"]
        self.assertEqual(self.signals, [])
        wait_for(lambda: self.signals, 15, "CertificateExpiring")
        self.assertEqual(self.signals[0], ("CertificateExpiring", (uri, not_after)))
        self.assertGreaterEqual(time.time() + 1, not_after)
        # once only
        end = time.monotonic() + 2
        wait_for(lambda: time.monotonic() > end, 3, "quiet")
        self.assertEqual(len(self.signals), 1)


class RenewListFault(RenewBase):
    """A token whose listing fails during RenewDue keeps its issuance records."""
    def setUp(self):
        super().setUp()
        e = self.env
        e.use_fault_module()

    def faults(self, *rules):
        self.env.set_faults(*rules)

    def failed_finds(self):
        return self.env.fault_calls("C_FindObjectsInit", rv=0x30)   # CKR_DEVICE_ERROR

    def issued(self):
        path = os.path.join(self.env.state_dir, "issued.ini")
        return open(path).read() if os.path.exists(path) else ""

    def test_list_failure_keeps_records(self):
        e = self.env
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        uri = self.enroll_token()
        sha = self.cert(uri)["sha256"]
        self.assertIn(sha, self.issued())
        # the token fails to list (device error); Rescan drops the cached list
        self.faults("C_FindObjectsInit rv=CKR_DEVICE_ERROR")
        e.call("Rescan")
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertGreater(self.failed_finds(), 0, "the fault did not fire")
        self.assertEqual(res["needs_person"], [])
        self.assertIn(sha, self.issued(), "the record of a certificate on an unlisted token was pruned")
        # the fault gone: the certificate is still known as issued by "est" and due
        self.faults()
        e.call("Rescan")
        self.assertEqual(self.cert(uri)["ca"], "est")
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(res["needs_person"], [uri])
        # a listed token still has the records of its vanished certificates pruned
        e.pkcs11_tool("agent", "--delete-object", "--type", "cert", "--id", self.cert(uri)["id"])
        e.call("Rescan")
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(res["needs_person"], [])
        self.assertNotIn(sha, self.issued())


if __name__ == "__main__":
    main()
