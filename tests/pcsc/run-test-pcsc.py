#!/usr/bin/python3
"""Runs the test-pcsc GTest binary against the real pcscd + vpcd + vicc.

    run-test-pcsc.py [--port N] [--keep] TEST_BINARY [GTEST ARGS...]

Starts pcscd in private namespaces (tests/pcscenv.py), then runs the binary
with a command channel (a socketpair end, fd number in P11C_TEST_PCSC_FD).
The binary writes one command per line and waits for "ok" / "error MSG":

    insert N        start a vicc card on reader N (0/1), reply once connected
    remove N        kill that vicc
    apdu N          another client connects to the card in reader N and
                    sends an APDU (scriptor): state/counter noise
    restart-pcscd   stop pcscd and start it again (reply when ready)
    stop-pcscd      stop pcscd
    start-pcscd     start it again

The binary's stdout/stderr (TAP with --tap) pass through; its exit status
is ours.  On failure the pcscd and vicc logs are printed.  Exit 77 (skip)
when the environment cannot run pcscd in namespaces (not root, tools
missing).
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import pcscenv  # noqa: E402


def serve(sock, env, errors):
    f = sock.makefile('rwb', buffering=0)
    for raw in f:
        line = raw.decode().strip()
        if not line:
            continue
        words = line.split()
        try:
            if words[0] == 'insert':
                env.insert_card(int(words[1]))
            elif words[0] == 'remove':
                env.remove_card(int(words[1]))
            elif words[0] == 'apdu':
                env.transmit(int(words[1]))
            elif words[0] == 'restart-pcscd':
                env.restart()
            elif words[0] == 'stop-pcscd':
                env.stop()
            elif words[0] == 'start-pcscd':
                env.start()
            else:
                raise ValueError('unknown command %r' % line)
            f.write(b'ok\n')
        except Exception as e:  # report to the test, keep serving
            msg = ('%s: %s' % (type(e).__name__, e)).replace('\n', ' | ')
            errors.append(msg)
            f.write(('error %s\n' % msg).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, default=35963)
    ap.add_argument('--keep', action='store_true', help='keep the temporary directory')
    ap.add_argument('binary')
    ap.add_argument('args', nargs=argparse.REMAINDER)
    opts = ap.parse_args()

    why = pcscenv.have_prerequisites()
    if why:
        print('SKIP: %s' % why, file=sys.stderr)
        return 77

    # meson's timeout sends SIGTERM: unwind so `finally` stops pcscd/vicc
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix='p11c-pcsc-')
    env = pcscenv.PcscEnv(tmp, port=opts.port)
    errors = []
    rc = 1
    proc = None
    try:
        env.start()
        ours, theirs = socket.socketpair()
        child_env = os.environ.copy()
        child_env['P11C_TEST_PCSC_FD'] = str(theirs.fileno())
        child_env.setdefault('G_DEBUG', 'fatal-criticals')
        server = threading.Thread(target=serve, args=(ours, env, errors), daemon=True)
        server.start()
        proc = subprocess.Popen(['timeout', '300', opts.binary] + opts.args,
                                env=child_env, pass_fds=(theirs.fileno(),))
        theirs.close()
        rc = proc.wait()
        ours.close()
    finally:
        # stop our processes first: printing below may fail (closed pipe)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
        env.close()
        try:
            if rc != 0:
                for e in errors:
                    print('# command error: %s' % e, file=sys.stderr)
                print('# pcscd log (tail):\n' + env.log_tail(40), file=sys.stderr)
                for name in sorted(os.listdir(tmp)):
                    if name.startswith('vicc-'):
                        with open(os.path.join(tmp, name), errors='replace') as f:
                            print('# %s (tail):\n%s' % (name, ''.join(f.readlines()[-10:])),
                                  file=sys.stderr)
            if opts.keep:
                print('# kept %s' % tmp, file=sys.stderr)
        finally:
            if not opts.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == '__main__':
    sys.exit(main())
