"""A checkpoint that cannot be written (full disk, quota, read-only or forbidden folder) stops the
run with one message saying what failed, what is still intact and what to do.

orbax writes in background threads, through TensorStore. A write that fails there is logged by
each of those threads with its traceback, and raised again in the main thread at the next save
or at ``close``, as a ``ValueError`` whose text carries the OS error (``RESOURCE_EXHAUSTED:
Error writing local file ... [os_error_code='28']``). ``Checkpointer`` turns that into one
``CheckpointWriteError``; the background threads' copies of the same error are kept off the
console (``quiet_background_write_errors``), since the message says it once, better.
"""

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
from typing import Iterator

from seg_jax.errors import CheckpointError, error_chain

# The write failures a user can fix, and what to do about each.
FIXES = {
    errno.ENOSPC: ('no space is left on the device', 'free space there, lower '
                   'config.keep_checkpoints, or move the workdir to a larger disk'),
    errno.EDQUOT: ('the disk quota is exceeded', 'free space within your quota, lower '
                   'config.keep_checkpoints, or move the workdir to a disk with room'),
    errno.EROFS: ('the file system is read-only', 'train in a --workdir on a writable file '
                  'system'),
    errno.EACCES: ('permission is denied', "fix the folder's permissions or train in a "
                   'writable --workdir'),
    errno.EPERM: ('the operation is not permitted', "fix the folder's permissions or train in "
                  'a writable --workdir'),
}
# How an errno appears in error texts: TensorStore's, and Python's OSError.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)|\[Errno (\d+)\]")
TEMPORARY_SUFFIX = '.orbax-checkpoint-tmp'  # orbax writes step N into N.orbax-checkpoint-tmp*
_TEMPORARY_STEP = re.compile(r'(\d+)' + re.escape(TEMPORARY_SUFFIX))


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written; the message names the step, the folder and the fix."""


def write_failure_code(error: BaseException) -> int | None:
    """The errno of a fixable write failure behind ``error`` (an OSError anywhere in its chain,
    or TensorStore's ``os_error_code`` in its text); None for any other error."""
    for link in error_chain(error):
        if isinstance(link, OSError) and link.errno in FIXES:
            return link.errno
        code = _code_in_text(str(link))
        if code is not None:
            return code
    return None


def _code_in_text(text: str) -> int | None:
    """The first fixable errno that ``text`` names, if any."""
    for match in _OS_ERROR_CODE.finditer(text):
        code = int(match.group(1) or match.group(2))
        if code in FIXES:
            return code
    return None


def failed_step(error: BaseException, default: int | None) -> int | None:
    """The step whose save failed: named by its temporary folder in the error where it is (an
    asynchronous save's error surfaces at the next save), else ``default``."""
    for link in error_chain(error):
        match = _TEMPORARY_STEP.search(str(link))
        if match:
            return int(match.group(1))
    return default


def remove_temporary(directory: str, step: int) -> None:
    """Removes what the failed save of ``step`` left in ``directory`` (never a finished step)."""
    for partial in glob.glob(os.path.join(directory, f'{step}{TEMPORARY_SUFFIX}*')):
        shutil.rmtree(partial, ignore_errors=True)


def _free_bytes(directory: str) -> int:
    """Free bytes on the file system that holds (or will hold) ``directory``."""
    folder = os.path.abspath(directory)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def _free_space(directory: str) -> str:
    try:
        return f"{_free_bytes(directory) / 2**20:.1f} MiB free there now"
    except OSError:
        return 'free space unknown'


def write_error(code: int, step: int | None, directory: str,
                intact_step: int | None) -> CheckpointWriteError:
    """The one message for a failed save of ``step`` under ``directory``."""
    reason, fix = FIXES[code]
    what = f'the checkpoint of step {step}' if step is not None else 'a checkpoint'
    if intact_step is None:
        kept, resume = 'No earlier checkpoint exists', 'rerun the same command to start again'
    else:
        kept = f'The newest complete checkpoint, step {intact_step}, is intact'
        resume = f'rerun the same command to resume from step {intact_step}'
    return CheckpointWriteError(
        f'Could not write {what} in {directory}: {reason} ({_free_space(directory)}). {kept}; '
        f'the partial one was removed. To go on, {fix}, then {resume}.')


def check_room(directory: str, checkpoint_bytes: int) -> None:
    """Raises before training if ``directory``'s file system has less room than one checkpoint
    of ``checkpoint_bytes``: the run would otherwise fail at its first save, its steps lost."""
    free = _free_bytes(directory)
    if free < checkpoint_bytes:
        raise CheckpointWriteError(
            f'{directory} has {free / 2**20:.1f} MiB free, less than one checkpoint of this '
            f'model ({checkpoint_bytes / 2**20:.1f} MiB; training keeps '
            'config.keep_checkpoints of them plus the best one). Free space there, or train in '
            'a --workdir on a disk with room.')


class _BackgroundWriteErrors(logging.Filter):
    """Drops orbax's background-thread logs of a fixable write failure, which the main thread
    reports itself, and asyncio's "Task exception was never retrieved" of the same failure (a
    write task of the failed save, collected later); anything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not ('orbax' in record.pathname or
                                                  record.name == 'asyncio'):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        failure = write_failure_code(exc) if exc else None
        return failure is None and _code_in_text(record.getMessage()) is None


_UNRETRIEVED_WRITE_ERRORS = _BackgroundWriteErrors()


@contextlib.contextmanager
def quiet_background_write_errors() -> Iterator[None]:
    """Keeps orbax's per-thread copies of a write failure off the console for the block."""
    absl_logger = logging.getLogger('absl')
    quiet = _BackgroundWriteErrors()
    absl_logger.addFilter(quiet)
    # A failed save's tasks can be collected at any later time, exit included: this one stays.
    logging.getLogger('asyncio').addFilter(_UNRETRIEVED_WRITE_ERRORS)
    try:
        yield
    finally:
        absl_logger.removeFilter(quiet)
