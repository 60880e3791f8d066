#!/usr/bin/python3
"""A small but real RFC 7030 (EST) server for p11certd's tests.

Serves /.well-known/est[/<label>]/{cacerts,simpleenroll,simplereenroll}
over TLS on 127.0.0.1, issues certificates from a test CA kept in --dir,
authenticates enrollments with HTTP Basic or Digest against one-time
passwords in DIR/users.json, re-enrollments with a TLS client certificate,
and misbehaves on request as told by DIR/control.json.  Every request is
logged as one JSON line in DIR/requests.log.  See README.md.

Run with /usr/bin/python3 (Debian 12, python3-cryptography 38).
"""

import argparse
import base64
import binascii
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import traceback

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REALM = "est"
MAX_BODY = 64 * 1024
NONCE_LIFETIME = 300          # seconds a Digest nonce stays valid
PATH_RE = re.compile(
    r"^/\.well-known/est/(?:(?P<label>[^/]+)/)?"
    r"(?P<op>cacerts|simpleenroll|simplereenroll|csrattrs|serverkeygen)$")

CT_PKCS7 = "application/pkcs7-mime"
CT_PKCS7_CERTS = "application/pkcs7-mime; smime-type=certs-only"
CT_PKCS10 = "application/pkcs10"

# Misbehaviour switches that replace the normal answer, in priority order:
# one request uses at most one of them (plus "slow", which only delays).
ACTION_SWITCHES = ("close_connection", "error_500", "accepted_202",
                   "garbage_base64", "wrong_content_type", "wrong_key",
                   "other_ca")
CACERTS_SWITCHES = ("close_connection", "error_500")


class HttpError(Exception):
    """Ends a request with an error status (and optional headers)."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class CloseConnection(Exception):
    """Ends a request by closing the socket without a reply."""


# ---------------------------------------------------------------- files

def utcnow():
    return datetime.datetime.utcnow().replace(microsecond=0)


def write_atomic(path, data, mode=0o644):
    """Write bytes to path via a temporary file and rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                               prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path, obj):
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n")
                 .encode())


