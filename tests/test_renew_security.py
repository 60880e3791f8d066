"""Issue 13: renewal is bound to the token and key a certificate was issued
to.  Two SoftHSM tokens: the victim's ("agent") and the attacker's
("mallory"); the attacker copies the victim's certificate (everyone can read
its DER through ListCerts) onto their own token, next to a key of their
own with the same CKA_ID, and asks to renew the copy."""
import os

from harness import GLib, JOB_IFACE, PIN, TestCase, main, wait_for


class Base(TestCase):
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

    def cert_by_subject(self, subject):
        return [c for c in self.env.list_certs() if c.get("subject") == subject][0]


class RenewSecurity(Base):
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
        # ListCerts names the issuing CA for the genuine certificate only
        self.assertEqual(self.cert(uri)["ca"], "local")
        self.assertNotIn("ca", self.cert(copy))
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

    def test_system_copy_is_refused(self):
        e = self.env
        e.start_daemon()
        path = e.enroll({"ca": "local", "storage": "system", "name": "web", "subject": "CN=web"})
        self.assertTrue(e.wait_job(path, 60)[0])
        record = self.issued()
        copy = self.copy_to("mallory", self.cert("system:web"))
        self.assertEqual(self.cert("system:web")["ca"], "local")
        self.assertNotIn("ca", self.cert(copy))
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


class PinFiles(Base):
    """A profile's PIN file (unattended renewal) goes only to the token a
    certificate was issued to, only to the one pin-file-token= names, and
    never again to a token that refused it until the file changes.  The
    fault module wraps SoftHSM and logs every C_Login with its token."""

    def setUp(self):
        super().setUp()
        e = self.env
        e.use_fault_module()
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        self.pin_file = os.path.join(e.tmp, "agent.pin")
        self.write_pin(PIN)

    def write_pin(self, pin):
        tmp = self.pin_file + ".new"
        with open(tmp, "w") as f:
            f.write(pin + "\n")
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.pin_file)

    def profile(self, **kv):
        conf = {"type": "local", "pin-file": self.pin_file}
        conf.update({k.replace("_", "-"): v for k, v in kv.items()})
        with open(os.path.join(self.env.ca_dir, "lab.conf"), "w") as f:
            f.write("[ca]\n" + "".join("%s=%s\n" % kv for kv in conf.items()))

    def logins(self, label):
        return self.env.fault_calls("C_Login@" + label)

    def renew_due(self):
        return self.env.call("RenewDue", "a{sv}", [{}])[0]

    def test_pin_goes_only_to_the_recorded_token(self):
        e = self.env
        self.profile()
        e.start_daemon()
        uri = self.enroll(ca="lab")
        copy = self.copy_to("mallory", self.cert(uri))
        self.assertEqual(self.logins("mallory"), 0)
        agent = self.logins("agent")
        res = self.renew_due()
        self.assertEqual(len(res["jobs"]), 1)
        self.assertTrue(e.wait_job(res["jobs"][0], 60)[0])
        self.assertEqual(res["not_renewable"], [copy])
        self.assertIn("is a copy", res["reasons"][copy])
        self.assertGreater(self.logins("agent"), agent)
        self.assertEqual(self.logins("mallory"), 0, "the PIN file's PIN went to the attacker's token")
        # bound to the agent token: a certificate of this profile on another
        # token (here enrolled there by a person) needs a person
        e.stop_daemon()
        self.profile(pin_file_token="pkcs11:token=agent")
        e.start_daemon()
        path = e.enroll({"ca": "lab", "token": "pkcs11:token=mallory", "pin": PIN, "subject": "CN=mallory",
                         "label": "own"})
        self.assertTrue(e.wait_job(path, 60)[0])
        own = e.get_property(path, JOB_IFACE, "Result")
        mallory = self.logins("mallory")
        res = self.renew_due()
        self.assertEqual(res["needs_person"], [own])
        self.assertIn("only for pkcs11:token=agent", res["reasons"][own])
        self.assertEqual(len(res["jobs"]), 1)              # the agent's certificate
        self.assertTrue(e.wait_job(res["jobs"][0], 60)[0])
        self.assertEqual(self.logins("mallory"), mallory)

    def test_refused_pin_file_is_not_sent_again(self):
        e = self.env
        self.profile()
        e.start_daemon()
        uri = self.enroll(ca="lab")
        self.write_pin("Wr0ngPin77")
        base = self.logins("agent")
        res = self.renew_due()
        ok, err, msg = e.wait_job(res["jobs"][0], 60)
        self.assertEqual(err, "org.p11certd.Error.PinIncorrect", msg)
        self.assertIn(self.pin_file, msg)
        self.assertEqual(self.logins("agent"), base + 1)

        def refused_again():
            res = self.renew_due()
            self.assertEqual((res["jobs"], res["needs_person"]), ([], [uri]))
            self.assertIn("refused the PIN in " + self.pin_file, res["reasons"][uri])
            self.assertEqual(self.logins("agent"), base + 1)
        refused_again()
        e.stop_daemon()
        e.start_daemon()                       # across a restart
        refused_again()
        self.assertIn("needs a person: the token refused the PIN", e.log("p11certd"))
        e.set_faults("C_GetSlotList hide=1", "C_GetSlotInfo absent=1")     # and a re-insertion
        e.call("Rescan")
        self.assertEqual(e.list_tokens(), [])
        e.set_faults()
        e.call("Rescan")
        refused_again()
        for name in ("pin-refused.ini", "pin-refused.key"):
            self.assertEqual(os.stat(os.path.join(e.state_dir, name)).st_mode & 0o777, 0o600)
        with open(os.path.join(e.state_dir, "pin-refused.ini")) as f:
            self.assertNotIn("Wr0ngPin77", f.read())
        # the file changed: tried again (once), and it works
        self.write_pin(PIN)
        res = self.renew_due()
        self.assertEqual(len(res["jobs"]), 1)
        ok, err, msg = e.wait_job(res["jobs"][0], 60)
        self.assertTrue(ok, msg)
        self.assertGreater(self.logins("agent"), base + 1)

    def test_one_renewal_per_certificate(self):
        """Two RenewDue calls (and a Renew) while the first renewal is held in
        key generation: one job renews the certificate, the others get it."""
        e = self.env
        self.profile()
        e.start_daemon()
        uri = self.enroll(ca="lab")
        e.set_faults("C_GenerateKeyPair delay=4000 count=1")
        first = self.renew_due()
        self.assertEqual(len(first["jobs"]), 1)
        job = first["jobs"][0]
        wait_for(lambda: e.fault_calls("+C_GenerateKeyPair") == 1, 20, "key generation held")
        second = self.renew_due()
        self.assertEqual(second["jobs"], [job], "a second renewal of the same certificate was started")
        msg = self.assertDBusError("Busy", "Renew", "sa{sv}", [uri, {"pin": GLib.Variant("s", PIN)}])
        self.assertIn(job, msg)
        ok, err, msg = e.wait_job(job, 60)
        self.assertTrue(ok, msg)
        self.assertEqual(self.issued_by_local_ca(), 2)
        self.assertEqual(len([c for c in e.list_certs() if c.get("subject") == "CN=victim"]), 1)
        self.assertEqual(len(e.objects("agent", kind="privkey")), 1)
        # once it ended, the (new) certificate renews again
        third = self.renew_due()
        self.assertEqual(len(third["jobs"]), 1)
        self.assertNotEqual(third["jobs"][0], job)
        self.assertTrue(e.wait_job(third["jobs"][0], 60)[0])


if __name__ == "__main__":
    main()
