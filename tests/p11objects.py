"""Read a token back, independently of the daemon, through any PKCS#11
module (with its init arguments: pkcs11-tool cannot pass those, NSS softokn
needs them).  ctypes over C_GetFunctionList.

    p11objects.py MODULE TOKEN_LABEL [--init-args STR]      (PIN on stdin)

prints JSON {"login": "ok" | CKR name, "objects": [{"class", "id", "label"}]}
— the objects a user session sees (public ones only when the login failed).
"""
import ctypes
import json
import sys

ULONG = ctypes.c_ulong
FUNCS = ["C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo",
         "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
         "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState",
         "C_SetOperationState", "C_Login", "C_Logout", "C_CreateObject", "C_CopyObject", "C_DestroyObject",
         "C_GetObjectSize", "C_GetAttributeValue", "C_SetAttributeValue", "C_FindObjectsInit", "C_FindObjects",
         "C_FindObjectsFinal"]
CLASSES = {0: "data", 1: "certificate", 2: "public key", 3: "private key", 4: "secret key"}
CKA_CLASS, CKA_LABEL, CKA_ID = 0x0, 0x3, 0x102
CKR_NAMES = {0xa0: "CKR_PIN_INCORRECT", 0xa4: "CKR_PIN_LOCKED", 0x100: "CKR_USER_ALREADY_LOGGED_IN"}


class FunctionList(ctypes.Structure):
    _fields_ = [("version", ctypes.c_ubyte * 2)] + [(n, ctypes.c_void_p) for n in FUNCS]


class InitArgs(ctypes.Structure):
    _fields_ = [("create", ctypes.c_void_p), ("destroy", ctypes.c_void_p), ("lock", ctypes.c_void_p),
                ("unlock", ctypes.c_void_p), ("flags", ULONG), ("reserved", ctypes.c_char_p)]


class Attr(ctypes.Structure):
    _fields_ = [("type", ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", ULONG)]


class TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("rest", ctypes.c_byte * 512)]


class Module:
    def __init__(self, path, init_args=None):
        lib = ctypes.CDLL(path)
        fl = ctypes.POINTER(FunctionList)()
        assert lib.C_GetFunctionList(ctypes.byref(fl)) == 0
        self.f = fl.contents
        args = InitArgs(None, None, None, None, 2, init_args.encode() if init_args else None)   # OS locking
        rv = self.fn("C_Initialize", ctypes.c_void_p)(ctypes.byref(args))
        assert rv == 0, "C_Initialize: 0x%x" % rv

    def fn(self, name, *argtypes):
        return ctypes.CFUNCTYPE(ULONG, *argtypes)(getattr(self.f, name))

    def slot(self, label):
        n = ULONG(0)
        get = self.fn("C_GetSlotList", ctypes.c_ubyte, ctypes.c_void_p, ctypes.c_void_p)
        get(1, None, ctypes.byref(n))
        slots = (ULONG * max(n.value, 1))()
        get(1, slots, ctypes.byref(n))
        for s in slots[:n.value]:
            ti = TokenInfo()
            self.fn("C_GetTokenInfo", ULONG, ctypes.c_void_p)(s, ctypes.byref(ti))
            if ti.label.rstrip(b" \0").decode() == label:
                return s
        raise SystemExit("no token %r" % label)

    def attr(self, session, obj, kind):
        a = Attr(kind, None, 0)
        get = self.fn("C_GetAttributeValue", ULONG, ULONG, ctypes.c_void_p, ULONG)
        if get(session, obj, ctypes.byref(a), 1) != 0 or a.ulValueLen > 1 << 20:
            return b""
        buf = ctypes.create_string_buffer(a.ulValueLen or 1)
        a.pValue = ctypes.cast(buf, ctypes.c_void_p)
        get(session, obj, ctypes.byref(a), 1)
        return buf.raw[:a.ulValueLen]

    def objects(self, label, pin):
        session = ULONG(0)
        rv = self.fn("C_OpenSession", ULONG, ULONG, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            self.slot(label), 4, None, None, ctypes.byref(session))    # CKF_SERIAL_SESSION
        assert rv == 0, "C_OpenSession: 0x%x" % rv
        p = pin.encode()
        rv = self.fn("C_Login", ULONG, ULONG, ctypes.c_char_p, ULONG)(session, 1, p, len(p))
        login = "ok" if rv == 0 else CKR_NAMES.get(rv, "0x%x" % rv)
        self.fn("C_FindObjectsInit", ULONG, ctypes.c_void_p, ULONG)(session, None, 0)
        handles, batch, got = [], (ULONG * 64)(), ULONG(0)
        while True:
            self.fn("C_FindObjects", ULONG, ctypes.c_void_p, ULONG, ctypes.c_void_p)(
                session, batch, 64, ctypes.byref(got))
            handles += batch[:got.value]
            if got.value < 64:
                break
        self.fn("C_FindObjectsFinal", ULONG)(session)
        out = []
        for h in handles:
            klass = int.from_bytes(self.attr(session, h, CKA_CLASS) or b"\xff", sys.byteorder)
            out.append({"class": CLASSES.get(klass, str(klass)), "id": self.attr(session, h, CKA_ID).hex(),
                        "label": self.attr(session, h, CKA_LABEL).decode(errors="replace")})
        if login == "ok":
            self.fn("C_Logout", ULONG)(session)
        self.fn("C_CloseSession", ULONG)(session)
        return login, out


def main():
    argv = sys.argv[1:]
    init_args = None
    if "--init-args" in argv:
        i = argv.index("--init-args")
        init_args = argv[i + 1]
        del argv[i:i + 2]
    module, label = argv
    m = Module(module, init_args)
    login, objs = m.objects(label, sys.stdin.readline().rstrip("\n"))
    m.fn("C_Finalize", ctypes.c_void_p)(None)
    print(json.dumps({"login": login, "objects": objs}))


if __name__ == "__main__":
    main()