def read_json(path, default):
    """Parse a JSON file; a missing file gives `default`.

    A broken file is a test bug: the request fails with 500 saying so."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise HttpError(500, "estserver: invalid %s: %s"
                        % (os.path.basename(path), e))


def b64_lines(der, width=64, eol="\n"):
    """Base64 with a line break every `width` characters (RFC 7030 4.2.3)."""
    text = base64.b64encode(der).decode("ascii")
    return "".join(text[i:i + width] + eol
                   for i in range(0, len(text), width)).encode("ascii")


# ---------------------------------------------------------------- PKI

def new_ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name, days=3650):
    key = new_ec_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p11certd tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = utcnow()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=60))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier
                           .from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def leaf_key_usage():
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        key_cert_sign=False, crl_sign=False, encipher_only=False,
        decipher_only=False)


def sign_leaf(ca_key, ca_cert, subject, public_key, seconds, eku,
              san=None):
    """Issue an end-entity certificate from (ca_key, ca_cert)."""
    now = utcnow()
    ca_ski = ca_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(seconds=60))
               .not_valid_after(now + datetime.timedelta(seconds=seconds))
               .add_extension(x509.BasicConstraints(ca=False,
                                                    path_length=None),
                              critical=True)
               .add_extension(leaf_key_usage(), critical=True)
               .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                   public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier
                              .from_issuer_subject_key_identifier(ca_ski),
                              critical=False))
    if san is not None:
        builder = builder.add_extension(san.value, critical=san.critical)
    return builder.sign(ca_key, hashes.SHA256())


def signed_by(cert, issuer_cert):
    """True if `cert` was issued and signed by `issuer_cert`."""
    if cert.issuer != issuer_cert.subject:
        return False
    pub = issuer_cert.public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes,
                       padding.PKCS1v15(), cert.signature_hash_algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True


class Pki:
    """The CA, the TLS server certificate and the unrelated CA in DIR."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_key, self.ca_cert = self._load_or_make_ca(
            "ca", "p11certd test EST CA")
        self.other_key, self.other_cert = self._load_or_make_ca(
            "other-ca", "p11certd unrelated test CA")
        self._ensure_server_cert()

    def path(self, name):
        return os.path.join(self.dir, name)

    def _load_or_make_ca(self, stem, common_name):
        pem, keyfile = self.path(stem + ".pem"), self.path(stem + ".key")
        if not (os.path.exists(pem) and os.path.exists(keyfile)):
            key, cert = make_ca(common_name)
            write_atomic(keyfile, key_pem(key), 0o600)
            write_atomic(pem, cert_pem(cert))
        with open(pem, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(keyfile, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        return key, cert

    def _ensure_server_cert(self):
        pem, keyfile = self.path("server.pem"), self.path("server.key")
        if os.path.exists(pem) and os.path.exists(keyfile):
            return
        key = new_ec_key()
        san = x509.Extension(
            x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False,
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        cert = sign_leaf(self.ca_key, self.ca_cert, subject, key.public_key(),
                         3650 * 86400, ExtendedKeyUsageOID.SERVER_AUTH, san)
        write_atomic(keyfile, key_pem(key), 0o600)
        write_atomic(pem, cert_pem(cert))

    def cacerts_der(self):
        return pkcs7.serialize_certificates([self.ca_cert],
                                            serialization.Encoding.DER)

    def issue(self, csr, seconds, wrong_key=False, other_ca=False):
        """Issue a client certificate for a (verified) CSR."""
        try:
            san = csr.extensions.get_extension_for_class(
                x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            san = None
        public_key = (new_ec_key().public_key() if wrong_key
                      else csr.public_key())
        ca_key, ca_cert = ((self.other_key, self.other_cert) if other_ca
                           else (self.ca_key, self.ca_cert))
        return sign_leaf(ca_key, ca_cert, csr.subject, public_key, seconds,
                         ExtendedKeyUsageOID.CLIENT_AUTH, san)

    def check_client_cert(self, cert):
        """None if the client certificate is acceptable, else a reason."""
        if not signed_by(cert, self.ca_cert):
            return "client certificate not issued by this CA"
        now = datetime.datetime.utcnow()
        if not cert.not_valid_before <= now <= cert.not_valid_after:
            return "client certificate expired or not yet valid"
        return None


# ---------------------------------------------------------------- state

class State:
    """users.json, control.json and requests.log, under one lock.

    The lock is a thread lock plus flock(DIR/.lock), so a test that edits
    control.json while requests are in flight can take the same flock."""

    def __init__(self, directory):
        self.dir = directory
        self.users_path = os.path.join(directory, "users.json")
        self.control_path = os.path.join(directory, "control.json")
        self.log_path = os.path.join(directory, "requests.log")
        self.lock_path = os.path.join(directory, ".lock")
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self):
        with self._thread_lock, open(self.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # control.json
    def control(self):
        with self.locked():
            return read_json(self.control_path, {})

    def take_switches(self, op, control_names):
        """Use up the switches for one request.

        Returns (delay_seconds, action_name_or_None, control)."""
        with self.locked():
            control = read_json(self.control_path, {})
            delay, action, changed = 0, None, False
            if op != "cacerts" and int(control.get("slow", 0)) > 0:
                control["slow"] = int(control["slow"]) - 1
                delay = float(control.get("slow_seconds", 10))
                changed = True
            for name in control_names:
                if int(control.get(name, 0)) > 0:
                    control[name] = int(control[name]) - 1
                    action, changed = name, True
                    break
            if changed:
                write_json_atomic(self.control_path, control)
            return delay, action, control

    # users.json
    def unused_otps(self, login):
        with self.locked():
            users = read_json(self.users_path, {})
        entry = users.get(login)
        if not isinstance(entry, dict):
            return []
        return list(entry.get("otps", []))

    def consume_otp(self, login, otp):
        """Mark an OTP used; False if it was used meanwhile."""
        with self.locked():
            users = read_json(self.users_path, {})
            entry = users.get(login) or {}
            otps = entry.get("otps", [])
            if otp not in otps:
                return False
            otps.remove(otp)
            entry.setdefault("used", []).append(otp)
            write_json_atomic(self.users_path, users)
            return True

    # requests.log
    def log(self, record):
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.locked(), open(self.log_path, "a") as f:
            f.write(line)


class DigestNonces:
    """Nonces handed out in Digest challenges, with their last nc."""

    def __init__(self):
        self._lock = threading.Lock()
        self._nonces = {}
        self.opaque = secrets.token_hex(16)

    def new(self):
        nonce = secrets.token_hex(16)
        with self._lock:
            now = time.monotonic()
            for n, (born, _) in list(self._nonces.items()):
                if now - born > NONCE_LIFETIME:
                    del self._nonces[n]
            self._nonces[nonce] = (now, 0)
        return nonce

    def known(self, nonce):
        with self._lock:
            entry = self._nonces.get(nonce)
            return (entry is not None
                    and time.monotonic() - entry[0] <= NONCE_LIFETIME)

    def use(self, nonce, nc):
        """Accept nonce count `nc` once and only in increasing order."""
        with self._lock:
            entry = self._nonces.get(nonce)
            if entry is None or nc <= entry[1]:
                return False
            self._nonces[nonce] = (entry[0], nc)
            return True


def parse_auth_params(text):
    """Parse `k=v, k="quoted"` pairs of an Authorization header."""
    params = {}
    for m in re.finditer(r'([A-Za-z0-9_*-]+)\s*=\s*'
                         r'("(?:[^"\\]|\\.)*"|[^,\s]*)', text):
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m.group(1).lower()] = value
    return params


def md5_hex(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def digest_response(params, method, password):
    ha1 = md5_hex(f"{params['username']}:{REALM}:{password}")
    ha2 = md5_hex(f"{method}:{params['uri']}")
    return md5_hex(f"{ha1}:{params['nonce']}:{params['nc']}:"
                   f"{params['cnonce']}:{params['qop']}:{ha2}")


# ---------------------------------------------------------------- HTTP

class EstHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "p11certd-test-estserver/1"
    timeout = 60

    # -- connection set-up: TLS handshake in the worker thread

    def setup(self):
        self.tls_ok = False
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
            self.tls_ok = True
        except (ssl.SSLError, OSError) as e:
            self.server.state.log({
                "time": time.time(), "event": "tls-handshake-failed",
                "error": str(e)})
        super().setup()

    def handle(self):
        if self.tls_ok:
            super().handle()

    def log_message(self, fmt, *args):
        sys.stderr.write("estserver: %s %s\n" % (self.address_string(),
                                                 fmt % args))

    # -- dispatch

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        path = self.path.split("?", 1)[0]
        self.record = {"time": time.time(), "method": method, "path": path,
                       "status": None, "login": None, "auth": None,
                       "client_cert": self.client_cert_der() is not None,
                       "switch": None,
                       # the TCP connection (client port): shows reuse
                       "peer_port": self.client_address[1]}
        self.control = {}
        try:
            body = self.read_body()
            self.route(method, path, body)
        except HttpError as e:
            self.send_text(e.status, e.message + "\n", e.headers)
        except CloseConnection:
            self.drop_connection()
        except Exception as e:              # a bug here: say so loudly
            traceback.print_exc()
            self.record["error"] = repr(e)
            self.send_text(500, "estserver internal error\n")
        finally:
            elapsed = time.time() - self.record["time"]
            self.record["duration"] = round(elapsed, 3)
            self.server.state.log(self.record)

    def route(self, method, path, body):
        m = PATH_RE.match(path)
        if not m or m.group("op") in ("csrattrs", "serverkeygen"):
            raise HttpError(404, "not found")
        op, self.record["label"] = m.group("op"), m.group("label")
        self.record["op"] = op
        wanted = "GET" if op == "cacerts" else "POST"
        if method != wanted:
            raise HttpError(405, "use " + wanted, [("Allow", wanted)])
        if op == "cacerts":
            self.cacerts()
        else:
            self.enroll(op, body)

    # -- request body

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, "request too large")
        return self.rfile.read(length) if length else b""

    def read_chunked(self):
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass                     # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()
            if len(body) > MAX_BODY:
                self.close_connection = True
                raise HttpError(413, "request too large")

    # -- replies

    def send_body(self, status, ctype, body, headers=()):
        self.record["status"] = status
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_text(self, status, text, headers=()):
        self.send_body(status, "text/plain; charset=utf-8", text.encode(),
                       headers)

    def send_pkcs7(self, ctype, der):
        eol = "\r\n" if self.control.get("crlf") else "\n"
        self.send_body(200, ctype, b64_lines(der, eol=eol),
                       [("Content-Transfer-Encoding", "base64")])

    def drop_connection(self):
        """Close the TCP connection with no HTTP reply (and no TLS alert)."""
        self.record["status"] = None
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)

    # -- TLS client certificate

    def client_cert_der(self):
        return self.request.getpeercert(binary_form=True)

    def client_cert(self):
        der = self.client_cert_der()
        return x509.load_der_x509_certificate(der) if der else None

    # -- endpoints

    def cacerts(self):
        self.control = self.server.state.control()
        names = (CACERTS_SWITCHES if self.control.get("apply_to_cacerts")
                 else ())
        _, action, self.control = self.server.state.take_switches(
            "cacerts", names)
        self.record["switch"] = action
        if action == "close_connection":
            raise CloseConnection()
        if action == "error_500":
            raise HttpError(500, "simulated server error")
        self.send_pkcs7(CT_PKCS7, self.server.pki.cacerts_der())

    def enroll(self, op, body):
        self.control = self.server.state.control()
        if op == "simplereenroll":
            login, otp = self.authenticate_client_cert(), None
            if self.control.get("reenroll_auth") == "basic":
                # a CA that wants an HTTP login on top of the certificate
                self.record["auth"] = "tls+basic"
                if not self.headers.get("Authorization", "").lower() \
                        .startswith("basic "):
                    raise HttpError(401, "simplereenroll needs a login too",
                                    [("WWW-Authenticate",
                                      'Basic realm="%s"' % REALM)])
        else:
            login, otp = self.authenticate_password()
        csr = self.parse_csr(body)
        if op == "simplereenroll":
            self.check_same_subject(csr)
        delay, action, self.control = self.server.state.take_switches(
            op, ACTION_SWITCHES)
        self.record["switch"] = action
        if delay:
            self.record["slow_seconds"] = delay
            # tests wait for this line: the request (TLS handshake included)
            # is in, the client is now only waiting for the reply
            sys.stderr.write("estserver: holding %s for %g s\n" % (op, delay))
            sys.stderr.flush()
            self.sleep_while_client_waits(delay)
        self.answer_enroll(action, csr, login, otp)

    def answer_enroll(self, action, csr, login, otp):
        if action == "close_connection":
            raise CloseConnection()
        if action == "error_500":
            raise HttpError(500, "simulated server error")
        if action == "accepted_202":
            retry = int(self.control.get("retry_after", 1))
            if self.control.get("strict") and retry < 60:
                # like the strict server: a manual-approval delay under 60 s
                # is refused by its configuration, so it answers 3600
                self.record["note"] = "retry_after %d under 60 s refused" % retry
                retry = 3600
            retry = str(retry)
            self.send_body(202, None, b"", [("Retry-After", retry)])
            return
        if action == "garbage_base64":
            self.send_body(200, CT_PKCS7_CERTS, b"%%% not base64 %%%\n",
                           [("Content-Transfer-Encoding", "base64")])
            return
        if action == "wrong_content_type":
            self.send_body(200, "text/html; charset=utf-8",
                           b"<html><body><h1>Welcome</h1></body></html>\n")
            return
        cert = self.server.pki.issue(csr, self.server.validity,
                                     wrong_key=(action == "wrong_key"),
                                     other_ca=(action == "other_ca"))
        # Only a correct issuance uses up the one-time password.
        if otp is not None and action is None:
            if not self.server.state.consume_otp(login, otp):
                raise self.unauthorized("one-time password already used")
        self.record["serial"] = format(cert.serial_number, "x")
        self.send_pkcs7(CT_PKCS7_CERTS, pkcs7.serialize_certificates(
            [cert], serialization.Encoding.DER))

    def sleep_while_client_waits(self, seconds):
        """Sleep; give up (no reply, OTP kept) if the client hung up."""
        time.sleep(seconds)
        readable, _, _ = select.select([self.request], [], [], 0)
        if readable and not self.request.pending():
            self.record["note"] = "client went away while slow"
            raise CloseConnection()

    # -- CSR

    def parse_csr(self, body):
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != CT_PKCS10:
            raise HttpError(415, "Content-Type must be " + CT_PKCS10)
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, "body is not base64")
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            raise HttpError(400, "body is not a DER PKCS#10 request")
        if not csr.is_signature_valid:
            raise HttpError(400, "CSR signature does not verify")
        self.record["csr_sha256"] = hashlib.sha256(der).hexdigest()
        self.record["subject"] = csr.subject.rfc4514_string()
        return csr

    def check_same_subject(self, csr):
        cert = self.client_cert()
        if csr.subject != cert.subject:
            raise HttpError(400, "CSR subject %r does not match the client "
                            "certificate subject %r" % (
                                csr.subject.rfc4514_string(),
                                cert.subject.rfc4514_string()))

    # -- authentication

    def authenticate_client_cert(self):
        self.record["auth"] = "tls"
        cert = self.client_cert()
        if cert is None:
            raise HttpError(403, "simplereenroll needs a TLS client "
                            "certificate")
        reason = self.server.pki.check_client_cert(cert)
        if reason:
            raise HttpError(403, reason)
        self.record["client_subject"] = cert.subject.rfc4514_string()
        return None

    def auth_mode(self):
        return self.control.get("auth") or (
            "digest" if self.server.digest else "basic")

    def authenticate_password(self):
        """Return (login, otp) or raise 401."""
        mode = self.auth_mode()
        self.record["auth"] = mode
        header = self.headers.get("Authorization", "")
        scheme, _, rest = header.partition(" ")
        self.record["credentials"] = scheme.lower() or None
        if mode == "digest" and scheme.lower() == "basic" and \
                self.control.get("strict"):
            # the strict server: Basic credentials get a bare 401, only a
            # request without credentials gets the Digest challenge
            with contextlib.suppress(binascii.Error, ValueError):
                self.record["login"] = base64.b64decode(
                    rest.strip()).decode("utf-8").partition(":")[0]
            raise HttpError(401, "Basic credentials are not accepted")
        if mode == "digest" and scheme.lower() == "digest":
            return self.check_digest(parse_auth_params(rest))
        if mode == "basic" and scheme.lower() == "basic":
            return self.check_basic(rest.strip())
        raise self.unauthorized("authentication required")

    def check_basic(self, token):
        try:
            login, sep, otp = (base64.b64decode(token, validate=True)
                               .decode("utf-8").partition(":"))
        except (binascii.Error, ValueError):
            raise self.unauthorized("malformed Basic credentials")
        self.record["login"] = login
        if not sep or otp not in self.server.state.unused_otps(login):
            raise self.unauthorized("wrong login or one-time password")
        return login, otp

    def check_digest(self, params):
        needed = ("username", "nonce", "uri", "response", "qop", "nc",
                  "cnonce")
        if any(k not in params for k in needed):
            raise self.unauthorized("incomplete Digest credentials")
        login = params["username"]
        self.record["login"] = login
        if params.get("algorithm", "MD5").upper() != "MD5" or \
                params["qop"] != "auth" or params.get("realm") != REALM:
            raise self.unauthorized("unsupported Digest parameters")
        if params["uri"] != self.path:
            raise HttpError(400, "Digest uri does not match request")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", params["nc"]):
            raise self.unauthorized("malformed nonce count")
        if not self.server.nonces.known(params["nonce"]):
            raise self.unauthorized("stale nonce", stale=True)
        for otp in self.server.state.unused_otps(login):
            expected = digest_response(params, self.command, otp)
            if hmac.compare_digest(expected, params["response"].lower()):
                if not self.server.nonces.use(params["nonce"],
                                              int(params["nc"], 16)):
                    raise self.unauthorized("nonce count replayed")
                return login, otp
        raise self.unauthorized("wrong login or one-time password")

    def unauthorized(self, message, stale=False):
        if self.auth_mode() == "digest":
            challenge = ('Digest realm="%s", qop="auth", algorithm=MD5, '
                         'nonce="%s", opaque="%s"' % (
                             REALM, self.server.nonces.new(),
                             self.server.nonces.opaque))
            if stale:
                challenge += ", stale=true"
        else:
            challenge = 'Basic realm="%s"' % REALM
        return HttpError(401, message, [("WWW-Authenticate", challenge)])


class EstServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory, port, validity, digest):
        self.pki = Pki(directory)
        self.state = State(directory)
        self.nonces = DigestNonces()
        self.validity, self.digest = validity, digest
        self.tls = self._tls_context()
        super().__init__(("127.0.0.1", port), EstHandler)

    def _tls_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.pki.path("server.pem"),
                            self.pki.path("server.key"))
        ctx.load_verify_locations(self.pki.path("ca.pem"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def server_bind(self):
        # Skip HTTPServer's reverse DNS lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        # Replies go out as two writes (headers, body): without NODELAY,
        # Nagle's algorithm holds the second until the client's delayed ACK
        # of the first (~40 ms per reply), and a benchmark measures that.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake runs in the worker thread (EstHandler.setup).
        return self.tls.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), addr


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description="RFC 7030 EST test server")
    p.add_argument("--dir", required=True,
                   help="state directory (CA, users.json, control.json)")
    p.add_argument("--port", type=int, default=0,
                   help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--ready-file",
                   help="write the port number here once listening")
    p.add_argument("--validity", type=int, default=86400,
                   help="lifetime of issued certificates in seconds")
    p.add_argument("--digest", action="store_true",
                   help="HTTP Digest (MD5, qop=auth) instead of Basic")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    server = EstServer(args.dir, args.port, args.validity, args.digest)
    port = server.server_address[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if args.ready_file:
        write_atomic(args.ready_file, b"%d\n" % port)
    sys.stderr.write("estserver: listening on https://127.0.0.1:%d/ "
                     "(dir %s)\n" % (port, args.dir))
    while not stop.wait(1):
        pass
    server.shutdown()
    server.server_close()
    sys.stderr.write("estserver: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
