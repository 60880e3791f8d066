"""Issue 15: every token flow on three PKCS#11 implementations — SoftHSM2,
tpm2-pkcs11 over swtpm, NSS softokn (with its init arguments) — and the
end of the story: the certificate just enrolled onto the token logs in to a
TLS server that requires a client certificate from that CA.

One daemon per module; the daemon loads tests/faultmod wrapping the real
module (modules by path, never the system p11-kit registrations), so the
same run counts C_Login calls and injects a token error mid-job.  SoftHSM
runs under OpenSC's pkcs11-spy as well: its log, distilled, must equal the
sequence documented in docs/tokens.md (tokens_sequence.py).

Each step's time is printed as "TIMING module operation seconds".
"""
import os
import subprocess
import sys
import time

from harness import (GLib, JOB_IFACE, MANAGER, NSS_MODULE, PATH, PIN, SOFTHSM, SPY_MODULE, TOKEN_IFACE, TPM2_MODULE,
                     TestCase, der, free_port, main, make_cert)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokens_sequence  # noqa: E402

NEW_PIN = "N3wPassw0rd"
WRONG_PIN = "Wr0ngPassw0rd"
CKR_PIN_INCORRECT = 0xa0


class Modules(TestCase):
    def setUp(self):
        super().setUp()
        # sanitizer builds: tpm2-pkcs11, NSS and SoftHSM allocate through
        # libcrypto, which has no frame pointers; only the full unwinder
        # reaches the module's frames that tests/lsan.supp names (the fault
        # module wraps every one), so their own leaks are told from ours
        self.env.full_leak_stacks = True

    def timed(self, op, fn, *a, **kw):
        t0 = time.monotonic()
        out = fn(*a, **kw)
        dt = time.monotonic() - t0
        self.timings.append((op, dt))
        sys.stderr.write("TIMING %s %s %.3f\n" % (self.kind, op, dt))
        return out

    def mark(self, op):
        """Where @op starts in the pkcs11-spy log (SoftHSM run only)."""
        if self.spy_log:
            self.spy_marks.append((op, os.path.getsize(self.spy_log) if os.path.exists(self.spy_log) else 0))

    def job(self, request):
        e = self.env
        path = e.enroll(request)
        return path, e.wait_job(path, 120)

    def objects(self, pin=PIN):
        login, objs = self.env.token_objects(self.real, self.label, pin, self.init_args)
        self.assertEqual(login, "ok")
        return objs

    def with_id(self, objs, hex_id):
        return sorted(o["class"] for o in objs if o["id"] == hex_id)

    def cert(self, uri):
        return [c for c in self.env.list_certs() if c["uri"] == uri][0]

    def portal(self, uri):
        """Log in to the portal with the certificate and key named by @uri
        (the key's URI is the certificate's with type=private)."""
        if uri is None:
            return self.env.tls_client(self.port, module=self.real, init_args=self.init_args)
        if self.kind == "nss":
            # the certificate as listed when it was on the token (a deleted
            # one is tried again with its key's URI: that must fail)
            for c in self.env.list_certs():
                self.ders.setdefault(c["uri"], c["der"])
            return self.env.tls_client_engine(self.port, self.real, uri.replace("type=cert", "type=private"),
                                              self.ders[uri], pin=self.pin, init_args=self.init_args)
        return self.env.tls_client(self.port, module=self.real, cert_uri=uri,
                                   key_uri=uri.replace("type=cert", "type=private"), pin=self.pin,
                                   init_args=self.init_args)

    def flow(self, kind):
        e = self.env
        self.kind, self.timings, self.spy_log, self.spy_marks = kind, [], None, []
        self.init_args, self.pin, self.ders = None, PIN, {}
        if kind == "softhsm":
            e.add_token("agent")
            self.real, self.label = SOFTHSM, "agent"
            wrapped = SOFTHSM
        elif kind == "tpm2":
            self.real, self.label = e.start_swtpm("tpm"), "tpm"
            wrapped = self.real
        else:
            self.init_args = e.make_nss_db()
            self.real, self.label, wrapped = NSS_MODULE, "NSS Certificate DB", NSS_MODULE
        e.use_fault_module(wrapped, self.init_args)
        if kind == "softhsm":
            # pkcs11-spy between the daemon and the fault module: it records
            # every call the daemon makes, failed ones included
            self.spy_log = os.path.join(e.tmp, "spy.log")
            e.env.update(PKCS11SPY=e.modules[0], PKCS11SPY_OUTPUT=self.spy_log)
            e.modules = [SPY_MODULE]
        e.start_est(users={"alice": {"otps": ["OTP-1", "OTP-2"]}}, validity=3600)
        e.add_est_profile("est")
        self.mark("start")
        e.start_daemon()

        # list: exactly the module's usable tokens; every URI parses back
        tokens = self.timed("list", e.list_tokens)
        mine = [t for t in tokens if t["label"] == self.label]
        self.assertEqual(len(mine), 1, tokens)
        if kind == "tpm2":
            self.assertEqual(len(tokens), 1, "the empty extra slot is not a token")
            # no libcrypto engine nor libp11 in the daemon (they break tss2's login)
            pid = e.conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                   "GetConnectionUnixProcessID", GLib.Variant("(s)", ("org.p11certd",)),
                                   None, 0, 5000, None).unpack()[0]
            with open("/proc/%d/maps" % pid) as f:
                maps = f.read()
            self.assertIn("libtpm2_pkcs11.so", maps)
            self.assertNotIn("engines-3", maps)
            self.assertNotIn("libp11.so", maps)
        for t in tokens:
            self.assertEqual(e.list_certs(token=t["uri"]), [])
        tok = mine[0]
        uri, tpath = tok["uri"], tok["path"]
        self.assertNotIn("%00", uri)
        if kind == "nss":
            # the read-only "NSS Generic Crypto Services" token beside it:
            # listed (read-only tokens can hold certificates), refuses writes
            generic = [t for t in tokens if "Generic Crypto" in t["label"]]
            self.assertEqual(len(generic), 1, tokens)
            logins = e.fault_calls("C_Login")
            msg = self.assertDBusError("NotSupported", "Enroll", "a{sv}", [{
                k: GLib.Variant("s", v) for k, v in (("ca", "local"), ("storage", "token"), ("pin", PIN),
                                                     ("token", generic[0]["uri"]), ("subject", "CN=x"))}])
            self.assertIn("read-only", msg)
            self.assertEqual(e.fault_calls("C_Login"), logins)

        # enroll EC P-256 onto the token from the local CA; delete; read back
        self.mark("enroll-local")
        _, (ok, err, msg) = self.timed("enroll-local", self.job, {
            "ca": "local", "storage": "token", "token": uri, "pin": PIN, "subject": "CN=local " + kind,
            "label": "local cert", "key_type": "ec-p256"})
        self.assertTrue(ok, "%s: %s" % (err, msg))
        local = [c for c in e.list_certs() if c["subject"].endswith("local " + kind)][0]
        self.assertTrue(local["id"], "the daemon always sets CKA_ID")
        self.assertEqual(local["key_type"], "ec-p256")
        got = self.with_id(self.objects(), local["id"])
        self.assertIn("certificate", got)
        self.assertIn("private key", got)
        self.mark("delete")
        res = self.timed("delete", e.call, "DeleteCert", "ssa{sv}", [local["uri"], PIN, {}])[0]
        self.assertGreaterEqual(res["keys_removed"], 1)
        self.assertEqual(self.with_id(self.objects(), local["id"]), [])
        self.assertNotIn(local["uri"], [c["uri"] for c in e.list_certs(token=uri)])

        # enroll over EST, then the portal: in with the token key, out without
        self.mark("enroll-est")
        path, (ok, err, msg) = self.timed("enroll-est", self.job, {
            "ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token", "token": uri, "pin": PIN,
            "label": "agent cert"})
        self.assertTrue(ok, "%s: %s" % (err, msg))
        est_uri = e.get_property(path, JOB_IFACE, "Result")
        self.port = e.start_tls_server(os.path.join(e.est_dir, "ca.pem"))
        self.mark(None)
        self.assertTrue(self.timed("portal-login", self.portal, est_uri), e.last_tls.stderr[-2000:])
        self.assertFalse(self.portal(None), "the portal lets a client without a certificate in")

        # renewal: the EST server sees TLS client auth signed by the token key
        self.mark("renew")
        path = self.timed("renew-start", e.call, "Renew", "sa{sv}", [est_uri, {"pin": GLib.Variant("s", PIN)}])[0]
        ok, err, msg = self.timed("renew", e.wait_job, path, 120)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        new_uri = e.get_property(path, JOB_IFACE, "Result")
        reenroll = [r for r in e.est_requests() if r.get("op") == "simplereenroll"]
        self.assertEqual([(r["client_cert"], r["status"]) for r in reenroll], [(True, 200)])
        self.mark(None)
        self.assertTrue(self.portal(new_uri), e.last_tls.stderr[-2000:])
        self.assertFalse(self.portal(est_uri), "the replaced certificate still logs in")
        new = self.cert(new_uri)
        self.mark("delete")
        e.call("DeleteCert", "ssa{sv}", [new_uri, PIN, {}])
        self.assertEqual(self.with_id(self.objects(), new["id"]), [])
        self.mark(None)
        self.assertFalse(self.portal(new_uri), "a deleted certificate still logs in")

        # a wrong PIN costs exactly one C_Login, never retried
        logins, refused = e.fault_calls("C_Login"), e.fault_calls("C_Login", CKR_PIN_INCORRECT)
        self.mark("wrong-pin")
        _, (ok, err, msg) = self.timed("wrong-pin", self.job, {
            "ca": "local", "storage": "token", "token": uri, "pin": WRONG_PIN, "subject": "CN=never"})
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.PinIncorrect", msg)
        self.assertEqual(e.fault_calls("C_Login") - logins, 1)
        self.assertEqual(e.fault_calls("C_Login", CKR_PIN_INCORRECT) - refused, 1)

        # change PIN: the token takes the new one
        self.mark("change-pin")
        self.timed("change-pin", e.call, "ChangePin", "ssa{sv}", [PIN, NEW_PIN, {}], path=tpath, iface=TOKEN_IFACE)
        before = self.objects(NEW_PIN)
        self.pin = NEW_PIN

        # a token error mid-job (writing the certificate) leaves nothing behind
        e.set_faults("C_CreateObject rv=CKR_DEVICE_ERROR")
        self.mark("token-error")
        _, (ok, err, msg) = self.timed("token-error", self.job, {
            "ca": "local", "storage": "token", "token": uri, "pin": NEW_PIN, "subject": "CN=half"})
        e.set_faults()
        self.assertFalse(ok)
        self.assertEqual(err, "org.p11certd.Error.TokenError", msg)
        self.assertEqual(sorted(map(str, self.objects(NEW_PIN))), sorted(map(str, before)))
        pending = os.path.join(e.state_dir, "pending")
        self.assertEqual(os.listdir(pending) if os.path.isdir(pending) else [], [])
        self.mark(None)
        self.assertTrue(e.get_property(tpath, TOKEN_IFACE, "Present"))
        self.assertNotIn(PIN, e.log("p11certd"))
        self.assertNotIn(NEW_PIN, e.log("p11certd"))
        if kind == "tpm2":
            # a certificate another application writes: tpm2-pkcs11 keeps its
            # own copy of the objects, so the daemon sees it after a Rescan
            path = os.path.join(e.tmp, "outside.der")
            with open(path, "wb") as f:
                f.write(der(make_cert("outside")[1]))
            r = subprocess.run(["pkcs11-tool", "--module", self.real, "--token-label", self.label, "--login",
                                "--pin", NEW_PIN, "--write-object", path, "--type", "cert", "--id", "77",
                                "--label", "outside"], env=e.env, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            e.tpm_flush()
            e.call("Rescan")
            self.assertIn("outside", [c["label"] for c in e.list_certs()])
        if self.spy_log:
            tokens_sequence.check(self.spy_log, self.spy_marks)

    def test_unreachable_tpm(self):
        """The system-wide tpm2-pkcs11 with no TPM to reach (what installing
        libtpm2-pkcs11-1 registers): reported, and the other modules serve."""
        e = self.env
        e.add_token("agent")
        e.env.update(TPM2_PKCS11_TCTI="swtpm:host=127.0.0.1,port=%d" % free_port(),
                     TPM2_PKCS11_STORE=os.path.join(e.tmp, "no-tpm"))
        os.makedirs(e.env["TPM2_PKCS11_STORE"])
        e.modules = [TPM2_MODULE, SOFTHSM]
        e.start_daemon()
        mods = {m["name"]: m for m in e.get_property(PATH, MANAGER, "Modules")}
        self.assertFalse(mods[TPM2_MODULE]["loaded"])
        self.assertIn("C_Initialize", mods[TPM2_MODULE]["error"])
        self.assertTrue(mods[SOFTHSM]["loaded"])
        self.assertEqual([t["label"] for t in e.list_tokens()], ["agent"])

    def test_nss_through_p11kit(self):
        """NSS registered with p11-kit (x-init-reserved:) and the daemon on
        its default p11-kit-proxy.so: the proxy hands the init arguments on."""
        e = self.env
        init_args = e.make_nss_db()
        e.modules = ["p11-kit-proxy.so"]
        e.start_daemon(wrap=e.p11kit_only(NSS_MODULE, init_args))
        tok = [t for t in e.list_tokens() if t["label"] == "NSS Certificate DB"]
        self.assertEqual(len(tok), 1, e.list_tokens())
        _, (ok, err, msg) = self.job({"ca": "local", "storage": "token", "token": tok[0]["uri"], "pin": PIN,
                                      "subject": "CN=via p11-kit"})
        self.assertTrue(ok, "%s: %s" % (err, msg))
        login, objs = e.token_objects(NSS_MODULE, "NSS Certificate DB", PIN, init_args)
        self.assertIn("private key", [o["class"] for o in objs])

    def test_always_authenticate(self):
        """A key that wants the PIN before every signature
        (CKA_ALWAYS_AUTHENTICATE, which SoftHSM enforces): the daemon logs in
        once more, context-specific, for each signature — the CSR at
        enrollment, the proof of possession and the TLS client
        authentication at renewal."""
        e = self.env
        e.add_token("agent")
        e.use_fault_module()
        e.set_faults("C_GenerateKeyPair always_auth=1")
        e.start_est(users={"alice": {"otps": ["OTP-1"]}}, validity=3600)
        e.add_est_profile("est")
        e.start_daemon()
        logins = e.fault_calls("C_Login")
        path = e.enroll({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token",
                         "token": "pkcs11:token=agent", "pin": PIN, "label": "aa"})
        ok, err, msg = e.wait_job(path, 120)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        # key generation session: user + context (the CSR); certificate write: user
        self.assertEqual(e.fault_calls("C_Login") - logins, 3)
        uri = e.get_property(path, JOB_IFACE, "Result")
        path = e.call("Renew", "sa{sv}", [uri, {"pin": GLib.Variant("s", PIN), "rekey": GLib.Variant("b", False)}])[0]
        ok, err, msg = e.wait_job(path, 120)
        self.assertTrue(ok, "%s: %s" % (err, msg))
        reenroll = [r for r in e.est_requests() if r.get("op") == "simplereenroll"]
        self.assertEqual([(r["client_cert"], r["status"]) for r in reenroll], [(True, 200)])
        self.assertFalse([line for line in open(e.fault_log) if line.startswith("C_Sign ") and "rv=0x00000000" not in line])

    def test_orphan_records_by_identity(self):
        """Keys left by an interrupted enrollment are removed at the next
        login to *their* token: a record names the token by its URI (label,
        manufacturer, model, serial), not by the serial alone; an older
        record whose URI carries NUL padding is matched by its serial."""
        e = self.env
        serial = e.add_token("agent")
        e.put_keypair("agent", "a1", "orphan")
        e.put_keypair("agent", "b2", "not ours")
        pending = os.path.join(e.state_dir, "pending")
        os.makedirs(pending, mode=0o700)
        for obj_id, uri in (("a1", "pkcs11:model=SoftHSM%%20v2%%00%%00;serial=%s;token=agent" % serial),
                            ("b2", "pkcs11:serial=%s;token=another" % serial)):
            fd = os.open(os.path.join(pending, obj_id + ".ini"), os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("[pending]\ntoken-uri=%s\ntoken-serial=%s\nid=%s\npid=1\ncreated=1\n"
                        % (uri, serial, obj_id))
        e.start_daemon()
        tpath = e.list_tokens()[0]["path"]
        e.call("ChangePin", "ssa{sv}", [PIN, NEW_PIN, {}], path=tpath, iface=TOKEN_IFACE)
        ids = sorted({o["id"] for o in e.objects("agent", pin=NEW_PIN)})
        self.assertEqual(ids, ["b2"], "the orphan of this token is removed, the other token's record is not")
        self.assertEqual(sorted(os.listdir(pending)), ["b2.ini"])
        self.assertIn("interrupted enrollment", e.log("p11certd"))

    def test_softhsm(self):
        self.flow("softhsm")

    def test_tpm2(self):
        self.flow("tpm2")

    def test_nss(self):
        self.flow("nss")


if __name__ == "__main__":
    main()
