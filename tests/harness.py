"""Integration test harness for p11certd: real parts, no mocks.

Starts, per test: a private *system-type* dbus-daemon loaded with Debian's
system.conf and the project's own bus policy (so the policy is enforced),
SoftHSM2 tokens created for the test, the *built* p11certd against them,
optionally the real polkitd (in a private mount namespace that sees only
the project's actions and rules) and the real EST test server.  Everything
binds to a temporary directory or 127.0.0.1, runs under `timeout`, and is
killed by PID on cleanup.

Run with /usr/bin/python3 (Debian's, which has python3-gi).
"""
import base64
import datetime
import fcntl
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

SRC = os.environ.get("P11C_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("P11C_BUILD_DIR", os.path.join(SRC, "build"))
DAEMON = os.path.join(BUILD, "daemon", "p11certd")
CTL = os.path.join(BUILD, "client", "p11certctl")
# the build tree's message catalogues (po/LANG/LC_MESSAGES/p11certd.mo)
LOCALEDIR = os.path.join(BUILD, "po")
# the locale each translation is tested in (tools/install-deps generates it)
LOCALES = {"ru": "ru_RU.UTF-8"}
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
FAULT_MODULE = os.path.join(BUILD, "tests", "faultmod", "p11c-fault.so")
TPM2_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
NSS_MODULE = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
PY = "/usr/bin/python3"

NAME = "org.p11certd"
PATH = "/org/p11certd"
MANAGER = "org.p11certd1.Manager"
TOKEN_IFACE = "org.p11certd1.Token"
JOB_IFACE = "org.p11certd1.Job"

PIN = "Passw0rdA"
SO_PIN = "S0-Passw0rd"
TEST_USERS = ("p11c-alice", "p11c-bob", "p11certd-renew")


def error_name(exc):
    """'org.p11certd.Error.PinIncorrect' from a GLib.Error raised by a call."""
    remote = Gio.DBusError.get_remote_error(exc)
    return remote or ""


def _ensure_account(lookup, create_argv, name):
    """Create a system user or group once, safely when several test files run
    at the same time: creation is serialised by a lock on /etc (a directory
    whose inode, unlike /etc/passwd's, never changes), and an account another
    process made first (useradd/groupadd exit 9) counts as made."""
    try:
        return lookup(name)
    except KeyError:
        pass
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return lookup(name)
        except KeyError:
            pass
        r = subprocess.run(create_argv + [name], capture_output=True, text=True)
        if r.returncode not in (0, 9):
            raise AssertionError("%s %s: exit %d: %s" % (create_argv[0], name, r.returncode, r.stderr))
        return lookup(name)
    finally:
        os.close(fd)    # releases the lock


def ensure_user(name):
    return _ensure_account(lambda n: pwd.getpwnam(n).pw_uid,
                           ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"], name)


def ensure_group(name):
    return _ensure_account(lambda n: grp.getgrnam(n).gr_gid, ["groupadd", "--system"], name)


def wait_for(predicate, timeout=10.0, what="condition", context=None):
    """Iterate the GLib main context until predicate() is true or timeout.
    No fixed sleeps: the main loop dispatches signals while we wait."""
    ctx = context or GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        # wake at least every 50 ms to re-check state changed by other processes
        tid = GLib.timeout_add(50, lambda: False)
        ctx.iteration(True)
        GLib.source_remove(tid) if ctx.find_source_by_id(tid) else None


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now (for servers that
    cannot report the port they bound)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path, timeout=10.0, proc=None):
    def ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError("process exited (%s) before %s appeared" % (proc.returncode, path))
        return os.path.exists(path)
    wait_for(ready, timeout, path)


# ---------------------------------------------------------------------------
# certificates (python3-cryptography)

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def make_key(kind="ec"):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(cn, key=None, days=365, not_before=None, issuer_key=None):
    key = key or make_key()
    now = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(issuer_key or key, hashes.SHA256()))
    return key, cert


def write_control(directory, switches):
    """A test server's control.json, written atomically."""
    tmp = os.path.join(directory, "control.json.tmp")
    with open(tmp, "w") as f:
        json.dump(switches, f)
    os.rename(tmp, os.path.join(directory, "control.json"))


