#!/usr/bin/python3
"""A small SCEP (RFC 8894) server for p11certd's tests: what Debian's real
scepserver cannot be made to do — answer PENDING then SUCCESS, send garbage,
encrypt its reply to another key, sign it badly, be slow, fail with a chosen
failInfo, or announce chosen capabilities.

Plain HTTP on 127.0.0.1 (SCEP's security is in its messages).  A CA (RSA
2048) and an RA certificate are made in --dir on first start; CMS is built
and parsed with asn1crypto, the cryptography with python3-cryptography.
Misbehaviour is read from DIR/control.json on every request (counts are
decremented); every request is logged as a JSON line to DIR/requests.log.
See README.md.  Run with /usr/bin/python3 (Debian 12).
"""

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.parse

from asn1crypto import cms, core, x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding as sympad, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

OID = {"message_type": "2.16.840.1.113733.1.9.2", "pki_status": "2.16.840.1.113733.1.9.3",
       "fail_info": "2.16.840.1.113733.1.9.4", "sender_nonce": "2.16.840.1.113733.1.9.5",
       "recipient_nonce": "2.16.840.1.113733.1.9.6", "transaction_id": "2.16.840.1.113733.1.9.7"}
MSG_TYPES = {"3": "CertRep", "17": "RenewalReq", "19": "PKCSReq", "20": "CertPoll"}
FAIL_INFO = {"badAlg": "0", "badMessageCheck": "1", "badRequest": "2", "badTime": "3", "badCertId": "4"}
DEFAULT_CAPS = ["Renewal", "SHA-256", "AES", "DES3", "POSTPKIOperation", "SCEPStandard"]


def write_atomic(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def utcnow():
    return datetime.datetime.utcnow().replace(microsecond=0)


def make_cert(subject_cn, key, issuer_cert=None, issuer_key=None, ca=False, days=3650):
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p11certd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer = issuer_cert.subject if issuer_cert else name
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(utcnow() - datetime.timedelta(seconds=60))
         .not_valid_after(utcnow() + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), True)
    return b.sign(issuer_key or key, hashes.SHA256())


