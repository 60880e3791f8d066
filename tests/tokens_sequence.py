"""The PKCS#11 calls each daemon operation makes, distilled from an OpenSC
pkcs11-spy log (test_modules.py records one on SoftHSM), and the check that
docs/tokens.md shows exactly that.

Distilled: calls are grouped by session (C_OpenSession … C_CloseSession),
calls outside a session (module, slot and token information) form a group
of their own;
each session becomes its list of distinct calls in first-use order — the
function, the mechanism, the attribute types of templates (with values only
where they are symbolic: CK_BBOOL, CKO_, CKC_, CKK_, CKU_), a return value
other than CKR_OK — so the number of objects on the token, handles, ids and
timings do not show.  Each operation lists its distinct groups in
first-use order.

    tokens_sequence.py --update FILE   puts FILE (a distilled text the
                                       failed check wrote) into docs/tokens.md
"""
import os
import re
import sys

SRC = os.environ.get("P11C_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(SRC, "docs", "tokens.md")
BEGIN = "<!-- BEGIN recorded PKCS#11 sequence (tests/tokens_sequence.py) -->"
END = "<!-- END recorded PKCS#11 sequence -->"
TITLES = {
    "start": "Daemon start: module, slots, tokens and their certificates",
    "enroll-local": "Enroll onto the token from the local CA",
    "delete": "DeleteCert (certificate and its keys)",
    "enroll-est": "Enroll onto the token over EST",
    "renew": "Renew over EST, TLS client authentication signed by the token key",
    "wrong-pin": "A wrong PIN (Enroll)",
    "change-pin": "ChangePin",
    "token-error": "A token error while writing the certificate (the key is removed)",
}
SYMBOLIC = re.compile(r"^(True|False|CK[OCKU]_\w+)$")


def snap(data, offset):
    """The start of the first call at or after @offset (a mark taken while
    the module was writing a call belongs to the call's start)"""
    m = re.compile(r"^\d+: C_", re.M).search(data, min(offset, len(data)))
    return m.start() if m else len(data)


def describe(fn, lines):
    """(session handle or None, the distilled call)"""
    session, parts, rv, template = None, [fn], None, None
    for line in lines:
        m = re.match(r"^\[(in|out)\] (\*?\w+)(?:->(\w+))? = (\S+)", line)
        if m:
            template = None
            name, value = m.group(2), m.group(4)
            if name in ("hSession", "*phSession"):
                session = value
            elif m.group(3) == "type" or name == "userType":     # pMechanism->type
                parts.append(value)
            elif name == "flags" and fn == "C_OpenSession":
                parts.append("rw" if int(value, 16) & 2 else "ro")
            elif name == "tokenPresent":
                parts.append("tokenPresent=%d" % int(value, 16))
            continue
        m = re.match(r"^\[(in|out)\] (\w+)\[\d*\]: $", line)
        if m:
            template = None
            if m.group(1) == "in" and m.group(2).endswith("Template"):
                template = [m.group(2)[1:].replace("Template", "").replace("KeyT", "Key")]
                parts.append(template)
            continue
        m = re.match(r"^\s+(CKF_\w+)$", line)
        if m and fn == "C_Initialize":
            parts.append(m.group(1))
            continue
        m = re.match(r"^    (CKA_\w+)\s+(\S+)?", line)
        if m and template is not None:
            value = m.group(2) or ""
            template.append(m.group(1) + ("=" + value if SYMBOLIC.match(value) else ""))
            continue
        m = re.match(r"^Returned:\s+\d+ (\w+)", line)
        if m and m.group(1) != "CKR_OK":
            rv = m.group(1)
    text = " ".join(p if isinstance(p, str) else "%s{%s}" % (p[0], " ".join(p[1:])) for p in parts)
    return session, text + (" -> " + rv if rv else "")


def canonical(transcript):
    """Runs of C_GetAttributeValue sorted: the order in which a session
    first reads attributes depends on the objects on the token."""
    out, run = [], []
    for line in transcript + [None]:
        if line is not None and line.startswith("C_GetAttributeValue"):
            run.append(line)
            continue
        out += sorted(run) + ([line] if line is not None else [])
        run = []
    return "\n".join(out)


def distill(log, marks):
    """The distilled Markdown for a spy log and the @marks [(operation or
    None, offset)] taken while it was written: an operation owns the
    sessions opened from its mark to the next mark, and the calls outside
    sessions made in that stretch.  Read-only sessions without a login (the
    daemon's certificate list, read again after every change and at times
    of its own choosing) form one section of their own."""
    with open(log, encoding="utf-8", errors="replace") as f:
        data = f.read()
    bounds = sorted(snap(data, off) for _, off in marks)

    def owner(offset):
        op = None
        for (name, _), b in zip(sorted(marks, key=lambda m: snap(data, m[1])), bounds):
            if b <= offset:
                op = name
        return op

    ops, listing, sessions, pos = {}, [], {}, 0
    for m in re.finditer(r"^\d+: (C_\w+)$", data, re.M):
        pos = m.start()
        nxt = re.compile(r"^\d+: C_", re.M).search(data, m.end())
        fn, lines = m.group(1), data[m.end():nxt.start() if nxt else len(data)].splitlines()
        session, call = describe(fn, lines)
        if session is None:
            op = owner(pos)
            if op is not None and call not in ops.setdefault(op, {"": [], "s": []})[""]:
                ops[op][""].append(call)
            continue
        if fn == "C_OpenSession":
            sessions[session] = (owner(pos), [])
        if session not in sessions:
            continue
        op, calls_ = sessions[session]
        if call not in calls_:
            calls_.append(call)
        if fn == "C_CloseSession":
            del sessions[session]
            t = canonical(calls_)
            if calls_[0] == "C_OpenSession ro" and not any(c.startswith("C_Login") for c in calls_):
                if op != "start" and t not in listing:
                    listing.append(t)
                if op != "start":
                    continue
            if op is not None and t not in ops.setdefault(op, {"": [], "s": []})["s"]:
                ops[op]["s"].append(t)
    out = []

    def section(title, outside, transcripts):
        out.append("### %s\n" % title)
        if outside:
            out.append("Outside a session:\n\n```\n%s\n```\n" % "\n".join(outside))
        for n, t in enumerate(transcripts, 1):
            out.append("Session %d:\n\n```\n%s\n```\n" % (n, t))

    for op, title in TITLES.items():
        if op in ops:
            section(title, ops[op][""], ops[op]["s"])
    section("Listing certificates (ListCerts, after every change)", [], listing)
    return "\n".join(out)


def documented():
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    return doc[doc.index(BEGIN) + len(BEGIN):doc.index(END)].strip("\n")


def check(log, marks):
    """Fail when the recorded sequence differs from docs/tokens.md."""
    got = distill(log, marks)
    want = documented()
    if got.strip() != want.strip():
        build = os.environ.get("P11C_BUILD_DIR", os.path.join(SRC, "build"))
        new = os.path.join(build, "tokens-sequence.md")
        with open(new, "w", encoding="utf-8") as f:
            f.write(got + "\n")
        import difflib
        diff = "".join(difflib.unified_diff(want.splitlines(True), (got + "\n").splitlines(True),
                                            "docs/tokens.md", "recorded"))
        raise AssertionError("The PKCS#11 calls the daemon makes changed; docs/tokens.md no longer tells them.\n"
                             "Review, then: tests/tokens_sequence.py --update %s\n%s" % (new, diff))


def update(path):
    with open(path, encoding="utf-8") as f:
        new = f.read().strip("\n")
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    doc = doc[:doc.index(BEGIN) + len(BEGIN)] + "\n\n" + new + "\n\n" + doc[doc.index(END):]
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        update(sys.argv[2])
    else:
        sys.exit(__doc__)
