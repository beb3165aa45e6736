"""Writing files safely: never half-written under their final name, never twice at once, and
(for the many images of an export) in the background, without losing an error."""

import collections
import concurrent.futures
import contextlib
import fcntl
import io
import os
from typing import Callable, Iterator

import numpy as np
from PIL import Image


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


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """An image array as PNG bytes: uint8 HxW (grey), HxWx3 (RGB), HxWx4 (RGBA), or uint16 HxW
    (16-bit, like Cityscapes' instance ids). ``compress_level`` 0..9 trades size for speed."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buffer, format='PNG', compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """``array`` (see ``png_bytes``) as a PNG at ``path``, written atomically."""
    write_atomically(path, png_bytes(array))


class BackgroundWriter:
    """Runs file writes on a few threads while the caller computes the next batch; at most
    ``max_pending`` wait, so memory stays bounded. ``close`` (or leaving the ``with`` block)
    waits for every write and raises the first error, so a failed write is never silent."""

    def __init__(self, threads: int = 4, max_pending: int = 32):
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, 'seg_jax_writer')
        self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
        self._max_pending = max_pending

    def submit(self, write: Callable[..., None], *args) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(write, *args))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> 'BackgroundWriter':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
