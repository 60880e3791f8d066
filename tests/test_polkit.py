"""Issue 8: who may do what — the project's bus policy on a private system
bus and the real polkitd with the project's actions and rules, callers as
unprivileged users (uid 0 is always allowed, so it proves nothing)."""
import ast
import json
import os
import pwd
import subprocess
import threading

from harness import CTL, DAEMON, JOB_IFACE, PIN, TOKEN_IFACE, TestCase, main, wait_for

ALICE, BOB, RENEW = "p11c-alice", "p11c-bob", "p11certd-renew"

# A test rule (runs before the project's 50-p11certd.rules) that reads its
# decisions from a file on every check, so one polkitd serves every case.
TEST_RULE = """
polkit.addRule(function (action, subject) {
    var lines = polkit.spawn(["/bin/cat", "%s"]).split("\\n");
    if (lines.indexOf("allow " + subject.user + " " + action.id) >= 0) return polkit.Result.YES;
    if (lines.indexOf("deny " + subject.user + " " + action.id) >= 0) return polkit.Result.NO;
    return polkit.Result.NOT_HANDLED;
});
"""


class Polkit(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.put_cert_for_key("agent", "01", "c1", "First")
        e.put_cert_for_key("agent", "02", "c2", "Second")
        self.decisions = os.path.join(e.tmp, "decisions")
        open(self.decisions, "w").close()
        os.chmod(self.decisions, 0o644)
        with open(os.path.join(e.ca_dir, "down.conf"), "w") as f:
            f.write("[ca]\nurl=https://127.0.0.1:1\ntrust-anchor=/etc/ssl/certs/ca-certificates.crt\n"
                    "max-attempts=1\n")
        e.start_bus()
        e.start_polkitd(extra_rules=TEST_RULE % self.decisions)
        e.start_daemon()
        self.token_path = e.list_tokens()[0]["path"]

    def decide(self, *lines):
        with open(self.decisions, "w") as f:
            f.write("\n".join(lines) + "\n")

    def both_ways(self, user, action, method, sig, args, path="/org/p11certd", iface="org.p11certd1.Manager",
                  allowed_errors=("",)):
        """Refused without a rule, allowed with one."""
        self.decide()
        ok, err, _ = self.env.call_as(user, method, sig, args, path, iface)
        self.assertFalse(ok, "%s was allowed %s without a rule" % (user, action))
        self.assertEqual(err, "org.p11certd.Error.NotAuthorized")
        self.decide("allow %s %s" % (user, action))
        ok, err, _ = self.env.call_as(user, method, sig, args, path, iface)
        self.assertTrue(ok or err in allowed_errors, "%s with a rule for %s: %s" % (user, action, err))
        self.decide()

    def cert_uri(self, label):
        return [c["uri"] for c in self.env.list_certs() if c["label"] == label][0]

    def test_list_allowed_to_all(self):
        for user in (ALICE, BOB, RENEW):
            ok, err, res = self.env.call_as(user, "ListCerts", "a{sv}", [{}])
            self.assertTrue(ok, err)
            self.assertIn("CN=First", res)
        # and an admin can take it away
        self.decide("deny %s org.p11certd.list" % ALICE)
        ok, err, _ = self.env.call_as(ALICE, "ListCerts", "a{sv}", [{}])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        ok, err, _ = self.env.call_as(ALICE, "GetManagedObjects", path="/org/p11certd",
                                      iface="org.freedesktop.DBus.ObjectManager")
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))

    def test_delete(self):
        self.both_ways(ALICE, "org.p11certd.token.delete", "DeleteCert", "ssa{sv}", [self.cert_uri("c1"), PIN, {}])
        self.assertEqual([c["label"] for c in self.env.list_certs()], ["c2"])

    def test_change_pin(self):
        self.both_ways(ALICE, "org.p11certd.token.change-pin", "ChangePin", "ssa{sv}", [PIN, "N3wPassword", {}],
                       path=self.token_path, iface=TOKEN_IFACE)
        self.env.pkcs11_tool("agent", "-O", pin="N3wPassword")

    def test_enroll_token(self):
        req = {"ca": ["s", "down"], "login": ["s", "alice"], "otp": ["s", "x"], "token": ["s", "pkcs11:token=agent"],
               "pin": ["s", PIN]}
        self.both_ways(ALICE, "org.p11certd.token.enroll", "Enroll", "a{sv}", [req])

    def test_system_manage(self):
        self.both_ways(ALICE, "org.p11certd.system.manage", "DeleteCert", "ssa{sv}", ["system:nothing", "", {}],
                       allowed_errors=("org.p11certd.Error.NotFound",))

    def test_local_ca_issue(self):
        req = {"ca": ["s", "local"], "storage": ["s", "system"], "name": ["s", "svc"]}
        # system.manage alone is not enough: issuing from the local CA is its own right
        self.decide("allow %s org.p11certd.system.manage" % ALICE)
        ok, err, _ = self.env.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        self.decide("allow %s org.p11certd.system.manage" % ALICE, "allow %s org.p11certd.local-ca.issue" % ALICE)
        ok, err, _ = self.env.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertTrue(ok, err)
        self.decide("allow %s org.p11certd.local-ca.issue" % ALICE)
        ok, err, _ = self.env.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))

    def test_local_type_profile_needs_local_ca_issue(self):
        """Issue 13 #3: local-CA issuance is authorized by the profile's type,
        not its name — an admin's type=local profile "lab" needs local-ca.issue."""
        e = self.env
        with open(os.path.join(e.ca_dir, "lab.conf"), "w") as f:
            f.write("[ca]\ntype=local\n")
        e.stop_daemon()
        e.start_daemon()
        req = {"ca": ["s", "lab"], "storage": ["s", "token"], "token": ["s", "pkcs11:token=agent"],
               "pin": ["s", PIN], "subject": ["s", "CN=root,O=Corp"]}
        # what an active local user holds by default: enrolling onto a token
        self.decide("allow %s org.p11certd.token.enroll" % ALICE)
        ok, err, _ = e.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        self.assertFalse(os.path.exists(os.path.join(e.state_dir, "local-ca")), "the local CA was used")
        self.assertEqual(len(e.list_certs()), 2)
        # with the right it is issued
        self.decide("allow %s org.p11certd.token.enroll" % ALICE, "allow %s org.p11certd.local-ca.issue" % ALICE)
        ok, err, res = e.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertTrue(ok, err)
        ok, err, msg = e.wait_job(res.strip("(),'"))
        self.assertTrue(ok, msg)

    def test_reading_local_ca_does_not_create_it(self):
        """Issue 13 #8: GetCaCertificate (list) never creates the local CA's key;
        a CA not created yet is NotFound with a message saying how it comes to be."""
        e = self.env
        ca_dir = os.path.join(e.state_dir, "local-ca")
        for who in (ALICE, RENEW):
            ok, err, _ = e.call_as(who, "GetCaCertificate", "s", ["local"])
            self.assertEqual((ok, err), (False, "org.p11certd.Error.NotFound"))
        name, msg = e.call_error("GetCaCertificate", "s", ["local"])    # not even root's read creates it
        self.assertEqual(name, "org.p11certd.Error.NotFound")
        self.assertIn("does not exist yet", msg)
        self.assertIn("org.p11certd.local-ca.issue", msg)
        self.assertFalse(os.path.exists(ca_dir))
        r = e.ctl("ca", "show", "local", "--pem", user=ALICE)
        self.assertEqual(r.returncode, 7, r.stdout + r.stderr)
        self.assertIn("does not exist yet", r.stderr)
        # the first issuance (which needs local-ca.issue) creates it; then anyone may read it
        self.decide("allow %s org.p11certd.system.manage" % ALICE, "allow %s org.p11certd.local-ca.issue" % ALICE)
        ok, err, res = e.call_as(ALICE, "Enroll", "a{sv}", [{"ca": ["s", "local"], "storage": ["s", "system"],
                                                             "name": ["s", "svc"]}])
        self.assertTrue(ok, err)
        self.assertTrue(e.wait_job(res.strip("(),'"))[0])
        self.decide()
        ok, err, res = e.call_as(BOB, "GetCaCertificate", "s", ["local"])
        self.assertTrue(ok, err)
        self.assertIn("BEGIN CERTIFICATE", res)
        self.assertTrue(os.path.exists(os.path.join(ca_dir, "ca.key")))

    def test_job_details_only_for_owner(self):
        """Issue 13 #9: another user sees that a job runs and how far it is —
        not its result, owner or error, by Get, GetAll, GetManagedObjects or
        signals; its owner (from any connection) and root see everything, and
        the result and Finished reach the connection that started it."""
        e = self.env
        props = "org.freedesktop.DBus.Properties"
        public = {"Operation", "State", "Progress", "Attempt", "RetryAt"}
        self.decide("allow %s org.p11certd.token.enroll" % ALICE, "allow %s org.p11certd.local-ca.issue" % ALICE)
        _, bob_seen = e.listen_as(BOB)
        req = {"ca": ["s", "local"], "storage": ["s", "token"], "token": ["s", "pkcs11:token=agent"],
               "pin": ["s", PIN], "subject": ["s", "CN=Alice Job"]}
        _, alice_seen = e.listen_as(ALICE, ("Enroll", "a{sv}", [req], "/org/p11certd", "org.p11certd1.Manager"))
        call = [x["call"] for x in alice_seen if "call" in x][0]
        self.assertTrue(call["ok"], call)
        job = call["result"][0]
        ok, err, msg = e.wait_job(job)
        self.assertTrue(ok, msg)
        result = e.get_property(job, JOB_IFACE, "Result")     # root sees it
        self.assertTrue(result.startswith("pkcs11:"), result)

        def signals(seen):
            return [x["signal"] for x in list(seen) if "signal" in x and x["signal"]["path"] in (job, "/org/p11certd")
                    and (x["signal"]["path"] == job or job in json.dumps(x["signal"]["args"]))]
        # the connection that started the job: the result, and Finished
        wait_for(lambda: any(s["member"] == "Finished" for s in signals(alice_seen)), 10, "Finished to alice")
        self.assertIn(result, json.dumps(signals(alice_seen)))
        # bob's connection: that it ran and ended, nothing more
        wait_for(lambda: '"done"' in json.dumps(signals(bob_seen)), 10, "bob seeing the job end")
        bob_text = json.dumps(signals(bob_seen))
        self.assertIn("InterfacesAdded", bob_text)
        for hidden in (result, "Result", "Owner", "ErrorMessage", "Finished"):
            self.assertNotIn(hidden, bob_text)
        # Get: state and progress for everyone, the rest for alice and root only
        for prop in sorted(public):
            ok, err, _ = e.call_as(BOB, "Get", "ss", [JOB_IFACE, prop], path=job, iface=props)
            self.assertTrue(ok, (prop, err))
        everything = set(e.call("GetAll", "s", [JOB_IFACE], path=job, iface=props)[0])     # as root
        self.assertLessEqual({"Result", "Owner", "Error", "ErrorMessage"}, everything - public)
        for prop in sorted(everything - public):
            ok, err, _ = e.call_as(BOB, "Get", "ss", [JOB_IFACE, prop], path=job, iface=props)
            self.assertEqual((ok, err), (False, "org.freedesktop.DBus.Error.AccessDenied"), prop)
            ok, err, res = e.call_as(ALICE, "Get", "ss", [JOB_IFACE, prop], path=job, iface=props)
            self.assertTrue(ok, (prop, err))        # another connection of alice's
        ok, err, res = e.call_as(ALICE, "Get", "ss", [JOB_IFACE, "Result"], path=job, iface=props)
        self.assertIn(result, res)
        # GetAll and GetManagedObjects
        ok, err, res = e.call_as(BOB, "GetAll", "s", [JOB_IFACE], path=job, iface=props)
        self.assertTrue(ok, err)
        self.assertEqual(set(ast.literal_eval(res)[0]), public)
        om = "org.freedesktop.DBus.ObjectManager"
        for who, keys in ((BOB, public), (ALICE, everything)):
            ok, err, res = e.call_as(who, "GetManagedObjects", path="/org/p11certd", iface=om)
            self.assertTrue(ok, err)
            self.assertEqual(set(ast.literal_eval(res)[0][job][JOB_IFACE]), keys, who)
        self.assertEqual(e.get_property(job, JOB_IFACE, "Owner"), pwd.getpwnam(ALICE).pw_uid)

    def alice_job(self):
        """A job of alice's that waits for the CA (202, retry in 2 minutes)."""
        e = self.env
        self.decide("allow %s org.p11certd.token.enroll" % ALICE)
        e.start_est()
        e.add_est_profile("est")
        e.est_control(accepted_202=1, retry_after=120)
        e.stop_daemon()
        e.start_daemon()
        req = {"ca": ["s", "est"], "login": ["s", "alice"], "otp": ["s", "OTP-1"], "token": ["s", "pkcs11:token=agent"],
               "pin": ["s", PIN]}
        ok, err, res = e.call_as(ALICE, "Enroll", "a{sv}", [req])
        self.assertTrue(ok, err)
        return res.strip("(),'")

    def test_cancel_other(self):
        e = self.env
        job = self.alice_job()
        self.assertEqual(e.get_property(job, JOB_IFACE, "Owner"), int(subprocess.check_output(["id", "-u", ALICE])))
        # bob may not cancel alice's job; with the right he may
        self.both_ways(BOB, "org.p11certd.job.cancel-other", "Cancel", None, [], path=job, iface=JOB_IFACE)
        wait_for(lambda: e.get_property(job, JOB_IFACE, "State") == "cancelled", 10, "cancelled")

    def test_owner_cancels_own_job(self):
        e = self.env
        job = self.alice_job()
        # bob follows alice's job and monitors events: he sees it end, cancelled
        # (Finished and the error go only to alice's connection)
        follow = e.popen_as(BOB, [CTL, "--address", e.bus_address, "job", job], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        monitor = e.popen_as(BOB, [CTL, "--address", e.bus_address, "monitor"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        lines = {follow: [], monitor: []}
        for p in lines:
            threading.Thread(target=lambda p=p: lines[p].extend(iter(p.stdout.readline, "")), daemon=True).start()
        wait_for(lambda: lines[follow], 20, "bob following the job")       # it prints the state once subscribed
        # root's short jobs until bob's monitor shows one end: then it has subscribed
        probes = []

        def monitor_saw_a_probe():
            if any("JobFinished %s success" % p in x for p in probes for x in lines[monitor]):
                return True
            if not probes or e.get_property(probes[-1], JOB_IFACE, "State") == "done":
                probes.append(e.enroll({"ca": "local", "storage": "system", "name": "probe%d" % len(probes)}))
            return False
        wait_for(monitor_saw_a_probe, 30, "bob's monitor showing root's job end")
        ok, err, _ = e.call_as(ALICE, "Cancel", None, [], path=job, iface=JOB_IFACE)
        self.assertTrue(ok, err)
        self.assertEqual(follow.wait(20), 11, "".join(lines[follow]) + follow.stderr.read())    # cancelled
        wait_for(lambda: "cancelled" in "".join(lines[follow]), 10, "bob's follower showing the end")
        wait_for(lambda: any("JobFinished %s cancelled" % job in x for x in lines[monitor]), 20,
                 "bob's monitor showing the end")

    def test_renew(self):
        self.both_ways(ALICE, "org.p11certd.renew", "RenewDue", "a{sv}", [{}])
        # the renewal timer's user may renew, with no rule of ours
        ok, err, res = self.env.call_as(RENEW, "RenewDue", "a{sv}", [{}])
        self.assertTrue(ok, err)
        self.assertIn("needs_person", res)

    def test_renew_system_entry(self):
        """Issue 13 #4: renewing a system: entry (a new key.pem) needs
        system.manage — an active non-admin user holds only renew; RenewDue
        renews due system entries only for a caller with renew.system, which
        the rules file gives the renewal timer's user (and nothing more)."""
        import ast
        e = self.env
        e.stop_daemon()
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        path = e.enroll({"ca": "local", "storage": "system", "name": "web", "subject": "CN=web"})
        self.assertTrue(e.wait_job(path, 60)[0])
        key = os.path.join(e.state_dir, "system", "web", "key.pem")
        with open(key) as f:
            before = f.read()

        def key_now():
            with open(key) as f:
                return f.read()
        self.decide("allow %s org.p11certd.renew" % ALICE)      # what an active user holds by default
        ok, err, _ = e.call_as(ALICE, "Renew", "sa{sv}", ["system:web", {}])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        ok, err, res = e.call_as(ALICE, "RenewDue", "a{sv}", [{}])
        self.assertTrue(ok, err)
        res = ast.literal_eval(res)[0]
        self.assertEqual((res["jobs"], res["not_renewable"]), ([], ["system:web"]))
        self.assertIn("org.p11certd.renew.system", res["reasons"]["system:web"])
        self.assertEqual(key_now(), before, "a non-admin user rotated a system-store key")
        # the renewal timer's user: RenewDue renews it, Renew of the entry stays refused
        self.decide()
        ok, err, _ = e.call_as(RENEW, "Renew", "sa{sv}", ["system:web", {}])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        ok, err, res = e.call_as(RENEW, "RenewDue", "a{sv}", [{}])
        self.assertTrue(ok, err)
        res = ast.literal_eval(res)[0]
        self.assertEqual(len(res["jobs"]), 1, res)
        ok, err, msg = e.wait_job(res["jobs"][0], 60)
        self.assertTrue(ok, msg)
        after = key_now()
        self.assertNotEqual(after, before)
        # an administrator's right (system.manage) renews the entry by name
        self.decide("allow %s org.p11certd.renew" % ALICE, "allow %s org.p11certd.system.manage" % ALICE)
        ok, err, res = e.call_as(ALICE, "Renew", "sa{sv}", ["system:web", {}])
        self.assertTrue(ok, err)
        self.assertTrue(e.wait_job(res.strip("(),'"), 60)[0])
        self.assertNotEqual(key_now(), after)

    def test_renew_user_may_not_delete(self):
        # the renewal timer's user: list yes, delete/enroll/pin/system no — even with no other rule
        ok, err, _ = self.env.call_as(RENEW, "ListCerts", "a{sv}", [{}])
        self.assertTrue(ok, err)
        for method, sig, args, path, iface in [
                ("DeleteCert", "ssa{sv}", [self.cert_uri("c1"), PIN, {}], "/org/p11certd", "org.p11certd1.Manager"),
                ("ChangePin", "ssa{sv}", [PIN, "N3wPassword", {}], self.token_path, TOKEN_IFACE),
                ("DeleteCert", "ssa{sv}", ["system:x", "", {}], "/org/p11certd", "org.p11certd1.Manager")]:
            ok, err, _ = self.env.call_as(RENEW, method, sig, args, path, iface)
            self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"), method)
        self.assertEqual(len(self.env.list_certs()), 2)

    def test_unknown_method_refused(self):
        ok, err, _ = self.env.call_as(ALICE, "DropAllTokens")
        self.assertEqual((ok, err), (False, "org.freedesktop.DBus.Error.UnknownMethod"))
        ok, err, _ = self.env.call_as(ALICE, "ListCerts", None, [], iface="org.p11certd1.Secret")
        self.assertFalse(ok)

    def test_non_root_cannot_own_name(self):
        e = self.env
        conf = e.write_config()
        os.chmod(conf, 0o644)
        r = e.run_as(ALICE, [DAEMON, "--address", e.bus_address, "--config", conf,
                             "--state-dir", os.path.join(e.tmp, "alice-state")],
                     capture_output=True, text=True, timeout=30, env=dict(e.env, SOFTHSM2_CONF="/dev/null"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("Cannot own org.p11certd", r.stderr)

    def test_polkit_down_denies(self):
        e = self.env
        e.kill(e.polkitd)
        wait_for(lambda: not e.name_has_owner("org.freedesktop.PolicyKit1"), 10, "polkitd gone")
        ok, err, _ = e.call_as(ALICE, "DeleteCert", "ssa{sv}", [self.cert_uri("c1"), PIN, {}])
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotAuthorized"))
        self.assertEqual(len(e.list_certs()), 2)


if __name__ == "__main__":
    main()
