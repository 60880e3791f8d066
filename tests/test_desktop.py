"""Issue 18: the desktop app p11certd-tokens on real parts — the built app
under Xvfb with a private session bus and accessibility bus, driven through
AT-SPI (tests/guienv.py), against the built daemon on the private system bus
(tests/harness.py) with SoftHSM tokens, the EST test CA and pcscd + vpcd +
vicc for card events.  Each test runs in English or Russian and saves
screenshots under BUILD/desktop-screenshots/."""
import datetime
import gettext
import os
import subprocess
import time

import harness
from harness import PIN, TestCase, main, make_key, wait_for
from guienv import Gui
from pcscenv import PcscEnv

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

GUI = None

# What the user reads: the app's own English strings, and in Russian their
# translations from the built catalogue (po-check keeps it complete; the
# tests check the app shows them, and that they are not the English).
MSGIDS = {
    "enroll": "Get a certificate…",
    "intro": "Get access to the agents' site",
    "delete": "Delete certificate “%s”",
    "confirm": "The certificate will be deleted. Continue?",
    "yes": "_Yes", "no": "_No", "ok": "_OK", "next": "Next", "delete_btn": "_Delete", "change_btn": "C_hange",
    "token_password": "Token password",
    "deleted": "The certificate “%s” was deleted.",
    "pin_wrong": "The token password is wrong.",
    "expired": "Expired", "soon": "Expires soon",
    "no_token": "No token",
    "reading": "Reading the token in “%s”…",
    "unknown_card": "The card in “%s” is not a token this computer can use.",
    "change": "Change the password of token “%s”",
    "current": "Current password", "new": "New password", "again": "Repeat the new password",
    "weak": "The new password is too weak",
    "rule_digit": "digits (0–9)", "rule_upper": "upper-case Latin letters (A–Z)",
    "login": "Login", "otp": "One-time password", "challenge": "Challenge password",
    "challenge_rejected": "The certificate authority did not accept the challenge password. Enter the new "
                          "challenge password from your manager.",
    "storage_token": "eToken",
    "written": "The certificate was written successfully",
    "otp_rejected": "The certificate authority did not accept the login or the one-time password. Check the login "
                    "and enter the new one-time password from your manager.",
    "try_again": "Try again",
    "manager": "Contact your manager",
    "pin_changed": "Password changed",
    "menu_delete": "Delete certificate",
    "system_store": "System store of this computer",
    "cancel_job": "Cancel", "cancelled": "Cancelled. Nothing was written.",
    "storage_system": "System", "system_name": "Name (for example, the service that uses it)",
    "storage_file": "File", "choose": "Choose the file", "save": "_Save",
    "file_pw": "File password", "file_pw2": "Repeat the file password",
    "sha256": "SHA-256 fingerprint",
    "expiring": "A certificate expires soon",
    "pin_note": "Token “%s”: check the password",
    "final_try": "Last attempt: one more wrong password will lock the token.",
}
PLURALS = {   # key: (singular, plural, n)
    "rule_len": ("at least %u character", "at least %u characters", 8),
}


class Texts(dict):
    def __init__(self, lang):
        super().__init__()
        tr = gettext.NullTranslations()
        if lang == "ru":
            tr = gettext.translation("p11certd", os.path.join(harness.BUILD, "po"), ["ru"])
        for k, msgid in MSGIDS.items():
            text = tr.gettext(msgid)
            if lang == "ru" and text == msgid and k != "storage_token":
                raise AssertionError("no Russian for %r" % msgid)
            self[k] = text.replace("_", "") if k in ("yes", "no", "ok", "delete_btn", "change_btn", "save") else text
        for k, (one, many, n) in PLURALS.items():
            self[k] = tr.ngettext(one, many, n) % n
        # "…\n\nAttempt 1 of 3." and "(200 days left)": the parts after the %s
        self["attempt"] = tr.gettext("%s\n\nAttempt %u of %u.").split("%s", 1)[1].replace("%u", "%d", 1) \
            .replace("%u", "3")
        self["next_attempt"] = tr.ngettext("Next attempt at %s (in %ld second), attempt %u.",
                                           "Next attempt at %s (in %ld seconds), attempt %u.", 30).split("%s")[0]
        self.days_left = lambda n: tr.ngettext("valid until %s (%lu day left)", "valid until %s (%lu days left)",
                                               n).split("%s", 1)[1].replace("%lu", str(n))


