"""The desktop app under test: Xvfb, a private session bus with the
accessibility bus (at-spi-bus-launcher), the built p11certd-tokens, driven
through AT-SPI (pyatspi) — see ../shared/docs/test-environment.md.

One Gui per test process (pyatspi binds to the accessibility bus of the
session bus it first sees): start() once, then launch()/quit() the app per
test.  Every process runs under `timeout` and is killed by PID.

    gui = Gui(tmpdir); gui.start()
    app = gui.launch(env)                   # env: the harness env (system bus address)
    gui.click(gui.find(app, "Get a certificate…", "push button"))
    gui.screenshot("main")
    gui.quit(); gui.close()
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

SRC = os.environ.get("P11C_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("P11C_BUILD_DIR", os.path.join(SRC, "build"))
APP = os.path.join(BUILD, "desktop", "p11certd-tokens")
APP_NAME = "p11certd-tokens"
# messages GTK itself logs that are not the app's doing (see launch())
GTK_KNOWN = ("g_variant_is_object_path: assertion 'string != NULL' failed",)
SHOTS = os.path.join(BUILD, "desktop-screenshots")


class GuiError(AssertionError):
    pass


class Gui:
    def __init__(self, lifetime=600, user=None):
        """@user: the desktop session (session bus, accessibility bus) runs as
        that unprivileged user, and so does the app (launch(as_user=...));
        Xvfb and the test driving it through AT-SPI stay root (the
        accessibility bus admits root)."""
        self.tmp = tempfile.mkdtemp(prefix="p11c-gui-")
        self.lifetime = lifetime
        self.user = user
        self.as_user = ["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups"] if user else []
        self.procs = []
        self.app = None
        self.app_proc = None
        self.env = {}
        self.pyatspi = None

    def _spawn(self, name, argv, env, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(["timeout", "-k", "5", str(self.lifetime)] + argv, stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True, **kw)
        log.close()
        self.procs.append(p)
        return p

    def log(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @staticmethod
    def _wait(pred, timeout, what, interval=0.05):
        deadline = time.monotonic() + timeout
        while True:
            r = pred()
            if r:
                return r
            if time.monotonic() > deadline:
                raise GuiError("timed out after %.1f s waiting for %s" % (timeout, what))
            time.sleep(interval)

    def start(self):
        # Xvfb makes /tmp/.X11-unix when it is missing: removed again by close()
        self.made_x11_dir = not os.path.isdir("/tmp/.X11-unix")
        r, w = os.pipe()
        xvfb = self._spawn("xvfb", ["Xvfb", "-displayfd", str(w), "-screen", "0", "820x640x24", "-nolisten", "tcp", "-noreset"], os.environ.copy(), pass_fds=(w,))
        os.close(w)
        num = b""
        while not num.endswith(b"\n"):
            chunk = os.read(r, 16)
            if not chunk:
                raise GuiError("Xvfb did not start:\n" + self.log("xvfb"))
            num += chunk
        os.close(r)
        self.display = ":" + num.decode().strip()
        bus = os.path.join(self.tmp, "session-bus")
        env = dict(os.environ, DISPLAY=self.display, GSK_RENDERER="cairo", GTK_A11Y="atspi",
                   DBUS_SESSION_BUS_ADDRESS="unix:path=" + bus, NO_AT_BRIDGE="0", GDK_BACKEND="x11",
                   XDG_RUNTIME_DIR=self.tmp, GSETTINGS_BACKEND="memory")
        os.chmod(self.tmp, 0o700)
        if self.user:
            import pwd
            pw = pwd.getpwnam(self.user)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            env["HOME"] = self.tmp
        self._spawn("session-bus", self.as_user + ["dbus-daemon", "--session", "--nofork",
                                                   "--address=unix:path=" + bus], env)
        self._wait(lambda: os.path.exists(bus), 10, "the session bus")
        self._spawn("at-spi", self.as_user + ["/usr/libexec/at-spi-bus-launcher", "--launch-immediately"], env)
        self.env = env
        os.environ.update({k: env[k] for k in ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS")})
        # the accessibility bus is up once the launcher owns its name
        address = self._wait(lambda: subprocess.run(
            self.as_user + ["gdbus", "call", "--session", "--dest", "org.a11y.Bus", "--object-path", "/org/a11y/bus",
                            "--method", "org.a11y.Bus.GetAddress"], env=env, capture_output=True, text=True).stdout,
            10, "org.a11y.Bus")
        if self.user:
            # root cannot join the user's session bus: pyatspi and the app are
            # told the accessibility bus directly
            env["AT_SPI_BUS_ADDRESS"] = os.environ["AT_SPI_BUS_ADDRESS"] = address.strip()[2:-3]
        import pyatspi   # binds to this session's accessibility bus
        self.pyatspi = pyatspi

    # -- the app ------------------------------------------------------------
    def launch(self, env, lang="en", args=(), wait_window=True, as_user=None):
        """Starts the built app with @env (the harness env: system bus) in
        @lang ("en" or "ru") and returns its AT-SPI application node.
        @as_user: (argv, env) -> (argv, env) running it as Gui's user (the
        harness's Env.as_user)."""
        e = dict(env)
        e.update(self.env)
        e.pop("G_MESSAGES_DEBUG", None)
        # GTK 4.8.3 (Debian 12) answers an AT-SPI GetChildAtIndex for a child
        # whose accessible context is not realized yet with a NULL object
        # path: a CRITICAL inside GTK (fixed in later GTK), fatal under the
        # test env's G_DEBUG=fatal-criticals while the test walks the tree.
        # The app runs without fatal criticals; quit() fails the test on any
        # CRITICAL in its log other than that one (GTK_KNOWN).
        e["G_DEBUG"] = ",".join(f for f in e.get("G_DEBUG", "").split(",") if f and f != "fatal-criticals")
        if lang == "ru":
            e.update(LANGUAGE="ru", LC_ALL="ru_RU.UTF-8", LANG="ru_RU.UTF-8")
        else:
            e.update(LANGUAGE="en", LC_ALL="C.UTF-8", LANG="C.UTF-8")
        e["P11CERTD_LOCALEDIR"] = os.path.join(BUILD, "po")     # the uninstalled catalogues
        argv = [APP] + list(args)
        if as_user is not None:
            argv, e = as_user(argv, e)
        self.app_log_start = len(self.log("app"))
        self.app_proc = self._spawn("app", argv, e)
        self.app = None
        if wait_window:
            self.app = self._wait(self._find_app, 20, "the app on the accessibility bus")
            self.find(self.app, role="frame", timeout=20)
        return self.app

    def _find_app(self):
        if self.app_proc is not None and self.app_proc.poll() is not None:
            raise GuiError("the app exited (%s):\n%s\nXvfb: %s" % (self.app_proc.returncode, self.log("app")[-4000:], self.log("xvfb")[-2000:]))
        desktop = self.pyatspi.Registry.getDesktop(0)
        for i in range(desktop.childCount):
            a = desktop.getChildAtIndex(i)
            try:
                if a is not None and a.name == APP_NAME and a.get_process_id() == self._app_pid():
                    return a
            except Exception:
                continue
        return None

    def find_app(self, timeout=20):
        return self._wait(self._find_app, timeout, "the app on the accessibility bus")

    def app_pid(self):
        return self._app_pid()

    def _app_pid(self):
        # timeout -> app
        try:
            with open("/proc/%d/task/%d/children" % (self.app_proc.pid, self.app_proc.pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else -1
        except OSError:
            return -1

    def app_problems(self):
        """CRITICAL lines the app logged since its launch, less the known
        GTK 4.8.3 accessibility one (what fatal-criticals would have ended)."""
        text = self.log("app")[getattr(self, "app_log_start", 0):]
        return [line for line in text.splitlines()
                if "CRITICAL" in line and not any(k in line for k in GTK_KNOWN)]

    def quit(self):
        was_running = self.app_proc is not None
        try:
            self._stop_app()
        finally:
            self.app_proc = None
            self.app = None
        problems = self.app_problems() if was_running else []
        self.app_log_start = len(self.log("app"))
        if problems:
            raise GuiError("the app logged:\n" + "\n".join(problems[:20]))

    def _stop_app(self):
        if self.app_proc is not None and self.app_proc.poll() is None:
            os.killpg(self.app_proc.pid, signal.SIGTERM)
            try:
                self.app_proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.app_proc.pid, signal.SIGKILL)
                self.app_proc.wait()

    def close(self):
        try:
            self.quit()
        finally:
            self._close_rest()

    def _close_rest(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if getattr(self, "made_x11_dir", False):
            try:
                os.rmdir("/tmp/.X11-unix")
            except OSError:
                pass

    # -- AT-SPI -------------------------------------------------------------
    def nodes(self, root):
        """Every visible node under @root (windows of the app included)."""
        st = self.pyatspi
        stack = [root]
        while stack:
            n = stack.pop()
            try:
                states = n.getState()
                if n is not root and not states.contains(st.STATE_VISIBLE):
                    continue
                count = n.childCount
            except Exception:
                continue
            yield n
            for i in range(count - 1, -1, -1):
                try:
                    stack.append(n.getChildAtIndex(i))
                except Exception:
                    pass

    def query(self, root, name=None, role=None, contains=None):
        out = []
        for n in self.nodes(root):
            try:
                nm, rl = n.name or "", n.getRoleName()
            except Exception:
                continue
            if name is not None and nm != name:
                continue
            if contains is not None and contains not in nm:
                continue
            if role is not None and rl != role:
                continue
            out.append(n)
        return out

    def find(self, root, name=None, role=None, contains=None, timeout=15):
        def look():
            r = self.query(root, name, role, contains)
            return r[0] if r else None
        try:
            return self._wait(look, timeout, "%s %r%s" % (role or "node", name or contains,
                                                         "" if name else " (contained)"), interval=0.1)
        except GuiError:
            self.screenshot("failed-find")
            raise GuiError("not found: %s %r (contained %r); visible texts:\n%s"
                           % (role, name, contains, "\n".join(self.texts(root))))

    def button(self, root, text, timeout=15):
        """A push button showing @text (GTK 4.8 names a button with its
        accessible label and its text: "_Yes Yes", "Delete certificate “X” Delete certificate")."""
        def look():
            buttons = [(n, n.name or "") for n in self.query(root, role="push button")]
            for test in (lambda nm: nm == text, lambda nm: nm.endswith(" " + text),
                         lambda nm: nm.startswith(text + " ")):
                for n, nm in buttons:
                    if test(nm):
                        return n
            return None
        try:
            return self._wait(look, timeout, "button %r" % text, interval=0.1)
        except GuiError:
            self.screenshot("failed-find")
            raise GuiError("no button %r; visible texts:\n%s" % (text, "\n".join(self.texts(root))))

    def gone(self, root, name=None, role=None, contains=None, timeout=15):
        self._wait(lambda: not self.query(root, name, role, contains), timeout,
                   "%s %r to go away" % (role, name or contains), interval=0.1)

    CONTROLS = ("push button", "toggle button", "check box", "radio button", "text", "password text",
                "menu item", "combo box", "spin button", "slider")

    def unnamed_controls(self, root):
        """Visible controls with no accessible name (or only a widget class name)."""
        out = []
        for n in self.nodes(root):
            try:
                role, name = n.getRoleName(), (n.name or "").strip()
            except Exception:
                continue
            if role in self.CONTROLS and (not name or (name.startswith(("Gtk", "Adw")) and " " not in name)):
                out.append("%s %r" % (role, name))
        return out

    def texts(self, root):
        out = []
        for n in self.nodes(root):
            try:
                if n.name and n.getRoleName() not in ("filler", "scroll bar"):
                    out.append("%s: %s" % (n.getRoleName(), n.name))
            except Exception:
                pass
        return out

    def click(self, node):
        action = node.queryAction()
        for i in range(action.nActions):
            if action.getName(i) in ("click", "activate", "press", "toggle"):
                action.doAction(i)
                return
        action.doAction(0)

    def type(self, node, text):
        """Puts @text into an editable field (the AT-SPI EditableText
        interface when GTK offers it, else focus + key events)."""
        try:
            node.queryEditableText().setTextContents(text)
            return
        except NotImplementedError:
            pass
        node.queryComponent().grabFocus()
        self._wait(lambda: node.getState().contains(self.pyatspi.STATE_FOCUSED), 5, "focus in the field")
        for ch in text:
            self.pyatspi.Registry.generateKeyboardEvent(ord(ch) if ord(ch) < 0x100 else 0x1000000 + ord(ch),
                                                        None, self.pyatspi.KEY_SYM)
        time.sleep(0.05)

    def checked(self, node):
        return node.getState().contains(self.pyatspi.STATE_CHECKED)

    def key(self, keysym):
        self.pyatspi.Registry.generateKeyboardEvent(keysym, None, self.pyatspi.KEY_SYM)

    def right_click(self, node):
        self.click_at(node, 3)

    def click_at(self, node, button=1):
        ext = node.queryComponent().getExtents(self.pyatspi.DESKTOP_COORDS)
        self.pyatspi.Registry.generateMouseEvent(ext.x + ext.width // 3, ext.y + ext.height // 2, "b%dc" % button)

    def click_until(self, node, appears, button=1, tries=3, timeout=5):
        """Clicks @node until @appears() returns something (a node), and
        returns it.  Under Xvfb with no window manager a synthetic click
        sent while a dialog is being unmapped can be lost; a click that
        did land is not repeated."""
        def look():
            try:
                return appears()
            except GuiError:
                return None
        for attempt in range(tries):
            self.click_at(node, button)
            try:
                return self._wait(look, timeout, "the result of the click")
            except GuiError:
                if attempt == tries - 1:
                    raise

    def screenshot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, name + ".png")
        subprocess.run(["import", "-display", self.display, "-window", "root", path], env=self.env,
                       capture_output=True, timeout=30)
        return path
