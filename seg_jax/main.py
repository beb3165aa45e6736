"""Command-line entry point: ``python -m seg_jax.main --config configs/NAME.py --mode MODE``."""

import json
import os
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from seg_jax import console, distributed, preemption
from seg_jax.errors import SegJaxError
from seg_jax.flag_errors import parse_flags
from seg_jax.summary import model_summary


def print_summary(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode summary``: one JSON object on stdout (logs go to stderr), from process 0."""
    del workdir  # nothing is written
    summary = model_summary(config)
    if jax.process_index() == 0:
        print(json.dumps(summary))


def _require_workdir(workdir: str | None, mode: str) -> str:
    if not workdir:
        raise SegJaxError(f'--mode {mode} needs --workdir: the folder that holds (or will hold) '
                          'the run\'s checkpoints, logs and reports.')
    return workdir


def run_train(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode train``: trains (resuming from the workdir's latest checkpoint) and evaluates."""
    from seg_jax import train  # imports TensorFlow; summary does not need it
    from seg_jax.run_report import run_report
    workdir = _require_workdir(workdir, 'train')
    state = train.train_and_evaluate(config, workdir)
    if jax.process_index() == 0:
        print(run_report(workdir, int(jax.device_get(state.step)), sys.argv), flush=True)


def run_eval(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode eval``: restores ``config.eval.checkpoint`` and evaluates ``config.eval.split``."""
    from seg_jax import evaluate
    evaluate.evaluate_checkpoint(config, _require_workdir(workdir, 'eval'))


def run_predict(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode predict``: segments ``config.predict.input``'s images into PNGs."""
    from seg_jax import predict
    predict.predict(config, _require_workdir(workdir, 'predict'))


def run_export(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode export``: writes the restored model as segmenter.jax, a SavedModel and
    metadata.json, each checked against --mode predict's computation."""
    from seg_jax import export
    export.export_model(config, _require_workdir(workdir, 'export'))


def run_benchmark(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode benchmark``: one JSON object per measurement (speed, FLOP/s, memory, input)."""
    from seg_jax import benchmark
    benchmark.run_benchmark(config, workdir)


RUNNERS = {'summary': print_summary, 'train': run_train, 'eval': run_eval,
           'predict': run_predict, 'export': run_export, 'benchmark': run_benchmark}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file with get_config(); override fields with '
    '--config.model.output_stride=16 and the like.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and reports.')
_MODE = flags.DEFINE_enum('mode', 'train', list(RUNNERS), 'What to do with the configured model.')


def _environment_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.strip().isdigit() else None


# A multi-process job: the same command in every process, with these set explicitly (plain
# machines; launch/local_multiprocess.sh) or detected by JAX (Cloud TPU, SLURM, Open MPI).
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
    'HOST:PORT of process 0 of a multi-process job (env JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', _environment_int('JAX_NUM_PROCESSES'),
    'Number of processes of a multi-process job (env JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', _environment_int('JAX_PROCESS_ID'),
    'This process\'s index, 0..num_processes-1 (env JAX_PROCESS_ID).')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ('auto', 'off'),
    'auto: join a job named by the flags above or detected by JAX in the cluster environment '
    '(Cloud TPU, SLURM, Open MPI); off: always a single process.')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    'distributed_timeout', 300, 'Seconds to wait for every process of the job to join.',
    lower_bound=1)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    console.configure(flags.FLAGS.verbosity if flags.FLAGS['verbosity'].present
                      else console.QUIET)
    try:
        if _DISTRIBUTED.value == 'auto':
            distributed.initialize(
                coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                process_id=_PROCESS_ID.value, timeout_s=_DISTRIBUTED_TIMEOUT.value)
        console.set_process_index(jax.process_index())
        distributed.check_same_run(_CONFIG.value, mode=_MODE.value, workdir=_WORKDIR.value)
        RUNNERS[_MODE.value](_CONFIG.value, _WORKDIR.value)
    except preemption.Preempted as stopped:  # not an error: the checkpoint is saved
        print(stopped, file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_STATUS)
    except preemption.Interrupted as interrupted:
        print(interrupted, file=sys.stderr, flush=True)
        sys.exit(preemption.INTERRUPTED_EXIT_STATUS)
    except SegJaxError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main, flags_parser=parse_flags)