def read_request_log(directory):
    """A test server's requests.log: one dict per request."""
    path = os.path.join(directory, "requests.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def http_ok(url):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------

class Env:
    """One test's world.  Use as a context manager or call close()."""

    def __init__(self, name="p11c"):
        self.tmp = tempfile.mkdtemp(prefix=name + "-")
        os.chmod(self.tmp, 0o755)   # the bus socket must be reachable by test users
        self.procs = []
        self.mounts = []
        self.logs = {}
        self.conn = None
        self.daemon = None
        self.polkitd = None
        self.est = None
        self.modules = [SOFTHSM]
        # under LeakSanitizer: the daemon records full allocation stacks
        # (leak_check_env); set by tests whose modules leak through libcrypto
        self.full_leak_stacks = False
        self.module_init_args = {}   # module as in modules= → [module NAME] init-args
        self.extra_config = ""
        self.state_dir = os.path.join(self.tmp, "state")
        self.ca_dir = os.path.join(self.tmp, "ca.d")
        os.makedirs(self.ca_dir)
        self.softhsm_conf = os.path.join(self.tmp, "softhsm2.conf")
        self.token_dir = os.path.join(self.tmp, "tokens")
        os.makedirs(self.token_dir)
        with open(self.softhsm_conf, "w") as f:
            f.write("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n" % self.token_dir)
        os.environ["SOFTHSM2_CONF"] = self.softhsm_conf
        # the system-wide tpm2-pkcs11 p11-kit module keeps its store in
        # ~/.tpm2_pkcs11 unless told otherwise: keep it in the test directory
        os.environ["TPM2_PKCS11_STORE"] = os.path.join(self.tmp, "tpm2-home")
        os.makedirs(os.environ["TPM2_PKCS11_STORE"])
        self.env = dict(os.environ, SOFTHSM2_CONF=self.softhsm_conf, G_DEBUG="fatal-criticals",
                        G_MESSAGES_DEBUG="all", LC_ALL="C.UTF-8", P11CERTD_LOCALEDIR=LOCALEDIR)
        self.env.pop("LANGUAGE", None)   # English unless a test asks for a language (ru_env)
        self.bus_address = None

    # -- processes ----------------------------------------------------------
    def spawn(self, name, argv, env=None, limit=900, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "ab")
        self.logs[name] = log.name
        p = subprocess.Popen(["timeout", "-k", "5", str(limit)] + argv, stdout=log, stderr=subprocess.STDOUT,
                             env=env or self.env, start_new_session=True, **kw)
        log.close()   # the child has its own copy
        self.procs.append(p)
        return p

    def kill(self, p, sig=signal.SIGTERM, wait=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def log(self, name):
        try:
            with open(self.logs[name], "rb") as f:
                return f.read().decode(errors="replace")
        except (KeyError, OSError):
            return ""

    def dump_logs(self):
        for name in self.logs:
            sys.stderr.write("\n===== %s log =====\n%s\n" % (name, self.log(name)[-20000:]))

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close_sync(None)
            except GLib.Error:
                pass
        for p in reversed(self.procs):
            self.kill(p)
        for m in reversed(self.mounts):
            if subprocess.run(["umount", m], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mount_tmpfs(self, path, size):
        """A small tmpfs at @path (made here, inside the test's directory);
        unmounted by close() before the directory is removed."""
        os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path], check=True)
        self.mounts.append(path)
        return path

    # -- running code as other users ----------------------------------------
    def user_copy(self, path, mode=0o755):
        """A copy of @path that any user can read and run.  The checkout may
        live where other users cannot enter (/root, a `mktemp -d` folder), so
        nothing run as a test user is taken from it directly."""
        d = os.path.join(self.tmp, "user-bin")
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
        dst = os.path.join(d, os.path.basename(path))
        if not os.path.exists(dst):
            shutil.copyfile(path, dst + ".new")
            os.chmod(dst + ".new", mode)
            os.rename(dst + ".new", dst)
        return dst

    def user_env(self, env=None):
        """@env (default: this test's) for a process run as a test user: the
        sanitizers' suppression files it names are copied where that user can
        read them (tools/check-sanitizers points them into the checkout)."""
        env = dict(env or self.env)
        # the build tree's message catalogues, where that user can read them
        locales = env.get("P11CERTD_LOCALEDIR")
        if locales and any(locales.startswith(d + os.sep) for d in (SRC, BUILD)):
            dst = os.path.join(self.tmp, "user-locale")
            if not os.path.exists(dst):
                shutil.copytree(locales, dst + ".new", ignore=lambda d, names: [
                    n for n in names if not (os.path.isdir(os.path.join(d, n)) or n.endswith(".mo"))])
                for root, dirs, files in os.walk(dst + ".new"):
                    os.chmod(root, 0o755)
                    for f in files:
                        os.chmod(os.path.join(root, f), 0o644)
                os.rename(dst + ".new", dst)
            env["P11CERTD_LOCALEDIR"] = dst
        for var in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"):
            if var not in env:
                continue
            opts = []
            for opt in env[var].split(":"):
                key, _, val = opt.partition("=")
                if key == "suppressions" and val:
                    val = self.user_copy(val, 0o644)
                opts.append(key + "=" + val if _ else opt)
            env[var] = ":".join(opts)
        return env

    def listen_as(self, user, call=None):
        """A connection of @user that records the signals reaching it
        (tests/p11c_listen.py), ready when this returns.  @call: (method, sig,
        args, path, iface) made on that connection first — it then owns the
        job it starts.  Returns (process, lines: a list filled as JSON lines
        arrive); stop it with self.kill(process)."""
        import threading
        self.user_copy(os.path.join(SRC, "tests", "p11c_call.py"), 0o644)
        argv = [PY, self.user_copy(os.path.join(SRC, "tests", "p11c_listen.py"), 0o644), self.bus_address]
        if call is not None:
            method, sig, args, path, iface = call
            argv.append(json.dumps({"method": method, "sig": sig, "args": args, "path": path, "iface": iface}))
        p = self.popen_as(user, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ)
        lines = []

        def reader():
            for line in p.stdout:
                lines.append(json.loads(line))
        threading.Thread(target=reader, daemon=True).start()
        wait_for(lambda: p.poll() is not None or any("ready" in x for x in lines), 20, "%s listening" % user)
        if call is not None:
            wait_for(lambda: p.poll() is not None or any("call" in x for x in lines), 60, "%s's call" % user)
        if p.poll() is not None:
            raise AssertionError("p11c_listen as %s exited %s" % (user, p.returncode))
        return p, lines

    def as_user(self, user, argv, groups=None, env=None):
        """(argv, env) to run @argv as @user; a program of the checkout or the
        build runs from a copy that user can read.  @groups: supplementary
        groups (None: the user's own; empty: none)."""
        who = ["setpriv", "--reuid=" + user, "--regid=" + user]
        if groups is None:
            who.append("--init-groups")
        elif groups:
            who.append("--groups=" + ",".join(groups))
        else:
            who.append("--clear-groups")
        prog = argv[0]
        if any(prog.startswith(d + os.sep) for d in (SRC, BUILD)):
            prog = self.user_copy(prog)
        return who + [prog] + list(argv[1:]), self.user_env(env)

    def run_as(self, user, argv, groups=None, **kw):
        """subprocess.run of @argv as @user (see as_user)."""
        argv, kw["env"] = self.as_user(user, argv, groups, kw.get("env"))
        return subprocess.run(argv, **kw)

    def popen_as(self, user, argv, groups=None, **kw):
        """subprocess.Popen of @argv as @user (see as_user), killed by close()."""
        argv, kw["env"] = self.as_user(user, argv, groups, kw.get("env"))
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- SoftHSM ------------------------------------------------------------
    def softhsm_util(self, *args):
        return subprocess.run(["softhsm2-util"] + list(args), env=self.env, check=True,
                              capture_output=True, text=True).stdout

    # -- the fault-injecting module (tests/faultmod) ------------------------
    def use_fault_module(self, real=SOFTHSM, init_args=None):
        """The daemon loads tests/faultmod's p11c-fault.so wrapping @real
        (SoftHSM by default; its @init_args pass through C_Initialize):
        set_faults() makes chosen calls fail, fault_calls() counts calls."""
        self.fault_file = os.path.join(self.tmp, "faults.conf")
        self.fault_log = os.path.join(self.tmp, "calls.log")
        self.env["P11C_FAULT_FILE"] = self.fault_file
        self.env["P11C_FAULT_LOG"] = self.fault_log
        self.env["P11C_FAULT_MODULE"] = real
        self.modules = [FAULT_MODULE]
        if init_args:
            self.module_init_args[FAULT_MODULE] = init_args

    # -- tpm2-pkcs11 over swtpm, NSS softokn --------------------------------
    def start_swtpm(self, label="tpm", pin=PIN, so_pin=SO_PIN):
        """A software TPM 2.0 on 127.0.0.1 and an initialised tpm2-pkcs11
        token @label on it (store in the test directory).  Sets
        TPM2_PKCS11_TCTI / TPM2_PKCS11_STORE for the daemon and the tools."""
        import socket
        state, store = os.path.join(self.tmp, "tpm"), os.path.join(self.tmp, "tpm2-store")
        os.makedirs(state)
        os.makedirs(store)
        # the swtpm TCTI finds the control channel on the next port
        while True:
            port = free_port()
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            ctrl = port + 1
            break
        self.swtpm = self.spawn("swtpm", ["swtpm", "socket", "--tpm2",
                                          "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
                                          "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % ctrl,
                                          "--tpmstate", "dir=" + state, "--flags", "not-need-init,startup-clear"])

        def listening():
            if self.swtpm.poll() is not None:
                raise AssertionError("swtpm exited (%s):\n%s" % (self.swtpm.returncode, self.log("swtpm")))
            for p in (ctrl, port):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", p)) != 0:
                        return False
            return True
        wait_for(listening, 20, "swtpm listening")
        self.env["TPM2_PKCS11_TCTI"] = "swtpm:host=127.0.0.1,port=%d" % port
        self.env["TPM2_PKCS11_STORE"] = store
        tool = ["pkcs11-tool", "--module", TPM2_MODULE]
        for args in (["--init-token", "--label", label, "--so-pin", so_pin, "--slot-index", "0"],
                     ["--token-label", label, "--init-pin", "--login", "--so-pin", so_pin, "--pin", pin]):
            r = subprocess.run(tool + args, env=self.env, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise AssertionError("pkcs11-tool %s: %s %s" % (args, r.stdout, r.stderr))
        return TPM2_MODULE

    def make_nss_db(self, pin=PIN):
        """An NSS database whose softokn token ("NSS Certificate DB") has the
        password @pin; returns the module's init arguments."""
        d = os.path.join(self.tmp, "nssdb")
        os.makedirs(d)
        pw = os.path.join(self.tmp, "nss-pw")
        with open(pw, "w") as f:
            f.write(pin + "\n")
        subprocess.run(["certutil", "-N", "-d", "sql:" + d, "-f", pw], check=True, capture_output=True,
                       timeout=60)
        os.unlink(pw)
        return "configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db'" % d

    def token_objects(self, module, label, pin=PIN, init_args=None):
        """(login result, objects) of a token as a separate process sees it
        (tests/p11objects.py: any module, with init arguments)."""
        argv = [PY, os.path.join(SRC, "tests", "p11objects.py"), module, label]
        if init_args:
            argv += ["--init-args", init_args]
        r = subprocess.run(argv, input=pin + "\n", env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("p11objects: %s %s" % (r.stdout, r.stderr))
        out = json.loads(r.stdout)
        return out["login"], out["objects"]

    # -- a TLS server that wants a client certificate (the "portal") --------
    def start_tls_server(self, ca_file, name="portal"):
        """openssl s_server on 127.0.0.1 requiring a client certificate that
        chains to @ca_file; returns the port."""
        key, cert = make_cert("portal.test")
        kp, cp = os.path.join(self.tmp, name + "-key.pem"), os.path.join(self.tmp, name + "-cert.pem")
        with open(kp, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        with open(cp, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        port = free_port()
        p = self.spawn(name, ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", cp, "-key", kp,
                              "-Verify", "1", "-verify_return_error", "-CAfile", ca_file, "-www"])
        wait_for(lambda: p.poll() is not None or "ACCEPT" in self.log(name), 20, "s_server listening")
        if p.poll() is not None:
            raise AssertionError("s_server exited:\n" + self.log(name))
        return port

    def tls_client(self, port, module=None, cert_uri=None, key_uri=None, pin=PIN, init_args=None):
        """gnutls-cli to the portal, authenticating with the token key and
        certificate named by PKCS#11 URIs (p11-kit loads only @module, in a
        private mount namespace; the PIN comes from GNUTLS_PIN).  True when
        the server let us in (its status page came back)."""
        argv = ["gnutls-cli", "--insecure", "--port", str(port)]
        if cert_uri:
            argv += ["--x509certfile", cert_uri, "--x509keyfile", key_uri]
        argv.append("127.0.0.1")
        env = dict(self.env, GNUTLS_PIN=pin)
        r = subprocess.run(["timeout", "60"] + self.p11kit_only(module, init_args) + argv,
                           input="GET / HTTP/1.0\r\n\r\n", env=env, capture_output=True, text=True)
        self.last_tls = r
        if module == TPM2_MODULE:
            self.tpm_flush()
        return "HTTP/1.0 200 ok" in r.stdout

    def p11kit_only(self, module=None, init_args=None):
        """argv prefix: run a command in a private mount namespace where
        p11-kit's registrations are only @module (with x-init-reserved:
        @init_args), or none"""
        mods = os.path.join(self.tmp, "p11-kit-modules")
        os.makedirs(mods, exist_ok=True)
        for f in os.listdir(mods):
            os.unlink(os.path.join(mods, f))
        if module:
            with open(os.path.join(mods, "under-test.module"), "w") as f:
                f.write("module: %s\n" % module + ("x-init-reserved: %s\n" % init_args if init_args else ""))
        binds = "mount --bind %s /usr/share/p11-kit/modules" % mods
        if os.path.isdir("/etc/pkcs11"):
            binds += " && mount --bind %s /etc/pkcs11" % mods
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", binds + ' && exec "$@"', "sh"]

    def tls_client_engine(self, port, module, key_uri, cert_der, pin=PIN, init_args=None):
        """openssl s_client to the portal with the token key through the
        pkcs11 engine (libp11: it passes INIT_ARGS to C_Initialize, which
        p11-kit 0.24 does not do for gnutls — x-init-reserved is lost when the
        caller brings its own init arguments) and the certificate the daemon
        listed.  True when the server let us in."""
        cert = os.path.join(self.tmp, "portal-client.pem")
        with open(cert, "wb") as f:
            f.write(x509.load_der_x509_certificate(bytes(cert_der)).public_bytes(serialization.Encoding.PEM))
        conf = os.path.join(self.tmp, "engine.cnf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("openssl_conf = conf\n[conf]\nengines = engines\n[engines]\npkcs11 = p11\n[p11]\n"
                    "engine_id = pkcs11\nMODULE_PATH = %s\nPIN = %s\n" % (module, pin)
                    + ('INIT_ARGS = "%s"\n' % init_args if init_args else "") + "init = 0\n")
        argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-engine", "pkcs11", "-keyform", "engine",
                "-key", key_uri, "-cert", cert, "-ign_eof"]
        r = subprocess.run(["timeout", "60"] + argv, input="GET / HTTP/1.0\r\n\r\n",
                           env=dict(self.env, OPENSSL_CONF=conf), capture_output=True, text=True)
        self.last_tls = r
        return "HTTP/1.0 200 ok" in r.stdout

    def tpm_flush(self):
        """Flush what a finished process left loaded in the software TPM.
        A real system reaches its TPM through the kernel's resource manager
        (/dev/tpmrm0), which does this when a process exits; the raw swtpm
        socket does not, and its few session slots fill up."""
        tcti = self.env["TPM2_PKCS11_TCTI"]
        for flag in ("-t", "-l", "-s"):
            subprocess.run(["tpm2_flushcontext", "-T", tcti, flag], env=self.env, capture_output=True, timeout=60)

    def set_faults(self, *rules):
        """Replace the fault rules at once (the module rereads the file on its next call)."""
        tmp = self.fault_file + ".new"
        with open(tmp, "w") as f:
            f.write("".join(r + "\n" for r in rules))
        os.rename(tmp, self.fault_file)

    def fault_calls(self, fn, rv=None):
        """Calls of @fn in the call log (that returned @rv, if given); "+FN"
        counts calls a delay rule is holding, "C_Login@LABEL" the logins one
        token got (see tests/faultmod/README.md)."""
        want = fn + (" rv=0x%08x\n" % rv if rv is not None else " ")
        try:
            with open(self.fault_log) as f:
                return sum(1 for line in f if line.startswith(want))
        except FileNotFoundError:
            return 0

    def add_token(self, label, pin=PIN, so_pin=SO_PIN):
        out = self.softhsm_util("--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin)
        serial = None
        for line in self.softhsm_util("--show-slots").splitlines():
            line = line.strip()
            if line.startswith("Serial number:"):
                cur = line.split(":", 1)[1].strip()
            if line.startswith("Label:") and line.split(":", 1)[1].strip() == label:
                serial = cur
        assert serial, out
        return serial

    def pkcs11_tool(self, label, *args, pin=PIN, login=True, check=True):
        argv = ["pkcs11-tool", "--module", SOFTHSM, "--token-label", label]
        if login:
            argv += ["--login", "--pin", pin]
        r = subprocess.run(argv + list(args), env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError("pkcs11-tool %s failed: %s %s" % (args, r.stdout, r.stderr))
        return r

    def objects(self, label, pin=PIN, kind=None):
        """Objects on the token as pkcs11-tool -O sees them (with login):
        list of dicts {type, label, id}."""
        args = ["-O"] + (["--type", kind] if kind else [])
        out = self.pkcs11_tool(label, *args, pin=pin).stdout
        objs, cur = [], None
        for line in out.splitlines():
            if line and not line.startswith(" ") and "Object" in line:
                cur = {"type": line.split("Object")[0].strip().lower(), "label": "", "id": ""}
                objs.append(cur)
            elif cur is not None and line.strip().startswith("label:"):
                cur["label"] = line.split(":", 1)[1].strip()
            elif cur is not None and line.strip().startswith("ID:"):
                cur["id"] = line.split(":", 1)[1].strip()
        return objs

    def put_cert(self, label, cert, obj_id, obj_label):
        path = os.path.join(self.tmp, "c-%s.der" % obj_id)
        with open(path, "wb") as f:
            f.write(der(cert) if not isinstance(cert, bytes) else cert)
        self.pkcs11_tool(label, "--write-object", path, "--type", "cert", "--id", obj_id, "--label", obj_label)

    def put_raw_cert(self, label, value, obj_id, obj_label):
        """A certificate object with an arbitrary CKA_VALUE (pkcs11-tool refuses garbage)."""
        path = os.path.join(self.tmp, "raw-%s.bin" % obj_id)
        with open(path, "wb") as f:
            f.write(value)
        subprocess.run([PY, os.path.join(SRC, "tests", "bulk_certs.py"), SOFTHSM, label, PIN, path, "raw",
                        obj_id, obj_label], env=self.env, check=True)

    def put_many_certs(self, label, count):
        subprocess.run([PY, os.path.join(SRC, "tests", "bulk_certs.py"), SOFTHSM, label, PIN, self.tmp,
                        str(count)], env=self.env, check=True)

    def put_keypair(self, label, obj_id, obj_label, kind="ec"):
        """Generate a key pair on the token (pkcs11-tool) and return its public key PEM."""
        kt = "EC:prime256v1" if kind == "ec" else "rsa:2048"
        self.pkcs11_tool(label, "--keypairgen", "--key-type", kt, "--id", obj_id, "--label", obj_label)
        r = self.pkcs11_tool(label, "--read-object", "--type", "pubkey", "--id", obj_id, "-o",
                             os.path.join(self.tmp, "pub-%s.der" % obj_id))
        with open(os.path.join(self.tmp, "pub-%s.der" % obj_id), "rb") as f:
            return serialization.load_der_public_key(f.read())

    def put_cert_for_key(self, label, obj_id, obj_label, cn, kind="ec", days=365):
        """Key pair on the token + a certificate for it (signed by a throwaway CA)."""
        pub = self.put_keypair(label, obj_id, obj_label, kind)
        ca_key = make_key()
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
                .sign(ca_key, hashes.SHA256()))
        self.put_cert(label, cert, obj_id, obj_label)
        return cert

    # -- bus ----------------------------------------------------------------
    def start_bus(self, policy_dirs=None):
        policy_dirs = policy_dirs or [os.path.join(SRC, "dbus")]
        with open("/usr/share/dbus-1/system.conf") as f:
            conf = f.read()
        conf = conf.replace("<fork/>", "")
        import re
        conf = re.sub(r"<pidfile>.*?</pidfile>", "", conf)
        conf = re.sub(r"<syslog/>", "", conf)
        conf = re.sub(r"<listen>.*?</listen>", "<listen>unix:path=%s/bus</listen>" % self.tmp, conf)
        conf = re.sub(r"<standard_system_servicedirs/>", "", conf)
        conf = re.sub(r"<servicehelper>.*?</servicehelper>", "", conf)
        # only our policy (and polkit's) is included: a private, enforcing bus
        conf = re.sub(r"<includedir>.*?</includedir>", "", conf)
        conf = re.sub(r"<include [^>]*>.*?</include>", "", conf)
        extra = "".join("<includedir>%s</includedir>" % d for d in policy_dirs)
        extra += "<includedir>/usr/share/dbus-1/system.d</includedir>"
        conf = conf.replace("</busconfig>", extra + "</busconfig>")
        path = os.path.join(self.tmp, "system.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.bus_address = "unix:path=%s/bus" % self.tmp
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        self.bus = self.spawn("dbus", ["dbus-daemon", "--config-file=" + path, "--nofork"])
        wait_file(os.path.join(self.tmp, "bus"), proc=self.bus)
        self.conn = self.connect()
        self.record_jobs()
        return self.bus_address

    def record_jobs(self):
        """Record every job's signals from now on (a client must listen before
        it starts a job: the first state changes follow the reply at once)."""
        self.jobs = {}
        self.daemon_sender = None      # the running daemon's unique name, once known
        self.retired_senders = set()   # earlier daemons' unique names

        def on_signal(conn, sender, opath, iface, signal_name, params, *user):
            if not opath.startswith("/org/p11certd/jobs/"):
                return
            # a previous daemon's signals may still be queued: they name the
            # same job paths (a new daemon numbers its jobs from 1 again)
            if sender in self.retired_senders or self.daemon_sender not in (None, sender):
                return
            seen = self.jobs.setdefault(opath, {"states": [], "finished": None, "props": {}})
            if signal_name == "Finished":
                seen["finished"] = params.unpack()
            elif signal_name == "PropertiesChanged":
                changed = params.unpack()[1]
                seen["props"].update(changed)
                seen["max_retry_at"] = max(seen.get("max_retry_at", 0), changed.get("RetryAt", 0))
                st = changed.get("State")
                if st and (not seen["states"] or seen["states"][-1] != st):
                    seen["states"].append(st)
        self.conn.signal_subscribe("org.p11certd", None, None, None, None, Gio.DBusSignalFlags.NONE, on_signal)

    def connect(self):
        flags = (Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
                 Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION)
        deadline = time.monotonic() + 10
        while True:
            try:
                return Gio.DBusConnection.new_for_address_sync(self.bus_address, flags, None, None)
            except GLib.Error:
                if time.monotonic() > deadline:
                    raise
                GLib.MainContext.default().iteration(False)

    def name_has_owner(self, name=NAME):
        r = self.conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                "NameHasOwner", GLib.Variant("(s)", (name,)), None, 0, 5000, None)
        return r.unpack()[0]

    # -- daemon -------------------------------------------------------------
    def write_config(self):
        path = os.path.join(self.tmp, "p11certd.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nstate-dir=%s\nca-dir=%s\njob-linger=30\n[modules]\nmodules=%s\n%s"
                    % (self.state_dir, self.ca_dir, ";".join(self.modules), self.extra_config))
            for m, args in self.module_init_args.items():
                f.write("[module %s]\ninit-args=%s\n" % (m, args))
        return path

    def leak_check_env(self, env):
        """@env for the daemon under LeakSanitizer: full allocation stacks
        (the slow unwinder, ~2x the daemon's CPU) when it loads pkcs11-spy or
        the test set full_leak_stacks.  Third-party modules allocate through
        libcrypto, built without frame pointers: the default unwinder stops
        there, and tests/lsan.supp's leak:MODULE.so then matches or not
        depending on what the registers held.  pkcs11-spy (OpenSC 0.23) never
        frees the X509_NAME it decodes to print each CKA_SUBJECT/CKA_ISSUER
        written through it (an enrollment's C_CreateObject): 4 objects per
        enrollment, reported in libcrypto's CRYPTO_zalloc alone."""
        if not (os.environ.get("P11C_LEAK_CHECK") and (
                self.full_leak_stacks or any(os.path.basename(m) == "pkcs11-spy.so" for m in self.modules))):
            return env
        env = dict(env)
        opts = [o for o in env.get("ASAN_OPTIONS", "").split(":") if o]
        env["ASAN_OPTIONS"] = ":".join(opts + ["fast_unwind_on_malloc=0"])
        return env

    def start_daemon(self, wait=True, extra_args=(), env=None, wrap=()):
        """@wrap: argv the daemon's command is appended to (p11kit_only())"""
        if self.bus_address is None:
            self.start_bus()
        conf = self.write_config()
        if getattr(self, "jobs", None) is not None:
            self.jobs.clear()    # a new daemon numbers its jobs from 1 again
            if self.daemon_sender is not None:
                self.retired_senders.add(self.daemon_sender)
            self.daemon_sender = None
        env = self.leak_check_env(env or self.env)
        self.daemon = self.spawn("p11certd", list(wrap) + [DAEMON, "--address", self.bus_address, "--config", conf,
                                                           "--verbose"] + list(extra_args), env=env)
        if wait:
            wait_for(lambda: self.daemon.poll() is not None or self.name_has_owner(), 20, "p11certd on the bus")
            if self.daemon.poll() is not None:
                raise AssertionError("p11certd exited %s:\n%s" % (self.daemon.returncode, self.log("p11certd")))
            self.daemon_sender = self.conn.call_sync(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner",
                GLib.Variant("(s)", (NAME,)), None, 0, 5000, None).unpack()[0]
        return self.daemon

    def stop_daemon(self, sig=signal.SIGTERM):
        rc = self.kill(self.daemon, sig)
        if self.conn is not None:
            wait_for(lambda: not self.name_has_owner(), 10, "name released")
        return rc

    # -- calls --------------------------------------------------------------
    def call(self, method, sig=None, args=(), path=PATH, iface=MANAGER, timeout=60000, fds=None):
        params = GLib.Variant("(%s)" % sig, tuple(args)) if sig is not None else None
        if fds is not None:
            fdlist = Gio.UnixFDList.new()
            for fd in fds:
                fdlist.append(fd)
            r, _ = self.conn.call_with_unix_fd_list_sync(NAME, path, iface, method, params, None, 0, timeout,
                                                         fdlist, None)
        else:
            r = self.conn.call_sync(NAME, path, iface, method, params, None, 0, timeout, None)
        return r.unpack()

    def call_error(self, *a, **kw):
        """Call that must fail: returns (error name, message)."""
        try:
            self.call(*a, **kw)
        except GLib.Error as e:
            name = error_name(e)
            Gio.DBusError.strip_remote_error(e)
            return name, e.message
        raise AssertionError("call %s succeeded but should have failed" % (a,))

    def list_certs(self, **options):
        opts = {k: GLib.Variant("s", v) for k, v in options.items()}
        return self.call("ListCerts", "a{sv}", [opts])[0]

    def list_tokens(self):
        return self.call("ListTokens")[0]

    def get_property(self, path, iface, name):
        return self.call("Get", "ss", [iface, name], path=path, iface="org.freedesktop.DBus.Properties")[0]

    def lang_env(self, lang, base=None):
        """self.env (or @base) for a person reading @lang ("ru"): LANGUAGE and
        LC_ALL set, the build tree's catalogues used."""
        return dict(base or self.env, LANGUAGE=lang, LC_ALL=LOCALES[lang], P11CERTD_LOCALEDIR=LOCALEDIR)

    def ctl(self, *args, input=None, user=None, check=False, timeout=120, env=None, lang=None):
        """Run the built p11certctl against this bus (in @lang, e.g. "ru", when given)."""
        argv = [CTL, "--address", self.bus_address] + list(args)
        if lang:
            env = self.lang_env(lang, env)
        if user:
            r = self.run_as(user, argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        else:
            r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                               env=env or self.env)
        if check and r.returncode != 0:
            raise AssertionError("p11certctl %s -> %d\n%s\n%s" % (args, r.returncode, r.stdout, r.stderr))
        return r

    def call_as(self, user, method, sig=None, args=(), path=PATH, iface=MANAGER):
        """Make one D-Bus call as an unprivileged user (a separate process, so the
        bus and polkit see that uid).  Returns (ok, error_name, result)."""
        req = json.dumps({"address": self.bus_address, "path": path, "iface": iface, "method": method,
                          "sig": sig, "args": args})
        r = subprocess.run(["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups", PY,
                            self.user_copy(os.path.join(SRC, "tests", "p11c_call.py"), 0o644)],
                           input=req, capture_output=True, text=True, timeout=60,
                           env=self.user_env(os.environ))
        if r.returncode != 0:
            raise AssertionError("p11c_call failed: %s" % r.stderr)
        out = json.loads(r.stdout)
        return out["ok"], out.get("error", ""), out.get("result")

    # -- jobs ---------------------------------------------------------------
    def watch_job(self, path):
        """The signals recorded for a job (see record_jobs)."""
        return self.jobs.setdefault(path, {"states": [], "finished": None, "props": {}})

    def wait_job(self, path, timeout=60, seen=None):
        """Wait for Finished (signal, or the state property if it finished
        before we subscribed).  Returns (success, error_name, message)."""
        seen = seen or self.watch_job(path)

        def done():
            if seen["finished"] is not None:
                return True
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError("p11certd died (exit %s) while job %s ran" % (self.daemon.returncode, path))
            try:
                st = self.get_property(path, JOB_IFACE, "State")
            except GLib.Error:
                return False
            if st in ("done", "failed", "cancelled"):
                seen["finished"] = (st == "done",
                                    self.get_property(path, JOB_IFACE, "Error"),
                                    self.get_property(path, JOB_IFACE, "ErrorMessage"))
                return True
            return False
        wait_for(done, timeout, "job %s to finish" % path)
        return seen["finished"]

    def enroll(self, request, fds=None, timeout=60):
        req = {}
        for k, v in request.items():
            if isinstance(v, bool):
                req[k] = GLib.Variant("b", v)
            elif k == "fd":
                req[k] = GLib.Variant("h", v)
            else:
                req[k] = GLib.Variant("s", v)
        return self.call("Enroll", "a{sv}", [req], fds=fds)[0]

    # -- EST test server ----------------------------------------------------
    def start_est(self, users=None, validity=None, digest=False):
        d = os.path.join(self.tmp, "est")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "users.json"), "w") as f:
            json.dump(users or {"alice": {"otps": ["OTP-1", "OTP-2", "OTP-3"]}}, f)
        ready = os.path.join(d, "port")
        if os.path.exists(ready):
            os.unlink(ready)
        argv = [PY, os.path.join(SRC, "tests", "est", "estserver.py"), "--dir", d, "--port", "0",
                "--ready-file", ready]
        if validity:
            argv += ["--validity", str(validity)]
        if digest:
            argv += ["--digest"]
        self.est = self.spawn("est", argv)
        wait_file(ready, 20, self.est)
        self.est_dir = d
        self.est_port = int(open(ready).read().strip())
        return d

    def wait_est_holding(self, timeout=20):
        """Wait until the EST server holds a slow request (est_control(slow=…)):
        the client's TLS handshake and request are complete."""
        wait_for(lambda: "estserver: holding" in self.log("est"), timeout, "the EST server holding a request")

    def est_control(self, **switches):
        write_control(self.est_dir, switches)

    def est_requests(self):
        return read_request_log(self.est_dir)

    def add_est_profile(self, name="est", **kv):
        conf = {"type": "est", "url": "https://127.0.0.1:%d" % self.est_port,
                "trust-anchor": os.path.join(self.est_dir, "ca.pem"), "retry-delay": "1",
                "timeout": "10", "connect-timeout": "5",
                # one request per attempt, as the tests count them; the
                # daemon's default (auto: a probe first) is tested with
                # http_auth=None, which leaves the key out
                "http-auth": "basic"}
        conf.update({k.replace("_", "-"): str(v) for k, v in kv.items()})
        conf = {k: v for k, v in conf.items() if v != "None"}
        with open(os.path.join(self.ca_dir, name + ".conf"), "w") as f:
            f.write("[ca]\n" + "".join("%s=%s\n" % kv for kv in conf.items()))

    # -- SCEP CAs --------------------------------------------------------------
    def start_scep(self, challenge="Chall-1", name="scep", extra=()):
        """Debian's real SCEP server (micromdm scepserver) on 127.0.0.1 with
        a fresh RSA CA in DIR/depot.  Returns the directory."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        depot = os.path.join(d, "depot")
        subprocess.run(["scepserver", "ca", "-init", "-depot", depot], cwd=d, check=True,
                       capture_output=True, timeout=60)
        port = free_port()
        proc = self.spawn(name, ["scepserver", "-depot", depot, "-port", str(port)] + (["-challenge", challenge] if challenge else []) + list(extra),
                          cwd=d)
        url = "http://127.0.0.1:%d/scep" % port
        wait_for(lambda: proc.poll() is not None or http_ok(url + "?operation=GetCACaps"), 20,
                 "scepserver listening")
        if proc.poll() is not None:
            raise AssertionError("scepserver exited:\n" + self.log(name))
        self.scep_dir, self.scep_url = d, url
        self.scep_ca = os.path.join(depot, "ca.pem")
        return d

    def start_test_scep(self, name="tscep", **switches):
        """The project's own SCEP test server (tests/scep/scepserver.py)."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "control.json"), "w") as f:
            json.dump(switches, f)
        ready = os.path.join(d, "port")
        proc = self.spawn(name, [PY, os.path.join(SRC, "tests", "scep", "scepserver.py"), "--dir", d,
                                 "--ready-file", ready])
        wait_file(ready, 20, proc)
        self.scep_dir = d
        with open(ready) as f:
            self.scep_url = "http://127.0.0.1:%d/scep" % int(f.read().strip())
        self.scep_ca = os.path.join(d, "ca.pem")
        return d

    def scep_control(self, **switches):
        write_control(self.scep_dir, switches)

    def scep_requests(self):
        return read_request_log(self.scep_dir)

    def ca_fingerprint(self, pem_path):
        out = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout", "-fingerprint", "-sha256"],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().split("=", 1)[1]

    def add_scep_profile(self, name="scep", **kv):
        conf = {"type": "scep", "url": self.scep_url, "ca-fingerprint": self.ca_fingerprint(self.scep_ca),
                "retry-delay": "1", "timeout": "10", "connect-timeout": "5", "poll-interval": "1"}
        conf.update({k.replace("_", "-"): str(v) for k, v in kv.items()})
        conf = {k: v for k, v in conf.items() if v != "None"}
        with open(os.path.join(self.ca_dir, name + ".conf"), "w") as f:
            f.write("[ca]\n" + "".join("%s=%s\n" % kv for kv in conf.items()))

    # -- polkit -------------------------------------------------------------
    def start_polkitd(self, actions_dir=None, rules_dir=None, extra_rules=""):
        """Real polkitd on the private bus, in a private mount namespace that
        sees only our actions and rules."""
        actions = os.path.join(self.tmp, "pk-actions")
        rules = os.path.join(self.tmp, "pk-rules")
        os.makedirs(actions)
        os.makedirs(rules)
        # the built policy: dbus/org.p11certd.policy.in with its translations merged in
        shutil.copy(os.path.join(actions_dir or os.path.join(BUILD, "dbus"), "org.p11certd.policy"), actions)
        shutil.copy(os.path.join(rules_dir or os.path.join(SRC, "dbus"), "org.p11certd.rules"),
                    os.path.join(rules, "50-p11certd.rules"))
        if extra_rules:
            with open(os.path.join(rules, "40-test.rules"), "w") as f:
                f.write(extra_rules)
        for d in (actions, rules):
            os.chmod(d, 0o755)
        self.polkitd = self.spawn("polkitd", [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            "mount --bind %s /usr/share/polkit-1/actions && mount --bind %s /etc/polkit-1/rules.d && "
            "exec /usr/lib/polkit-1/polkitd --no-debug" % (actions, rules)])
        wait_for(lambda: self.polkitd.poll() is not None or self.name_has_owner("org.freedesktop.PolicyKit1"),
                 20, "polkitd on the bus")
        if self.polkitd.poll() is not None:
            raise AssertionError("polkitd exited:\n" + self.log("polkitd"))


class TestCase(unittest.TestCase):
    """Base class: self.env is a fresh Env; logs are dumped on failure."""

    def setUp(self):
        self.env = Env(self.id().split(".")[-1][:40])

    def tearDown(self):
        failed = False
        outcome = getattr(self, "_outcome", None)
        if outcome is not None:
            result = getattr(outcome, "result", None)
            errors = getattr(result, "errors", []) + getattr(result, "failures", [])
            failed = any(t is self for t, _ in errors)
        if failed:
            self.env.dump_logs()
        if self.env.daemon is not None and self.env.daemon.poll() is None:
            # the daemon must still be alive and answering at the end of every test
            try:
                self.env.call("ListTokens")
            except GLib.Error as e:
                self.env.dump_logs()
                raise AssertionError("daemon stopped answering: %s" % e)
            if os.environ.get("P11C_LEAK_CHECK"):
                # sanitizer builds: a clean exit runs LeakSanitizer; any report fails
                self.env.kill(self.env.daemon)
        log = self.env.log("p11certd")
        self.env.close()
        for marker in ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer", "runtime error:"):
            if marker in log:
                i = log.index(marker)
                raise AssertionError("sanitizer report in p11certd's log:\n" + log[max(0, i - 200):i + 4000])

    def assertDBusError(self, expected, *a, **kw):
        name, msg = self.env.call_error(*a, **kw)
        self.assertEqual(name, "org.p11certd.Error." + expected, msg)
        return msg


def main():
    if os.geteuid() != 0:
        sys.exit("integration tests run as root (they start a system bus, polkitd and users)")
    for u in TEST_USERS:
        ensure_user(u)
    prog = unittest.main(verbosity=2, exit=False)
    result = prog.result
    if result.skipped:
        print("%d test(s) skipped: a skipped test is a failure here" % len(result.skipped))
        sys.exit(1)
    sys.exit(0 if result.wasSuccessful() else 1)
