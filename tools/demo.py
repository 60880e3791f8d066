"""The narrated demo behind tools/demo (see there)."""
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from harness import Env, PIN, CTL, make_key, x509, hashes, NameOID  # noqa: E402

NEW_P12_PASSWORD = "Fil3Passw0rd"
# tools/demo --lang ru: p11certctl speaks Russian (the agents' language)
LANG = sys.argv[sys.argv.index("--lang") + 1] if "--lang" in sys.argv[:-1] else None


def say(text):
    print("\n\033[1m== %s\033[0m" % text, flush=True)


def run(env, *args, input=None, show=True):
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print("$ p11certctl %s" % shown, flush=True)
    r = env.ctl(*args, input=input, lang=LANG)
    if show:
        sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stdout.write(r.stderr)
        raise SystemExit("p11certctl %s failed (exit %d)" % (args[0], r.returncode))
    return r.stdout


def busctl(env, *args):
    print("$ busctl call org.p11certd /org/p11certd org.p11certd1.Manager %s" % " ".join(args), flush=True)
    r = subprocess.run(["busctl", "--address=" + env.bus_address, "call", "org.p11certd", "/org/p11certd",
                        "org.p11certd1.Manager"] + list(args), capture_output=True, text=True)
    out = r.stdout if len(r.stdout) < 600 else r.stdout[:600] + " …\n"
    sys.stdout.write(out or r.stderr)


def expired_cert_on_token(env):
    """An agent's old certificate, expired last month, with its key on the token."""
    pub = env.put_keypair("eToken", "01", "agent certificate")
    ca = make_key()
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=400)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-42")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old Payment Network CA")]))
            .public_key(pub).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=365))
            .sign(ca, hashes.SHA256()))
    env.put_cert("eToken", cert, "01", "agent certificate")


def main():
    if not os.path.exists(CTL):
        raise SystemExit("p11certctl is not built")
    env = Env("p11certd-demo")
    try:
        secrets = os.path.join(env.tmp, "secrets")
        os.makedirs(secrets, mode=0o700)

        def secret_file(name, value):
            path = os.path.join(secrets, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, (value + "\n").encode())
            os.close(fd)
            return path

        say("Setting up: an eToken (SoftHSM) whose agent certificate has expired")
        env.add_token("eToken")
        expired_cert_on_token(env)
        env.start_bus()
        env.start_est(users={"agent-42": {"otps": ["7731-0042"]}})
        env.add_est_profile("network", subject="CN=${login},O=Payment Agents")
        env.start_daemon()
        print("private system bus: %s; p11certd running; EST CA at https://127.0.0.1:%d"
              % (env.bus_address, env.est_port))
        pin_file = secret_file("token.pin", PIN)

        say("Step 0. Which tokens are plugged in?")
        run(env, "tokens")
        busctl(env, "ListTokens")

        say("Step 1. The certificates on the token (the old one has expired)")
        run(env, "list")
        busctl(env, "ListCerts", "a{sv}", "0")
        old = [c for c in env.list_certs() if c["label"] == "agent certificate"][0]

        say("Step 2. Delete the old certificate with the token password "
            "(\"Certificate will be deleted. Continue?\" — answered yes)")
        run(env, "delete", old["uri"], "--yes", "--pin-file", pin_file)
        run(env, "list")

        say("Step 3. Enroll a new certificate onto the token from the built-in local CA (no server needed)")
        run(env, "enroll", "--ca", "local", "--storage", "token", "--token", "pkcs11:token=eToken",
            "--pin-file", pin_file, "--subject", "CN=agent-42,O=Lab", "--label", "lab certificate")

        say("Step 3b. Enroll from the network's EST CA with the login and the one-time password "
            "the manager gave (key generated on the token; it never leaves it)")
        otp_file = secret_file("otp", "7731-0042")
        run(env, "enroll", "--ca", "network", "--login", "agent-42", "--otp-file", otp_file,
            "--storage", "token", "--token", "pkcs11:token=eToken", "--pin-file", pin_file,
            "--label", "agent certificate")

        say("Step 4. The token now holds the new certificates, next to their keys")
        run(env, "list")
        print(env.pkcs11_tool("eToken", "-O").stdout)

        say("Storage type \"System\": a certificate kept by the service for this host (e.g. for nginx)")
        run(env, "enroll", "--ca", "local", "--storage", "system", "--name", "nginx",
            "--subject", "CN=shop.example")
        print("$ ls -l %s" % os.path.join(env.state_dir, "system", "nginx"))
        print(subprocess.run(["ls", "-l", os.path.join(env.state_dir, "system", "nginx")],
                             capture_output=True, text=True).stdout)

        say("Storage type \"File\": a password-protected PKCS#12 file for the user")
        p12 = os.path.join(env.tmp, "agent-42.p12")
        pw_file = secret_file("p12.pw", NEW_P12_PASSWORD)
        run(env, "enroll", "--ca", "local", "--storage", "file", "--output", p12, "--password-file", pw_file,
            "--subject", "CN=agent-42,O=Laptop")
        print("$ openssl pkcs12 -info -in agent-42.p12 -nokeys -passin file:…")
        r = subprocess.run(["openssl", "pkcs12", "-info", "-in", p12, "-nokeys", "-passin", "file:" + pw_file],
                           capture_output=True, text=True)
        print(r.stderr.strip())
        print("\n".join(line for line in r.stdout.splitlines() if line.startswith(("subject", "issuer"))))

        say("All certificates, every storage type")
        run(env, "list")
        say("Done: the agent's workflow ran end to end on real parts. Cleaning up.")
    finally:
        env.close()


if __name__ == "__main__":
    main()
