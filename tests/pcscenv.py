"""Real PC/SC parts for tests: pcscd + vpcd virtual readers + vicc virtual cards.

Follows ../shared/docs/test-environment.md ("PC/SC hotplug"):

  * pcscd runs under `timeout`, in private mount + network namespaces
    (`unshare -mn`), with /run/pcscd bind-mounted to a temporary directory
    and a reader config that makes two vpcd readers ("Test VPCD 00 00" on
    PORT, "Test VPCD 00 01" on PORT+1).  The client library follows
    PCSCLITE_CSOCK_NAME, which start() puts into os.environ.
  * A card is inserted by starting vicc in pcscd's network namespace
    (nsenter -n) and removed by killing it.  vicc exits 0 even when it could
    not connect, so insert_card() watches its log for "Connected to virtual
    PCD" and fails if the process ends first.

Stdlib only; run with /usr/bin/python3 (the Debian interpreter: vicc needs
the Debian python modules).  Needs root (unshare, mount, nsenter).
close() kills only the processes this object started.

    env = PcscEnv(tmpdir, port=35963)
    env.start()
    env.insert_card(0); env.remove_card(0)
    env.restart()
    env.close()
"""

import os
import shutil
import signal
import subprocess
import threading
import time

VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so'
CRYPTODOME = '/usr/lib/python3/dist-packages/Cryptodome'
VICC_PYTHONPATH = '/usr/lib/python3/site-packages/virtualsmartcard'
READER_NAME = 'Test VPCD'


class PcscEnvError(RuntimeError):
    pass


