"""Secrets never leak: every secret-taking flow (DeleteCert PIN, ChangePin
old/new, Enroll token PIN + EST one-time password, Enroll PKCS#12 password,
and the same through p11certctl with --pin-file / --pin-fd / --otp-file /
--password-file) runs with the daemon's debug logging on (--verbose,
G_MESSAGES_DEBUG=all), with distinctive secrets, which must appear nowhere
in: the daemon's log, the bus log, the CLI's stdout/stderr, the EST
server's request log, the state directory, and /proc/*/cmdline (+ environ)
of every process, sampled while slow jobs run."""
import base64
import os
import subprocess
import time

from harness import CTL, GLib, JOB_IFACE, TOKEN_IFACE, TestCase, main, wait_for

TOKEN_PIN = "Zq7TokPinSecretK"
NEW_PIN = "Nw9NewPinSecretQ"
WRONG_PIN = "Wr0ngPinGhostX5"
WEAK_PIN = "weakpinsecretzz"
OTP = "Otp4f1xSECRET77"
BAD_OTP = "OtpBadSECRET99"
P12_PW = "P12pwHushHush9Zz"
CLI_OTP = "CliOtpSECRET31"
CLI_P12_PW = "CliP12pwSecret8Q"
CLI_NEW_PIN = "CliNewPinSecret7W"
SECRETS = [TOKEN_PIN, NEW_PIN, WRONG_PIN, WEAK_PIN, OTP, BAD_OTP, P12_PW, CLI_OTP, CLI_P12_PW, CLI_NEW_PIN]


def forms(secret):
    """The secret as text, hex, and in an HTTP Basic header."""
    b = secret.encode()
    out = [b, b.hex().encode(), b.hex().upper().encode()]
    for login in ("alice", "bob"):
        out.append(base64.b64encode(("%s:%s" % (login, secret)).encode()))
    return out


