"""Multi-process jobs on loopback: the same results as one process, collective checkpoints,
launch/local_multiprocess.sh, and clear errors instead of hangs.

Every job here is real: separate Python processes with their own fake CPU devices joined by
``jax.distributed`` through a coordinator on 127.0.0.1, talking over gloo.
"""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import tiny_config
from conftest import REPO, xla_flags
from seg_jax import parallel
from seg_jax.restore import restore_checkpoint
from seg_jax.data.labels import IGNORE_LABEL, LABEL_ID_TO_TRAIN_ID

LAUNCHER = REPO / 'launch' / 'local_multiprocess.sh'
TINY_CONFIG = f'--config={REPO / "tests" / "tiny_config.py"}'
TIMEOUT_S = 600  # a hung job fails the test instead of the whole suite
NUM_VAL = 7  # not a multiple of the eval batch (4), nor of the process count (2)
STEPS = 3
# Tiny config, SGD (Adam's normalisation amplifies reduction-order noise in near-zero
# gradients), a checkpoint after every step, eval at the end.
TRAIN_FLAGS = (TINY_CONFIG,
               f'--config.data.synthetic.num_val={NUM_VAL}', '--config.eval.batch_size=4',
               f'--config.num_train_steps={STEPS}', '--config.checkpoint_every_steps=1',
               f'--config.eval_every_steps={STEPS}', '--config.optimizer.name=sgd',
               '--config.optimizer.learning_rate=0.01')


def job_environment(devices_per_process: int) -> dict[str, str]:
    """This environment with ``devices_per_process`` fake CPU devices instead of the suite's 8."""
    environment = dict(os.environ, JAX_PLATFORMS='cpu', PYTHON=sys.executable,
                       DEVICES_PER_PROCESS=str(devices_per_process))
    environment['XLA_FLAGS'] = xla_flags(devices_per_process)
    return environment


