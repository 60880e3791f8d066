"""Issue 6: hotplug via PC/SC — real pcscd with vpcd virtual readers and vicc
virtual cards (tests/pcscenv.py), SoftHSM, the daemon on a private bus."""
import os
import signal
import subprocess
import time

from harness import Gio, SOFTHSM, TestCase, main, wait_for
from pcscenv import PcscEnv

OPENSC = "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so"
READER0 = "Test VPCD 00 00"


def daemon_pid(env):
    out = subprocess.run(["pgrep", "-P", str(env.daemon.pid)], capture_output=True, text=True).stdout.split()
    return int(out[0])


def proc_counters(pid):
    """(CPU ticks, context switches summed over all threads) of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    switches = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return ticks, switches


def pcsc_thread_poll(pid):
    """(syscall number, timeout in ms) of the daemon's PC/SC monitor thread,
    blocked in poll() (7) or ppoll() (271) inside libpcsclite."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() != "p11c-pcsc":
                continue
        def blocked():
            with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
                return f.read().split()
        wait_for(lambda: blocked()[0] in ("7", "271"), 5, "the PC/SC thread to block in poll()")
        fields = blocked()
        if fields[0] == "7":
            return 7, int(fields[3], 16)
        # ppoll: the third argument points to a struct timespec; read it
        with open("/proc/%d/mem" % pid, "rb") as mem:
            mem.seek(int(fields[3], 16))
            sec = int.from_bytes(mem.read(8), "little")
        return 271, sec * 1000
    raise AssertionError("no p11c-pcsc thread in the daemon")


