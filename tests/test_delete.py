"""Issue 3: DeleteCert with the token PIN, never burning PIN attempts, ChangePin
and the PIN policy — on SoftHSM2 through the real bus."""
import os
import threading

from harness import GLib, PIN, SOFTHSM, TOKEN_IFACE, TestCase, main, make_cert, make_key, Gio, error_name

SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"


class Delete(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.put_cert_for_key("agent", "01", "old cert", "Old Agent")
        e.put_cert_for_key("agent", "02", "other", "Other Agent")

    def spy(self):
        """Route the module through OpenSC's pkcs11-spy to count calls."""
        e = self.env
        self.spylog = os.path.join(e.tmp, "spy.log")
        e.env["PKCS11SPY"] = SOFTHSM
        e.env["PKCS11SPY_OUTPUT"] = self.spylog
        e.modules = [SPY]

    def logins(self):
        return open(self.spylog).read().count("C_Login")

    def cert(self, label):
        return [c for c in self.env.list_certs() if c["label"] == label][0]

    def test_delete_with_key(self):
        e = self.env
        e.start_daemon()
        c = self.cert("old cert")
        self.assertTrue(c["has_private_key"])
        res = e.call("DeleteCert", "ssa{sv}", [c["uri"], PIN, {}])[0]
        self.assertEqual(res["certificate"], c["uri"])
        self.assertEqual(len(res["removed"]), 3)     # cert, private key, public key
        self.assertEqual(res["keys_removed"], 2)
        objs = e.objects("agent")
        self.assertEqual(sorted((o["type"], o["id"]) for o in objs),
                         [("certificate", "02"), ("private key", "02"), ("public key", "02")])
        self.assertEqual([x["label"] for x in e.list_certs()], ["other"])
        self.assertIn("Deleted certificate", e.log("p11certd"))
        self.assertNotIn(PIN, e.log("p11certd"))

    def test_keep_key(self):
        e = self.env
        e.start_daemon()
        c = self.cert("old cert")
        res = e.call("DeleteCert", "ssa{sv}", [c["uri"], PIN, {"keep_key": GLib.Variant("b", True)}])[0]
        self.assertEqual(res["removed"], [c["uri"]])
        kinds = sorted(o["type"] for o in e.objects("agent") if o["id"] == "01")
        self.assertEqual(kinds, ["private key", "public key"])

    def test_shared_key_id_untouched(self):
        e = self.env
        _, extra = make_cert("Second Use", make_key())
        e.put_cert("agent", extra, "01", "second cert")
        e.start_daemon()
        res = e.call("DeleteCert", "ssa{sv}", [self.cert("old cert")["uri"], PIN, {}])[0]
        self.assertEqual(res["keys_removed"], 0)
        self.assertIn("same key", res["keys_kept"])
        labels = sorted((o["type"], o["label"]) for o in e.objects("agent") if o["id"] == "01")
        self.assertEqual(labels, [("certificate", "second cert"), ("private key", "old cert"),
                                  ("public key", "old cert")])

    def test_wrong_pin_once(self):
        e = self.env
        self.spy()
        e.start_daemon()
        c = self.cert("old cert")
        path = c["token"]
        self.assertFalse(e.get_property(path, TOKEN_IFACE, "PinCountLow"))
        changed = []
        e.conn.signal_subscribe("org.p11certd", "org.freedesktop.DBus.Properties", "PropertiesChanged", path,
                                None, Gio.DBusSignalFlags.NONE,
                                lambda *a: changed.append(a[5].unpack()[1]))
        before = self.logins()
        msg = self.assertDBusError("PinIncorrect", "DeleteCert", "ssa{sv}", [c["uri"], "Wr0ngPinX", {}])
        self.assertEqual(self.logins() - before, 1, "the daemon retried the wrong PIN")
        # the token now reports a low count: said in the message and as a property
        self.assertIn("Few PIN tries", msg)
        self.assertTrue(e.get_property(path, TOKEN_IFACE, "PinCountLow"))
        from harness import wait_for
        wait_for(lambda: any("PinCountLow" in ch for ch in changed), 5, "PropertiesChanged PinCountLow")
        # nothing was deleted
        self.assertEqual(len([o for o in e.objects("agent") if o["id"] == "01"]), 3)
        self.assertNotIn("Wr0ngPinX", e.log("p11certd"))

    def test_bad_pin_refused_before_token(self):
        e = self.env
        self.spy()
        e.start_daemon()
        c = self.cert("old cert")
        before = self.logins()
        for bad in ["", "x" * 257]:
            msg = self.assertDBusError("InvalidArgs", "DeleteCert", "ssa{sv}", [c["uri"], bad, {}])
            self.assertIn("PIN", msg)
        self.assertEqual(self.logins(), before)

    def test_unknown_uri(self):
        e = self.env
        e.start_daemon()
        c = self.cert("old cert")
        self.assertDBusError("NotFound", "DeleteCert", "ssa{sv}",
                             [c["uri"].replace("object=old%20cert", "object=nothing"), PIN, {}])
        # a certificate URI of a token that is not here
        self.assertDBusError("NotFound", "DeleteCert", "ssa{sv}",
                             ["pkcs11:token=elsewhere;id=%01;type=cert", PIN, {}])
        self.assertDBusError("InvalidArgs", "DeleteCert", "ssa{sv}", ["not-a-uri", PIN, {}])
        self.assertDBusError("InvalidArgs", "DeleteCert", "ssa{sv}", ["pkcs11:token=agent", PIN, {}])
        self.assertDBusError("InvalidArgs", "DeleteCert", "ssa{sv}",
                             ["pkcs11:token=agent;id=%01;type=private", PIN, {}])
        self.assertDBusError("InvalidArgs", "DeleteCert", "ssa{sv}",
                             [c["uri"], PIN, {"keep_keys": GLib.Variant("b", True)}])

    def test_uri_of_another_token(self):
        e = self.env
        e.add_token("second")
        e.put_cert_for_key("second", "01", "old cert", "Other Token Cert")
        e.start_daemon()
        c = self.cert("old cert")   # on "agent" (first listed by label match below)
        mine = [x for x in e.list_certs() if x["label"] == "old cert"]
        self.assertEqual(len(mine), 2)
        target = [x for x in mine if "token=second" in x["uri"]][0]
        e.call("DeleteCert", "ssa{sv}", [target["uri"], PIN, {}])
        # only the second token's certificate went
        self.assertEqual(len([o for o in e.objects("agent") if o["id"] == "01"]), 3)
        self.assertEqual([o for o in e.objects("second") if o["id"] == "01"], [])
        del c

    def test_concurrent_deletes(self):
        e = self.env
        e.start_daemon()
        uri = self.cert("old cert")["uri"]
        results = []

        def worker():
            conn = e.connect()
            try:
                conn.call_sync("org.p11certd", "/org/p11certd", "org.p11certd1.Manager", "DeleteCert",
                               GLib.Variant("(ssa{sv})", (uri, PIN, {})), None, 0, 60000, None)
                results.append("ok")
            except GLib.Error as err:
                results.append(error_name(err))
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(results), ["ok", "org.p11certd.Error.NotFound"])