def setUpModule():
    global GUI
    GUI = Gui()
    GUI.start()


def tearDownModule():
    if GUI is not None:
        GUI.close()


def cert_for(env, label, obj_id, cn, days, not_before_days=0):
    """A key pair on the token and a certificate for it valid @days more days."""
    pub = env.put_keypair(label, obj_id, cn)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(days=not_before_days, minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agents CA")]))
            .public_key(pub).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days))
            .sign(make_key(), hashes.SHA256()))
    env.put_cert(label, cert, obj_id, cn)
    return cert


class Desktop(TestCase):
    lang = "en"

    def setUp(self):
        self.t = Texts(self.lang)        # first: a setUp that fails later leaves nothing behind
        super().setUp()
        self.addCleanup(GUI.quit)

    def shot(self, name):
        return GUI.screenshot("%s-%s" % (name, self.lang))

    def launch(self, **kw):
        self.app = GUI.launch(self.env.env, self.lang, **kw)
        return self.app

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if any(t is self for t, _ in getattr(result, "errors", []) + getattr(result, "failures", [])):
            print("\n===== app log =====\n" + GUI.log("app")[-6000:])
        super().tearDown()

    # -- main window ------------------------------------------------------
    def test_main_window(self):
        """Tokens and certificates with expiry: expired and soon-expiring marked; details on demand."""
        e, t = self.env, self.t
        e.add_token("eToken")
        cert_for(e, "eToken", "01", "Agent 42", 200)
        cert_for(e, "eToken", "02", "Agent 42 old", -3, not_before_days=365)
        cert_for(e, "eToken", "03", "Agent 42 soon", 10, not_before_days=300)
        e.start_daemon()
        job = e.enroll({"ca": "local", "storage": "system", "name": "web"})     # a system-store certificate
        self.assertTrue(e.wait_job(job)[0])
        app = self.launch()
        GUI.find(app, "eToken", contains=None, timeout=20)
        GUI.find(app, t["system_store"], "label")               # shown: root may manage it
        GUI.find(app, "Agent 42 old")
        GUI.find(app, t["expired"], "label")
        GUI.find(app, t["soon"], "label")
        GUI.find(app, contains=t.days_left(200) if GUI.query(app, contains=t.days_left(200)) else t.days_left(199))
        self.shot("main-window")
        # details on demand
        GUI.click_at(GUI.find(app, "Agent 42", "list item"))
        GUI.find(app, t["sha256"], "label")
        self.shot("details")
        self.assertEqual(GUI.unnamed_controls(app), [], "every control has an accessible name")

    def certs_on(self, label):
        return sorted((o["type"], o["id"]) for o in self.env.objects(label))

    def test_delete(self):
        """Right-click → Delete → "No" keeps everything; button → Yes → wrong
        password → the error and the token's state, nothing retried; → right
        password → deleted with its key."""
        e, t = self.env, self.t
        e.add_token("eToken")
        cert_for(e, "eToken", "01", "Agent 42 old", -3, not_before_days=365)
        cert_for(e, "eToken", "02", "Agent 42", 200)
        before = self.certs_on("eToken")
        e.use_fault_module()        # no faults: it counts the module's calls
        e.start_daemon()
        app = self.launch()
        # the seed's way: right-click the certificate, "Delete certificate", "No"
        GUI.right_click(GUI.find(app, "Agent 42 old", "list item", timeout=20))
        GUI.click(GUI.find(app, t["menu_delete"], "menu item"))
        GUI.find(app, t["confirm"], "label")
        self.shot("delete-confirm")
        GUI.click(GUI.button(app, t["no"]))
        GUI.gone(app, t["confirm"], "label")
        self.assertEqual(self.certs_on("eToken"), before)
        # the button, Yes, a wrong password: the error, once
        # details, with the button
        delete = GUI.click_until(GUI.find(app, "Agent 42 old", "list item"),
                                 lambda: GUI.button(app, t["delete"] % "Agent 42 old", timeout=0.5))
        GUI.click(delete)
        GUI.click(GUI.button(app, t["yes"]))
        GUI.type(GUI.find(app, t["token_password"], "text"), "Wrong-Passw0rd")
        self.shot("delete-password")
        GUI.click(GUI.button(app, t["delete_btn"]))
        GUI.find(app, contains=t["pin_wrong"])
        self.shot("delete-wrong-password")
        GUI.click(GUI.button(app, t["ok"]))
        self.assertEqual(self.certs_on("eToken"), before)
        self.assertEqual(e.fault_calls("C_Login", 0xA0), 1, "the wrong password was sent once")
        # the right password (the list was redrawn when the token's state was read again)
        GUI.click(GUI.button(app, t["delete"] % "Agent 42 old"))
        GUI.click(GUI.button(app, t["yes"]))
        GUI.type(GUI.find(app, t["token_password"], "text"), PIN)
        GUI.click(GUI.button(app, t["delete_btn"]))
        GUI.find(app, t["deleted"] % "Agent 42 old", "label", timeout=30)
        self.shot("delete-done")
        GUI.click(GUI.button(app, t["ok"]))
        GUI.gone(app, "Agent 42 old", "list item")
        self.assertEqual(self.certs_on("eToken"),
                         [("certificate", "02"), ("private key", "02"), ("public key", "02")])


    # -- the enrollment wizard ----------------------------------------------
    def wizard_to_login(self, shots=False):
        app, t = self.app, self.t
        GUI.click(GUI.button(app, t["enroll"]))
        GUI.find(app, t["intro"])
        if shots:
            self.shot("wizard-1-intro")
        GUI.click(GUI.button(app, t["next"]))
        GUI.find(app, "agents", "check box")
        self.assertTrue(GUI.checked(GUI.find(app, "agents", "check box")), "the agents' CA is preselected")
        if shots:
            self.shot("wizard-2-ca")
        GUI.click(GUI.button(app, t["next"]))
        GUI.find(app, t["login"], "text")

    def fill_login(self, login, otp):
        GUI.type(GUI.find(self.app, self.t["login"], "text"), login)
        GUI.type(GUI.find(self.app, self.t["otp"], "text"), otp)

    def test_wizard_onto_token(self):
        """The seed's steps onto the token: the certificate lands next to its key."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.add_est_profile("agents")
        e.start_daemon()
        self.launch()
        GUI.find(self.app, "eToken", timeout=20)
        self.wizard_to_login(shots=True)
        self.fill_login("alice", "OTP-1")
        self.shot("wizard-3-login")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.find(self.app, t["storage_token"], "check box")
        self.shot("wizard-4-storage")
        GUI.click(GUI.button(self.app, t["next"]))
        pin = GUI.find(self.app, t["token_password"], "text")
        GUI.type(pin, "short")
        GUI.find(self.app, "✗ " + t["rule_len"], "label")
        # a wrong token password: back on this page with the error, nothing retried
        GUI.type(pin, "Wrong-Passw0rd")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.find(self.app, contains=t["pin_wrong"], timeout=60)
        self.shot("wizard-wrong-pin")
        self.assertEqual(self.simpleenrolls(), 0, "the CA was not asked")
        pin = GUI.find(self.app, t["token_password"], "text")
        GUI.type(pin, PIN)
        GUI.find(self.app, "✓ " + t["rule_len"], "label")
        self.shot("wizard-5-device")
        self.assertEqual(GUI.unnamed_controls(self.app), [], "every control has an accessible name")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.find(self.app, t["written"], timeout=60)
        self.shot("wizard-6-done")
        objs = [(o["type"], o["id"]) for o in e.objects("eToken")]
        keys = [i for k, i in objs if k == "private key"]
        self.assertEqual(len(keys), 1, objs)
        self.assertIn(("certificate", keys[0]), objs, "the certificate is next to its key")
        self.assertEqual(len([r for r in e.est_requests() if r.get("op") == "simpleenroll"]), 1)


    def to_device_and_go(self, pin=PIN):
        t = self.t
        GUI.click(GUI.button(self.app, t["next"]))                     # login → storage
        GUI.find(self.app, t["storage_token"], "check box")
        GUI.click(GUI.button(self.app, t["next"]))                     # storage → device
        field = GUI.find(self.app, t["token_password"], "text")
        if pin is not None:
            GUI.type(field, pin)
        GUI.click(GUI.button(self.app, t["next"]))                     # → the job

    def simpleenrolls(self):
        return len([r for r in self.env.est_requests() if r.get("op") == "simpleenroll"])

    def test_wizard_to_file(self):
        """Storage "File": a save dialog, a password meeting the rules; the app opens the
        file and passes the descriptor; a PKCS#12 file only the user can read."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.add_est_profile("agents")
        e.start_daemon()
        self.launch()
        self.wizard_to_login()
        self.fill_login("alice", "OTP-1")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.click_at(GUI.find(self.app, t["storage_file"], "check box"))
        wait_for(lambda: GUI.checked(GUI.find(self.app, t["storage_file"], "check box")), 10, "File chosen")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.click(GUI.button(self.app, t["choose"]))
        path = os.path.join(e.tmp, "agent.p12")
        # GTK's own file chooser: its name field ("Name:", translated by GTK)
        name_field = GUI._wait(lambda: next((n for n in GUI.query(self.app, role="text")
                                             if (n.name or "").endswith(":")), None), 15, "the file name field")
        GUI.type(name_field, path)
        self.shot("wizard-file-dialog")
        GUI.click(GUI.button(self.app, t["save"]))
        GUI.find(self.app, path, "label")
        GUI.type(GUI.find(self.app, t["file_pw"], "text"), "FilePassw0rd")
        GUI.type(GUI.find(self.app, t["file_pw2"], "text"), "FilePassw0rd")
        GUI.find(self.app, "✓ " + t["rule_len"], "label")
        self.shot("wizard-5-file")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.find(self.app, t["written"], timeout=60)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        r = subprocess.run(["openssl", "pkcs12", "-in", path, "-passin", "pass:FilePassw0rd", "-nokeys"],
                           capture_output=True, text=True)
        self.assertIn("subject=CN = alice", r.stdout, r.stderr)

    def test_wizard_to_system_store(self):
        """The CA p11certd.conf's default-ca names is preselected (here the local one, over the
        agents' CA: no login asked), storage "System" with a name."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.add_est_profile("agents")
        e.extra_config = "[daemon]\ndefault-ca=local\n"
        e.start_daemon()
        self.launch()
        GUI.click(GUI.button(self.app, t["enroll"], timeout=20))
        GUI.click(GUI.button(self.app, t["next"]))
        wait_for(lambda: GUI.checked(GUI.find(self.app, "local", "check box")), 10, "the default CA preselected")
        self.assertFalse(GUI.checked(GUI.find(self.app, "agents", "check box")))
        self.shot("wizard-2-default-ca")
        GUI.click(GUI.button(self.app, t["next"]))               # no login for the local CA
        GUI.click_at(GUI.find(self.app, t["storage_system"], "check box"))
        wait_for(lambda: GUI.checked(GUI.find(self.app, t["storage_system"], "check box")), 10, "System chosen")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.type(GUI.find(self.app, t["system_name"], "text"), "web")
        GUI.click(GUI.button(self.app, t["next"]))
        GUI.find(self.app, t["written"], timeout=60)
        self.assertEqual([c["uri"] for c in e.list_certs(storage="system")], ["system:web"])
        self.assertEqual(self.simpleenrolls(), 0, "the agents' CA was not asked")

    def test_wizard_scep_challenge(self):
        """A SCEP CA (issue 16): the one-time-password step asks for the challenge
        password and no login; a refused one asks for a new one; the RSA key and its
        certificate land on the token."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_test_scep()
        e.add_scep_profile("scep")
        e.start_daemon()
        self.launch()
        GUI.click(GUI.button(self.app, t["enroll"], timeout=20))
        GUI.click(GUI.button(self.app, t["next"]))
        self.assertTrue(GUI.checked(GUI.find(self.app, "scep", "check box")),
                        "the CA that asks for a one-time password is preselected")
        GUI.click(GUI.button(self.app, t["next"]))
        challenge = GUI.find(self.app, t["challenge"], "text")
        self.assertNotEqual(t["challenge"], t["otp"])
        self.assertFalse(GUI.query(self.app, t["login"], "text"), "SCEP asks no login")
        self.assertFalse(GUI.query(self.app, t["otp"], "text"))
        GUI.type(challenge, "Chall-WRONG")
        self.shot("wizard-3-challenge")
        self.to_device_and_go()
        GUI.find(self.app, contains=t["challenge_rejected"], timeout=60)   # back on the challenge page
        self.shot("wizard-challenge-rejected")
        GUI.type(GUI.find(self.app, t["challenge"], "text"), "Chall-1")
        self.to_device_and_go(pin=None)                                   # the token password was kept
        GUI.find(self.app, t["written"], timeout=60)
        ops = [r for r in e.scep_requests() if r.get("op") == "PKIOperation"]
        self.assertEqual([r.get("challenge_ok") for r in ops], [False, True], "each challenge sent once")
        objs = [(o["type"], o["id"]) for o in e.objects("eToken")]
        keys = [i for k, i in objs if k == "private key"]
        self.assertEqual(len(keys), 1, objs)
        self.assertIn(("certificate", keys[0]), objs, "the certificate is next to its key")
        self.assertIn("RSA 2048", e.pkcs11_tool("eToken", "-O", "--type", "pubkey", pin=PIN).stdout)

    def test_wizard_wait_and_cancel(self):
        """While the CA makes us wait: the retry time; Cancel: nothing written, the new key removed."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.est_control(accepted_202=100, retry_after=30)
        e.add_est_profile("agents")
        e.start_daemon()
        self.launch()
        self.wizard_to_login()
        self.fill_login("alice", "OTP-1")
        self.to_device_and_go()
        GUI.find(self.app, contains=t["next_attempt"], timeout=60)
        self.shot("wizard-waiting")
        GUI.click(GUI.button(self.app, t["cancel_job"]))
        GUI.find(self.app, t["cancelled"], "label", timeout=60)
        self.assertEqual([o for o in e.objects("eToken") if o["type"] == "private key"], [],
                         "the generated key was removed")

    def test_wizard_rejected_otp(self):
        """A refused one-time password: a new one is asked for, the same is never sent again."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.add_est_profile("agents")
        e.start_daemon()
        self.launch()
        self.wizard_to_login()
        self.fill_login("alice", "OTP-WRONG")
        self.to_device_and_go()
        GUI.find(self.app, contains=t["otp_rejected"], timeout=60)      # back on the login page
        self.shot("wizard-otp-rejected")
        self.assertEqual(self.simpleenrolls(), 1, "the CA saw one request")
        otp = GUI.find(self.app, t["otp"], "text")
        GUI.type(otp, "OTP-WRONG")                                     # the refused one again: not accepted
        next_button = GUI.button(self.app, t["next"])
        self.assertFalse(next_button.getState().contains(GUI.pyatspi.STATE_SENSITIVE))
        GUI.type(otp, "OTP-2")
        self.to_device_and_go(pin=None)                                # the token password was kept
        GUI.find(self.app, t["written"], timeout=60)
        self.assertEqual(self.simpleenrolls(), 2)

    def test_wizard_three_failures(self):
        """The CA cannot be reached three times: "Try again", then "contact your manager" with details."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_est()
        e.add_est_profile("agents", url="https://127.0.0.1:9", max_attempts=1)   # nothing listens there
        e.start_daemon()
        self.launch()
        self.wizard_to_login()
        self.fill_login("alice", "OTP-1")
        self.to_device_and_go()
        for attempt in (1, 2):
            GUI.find(self.app, contains=t["attempt"] % attempt, timeout=60)
            if attempt == 1:
                self.shot("wizard-failed")
            GUI.click(GUI.button(self.app, t["try_again"]))
        GUI.find(self.app, t["manager"], timeout=60)
        GUI.find(self.app, contains="org.p11certd.Error.CaUnreachable")   # the details to quote
        self.assertFalse(GUI.query(self.app, role="push button", name=t["try_again"]))
        self.shot("wizard-contact-manager")
        self.assertEqual(self.simpleenrolls(), 0)

    def test_change_pin_policy(self):
        """Change password: a weak new password is refused naming each broken rule; a good one works."""
        e, t = self.env, self.t
        e.add_token("eToken")
        e.start_daemon()
        app = self.launch()
        GUI.click(GUI.button(app, t["change"] % "eToken", timeout=20))
        GUI.type(GUI.find(app, t["current"], "text"), PIN)
        GUI.type(GUI.find(app, t["new"], "text"), "weak")
        GUI.type(GUI.find(app, t["again"], "text"), "weak")
        GUI.find(app, "✗ " + t["rule_len"], "label")
        self.shot("change-pin-hints")
        GUI.click(GUI.button(app, t["change_btn"]))
        GUI.find(app, t["weak"])
        msg = GUI.find(app, contains=t["rule_len"] + "; " + t["rule_digit"] + "; " + t["rule_upper"])
        self.shot("change-pin-weak")
        GUI.click(GUI.button(app, t["ok"]))
        self.assertEqual(e.pkcs11_tool("eToken", "--test", check=False).returncode, 0, "the old password still works")
        GUI.click(GUI.button(app, t["change"] % "eToken"))
        GUI.type(GUI.find(app, t["current"], "text"), PIN)
        GUI.type(GUI.find(app, t["new"], "text"), "NewPassw0rd")
        GUI.type(GUI.find(app, t["again"], "text"), "NewPassw0rd")
        GUI.click(GUI.button(app, t["change_btn"]))
        GUI.find(app, t["pin_changed"], timeout=30)
        e.pkcs11_tool("eToken", "--test", pin="NewPassw0rd")


    # -- live: cards and tokens coming and going ----------------------------
    def test_live_tokens(self):
        """A card in a reader: "reading the token…" at once (CardInserted), then what it is;
        a token appearing and going away shows up with no refresh button."""
        e, t = self.env, self.t
        pcsc = PcscEnv(e.tmp)
        self.addCleanup(pcsc.close)
        pcsc.start()
        e.env["PCSCLITE_CSOCK_NAME"] = os.environ["PCSCLITE_CSOCK_NAME"]
        e.add_token("eToken")
        e.use_fault_module()
        e.start_daemon()
        app = self.launch()
        GUI.find(app, "eToken", "label", timeout=20)
        # the modules take 2 s to look at the new card; the app says so at once
        e.set_faults("C_GetSlotList delay=2000")
        pcsc.insert_card(0)
        GUI.find(app, t["reading"] % pcsc.readers[0], "label", timeout=2)
        self.shot("card-reading")
        GUI.find(app, t["unknown_card"] % pcsc.readers[0], "label", timeout=15)   # vicc is no PKCS#11 token
        e.set_faults()
        pcsc.remove_card(0)
        GUI.gone(app, t["unknown_card"] % pcsc.readers[0], "label")
        # the token goes away and comes back (a software token: the module is asked again on Rescan)
        e.set_faults("C_GetSlotList hide=1")
        e.call("Rescan")
        GUI.find(app, t["no_token"], "label")
        GUI.gone(app, "eToken", "label")
        self.shot("no-token")
        e.set_faults()
        e.call("Rescan")
        GUI.find(app, "eToken", "label")
        self.assertFalse(GUI.query(app, role="push button", contains="Refresh"))


    # -- notifications, background start -------------------------------------
    def test_background_notifications(self):
        """Started as at login (--background): no window, no wake-ups while idle; an expiring
        certificate and a token's PIN nearing lock become notifications whose action opens
        the right place."""
        e, t = self.env, self.t
        e.add_token("eToken")
        cert_for(e, "eToken", "01", "Agent 42 soon", 10, not_before_days=300)
        e.use_fault_module()
        e.start_bus()
        server = NotificationServer(GUI.env["DBUS_SESSION_BUS_ADDRESS"])
        self.addCleanup(server.close)
        self.launch(args=["--background"], wait_window=False)
        wait_for(lambda: self.on_system_bus(GUI.app_pid()), 20, "the app on the system bus")
        e.start_daemon()                     # its expiry scan announces the certificate
        note = server.wait(lambda n: n["summary"] == t["expiring"])
        self.assertIn("Agent 42 soon", note["body"])
        app = GUI._find_app()           # GTK joins the accessibility bus with its first window
        self.assertTrue(app is None or not GUI.query(app, role="frame"), "no window at login")
        # idle (after a second to settle): nothing to do, no wake-ups — a 1 Hz timer would show 3+
        pid = GUI.app_pid()
        settle = time.monotonic() + 1
        wait_for(lambda: time.monotonic() > settle, 5, "1 s")
        before = proc_switches(pid)
        end = time.monotonic() + 3
        wait_for(lambda: time.monotonic() > end, 5, "3 s idle")
        woke = proc_switches(pid) - before
        print("app context switches in 3 s idle: %d" % woke)
        self.assertLessEqual(woke, 2, "the app woke up while idle")
        # the token's PIN nears lock (one more wrong PIN locks it)
        e.set_faults("C_GetTokenInfo flags+=CKF_USER_PIN_FINAL_TRY")
        e.call("Rescan")
        pin_note = server.wait(lambda n: n["summary"] == t["pin_note"] % "eToken")
        self.assertIn(t["final_try"], pin_note["body"])
        # the expiry notification's action opens the window on that certificate's details
        server.invoke(note["id"], "default")
        app = GUI.find_app()
        GUI.find(app, role="frame", timeout=20)
        GUI.find(app, t["sha256"], "label")
        self.shot("notification-opened")


    def on_system_bus(self, pid):
        """Whether process @pid has a connection on the test's system bus."""
        call = lambda m, a: self.env.conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                    "org.freedesktop.DBus", m, a, None, 0, 5000, None).unpack()[0]
        for name in call("ListNames", None):
            if name.startswith(":"):
                try:
                    if call("GetConnectionUnixProcessID", harness.GLib.Variant("(s)", (name,))) == pid:
                        return True
                except harness.GLib.Error:
                    pass
        return False