class Secrets(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        e.add_token("agent", pin=TOKEN_PIN)
        e.start_est(users={"alice": {"otps": [OTP, CLI_OTP]}, "bob": {"otps": ["B-unused-1"]}})
        e.add_est_profile("est")
        self.cmdline_samples = 0
        self.seen_in_proc = []

    # -- where secrets must not be -------------------------------------------------
    def sample_proc(self):
        """Read every process's cmdline and environ now; remember any secret found."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            for what in ("cmdline", "environ"):
                try:
                    with open("/proc/%s/%s" % (pid, what), "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                for s in SECRETS:
                    if s.encode() in data:
                        self.seen_in_proc.append((pid, what, s, data[:300]))
        self.cmdline_samples += 1

    def sample_while(self, running, timeout=60):
        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            self.sample_proc()
            GLib.MainContext.default().iteration(False)
            time.sleep(0.02)

    def assert_nowhere(self, extra_texts=()):
        e = self.env
        places = {"daemon log": e.log("p11certd").encode(), "bus log": e.log("dbus").encode(),
                  "EST server log": e.log("est").encode()}
        rl = os.path.join(e.est_dir, "requests.log")
        places["EST requests.log"] = open(rl, "rb").read() if os.path.exists(rl) else b""
        for root, _, files in os.walk(e.state_dir):
            for name in files:
                p = os.path.join(root, name)
                with open(p, "rb") as f:
                    places["state " + os.path.relpath(p, e.state_dir)] = f.read()
        for i, t in enumerate(extra_texts):
            places["CLI output %d" % i] = t.encode() if isinstance(t, str) else t
        for where, data in places.items():
            for s in SECRETS:
                for form in forms(s):
                    self.assertNotIn(form, data, "secret %r (as %r) found in %s" % (s, form[:40], where))
        self.assertEqual(self.seen_in_proc, [], "a secret was in a process's cmdline/environ")
        # the log really is a debug log (so the check means something)
        self.assertIn("DEBUG", e.log("p11certd"))

    # -- D-Bus flows ------------------------------------------------------------------
    def test_dbus_flows(self):
        e = self.env
        e.est_control(slow=1, slow_seconds=3)
        e.start_daemon()
        token = e.list_tokens()[0]["path"]
        # Enroll on the token over EST with the OTP and the PIN, slow: sample /proc meanwhile
        path = e.enroll({"ca": "est", "login": "alice", "otp": OTP, "storage": "token", "token": "pkcs11:token=agent",
                         "pin": TOKEN_PIN, "label": "est cert"})
        seen = e.watch_job(path)
        self.sample_while(lambda: seen["finished"] is None and "done" not in seen["states"]
                          and "failed" not in seen["states"], 30)
        ok, err, msg = e.wait_job(path, 60, seen)
        self.assertTrue(ok, msg)
        e.est_control()
        # the same OTP again: rejected, the error must not echo it
        path = e.enroll({"ca": "est", "login": "alice", "otp": OTP, "storage": "token", "token": "pkcs11:token=agent",
                         "pin": TOKEN_PIN})
        ok, err, msg = e.wait_job(path, 60)
        self.assertFalse(ok)
        self.assertNotIn(OTP, msg)
        path = e.enroll({"ca": "est", "login": "alice", "otp": BAD_OTP, "storage": "token",
                         "token": "pkcs11:token=agent", "pin": TOKEN_PIN})
        ok, err, msg = e.wait_job(path, 60)
        self.assertEqual(err, "org.p11certd.Error.CaRejected")
        self.assertNotIn(BAD_OTP, msg)
        # a wrong PIN in an enrollment
        path = e.enroll({"ca": "local", "storage": "token", "token": "pkcs11:token=agent", "pin": WRONG_PIN})
        ok, err, msg = e.wait_job(path, 60)
        self.assertEqual(err, "org.p11certd.Error.PinIncorrect")
        self.assertNotIn(WRONG_PIN, msg)
        # PKCS#12 file with its password
        out = os.path.join(e.tmp, "me.p12")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        path = e.enroll({"ca": "local", "storage": "file", "fd": 0, "password": P12_PW, "subject": "CN=file"},
                        fds=[fd])
        ok, err, msg = e.wait_job(path, 60)
        os.close(fd)
        self.assertTrue(ok, msg)
        # the password is not stored in the file in clear either
        self.assertNotIn(P12_PW.encode(), open(out, "rb").read())
        self.assertNotIn(P12_PW.encode("utf-16-be"), open(out, "rb").read())
        # a weak PKCS#12 password: the policy message must not echo it
        fd = os.open(os.path.join(e.tmp, "weak.p12"), os.O_WRONLY | os.O_CREAT, 0o600)
        msg = self.assertDBusError("PinPolicy", "Enroll", "a{sv}",
                                   [{"ca": GLib.Variant("s", "local"), "storage": GLib.Variant("s", "file"),
                                     "fd": GLib.Variant("h", 0), "password": GLib.Variant("s", WEAK_PIN)}], fds=[fd])
        os.close(fd)
        self.assertNotIn(WEAK_PIN, msg)
        # ChangePin: wrong old PIN, weak new PIN, then there and back
        msg = self.assertDBusError("PinIncorrect", "ChangePin", "ssa{sv}", [WRONG_PIN, NEW_PIN, {}], path=token,
                                   iface=TOKEN_IFACE)
        self.assertNotIn(WRONG_PIN, msg)
        self.assertNotIn(NEW_PIN, msg)
        msg = self.assertDBusError("PinPolicy", "ChangePin", "ssa{sv}", [TOKEN_PIN, WEAK_PIN, {}], path=token,
                                   iface=TOKEN_IFACE)
        self.assertNotIn(WEAK_PIN, msg)
        self.assertNotIn(TOKEN_PIN, msg)
        e.call("ChangePin", "ssa{sv}", [TOKEN_PIN, NEW_PIN, {}], path=token, iface=TOKEN_IFACE)
        e.call("ChangePin", "ssa{sv}", [NEW_PIN, TOKEN_PIN, {}], path=token, iface=TOKEN_IFACE)
        # DeleteCert: wrong PIN, then the right one
        uri = [c for c in e.list_certs() if c["label"] == "est cert"][0]["uri"]
        msg = self.assertDBusError("PinIncorrect", "DeleteCert", "ssa{sv}", [uri, WRONG_PIN, {}])
        self.assertNotIn(WRONG_PIN, msg)
        e.call("DeleteCert", "ssa{sv}", [uri, TOKEN_PIN, {}])
        self.sample_proc()
        self.assertGreater(self.cmdline_samples, 10)
        self.assert_nowhere()

    # -- the same through p11certctl --------------------------------------------------
    def secret_file(self, name, value):
        p = os.path.join(self.env.tmp, name)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
        return p

    def ctl_popen(self, *args, pass_fds=()):
        e = self.env
        return subprocess.Popen([CTL, "--address", e.bus_address] + list(args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=e.env, pass_fds=pass_fds)

    def ctl_run(self, *args, pass_fds=(), sample=False, expect=0):
        p = self.ctl_popen(*args, pass_fds=pass_fds)
        if sample:
            self.sample_while(lambda: p.poll() is None, 60)
        out, err = p.communicate(timeout=120)
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        self.outputs += [out, err]
        self.assertEqual(p.returncode, expect, "p11certctl %s -> %d\n%s\n%s" % (args, p.returncode, out, err))
        return out, err

    def test_cli_flows(self):
        e = self.env
        if not os.path.exists(CTL):
            self.fail("p11certctl is not built (%s)" % CTL)
        self.outputs = []
        e.est_control(slow=1, slow_seconds=3)
        e.start_daemon()
        pin = self.secret_file("pin.txt", TOKEN_PIN)
        wrong = self.secret_file("wrong.txt", WRONG_PIN)
        otp = self.secret_file("otp.txt", CLI_OTP)
        new = self.secret_file("new.txt", CLI_NEW_PIN)
        weak = self.secret_file("weak.txt", WEAK_PIN)
        pw = self.secret_file("pw.txt", CLI_P12_PW)
        # enroll over EST, slow: sample every process's cmdline meanwhile
        self.ctl_run("enroll", "--ca", "est", "--login", "alice", "--otp-file", otp, "--storage", "token",
                     "--token", "pkcs11:token=agent", "--pin-file", pin, "--label", "cli cert", "--yes",
                     sample=True)
        e.est_control()
        # a wrong PIN (exit 3), never echoed
        self.ctl_run("enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=agent",
                     "--pin-file", wrong, "--yes", expect=3)
        # PKCS#12 file
        out_p12 = os.path.join(e.tmp, "cli.p12")
        self.ctl_run("enroll", "--ca", "local", "--storage", "file", "--output", out_p12, "--password-file", pw,
                     "--subject", "CN=cli file", "--yes")
        self.assertNotIn(CLI_P12_PW.encode(), open(out_p12, "rb").read())
        r = subprocess.run(["openssl", "pkcs12", "-info", "-in", out_p12, "-passin", "file:" + pw, "-nokeys"],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        # passwd: wrong old PIN (3), weak new PIN (5), then there and back
        self.ctl_run("passwd", "--token", "pkcs11:token=agent", "--pin-file", wrong, "--new-pin-file", new,
                     expect=3)
        self.ctl_run("passwd", "--token", "pkcs11:token=agent", "--pin-file", pin, "--new-pin-file", weak,
                     expect=5)
        self.ctl_run("passwd", "--token", "pkcs11:token=agent", "--pin-file", pin, "--new-pin-file", new)
        self.ctl_run("passwd", "--token", "pkcs11:token=agent", "--pin-file", new, "--new-pin-file", pin)
        # delete: wrong PIN through --pin-fd, then the right one from a file
        uri = [c for c in e.list_certs() if c["label"] == "cli cert"][0]["uri"]
        r, w = os.pipe()
        os.write(w, (WRONG_PIN + "\n").encode())
        os.close(w)
        self.ctl_run("delete", uri, "--yes", "--pin-fd", str(r), pass_fds=(r,), expect=3)
        os.close(r)
        r, w = os.pipe()
        os.write(w, (TOKEN_PIN + "\n").encode())
        os.close(w)
        self.ctl_run("delete", uri, "--yes", "--pin-fd", str(r), pass_fds=(r,))
        os.close(r)
        self.assertNotIn("cli cert", [c["label"] for c in e.list_certs()])
        self.sample_proc()
        self.assertGreater(self.cmdline_samples, 10)
        self.assert_nowhere(self.outputs)


if __name__ == "__main__":
    main()
