"""Writing shared files safely: never half-written under their final name, never twice at once."""

import contextlib
import fcntl
import os
from typing import Iterator


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path``, then renames it over ``path``: the
    file is either the old one or the complete new one, never a torn mix. The temporary name is
    per process, so processes writing the same file at once do not write into each other's."""
    folder, name = os.path.split(os.fspath(path))
    os.makedirs(folder or '.', exist_ok=True)
    temporary = os.path.join(folder, f'.{name}.{os.getpid()}.partial')
    with open(temporary, 'wb') as f:
        f.write(data)
    os.replace(temporary, path)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive lock on ``folder`` (created if missing), so that of several processes
    preparing the same data (the processes of a multi-process job) one writes while the others
    wait and then find it ready. The lock is on the folder itself: no lock file is left behind.
    File systems without ``flock`` on folders get no lock (and no error)."""
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
