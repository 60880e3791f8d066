"""Issue 8: the daemon as a system service — sd_notify READY/STATUS/WATCHDOG
on a test socket, D-Bus activation from a service directory, clean exit."""
import os
import socket
import subprocess
import time

from harness import BUILD, DAEMON, Gio, GLib, TestCase, main, wait_for


class Service(TestCase):
    def test_sd_notify_ready_status_watchdog(self):
        e = self.env
        e.add_token("t")
        path = os.path.join(e.tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        env = dict(e.env, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        e.start_daemon(wait=False, env=env)
        msgs = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        self.assertIn("READY=1", msgs)
        self.assertTrue(any(m.startswith("STATUS=Serving 1 token") for m in msgs), msgs)
        self.assertTrue(any("WATCHDOG=1" in m for m in msgs), msgs)
        # READY only once the name is owned
        self.assertTrue(e.name_has_owner())
        e.stop_daemon()
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        self.assertIn("STOPPING=1", rest)
        self.assertEqual(e.daemon.returncode, 0)

    def test_dbus_activation(self):
        e = self.env
        e.add_token("activated")
        conf = e.write_config()
        services = os.path.join(e.tmp, "services")
        os.makedirs(services)
        # the installed activation file names the unit and the binary
        installed = open(os.path.join(BUILD, "dbus", "org.p11certd.service")).read()
        self.assertIn("Name=org.p11certd", installed)
        self.assertIn("SystemdService=p11certd.service", installed)
        self.assertIn("Exec=", installed)
        with open(os.path.join(services, "org.p11certd.service"), "w") as f:
            f.write("[D-BUS Service]\nName=org.p11certd\nExec=%s --session --config %s\n" % (DAEMON, conf))
        bus_conf = os.path.join(e.tmp, "session.conf")
        with open(bus_conf, "w") as f:
            f.write("""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path=%s/sbus</listen><servicedir>%s</servicedir>
<auth>EXTERNAL</auth><policy context="default"><allow send_destination="*" eavesdrop="true"/>
<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>""" % (e.tmp, services))
        e.spawn("session-bus", ["dbus-daemon", "--config-file=" + bus_conf, "--nofork"])
        from harness import wait_file
        wait_file(os.path.join(e.tmp, "sbus"))
        e.bus_address = "unix:path=%s/sbus" % e.tmp
        e.conn = e.connect()
        self.assertFalse(e.name_has_owner())
        tokens = e.list_tokens()          # this call starts the daemon
        self.assertEqual([t["label"] for t in tokens], ["activated"])
        self.assertTrue(e.name_has_owner())
        # stop it: the activated daemon exits on SIGTERM
        pid = int(subprocess.check_output(["pgrep", "-f", "p11certd --session --config " + conf]).split()[0])
        os.kill(pid, 15)
        wait_for(lambda: not e.name_has_owner(), 10, "activated daemon gone")

    def test_version_and_bad_options(self):
        r = subprocess.run([DAEMON, "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("p11certd", r.stdout)
        r = subprocess.run([DAEMON, "--no-such-option"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([DAEMON, "--session", "--config", "/nonexistent.conf"], capture_output=True, text=True,
                           env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent.conf", r.stderr)
        bad = os.path.join(self.env.tmp, "bad.conf")
        open(bad, "w").write("[pin-policy]\nmin-length=many\n")
        r = subprocess.run([DAEMON, "--session", "--config", bad], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("min-length", r.stderr)


if __name__ == "__main__":
    main()
