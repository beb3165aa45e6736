"""Faults provoked for real: preemption, SIGKILL during a save, NaNs, read-only evaluation.

Each test stops or breaks a real run and checks the outcome a user sees: the message, the exit
status, which checkpoint steps exist afterwards, and that the resumed run's parameters equal an
uninterrupted run's.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from seg_jax import (checkpoints, evaluate, losses, optim, parallel, preemption, restore, train,
                     workdir_lock)
from seg_jax import health as run_health
from seg_jax.data import pipeline
from seg_jax.models import build_model
from seg_jax.history import read_history
from seg_jax.state import create_train_state
from test_train import tiny_config

# The interrupted runs: long enough that a signal sent after step 3 arrives well before the end.
RUN_STEPS = 12


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('synthetic'))


def train_command(data_dir: str, workdir, steps: int, *overrides: str) -> list[str]:
    """``python -m seg_jax.main`` on tests/tiny_config.py, the arguments of ``tiny_config``."""
    return ['--config', str(REPO / 'tests' / 'tiny_config.py'), '--workdir', str(workdir),
            f'--config.data.dir={data_dir}', f'--config.num_train_steps={steps}',
            f'--config.eval_every_steps={steps}', f'--config.checkpoint_every_steps={steps // 2}',
            *overrides]


def run_main(arguments: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_jax.main', *arguments], cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kwargs)


def saved_steps(workdir) -> list[str]:
    """The entries of the checkpoint folder (finished steps and orbax temporary folders)."""
    return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def restored_params(data_dir: str, workdir, steps: int):
    state = restore.restore_checkpoint(tiny_config(data_dir, steps), str(workdir), 'latest',
                                        parallel.data_mesh())
    return int(state.step), jax.device_get(state.params)


def assert_same_params(a, b) -> None:
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
                           a, b)


@pytest.fixture(scope='module')
def uninterrupted_params(data_dir, tmp_path_factory):
    """The parameters after ``RUN_STEPS`` steps of a run that nothing stopped."""
    state = train.train_and_evaluate(tiny_config(data_dir, RUN_STEPS),
                                     str(tmp_path_factory.mktemp('uninterrupted')))
    return jax.device_get(state.params)


def test_sigterm_saves_the_current_step_and_the_same_command_resumes(data_dir, tmp_path,
                                                                    uninterrupted_params):
    workdir = tmp_path / 'preempted'
    command = [sys.executable, '-m', 'seg_jax.main',
               *train_command(data_dir, workdir, RUN_STEPS,
                              f'--config.checkpoint_every_steps={RUN_STEPS}',
                              '--config.log_every_steps=1')]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    history = workdir / 'history.jsonl'
    deadline = time.monotonic() + 300
    while not (history.exists() and len(read_history(str(history))) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # what SLURM and TPU maintenance send
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == preemption.EXIT_STATUS == 75, stderr[-3000:]
    stopped = [e['step'] for e in read_history(str(history))][-1]
    assert 3 <= stopped < RUN_STEPS
    assert (f'Stopped by SIGTERM (preemption) after step {stopped}: saved the checkpoint of '
            f'step {stopped} in {workdir / "checkpoints"}. Rerun the same command') in stderr
    assert 'Traceback' not in stderr
    assert saved_steps(workdir) == sorted([str(stopped), 'best'])  # no best yet: no eval ran
    assert restored_params(data_dir, workdir, RUN_STEPS)[0] == stopped

    rerun = run_main(command[3:])  # the same command
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    logged = [e['step'] for e in read_history(str(history)) if e['kind'] == 'train']
    assert logged == list(range(1, RUN_STEPS + 1))  # each step trained once
    step, params = restored_params(data_dir, workdir, RUN_STEPS)
    assert step == RUN_STEPS
    assert_same_params(params, uninterrupted_params)


def test_sigkill_during_a_save_keeps_the_previous_checkpoint_and_the_rerun_resumes(
        data_dir, tmp_path, uninterrupted_params):
    workdir = tmp_path / 'killed'
    arguments = train_command(data_dir, workdir, RUN_STEPS,
                              '--config.checkpoint_every_steps=2')
    process = subprocess.Popen([sys.executable, str(REPO / 'tests' / 'stalled_commit.py'), '4',
                                *arguments], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:  # the arrays of step 4 are written; the commit is held back
        if line.startswith('STALLED'):
            break
    process.kill()  # SIGKILL: no handler, no cleanup
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    entries = saved_steps(workdir)
    assert '2' in entries and '4' not in entries
    assert any(e.startswith('4.orbax-checkpoint-tmp') for e in entries), entries
    assert restored_params(data_dir, workdir, RUN_STEPS)[0] == 2

    rerun = run_main(arguments)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert saved_steps(workdir) == ['10', '12', '8', 'best']  # keep_checkpoints=3
    step, params = restored_params(data_dir, workdir, RUN_STEPS)
    assert step == RUN_STEPS
    assert_same_params(params, uninterrupted_params)


def nan_images_from(first_bad: int, last_bad: int):
    """A ``make_train_step`` whose steps ``first_bad..last_bad`` (1-based) see NaN images."""
    make_step = train.make_train_step

    def make(*args):
        step, calls = make_step(*args), []

        def step_with_bad_data(state, batch, *rest):
            calls.append(1)
            if first_bad <= len(calls) <= last_bad:
                batch = {**batch, 'image': batch['image'] * np.nan}
            return step(state, batch, *rest)
        return step_with_bad_data
    return make


def all_finite(tree) -> bool:
    return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(tree)))


def test_skipped_nonfinite_steps_change_nothing_and_are_logged(data_dir, tmp_path, monkeypatch,
                                                               caplog):
    monkeypatch.setattr(train, 'make_train_step', nan_images_from(4, 5))
    config = tiny_config(data_dir, steps=8)
    config.skip_nonfinite_steps = 2
    config.checkpoint_every_steps = 2
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 8
    for count in (1, 2):
        assert f'Skipped {count} steps whose loss or gradients were not finite' in caplog.text
    history = read_history(str(tmp_path / 'history.jsonl'))
    train_events = [e for e in history if e['kind'] == 'train']
    assert [e['skipped_nonfinite_steps'] for e in train_events] == [0, 1, 2, 2]
    # Logged means leave the skipped steps out (each window of 2 steps has one finite step).
    assert all(e['loss'] is not None for e in train_events)
    # Every checkpoint holds finite parameters, optimiser state and statistics.
    with checkpoints.Checkpointer(tmp_path / 'checkpoints', keep=3, read_only=True) as ckpt:
        for step in ckpt.all_steps():
            restored = restore.restore_checkpoint(config, str(tmp_path), str(step),
                                                   parallel.data_mesh())
            assert all_finite((restored.params, restored.opt_state, restored.batch_stats)), step


def test_more_nonfinite_steps_than_allowed_stop_naming_them_and_the_causes(
        data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train, 'make_train_step', nan_images_from(3, 8))
    config = tiny_config(data_dir, steps=8)
    config.skip_nonfinite_steps = 1
    config.checkpoint_every_steps = 2
    with pytest.raises(run_health.NonFiniteLossError) as error:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    assert message.startswith('The loss became NaN or infinite at 2 steps, the first at step 3 '
                              'and the latest at step 4 (config.skip_nonfinite_steps=1)')
    for cause in ('config.optimizer.learning_rate', "compute_dtype='float32'", 'bad labels'):
        assert cause in message
    assert saved_steps(tmp_path) == ['2', 'best']


def test_nonfinite_gradients_with_a_finite_loss_are_caught(data_dir, monkeypatch):
    segmentation_loss = losses.segmentation_loss

    def loss_with_nan_gradients(outputs, labels, *args):
        loss, terms = segmentation_loss(outputs, labels, *args)
        # d sqrt(u)/du is infinite at u = 0: the gradient is NaN, the loss unchanged.
        return loss + 0.0 * jnp.sqrt(jnp.sum(jnp.square(outputs['out'] * 0))), terms

    monkeypatch.setattr(losses, 'segmentation_loss', loss_with_nan_gradients)
    config = tiny_config(data_dir)
    mesh = parallel.data_mesh()
    tx, schedule = optim.build_optimizer(config, total_steps=8, steps_per_epoch=2)
    state = create_train_state(build_model(config.model), tx, tuple(config.data.crop_size),
                               config.seed, mesh)
    before = jax.device_get(state.params)
    step = train.make_train_step(config.loss, config.optimizer, None, config.seed)
    batch = parallel.global_batch(next(pipeline.build_input(config, 'train')), mesh)
    state, logged, health = step(state, batch, run_health.initial(mesh), schedule)
    assert np.isfinite(float(logged['loss']))
    assert int(state.step) == 1  # the step counts, so the data moves on ...
    assert_same_params(jax.device_get(state.params), before)  # ... but nothing else changed
    with pytest.raises(run_health.NonFiniteLossError, match='^The gradients became NaN or infinite '
                       'at step 1 '):
        run_health.check(health, 0, '/checkpoints')


def tree_digest(folder) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> content hash), and every folder."""
    digest = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            digest[os.path.relpath(os.path.join(root, name), folder)] = 'folder'
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                digest[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digest


@pytest.fixture(scope='module')
def trained_workdir(data_dir, tmp_path_factory):
    """A finished 4-step run: checkpoints 2 and 4, and the best one."""
    workdir = tmp_path_factory.mktemp('trained')
    train.train_and_evaluate(tiny_config(data_dir, steps=4), str(workdir))
    return workdir


def test_eval_never_writes_into_the_checkpoint_folder(data_dir, trained_workdir):
    config = tiny_config(data_dir, steps=4)
    before = tree_digest(trained_workdir / 'checkpoints')
    modified = os.stat(trained_workdir / 'checkpoints').st_mtime_ns
    for which in ('latest', 'best', '2'):
        config.eval.checkpoint = which
        evaluate.evaluate_checkpoint(config, str(trained_workdir))
    assert tree_digest(trained_workdir / 'checkpoints') == before
    assert os.stat(trained_workdir / 'checkpoints').st_mtime_ns == modified
    assert (trained_workdir / 'eval' / 'validation_2_step_whole.json').exists()  # beside it


def largest_file(folder) -> str:
    """The biggest file under ``folder``; in a checkpoint step, one that holds array chunks."""
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return max(paths, key=os.path.getsize)


def test_a_damaged_checkpoint_is_named_at_eval_and_moved_aside_at_resume(data_dir,
                                                                        trained_workdir, tmp_path):
    workdir = tmp_path / 'damaged'
    shutil.copytree(trained_workdir, workdir)
    folder, aside = workdir / 'checkpoints', workdir / 'damaged_checkpoints'
    for copy in ('4', 'best/4'):  # both copies of the latest step, the periodic and the best
        data = largest_file(folder / copy)
        os.truncate(data, os.path.getsize(data) // 2)
    damaged = {copy: tree_digest(folder / copy) for copy in ('4', 'best/4')}
    reason = (r'the array \S+ cannot be read( from \S+)? \(OUT_OF_RANGE: Requested byte range '
              r'\[\d+, \d+\) is not valid for value of size \d+\)')
    command = train_command(data_dir, workdir, 4)

    evaluation = run_main(['--mode', 'eval', *command])  # of 'latest', step 4
    assert evaluation.returncode == 1, evaluation.stderr[-3000:]
    errors = [line for line in evaluation.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, evaluation.stderr[-3000:]
    assert re.fullmatch(
        rf'error: Checkpoint step 4 in {re.escape(str(folder / "4"))} is damaged: {reason}\. '
        r'The steps that restore are \[2\] \(evaluate or predict one with '
        r'--config\.eval\.checkpoint=2\); rerunning the training moves it to '
        r'<workdir>/damaged_checkpoints/ and resumes from the newest intact step\.',
        errors[0]), errors
    assert 'Traceback' not in evaluation.stderr
    assert {copy: tree_digest(folder / copy) for copy in damaged} == damaged  # nothing moved
    assert not aside.exists()

    rerun = run_main(command)  # the same command
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for copy in damaged:
        assert re.search(rf'Skipped checkpoint step 4, which is damaged: {reason}; moved '
                         rf'{re.escape(str(folder / copy))} to {re.escape(str(aside / copy))} '
                         r'and resumed from step 2\.\n', rerun.stderr), rerun.stderr[-3000:]
    assert f'Resumed from step 2 in {folder}.' in rerun.stderr
    assert {copy: tree_digest(aside / copy) for copy in damaged} == damaged  # kept intact
    assert saved_steps(workdir) == ['2', '4', 'best'] and '4' in os.listdir(folder / 'best')
    step, params = restored_params(data_dir, workdir, 4)
    assert step == 4
    assert_same_params(params, restored_params(data_dir, trained_workdir, 4)[1])


@pytest.mark.parametrize('mode,overrides,message', [
    ('train', ['--config.global_batch_size=7'], 'config.global_batch_size=7 must be a positive '
     'multiple of the number of devices, 8, to split evenly over them; set '
     '--config.global_batch_size=8.'),
    ('train', ['--config.data.crop_size=(512, 1024)'], 'config.data.crop_size=(512, 1024) is '
     'larger than the training images (64x128) even at the largest rescale factor 1.5 of '
     'config.data.scale_range (96x192), so every crop would be partly padding. Use a crop of at '
     'most 96x192, e.g. --config.data.crop_size="(96, 192)"'),
    ('eval', ['--config.model.width=0.25'], "model.width is 0.125 there but 0.25 in this "
     'config. Evaluate with the config it was trained with, e.g. --config.model.width=0.125.'),
    ('eval', ['--config.model.name=resnet_aspp', '--config.model.backbone=resnet18'],
     "model.name is 'unet' there but 'resnet_aspp' in this config; model.backbone is None there "
     "but 'resnet18' in this config. Evaluate with the config it was trained with, e.g. "
     '--config.model.name=unet --config.model.backbone=None.'),
])
def test_config_faults_of_a_run_are_one_line_errors_and_change_nothing(
        data_dir, trained_workdir, tmp_path, mode, overrides, message):
    workdir = trained_workdir if mode == 'eval' else tmp_path / 'new'
    before = tree_digest(workdir) if mode == 'eval' else None
    result = run_main(['--mode', mode, *train_command(data_dir, workdir, 4, *overrides)])
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and message in errors[0], errors
    assert 'Traceback' not in result.stderr
    if mode == 'eval':
        assert tree_digest(workdir) == before
    else:  # refused before anything was written: the corrected command can use the workdir
        assert not workdir.exists()


def test_parameters_that_overflow_on_a_finite_step_are_never_saved(data_dir, tmp_path):
    config = tiny_config(data_dir, steps=4)
    # A finite loss (< 1e30) and finite gradients (~1e30 x the dice gradient), but an update
    # (1e20 x those) beyond float32's largest value, ~3.4e38.
    config.loss.name, config.loss.dice_weight = 'ce_dice', 1e30
    config.optimizer.name, config.optimizer.learning_rate = 'sgd', 1e20
    config.log_every_steps = config.checkpoint_every_steps = 1
    with pytest.raises(run_health.NonFiniteLossError, match=r'^The parameters or optimiser state '
                       r'became NaN or infinite by step 1 although every loss and gradient was '
                       r'finite; they were not saved'):
        train.train_and_evaluate(config, str(tmp_path))
    assert saved_steps(tmp_path) == ['best']  # no step was saved


def test_a_second_training_is_refused_and_ctrl_c_saves_and_resumes_like_sigterm(data_dir,
                                                                                tmp_path):
    workdir = tmp_path / 'busy'
    # Long enough to be running still when the second trainer has started and been refused.
    arguments = train_command(data_dir, workdir, 10_000, '--config.log_every_steps=1')
    first = subprocess.Popen([sys.executable, '-m', 'seg_jax.main', *arguments], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = workdir / 'history.jsonl'
    deadline = time.monotonic() + 300
    while not (history.exists() and len(read_history(str(history))) >= 3):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)

    second = run_main(arguments)  # the same command again, e.g. a requeued job
    assert second.returncode == 1, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, second.stderr[-3000:]
    assert errors[0].startswith(f'error: {workdir} is in use by another training (host '
                                f'{socket.gethostname()}, pid {first.pid}, started '), errors
    assert 'Traceback' not in second.stderr
    assert first.poll() is None  # the first training goes on

    first.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == preemption.EXIT_STATUS, stderr[-3000:]
    stopped = [e['step'] for e in read_history(str(history))][-1]
    assert (f'Stopped by Ctrl-C (SIGINT) after step {stopped}: saved the checkpoint of step '
            f'{stopped} in {workdir / "checkpoints"}. Rerun the same command') in stderr
    assert 'Traceback' not in stderr
    assert saved_steps(workdir) == sorted([str(stopped), 'best'])
    assert not (workdir / workdir_lock.LOCK_FILE).exists()

    resumed = run_main(train_command(data_dir, workdir, stopped + 2, '--config.log_every_steps=1'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logged = [e['step'] for e in read_history(str(history)) if e['kind'] == 'train']
    assert logged == list(range(1, stopped + 3))  # each step trained once


def test_a_second_ctrl_c_stops_at_once_and_the_saved_checkpoints_stay(data_dir, tmp_path):
    workdir = tmp_path / 'interrupted'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tests' / 'interrupted_at_step.py'), '5', '2',
         *train_command(data_dir, workdir, RUN_STEPS, '--config.checkpoint_every_steps=2')],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == preemption.INTERRUPTED_EXIT_STATUS == 130, result.stderr[-3000:]
    assert ('Ctrl-C: saving a checkpoint after this step, then stopping. Press Ctrl-C again to '
            'stop at once without saving.') in result.stderr
    assert ('Stopped at once by a second Ctrl-C, without saving: the newest saved checkpoint, '
            f'step 4, is intact in {workdir / "checkpoints"}; rerun the same command to resume '
            'from it.') in result.stderr
    assert 'Traceback' not in result.stderr
    assert saved_steps(workdir) == ['2', '4', 'best']
    assert restored_params(data_dir, workdir, RUN_STEPS)[0] == 4
    assert not (workdir / workdir_lock.LOCK_FILE).exists()


def test_eval_runs_beside_a_training_that_holds_the_workdir(data_dir, trained_workdir):
    lock = trained_workdir / workdir_lock.LOCK_FILE
    lock.write_text(json.dumps({**workdir_lock.this_process(), 'pid': os.getppid(),
                                'process_start': workdir_lock._process_start(os.getppid())}))
    try:
        config = tiny_config(data_dir, steps=4)
        config.eval.checkpoint = '4'
        evaluate.evaluate_checkpoint(config, str(trained_workdir))  # reads only: takes no lock
        assert json.loads(lock.read_text())['pid'] == os.getppid()
    finally:
        lock.unlink()


def _user_namespaces_work() -> bool:
    """Whether this machine lets a test mount its own small file systems (``unshare``)."""
    try:
        return subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'mount', '-t',
                               'tmpfs', '-o', 'size=1m', 'tmpfs', '/mnt'],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# On small real file systems (tmpfs, in a private mount namespace): read-only, smaller than one
# checkpoint, and full during the save of step 4 (one checkpoint fits, two do not), then
# enlarged and rerun. Each run prints a marker, its exit status and what is left in the folder.
_SMALL_DISK_SCRIPT = r'''
set -u
disk=$1; shift
run() { echo "@@ $1"; shift; "$@"; echo "exit: $?"; ls "$disk/run/checkpoints" 2>/dev/null; }
mkdir -p "$disk"
mount -t tmpfs -o size=1m,ro tmpfs "$disk"
run read-only "$@"
umount "$disk"; mount -t tmpfs -o size=1m tmpfs "$disk"
run too-small "$@"
umount "$disk"; mount -t tmpfs -o size=12m tmpfs "$disk"
run fills-up "$@"
mount -o remount,size=64m "$disk"
run enlarged "$@"
'''


def _outcomes(output: str) -> dict[str, tuple[int, list[str], list[str]]]:
    """Per run of _SMALL_DISK_SCRIPT: exit status, its error lines, the checkpoint folder."""
    outcomes = {}
    for part in output.split('@@ ')[1:]:
        name, *lines = part.splitlines()
        end = next(i for i, line in enumerate(lines) if line.startswith('exit: '))
        outcomes[name] = (int(lines[end].split()[1]),
                          [line for line in lines[:end] if line.startswith('error:')],
                          lines[end + 1:])
    return outcomes


@pytest.mark.skipif(not _user_namespaces_work(),
                    reason='needs unshare to mount small file systems; '
                           'tests/test_write_failures.py injects the same errors everywhere')
def test_full_read_only_and_too_small_disks_stop_with_one_message_and_lose_nothing(
        data_dir, tmp_path):
    disk = tmp_path / 'disk'
    workdir, folder = disk / 'run', disk / 'run' / 'checkpoints'
    command = [sys.executable, '-m', 'seg_jax.main',
               *train_command(data_dir, workdir, 8, '--config.checkpoint_every_steps=2')]
    result = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'bash', '-c',
                             _SMALL_DISK_SCRIPT, 'small_disk', str(disk), *command], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=900)
    output = result.stdout
    assert 'Traceback' not in output, output[-5000:]
    outcomes = _outcomes(output)
    status, errors, _ = outcomes['read-only']
    assert status == 1 and len(errors) == 1, output[-5000:]
    assert errors[0].startswith(f'error: Cannot write to the workdir {workdir} (Read-only file '
                                'system): training writes its checkpoints and reports there.')
    status, errors, left = outcomes['too-small']
    assert status == 1 and len(errors) == 1, output[-5000:]
    assert re.match(rf'error: {folder} has 1\.0 MiB free, less than one checkpoint of this '
                    r'model \(\d+\.\d MiB; ', errors[0]), errors
    assert left == ['best']  # refused before any save: only the best checkpoints' empty folder
    status, errors, left = outcomes['fills-up']
    assert status == 1 and len(errors) == 1, output[-5000:]
    assert re.match(rf'error: Could not write the checkpoint of step 4 in {folder}: no space is '
                    r'left on the device \(\d+\.\d MiB free there now\)\. The newest complete '
                    r'checkpoint, step 2, is intact; the partial one was removed\. To go on, '
                    r'free space there, .* then rerun the same command to resume from step '
                    r'2\.$', errors[0]), errors
    assert left == ['2', 'best']  # no temporary folder left behind
    status, _, left = outcomes['enlarged']
    assert status == 0, output[-5000:]
    assert left == ['4', '6', '8', 'best']
