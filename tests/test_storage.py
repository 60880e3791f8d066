"""Issue 5: the System and File (PKCS#12) storage types and the built-in
local CA, end to end on real parts."""
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from harness import GLib, JOB_IFACE, PIN, PY, SRC, TestCase, ensure_group, main, wait_file, wait_for

P12_PASSWORD = "Str0ngP12pass"
KEY_GROUP = "p11c-keyread"


class Storage(TestCase):
    def setUp(self):
        super().setUp()
        self.env.add_token("agent")

    def job(self, request, fds=None, timeout=60):
        e = self.env
        path = e.enroll(request, fds=fds)
        return path, e.wait_job(path, timeout)

    def system_dir(self, name):
        return os.path.join(self.env.state_dir, "system", name)

    # -- local CA --------------------------------------------------------------
    def test_local_ca_to_token(self):
        e = self.env
        e.start_daemon()
        path, (ok, err, msg) = self.job({"ca": "local", "storage": "token", "token": "pkcs11:token=agent",
                                         "pin": PIN, "subject": "CN=Lab Agent,O=Shop"})
        self.assertTrue(ok, msg)
        c = [x for x in e.list_certs() if x["storage"] == "token" and "Lab Agent" in x["subject"]][0]
        self.assertTrue(c["has_private_key"])
        self.assertIn("p11certd local CA", c["issuer"])
        # the CA certificate, exported for relying parties, verifies the issued one
        pem = e.call("GetCaCertificate", "s", ["local"])[0]
        ca = os.path.join(e.tmp, "local-ca.pem")
        open(ca, "w").write(pem)
        leaf = os.path.join(e.tmp, "leaf.pem")
        subprocess.run(["openssl", "x509", "-inform", "DER", "-out", leaf], input=bytes(c["der"]), check=True)
        r = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", ca, leaf],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        text = subprocess.run(["openssl", "x509", "-in", ca, "-noout", "-text"], capture_output=True,
                              text=True).stdout
        self.assertIn("CA:TRUE", text)
        self.assertIn("Certificate Sign", text)
        self.assertIn("Subject Key Identifier", text)
        leaf_text = subprocess.run(["openssl", "x509", "-in", leaf, "-noout", "-text"], capture_output=True,
                                   text=True).stdout
        self.assertIn("TLS Web Client Authentication", leaf_text)
        self.assertIn("Authority Key Identifier", leaf_text)
        key = os.path.join(e.state_dir, "local-ca", "ca.key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)

    # -- system ------------------------------------------------------------------
    def test_system_store(self):
        e = self.env
        e.start_daemon()
        _, (ok, err, msg) = self.job({"ca": "local", "storage": "system", "name": "nginx",
                                      "subject": "CN=web.example"})
        self.assertTrue(ok, msg)
        d = self.system_dir("nginx")
        self.assertEqual(sorted(os.listdir(d)), ["cert.pem", "chain.pem", "key.pem"])
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "key.pem")).st_mode), 0o600)
        self.assertEqual(os.stat(os.path.join(d, "key.pem")).st_uid, 0)
        # the key matches the certificate
        m1 = subprocess.run(["openssl", "pkey", "-in", os.path.join(d, "key.pem"), "-pubout"],
                            capture_output=True, text=True, check=True).stdout
        m2 = subprocess.run(["openssl", "x509", "-in", os.path.join(d, "cert.pem"), "-noout", "-pubkey"],
                            capture_output=True, text=True, check=True).stdout
        self.assertEqual(m1, m2)
        # listed as system, with a system: URI that DeleteCert takes without a PIN
        sys_certs = e.list_certs(storage="system")
        self.assertEqual([c["uri"] for c in sys_certs], ["system:nginx"])
        self.assertEqual(sys_certs[0]["subject"], "CN=web.example")
        self.assertTrue(sys_certs[0]["has_private_key"])
        res = e.call("DeleteCert", "ssa{sv}", ["system:nginx", "", {}])[0]
        self.assertEqual(res["removed"], ["system:nginx"])
        self.assertFalse(os.path.exists(d))
        self.assertEqual(e.list_certs(storage="system"), [])
        self.assertDBusError("NotFound", "DeleteCert", "ssa{sv}", ["system:nginx", "", {}])

    def test_all_three_listed_together(self):
        e = self.env
        e.start_daemon()
        self.assertTrue(self.job({"ca": "local", "storage": "token", "token": "pkcs11:token=agent",
                                  "pin": PIN, "subject": "CN=on token"})[1][0])
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "svc",
                                  "subject": "CN=in system"})[1][0])
        out = os.path.join(e.tmp, "me.p12")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.assertTrue(self.job({"ca": "local", "storage": "file", "fd": 0, "password": P12_PASSWORD,
                                  "subject": "CN=in file"}, fds=[fd])[1][0])
        os.close(fd)
        subjects = {c["subject"]: c["storage"] for c in e.list_certs()}
        self.assertEqual(subjects.get("CN=on token"), "token")
        self.assertEqual(subjects.get("CN=in system"), "system")
        # a file certificate belongs to the caller's file, not to a store the daemon lists
        self.assertNotIn("CN=in file", subjects)

    def test_system_reenroll_keeps_old_until_complete(self):
        e = self.env
        e.start_daemon()
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "svc", "subject": "CN=v1"})[1][0])
        old = open(os.path.join(self.system_dir("svc"), "cert.pem")).read()
        # a failing re-enrollment (the EST CA down) leaves the old files as they were
        e.start_est()
        e.add_est_profile("down", url="https://127.0.0.1:1", max_attempts=1)
        e.stop_daemon()
        e.start_daemon()
        _, (ok, err, _) = self.job({"ca": "down", "login": "alice", "otp": "OTP-1", "storage": "system",
                                    "name": "svc"})
        self.assertFalse(ok)
        self.assertEqual(open(os.path.join(self.system_dir("svc"), "cert.pem")).read(), old)
        # a good one replaces them
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "svc", "subject": "CN=v2"})[1][0])
        self.assertNotEqual(open(os.path.join(self.system_dir("svc"), "cert.pem")).read(), old)
        self.assertEqual([x for x in os.listdir(os.path.join(e.state_dir, "system")) if x != "svc"], [])

    def test_system_killed_mid_write(self):
        e = self.env
        e.start_daemon()
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "svc", "subject": "CN=v1"})[1][0])
        old = open(os.path.join(self.system_dir("svc"), "cert.pem")).read()
        e.stop_daemon()
        env = dict(e.env, P11CERTD_TEST_HOOKS="system-store-pause=30")
        e.start_daemon(env=env)
        path = e.enroll({"ca": "local", "storage": "system", "name": "svc", "subject": "CN=v2"})
        seen = e.watch_job(path)
        base = os.path.join(e.state_dir, "system")
        wait_for(lambda: any(x.startswith(".new-") and os.path.exists(os.path.join(base, x, "chain.pem"))
                             for x in os.listdir(base)), 20, "the new entry written aside")
        del seen
        e.kill(e.daemon, signal.SIGKILL)
        wait_for(lambda: not e.name_has_owner(), 10, "name released")
        self.assertEqual(open(os.path.join(self.system_dir("svc"), "cert.pem")).read(), old)
        e.start_daemon()
        self.assertEqual(sorted(os.listdir(base)), ["svc"], "the half-written entry was not cleaned")
        self.assertEqual(open(os.path.join(self.system_dir("svc"), "cert.pem")).read(), old)

    def test_system_group_reads_key(self):
        """system-group=: a service in that group reads key.pem; nobody else does,
        and the state directory is traversable but not listable."""
        e = self.env
        gid = ensure_group(KEY_GROUP)
        with open(os.path.join(e.ca_dir, "svc.conf"), "w") as f:
            f.write("[ca]\ntype=local\nsystem-group=%s\n" % KEY_GROUP)
        e.start_daemon()
        _, (ok, err, msg) = self.job({"ca": "svc", "storage": "system", "name": "web",
                                      "subject": "CN=web.example"})
        self.assertTrue(ok, msg)
        key = os.path.join(self.system_dir("web"), "key.pem")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o640)
        self.assertEqual(os.stat(key).st_gid, gid)
        with open(key) as f:
            pem = f.read()
        member, stranger = [KEY_GROUP], []

        def run(groups, *argv):
            return e.run_as("p11c-bob", argv, groups=groups, capture_output=True, text=True)

        def readable(who, path):
            r = run(who, "cat", path)
            if r.returncode == 0:
                return r.stdout
            self.assertIn("Permission denied", r.stderr)
            return None

        self.assertEqual(readable(member, key), pem)
        self.assertIsNotNone(readable(member, os.path.join(self.system_dir("web"), "cert.pem")))
        self.assertIsNone(readable(stranger, key))
        self.assertIsNone(readable(stranger, os.path.join(self.system_dir("web"), "cert.pem")))
        # the directories above the entry: search bit only, nothing to list
        for d in (e.state_dir, os.path.join(e.state_dir, "system")):
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o711, d)
            r = run(member, "ls", d)
            self.assertNotEqual(r.returncode, 0, r.stdout)
        # the local CA key and any pending records stay root-only
        for sub in ("local-ca", "pending"):
            path = os.path.join(e.state_dir, sub)
            if os.path.exists(path):
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700, path)
        self.assertIsNone(readable(member, os.path.join(e.state_dir, "local-ca", "ca.key")))
        self.assertIsNone(readable(member, os.path.join(e.state_dir, "local-ca", "ca.pem")))
        # an entry from a profile without system-group stays root-only
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "private",
                                  "subject": "CN=private"})[1][0])
        self.assertIsNone(readable(member, os.path.join(self.system_dir("private"), "key.pem")))
        self.assertIsNone(readable(member, os.path.join(self.system_dir("private"), "cert.pem")))

        # directories left 0700 by an older version are opened at the next start
        e.stop_daemon()
        for d in (e.state_dir, os.path.join(e.state_dir, "system")):
            os.chmod(d, 0o700)
        self.assertIsNone(readable(member, key))
        e.start_daemon()
        self.assertEqual(readable(member, key), pem)
        self.assertIsNone(readable(stranger, key))

    def test_renewal_never_creates_the_local_ca(self):
        """Issue 13 #8: only an enrollment (which needs local-ca.issue) creates the
        local CA; a renewal through a type=local profile whose CA is gone
        fails NotFound and leaves the entry as it was, creating no CA key."""
        e = self.env
        e.start_daemon()
        self.assertTrue(self.job({"ca": "local", "storage": "system", "name": "web", "subject": "CN=web"})[1][0])
        cert = open(os.path.join(self.system_dir("web"), "cert.pem")).read()
        shutil.rmtree(os.path.join(e.state_dir, "local-ca"))
        path = e.call("Renew", "sa{sv}", ["system:web", {}])[0]
        ok, err, msg = e.wait_job(path, 60)
        self.assertEqual((ok, err), (False, "org.p11certd.Error.NotFound"), msg)
        self.assertIn("does not exist", msg)
        self.assertFalse(os.path.exists(os.path.join(e.state_dir, "local-ca")), "the renewal created a CA")
        self.assertEqual(open(os.path.join(self.system_dir("web"), "cert.pem")).read(), cert)

    def test_system_bad_names(self):
        e = self.env
        e.start_daemon()
        for name in ["../etc", "a/b", "..", ".hidden", "x" * 65, ""]:
            msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}",
                                       [{"ca": GLib.Variant("s", "local"), "storage": GLib.Variant("s", "system"),
                                         "name": GLib.Variant("s", name)}])
            self.assertIn('"name"', msg)
        self.assertFalse(os.path.exists(os.path.join(e.state_dir, "system")))

    def test_disk_full(self):
        e = self.env
        state = e.mount_tmpfs(os.path.join(e.tmp, "small"), "12k")
        e.state_dir = state
        e.start_daemon()
        # fill the small disk (leave a little room so the daemon's own records fit)
        with open(os.path.join(state, "filler"), "wb") as f:
            try:
                f.write(b"x" * 20000)
            except OSError:
                pass
        _, (ok, err, msg) = self.job({"ca": "local", "storage": "system", "name": "big",
                                      "subject": "CN=disk full"})
        self.assertFalse(ok)
        self.assertIn(err, ("org.p11certd.Error.NoSpace", "org.p11certd.Error.Failed"), msg)
        self.assertFalse(os.path.exists(os.path.join(state, "system", "big")))
        leftovers = [x for x in os.listdir(os.path.join(state, "system"))] \
            if os.path.exists(os.path.join(state, "system")) else []
        self.assertEqual(leftovers, [])

    # -- file (PKCS#12) ----------------------------------------------------------
    def p12_job(self, fd, password=P12_PASSWORD, **kw):
        req = {"ca": "local", "storage": "file", "fd": 0, "password": password, "subject": "CN=File User"}
        req.update(kw)
        return self.job(req, fds=[fd])

    def test_pkcs12_file(self):
        e = self.env
        e.start_daemon()
        out = os.path.join(e.tmp, "agent.p12")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        path, (ok, err, msg) = self.p12_job(fd)
        os.close(fd)
        self.assertTrue(ok, msg)
        self.assertTrue(e.get_property(path, JOB_IFACE, "Result").startswith("file:"))
        r = subprocess.run(["openssl", "pkcs12", "-info", "-in", out, "-passin", "pass:" + P12_PASSWORD,
                            "-nodes"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("BEGIN PRIVATE KEY", r.stdout)
        self.assertIn("subject=CN = File User", r.stdout)
        self.assertIn("AES-256-CBC", r.stderr)
        self.assertIn("PBKDF2", r.stderr)
        self.assertNotIn("RC2", r.stderr)
        self.assertNotIn("3DES", r.stderr)
        bad = subprocess.run(["openssl", "pkcs12", "-info", "-in", out, "-passin", "pass:wrong", "-nokeys"],
                             capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        # the daemon's log and state hold neither the password nor the key
        self.assertNotIn(P12_PASSWORD, e.log("p11certd"))

    def test_pkcs12_from_est(self):
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1"]}})
        e.add_est_profile("est")
        e.start_daemon()
        out = os.path.join(e.tmp, "est.p12")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _, (ok, err, msg) = self.job({"ca": "est", "login": "alice", "otp": "OTP-1", "storage": "file", "fd": 0,
                                      "password": P12_PASSWORD}, fds=[fd])
        os.close(fd)
        self.assertTrue(ok, msg)
        r = subprocess.run(["openssl", "pkcs12", "-in", out, "-passin", "pass:" + P12_PASSWORD, "-nokeys",
                            "-clcerts"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("subject=CN = alice", r.stdout)
        self.assertIn("p11certd test EST CA", r.stdout)

    def test_weak_password(self):
        e = self.env
        e.start_daemon()
        fd = os.open(os.path.join(e.tmp, "w.p12"), os.O_WRONLY | os.O_CREAT, 0o600)
        for pw, rule in [("short1A", "7 characters"), ("alllowercase1", "upper-case"), ("NoDigitsAtAll", "digit")]:
            msg = self.assertDBusError("PinPolicy", "Enroll", "a{sv}",
                                       [{"ca": GLib.Variant("s", "local"), "storage": GLib.Variant("s", "file"),
                                         "fd": GLib.Variant("h", 0), "password": GLib.Variant("s", pw)}],
                                       fds=[fd])
            self.assertIn(rule, msg)
        os.close(fd)
        self.assertEqual(os.path.getsize(os.path.join(e.tmp, "w.p12")), 0)

    def test_bad_fds(self):
        e = self.env
        e.start_daemon()
        ro_path = os.path.join(e.tmp, "ro.p12")
        open(ro_path, "w").close()
        ro = os.open(ro_path, os.O_RDONLY)
        dfd = os.open(e.tmp, os.O_RDONLY | os.O_DIRECTORY)
        base = {"ca": GLib.Variant("s", "local"), "storage": GLib.Variant("s", "file"),
                "password": GLib.Variant("s", P12_PASSWORD)}
        for fd, words in [(ro, "read-only"), (dfd, "directory")]:
            msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}", [dict(base, fd=GLib.Variant("h", 0))],
                                       fds=[fd])
            self.assertIn(words, msg)
        # an fd index with no fd attached (a closed descriptor cannot be sent)
        msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}", [dict(base, fd=GLib.Variant("h", 3))],
                                   fds=[ro])
        self.assertIn('"fd"', msg)
        msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}", [base])
        self.assertIn('"fd"', msg)
        os.close(ro)
        os.close(dfd)

    def test_output_fd_must_be_a_file(self):
        """Issue 13 #7: the PKCS#12 output is written only into a regular file on a
        local file system.  A full pipe, a socket, a device or a file on a FUSE
        file system whose server never answers would hold a worker in write()
        for good (Cancel cannot reach it; SIGTERM waited 15 s): each is refused
        at the call, with a message saying why, and no job starts."""
        e = self.env
        e.start_daemon()
        base = {"ca": GLib.Variant("s", "local"), "storage": GLib.Variant("s", "file"),
                "password": GLib.Variant("s", P12_PASSWORD), "fd": GLib.Variant("h", 0)}
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            while True:
                os.write(w, b"x" * 65536)     # a pipe nobody reads, full
        except BlockingIOError:
            pass
        a, b = socket.socketpair()
        null = os.open("/dev/null", os.O_WRONLY)
        mnt = os.path.join(e.tmp, "fuse")
        os.makedirs(mnt)
        ready = os.path.join(e.tmp, "fuse.ready")
        fuse = e.spawn("stallfs", [PY, os.path.join(SRC, "tests", "stallfs.py"), mnt, ready])
        e.mounts.append(mnt)
        wait_file(ready, 20, fuse)
        on_fuse = os.open(os.path.join(mnt, "me.p12"), os.O_WRONLY | os.O_CREAT, 0o600)
        for fd, words in [(w, "pipes are refused"), (a.fileno(), "sockets are refused"),
                          (null, "devices are refused"), (on_fuse, "FUSE file system")]:
            t0 = time.monotonic()
            msg = self.assertDBusError("InvalidArgs", "Enroll", "a{sv}", [base], fds=[fd])
            self.assertIn('"fd"', msg)
            self.assertIn(words, msg)
            self.assertLess(time.monotonic() - t0, 5)
        objs = e.call("GetManagedObjects", iface="org.freedesktop.DBus.ObjectManager")[0]
        self.assertEqual([p for p in objs if "/jobs/" in p], [], "a job was started")
        for fd in (r, w, null, on_fuse):
            os.close(fd)
        a.close()
        b.close()
        # the daemon stops at once: no worker is stuck in a write
        t0 = time.monotonic()
        e.stop_daemon()
        self.assertLess(time.monotonic() - t0, 5)

if __name__ == "__main__":
    main()
