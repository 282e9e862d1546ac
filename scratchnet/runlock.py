"""An exclusive lock on a run folder, so two training runs never write into the same ``--out``.

The lock is a file, ``RUN_LOCK`` in the folder, holding the owner's process
id, host and start time, and locked with ``fcntl.flock``. The kernel drops a
flock when its process ends, however it ends (even ``kill -9``), so a lock
file left behind by a killed run is *stale* by construction: the next run
finds the file, gets the flock, says whose lock it takes over, and goes on.
A second run while the first still lives cannot get the flock and stops
with a message naming the first run's process id.

``exclusive(path)`` is the waiting kind, for work that several processes may start at once and one
should do (preparing a dataset): the others wait for the flock, then find the work done.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys

RUN_LOCK = ".run.lock"


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder."""


def _describe(owner):
    if not owner:
        return "another process (its id not yet written)"
    return (f"process {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')}: "
            f"{owner.get('command')})")


def _read_owner(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 65536).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None


def _owner_record():
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}


def _write_owner(fd):
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(_owner_record()).encode())


@contextlib.contextmanager
def exclusive(path, waiting=None):
    """Hold an exclusive flock on the file ``path`` (made if needed) for the block, waiting while another
    process holds it; ``waiting(owner)`` is called once first, with a description of that process. The
    file stays (removing it would race with a process about to lock it); the kernel drops the flock
    when the block ends or the process dies."""
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if waiting is not None:
                waiting(_describe(_read_owner(fd)))
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_owner(fd)
        yield
    finally:
        os.close(fd)


class RunLock:
    """``RunLock(folder).acquire()`` ... ``release()``; also a context manager.

    ``taken_over`` is the previous owner's record when a stale lock was taken over (else None).
    """

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), RUN_LOCK)
        self.fd = None
        self.taken_over = None

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _read_owner(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunFolderLocked(f"{os.path.dirname(self.path)} is in use by {_describe(owner)}; wait for "
                                      f"that run to finish (or stop it), or choose another --out") from None
            # the file may have been removed (a run that just released) between our open and flock:
            # then we hold a lock on a dead inode; start again on the current file
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        previous = _read_owner(fd)
        if previous:  # a file that no live flock holds: its run was killed before it could remove it
            self.taken_over = previous
        _write_owner(fd)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # still ours: nobody else can hold it while we do
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def stale_message(lock):
    """One line for a taken-over stale lock (None when there was none)."""
    if lock.taken_over is None:
        return None
    return f"note: taking over the stale lock of {_describe(lock.taken_over)}, which no longer holds it"
