"""tests/system/check-doc-tests.py DOC TESTS_DIR

Every test a document names as `test_file.py::Class.test_name` (and each
`…test_other` after it, which means the same file and class) must exist in
TESTS_DIR, as a method of that class or of a class it derives from in the
same file, and every `file::Class.test` must be complete.  Keeps the claims
of docs/security.md backed by tests that are really there."""
import ast
import os
import re
import sys


def methods_of(path):
    """{class name: set of test methods, inherited ones in the same file included}"""
    tree = ast.parse(open(path).read(), path)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def collect(name, seen=()):
        node = classes.get(name)
        if node is None or name in seen:
            return set()
        own = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        for b in node.bases:
            if isinstance(b, ast.Name):
                own |= collect(b.id, seen + (name,))
        return own
    return {name: collect(name) for name in classes}


def main():
    doc, tests = sys.argv[1], sys.argv[2]
    text = open(doc).read()
    refs = re.findall(r"`(test_[a-z0-9_]+\.py)::([A-Za-z0-9_]+)\.(test_[a-z0-9_]+)`|`…(test_[a-z0-9_]+)`", text)
    cache, bad, last, n = {}, [], None, 0
    for f, cls, test, more in refs:
        if more:
            if last is None:
                bad.append("…%s without a test named before it" % more)
                continue
            f, cls, test = last[0], last[1], more
        last = (f, cls)
        n += 1
        path = os.path.join(tests, f)
        if not os.path.exists(path):
            bad.append("%s::%s.%s: no file %s" % (f, cls, test, path))
            continue
        if f not in cache:
            cache[f] = methods_of(path)
        if test not in cache[f].get(cls, set()):
            bad.append("%s::%s.%s: no such test" % (f, cls, test))
    for b in bad:
        print("FAIL:", b)
    print("%s: %d test references, %d missing" % (doc, n, len(bad)))
    sys.exit(1 if bad or n == 0 else 0)


main()