class ChangePin(TestCase):
    def setUp(self):
        super().setUp()
        self.env.add_token("agent")
        self.env.start_daemon()
        self.path = self.env.list_tokens()[0]["path"]

    def change(self, old, new):
        return self.env.call("ChangePin", "ssa{sv}", [old, new, {}], path=self.path, iface=TOKEN_IFACE)

    def test_good(self):
        self.change(PIN, "N3wPassword")
        # the new PIN works (with the peer tool), the old one does not
        self.env.pkcs11_tool("agent", "-O", pin="N3wPassword")
        self.assertNotEqual(self.env.pkcs11_tool("agent", "-O", pin=PIN, check=False).returncode, 0)
        self.assertNotIn("N3wPassword", self.env.log("p11certd"))

    def test_policy_each_rule(self):
        cases = {
            "Sh0rtA": ["6 characters"],
            "nouppercase1": ["upper-case"],
            "NOLOWERCASE1": ["lower-case"],
            "NoDigitsHere": ["digit"],
            "ПарольПароль1": ["upper-case", "lower-case"],
            "abc": ["3 characters", "digit", "upper-case"],
        }
        for pin, rules in cases.items():
            msg = self.assertDBusError("PinPolicy", "ChangePin", "ssa{sv}", [PIN, pin, {}], path=self.path,
                                       iface=TOKEN_IFACE)
            for r in rules:
                self.assertIn(r, msg, pin)
        self.env.pkcs11_tool("agent", "-O")   # PIN unchanged

    def test_wrong_old_pin(self):
        self.assertDBusError("PinIncorrect", "ChangePin", "ssa{sv}", ["Wr0ngOldPin", "N3wPassword", {}],
                             path=self.path, iface=TOKEN_IFACE)
        self.env.pkcs11_tool("agent", "-O")   # still the old PIN

    def test_pin_policy_property(self):
        from harness import PATH, MANAGER
        pol = self.env.get_property(PATH, MANAGER, "PinPolicy")
        self.assertEqual(pol["min_length"], 8)
        self.assertTrue(pol["require_digit"] and pol["require_upper"] and pol["require_lower"])


class ConfiguredPolicy(TestCase):
    def test_config_changes_policy(self):
        e = self.env
        e.add_token("agent")
        e.extra_config = "[pin-policy]\nmin-length=12\nrequire-upper=false\n"
        e.start_daemon()
        path = e.list_tokens()[0]["path"]
        msg = self.assertDBusError("PinPolicy", "ChangePin", "ssa{sv}", [PIN, "abcdefgh123", {}], path=path,
                                   iface=TOKEN_IFACE)
        self.assertIn("at least 12", msg)
        e.call("ChangePin", "ssa{sv}", [PIN, "abcdefgh1234", {}], path=path, iface=TOKEN_IFACE)


if __name__ == "__main__":
    main()
