"""Issue 13: renewal is bound to the token and key a certificate was issued
to.  Two SoftHSM tokens: the victim's ("agent") and the attacker's
("mallory"); the attacker copies the victim's certificate (everyone can read
its DER through ListCerts) onto their own token, next to a key of their
own with the same CKA_ID, and asks to renew the copy."""
import os

from harness import GLib, JOB_IFACE, PIN, TestCase, main


class RenewSecurity(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.add_token("mallory")

    def enroll(self, **req):
        e = self.env
        r = {"ca": "local", "token": "pkcs11:token=agent", "pin": PIN, "subject": "CN=victim", "label": "victim"}
        r.update(req)
        path = e.enroll(r)
        ok, err, msg = e.wait_job(path, 60)
        self.assertTrue(ok, msg)
        return e.get_property(path, JOB_IFACE, "Result")

    def cert(self, uri):
        return [c for c in self.env.list_certs() if c["uri"] == uri][0]

    def issued(self):
        with open(os.path.join(self.env.state_dir, "issued.ini")) as f:
            return f.read()

    def issued_by_local_ca(self):
        return self.env.log("p11certd").count("The local CA issued")

    def renew(self, uri, **opts):
        o = {"pin": GLib.Variant("s", PIN)}
        o.update({k: GLib.Variant("b" if isinstance(v, bool) else "s", v) for k, v in opts.items()})
        return self.env.call("Renew", "sa{sv}", [uri, o])[0]

    def copy_to(self, label, cert, obj_id="77"):
        """The attacker's own key pair with CKA_ID @obj_id and the victim's
        certificate written next to it; returns the copy's URI."""
        e = self.env
        e.put_keypair(label, obj_id, "victim copy")
        e.put_cert(label, bytes(cert["der"]), obj_id, "victim copy")
        e.call("Rescan")
        return [c["uri"] for c in e.list_certs() if c["label"] == "victim copy"][0]

    def test_copy_on_another_token_is_refused(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll()
        genuine = self.cert(uri)
        record = self.issued()
        self.assertIn("token-serial=", record)
        self.assertIn("key-sha256=", record)
        copy = self.copy_to("mallory", genuine)
        self.assertIn("token=mallory", copy)
        before = sorted((o["type"], o["id"]) for o in e.objects("mallory"))
        msg = self.assertDBusError("NotAuthorized", "Renew", "sa{sv}", [copy, {"pin": GLib.Variant("s", PIN)}])
        self.assertIn("is a copy", msg)
        self.assertIn('token "agent"', msg)
        # nothing issued, nothing written, no record touched
        self.assertEqual(self.issued_by_local_ca(), 1)
        self.assertEqual(sorted((o["type"], o["id"]) for o in e.objects("mallory")), before)
        self.assertEqual(self.issued(), record)
        # RenewDue does not renew the copy either
        e.stop_daemon()
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(res["jobs"], [])
        self.assertIn(copy, res["not_renewable"])
        self.assertEqual(res["needs_person"], [uri])
        # the genuine certificate still renews (an EC key, signing on the token)
        ok, err, msg = e.wait_job(self.renew(uri), 60)
        self.assertTrue(ok, msg)
        self.assertEqual(self.issued_by_local_ca(), 2)

    def test_copy_on_the_same_token_needs_the_key(self):
        """The proof of possession, not a CKA_ID match: a copy under another
        CKA_ID on the recorded token, next to a key that is not its own."""
        e = self.env
        e.start_daemon()
        uri = self.enroll()
        genuine = self.cert(uri)
        record = self.issued()
        copy = self.copy_to("agent", genuine, "99")
        before = sorted((o["type"], o["id"]) for o in e.objects("agent"))
        for rekey in (True, False):
            ok, err, msg = e.wait_job(self.renew(copy, rekey=rekey), 60)
            self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"), msg)
            self.assertIn("private key is not on this token", msg)
        self.assertEqual(self.issued_by_local_ca(), 1)
        self.assertEqual(sorted((o["type"], o["id"]) for o in e.objects("agent")), before)
        self.assertEqual(self.issued(), record)

    def test_rsa_key_proves_possession(self):
        e = self.env
        e.start_daemon()
        uri = self.enroll(key_type="rsa-2048")
        old = self.cert(uri)
        self.assertEqual(old["key_type"], "rsa-2048")
        ok, err, msg = e.wait_job(self.renew(uri, rekey=False), 60)
        self.assertTrue(ok, msg)
        ok, err, msg = e.wait_job(self.renew(self.cert_by_subject("CN=victim")["uri"]), 60)
        self.assertTrue(ok, msg)
        self.assertEqual(self.issued_by_local_ca(), 3)

    def cert_by_subject(self, subject):
        return [c for c in self.env.list_certs() if c.get("subject") == subject][0]

    def test_system_copy_is_refused(self):
        e = self.env
        e.start_daemon()
        path = e.enroll({"ca": "local", "storage": "system", "name": "web", "subject": "CN=web"})
        self.assertTrue(e.wait_job(path, 60)[0])
        record = self.issued()
        copy = self.copy_to("mallory", self.cert("system:web"))
        msg = self.assertDBusError("NotAuthorized", "Renew", "sa{sv}", [copy, {"pin": GLib.Variant("s", PIN)}])
        self.assertIn("system store as system:web", msg)
        self.assertEqual(self.issued_by_local_ca(), 1)
        self.assertEqual(self.issued(), record)

    def test_old_record_migrates(self):
        """A record of the previous version (profile, URI, not-after) keeps
        working: the copy is refused by what its URI names, the genuine
        certificate renews after its proof of possession, and its new record
        names the token."""
        e = self.env
        e.start_daemon()
        uri = self.enroll()
        genuine = self.cert(uri)
        copy = self.copy_to("mallory", genuine)
        e.stop_daemon()
        old = "[%s]\nca=local\nuri=%s\nnot-after=%d\n" % (genuine["sha256"], uri, genuine["not_after"])
        with open(os.path.join(e.state_dir, "issued.ini"), "w") as f:
            f.write(old)
        e.start_daemon()
        self.assertEqual(self.cert(uri)["ca"], "local")
        self.assertDBusError("NotAuthorized", "Renew", "sa{sv}", [copy, {"pin": GLib.Variant("s", PIN)}])
        self.assertEqual(self.issued(), old)
        ok, err, msg = e.wait_job(self.renew(uri), 60)
        self.assertTrue(ok, msg)
        record = self.issued()
        self.assertNotIn(genuine["sha256"], record)
        self.assertIn("storage=token", record)
        self.assertIn("token-label=agent", record)


if __name__ == "__main__":
    main()
