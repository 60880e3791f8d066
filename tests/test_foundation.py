"""Issue 2: listing tokens and certificates from real PKCS#11 modules."""
import calendar
import hashlib
import os
import re
import subprocess

from harness import (GLib, PIN, SOFTHSM, TestCase, main, make_cert, make_key, der, PATH, MANAGER,
                     TOKEN_IFACE)

SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"


class Foundation(TestCase):
    def test_no_token(self):
        self.env.start_daemon()
        self.assertEqual(self.env.list_tokens(), [])
        self.assertEqual(self.env.list_certs(), [])
        self.assertEqual(self.env.get_property(PATH, MANAGER, "Tokens"), [])
        self.assertEqual(self.env.get_property(PATH, MANAGER, "Version"), 1)
        mods = self.env.get_property(PATH, MANAGER, "Modules")
        self.assertEqual(len(mods), 1)
        self.assertTrue(mods[0]["loaded"])

    def test_one_token_several_certs(self):
        e = self.env
        serial = e.add_token("agent")
        ec_cert = e.put_cert_for_key("agent", "01", "ec user", "EC User", kind="ec")
        rsa_cert = e.put_cert_for_key("agent", "02", "rsa user", "RSA User", kind="rsa")
        _, lone = make_cert("No Key", make_key("rsa"))
        e.put_cert("agent", lone, "03", "no key")
        e.start_daemon()

        tokens = e.list_tokens()
        self.assertEqual(len(tokens), 1)
        t = tokens[0]
        self.assertEqual(t["label"], "agent")
        self.assertEqual(t["serial"], serial)
        self.assertTrue(t["path"].startswith("/org/p11certd/tokens/"))
        self.assertIn("token=agent", t["uri"])
        self.assertFalse(t["pin_locked"])
        # the Token object carries the same as properties
        self.assertEqual(e.get_property(t["path"], TOKEN_IFACE, "Serial"), serial)
        self.assertTrue(e.get_property(t["path"], TOKEN_IFACE, "LoginRequired"))
        self.assertEqual(e.get_property(PATH, MANAGER, "Tokens"), [t["path"]])

        certs = {c["label"]: c for c in e.list_certs()}
        self.assertEqual(set(certs), {"ec user", "rsa user", "no key"})
        ec = certs["ec user"]
        self.assertEqual(ec["subject"], "CN=EC User")
        self.assertEqual(ec["issuer"], "CN=Test CA")
        self.assertEqual(ec["id"], "01")
        self.assertEqual(ec["storage"], "token")
        self.assertEqual(ec["token"], t["path"])
        self.assertEqual(ec["key_type"], "ec-p256")
        self.assertTrue(ec["has_private_key"])
        self.assertEqual(bytes(ec["der"]), der(ec_cert))
        self.assertEqual(int(ec["serial"], 16), ec_cert.serial_number)
        self.assertEqual(ec["not_after"], calendar.timegm(ec_cert.not_valid_after.utctimetuple()))
        self.assertEqual(ec["not_before"], calendar.timegm(ec_cert.not_valid_before.utctimetuple()))
        self.assertEqual(ec["sha256"], hashlib.sha256(der(ec_cert)).hexdigest())
        self.assertTrue(ec["uri"].startswith("pkcs11:"))
        self.assertIn("type=cert", ec["uri"])
        self.assertIn("id=%01", ec["uri"])
        self.assertEqual(certs["rsa user"]["key_type"], "rsa-2048")
        self.assertTrue(certs["rsa user"]["has_private_key"])
        self.assertFalse(certs["no key"]["has_private_key"])
        self.assertIn("days_left", ec)
        self.assertFalse(ec["renewal_due"])

        # cross-check with the peers: pkcs11-tool and p11tool see the same certificates
        tool = e.objects("agent", kind="cert")
        self.assertEqual(sorted((o["label"], o["id"]) for o in tool),
                         sorted((c["label"], c["id"]) for c in certs.values()))
        out = subprocess.run(["p11tool", "--provider", SOFTHSM, "--list-all-certs", "pkcs11:token=agent"],
                             capture_output=True, text=True, env=e.env, check=True).stdout
        p11tool_uris = re.findall(r"URL: (pkcs11:\S+)", out)
        self.assertEqual(len(p11tool_uris), 3)
        for c in certs.values():
            # same object named by both: every attribute we put in the URI appears in p11tool's
            ours = dict(a.split("=", 1) for a in c["uri"][len("pkcs11:"):].split(";"))
            match = [u for u in p11tool_uris
                     if "object=" + ours["object"] in u and "id=" + ours["id"] in u]
            self.assertEqual(len(match), 1, (c["uri"], p11tool_uris))
            self.assertIn("serial=" + ours["serial"], match[0])

    def test_two_tokens_filter(self):
        e = self.env
        e.add_token("first")
        e.add_token("second")
        e.put_cert_for_key("first", "0a", "one", "First Cert")
        e.put_cert_for_key("second", "0b", "two", "Second Cert")
        e.start_daemon()
        tokens = {t["label"]: t for t in e.list_tokens()}
        self.assertEqual(set(tokens), {"first", "second"})
        self.assertNotEqual(tokens["first"]["path"], tokens["second"]["path"])
        self.assertEqual(len(e.list_certs()), 2)
        only = e.list_certs(token=tokens["second"]["uri"])
        self.assertEqual([c["label"] for c in only], ["two"])
        only = e.list_certs(token=tokens["first"]["path"])
        self.assertEqual([c["label"] for c in only], ["one"])
        self.assertEqual(e.list_certs(storage="system"), [])
        # ObjectManager exports both tokens
        objs = e.call("GetManagedObjects", iface="org.freedesktop.DBus.ObjectManager")[0]
        self.assertEqual(set(objs), {tokens["first"]["path"], tokens["second"]["path"]})
        self.assertEqual(objs[tokens["first"]["path"]][TOKEN_IFACE]["Label"], "first")

    def test_200_certs(self):
        e = self.env
        e.add_token("big")
        e.put_many_certs("big", 200)
        e.start_daemon()
        listed = e.list_certs()
        self.assertEqual(len(listed), 200)
        self.assertEqual(len({c["uri"] for c in listed}), 200)
        self.assertTrue(all("subject" in c for c in listed))

    def test_garbage_value(self):
        e = self.env
        e.add_token("bad")
        e.put_cert_for_key("bad", "01", "good", "Good Cert")
        e.put_raw_cert("bad", b"\x30\x03garbage-not-a-certificate", "02", "garbage")
        e.start_daemon()
        certs = {c["label"]: c for c in e.list_certs()}
        self.assertIn("error", certs["garbage"])
        self.assertNotIn("subject", certs["garbage"])
        self.assertTrue(certs["garbage"]["uri"].startswith("pkcs11:"))
        self.assertEqual(certs["good"]["subject"], "CN=Good Cert")

    def test_missing_module(self):
        e = self.env
        e.add_token("ok")
        e.modules = ["/nonexistent/libnothing.so", SOFTHSM]
        e.start_daemon()
        mods = {m["name"]: m for m in e.get_property(PATH, MANAGER, "Modules")}
        self.assertFalse(mods["/nonexistent/libnothing.so"]["loaded"])
        self.assertIn("Cannot load", mods["/nonexistent/libnothing.so"]["error"])
        self.assertTrue(mods[SOFTHSM]["loaded"])
        self.assertEqual(len(e.list_tokens()), 1)
        self.assertIn("not loaded", e.log("p11certd"))

    def test_p11kit_proxy_default(self):
        # the default: every module registered with p11-kit (SoftHSM registers itself)
        e = self.env
        e.add_token("viaproxy")
        e.modules = ["p11-kit-proxy.so"]
        e.start_daemon()
        labels = [t["label"] for t in e.list_tokens()]
        self.assertIn("viaproxy", labels)

    def test_malformed_options(self):
        e = self.env
        e.add_token("t")
        e.start_daemon()
        msg = self.assertDBusError("InvalidArgs", "ListCerts", "a{sv}", [{"storage": GLib.Variant("i", 3)}])
        self.assertIn("storage", msg)
        msg = self.assertDBusError("InvalidArgs", "ListCerts", "a{sv}", [{"colour": GLib.Variant("s", "x")}])
        self.assertIn("colour", msg)
        msg = self.assertDBusError("InvalidArgs", "ListCerts", "a{sv}", [{"storage": GLib.Variant("s", "cloud")}])
        self.assertIn("storage", msg)
        self.assertDBusError("TokenNotPresent", "ListCerts", "a{sv}",
                             [{"token": GLib.Variant("s", "pkcs11:token=nosuch")}])
        self.assertDBusError("TokenNotPresent", "ListCerts", "a{sv}",
                             [{"token": GLib.Variant("s", "/org/p11certd/tokens/nosuch")}])
        msg = self.assertDBusError("InvalidArgs", "ListCerts", "a{sv}", [{"token": GLib.Variant("s", "http://x")}])
        self.assertIn("token", msg)
        msg = self.assertDBusError("InvalidArgs", "ListCerts", "a{sv}",
                                   [{"token": GLib.Variant("s", "pkcs11:token=t;pin-value=1234")}])
        self.assertIn("PIN", msg)
        # wrong signature altogether: refused against the interface before a handler sees it
        name, _ = e.call_error("ListCerts", "s", ["x"])
        self.assertEqual(name, "org.freedesktop.DBus.Error.InvalidArgs")
        name, _ = e.call_error("NoSuchMethod")
        self.assertEqual(name, "org.freedesktop.DBus.Error.UnknownMethod")

    def test_cache(self):
        """A warm ListCerts does not reopen the module: count PKCS#11 calls with pkcs11-spy."""
        e = self.env
        e.add_token("spy")
        e.put_cert_for_key("spy", "01", "c", "Cached")
        spylog = os.path.join(e.tmp, "spy.log")
        e.env["PKCS11SPY"] = SOFTHSM
        e.env["PKCS11SPY_OUTPUT"] = spylog
        e.modules = [SPY]
        e.start_daemon()
        self.assertEqual(len(e.list_certs()), 1)
        before = open(spylog).read().count("C_FindObjectsInit")
        self.assertGreater(before, 0)
        for _ in range(5):
            self.assertEqual(len(e.list_certs()), 1)
        after = open(spylog).read().count("C_FindObjectsInit")
        self.assertEqual(before, after, "warm ListCerts went to the token")
        # a change made behind the daemon's back shows after Rescan
        e.put_cert_for_key("spy", "02", "d", "Added later")
        e.call("Rescan")
        self.assertEqual(len(e.list_certs()), 2)

    def test_cache_follows_changes(self):
        """The daemon's own changes show at once in every shape of the call
        (warm replies are kept per shape: all tokens, one token).  Plain
        SoftHSM: pkcs11-spy leaks what it decodes of the CKA_SUBJECTs an enrollment writes (LeakSanitizer)."""
        e = self.env
        e.add_token("own")
        e.put_cert_for_key("own", "01", "c", "Cached")
        e.put_cert_for_key("own", "02", "d", "Added later")
        e.start_daemon()
        uri = "pkcs11:token=own"
        self.assertEqual(len(e.list_certs()), 2)
        for _ in range(3):
            self.assertEqual(len(e.list_certs(token=uri)), 2)
        victim = [c["uri"] for c in e.list_certs(token=uri) if c["subject"] == "CN=Added later"][0]
        e.call("DeleteCert", "ssa{sv}", [victim, PIN, {}])
        self.assertEqual([c["subject"] for c in e.list_certs(token=uri)], ["CN=Cached"])
        self.assertEqual([c["subject"] for c in e.list_certs()], ["CN=Cached"])
        # an enrollment: its certificate, and its issuance record ("ca")
        path = e.enroll({"ca": "local", "storage": "token", "token": uri, "pin": PIN, "subject": "CN=cached"})
        ok, err, msg = e.wait_job(path, 60)
        self.assertTrue(ok, msg)
        new = [c for c in e.list_certs(token=uri) if c.get("subject") == "CN=cached"]
        self.assertEqual([c.get("ca") for c in new], ["local"])
        self.assertIn("CN=cached", [c.get("subject") for c in e.list_certs()])

    def test_busctl_and_introspection(self):
        e = self.env
        e.add_token("b")
        e.put_cert_for_key("b", "01", "c", "Busctl")
        e.start_daemon()
        r = subprocess.run(["busctl", "--address=" + e.bus_address, "call", "org.p11certd", "/org/p11certd",
                            "org.p11certd1.Manager", "ListCerts", "a{sv}", "0"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("CN=Busctl", r.stdout)
        r = subprocess.run(["busctl", "--address=" + e.bus_address, "introspect", "--xml-interface",
                            "org.p11certd", "/org/p11certd"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("org.gtk.GDBus.DocString", r.stdout)
        self.assertIn("ListCerts", r.stdout)


    def test_bus_object_model(self):
        """What the daemon's connection (daemon/p11c-bus.c) does for every
        object: introspection with child nodes, Properties Get/GetAll/Set,
        Peer, and the errors for what is not there."""
        e = self.env
        e.add_token("om")
        e.start_daemon()
        token = e.list_tokens()[0]["path"]
        r = subprocess.run(["busctl", "--address=" + e.bus_address, "tree", "--list", "org.p11certd"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(token, r.stdout.split())   # found by walking the child nodes from /
        xml = e.call("Introspect", iface="org.freedesktop.DBus.Introspectable", path=token)[0]
        for iface in (TOKEN_IFACE, "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Peer"):
            self.assertIn('<interface name="%s">' % iface, xml)
        # GetAll and Get agree; Set is refused
        props = e.call("GetAll", "s", [TOKEN_IFACE], path=token, iface="org.freedesktop.DBus.Properties")[0]
        self.assertEqual(props["Label"], "om")
        self.assertEqual(e.get_property(token, TOKEN_IFACE, "Label"), "om")
        name, msg = e.call_error("Set", "ssv", [MANAGER, "Version", GLib.Variant("u", 9)],
                                 iface="org.freedesktop.DBus.Properties")
        self.assertEqual(name, "org.freedesktop.DBus.Error.InvalidArgs")
        self.assertIn("not writable", msg)
        name, _ = e.call_error("Get", "ss", [MANAGER, "NoSuchProperty"], iface="org.freedesktop.DBus.Properties")
        self.assertEqual(name, "org.freedesktop.DBus.Error.InvalidArgs")
        name, _ = e.call_error("GetAll", "s", ["org.example.Nothing"], iface="org.freedesktop.DBus.Properties")
        self.assertEqual(name, "org.freedesktop.DBus.Error.InvalidArgs")
        # Peer on any object; nothing at a path that has no object
        e.call("Ping", iface="org.freedesktop.DBus.Peer", path=token)
        name, _ = e.call_error("ListCerts", "a{sv}", [{}], path="/org/p11certd/nothing")
        self.assertEqual(name, "org.freedesktop.DBus.Error.UnknownMethod")
        name, _ = e.call_error("ChangePin", "ssa{sv}", ["a", "b", {}], path=PATH)   # a Token method on the Manager
        self.assertEqual(name, "org.freedesktop.DBus.Error.UnknownMethod")
        # a call answered in the same message the daemon received keeps working
        self.assertEqual(e.list_certs(), [])


if __name__ == "__main__":
    main()