def launch(num_processes: int, *flags: str, cwd, devices: int = 2) -> subprocess.CompletedProcess:
    """``launch/local_multiprocess.sh num_processes flags...``."""
    return subprocess.run([str(LAUNCHER), str(num_processes), *flags], cwd=cwd,
                          env=job_environment(devices), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def run_single(*flags: str, cwd, devices: int) -> subprocess.CompletedProcess:
    """One ``python -m seg_jax.main`` process with ``devices`` devices."""
    return subprocess.run([sys.executable, '-m', 'seg_jax.main', *flags], cwd=cwd,
                          env=job_environment(devices), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def start_process(process_id: int, port: int, *flags: str, cwd) -> subprocess.Popen:
    """One process of a 2-process job started by hand, for jobs the launcher cannot make."""
    return subprocess.Popen(
        [sys.executable, '-m', 'seg_jax.main', f'--coordinator_address=127.0.0.1:{port}',
         '--num_processes=2', f'--process_id={process_id}', *flags],
        cwd=cwd, env=job_environment(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def read_eval(workdir, step: int = STEPS) -> dict:
    with open(os.path.join(workdir, 'eval', f'validation_{step}.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, str]:
    """The same training run as 2 processes x 2 devices and as 1 process x 4 devices."""
    root = tmp_path_factory.mktemp('multihost')
    data = f'--config.data.dir={root / "data"}'
    workdirs = {'two_processes': str(root / 'two_processes'),
                'one_process': str(root / 'one_process')}
    result = launch(2, *TRAIN_FLAGS, data, f'--workdir={workdirs["two_processes"]}', cwd=root)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    result = run_single(*TRAIN_FLAGS, data, f'--workdir={workdirs["one_process"]}', cwd=root,
                        devices=4)
    assert result.returncode == 0, result.stderr[-5000:]
    return {**workdirs, 'data': str(root / 'data'), 'root': str(root)}


def restore(workdir: str, data_dir: str, step: int):
    """A run's checkpoint ``step``, restored in this (single, 8-device) process."""
    config = tiny_config.get_config()
    config.data.dir = data_dir
    config.data.synthetic.num_val = NUM_VAL
    config.optimizer.name = 'sgd'
    config.num_train_steps = STEPS
    return restore_checkpoint(config, workdir, str(step), parallel.data_mesh())


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_two_processes_train_what_one_process_trains(runs):
    # The checkpoints were written collectively by 2 processes and by 1, and restore here in a
    # third layout (1 process, 8 devices).
    for step, params_tolerance, stats_tolerance in ((1, 1e-5, 1e-5), (STEPS, 5e-4, 1e-3)):
        two = restore(runs['two_processes'], runs['data'], step)
        one = restore(runs['one_process'], runs['data'], step)
        assert int(two.step) == int(one.step) == step
        # Only the order of the cross-device sums differs (gloo between processes), a float
        # rounding that this tiny BatchNorm network amplifies step by step: measured 7e-7
        # after one step, 1e-4 after three (1e-4 in the BatchNorm statistics).
        assert max_difference(two.params, one.params) < params_tolerance
        assert max_difference(two.batch_stats, one.batch_stats) < stats_tolerance
    # Steps 2 and 3 alone move the parameters by more than 10x that tolerance, so it tells a
    # different training (other batches, a lost gradient) apart.
    moved = max_difference(restore(runs['one_process'], runs['data'], STEPS).params,
                           restore(runs['one_process'], runs['data'], 1).params)
    assert moved > 10 * 5e-4


def test_two_processes_evaluate_what_one_process_evaluates(runs):
    two, one = read_eval(runs['two_processes']), read_eval(runs['one_process'])
    assert two['num_images'] == one['num_images'] == NUM_VAL
    for metric in ('miou', 'pixel_accuracy', 'loss'):
        assert two[metric] == pytest.approx(one[metric], abs=1e-3)


def labelled_pixels(data_dir: str) -> tuple[int, int]:
    """(all pixels, labelled pixels) of the validation labels on disk."""
    total = labelled = 0
    for path in glob.glob(os.path.join(data_dir, 'gtFine', 'val', '*', '*_labelIds.png')):
        train_ids = np.asarray(LABEL_ID_TO_TRAIN_ID)[np.asarray(Image.open(path))]
        total += train_ids.size
        labelled += int(np.sum(train_ids != IGNORE_LABEL))
    return total, labelled


def test_eval_counts_every_image_once_across_two_processes(runs):
    # 7 images over 2 processes with 2 images per process per batch: process 0 reads 4, process
    # 1 reads 3 and pads one slot; the padding must count nothing and no image twice.
    confusion = np.asarray(read_eval(runs['two_processes'])['confusion'])
    total, labelled = labelled_pixels(runs['data'])
    assert total == NUM_VAL * 64 * 128
    assert confusion.sum() == total  # void ground truth has its own row
    assert confusion[:-1].sum() == labelled


def test_a_checkpoint_from_two_processes_evaluates_in_one(runs, tmp_path):
    workdir = tmp_path / 'copy'  # --mode eval writes its report into the workdir
    shutil.copytree(runs['two_processes'], workdir)
    result = run_single(*TRAIN_FLAGS, f'--config.data.dir={runs["data"]}', '--mode=eval',
                        f'--workdir={workdir}', cwd=tmp_path, devices=1)
    assert result.returncode == 0, result.stderr[-5000:]
    assert f'Step {STEPS}, validation ({NUM_VAL} images' in result.stdout
    alone = json.loads((workdir / 'eval' / f'validation_{STEPS}_latest_whole.json').read_text())
    together = read_eval(runs['two_processes'])
    # The same parameters: the eval differs at most by rounding in the forward pass.
    assert np.abs(np.subtract(alone['confusion'], together['confusion'])).sum() <= 20
    assert alone['miou'] == pytest.approx(together['miou'], abs=1e-4)


def test_two_processes_export_and_predict_each_image_once(runs, tmp_path):
    """Each process writes the images of its share: together every one, once, as one process
    writes them (up to the forward pass's rounding)."""
    workdir = tmp_path / 'copy'  # --mode eval and predict write reports into the workdir
    shutil.copytree(runs['two_processes'], workdir)
    photos = tmp_path / 'photos'
    (photos / 'phone').mkdir(parents=True)
    for path in sorted(glob.glob(os.path.join(runs['data'], 'leftImg8bit', 'val', '*',
                                              '*.png')))[:3]:
        shutil.copy(path, photos)
    rng = np.random.default_rng(0)
    for k in range(3):  # a second size, and more images than one process's share
        Image.fromarray(rng.integers(0, 256, (40, 72, 3), np.uint8)).save(
            photos / 'phone' / f'shot{k}.jpg')
    outputs = {}
    for job in ('two', 'one'):
        flags = (*TRAIN_FLAGS, f'--config.data.dir={runs["data"]}', f'--workdir={workdir}')
        export = [*flags, '--mode=eval', f'--config.eval.export_dir={tmp_path / job / "export"}']
        predict = [*flags, '--mode=predict', f'--config.predict.input={photos}',
                   f'--config.predict.output={tmp_path / job / "predictions"}']
        for command in (export, predict):
            result = (launch(2, *command, cwd=tmp_path) if job == 'two'
                      else run_single(*command, cwd=tmp_path, devices=4))
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        files = sorted(str(path.relative_to(tmp_path / job)) for path in (tmp_path / job).rglob('*'))
        assert all(path.endswith('.png') or os.path.isdir(tmp_path / job / path) for path in files)
        outputs[job] = [path for path in files if path.endswith('.png')]
    assert outputs['two'] == outputs['one']
    assert len([path for path in outputs['two'] if path.startswith('export')]) == NUM_VAL
    assert len([path for path in outputs['two'] if path.startswith('predictions')]) == 6 * 3
    for path in outputs['two']:
        two = np.asarray(Image.open(tmp_path / 'two' / path))
        one = np.asarray(Image.open(tmp_path / 'one' / path))
        assert two.shape == one.shape
        assert np.mean(two != one) < 1e-3, path


def test_only_process_zero_writes_reports(runs):
    workdir = runs['two_processes']
    with open(os.path.join(workdir, 'history.jsonl')) as f:
        events = [json.loads(line) for line in f]
    # One line per event, not one per process.
    assert [e['step'] for e in events if e['kind'] == 'eval'] == [STEPS]
    assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2', '3', 'best']
    leftovers = [name for name in os.listdir(workdir) if name.endswith('.partial')]
    assert not leftovers


def test_local_multiprocess_launcher_runs_the_demo(tmp_path):
    # The demo's config, its data and network shrunk as tests/tiny_config.py shrinks them.
    result = launch(2, f'--config={REPO / "configs" / "demo.py"}', f'--workdir={tmp_path / "w"}',
                    f'--config.data.dir={tmp_path / "data"}', '--config.num_train_steps=2',
                    '--config.data.synthetic.num_train=16', '--config.data.synthetic.num_val=4',
                    '--config.data.synthetic.num_test=1', '--config.data.synthetic.height=64',
                    '--config.data.synthetic.width=128', '--config.data.crop_size=(64, 128)',
                    '--config.model.width=0.125', '--config.schedule.warmup_steps=0',
                    cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert '[process 0] Step 2, validation (4 images' in result.stdout
    assert '[process 1] Step 2' not in result.stdout  # reports come from process 0 alone
    assert 'Process 1 of 2 joined: 2 local and 4 global devices.' in result.stdout
    assert (tmp_path / 'w' / 'checkpoints' / '2').is_dir()


def test_a_failing_process_stops_the_whole_local_job(tmp_path):
    # 6 does not split over 2 processes x 2 devices: every process fails before training.
    result = launch(2, TINY_CONFIG, f'--workdir={tmp_path / "w"}',
                    f'--config.data.dir={tmp_path / "data"}', '--config.global_batch_size=6',
                    cwd=tmp_path)
    assert result.returncode == 1
    assert ('config.global_batch_size=6 must be a positive multiple of the number of devices, '
            '4') in result.stdout
    assert 'set --config.global_batch_size=8' in result.stdout
    assert 'Traceback' not in result.stdout


def test_processes_with_different_configs_refuse_to_run(tmp_path):
    port = free_port()
    flags = (TINY_CONFIG, '--mode=summary')
    processes = [start_process(0, port, *flags, cwd=tmp_path),
                 start_process(1, port, *flags, '--config.model.width=0.25', cwd=tmp_path)]
    outputs = [process.communicate(timeout=TIMEOUT_S) for process in processes]
    assert [process.returncode for process in processes] == [1, 1]
    for _, stderr in outputs:
        assert 'Process(es) 1 were started with a different config or flags' in stderr
    assert ('differs (process 0 -> here) in config.model.width: 0.125 -> 0.25'
            in outputs[1][1])
    assert '"parameters"' not in outputs[0][0]  # nothing was summarised


def summary_joining(port: int, process_id: int, *flags: str, cwd
                    ) -> subprocess.CompletedProcess:
    """``--mode summary`` as process ``process_id`` of 2, alone: the other never comes."""
    return run_single(TINY_CONFIG, '--mode=summary', f'--coordinator_address=127.0.0.1:{port}',
                      '--num_processes=2', f'--process_id={process_id}', *flags, cwd=cwd,
                      devices=1)


def test_an_unreachable_coordinator_is_a_clear_error_not_a_hang(tmp_path):
    port = free_port()
    result = summary_joining(port, 1, '--distributed_timeout=3', cwd=tmp_path)
    assert result.returncode == 1
    assert (f'process 1 of 2 could not join the job at 127.0.0.1:{port} within 3 s: nothing '
            f'answers at 127.0.0.1:{port}') in result.stderr


def test_a_missing_process_is_a_clear_error_not_a_hang(tmp_path):
    result = summary_joining(free_port(), 0, '--distributed_timeout=3', cwd=tmp_path)
    assert result.returncode == 1
    assert 'process 0 of 2 could not join' in result.stderr
    assert 'not all 2 processes joined' in result.stderr


def test_a_taken_coordinator_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(('', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = summary_joining(port, 0, cwd=tmp_path)
    assert result.returncode == 1
    assert f'Process 0 cannot start the coordinator on port {port}' in result.stderr


@pytest.mark.parametrize('flags, message', [
    (('--num_processes=2',), 'needs all of --coordinator_address, --num_processes, '
                             '--process_id; only --num_processes were given'),
    (('--coordinator_address=localhost', '--num_processes=2', '--process_id=0'),
     "--coordinator_address='localhost' must be HOST:PORT"),
    (('--coordinator_address=127.0.0.1:1234', '--num_processes=2', '--process_id=2'),
     '--process_id=2 must be in 0..1 for --num_processes=2'),
])
def test_incomplete_job_flags_are_clear_errors(tmp_path, flags, message):
    result = run_single(TINY_CONFIG, '--mode=summary',
                        *flags, cwd=tmp_path, devices=1)
    assert result.returncode == 1
    assert message in result.stderr and 'Traceback' not in result.stderr


def test_a_single_process_run_needs_no_flags(tmp_path):
    result = run_single(TINY_CONFIG, '--mode=summary',
                        cwd=tmp_path, devices=1)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)['model'] == 'unet'


FAKE_SRUN = '''#!/usr/bin/env bash
# Stands in for srun: runs the command as 2 tasks of one node, with SLURM's environment.
while [[ "$1" == --* ]]; do shift; done
pids=()
for task in 0 1; do
  SLURM_JOB_ID=4242 SLURM_NTASKS=2 SLURM_PROCID=$task SLURM_LOCALID=$task \\
    SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 "$@" > "task$task.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
'''


def test_the_slurm_script_joins_the_job_slurm_describes(tmp_path):
    # No coordinator flags: JAX's cluster detection reads the (fake) srun's SLURM variables.
    srun = tmp_path / 'bin' / 'srun'
    srun.parent.mkdir()
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    environment = job_environment(2)
    environment.update(PATH=f'{srun.parent}:{environment["PATH"]}',
                       JAX_COORDINATOR_PORT=str(free_port()), SLURM_SUBMIT_DIR=str(tmp_path))
    result = subprocess.run(
        ['bash', str(REPO / 'launch' / 'slurm_gpu.sbatch'),
         TINY_CONFIG, '--mode=summary'],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S)
    logs = [(tmp_path / f'task{task}.log').read_text() for task in (0, 1)]
    assert result.returncode == 0, '\n'.join(logs)[-5000:]
    for task, log in enumerate(logs):
        assert f'Process {task} of 2 joined: 2 local and 4 global devices.' in log
    assert '"model": "unet"' in logs[0] and '"model"' not in logs[1]


def test_the_tpu_script_runs_the_same_command_on_every_worker(tmp_path):
    result = subprocess.run(
        [str(REPO / 'launch' / 'tpu_vm.sh'), 'my-tpu', 'us-central2-b',
         '--config=configs/deeplabv3_r50.py', '--workdir=/mnt/shared/a run'],
        env=dict(os.environ, DRY_RUN='1', STEPS='install,run'), cwd=tmp_path,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    install, run = result.stdout.splitlines()
    for command in (install, run):
        assert command.startswith('gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b '
                                  '--worker=all --command ')
    jax_version = re.search(r'^jax==(\S+)$', (REPO / 'requirements.txt').read_text(),
                            flags=re.MULTILINE).group(1)
    assert f"pip install -q 'jax[tpu]=={jax_version}'" in shlex.split(install)[-1]
    # The flags reach every worker's seg_jax.main intact, spaces included.
    remote_command = shlex.split(shlex.split(run)[-1])
    assert remote_command[-3:] == ['seg_jax.main', '--config=configs/deeplabv3_r50.py',
                                   '--workdir=/mnt/shared/a run']


def test_sigterm_to_one_process_stops_the_job_at_one_step_with_one_checkpoint(tmp_path):
    """A preemption notice reaching one host (as TPU maintenance may): JAX's preemption service
    tells the other, both stop after the same step and save one collective checkpoint."""
    steps, port, workdir = 40, free_port(), tmp_path / 'run'
    flags = (TINY_CONFIG, f'--workdir={workdir}', f'--config.data.dir={tmp_path / "data"}',
             f'--config.num_train_steps={steps}', f'--config.checkpoint_every_steps={steps}',
             f'--config.eval_every_steps={steps}', '--config.log_every_steps=1')
    processes = [start_process(i, port, *flags, cwd=tmp_path) for i in range(2)]
    history = workdir / 'history.jsonl'
    while not (history.exists() and len(history.read_text().splitlines()) >= 3):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [process.communicate(timeout=TIMEOUT_S) for process in processes]
    assert [process.returncode for process in processes] == [75, 75], outputs
    stopped = {int(re.search(r'Stopped by SIGTERM \(preemption\) after step (\d+)', stderr)[1])
               for _, stderr in outputs}
    assert len(stopped) == 1, stopped  # the same step in both processes
    [step] = stopped
    assert 3 <= step < steps
    assert sorted(os.listdir(workdir / 'checkpoints')) == [str(step), 'best']
    config = tiny_config.get_config()
    config.data.dir, config.num_train_steps = str(tmp_path / 'data'), steps
    state = restore_checkpoint(config, str(workdir), "latest", parallel.data_mesh())
    assert int(state.step) == step
