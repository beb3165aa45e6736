"""Checkpoints damaged on disk after their save: what cannot be read, said in one line.

Saves are atomic, so a damaged checkpoint is one whose files changed afterwards: truncated (a
full disk while copying, a file system fault), deleted or corrupted. orbax reports that from
deep inside TensorStore (``OUT_OF_RANGE: Error reading "params.x/0.0.0.0" in OCDBT database at
local file ...: Requested byte range ...``, with a spec dump) or as a bare ``JSONDecodeError`` of
a metadata file it does not name. ``reading`` turns those into a ``DamagedCheckpointError``
naming the step, its folder, the array or file and the cause; ``seg_jax.checkpoints`` decides
what to do with it (skip it when resuming, list the intact steps at evaluation).
"""

import contextlib
import dataclasses
import itertools
import json
import re
from typing import Iterator

from etils import epath

from seg_jax.errors import CheckpointError, error_chain

# Beside the checkpoint folder (<workdir>/checkpoints): where resuming moves damaged steps.
DAMAGED_FOLDER = 'damaged_checkpoints'
# The file orbax writes into every step: the tree and its arrays' types. Without it orbax
# raises nothing useful (it returns no metadata, then fails on a tree mismatch).
ITEM_METADATA_FILE = 'default/_METADATA'
# tensorstore's status codes for a file that cannot be read back as it was written. Other
# codes (PERMISSION_DENIED, INVALID_ARGUMENT, ...) do not say that the files are damaged.
READ_FAILURE_CODES = ('NOT_FOUND', 'OUT_OF_RANGE', 'DATA_LOSS', 'FAILED_PRECONDITION')
_STATUS = re.compile(r'(?P<code>[A-Z_]+): (?P<message>.*)', re.DOTALL)
_ARRAY = re.compile(r'"(?P<name>[^"/]+)/(?:\.zarray|[\d.]+)"')  # "params.conv.kernel/0.0.0.0"
_FILE = re.compile(r'local file "(?P<path>[^"]*[^"/])"')  # a file, not the database folder
_DRIVER = re.compile(r'Error opening "[^"]*" driver: ')
RESUME_ADVICE = (f'rerunning the training moves it to <workdir>/{DAMAGED_FOLDER}/ and resumes '
                 'from the newest intact step.')
DAMAGED_ADVICE = f'Restore another step; {RESUME_ADVICE}'


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read back as they were written: truncated, deleted or
    corrupted on disk after the save (saves themselves are atomic). ``reason`` names the file or
    array and the cause; ``advice`` says what to do in the caller's context."""

    def __init__(self, step: int, folder: epath.Path, reason: str,
                 advice: str = DAMAGED_ADVICE):
        self.step, self.folder, self.reason = step, folder, reason
        super().__init__(f'Checkpoint step {step} in {folder} is damaged: {reason}. {advice}')


@dataclasses.dataclass(frozen=True)
class SkippedCheckpoint:
    """A damaged checkpoint that ``restore_newest_intact`` skipped, and where it lies now."""
    step: int
    reason: str
    moved_from: epath.Path
    moved_to: epath.Path


@contextlib.contextmanager
def reading(step: int, folder: epath.Path) -> Iterator[None]:
    """Turns an error of orbax reading checkpoint ``step`` in ``folder`` that comes from its
    files into a DamagedCheckpointError; any other error (and KeyboardInterrupt) passes."""
    try:
        yield
    except Exception as error:
        reason = _damage(error, folder)
        if reason is None:
            raise
        raise DamagedCheckpointError(step, folder, reason) from error


def _damage(error: Exception, folder: epath.Path) -> str | None:
    """What of ``folder`` could not be read, when ``error`` or an error it came from is a
    tensorstore read failure or a metadata file that does not parse; None otherwise. orbax
    wraps tensorstore's error (``Exception: Encountered error while reading array index``)."""
    for cause in error_chain(error):
        unparsable = _unparsable_file(cause, folder)
        if unparsable:
            return unparsable
        status = _STATUS.fullmatch(str(cause)) if isinstance(cause, ValueError) else None
        if status and status['code'] in READ_FAILURE_CODES:
            return _read_failure(status['code'], status['message'], str(folder))
    return None


def _read_failure(code: str, message: str, folder: str) -> str:
    """'the array params.x cannot be read from default/d/0f.. (OUT_OF_RANGE: ...)' from a
    tensorstore message: the array and file it names (relative to ``folder``) and its last
    clause, the cause, without the spec dump that follows."""
    message = _DRIVER.sub('', message.split(' [tensorstore_spec')[0]).replace(f'{folder}/', '')
    array, files = _ARRAY.search(message), _FILE.findall(message)
    what = f'the array {array["name"]}' if array else (files[-1] if files else 'a file')
    source = f' from {files[-1]}' if array and files else ''
    cause = message.rsplit('": ', 1)[-1]  # what follows the last quoted name
    return f'{what} cannot be read{source} ({code}: {cause})'


def _unparsable_file(error: BaseException, folder: epath.Path) -> str | None:
    """'default/_METADATA cannot be read (not valid JSON: ...)' when ``error`` is a metadata
    file's text that does not decode or parse; the file is found by its content, which the
    error holds but does not name."""
    if isinstance(error, json.JSONDecodeError):
        content, cause = error.doc.encode(), f'not valid JSON: {error}'
    elif isinstance(error, UnicodeDecodeError):
        content, cause = bytes(error.object), f'not valid UTF-8 text at byte {error.start}'
    else:
        return None
    return f'{_file_holding(folder, content) or "a metadata file"} cannot be read ({cause})'


def _file_holding(folder: epath.Path, content: bytes) -> str | None:
    """The path, relative to ``folder``, of a file under it whose bytes are ``content``."""
    for root, _, names in folder.walk():
        for path in (root / name for name in names):
            if path.stat().length == len(content) and path.read_bytes() == content:
                return str(path.relative_to(folder))
    return None


def unused_path(path: epath.Path) -> epath.Path:
    """``path``, or the first of ``path.1``, ``path.2``, ... that does not exist, so that a
    step damaged again later is kept beside the earlier copy."""
    candidates = itertools.chain([path], (path.parent / f'{path.name}.{number}'
                                          for number in itertools.count(1)))
    return next(candidate for candidate in candidates if not candidate.exists())
