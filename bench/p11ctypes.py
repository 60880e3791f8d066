"""Minimal in-process PKCS#11 over ctypes (SoftHSM exports every C_ function),
in the style of tests/bulk_certs.py: enough to time key generation, signing
and object creation on a token without a process start."""
import ctypes
import hashlib

ULONG = ctypes.c_ulong
CKM_EC_KEY_PAIR_GEN = 0x1040
CKM_ECDSA = 0x1041          # SoftHSM 2.6 has no CKM_ECDSA_SHA256: hash, then sign
P256_OID = bytes.fromhex("06082a8648ce3d030107")
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_VALUE = 0x0, 0x1, 0x2, 0x3, 0x11
CKA_CERTIFICATE_TYPE, CKA_SUBJECT, CKA_ID, CKA_SENSITIVE = 0x80, 0x101, 0x102, 0x103
CKA_SIGN, CKA_VERIFY, CKA_EC_PARAMS = 0x108, 0x10A, 0x180
CKA_ENCRYPT, CKA_DECRYPT, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT = 0x104, 0x105, 0x121, 0x122
CKM_RSA_PKCS_KEY_PAIR_GEN = 0x0


class Attr(ctypes.Structure):
    _fields_ = [("type", ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", ULONG)]


class Mech(ctypes.Structure):
    _fields_ = [("mechanism", ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", ULONG)]


class TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("rest", ctypes.c_byte * 512)]


TRUE, FALSE = b"\x01", b"\x00"


def ulong(v):
    return v.to_bytes(ctypes.sizeof(ULONG), "little")


class Template:
    def __init__(self, pairs):
        self.keep = []
        attrs = []
        for t, d in pairs:
            buf = ctypes.create_string_buffer(d, len(d))
            self.keep.append(buf)
            attrs.append(Attr(t, ctypes.cast(buf, ctypes.c_void_p), len(d)))
        self.arr = (Attr * len(attrs))(*attrs)
        self.n = len(attrs)


class Token:
    def __init__(self, module, label, pin):
        self.lib = lib = ctypes.CDLL(module)
        assert lib.C_Initialize(None) == 0
        n = ULONG(0)
        lib.C_GetSlotList(1, None, ctypes.byref(n))
        slots = (ULONG * n.value)()
        lib.C_GetSlotList(1, slots, ctypes.byref(n))
        slot = None
        for s in slots:
            ti = TokenInfo()
            lib.C_GetTokenInfo(s, ctypes.byref(ti))
            if ti.label.rstrip(b" ") == label.encode():
                slot = s
        assert slot is not None, "token %s not found" % label
        self.sess = ULONG()
        assert lib.C_OpenSession(slot, 0x6, None, None, ctypes.byref(self.sess)) == 0
        pin = pin.encode()
        assert lib.C_Login(self.sess, 1, pin, len(pin)) == 0

    def keygen_p256(self, obj_id):
        pub = Template([(CKA_TOKEN, TRUE), (CKA_VERIFY, TRUE), (CKA_EC_PARAMS, P256_OID), (CKA_ID, obj_id)])
        priv = Template([(CKA_TOKEN, TRUE), (CKA_PRIVATE, TRUE), (CKA_SENSITIVE, TRUE), (CKA_SIGN, TRUE),
                         (CKA_ID, obj_id)])
        mech = Mech(CKM_EC_KEY_PAIR_GEN, None, 0)
        hpub, hpriv = ULONG(), ULONG()
        rv = self.lib.C_GenerateKeyPair(self.sess, ctypes.byref(mech), pub.arr, pub.n, priv.arr, priv.n,
                                        ctypes.byref(hpub), ctypes.byref(hpriv))
        assert rv == 0, hex(rv)
        return hpub.value, hpriv.value

    def keygen_rsa2048(self, obj_id):
        """RSA-2048 as the daemon makes it for SCEP (CKA_DECRYPT on the private key)."""
        pub = Template([(CKA_TOKEN, TRUE), (CKA_VERIFY, TRUE), (CKA_ENCRYPT, TRUE), (CKA_MODULUS_BITS, ulong(2048)),
                        (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"), (CKA_ID, obj_id)])
        priv = Template([(CKA_TOKEN, TRUE), (CKA_PRIVATE, TRUE), (CKA_SENSITIVE, TRUE), (CKA_SIGN, TRUE),
                         (CKA_DECRYPT, TRUE), (CKA_ID, obj_id)])
        mech = Mech(CKM_RSA_PKCS_KEY_PAIR_GEN, None, 0)
        hpub, hpriv = ULONG(), ULONG()
        rv = self.lib.C_GenerateKeyPair(self.sess, ctypes.byref(mech), pub.arr, pub.n, priv.arr, priv.n,
                                        ctypes.byref(hpub), ctypes.byref(hpriv))
        assert rv == 0, hex(rv)
        return hpub.value, hpriv.value

    def sign(self, hkey, data):
        data = hashlib.sha256(data).digest()
        mech = Mech(CKM_ECDSA, None, 0)
        rv = self.lib.C_SignInit(self.sess, ctypes.byref(mech), ULONG(hkey))
        assert rv == 0, "C_SignInit %s" % hex(rv)
        sig = ctypes.create_string_buffer(256)
        n = ULONG(256)
        rv = self.lib.C_Sign(self.sess, data, len(data), sig, ctypes.byref(n))
        assert rv == 0, hex(rv)
        return sig.raw[:n.value]

    def create_cert(self, der, subject_der, obj_id, label):
        t = Template([(CKA_CLASS, ulong(1)), (CKA_CERTIFICATE_TYPE, ulong(0)), (CKA_TOKEN, TRUE),
                      (CKA_ID, obj_id), (CKA_LABEL, label.encode()), (CKA_SUBJECT, subject_der),
                      (CKA_VALUE, der)])
        h = ULONG()
        rv = self.lib.C_CreateObject(self.sess, t.arr, t.n, ctypes.byref(h))
        assert rv == 0, hex(rv)
        return h.value

    def destroy(self, *handles):
        for h in handles:
            assert self.lib.C_DestroyObject(self.sess, ULONG(h)) == 0

    def destroy_id(self, obj_id):
        """Destroy every object with this CKA_ID (untimed cleanup)."""
        t = Template([(CKA_ID, obj_id)])
        assert self.lib.C_FindObjectsInit(self.sess, t.arr, t.n) == 0
        found = []
        buf = (ULONG * 16)()
        n = ULONG()
        while True:
            self.lib.C_FindObjects(self.sess, buf, 16, ctypes.byref(n))
            if not n.value:
                break
            found += list(buf[:n.value])
        self.lib.C_FindObjectsFinal(self.sess)
        self.destroy(*found)
        return len(found)

    def close(self):
        self.lib.C_Logout(self.sess)
        self.lib.C_CloseSession(self.sess)
        self.lib.C_Finalize(None)
