"""Issue 17: p11certctl in Russian (LANGUAGE=ru, LC_ALL=ru_RU.UTF-8) against the
real daemon: list headings, dates and plurals, the delete confirmation on a
terminal, each PIN-policy rule, a wrong PIN with the token's state, a
rejected one-time password, an unreachable CA, not authorized (real polkitd)
— all from error names and structured details (Job.ErrorDetails,
Manager.CheckPin, token properties), never from the daemon's English text,
which stays English.  Also the polkit actions' messages in Russian from the
real polkitd."""
import os
import re
import subprocess

from gi.repository import GLib

from harness import CTL, JOB_IFACE, PIN, TestCase, ensure_user, main, make_cert

ALICE = "p11c-alice"


class Russian(TestCase):
    def setUp(self):
        super().setUp()
        locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower().split()
        self.assertIn("ru_ru.utf8", locales, "the ru_RU.UTF-8 locale is missing: run tools/install-deps")
        e = self.env
        e.add_token("agent")
        # 1, 2 and 5 days left: the three Russian plural forms
        e.put_cert_for_key("agent", "01", "old cert", "Old Agent", days=2)
        e.put_cert_for_key("agent", "02", "two days", "Two Days", days=3)
        e.put_cert_for_key("agent", "03", "five days", "Five Days", days=6)
        self.pin_file = self.secret("pin", PIN)

    def secret(self, name, value):
        path = os.path.join(self.env.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
        return path

    def test_help_list_tokens_dates_plurals(self):
        e = self.env
        e.start_daemon()
        r = e.ctl("--help", lang="ru")
        self.assertEqual(r.returncode, 0, r.stderr)
        for text in ("Использование:", "Команды:", "Удалить сертификат (и его ключ)", "Код завершения"):
            self.assertIn(text, r.stdout)
        r = e.ctl("list", lang="ru", check=True)
        header = r.stdout.splitlines()[0].split()
        self.assertEqual(header, ["СУБЪЕКТ", "ИСТЕКАЕТ", "ОСТАЛОСЬ", "ТОКЕН", "МЕТКА"])
        for text in ("через 1 день", "через 2 дня", "через 5 дней"):
            self.assertIn(text, r.stdout)
        self.assertRegex(r.stdout, r"\b\d\d\.\d\d\.\d{4}\b")          # dd.mm.yyyy
        self.assertTrue(all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout)
        r = e.ctl("tokens", lang="ru", check=True)
        self.assertEqual(r.stdout.splitlines()[0].split()[:2], ["МЕТКА", "НОМЕР"])
        self.assertIn("в порядке", r.stdout)
        # English without a language, from the same build
        r = e.ctl("list", check=True)
        self.assertEqual(r.stdout.splitlines()[0].split(), ["SUBJECT", "EXPIRES", "LEFT", "TOKEN", "LABEL"])
        for text in ("in 1 day", "in 2 days", "in 5 days"):
            self.assertIn(text, r.stdout)

    def test_delete_confirmation_on_a_terminal(self):
        import pexpect
        e = self.env
        e.start_daemon()
        args = ["--address", e.bus_address, "delete", "--label", "old cert"]
        env = e.lang_env("ru")
        child = pexpect.spawn(CTL, args, env=env, encoding="utf-8", timeout=30)
        child.expect("Субъект:")
        child.expect(re.escape("Сертификат будет удален. Продолжить? [д/Н]"))
        child.sendline("н")
        child.expect("Ничего не удалено.")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 11)
        self.assertEqual(len(e.list_certs()), 3)
        child = pexpect.spawn(CTL, args, env=env, encoding="utf-8", timeout=30)
        child.expect(re.escape("Продолжить? [д/Н]"))
        child.sendline("д")
        child.expect("Пароль токена «agent»: ")
        child.sendline(PIN)
        child.expect("удален")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0)
        self.assertEqual(sorted(c["label"] for c in e.list_certs()), ["five days", "two days"])

    def test_delete_keeps_a_shared_key(self):
        e = self.env
        e.put_cert("agent", make_cert("Same Key")[1], "01", "same key")    # a second certificate of key 01
        e.start_daemon()
        r = e.ctl("delete", "--label", "old cert", "--yes", "--pin-file", self.pin_file, lang="ru")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Ключ оставлен: его использует ещё 1 сертификат.", r.stdout)
        kinds = [o["type"] for o in e.objects("agent") if o["id"] == "01"]
        self.assertIn("private key", kinds)
        self.assertEqual(kinds.count("certificate"), 1, kinds)

    def test_renew_due_needs_a_person(self):
        e = self.env
        e.extra_config = "[renewal]\nwindow-days=3650\n"
        e.start_daemon()
        r = e.ctl("enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=agent",
                  "--pin-file", self.pin_file, "--subject", "CN=needs pin")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = e.ctl("renew", "--due", lang="ru")
        self.assertEqual(r.returncode, 20, r.stdout + r.stderr)
        self.assertIn("Для продления 1 сертификата нужен человек (пароль токена):", r.stdout)
        self.assertIn("(нужен пароль токена)", r.stdout)
        res = e.call("RenewDue", "a{sv}", [{}])[0]
        self.assertEqual(set(res["reason_codes"].values()), {"pin-needed"})
        self.assertEqual(set(res["reason_codes"]), set(res["needs_person"]))

    def test_pin_policy_rules(self):
        e = self.env
        e.start_daemon()
        cases = {
            "abc": ["в нём 3 символа, а нужно не менее 8", "нет цифры (0-9)",
                    "нет большой буквы латинского алфавита (A-Z)"],
            # Cyrillic letters are not Latin ones
            "пароль12345": ["нет большой буквы латинского алфавита (A-Z)",
                            "нет маленькой буквы латинского алфавита (a-z)"],
            "ABCDEFGH1": ["нет маленькой буквы латинского алфавита (a-z)"],
        }
        every = ["символ", "цифры", "большой буквы", "маленькой буквы"]
        for pin, rules in cases.items():
            r = e.ctl("passwd", "--pin-file", self.pin_file, "--new-pin-file", self.secret("new", pin), lang="ru")
            self.assertEqual(r.returncode, 5, r.stderr)
            self.assertIn("Новый пароль не соответствует требованиям", r.stderr)
            for rule in rules:
                self.assertIn(rule, r.stderr)
            for other in every:
                if not any(other in rule for rule in rules):
                    self.assertNotIn("нет " + other if other != "символ" else "нужно не менее", r.stderr)
            self.assertIn("не менее 8 символов, цифры (0-9), большие и маленькие буквы латинского алфавита",
                          r.stderr)
            self.assertNotIn(pin, r.stderr)
        e.pkcs11_tool("agent", "-O", pin=PIN)    # the PIN did not change
        # the structured check behind it, for any client
        res = e.call("CheckPin", "s", ["пароль12345"])[0]
        self.assertEqual((res["ok"], res["broken"], res["length"], res["min_length"]),
                         (False, ["upper", "lower"], 11, 8))
        res = e.call("CheckPin", "s", ["abc"])[0]
        self.assertEqual(res["broken"], ["min_length", "digit", "upper"])
        self.assertTrue(e.call("CheckPin", "s", ["N3wPassw0rd"])[0]["ok"])
        # the daemon's own refusal stays English, with the rules as details
        err = self.assertDBusError("PinPolicy", "ChangePin", "ssa{sv}", [PIN, "abc", {}],
                                   path=e.list_tokens()[0]["path"], iface="org.p11certd1.Token")
        self.assertIn("at least 8", err)

    def test_wrong_pin_with_the_token_state(self):
        e = self.env
        e.use_fault_module()
        e.set_faults("C_GetTokenInfo flags+=CKF_USER_PIN_FINAL_TRY")
        e.start_daemon()
        bad = self.secret("bad", "Wr0ngPin11")
        r = e.ctl("delete", "--label", "old cert", "--yes", "--pin-file", bad, lang="ru")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("Неверный пароль токена.", r.stderr)
        self.assertIn("Осталась одна попытка: ещё один неверный пароль заблокирует токен.", r.stderr)
        self.assertNotIn("Wr0ngPin11", r.stdout + r.stderr)
        self.assertEqual(len(e.list_certs()), 3)
        # the same from a job: Job.ErrorDetails carries the state
        r = e.ctl("enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=agent",
                  "--pin-file", self.secret("bad2", "Wr0ngPin22"), lang="ru")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("Неверный пароль токена.", r.stderr)
        self.assertIn("Осталась одна попытка", r.stderr)
        job = e.enroll({"ca": "local", "storage": "token", "token": "pkcs11:token=agent", "pin": "Wr0ngPin33"})
        e.wait_job(job)
        details = e.get_property(job, JOB_IFACE, "ErrorDetails")
        self.assertEqual((details["pin_final_try"], details["pin_locked"]), (True, False))
        self.assertEqual(details["token"], e.list_tokens()[0]["path"])

    def test_ca_errors(self):
        e = self.env
        e.start_est(users={"alice": {"otps": ["OTP-1"]}})
        e.add_est_profile("est", max_attempts=3)
        e.add_est_profile("down", url="https://127.0.0.1:1", max_attempts=1)
        e.start_daemon()
        args = ["enroll", "--ca", "est", "--login", "alice", "--otp-file", self.secret("otp", "WRONG-OTP"),
                "--storage", "token", "--token", "pkcs11:token=agent", "--pin-file", self.pin_file]
        r = e.ctl(*args, lang="ru")
        self.assertEqual(r.returncode, 9, r.stderr)
        self.assertIn("Удостоверяющий центр отклонил логин или одноразовый пароль", r.stderr)
        self.assertIn("попросите у менеджера новый", r.stderr)
        self.assertNotIn("WRONG-OTP", r.stdout + r.stderr)
        sent = [q for q in e.est_requests() if q.get("op") == "simpleenroll"]
        self.assertEqual(len(sent), 1, "a rejected one-time password was resent: %s" % sent)
        job = e.enroll({"ca": "est", "login": "alice", "otp": "WRONG-2", "storage": "system", "name": "x"})
        e.wait_job(job)
        details = e.get_property(job, JOB_IFACE, "ErrorDetails")
        self.assertEqual((details["reason"], details["http_status"]), ("credentials", 401))
        self.assertIn("one-time password", e.get_property(job, JOB_IFACE, "ErrorMessage"))   # English
        args[2] = "down"
        r = e.ctl(*args, lang="ru")
        self.assertEqual(r.returncode, 8, r.stderr)
        self.assertIn("Удостоверяющий центр недоступен.", r.stderr)
        self.assertIn("Сделана 1 попытка", r.stderr)
        self.assertIn("обратитесь к менеджеру", r.stderr)

    def test_not_authorized_and_polkit_messages(self):
        e = self.env
        ensure_user(ALICE)
        e.start_bus()
        e.start_polkitd()
        e.start_daemon()
        r = e.ctl("enroll", "--ca", "local", "--storage", "system", "--name", "svc", "--yes", user=ALICE, lang="ru")
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)
        self.assertIn("У вас нет прав на это действие", r.stderr)
        # polkitd gives the actions' texts in the asker's language (what an
        # authentication agent shows)
        bus = Gio_bus(e.bus_address)
        actions = bus.call_sync("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                "org.freedesktop.PolicyKit1.Authority", "EnumerateActions",
                                GLib.Variant("(s)", ("ru_RU.UTF-8",)), None, 0, 10000, None).unpack()[0]
        ours = {a[0]: a for a in actions if a[0].startswith("org.p11certd.")}
        self.assertEqual(ours["org.p11certd.token.delete"][1], "Удаление сертификата или ключа с токена")
        self.assertIn("требуется аутентификация", ours["org.p11certd.system.manage"][2])


def Gio_bus(address):
    from gi.repository import Gio
    return Gio.DBusConnection.new_for_address_sync(
        address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None, None)


if __name__ == "__main__":
    main()