class Pki:
    def __init__(self, d):
        self.dir = d
        if not os.path.exists(os.path.join(d, "ra.key")):
            ca_key = rsa.generate_private_key(65537, 2048)
            ca = make_cert("SCEP test CA", ca_key, ca=True)
            ra_key = rsa.generate_private_key(65537, 2048)
            ra = make_cert("SCEP test RA", ra_key, ca, ca_key)
            for n, obj in (("ca", ca), ("ra", ra)):
                write_atomic(os.path.join(d, n + ".pem"), obj.public_bytes(serialization.Encoding.PEM))
            for n, k in (("ca", ca_key), ("ra", ra_key)):
                write_atomic(os.path.join(d, n + ".key"), k.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        load = lambda n: x509.load_pem_x509_certificate(open(os.path.join(d, n + ".pem"), "rb").read())
        key = lambda n: serialization.load_pem_private_key(open(os.path.join(d, n + ".key"), "rb").read(), None)
        self.ca, self.ca_key, self.ra, self.ra_key = load("ca"), key("ca"), load("ra"), key("ra")

    def issue(self, csr, seconds=86400):
        b = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.ca.subject)
             .public_key(csr.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(utcnow() - datetime.timedelta(seconds=60))
             .not_valid_after(utcnow() + datetime.timedelta(seconds=seconds))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        return b.sign(self.ca_key, hashes.SHA256())


def attr_values(signer_info):
    out = {}
    for a in signer_info["signed_attrs"]:
        v = a["values"][0]
        out[a["type"].dotted] = core.load(v.dump()).native if isinstance(v, core.Any) else v.native
    return out


def set_der(signed_attrs):
    """The DER of signed attributes as signed: a SET, not [0] IMPLICIT."""
    der = signed_attrs.dump(force=True)
    return b"\x31" + der[1:]


class Scep:
    def __init__(self, d, challenge):
        self.dir, self.pki, self.challenge = d, Pki(d), challenge
        self.lock = threading.Lock()
        self.used_challenges, self.pending = set(), {}

    # -- control / log
    def take(self, names):
        """The control file, and the first of `names` whose count is > 0
        (decremented)."""
        path = os.path.join(self.dir, "control.json")
        with self.lock:
            try:
                ctl = json.load(open(path))
            except (OSError, ValueError):
                ctl = {}
            hit = None
            for n in names:
                if int(ctl.get(n, 0) or 0) > 0:
                    ctl[n] -= 1
                    hit = n
                    break
            if hit:
                write_atomic(path, json.dumps(ctl).encode())
            return ctl, hit

    def log(self, rec):
        with self.lock, open(os.path.join(self.dir, "requests.log"), "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    # -- the request
    def open_request(self, der, rec):
        ci = cms.ContentInfo.load(der)
        sd = ci["content"]
        si = sd["signer_infos"][0]
        attrs = attr_values(si)
        signer = x509.load_der_x509_certificate(sd["certificates"][0].chosen.dump())
        content = sd["encap_content_info"]["content"].native or b""
        algo = si["digest_algorithm"]["algorithm"].native
        h = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}[algo]
        if attrs.get("1.2.840.113549.1.9.4") != hashlib.new(algo, content).digest():
            raise ValueError("message digest mismatch")
        signer.public_key().verify(si["signature"].native, set_der(si["signed_attrs"]), padding.PKCS1v15(), h)
        rec["message_type"] = MSG_TYPES.get(attrs.get(OID["message_type"]), attrs.get(OID["message_type"]))
        rec["digest"] = algo
        env = cms.ContentInfo.load(content)["content"]
        ri = env["recipient_infos"][0].chosen
        cek = self.pki.ra_key.decrypt(ri["encrypted_key"].native, padding.PKCS1v15())
        eci = env["encrypted_content_info"]
        alg = eci["content_encryption_algorithm"]
        name = alg["algorithm"].native
        rec["cipher"] = name
        iv = alg["parameters"].native
        algo_obj = algorithms.AES(cek) if name.startswith("aes") else algorithms.TripleDES(cek)
        dec = Cipher(algo_obj, modes.CBC(iv)).decryptor()
        padded = dec.update(eci["encrypted_content"].native) + dec.finalize()
        unpad = sympad.PKCS7(algo_obj.block_size).unpadder()
        inner = unpad.update(padded) + unpad.finalize()
        return attrs, signer, inner

    # -- the reply
    def cert_rep(self, attrs, recipient, status, fail=None, certs=None, ctl=None, switch=None):
        ctl = ctl or {}
        content = None
        if status == "0":
            degenerate = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
            target = recipient
            if switch == "wrong_recipient":
                other_key = rsa.generate_private_key(65537, 2048)
                target = make_cert("someone else", other_key)
            key_holder = target.public_key()
            if switch == "wrong_key":        # names our certificate, encrypted to another key
                key_holder = rsa.generate_private_key(65537, 2048).public_key()
            content = self.envelope(degenerate, target, key_holder, ctl.get("reply_cipher", "aes128_cbc"))
        ra_asn1 = ax509.Certificate.load(self.pki.ra.public_bytes(serialization.Encoding.DER))
        signed = [("content_type", "data"),
                  ("message_digest", hashlib.sha256(content or b"").digest()),
                  (OID["message_type"], core.PrintableString("3")),
                  (OID["pki_status"], core.PrintableString(status)),
                  (OID["transaction_id"], core.PrintableString(attrs[OID["transaction_id"]])),
                  (OID["recipient_nonce"], core.OctetString(attrs[OID["sender_nonce"]])),
                  (OID["sender_nonce"], core.OctetString(secrets.token_bytes(16)))]
        if fail is not None:
            signed.append((OID["fail_info"], core.PrintableString(fail)))
        sattrs = cms.CMSAttributes([cms.CMSAttribute({"type": t, "values": [v]}) for t, v in signed])
        sig = self.pki.ra_key.sign(set_der(sattrs), padding.PKCS1v15(), hashes.SHA256())
        if switch == "bad_signature":
            sig = bytes([sig[0] ^ 0x01]) + sig[1:]
        eci = {"content_type": "data"}
        if content is not None:
            eci["content"] = content
        sd = cms.SignedData({
            "version": "v1", "digest_algorithms": [{"algorithm": "sha256"}], "encap_content_info": eci,
            "certificates": [ra_asn1],
            "signer_infos": [{
                "version": "v1",
                "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value={
                    "issuer": ra_asn1.issuer, "serial_number": ra_asn1.serial_number}),
                "digest_algorithm": {"algorithm": "sha256"}, "signed_attrs": sattrs,
                "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"}, "signature": sig}]})
        return cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()

    def envelope(self, data, cert, public_key, cipher):
        asn = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        if cipher == "des":
            cek, iv = secrets.token_bytes(8), secrets.token_bytes(8)
            algo = algorithms.TripleDES(cek * 3)
        else:
            cek, iv = secrets.token_bytes(16), secrets.token_bytes(16)
            algo = algorithms.AES(cek)
        p = sympad.PKCS7(algo.block_size).padder()
        enc = Cipher(algo, modes.CBC(iv)).encryptor()
        ct = enc.update(p.update(data) + p.finalize()) + enc.finalize()
        ed = cms.EnvelopedData({
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo(name="ktri", value={
                "version": "v0",
                "rid": cms.RecipientIdentifier(name="issuer_and_serial_number", value={
                    "issuer": asn.issuer, "serial_number": asn.serial_number}),
                "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
                "encrypted_key": public_key.encrypt(cek, padding.PKCS1v15())})],
            "encrypted_content_info": {"content_type": "data",
                                       "content_encryption_algorithm": {"algorithm": cipher, "parameters": iv},
                                       "encrypted_content": ct}})
        return cms.ContentInfo({"content_type": "enveloped_data", "content": ed}).dump()

    def pki_operation(self, der, rec):
        ctl, switch = self.take(["error_500", "garbage", "slow", "wrong_recipient", "wrong_key", "bad_signature",
                                 "cert_other_key", "cert_other_ca"])
        rec["switch"] = switch
        if switch == "slow":
            sys.stderr.write("scepserver: holding PKIOperation for %s s\n" % ctl.get("slow_seconds", 10))
            sys.stderr.flush()
            time.sleep(float(ctl.get("slow_seconds", 10)))
        if switch == "error_500":
            return 500, "text/plain", b"simulated server error\n"
        if switch == "garbage":
            return 200, "application/x-pki-message", b"\x30\x03garbage, not a pkiMessage"
        attrs, signer, inner = self.open_request(der, rec)
        tid = attrs[OID["transaction_id"]]
        rec["transaction_id"] = tid
        mtype = rec["message_type"]
        if mtype in ("PKCSReq", "RenewalReq"):
            csr = x509.load_der_x509_csr(inner)
            if not csr.is_signature_valid:
                return self.reply(rec, attrs, signer, "2", FAIL_INFO["badMessageCheck"], ctl=ctl)
            rec["subject"] = csr.subject.rfc4514_string()
            if mtype == "PKCSReq":
                try:
                    chal = csr.attributes.get_attribute_for_oid(x509.oid.AttributeOID.CHALLENGE_PASSWORD).value
                    chal = chal.decode() if isinstance(chal, bytes) else chal
                except x509.AttributeNotFound:
                    chal = None
                rec["challenge_ok"] = ok = chal == self.challenge and chal not in self.used_challenges
                if not ok:
                    return self.reply(rec, attrs, signer, "2", FAIL_INFO["badRequest"], ctl=ctl)
                self.used_challenges.add(chal)
            if ctl.get("fail"):
                return self.reply(rec, attrs, signer, "2", FAIL_INFO[ctl["fail"]], ctl=ctl)
            _, pend = self.take(["pending"])
            if pend:
                self.pending[tid] = csr
                return self.reply(rec, attrs, signer, "3", ctl=ctl)
        elif mtype == "CertPoll":
            csr = self.pending.get(tid)
            if csr is None:
                return self.reply(rec, attrs, signer, "2", FAIL_INFO["badCertId"], ctl=ctl)
            _, pend = self.take(["pending"])
            if pend:
                return self.reply(rec, attrs, signer, "3", ctl=ctl)
            del self.pending[tid]
        else:
            return self.reply(rec, attrs, signer, "2", FAIL_INFO["badRequest"], ctl=ctl)
        if switch == "cert_other_key":       # a certificate, but for another key
            csr = x509.CertificateSigningRequestBuilder().subject_name(csr.subject).sign(
                rsa.generate_private_key(65537, 2048), hashes.SHA256())
        cert = self.pki.issue(csr)
        if switch == "cert_other_ca":        # the right key, signed by a CA nobody trusts
            other_key = rsa.generate_private_key(65537, 2048)
            cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.pki.ca.subject)
                    .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(utcnow() - datetime.timedelta(seconds=60))
                    .not_valid_after(utcnow() + datetime.timedelta(days=1))
                    .sign(other_key, hashes.SHA256()))
        rec["serial"] = format(cert.serial_number, "x")
        return self.reply(rec, attrs, signer, "0", certs=[cert], ctl=ctl, switch=switch)

    def reply(self, rec, attrs, signer, status, fail=None, certs=None, ctl=None, switch=None):
        rec["pki_status"] = {"0": "SUCCESS", "2": "FAILURE", "3": "PENDING"}[status]
        rec["fail_info"] = fail
        return 200, "application/x-pki-message", self.cert_rep(attrs, signer, status, fail, certs, ctl, switch)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("scepserver: %s\n" % (fmt % args))

    def do_GET(self):
        self.handle_op(None)

    def do_POST(self):
        self.handle_op(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def handle_op(self, body):
        scep = self.server.scep
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        op = (q.get("operation") or [""])[0]
        rec = {"time": time.time(), "method": self.command, "op": op, "status": None}
        try:
            if url.path != "/scep":
                status, ctype, data = 404, "text/plain", b"not found\n"
            elif op == "GetCACaps":
                ctl, _ = scep.take([])
                status, ctype, data = 200, "text/plain", "\n".join(ctl.get("caps", DEFAULT_CAPS)).encode()
            elif op == "GetCACert":
                status, ctype = 200, "application/x-x509-ca-ra-cert"
                data = pkcs7.serialize_certificates([scep.pki.ca, scep.pki.ra], serialization.Encoding.DER)
            elif op == "PKIOperation":
                der = body if body is not None else base64.b64decode((q.get("message") or [""])[0])
                status, ctype, data = scep.pki_operation(der, rec)
            else:
                status, ctype, data = 400, "text/plain", b"unknown operation\n"
        except Exception as e:          # a broken request: say so
            rec["error"] = repr(e)
            status, ctype, data = 400, "text/plain", ("bad request: %s\n" % e).encode()
        rec["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        scep.log(rec)


def main():
    p = argparse.ArgumentParser(description="SCEP test server")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready-file")
    p.add_argument("--challenge", default="Chall-1")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    server.scep = Scep(a.dir, a.challenge)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if a.ready_file:
        write_atomic(a.ready_file, b"%d\n" % server.server_address[1])
    sys.stderr.write("scepserver: listening on http://127.0.0.1:%d/scep\n" % server.server_address[1])
    while not stop.wait(1):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
