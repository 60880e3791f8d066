#!/usr/bin/python3
"""A minimal PC/SC client (the peer for bench/hotplug.py): blocks in
SCardGetStatusChange on one reader through libpcsclite (ctypes) and prints
`IN <t>` / `OUT <t>` with t = time.monotonic() (CLOCK_MONOTONIC, comparable
across processes) the moment the call returns with a card change.
Prints `READY` once it holds the reader's current state.
    pcsc_watch.py READER"""
import ctypes
import sys
import time

DWORD = ctypes.c_ulong       # pcsc-lite on Linux: DWORD is unsigned long
LONG = ctypes.c_long
SCARD_SCOPE_SYSTEM = 2
INFINITE = 0xFFFFFFFF
SCARD_STATE_CHANGED, SCARD_STATE_EMPTY, SCARD_STATE_PRESENT = 0x2, 0x10, 0x20


class ReaderState(ctypes.Structure):
    _fields_ = [("szReader", ctypes.c_char_p), ("pvUserData", ctypes.c_void_p),
                ("dwCurrentState", DWORD), ("dwEventState", DWORD), ("cbAtr", DWORD),
                ("rgbAtr", ctypes.c_ubyte * 33)]


def main():
    lib = ctypes.CDLL("libpcsclite.so.1")
    lib.SCardGetStatusChange.argtypes = [LONG, DWORD, ctypes.POINTER(ReaderState), DWORD]
    lib.SCardGetStatusChange.restype = LONG
    ctx = LONG()
    rv = lib.SCardEstablishContext(DWORD(SCARD_SCOPE_SYSTEM), None, None, ctypes.byref(ctx))
    if rv:
        sys.exit("SCardEstablishContext: 0x%x" % (rv & 0xffffffff))
    rs = ReaderState()
    rs.szReader = sys.argv[1].encode()
    rs.dwCurrentState = 0
    rv = lib.SCardGetStatusChange(ctx.value, 0, ctypes.byref(rs), 1)
    present = bool(rs.dwEventState & SCARD_STATE_PRESENT)
    rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED
    print("READY %s" % ("present" if present else "empty"), flush=True)
    while True:
        rv = lib.SCardGetStatusChange(ctx.value, INFINITE, ctypes.byref(rs), 1)
        t = time.monotonic()
        if rv & 0xffffffff == 0x8000000A:      # SCARD_E_TIMEOUT
            continue
        if rv:
            print("ERROR 0x%x" % (rv & 0xffffffff), flush=True)
            time.sleep(0.1)
            continue
        now = bool(rs.dwEventState & SCARD_STATE_PRESENT)
        if now != present:
            print("%s %.6f" % ("IN" if now else "OUT", t), flush=True)
            present = now
        rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED


if __name__ == "__main__":
    main()
