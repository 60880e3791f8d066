"""A FUSE file system whose writes never complete (until it is unmounted):
what a hostile user's FUSE server can do to a program writing into one of
its files.  Usage: stallfs.py MOUNTPOINT READY_FILE (root; python3-fusepy)."""
import errno
import os
import stat
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations


class Stall(Operations):
    def __init__(self):
        self.files = set()
        self.never = threading.Event()

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path in self.files:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", ".."] + [p[1:] for p in self.files]

    def create(self, path, mode, fi=None):
        self.files.add(path)
        return 0

    def open(self, path, flags):
        return 0

    def truncate(self, path, length, fh=None):
        return 0

    def write(self, path, data, offset, fh):
        self.never.wait()     # the writer waits for good
        return len(data)

    def init(self, path):
        with open(sys.argv[2], "w") as f:
            f.write("mounted\n")


FUSE(Stall(), sys.argv[1], foreground=True, nothreads=False)