def _wait_until(predicate, timeout, what, interval=0.02, failed=None):
    """Polls @predicate until it is true or @timeout seconds pass.
    @failed (optional) is checked too and aborts early with its message."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if failed is not None:
            msg = failed()
            if msg:
                raise PcscEnvError('%s: %s' % (what, msg))
        if time.monotonic() >= deadline:
            raise PcscEnvError('%s: not within %.1f s' % (what, timeout))
        time.sleep(interval)


class _Vicc:
    """One vicc process; its stderr goes to a log file through a thread."""

    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.connected = threading.Event()
        self.lines = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        with open(self.log_path, 'a', encoding='utf-8', errors='replace') as log:
            for raw in self.proc.stdout:
                line = raw.decode('utf-8', 'replace')
                log.write(line)
                log.flush()
                self.lines.append(line.rstrip())
                if 'Connected to virtual PCD' in line:
                    self.connected.set()

    def log_tail(self, n=15):
        return '\n'.join(self.lines[-n:])


class PcscEnv:
    def __init__(self, tmpdir, port=35963, lifetime=600):
        self.tmpdir = os.path.abspath(tmpdir)
        self.port = port
        self.lifetime = lifetime
        self.conf_dir = os.path.join(self.tmpdir, 'pcsc-conf.d')
        self.run_dir = os.path.join(self.tmpdir, 'pcsc-run')
        self.shim_dir = os.path.join(self.tmpdir, 'pcsc-pyshim')
        self.socket = os.path.join(self.run_dir, 'pcscd.comm')
        self.pcscd_log = os.path.join(self.tmpdir, 'pcscd.log')
        self.pcscd = None          # Popen of `timeout ... pcscd`
        self.pcscd_pid = None      # the pcscd process itself
        self.vicc = {}             # reader index -> _Vicc
        self.readers = ['%s 00 00' % READER_NAME, '%s 00 01' % READER_NAME]

    # --- pcscd -----------------------------------------------------------

    def _write_config(self):
        os.makedirs(self.conf_dir, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        with open(os.path.join(self.conf_dir, 'vpcd'), 'w') as f:
            f.write('FRIENDLYNAME "%s"\nDEVICENAME /dev/null:%d\nLIBPATH %s\nCHANNELID %d\n'
                    % (READER_NAME, self.port, VPCD_DRIVER, self.port))
        os.makedirs(self.shim_dir, exist_ok=True)
        link = os.path.join(self.shim_dir, 'Crypto')
        if not os.path.islink(link):
            os.symlink(CRYPTODOME, link)

    def _pcscd_failed(self):
        if self.pcscd is not None and self.pcscd.poll() is not None:
            return 'pcscd exited with %s; log:\n%s' % (self.pcscd.returncode, self.log_tail())
        return None

    def log_tail(self, n=20):
        try:
            with open(self.pcscd_log, errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    def _list_readers(self):
        try:
            out = subprocess.run(['timeout', '2', 'pcsc_scan', '-r'], env=os.environ.copy(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=5).stdout.decode(errors='replace')
        except subprocess.TimeoutExpired:
            return []
        return [r for r in self.readers if r in out]

    def start(self, timeout=10):
        """Starts pcscd and returns once it lists both vpcd readers."""
        if self.pcscd is not None:
            raise PcscEnvError('pcscd already started')
        self._write_config()
        os.makedirs('/run/pcscd', exist_ok=True)   # mount point only
        for stale in (self.socket, os.path.join(self.run_dir, 'pcscd.pid')):
            if os.path.exists(stale):
                os.unlink(stale)
        os.environ['PCSCLITE_CSOCK_NAME'] = self.socket
        script = ('ip link set lo up && mount --bind "$1" /run/pcscd && '
                  'exec pcscd -f -c "$2"')
        log = open(self.pcscd_log, 'ab')
        self.pcscd = subprocess.Popen(
            ['timeout', str(self.lifetime), 'unshare', '-mn', 'sh', '-c', script, 'sh',
             self.run_dir, self.conf_dir],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        # timeout -> (unshare exec sh exec) pcscd: timeout's only child.
        pid_file = '/proc/%d/task/%d/children' % (self.pcscd.pid, self.pcscd.pid)

        def child_is_pcscd():
            try:
                with open(pid_file) as f:
                    kids = f.read().split()
                if len(kids) == 1:
                    with open('/proc/%s/comm' % kids[0]) as f:
                        if f.read().strip() == 'pcscd':
                            self.pcscd_pid = int(kids[0])
                            return True
            except OSError:
                pass
            return False

        _wait_until(child_is_pcscd, timeout, 'pcscd process', failed=self._pcscd_failed)
        _wait_until(lambda: os.path.exists(self.socket), timeout, 'pcscd socket',
                    failed=self._pcscd_failed)
        _wait_until(lambda: len(self._list_readers()) == 2, timeout, 'vpcd readers',
                    interval=0.05, failed=self._pcscd_failed)

    def stop(self, timeout=5):
        """Stops pcscd (SIGTERM through timeout); cards lose their reader."""
        if self.pcscd is None:
            return
        if self.pcscd.poll() is None:
            self.pcscd.send_signal(signal.SIGTERM)
            try:
                self.pcscd.wait(timeout)
            except subprocess.TimeoutExpired:
                self.pcscd.kill()
                self.pcscd.wait()
        self.pcscd = None
        self.pcscd_pid = None
        # vicc processes lose vpcd with it; reap them
        for idx in list(self.vicc):
            self.remove_card(idx)

    def restart(self):
        self.stop()
        self.start()

    # --- cards -----------------------------------------------------------

    def insert_card(self, reader=0, timeout=10):
        """Starts a vicc ISO 7816 card for reader index @reader (0 or 1) and
        returns once it is connected to vpcd (pcscd sees it within its
        400 ms poll)."""
        if self.pcscd_pid is None:
            raise PcscEnvError('pcscd is not running')
        if reader in self.vicc:
            raise PcscEnvError('reader %d already has a card' % reader)
        env = os.environ.copy()
        env['PYTHONPATH'] = self.shim_dir + ':' + VICC_PYTHONPATH
        # -vvv: INFO level, so vicc logs "Connected to virtual PCD" (stderr)
        proc = subprocess.Popen(
            ['timeout', str(self.lifetime), 'nsenter', '-t', str(self.pcscd_pid), '-n',
             '/usr/bin/python3', '-u', '/usr/bin/vicc', '-t', 'iso7816',
             '-P', str(self.port + reader), '-vvv'],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        v = _Vicc(proc, os.path.join(self.tmpdir, 'vicc-%d.log' % reader))
        deadline = time.monotonic() + timeout
        while not v.connected.wait(0.05):
            if proc.poll() is not None:
                v.connected.wait(0.5)   # let the pump read the last lines
                if v.connected.is_set():
                    break
                raise PcscEnvError('vicc exited (%d) without connecting to vpcd:\n%s'
                                   % (proc.returncode, v.log_tail()))
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise PcscEnvError('vicc did not connect within %.1f s:\n%s'
                                   % (timeout, v.log_tail()))
        if proc.poll() is not None:
            raise PcscEnvError('vicc exited right after connecting:\n%s' % v.log_tail())
        self.vicc[reader] = v

    def remove_card(self, reader=0, timeout=5):
        v = self.vicc.pop(reader, None)
        if v is None:
            return
        if v.proc.poll() is None:
            v.proc.send_signal(signal.SIGTERM)
            try:
                v.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                v.proc.kill()
                v.proc.wait()

    def transmit(self, reader=0, apdu='00 A4 04 00 00', timeout=10):
        """Connects to the card in reader @reader and sends one APDU with
        scriptor (pcsc-tools), as another PC/SC client would: the reader goes
        INUSE and its event counter moves.  Returns scriptor's output."""
        r = subprocess.run(['timeout', str(timeout), 'scriptor', '-r', self.readers[reader]],
                           input=(apdu + '\n').encode(), env=os.environ.copy(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = r.stdout.decode(errors='replace')
        if r.returncode != 0 or '<' not in out:
            raise PcscEnvError('scriptor failed (%d): %s' % (r.returncode, out.strip()))
        return out

    def has_card(self, reader=0):
        v = self.vicc.get(reader)
        return v is not None and v.proc.poll() is None

    # --- cleanup ---------------------------------------------------------

    def close(self):
        for idx in list(self.vicc):
            try:
                self.remove_card(idx)
            except Exception:
                pass
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def have_prerequisites():
    """None when the environment can run PcscEnv, else the reason."""
    if os.geteuid() != 0:
        return 'needs root (unshare -mn, mount, nsenter)'
    for tool in ('pcscd', 'pcsc_scan', 'unshare', 'nsenter', 'timeout', 'ip'):
        if shutil.which(tool) is None and not os.path.exists('/usr/sbin/' + tool):
            return 'missing %s' % tool
    for path in (VPCD_DRIVER, CRYPTODOME, VICC_PYTHONPATH, '/usr/bin/vicc'):
        if not os.path.exists(path):
            return 'missing %s' % path
    return None
