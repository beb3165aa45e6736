"""Checkpoint writes that fail (full disk, quota, read-only or forbidden folder): one message,
the previous checkpoint intact, nothing half-written left behind.

The OS error is injected where orbax itself writes (``epath.Path.write_text``, which it uses for a
checkpoint's metadata from its background threads), so the failure travels orbax's real path:
raised in a background thread, surfacing at the next save or wait. The same faults on real small
file systems are in tests/test_reliability.py.
"""

import errno
import logging
import os
import shutil

import numpy as np
import pytest
from etils import epath

from seg_jax import write_failures
from seg_jax.checkpoints import Checkpointer
from seg_jax.write_failures import CheckpointWriteError

STATE = {'w': np.arange(12, dtype=np.float32).reshape(3, 4), 'b': np.ones(4, np.float32)}


@pytest.fixture
def failing_writes(monkeypatch):
    """``fail(code, fragment, named=True)``: writes to paths containing ``fragment`` raise
    OSError(code), naming the path unless not ``named`` (as some file systems' errors do not)."""
    path_type = type(epath.Path('/'))
    write_text = path_type.write_text

    def fail(code: int, fragment: str, named: bool = True) -> None:
        def write_or_fail(self, *args, **kwargs):
            if fragment in str(self):
                raise OSError(code, os.strerror(code), *([str(self)] if named else []))
            return write_text(self, *args, **kwargs)
        monkeypatch.setattr(path_type, 'write_text', write_or_fail)
    return fail


@pytest.mark.parametrize('code,reason,fix', [
    (errno.ENOSPC, 'no space is left on the device', 'free space there, lower '
     'config.keep_checkpoints, or move the workdir to a larger disk'),
    (errno.EDQUOT, 'the disk quota is exceeded', 'free space within your quota'),
    (errno.EROFS, 'the file system is read-only', 'train in a --workdir on a writable file system'),
    (errno.EACCES, 'permission is denied', "fix the folder's permissions"),
])
def test_a_failed_save_is_one_error_naming_the_step_the_intact_one_and_the_fix(
        tmp_path, failing_writes, caplog, code, reason, fix):
    checkpointer = Checkpointer(tmp_path, keep=3)
    checkpointer.save(2, STATE, force=True)
    checkpointer.wait_until_finished()
    failing_writes(code, '4.orbax-checkpoint-tmp')
    with caplog.at_level(logging.INFO, logger='absl'):
        with pytest.raises(CheckpointWriteError) as raised:
            checkpointer.save(4, STATE, force=True)  # the write fails in the background...
            checkpointer.save(6, STATE, force=True)  # ...and surfaces here at the latest
        checkpointer.close()  # the same error is not raised again
    message = str(raised.value)
    assert message.startswith(f'Could not write the checkpoint of step 4 in {tmp_path}: '
                              f'{reason} (')
    assert ('MiB free there now). The newest complete checkpoint, step 2, is intact; the '
            f'partial one was removed. To go on, {fix}') in message
    assert message.endswith('then rerun the same command to resume from step 2.')
    assert sorted(os.listdir(tmp_path)) == ['2', 'best']  # no temporary folder, no step 6
    # orbax's background threads' own reports of it stay off the console.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with Checkpointer(tmp_path, keep=3, read_only=True) as reader:
        restored = reader.restore(STATE, 2)
    np.testing.assert_array_equal(restored['w'], STATE['w'])


def test_a_background_failure_that_names_no_path_is_the_step_that_did_not_finish(
        tmp_path, failing_writes):
    checkpointer = Checkpointer(tmp_path, keep=3)
    checkpointer.save(2, STATE, force=True)
    checkpointer.wait_until_finished()
    failing_writes(errno.ENOSPC, '4.orbax-checkpoint-tmp', named=False)
    with pytest.raises(CheckpointWriteError, match=(
            rf'^Could not write the checkpoint of step 4 in {tmp_path}: no space is left .* The '
            r'newest complete checkpoint, step 2, is intact')):
        checkpointer.save(4, STATE, force=True)
        checkpointer.save(6, STATE, force=True)  # where step 4's failure surfaces, at the latest
    checkpointer.close()
    assert sorted(os.listdir(tmp_path)) == ['2', 'best']


def test_a_failed_best_save_names_its_folder(tmp_path, failing_writes):
    checkpointer = Checkpointer(tmp_path, keep=3)
    checkpointer.save(2, STATE, force=True)
    failing_writes(errno.ENOSPC, 'best/4.orbax-checkpoint-tmp')
    with pytest.raises(CheckpointWriteError, match=(
            rf'^Could not write the checkpoint of step 4 in {tmp_path / "best"}: no space is left '
            r'.* The newest complete checkpoint, step 2, is intact')):
        checkpointer.save_best(4, STATE, 0.5)
        checkpointer.wait_until_finished()
    checkpointer.close()
    assert os.listdir(tmp_path / 'best') == []


def test_other_errors_are_not_mistaken_for_write_failures(tmp_path, monkeypatch):
    checkpointer = Checkpointer(tmp_path, keep=3)

    def broken_save(*args, **kwargs):
        raise ValueError('a bug, not a full disk')
    monkeypatch.setattr(checkpointer._periodic, 'save', broken_save)
    with pytest.raises(ValueError, match='^a bug, not a full disk$'):
        checkpointer.save(2, STATE, force=True)
    checkpointer.close()


def test_tensorstore_write_errors_are_read_by_their_os_error_code():
    # The text TensorStore raised for a full tmpfs during a real save.
    error = ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "/mnt/run/checkpoints/4.orbax-checkpoint-tmp'
        '/default.orbax-checkpoint-tmp/_sharding": Failed writing: "/mnt/run/checkpoints/'
        '4.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/_sharding.__lock": Failed to write '
        "16415 bytes to file 8: No space left on device [os_error_code='28']")
    assert write_failures.write_failure_code(error) == errno.ENOSPC
    assert write_failures.failed_step(error, default=6) == 4
    assert write_failures.write_failure_code(ValueError('OUT_OF_RANGE: Error reading')) is None


def test_a_disk_without_room_for_one_checkpoint_is_refused_up_front(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    write_failures.check_room(str(tmp_path), checkpoint_bytes=1024)
    with pytest.raises(CheckpointWriteError, match=(
            rf'^{tmp_path / "new"} has [\d.]+ MiB free, less than one checkpoint of this model '
            r'\([\d.]+ MiB; .*Free space there, or train in a --workdir on a disk with room\.$')):
        write_failures.check_room(str(tmp_path / 'new'), checkpoint_bytes=free + 2**30)


def test_an_unretrieved_write_task_of_a_failed_save_is_not_printed_other_task_errors_are(caplog):
    with write_failures.quiet_background_write_errors():
        pass  # a Checkpointer's lifetime; its failed save's tasks may be collected after it
    failure = ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device "
                         "[os_error_code='28']")
    other = ValueError('a bug in a task')
    for error in (failure, other):
        logging.getLogger('asyncio').error('Task exception was never retrieved',
                                           exc_info=(ValueError, error, None))
    assert [record.exc_info[1] for record in caplog.records] == [other]
