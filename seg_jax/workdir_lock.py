"""One training per workdir: a lock file that a second trainer of the same folder is refused by.

Two trainings in one workdir (a repeated command, a requeued SLURM job while the first still
runs, two terminals) would interleave their checkpoint writes in one folder and their lines in
one history: a way to lose both runs. ``hold(workdir)`` creates ``workdir/training.lock``
atomically (``O_EXCL``), writing who holds it (host, pid, start time, command), and removes it
on any exit that runs Python's cleanup: the end of training, an error, SIGTERM, Ctrl-C.

A lock outlives its holder only when the process died without cleanup (SIGKILL, a crash, a
power cut). Such a lock is stale and taken over with a warning when the holder was on this host
and its process is gone (or is another process with a reused pid), or the host has rebooted
since. A lock held on another host cannot be checked from here: the error says how to remove it
once that job is known to be gone. ``--mode eval`` and ``predict`` only read, so they take no
lock and run beside a training.

In a multi-process job, process 0 holds the lock for all processes; they all learn whether it
got it, so all of them stop with its message when it did not.
"""

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
from typing import Any, Iterator

import jax

from seg_jax.distributed import broadcast_text
from seg_jax.errors import SegJaxError

log = logging.getLogger(__name__)

LOCK_FILE = 'training.lock'
_BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id'


class WorkdirInUseError(SegJaxError):
    """Another training holds the workdir, or the workdir cannot be written to."""


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown.

    Compared with the holder's recorded value it tells a live holder from an unrelated process
    that has been given the same pid since.
    """
    stat = _read_text(f'/proc/{pid}/stat')
    # The command name (field 2) is in parentheses and may hold spaces; field 22 is the start.
    return stat.rsplit(')', 1)[1].split()[19] if stat else None


def this_process() -> dict[str, Any]:
    """What a lock file says of its holder."""
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'process_start': _process_start(os.getpid()), 'boot_id': _read_text(_BOOT_ID_FILE),
            'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
            'command': ' '.join(sys.argv)}


def _pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: someone else's process, alive
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stale_reason(holder: dict[str, Any]) -> str | None:
    """Why the lock of ``holder`` is known to be stale, or None while it may be alive."""
    if holder.get('host') != socket.gethostname():
        return None  # another host's processes cannot be seen from here
    boot_id = _read_text(_BOOT_ID_FILE)
    if holder.get('boot_id') and boot_id and holder['boot_id'] != boot_id:
        return 'this host has rebooted since'
    pid = holder.get('pid')
    if not isinstance(pid, int) or not _pid_is_running(pid):
        return f'process {pid} is gone'
    started = _process_start(pid)
    if holder.get('process_start') and started and started != holder['process_start']:
        return f'process {pid} is gone (the pid now belongs to another process)'
    return None


def _describe(holder: dict[str, Any]) -> str:
    return (f"host {holder.get('host')}, pid {holder.get('pid')}, started "
            f"{holder.get('started')}, command: {holder.get('command')}")


def _read_holder(path: str) -> dict[str, Any] | None:
    """The lock file's holder; None for a file that no longer exists; {} for an unreadable one
    (a holder killed between creating and writing it)."""
    text = _read_text(path)
    if text is None and not os.path.exists(path):
        return None
    try:
        holder = json.loads(text or '')
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(path: str, holder: dict[str, Any]) -> bool:
    """Creates the lock file holding ``holder``; False if one exists already."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, 'w') as f:
        json.dump(holder, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over(path: str, holder: dict[str, Any], reason: str) -> None:
    """Removes a stale lock. It is renamed first, which only one of several processes taking
    it over at once can do, so none of them removes the lock another has just created."""
    aside = f'{path}.stale.{os.getpid()}'
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first
    os.remove(aside)
    log.warning('Took over the stale training lock %s (%s): %s.', path, _describe(holder),
                reason)


def acquire(workdir: str) -> dict[str, Any]:
    """Creates ``workdir/training.lock`` for this process and returns what it holds; raises
    WorkdirInUseError naming the holder if a live training holds it, or if the workdir cannot
    be written to."""
    path = os.path.join(workdir, LOCK_FILE)
    me = {**this_process(), 'created_workdir': not os.path.isdir(workdir)}
    try:
        os.makedirs(workdir, exist_ok=True)
        while not _create(path, me):
            holder = _read_holder(path)
            if holder is None:
                continue  # released between the two calls: try again
            reason = 'the lock file is empty or unreadable' if not holder else stale_reason(holder)
            if reason is None:
                raise WorkdirInUseError(
                    f'{workdir} is in use by another training ({_describe(holder)}). Two '
                    'trainings in one workdir would overwrite each other\'s checkpoints. Wait '
                    'for it to finish, stop it (it saves and exits on SIGTERM or Ctrl-C), or '
                    'train in another --workdir. If that job is gone (e.g. it ran on another '
                    f'host that has since been lost), remove {path} and rerun.')
            _take_over(path, holder, reason)
    except OSError as error:
        raise WorkdirInUseError(
            f'Cannot write to the workdir {workdir} ({error.strerror or error}): training '
            'writes its checkpoints and reports there. Pass a --workdir on a writable '
            'file system, or fix the folder\'s permissions.') from None
    return me


def release(workdir: str, holder: dict[str, Any]) -> None:
    """Removes the lock file if it is still ``holder``'s (it is never someone else's to remove),
    and the workdir too if the lock created it and nothing else was written there (a run that
    stopped on a config or data error leaves no trace)."""
    path = os.path.join(workdir, LOCK_FILE)
    if _read_holder(path) != holder:
        return
    os.remove(path)
    if holder.get('created_workdir') and not os.listdir(workdir):
        os.rmdir(workdir)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir's training lock for the block, for every process of the job."""
    holder, refusal = None, ''
    if jax.process_index() == 0:
        try:
            holder = acquire(workdir)
        except WorkdirInUseError as error:
            refusal = str(error)
    if jax.process_count() > 1:  # every process stops if process 0 did not get the lock
        refusal = broadcast_text(refusal)
    if refusal:
        raise WorkdirInUseError(refusal)
    try:
        yield
    finally:
        if holder is not None:
            release(workdir, holder)