def proc_switches(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


NOTIFICATIONS_XML = """<node><interface name="org.freedesktop.Notifications">
  <method name="Notify"><arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
    <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
    <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/></method>
  <method name="CloseNotification"><arg type="u" direction="in"/></method>
  <method name="GetCapabilities"><arg type="as" direction="out"/></method>
  <method name="GetServerInformation"><arg type="s" direction="out"/><arg type="s" direction="out"/>
    <arg type="s" direction="out"/><arg type="s" direction="out"/></method>
  <signal name="ActionInvoked"><arg type="u"/><arg type="s"/></signal>
  <signal name="NotificationClosed"><arg type="u"/><arg type="u"/></signal>
</interface></node>"""


class NotificationServer:
    """The desktop's notification service (org.freedesktop.Notifications, the
    interface GLib's GNotification uses outside GNOME) on the test session bus:
    it records what the app shows and can click a notification's action."""

    def __init__(self, address):
        flags = harness.Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | \
            harness.Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
        self.conn = harness.Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
        self.notes = []
        info = harness.Gio.DBusNodeInfo.new_for_xml(NOTIFICATIONS_XML).interfaces[0]
        self.reg = self.conn.register_object("/org/freedesktop/Notifications", info, self.on_call, None, None)
        self.conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
                            harness.GLib.Variant("(su)", ("org.freedesktop.Notifications", 4)), None, 0, 5000, None)

    def on_call(self, conn, sender, path, iface, method, params, invocation):
        V = harness.GLib.Variant
        if method == "Notify":
            app, replaces, icon, summary, body, actions, hints, timeout = params.unpack()
            nid = replaces or len(self.notes) + 1
            self.notes.append({"id": nid, "summary": summary, "body": body, "actions": actions})
            invocation.return_value(V("(u)", (nid,)))
        elif method == "GetCapabilities":
            invocation.return_value(V("(as)", (["actions", "body"],)))
        elif method == "GetServerInformation":
            invocation.return_value(V("(ssss)", ("p11c-test", "p11certd", "1", "1.2")))
        else:
            invocation.return_value(None)

    def wait(self, match, timeout=20):
        found = []
        wait_for(lambda: found.extend(n for n in self.notes if match(n)) or found, timeout,
                 "a notification (seen: %s)" % [n["summary"] for n in self.notes])
        return found[0]

    def invoke(self, nid, action):
        self.conn.emit_signal(None, "/org/freedesktop/Notifications", "org.freedesktop.Notifications",
                              "ActionInvoked", harness.GLib.Variant("(us)", (nid, action)))

    def close(self):
        self.conn.unregister_object(self.reg)
        self.conn.close_sync(None)


class DesktopRu(Desktop):
    """The same, in Russian (LANGUAGE=ru, LC_ALL=ru_RU.UTF-8)."""
    lang = "ru"


if __name__ == "__main__":
    main()
