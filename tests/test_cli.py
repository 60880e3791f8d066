"""p11certctl against the real daemon: listings (table and JSON), delete with
confirmation and PIN files, passwd, enroll, exit codes, renew --due, monitor."""
import json
import os
import signal
import subprocess
import termios
import time

from harness import CTL, PIN, TestCase, main, wait_for


class Cli(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent")
        e.put_cert_for_key("agent", "01", "old cert", "Old Agent")
        e.put_cert_for_key("agent", "02", "keep me", "Keep Me")
        self.pin_file = self.secret("pin", PIN)

    def secret(self, name, value, mode=0o600):
        path = os.path.join(self.env.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
        return path

    def test_tokens_and_list(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("tokens", check=True)
        self.assertIn("agent", r.stdout)
        r = e.ctl("list", check=True)
        lines = r.stdout.splitlines()
        self.assertTrue(all(len(line) <= 80 for line in lines), r.stdout)
        self.assertIn("CN=Old Agent", r.stdout)
        self.assertIn("old cert", r.stdout)
        j = json.loads(e.ctl("list", "--json", check=True).stdout)
        self.assertEqual(sorted(c["label"] for c in j), ["keep me", "old cert"])
        self.assertTrue(all(c["uri"].startswith("pkcs11:") for c in j))
        j = json.loads(e.ctl("tokens", "--json", check=True).stdout)
        self.assertEqual(j[0]["label"], "agent")
        self.assertEqual(json.loads(e.ctl("list", "--json", "--token", "pkcs11:token=agent", check=True).stdout)[0]
                         ["token"], j[0]["path"])
        self.assertEqual(e.ctl("list", "--token", "pkcs11:token=nope").returncode, 10)
        r = e.ctl("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("delete", r.stdout)

    def test_delete_by_label_yes(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("delete", "--label", "old cert", "--yes", "--pin-file", self.pin_file)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("object=old%20cert", r.stdout)
        self.assertEqual([o["id"] for o in e.objects("agent")], ["02", "02", "02"])

    def test_delete_asks_and_respects_no(self):
        e = self.env
        e.start_daemon()
        uri = [c["uri"] for c in e.list_certs() if c["label"] == "old cert"][0]
        # no terminal and no --yes: refuse (usage)
        r = e.ctl("delete", uri, "--pin-file", self.pin_file, input="")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(e.list_certs()), 2)

    def test_delete_wrong_pin_and_not_found(self):
        e = self.env
        e.start_daemon()
        bad = self.secret("bad", "Wr0ngPin11")
        r = e.ctl("delete", "--label", "old cert", "--yes", "--pin-file", bad)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertNotIn("Wr0ngPin11", r.stdout + r.stderr)
        r = e.ctl("delete", "--label", "nothing", "--yes", "--pin-file", self.pin_file)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(len(e.list_certs()), 2)

    def test_secrets_never_from_argv(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("delete", "--label", "old cert", "--yes", "--pin", PIN)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--pin-file", r.stderr)
        self.assertNotIn(PIN, r.stderr)

    def test_pin_fd(self):
        e = self.env
        e.start_daemon()
        rfd, wfd = os.pipe()
        os.write(wfd, (PIN + "\n").encode())
        os.close(wfd)
        r = subprocess.run([CTL, "--address", e.bus_address, "delete", "--label", "old cert", "--yes",
                            "--pin-fd", str(rfd)], pass_fds=(rfd,), capture_output=True, text=True, env=e.env)
        os.close(rfd)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_passwd(self):
        e = self.env
        e.start_daemon()
        weak = self.secret("weak", "weakpin")
        r = e.ctl("passwd", "--pin-file", self.pin_file, "--new-pin-file", weak)
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("upper-case", r.stderr)
        good = self.secret("good", "N3wPassw0rd")
        r = e.ctl("passwd", "--pin-file", self.pin_file, "--new-pin-file", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        e.pkcs11_tool("agent", "-O", pin="N3wPassw0rd")
        r = e.ctl("passwd", "--pin-file", self.pin_file, "--new-pin-file", good)
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_enroll_token_local_and_file(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=agent",
                  "--pin-file", self.pin_file, "--subject", "CN=cli user")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("written successfully", r.stdout)
        self.assertIn("CN=cli user", [c.get("subject") for c in e.list_certs()])
        out = os.path.join(e.tmp, "x.p12")
        pw = self.secret("pw", "Fil3Passw0rd")
        r = e.ctl("enroll", "--ca", "local", "--storage", "file", "--output", out, "--password-file", pw,
                  "--subject", "CN=file user")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)
        r = e.ctl("enroll", "--ca", "local", "--storage", "file", "--output", out, "--password-file", pw)
        self.assertNotEqual(r.returncode, 0, "an existing output file was overwritten")

    def test_enroll_est_exit_codes(self):
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1", "OTP-2"]}})
        e.add_est_profile("est", max_attempts=2)
        e.start_daemon()
        otp = self.secret("otp", "OTP-1")
        args = ["enroll", "--ca", "est", "--login", "alice", "--otp-file", otp, "--storage", "token",
                "--token", "pkcs11:token=agent", "--pin-file", self.pin_file]
        r = e.ctl(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = e.ctl(*args)            # the one-time password was used
        self.assertEqual(r.returncode, 9, r.stderr)
        self.assertNotIn("OTP-1", r.stdout + r.stderr)
        e.est_control(error_500=5)
        args[args.index(otp)] = self.secret("otp2", "OTP-2")
        r = e.ctl(*args)
        self.assertEqual(r.returncode, 8, r.stderr)
        r = e.ctl("enroll", "--ca", "est", "--login", "alice", "--otp-file", otp, "--storage", "token",
                  "--token", "pkcs11:token=agent", "--pin-file", self.secret("w", "Wr0ngPin22"))
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_enroll_default_ca(self):
        """[daemon] default-ca: ListCas marks that profile default; enroll without --ca
        uses it among several (no terminal); naming no profile is a startup warning."""
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1"]}})
        e.add_est_profile("est")
        e.add_est_profile("zeta")
        e.extra_config = "[daemon]\ndefault-ca=est\n"
        e.start_daemon()
        cas = {c["name"]: c["default"] for c in e.call("ListCas")[0]}
        self.assertEqual(cas, {"est": True, "local": False, "zeta": False})
        self.assertIn("Default:", e.ctl("ca", "show", "est", check=True).stdout)
        self.assertNotIn("Default:", e.ctl("ca", "show", "zeta", check=True).stdout)
        r = e.ctl("enroll", "--login", "alice", "--otp-file", self.secret("otp", "OTP-1"), "--storage", "token",
                  "--token", "pkcs11:token=agent", "--pin-file", self.pin_file)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([r.get("op") for r in e.est_requests() if r.get("op") == "simpleenroll"], ["simpleenroll"])
        self.assertIn("CN=alice", [c.get("subject") for c in e.list_certs()])
        # on a terminal: said, not asked
        import pexpect
        child = pexpect.spawn(CTL, ["--address", e.bus_address, "enroll"], env=e.env, encoding="utf-8", timeout=30)
        child.expect(["CA profile: est \\(the default", "Choose"])
        self.assertIn("the default", child.after)
        child.expect("Login: ")
        child.close(force=True)
        # a name with no profile: the daemon says so at startup and marks none
        e.stop_daemon()
        e.extra_config = "[daemon]\ndefault-ca=agents\n"
        e.start_daemon()
        self.assertIn("default-ca=agents names no CA profile", e.log("p11certd"))
        self.assertFalse(any(c["default"] for c in e.call("ListCas")[0]))
        r = e.ctl("enroll", "--login", "alice", "--otp-file", self.secret("otp2", "OTP-1"), "--storage", "token",
                  "--token", "pkcs11:token=agent", "--pin-file", self.pin_file)
        self.assertEqual(r.returncode, 2, r.stderr)          # several profiles, none default: --ca needed
        self.assertIn("--ca", r.stderr)

    def test_no_wait_and_job(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("enroll", "--ca", "local", "--storage", "system", "--name", "svc", "--no-wait")
        self.assertEqual(r.returncode, 0, r.stderr)
        path = r.stdout.strip()
        self.assertTrue(path.startswith("/org/p11certd/jobs/"), r.stdout)
        r = e.ctl("job", path)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_renew_due_exit_codes(self):
        e = self.env
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        # nothing the daemon enrolled: nothing due → 0
        r = e.ctl("renew", "--due")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = e.ctl("enroll", "--ca", "local", "--storage", "system", "--name", "svc")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = e.ctl("renew", "--due")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = e.ctl("enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=agent",
                  "--pin-file", self.pin_file, "--subject", "CN=needs pin")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = e.ctl("renew", "--due")
        self.assertEqual(r.returncode, 20, r.stdout + r.stderr)
        self.assertIn("needs", (r.stdout + r.stderr).lower())

    def test_wizard_on_a_terminal(self):
        """The enroll wizard, step by step as in the users' manual, on a real
        pseudo-terminal: CA, login, one-time password (not echoed), storage,
        token PIN (not echoed), confirmation, result."""
        import pexpect
        e = self.env
        e.start_est(users={"agent-42": {"otps": ["7731-0042"]}})
        e.add_est_profile("network")
        e.start_daemon()
        child = pexpect.spawn(CTL, ["--address", e.bus_address, "enroll"], env=e.env, encoding="utf-8",
                              timeout=30, dimensions=(40, 120))
        transcript = []
        child.logfile_read = type("T", (), {"write": lambda self, s: transcript.append(s),
                                            "flush": lambda self: None})()
        child.expect("CA profile:")
        child.expect(r"Choose \[\d\]: ")
        names = child.before
        self.assertIn("network", names)
        self.assertIn("local", names)
        child.sendline("1" if names.index("local") > names.index("network") else "2")
        child.expect("Login: ")
        child.sendline("agent-42")
        child.expect("One-time password: ")
        child.sendline("7731-0042")
        child.expect("Storage type:")
        child.expect(r"Choose \[\d\]: ")
        child.sendline("1")                     # token
        child.expect('PIN of token “agent”: ')
        child.sendline(PIN)
        child.expect(r"Request the certificate now\?")
        child.sendline("y")
        child.expect("written successfully")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0, "".join(transcript))
        screen = "".join(transcript)
        self.assertNotIn("7731-0042", screen, "the one-time password was echoed")
        self.assertNotIn(PIN, screen, "the PIN was echoed")
        self.assertIn("CN=agent-42", [c.get("subject") for c in e.list_certs()])

    def test_delete_confirmation_on_a_terminal(self):
        import pexpect
        e = self.env
        e.start_daemon()
        args = ["--address", e.bus_address, "delete", "--label", "old cert"]
        child = pexpect.spawn(CTL, args, env=e.env, encoding="utf-8", timeout=30)
        child.expect("CN=Old Agent")
        child.expect(r"Continue\?")
        child.sendline("n")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 11)
        self.assertEqual(len(e.list_certs()), 2)
        child = pexpect.spawn(CTL, args, env=e.env, encoding="utf-8", timeout=30)
        child.expect(r"Continue\?")
        child.sendline("y")
        child.expect("PIN")
        child.sendline(PIN)
        child.expect(pexpect.EOF)
        out = child.before
        child.close()
        self.assertEqual(child.exitstatus, 0, out)
        self.assertNotIn(PIN, out)
        self.assertEqual([c["label"] for c in e.list_certs()], ["keep me"])

    def test_secret_prompt_survives_suspend(self):
        """Issue 13 #10: Ctrl-Z at the PIN prompt, then fg, in a real shell on a
        pseudo-terminal: the prompt is shown again with echo off again, and no
        part of the PIN is echoed (before, the rest of it was)."""
        import pexpect
        e = self.env
        e.start_daemon()
        sh = pexpect.spawn("/bin/bash", ["--norc", "--noprofile", "--noediting", "-i"],
                           env=dict(e.env, PS1="sh$ ", TERM="dumb"), encoding="utf-8", timeout=30)
        try:
            sh.expect_exact("sh$ ")
            sh.sendline("%s --address %s delete --label 'old cert' --yes" % (CTL, e.bus_address))
            sh.expect("PIN")
            sh.send(PIN[:4])
            sh.sendcontrol("z")                      # the terminal stops the job; what was typed is discarded
            sh.expect("Stopped")
            sh.expect_exact("sh$ ")
            sh.sendline("fg")
            wait_for(lambda: not termios.tcgetattr(sh.child_fd)[3] & termios.ECHO, 10,
                     "echo off again after fg (else the rest of the PIN is echoed)")
            sh.expect("PIN", timeout=10)             # asked again
            sh.sendline(PIN)
            sh.expect_exact("sh$ ")
            out = sh.before
            sh.sendline("echo rc=$?")
            sh.expect(r"rc=(\d+)")
            rc = int(sh.match.group(1))
        finally:
            sh.close(force=True)
        self.assertNotIn(PIN, out, "the PIN was echoed")
        self.assertEqual(rc, 0, out)
        self.assertNotIn("old cert", [c["label"] for c in e.list_certs()])

    def test_daemon_not_running(self):
        e = self.env
        e.start_bus()
        r = e.ctl("list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not running", r.stderr)

    def test_monitor_json(self):
        e = self.env
        e.start_daemon()
        mon = subprocess.Popen([CTL, "--address", e.bus_address, "monitor", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=e.env)
        try:
            # a job's events show up; wait for the monitor to be subscribed by driving one job after it started
            wait_for(lambda: mon.poll() is None, 2, "monitor running")
            deadline = time.monotonic() + 1
            wait_for(lambda: time.monotonic() > deadline, 2, "monitor subscribed")
            e.ctl("enroll", "--ca", "local", "--storage", "system", "--name", "mon", check=True)
        finally:
            mon.send_signal(signal.SIGTERM)
            out, err = mon.communicate(10)
        self.assertEqual(mon.returncode, 0, err)
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.assertTrue(events, "monitor printed nothing")
        self.assertTrue(all("event" in ev or "signal" in ev or "type" in ev for ev in events), events[:3])


if __name__ == "__main__":
    main()
