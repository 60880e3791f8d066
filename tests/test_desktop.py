"""Issue 18: the desktop app p11certd-tokens on real parts — the built app
under Xvfb with a private session bus and accessibility bus, driven through
AT-SPI (tests/guienv.py), against the built daemon on the private system bus
(tests/harness.py) with SoftHSM tokens, the EST test CA and pcscd + vpcd +
vicc for card events.  Each test runs in English or Russian and saves
screenshots under BUILD/desktop-screenshots/."""
import datetime
import os
import unittest

import harness
from harness import PIN, TestCase, main, make_key, wait_for
from guienv import Gui

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

GUI = None

# What the user reads, in both languages (the app's own strings)
TEXT = {
    "en": {
        "enroll": "Get a certificate…",
        "delete": "Delete certificate “%s”",
        "confirm": "The certificate will be deleted. Continue?",
        "yes": "Yes", "no": "No", "ok": "OK", "next": "Next", "cancel": "Cancel", "close": "Close",
        "token_password": "Token password",
        "delete_btn": "Delete",
        "deleted": "The certificate “%s” was deleted.",
        "pin_wrong": "The token password is wrong.",
        "not_deleted": "The certificate was not deleted",
        "expired": "Expired", "soon": "Expires soon",
        "days_left": "days left",
        "no_token": "No token",
        "reading": "Reading the token in “%s”…",
        "change": "Change the password of token “%s”",
        "current": "Current password", "new": "New password", "again": "Repeat the new password",
        "change_btn": "Change",
        "weak": "The new password is too weak",
        "rule_len": "at least 8 characters", "rule_digit": "digits (0–9)",
        "rule_upper": "upper-case Latin letters (A–Z)",
        "login": "Login", "otp": "One-time password",
        "storage_token": "eToken",
        "written": "The certificate was written successfully",
        "otp_rejected": "new one-time password",
        "try_again": "Try again",
        "manager": "Contact your manager",
    },
    "ru": {
        "enroll": "Получить сертификат…",
        "delete": "Удалить сертификат «%s»",
        "confirm": "Сертификат будет удалён. Продолжить?",
        "yes": "Да", "no": "Нет", "ok": "OK", "next": "Далее", "cancel": "Отмена", "close": "Закрыть",
        "token_password": "Пароль токена",
        "delete_btn": "Удалить",
        "deleted": "Сертификат «%s» удалён.",
        "pin_wrong": "Неверный пароль токена.",
        "not_deleted": "Сертификат не удалён",
        "expired": "Истёк", "soon": "Скоро истекает",
        "days_left": "дн",
        "no_token": "Нет токена",
        "reading": "Чтение токена в «%s»…",
        "change": "Сменить пароль токена «%s»",
        "current": "Текущий пароль", "new": "Новый пароль", "again": "Повторите новый пароль",
        "change_btn": "Сменить",
        "weak": "Новый пароль слишком простой",
        "rule_len": "не менее 8 символов", "rule_digit": "цифры (0–9)",
        "rule_upper": "заглавные латинские буквы (A–Z)",
        "login": "Логин", "otp": "Одноразовый пароль",
        "storage_token": "eToken",
        "written": "Сертификат успешно записан",
        "otp_rejected": "новый одноразовый пароль",
        "try_again": "Попробовать ещё раз",
        "manager": "Обратитесь к менеджеру",
    },
}


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
        super().setUp()
        self.t = TEXT[self.lang]
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
        app = self.launch()
        GUI.find(app, "eToken", contains=None, timeout=20)
        GUI.find(app, "Agent 42 old")
        GUI.find(app, t["expired"], "label")
        GUI.find(app, t["soon"], "label")
        GUI.find(app, contains=t["days_left"])
        self.shot("main-window")
        # details on demand
        GUI.click_at(GUI.find(app, "Agent 42", "list item"))
        GUI.find(app, "SHA-256 fingerprint", "label")
        self.shot("details")

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
        GUI.click(GUI.find(app, "Delete certificate", "menu item"))
        GUI.find(app, t["confirm"], "label")
        self.shot("delete-confirm")
        GUI.click(GUI.button(app, t["no"]))
        GUI.gone(app, t["confirm"], "label")
        self.assertEqual(self.certs_on("eToken"), before)
        # the button, Yes, a wrong password: the error, once
        GUI.click_at(GUI.find(app, "Agent 42 old", "list item"))     # details, with the button
        delete = GUI.button(app, t["delete"] % "Agent 42 old")
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


if __name__ == "__main__":
    main()