class Hotplug(TestCase):
    def setUp(self):
        super().setUp()
        e = self.env
        self.pcsc = PcscEnv(e.tmp)
        self.addCleanup(self.pcsc.close)
        self.pcsc.start()
        e.env["PCSCLITE_CSOCK_NAME"] = os.environ["PCSCLITE_CSOCK_NAME"]
        e.add_token("soft")
        self.events = []

    def subscribe(self):
        def on_signal(conn, sender, path, iface, name, params, *user):
            token, info = params.unpack()
            self.events.append((name, token, info, time.monotonic()))
        for name in ("TokenInserted", "TokenRemoved"):
            self.env.conn.signal_subscribe("org.p11certd", "org.p11certd1.Manager", name, "/org/p11certd", None,
                                           Gio.DBusSignalFlags.NONE, on_signal)

    def wait_events(self, n, timeout=5):
        wait_for(lambda: len(self.events) >= n, timeout, "%d token signal(s)" % n)

    def test_insert_remove(self):
        e = self.env
        e.start_daemon()
        self.subscribe()
        t0 = time.monotonic()
        self.pcsc.insert_card(0)
        self.wait_events(1)
        name, token, info, when = self.events[0]
        self.assertEqual(name, "TokenInserted")
        self.assertEqual(token, "/")                       # no PKCS#11 module knows this card
        self.assertFalse(info["recognized"])
        self.assertEqual(info["reader"], READER0)
        self.assertGreater(len(info["atr"]), 4)
        self.assertLess(when - t0, 1.0, "TokenInserted came %.2f s after the card" % (when - t0))
        t1 = time.monotonic()
        self.pcsc.remove_card(0)
        self.wait_events(2)
        name, token, info, when = self.events[1]
        self.assertEqual((name, info["reader"]), ("TokenRemoved", READER0))
        self.assertLess(when - t1, 1.0)
        # the software token is unaffected and always present
        self.assertEqual([t["label"] for t in e.list_tokens()], ["soft"])

    def test_card_signal_first(self):
        """CardInserted/CardRemoved come as soon as PC/SC reports the card, before the
        modules read it (here held 1.5 s in C_GetSlotList): an app can say "reading the token…"."""
        e = self.env
        e.use_fault_module()
        e.start_daemon()
        self.subscribe()
        for name in ("CardInserted", "CardRemoved"):
            e.conn.signal_subscribe("org.p11certd", "org.p11certd1.Manager", name, "/org/p11certd", None,
                                    Gio.DBusSignalFlags.NONE,
                                    lambda c, s, p, i, n, params, *u: self.events.append(
                                        (n, params.unpack()[0], params.unpack()[1], time.monotonic())))
        e.set_faults("C_GetSlotList delay=1500")
        t0 = time.monotonic()
        self.pcsc.insert_card(0)
        self.wait_events(2, timeout=10)
        (n1, reader, info, t1), (n2, _, _, t2) = self.events[:2]
        self.assertEqual((n1, reader, n2), ("CardInserted", READER0, "TokenInserted"))
        self.assertGreater(len(info["atr"]), 4)
        self.assertLess(t1 - t0, 1.0, "CardInserted %.2f s after the card" % (t1 - t0))
        self.assertGreater(t2 - t1, 1.0, "TokenInserted waits for the modules")
        e.set_faults()
        self.pcsc.remove_card(0)
        self.wait_events(4)
        self.assertEqual([ev[0] for ev in self.events[2:4]], ["CardRemoved", "TokenRemoved"])

    def test_cli_monitor(self):
        """p11certctl monitor --json prints each token event as one JSON line, live."""
        import json
        from harness import CTL
        e = self.env
        e.start_daemon()
        self.subscribe()
        mon = subprocess.Popen([CTL, "--address", e.bus_address, "monitor", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=e.env)
        lines = []

        def reader():
            for line in mon.stdout:
                lines.append(json.loads(line))
        import threading
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            # the monitor has subscribed once a Rescan-triggered signal round trip is seen by us too
            self.pcsc.insert_card(0)
            self.wait_events(1)
            self.pcsc.remove_card(0)
            self.wait_events(2)
            wait_for(lambda: sum(1 for ev in lines if "Token" in json.dumps(ev)) >= 2, 5, "monitor lines")
        finally:
            mon.send_signal(signal.SIGTERM)
            mon.wait(10)
            t.join(5)
        kinds = [json.dumps(ev) for ev in lines]
        self.assertTrue(any("TokenInserted" in k and READER0 in k for k in kinds), kinds)
        self.assertTrue(any("TokenRemoved" in k for k in kinds), kinds)
        self.assertEqual(mon.returncode, 0)

    def test_ten_cycles(self):
        self.env.start_daemon()
        self.subscribe()
        for i in range(10):
            self.pcsc.insert_card(0)
            self.wait_events(2 * i + 1)
            self.pcsc.remove_card(0)
            self.wait_events(2 * i + 2)
        # nothing more arrives
        deadline = time.monotonic() + 1.0
        wait_for(lambda: time.monotonic() > deadline, 2, "quiet second")
        names = [ev[0] for ev in self.events]
        self.assertEqual(names, ["TokenInserted", "TokenRemoved"] * 10)

    def test_opensc_slot_follows_card(self):
        e = self.env
        e.modules = [SOFTHSM, OPENSC]
        e.start_daemon()
        self.subscribe()
        mods = {m["name"]: m["loaded"] for m in e.get_property("/org/p11certd", "org.p11certd1.Manager", "Modules")}
        self.assertTrue(mods[OPENSC])

        def slot_state():
            out = subprocess.run(["pkcs11-tool", "--module", OPENSC, "-L"], capture_output=True, text=True,
                                 env=e.env).stdout
            block = out.split(READER0, 1)[1].split("Slot", 1)[0] if READER0 in out else ""
            return "token state" in block or "token label" in block or "token not recognized" in block
        self.assertFalse(slot_state())
        t0 = time.monotonic()
        self.pcsc.insert_card(0)
        self.wait_events(1, timeout=60)
        print("TokenInserted with OpenSC probing the card: %.2f s" % (time.monotonic() - t0))
        self.assertTrue(slot_state(), "OpenSC's slot does not show the card")
        self.assertFalse(self.events[0][2]["recognized"])
        self.pcsc.remove_card(0)
        self.wait_events(2)
        self.assertFalse(slot_state())
        self.assertEqual([t["label"] for t in e.list_tokens()], ["soft"])

    def test_pcscd_restart(self):
        e = self.env
        e.start_daemon()
        self.subscribe()
        available = e.log("p11certd").count("PC/SC service available")
        self.pcsc.restart()
        # the daemon notices, says so once, and reconnects by itself
        wait_for(lambda: e.log("p11certd").count("PC/SC service available") > available, 15,
                 "the daemon to reconnect to the restarted pcscd")
        self.assertEqual(e.log("p11certd").count("PC/SC service lost"), 1)
        self.pcsc.insert_card(0)
        self.wait_events(1, timeout=15)
        self.assertEqual(self.events[0][0], "TokenInserted")
        self.assertEqual(e.daemon.poll(), None)

    def test_pcscd_absent_at_start(self):
        e = self.env
        self.pcsc.stop()
        e.start_daemon()
        self.subscribe()
        self.assertEqual(len(e.list_tokens()), 1)
        # while pcscd is away the daemon sleeps (it waits for pcscd's socket,
        # no timed retries) ...
        pid = daemon_pid(e)
        settle = time.monotonic() + 2
        wait_for(lambda: time.monotonic() > settle, 5, "2 s")
        _, sw0 = proc_counters(pid)
        end = time.monotonic() + 6
        wait_for(lambda: time.monotonic() > end, 10, "6 idle seconds")
        _, sw1 = proc_counters(pid)
        self.assertEqual(sw1 - sw0, 0, "the daemon woke up %d times in 6 s without pcscd" % (sw1 - sw0))
        # ... and connects as soon as pcscd is there
        self.pcsc.start()
        t0 = time.monotonic()
        wait_for(lambda: "PC/SC service available" in e.log("p11certd"), 10, "the daemon to find pcscd")
        self.assertLess(time.monotonic() - t0, 2.0)
        self.pcsc.insert_card(0)
        self.wait_events(1, timeout=15)
        self.assertEqual(self.events[0][0], "TokenInserted")

    def test_sigterm_while_blocked(self):
        e = self.env
        e.start_daemon()
        pid = daemon_pid(e)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: e.daemon.poll() is not None, 5, "daemon exit")
        took = time.monotonic() - t0
        self.assertLess(took, 1.0, "shutdown took %.2f s" % took)
        self.assertEqual(e.daemon.returncode, 0)
        print("shutdown with the monitor blocked: %.0f ms" % (took * 1000))

    def test_idle_no_wakeups(self):
        e = self.env
        e.start_daemon()
        e.list_tokens()
        pid = daemon_pid(e)
        ticks0, sw0 = proc_counters(pid)
        end = time.monotonic() + 10
        wait_for(lambda: time.monotonic() > end, 12, "10 idle seconds")
        ticks1, sw1 = proc_counters(pid)
        print("idle 10 s: %d CPU ticks, %d context switches" % (ticks1 - ticks0, sw1 - sw0))
        self.assertEqual(ticks1 - ticks0, 0)
        self.assertLessEqual(sw1 - sw0, 2)
        # libpcsclite turns an INFINITE wait into a 60 s poll() that it
        # re-arms with two messages to pcscd: 3 wake-ups a minute.  The
        # monitor thread must be blocked in one poll() far longer than that.
        nr, timeout_ms = pcsc_thread_poll(pid)
        print("PC/SC thread blocked in syscall %d, timeout %d ms" % (nr, timeout_ms))
        self.assertGreater(timeout_ms, 24 * 3600 * 1000,
                           "the PC/SC wait wakes up every %.0f s" % (timeout_ms / 1000.0))


if __name__ == "__main__":
    main()
