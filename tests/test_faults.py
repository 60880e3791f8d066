"""Token faults: the daemon's PKCS#11 module is tests/faultmod (p11c-fault.so)
wrapping SoftHSM2, which fails chosen calls on command.  For enrollment,
deletion and listing: a removed token, a token that is not present, a dead
session, a device error, a wrong or locked PIN, the final try, slow calls,
a token pulled mid-operation, cancel and SIGKILL at each job state.

Every case checks: a clear, specific error name; no orphan objects on the
token (every key has its certificate); no stale cache (after the fault is
cleared ListCerts shows what pkcs11-tool sees); the daemon alive (tearDown).

Setup goes through SoftHSM directly (softhsm2-util, pkcs11-tool), before
the fault rules are written."""
import os
import signal
import threading
import time

from harness import (GLib, JOB_IFACE, NAME, PATH, MANAGER, PIN, TOKEN_IFACE, TestCase,
                     error_name, main, wait_for)

ERR = "org.p11certd.Error."

COUNTS = {"faults": 0, "recoveries": 0}


def tearDownModule():
    print("\nfaults injected: %d, recoveries checked: %d" % (COUNTS["faults"], COUNTS["recoveries"]))


class FaultBase(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        self.old = e.put_cert_for_key("agent", "01", "old cert", "Old Agent")
        e.use_fault_module()

    # -- faults ---------------------------------------------------------------
    def faults(self, *rules):
        self.env.set_faults(*rules)
        if rules:
            COUNTS["faults"] += 1

    def clear(self):
        self.faults()

    def calls(self, fn):
        return self.env.fault_calls(fn)

    # -- checks ---------------------------------------------------------------
    def orphans(self, label="agent"):
        """Key ids on the token without a certificate of the same id."""
        objs = self.env.objects(label)
        certs = {o["id"] for o in objs if o["type"] == "certificate"}
        return sorted({o["id"] for o in objs if o["type"] in ("private key", "public key")} - certs)

    def pending(self):
        d = os.path.join(self.env.state_dir, "pending")
        return [p for p in os.listdir(d) if p.endswith(".ini")] if os.path.isdir(d) else []

    def check_truth(self, label="agent"):
        """With the faults cleared, ListCerts for the token equals what pkcs11-tool sees."""
        self.clear()
        objs = self.env.objects(label)
        truth = sorted((o["id"].lower(), o["label"]) for o in objs if o["type"] == "certificate")
        listed = sorted((c["id"].lower(), c["label"]) for c in self.env.list_certs(token="pkcs11:token=" + label))
        self.assertEqual(listed, truth, "stale cache: ListCerts differs from the token")
        COUNTS["recoveries"] += 1
        return objs

    def check_clean(self, label="agent"):
        self.clear()
        self.assertEqual(self.orphans(label), [], "orphan key(s) left on the token")
        self.check_truth(label)

    def old_intact(self):
        kinds = sorted(o["type"] for o in self.env.objects("agent") if o["id"] == "01")
        self.assertEqual(kinds, ["certificate", "private key", "public key"], "the good certificate was touched")

    def local_req(self, **kw):
        r = {"ca": "local", "storage": "token", "token": "pkcs11:token=agent", "pin": PIN,
             "subject": "CN=Fault Test", "label": "fresh"}
        r.update(kw)
        return r

    def run_job(self, req, timeout=60):
        e = self.env
        path = e.enroll(req)
        seen = e.watch_job(path)
        return path, e.wait_job(path, timeout, seen), seen

    def start_job(self, req):
        path = self.env.enroll(req)
        return path, self.env.watch_job(path)

    def wait_state(self, path, seen, state, timeout=20):
        def reached():
            if state in seen["states"]:
                return True
            try:
                return self.env.get_property(path, JOB_IFACE, "State") == state
            except GLib.Error:
                return False
        wait_for(reached, timeout, "job in %s" % state)


class DeleteFaults(FaultBase):
    def cert_uri(self):
        return [c for c in self.env.list_certs() if c["label"] == "old cert"][0]["uri"]

    def test_delete_faults(self):
        e = self.env
        e.start_daemon()
        uri = self.cert_uri()
        cases = [
            (["C_OpenSession rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_OpenSession rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
            (["C_Login rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
            (["C_Login rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_FindObjectsInit rv=CKR_SESSION_HANDLE_INVALID"], "TokenNotPresent"),
            (["C_FindObjectsInit rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_Login rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_FindObjectsInit rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_Login rv=CKR_PIN_INCORRECT"], "PinIncorrect"),
            (["C_DestroyObject rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_DestroyObject rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_DestroyObject rv=CKR_SESSION_HANDLE_INVALID"], "TokenNotPresent"),
            (["C_DestroyObject rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
        ]
        for rules, expected in cases:
            with self.subTest(rules=rules):
                self.faults(*rules)
                msg = self.assertDBusError(expected, "DeleteCert", "ssa{sv}", [uri, PIN, {}])
                # the first object could not be removed: nothing is claimed deleted
                self.assertNotIn("Deletion incomplete", msg)
                self.assertNotIn("pkcs11:", msg)
                self.old_intact()
                self.check_clean()
                self.assertIn("old cert", [c["label"] for c in e.list_certs()])
        # after all that the delete works
        res = e.call("DeleteCert", "ssa{sv}", [uri, PIN, {}])[0]
        self.assertEqual(res["keys_removed"], 2)
        self.check_clean()

    def test_delete_fails_after_certificate(self):
        """The certificate goes, the key deletion fails: the error says exactly what was removed."""
        e = self.env
        e.start_daemon()
        uri = self.cert_uri()
        self.faults("C_DestroyObject rv=CKR_DEVICE_ERROR after=1")
        msg = self.assertDBusError("TokenError", "DeleteCert", "ssa{sv}", [uri, PIN, {}])
        self.assertIn("Deletion incomplete", msg)
        self.assertIn("type=cert", msg)
        self.assertNotIn("type=private", msg)
        kinds = sorted(o["type"] for o in e.objects("agent") if o["id"] == "01")
        self.assertEqual(kinds, ["private key", "public key"])
        self.check_truth()   # the certificate no longer listed
        self.assertNotIn("old cert", [c["label"] for c in e.list_certs()])

    def test_pin_locked(self):
        e = self.env
        e.start_daemon()
        uri = self.cert_uri()
        path = e.list_tokens()[0]["path"]
        self.assertFalse(e.get_property(path, TOKEN_IFACE, "PinLocked"))
        self.faults("C_Login rv=CKR_PIN_LOCKED", "C_GetTokenInfo flags+=CKF_USER_PIN_LOCKED")
        before = self.calls("C_Login")
        msg = self.assertDBusError("PinLocked", "DeleteCert", "ssa{sv}", [uri, PIN, {}])
        self.assertIn("locked", msg)
        self.assertEqual(self.calls("C_Login") - before, 1, "login retried")
        self.assertTrue(e.get_property(path, TOKEN_IFACE, "PinLocked"))
        self.assertTrue([t for t in e.list_tokens() if t["path"] == path][0]["pin_locked"])
        self.old_intact()
        # also a wrong-PIN reply from a token that says it is now locked
        self.faults("C_Login rv=CKR_PIN_INCORRECT", "C_GetTokenInfo flags+=CKF_USER_PIN_LOCKED")
        self.assertDBusError("PinLocked", "DeleteCert", "ssa{sv}", [uri, PIN, {}])
        self.old_intact()
        self.check_clean()

    def test_final_try(self):
        e = self.env
        e.start_daemon()
        uri = self.cert_uri()
        path = e.list_tokens()[0]["path"]
        self.faults("C_Login rv=CKR_PIN_INCORRECT", "C_GetTokenInfo flags+=CKF_USER_PIN_FINAL_TRY")
        before = self.calls("C_Login")
        msg = self.assertDBusError("PinIncorrect", "DeleteCert", "ssa{sv}", [uri, "Wr0ngPin1", {}])
        self.assertIn("one PIN try is left", msg)
        self.assertEqual(self.calls("C_Login") - before, 1, "login retried")
        self.assertTrue(e.get_property(path, TOKEN_IFACE, "PinFinalTry"))
        self.old_intact()
        self.check_clean()

    def test_slow_delete_daemon_answers(self):
        e = self.env
        e.start_daemon()
        uri = self.cert_uri()
        self.faults("C_Login delay=3000", "C_DestroyObject delay=300")
        out = {}

        def worker():
            conn = e.connect()
            try:
                r = conn.call_sync(NAME, PATH, MANAGER, "DeleteCert", GLib.Variant("(ssa{sv})", (uri, PIN, {})),
                                   None, 0, 60000, None)
                out["res"] = r.unpack()[0]
            except GLib.Error as err:
                out["err"] = error_name(err)
            conn.close_sync(None)
        th = threading.Thread(target=worker)
        th.start()
        wait_for(lambda: self.calls("C_Login") > 0, 10, "login started")
        t0 = time.monotonic()
        e.list_tokens()
        e.call("ListCas")
        self.assertLess(time.monotonic() - t0, 1.0, "the daemon stopped answering during a slow delete")
        th.join(30)
        self.assertIn("res", out, out)
        self.assertEqual(out["res"]["keys_removed"], 2)
        self.check_clean()


class ListFaults(FaultBase):
    def test_list_faults(self):
        e = self.env
        e.add_token("second")
        e.put_cert_for_key("second", "02", "second cert", "Second")
        e.start_daemon()
        cases = [("CKR_DEVICE_ERROR", "TokenError"), ("CKR_DEVICE_REMOVED", "TokenNotPresent"),
                 ("CKR_SESSION_HANDLE_INVALID", "TokenNotPresent"), ("CKR_TOKEN_NOT_PRESENT", "TokenNotPresent")]
        for rv, expected in cases:
            with self.subTest(rv=rv):
                # faults first, then Rescan (which drops the caches; the daemon's own
                # expiry scan after it must not refill them with a failure either)
                self.faults("C_FindObjectsInit rv=%s" % rv)
                e.call("Rescan")
                self.assertDBusError(expected, "ListCerts", "a{sv}", [{"token": GLib.Variant("s", "pkcs11:token=agent")}])
                self.assertDBusError(expected, "ListCerts", "a{sv}", [{"token": GLib.Variant("s", "pkcs11:token=second")}])
                # all tokens: the call still answers (bad tokens are left out and logged)
                self.assertEqual([c for c in e.list_certs() if c["storage"] == "token"], [])
                self.assertIn("Listing certificates on", e.log("p11certd"))
                e.list_tokens()
                # a failed listing is not cached as "no certificates"
                self.check_truth("agent")
                self.check_truth("second")
        # OpenSession failing while listing
        self.faults("C_OpenSession rv=CKR_TOKEN_NOT_PRESENT")
        e.call("Rescan")
        self.assertDBusError("TokenNotPresent", "ListCerts", "a{sv}", [{"token": GLib.Variant("s", "pkcs11:token=agent")}])
        self.check_truth("agent")
        # slow search: the answer comes, correct
        self.faults("C_FindObjectsInit delay=500")
        e.call("Rescan")
        self.assertEqual([c["label"] for c in e.list_certs(token="pkcs11:token=agent")], ["old cert"])
        self.check_truth("agent")

    def test_stale_cache_after_outside_change(self):
        """A certificate added by another program after a failed listing is seen once the cache is refreshed."""
        e = self.env
        e.start_daemon()
        self.faults("C_FindObjectsInit rv=CKR_DEVICE_ERROR")
        e.call("Rescan")
        self.assertDBusError("TokenError", "ListCerts", "a{sv}", [{"token": GLib.Variant("s", "pkcs11:token=agent")}])
        self.clear()
        e.put_cert_for_key("agent", "03", "added", "Added Outside")
        e.call("Rescan")     # software tokens changed by others are seen at Rescan
        self.check_truth()


class EnrollFaults(FaultBase):
    def test_enroll_faults_local_ca(self):
        e = self.env
        e.start_daemon()
        cases = [
            (["C_OpenSession rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
            (["C_Login rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_Login rv=CKR_PIN_INCORRECT"], "PinIncorrect"),
            (["C_Login rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_GenerateKeyPair rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_GenerateKeyPair rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
            (["C_GenerateKeyPair rv=CKR_SESSION_HANDLE_INVALID"], "TokenNotPresent"),
            (["C_GenerateKeyPair rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_Sign rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_Sign rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_SignInit rv=CKR_SESSION_HANDLE_INVALID"], "TokenNotPresent"),
            (["C_CreateObject rv=CKR_DEVICE_ERROR"], "TokenError"),
            (["C_CreateObject rv=CKR_DEVICE_REMOVED"], "TokenNotPresent"),
            (["C_CreateObject rv=CKR_TOKEN_NOT_PRESENT"], "TokenNotPresent"),
            (["C_CreateObject rv=CKR_SESSION_HANDLE_INVALID"], "TokenNotPresent"),
        ]
        for rules, expected in cases:
            with self.subTest(rules=rules):
                self.faults(*rules)
                _, (ok, err, msg), _ = self.run_job(self.local_req())
                self.assertFalse(ok, rules)
                self.assertEqual(err, ERR + expected, msg)
                self.old_intact()
                self.check_clean()
                self.assertEqual(self.pending(), [], "a pending record was left for a key that is gone")
        # the wrong-PIN and locked cases never reached key generation
        self.faults("C_Login rv=CKR_PIN_LOCKED", "C_GetTokenInfo flags+=CKF_USER_PIN_LOCKED")
        _, (ok, err, msg), _ = self.run_job(self.local_req())
        self.assertEqual((ok, err), (False, ERR + "PinLocked"), msg)
        self.faults("C_Login rv=CKR_PIN_INCORRECT", "C_GetTokenInfo flags+=CKF_USER_PIN_FINAL_TRY")
        _, (ok, err, msg), _ = self.run_job(self.local_req())
        self.assertEqual((ok, err), (False, ERR + "PinIncorrect"), msg)
        self.assertIn("one PIN try is left", msg)
        self.check_clean()
        # with the faults gone the same enrollment works
        _, (ok, err, msg), _ = self.run_job(self.local_req())
        self.assertTrue(ok, msg)
        self.old_intact()
        self.check_clean()
        self.assertIn("fresh", [c["label"] for c in e.list_certs()])

    def test_slow_keygen_and_write_succeed(self):
        e = self.env
        e.start_daemon()
        self.faults("C_GenerateKeyPair delay=1500", "C_Sign delay=500", "C_CreateObject delay=500")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "generating-key")
        t0 = time.monotonic()
        e.list_tokens()
        e.list_certs()
        self.assertLess(time.monotonic() - t0, 1.0, "the daemon stopped answering during key generation")
        ok, err, msg = e.wait_job(path, 60, seen)
        self.assertTrue(ok, msg)
        self.check_clean()

    def test_token_pulled_during_keygen(self):
        e = self.env
        e.start_daemon()
        self.faults("C_GenerateKeyPair delay=3000")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "generating-key")
        wait_for(lambda: self.calls("+C_GenerateKeyPair") > 0, 10, "key generation in progress")
        self.faults("* rv=CKR_DEVICE_REMOVED")
        ok, err, msg = e.wait_job(path, 30, seen)
        self.assertEqual((ok, err), (False, ERR + "TokenNotPresent"), msg)
        log = e.log("p11certd")
        self.clear()
        # the key may be on the token (generated before the pull): the record says so
        left = self.orphans()
        if left:
            self.assertEqual(len(self.pending()), 1, "an orphan key with no pending record")
            self.assertIn("next login", log)
        # the next login cleans what is left
        _, (ok, err, msg), _ = self.run_job(self.local_req(label="next"))
        self.assertTrue(ok, msg)
        self.assertEqual(self.pending(), [])
        self.old_intact()
        self.check_clean()
        if left:
            self.assertIn("interrupted enrollment", e.log("p11certd"))

    def test_token_pulled_while_requesting_est(self):
        e = self.env
        e.start_est()
        e.add_est_profile("est")
        e.est_control(slow=1, slow_seconds=3)
        e.start_daemon()
        path, seen = self.start_job({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token",
                                     "token": "pkcs11:token=agent", "pin": PIN, "label": "est"})
        self.wait_state(path, seen, "requesting")
        self.assertEqual(len(self.orphans()), 1)   # the new key, waiting for its certificate
        self.faults("* rv=CKR_DEVICE_REMOVED")
        ok, err, msg = e.wait_job(path, 30, seen)
        self.assertEqual((ok, err), (False, ERR + "TokenNotPresent"), msg)
        self.assertIn("next login", e.log("p11certd"))
        self.clear()
        self.assertEqual(len(self.pending()), 1)
        # next login: a DeleteCert of the old certificate with keep_key
        uri = [c for c in e.list_certs() if c["label"] == "old cert"][0]["uri"]
        e.call("DeleteCert", "ssa{sv}", [uri, PIN, {"keep_key": GLib.Variant("b", True)}])
        self.assertIn("interrupted enrollment", e.log("p11certd"))
        self.assertEqual(self.pending(), [])
        ids = {o["id"] for o in e.objects("agent")}
        self.assertEqual(ids, {"01"}, "the EST job's key is still there")
        COUNTS["recoveries"] += 1

    def test_ca_phase_token_faults_est(self):
        """The CA answers, then writing fails in different ways: key removed, OTP consumed once."""
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1", "OTP-2", "OTP-3", "OTP-4"]}})
        e.add_est_profile("est")
        e.start_daemon()
        for n, (rule, expected) in enumerate([("C_CreateObject rv=CKR_DEVICE_ERROR", "TokenError"),
                                              ("C_CreateObject rv=CKR_DEVICE_REMOVED", "TokenNotPresent"),
                                              ("C_Login rv=CKR_TOKEN_NOT_PRESENT count=1", "TokenNotPresent")]):
            self.clear()
            e.est_control(slow=1, slow_seconds=1)
            path, seen = self.start_job({"ca": "est", "login": "alice", "otp": "OTP-%d" % (n + 1),
                                         "storage": "token", "token": "pkcs11:token=agent", "pin": PIN})
            self.wait_state(path, seen, "requesting")
            self.faults(rule)
            ok, err, msg = e.wait_job(path, 30, seen)
            self.assertEqual((ok, err), (False, ERR + expected), "%s: %s" % (rule, msg))
            self.clear()
            # one login with the PIN cleans what could not be removed at once
            if self.pending():
                _, (ok, err, msg), _ = self.run_job(self.local_req(label="cleanup %d" % n))
                self.assertTrue(ok, msg)
            self.assertEqual(self.pending(), [])
            self.check_clean()


class CancelFaults(FaultBase):
    def test_cancel_generating_key(self):
        e = self.env
        e.start_daemon()
        self.faults("C_GenerateKeyPair delay=2500")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "generating-key")
        wait_for(lambda: self.calls("C_Login") > 0, 10, "login")
        e.call("Cancel", path=path, iface=JOB_IFACE)
        ok, err, msg = e.wait_job(path, 30, seen)
        self.assertEqual((ok, err), (False, ERR + "Cancelled"), msg)
        self.assertEqual(e.get_property(path, JOB_IFACE, "State"), "cancelled")
        self.old_intact()
        self.check_clean()
        self.assertEqual(self.pending(), [])
        self.assertNotIn("fresh", [c["label"] for c in e.list_certs()])

    def test_cancel_writing(self):
        e = self.env
        e.start_daemon()
        self.faults("C_CreateObject delay=2500")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "writing")
        e.call("Cancel", path=path, iface=JOB_IFACE)
        ok, err, msg = e.wait_job(path, 30, seen)
        state = e.get_property(path, JOB_IFACE, "State")
        objs = self.check_truth()
        fresh = [o for o in objs if o["label"] == "fresh"]
        if ok:
            # the certificate was already being written: the job completed whole
            self.assertEqual(state, "done")
            self.assertEqual(sorted(o["type"] for o in fresh), ["certificate", "private key", "public key"])
            print("cancel in writing: too late, the job completed (certificate and key kept together)")
        else:
            self.assertEqual((err, state), (ERR + "Cancelled", "cancelled"), msg)
            self.assertEqual(fresh, [])
        self.old_intact()
        self.check_clean()
        self.assertEqual(self.pending(), [])


class KillFaults(FaultBase):
    """SIGKILL at each job state; after the restart and the next login nothing
    is orphaned, no good certificate is deleted, and the log says what was
    recovered."""

    def kill_and_recover(self, path, seen, state, expect_key):
        e = self.env
        self.wait_state(path, seen, state)
        if expect_key:
            wait_for(lambda: len(self.orphans()) == 1, 10, "the new key on the token")
        self.assertEqual(len(self.pending()), 1, "no pending record while the job runs")
        e.kill(e.daemon, signal.SIGKILL)
        wait_for(lambda: not e.name_has_owner(), 10, "name released")
        self.clear()
        e.start_daemon()
        self.assertIn("Found an interrupted enrollment", e.log("p11certd"))
        # next login: an enrollment on that token
        _, (ok, err, msg), _ = self.run_job(self.local_req(label="after"))
        self.assertTrue(ok, msg)
        log = e.log("p11certd")
        self.assertIn("interrupted enrollment", log)
        self.assertRegex(log, r"Removed \d+ object\(s\) left on token")
        self.assertEqual(self.pending(), [])
        self.old_intact()
        self.check_clean()
        return log

    def test_kill_generating_key(self):
        e = self.env
        e.start_daemon()
        self.faults("C_Sign delay=5000")     # the key exists, the CSR is being signed
        path, seen = self.start_job(self.local_req())
        # killed inside C_Sign, not inside C_GenerateKeyPair (where the token
        # itself may be left with a half-written object)
        wait_for(lambda: self.calls("+C_Sign") > 0, 10, "the CSR signature in progress")
        log = self.kill_and_recover(path, seen, "generating-key", True)
        self.assertIn("Removed 2 object(s)", log)
        self.assertNotIn("fresh", [c["label"] for c in e.list_certs()])

    def test_kill_generating_key_before_key(self):
        e = self.env
        e.start_daemon()
        self.faults("C_GenerateKeyPair delay=4000")
        path, seen = self.start_job(self.local_req())
        wait_for(lambda: self.calls("+C_GenerateKeyPair") > 0, 10, "key generation held")
        self.kill_and_recover(path, seen, "generating-key", False)

    def test_kill_requesting(self):
        e = self.env
        e.start_est()
        e.add_est_profile("est")
        e.est_control(slow=1, slow_seconds=20)
        e.start_daemon()
        path, seen = self.start_job({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token",
                                     "token": "pkcs11:token=agent", "pin": PIN, "label": "fresh"})
        e.wait_est_holding()
        log = self.kill_and_recover(path, seen, "requesting", True)
        self.assertIn("Removed 2 object(s)", log)

    def test_kill_writing_before_certificate(self):
        e = self.env
        e.start_daemon()
        self.faults("C_CreateObject delay=5000")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "writing")
        wait_for(lambda: self.calls("+C_CreateObject") > 0, 10, "the certificate write in progress")
        log = self.kill_and_recover(path, seen, "writing", True)
        self.assertIn("Removed 2 object(s)", log)

    def test_kill_writing_after_certificate(self):
        """Killed after the certificate was written (while the CA chain is): the
        enrollment had completed, so its certificate and key are kept."""
        e = self.env
        e.start_daemon()
        self.faults("C_CreateObject delay=5000 after=1")
        path, seen = self.start_job(self.local_req())
        self.wait_state(path, seen, "writing")
        wait_for(lambda: self.calls("C_CreateObject") >= 1, 10, "the certificate written")
        wait_for(lambda: "fresh" in [o["label"] for o in e.objects("agent") if o["type"] == "certificate"], 10,
                 "the certificate on the token")
        log = self.kill_and_recover(path, seen, "writing", False)
        self.assertIn("it had completed, kept", log)
        fresh = sorted(o["type"] for o in e.objects("agent") if o["label"] == "fresh")
        self.assertEqual(fresh, ["certificate", "private key", "public key"], "a good certificate was deleted")


class PinNeverResent(FaultBase):
    """Nothing the daemon does on its own sends a token a PIN it refused, or
    sends a job's PIN to another token: the C_Login calls are counted."""

    def test_pin_changed_while_waiting_for_ca(self):
        """The PIN changes while an enrollment waits for the CA: writing the
        certificate is refused once, and removing the generated key does not
        log in again with the same PIN; the next good login removes it."""
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1"]}})
        e.add_est_profile("est")
        e.est_control(accepted_202=1, retry_after=3)
        e.start_daemon()
        token = e.list_tokens()[0]["path"]
        path, seen = self.start_job({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token",
                                     "token": "pkcs11:token=agent", "pin": PIN, "label": "fresh"})
        self.wait_state(path, seen, "waiting-for-ca")
        new_pin = "Chang3dPin"
        e.call("ChangePin", "ssa{sv}", [PIN, new_pin, {}], path=token, iface=TOKEN_IFACE)
        before = self.calls("C_Login")
        ok, err, msg = e.wait_job(path, 60, seen)
        self.assertEqual((ok, err), (False, ERR + "PinIncorrect"), msg)
        self.assertEqual(self.calls("C_Login") - before, 1, "the refused PIN was sent to the token again")
        self.assertEqual(len(self.pending()), 1, "the key that could not be removed is not recorded")
        # the owner's next login (here: changing the PIN back) removes the key
        e.call("ChangePin", "ssa{sv}", [new_pin, PIN, {}], path=token, iface=TOKEN_IFACE)
        self.assertEqual(self.pending(), [])
        self.check_clean()
        self.old_intact()

    def test_token_swapped_while_waiting_for_ca(self):
        """Another token is put in the reader while an enrollment waits for
        the CA: the job stops with TokenNotPresent and sends that token
        neither the PIN nor the certificate."""
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1"]}})
        e.add_est_profile("est")
        e.est_control(accepted_202=1, retry_after=2)
        e.start_daemon()
        path, seen = self.start_job({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "token",
                                     "token": "pkcs11:token=agent", "pin": PIN, "label": "fresh"})
        self.wait_state(path, seen, "waiting-for-ca")
        self.faults("C_GetTokenInfo swapped=1")
        logins, writes = self.calls("C_Login"), self.calls("C_CreateObject")
        ok, err, msg = e.wait_job(path, 60, seen)
        self.assertEqual((ok, err), (False, ERR + "TokenNotPresent"), msg)
        self.assertIn("another token", msg)
        self.assertEqual(self.calls("C_Login") - logins, 0, "the PIN was sent to the other token")
        self.assertEqual(self.calls("C_CreateObject") - writes, 0, "something was written to the other token")
        # the agent's own token back: its next login removes the key of the job
        self.clear()
        self.assertEqual(len(self.pending()), 1)
        _, (ok, err, msg), _ = self.run_job(self.local_req(label="after the swap"))
        self.assertTrue(ok, msg)
        self.assertEqual(self.pending(), [])
        self.check_clean()
        self.old_intact()

    def test_renew_due_wrong_pin_file(self):
        """An admin's PIN file holds a wrong PIN and two certificates on one
        token are due: one C_Login in all, both renewals fail, nothing lost."""
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1", "OTP-2"]}})
        e.add_est_profile("est")
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        for n in (1, 2):
            _, (ok, err, msg), _ = self.run_job({"ca": "est", "login": "alice", "otp": "OTP-%d" % n,
                                                 "storage": "token", "token": "pkcs11:token=agent",
                                                 "pin": PIN, "label": "due %d" % n})
            self.assertTrue(ok, msg)
        due = sorted(c["sha256"] for c in e.list_certs() if c["label"].startswith("due "))
        pin_file = os.path.join(e.tmp, "token.pin")
        with open(pin_file, "w") as f:
            f.write("Wr0ngPinFile\n")
        os.chmod(pin_file, 0o600)
        e.add_est_profile("est", pin_file=pin_file)
        e.stop_daemon()
        e.start_daemon()
        before = self.calls("C_Login")
        jobs = e.call("RenewDue", "a{sv}", [{}])[0]["jobs"]
        self.assertEqual(len(jobs), 2)
        for path in jobs:
            ok, err, msg = e.wait_job(path, 60)
            self.assertEqual((ok, err), (False, ERR + "PinIncorrect"), msg)
        self.assertEqual(self.calls("C_Login") - before, 1, "the PIN file's wrong PIN was tried more than once")
        self.assertEqual(sorted(c["sha256"] for c in e.list_certs() if c["label"].startswith("due ")), due)
        self.check_clean()


if __name__ == "__main__":
    main()
