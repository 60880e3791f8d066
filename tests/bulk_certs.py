"""Test data setup on a SoftHSM token through ctypes + C_CreateObject:
  bulk_certs.py MODULE LABEL PIN TMP COUNT         N certificates in one session
                                                   (pkcs11-tool per object is slow)
  bulk_certs.py MODULE LABEL PIN RAWFILE raw ID OBJLABEL
                                                   one certificate object whose
                                                   CKA_VALUE is the file's bytes as is
                                                   (pkcs11-tool refuses garbage)"""
import ctypes
import datetime
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

module, label, pin = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
raw = len(sys.argv) > 5 and sys.argv[5] == "raw"
count = 1 if raw else int(sys.argv[5])

ULONG = ctypes.c_ulong
lib = ctypes.CDLL(module)
flist = ctypes.c_void_p()
assert lib.C_GetFunctionList(ctypes.byref(flist)) == 0
# Use the exported functions directly (SoftHSM exports them all).
assert lib.C_Initialize(None) == 0
n = ULONG(0)
lib.C_GetSlotList(1, None, ctypes.byref(n))
slots = (ULONG * n.value)()
lib.C_GetSlotList(1, slots, ctypes.byref(n))


class TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("rest", ctypes.c_byte * 512)]


slot = None
for s in slots:
    ti = TokenInfo()
    lib.C_GetTokenInfo(s, ctypes.byref(ti))
    if ti.label.rstrip(b" ") == label:
        slot = s
assert slot is not None, "token not found"
sess = ULONG()
assert lib.C_OpenSession(slot, 0x6, None, None, ctypes.byref(sess)) == 0
assert lib.C_Login(sess, 1, pin, len(pin)) == 0


class Attr(ctypes.Structure):
    _fields_ = [("type", ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", ULONG)]


def attr(t, data):
    buf = ctypes.create_string_buffer(data, len(data))
    return Attr(t, ctypes.cast(buf, ctypes.c_void_p), len(data)), buf


key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
for i in range(count):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bulk %03d" % i)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30 + i)).sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    obj_id, obj_label = i.to_bytes(2, "big"), ("bulk %03d" % i).encode()
    if raw:
        der = open(sys.argv[4], "rb").read()
        obj_id, obj_label = bytes.fromhex(sys.argv[6]), sys.argv[7].encode()
    keep = []
    attrs = []
    for t, d in ((0x0, (1).to_bytes(8, "little")),          # CKA_CLASS = CKO_CERTIFICATE
                 (0x80, (0).to_bytes(8, "little")),         # CKA_CERTIFICATE_TYPE = X.509
                 (0x1, b"\x01"),                            # CKA_TOKEN
                 (0x102, obj_id),                           # CKA_ID
                 (0x3, obj_label),                          # CKA_LABEL
                 (0x101, name.public_bytes()),              # CKA_SUBJECT
                 (0x11, der)):                              # CKA_VALUE
        a, b = attr(t, d)
        attrs.append(a)
        keep.append(b)
    arr = (Attr * len(attrs))(*attrs)
    h = ULONG()
    rv = lib.C_CreateObject(sess, arr, len(attrs), ctypes.byref(h))
    assert rv == 0, hex(rv)
lib.C_Logout(sess)
lib.C_CloseSession(sess)
lib.C_Finalize(None)
