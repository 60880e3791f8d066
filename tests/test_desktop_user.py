"""Issue 18: the desktop app run by an unprivileged desktop user, as at a real
login — the session bus, the accessibility bus and the app run as a test
user (tests/guienv.py Gui(user=...)), against the built daemon and the real
polkitd on the private system bus.  The user sees the tokens, and an action
the policy refuses (deleting a certificate, with no authentication agent to
ask) ends with NotAuthorized shown in plain words, in English and Russian;
nothing is deleted."""
import gettext
import os

import harness
from harness import PIN, TestCase, ensure_user, main
from guienv import Gui
from test_desktop import cert_for

USER = "p11c-desk"
GUI = None


def setUpModule():
    global GUI
    ensure_user(USER)
    GUI = Gui(user=USER)
    GUI.start()


def tearDownModule():
    if GUI is not None:
        GUI.close()


class DesktopUser(TestCase):
    lang = "en"

    def tr(self, msgid):
        if self.lang == "en":
            return msgid
        text = gettext.translation("p11certd", os.path.join(harness.BUILD, "po"), ["ru"]).gettext(msgid)
        self.assertNotEqual(text, msgid, "no Russian for %r" % msgid)
        return text

    def test_not_authorized_in_plain_words(self):
        """Delete as a user the policy does not allow: the refusal in plain words, the certificate kept."""
        e = self.env
        self.addCleanup(GUI.quit)
        e.add_token("eToken")
        cert_for(e, "eToken", "01", "Agent 42", 200)
        e.start_bus()
        e.start_polkitd()
        e.start_daemon()
        app = GUI.launch(e.env, self.lang, as_user=lambda argv, env: e.as_user(USER, argv, env=env))
        self.assertEqual(os.stat("/proc/%d" % GUI.app_pid()).st_uid, harness.pwd.getpwnam(USER).pw_uid)
        GUI.right_click(GUI.find(app, "Agent 42", "list item", timeout=20))
        GUI.click(GUI.find(app, self.tr("Delete certificate"), "menu item"))
        GUI.click(GUI.button(app, self.tr("_Yes").replace("_", "")))
        GUI.type(GUI.find(app, self.tr("Token password"), "text"), PIN)
        GUI.click(GUI.button(app, self.tr("_Delete").replace("_", "")))
        GUI.find(app, contains=self.tr("You are not allowed to do this on this computer. Ask your administrator."),
                 timeout=30)
        GUI.screenshot("not-authorized-user-%s" % self.lang)
        self.assertIn(("certificate", "01"), [(o["type"], o["id"]) for o in e.objects("eToken")])


class DesktopUserRu(DesktopUser):
    lang = "ru"


if __name__ == "__main__":
    main()
