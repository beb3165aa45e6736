"""The workdir's training lock: who holds it, when it is stale, and what a refused trainer reads.

Two real trainings on one workdir are in tests/test_reliability.py; these tests check the lock's
rules on lock files written as a holder would have left them.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from seg_jax import workdir_lock
from seg_jax.workdir_lock import LOCK_FILE, WorkdirInUseError


def write_lock(workdir, **fields) -> None:
    holder = {**workdir_lock.this_process(), **fields}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, LOCK_FILE), 'w') as f:
        json.dump(holder, f)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_the_lock_is_held_for_the_block_and_released_after_it(tmp_path):
    with workdir_lock.hold(str(tmp_path)):
        with open(tmp_path / LOCK_FILE) as f:
            holder = json.load(f)
        assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_when_the_block_raises_and_a_created_workdir_is_removed(tmp_path):
    workdir = tmp_path / 'new'
    with pytest.raises(KeyboardInterrupt):
        with workdir_lock.hold(str(workdir)):
            raise KeyboardInterrupt
    assert not workdir.exists()  # it created the folder and nothing else was written there


def test_a_live_holder_refuses_a_second_trainer_naming_it(tmp_path):
    write_lock(tmp_path, pid=os.getppid(), process_start=workdir_lock._process_start(
        os.getppid()), started='2026-12-01T10:00:00+00:00', command='python -m seg_jax.main A')
    with pytest.raises(WorkdirInUseError, match=(
            rf'^{tmp_path} is in use by another training \(host {socket.gethostname()}, pid '
            rf'{os.getppid()}, started 2026-12-01T10:00:00\+00:00, command: python -m '
            r'seg_jax.main A\)\. .*Wait for it to finish, stop it .*or train in another '
            rf'--workdir\. If that job is gone .*remove {tmp_path / LOCK_FILE} and rerun\.$')):
        workdir_lock.acquire(str(tmp_path))
    with open(tmp_path / LOCK_FILE) as f:
        assert json.load(f)['command'] == 'python -m seg_jax.main A'  # left as it was


def test_a_lock_on_another_host_is_never_taken_over(tmp_path):
    write_lock(tmp_path, host='node-17', pid=dead_pid())
    with pytest.raises(WorkdirInUseError, match='host node-17'):
        workdir_lock.acquire(str(tmp_path))


@pytest.mark.parametrize('stale_fields,reason', [
    (lambda: {'pid': dead_pid()}, r'process \d+ is gone'),
    (lambda: {'pid': os.getppid(), 'process_start': '1'},
     'the pid now belongs to another process'),
    (lambda: {'boot_id': 'an-earlier-boot'}, 'this host has rebooted since'),
])
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, stale_fields, reason):
    if not os.path.exists('/proc/self/stat'):
        pytest.skip('pid start times and boot ids are read from /proc (Linux)')
    write_lock(tmp_path, **stale_fields(), command='python -m seg_jax.main killed')
    holder = workdir_lock.acquire(str(tmp_path))
    assert holder['pid'] == os.getpid()
    with open(tmp_path / LOCK_FILE) as f:
        assert json.load(f) == holder
    warnings = [r.getMessage() for r in caplog.records if 'stale training lock' in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert 'command: python -m seg_jax.main killed' in warnings[0]
    assert re.search(reason, warnings[0]), warnings[0]


def test_an_empty_lock_file_left_by_a_holder_killed_while_creating_it_is_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text('')
    assert workdir_lock.acquire(str(tmp_path))['pid'] == os.getpid()


def test_release_never_removes_another_holders_lock(tmp_path):
    mine = workdir_lock.acquire(str(tmp_path))
    write_lock(tmp_path, pid=os.getppid())  # e.g. taken over after this process was presumed dead
    workdir_lock.release(str(tmp_path), mine)
    assert (tmp_path / LOCK_FILE).exists()


def test_an_unwritable_workdir_is_named_before_anything_runs(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(WorkdirInUseError, match=(
            rf'^Cannot write to the workdir {blocker / "run"} \(.*\): training writes its '
            r'checkpoints and reports there\. Pass a --workdir on a writable file system')):
        workdir_lock.acquire(str(blocker / 'run'))
