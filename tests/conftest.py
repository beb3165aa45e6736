"""Shared test setup: 8 fake CPU devices for multi-device tests, tiny model configs.

XLA reads XLA_FLAGS once, when jax first initialises its backends, so it is set here, before
any test module imports jax. Besides the fake devices it turns off LLVM's optimisation of the
CPU code (-O0): the suite's programs are tiny, so their time goes to compiling them rather than
running them, and at -O0 the same 576 tests took 11% less time in all than at -O1 (1813 against
2044 s over 2 cores), every assertion as before. It rounds differently: the one-versus-eight-
devices comparison of tests/test_train.py uses 22% of its tolerance at -O0, 3% at -O1.
Subprocesses started by tests inherit it, and the persistent compilation cache: the many
training subprocesses of the suite (resume, preemption, errors) compile the same tiny programs,
which they then load instead of compiling again. Under pytest-xdist this module runs first in the controlling process, which
makes the cache folder, so its workers (and their subprocesses) inherit one folder and share it.
"""

import atexit
import os
import shutil
import tempfile


def xla_flags(devices: int) -> str:
    """XLA_FLAGS of a test process with ``devices`` fake CPU devices, compiled at -O0."""
    return (f'--xla_force_host_platform_device_count={devices} '
            '--xla_backend_optimization_level=0')


os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags(8)}".strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='seg_jax_test_xla_cache_')
    atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
# Every program, however quick to compile: a training subprocess compiles a few hundred small
# ones (the checkpoint's device-to-host copies, metrics, eager ops), seconds in all, which the
# next subprocess and the other pytest-xdist worker then load instead.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import importlib  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAMES = ('fcn', 'unet', 'unet_aspp', 'resnet_deconv', 'resnet_aspp', 'deeplabv3_r50')
# mmsegmentation's model-zoo recipes (tests/test_mmseg.py).
MMSEG_CONFIGS = ('deeplabv3_r50_d8', 'deeplabv3_r101_d8', 'deeplabv3plus_r50_d8',
                 'deeplabv3plus_r101_d8', 'pspnet_r50_d8', 'pspnet_r101_d8')


def load_config(name: str):
    """``configs/<name>.py``'s ``get_config()``."""
    return importlib.import_module(f'configs.{name}').get_config()


@pytest.fixture(scope='session')
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory):
    """(config, workdir) of a tiny 8-step run on its own synthetic data, trained once per test
    session for the tests that restore a checkpoint (predict, export)."""
    import tiny_config
    from seg_jax import train
    config = tiny_config.get_config()
    config.data.dir = str(tmp_path_factory.mktemp('trained_run_data'))
    workdir = str(tmp_path_factory.mktemp('trained_run'))
    train.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.fixture(autouse=True)
def _console_as_it_was():
    """The command-line tools (``compare.main``, ...) configure seg_jax's console when a test
    calls them in-process; put the loggers back, so later tests' ``caplog`` sees seg_jax's
    records as before."""
    logger, absl_logger = logging.getLogger('seg_jax'), logging.getLogger('absl')
    before = list(logger.handlers), logger.propagate, logger.level
    levels, unraisable_hook = (logging.root.level, absl_logger.level), sys.unraisablehook
    yield
    sys.unraisablehook = unraisable_hook
    logger.handlers[:], logger.propagate = before[:2]
    logger.setLevel(before[2])
    logging.root.setLevel(levels[0])
    absl_logger.setLevel(levels[1])


# The slowest files first (seconds on 2 CPU cores, one process), so that with pytest-xdist's
# `--dist loadfile` (tests of one file on one worker, in the collected order) the long files
# start at once and the short ones fill in at the end; the rest keep their order.
SLOW_FILES = ('test_reliability.py', 'test_multihost.py', 'test_mmseg.py', 'test_train.py',
              'test_models.py', 'test_export.py', 'test_benchmarks.py', 'test_datasets.py',
              'test_inference.py',
              'test_pretrained.py', 'test_main.py', 'test_compare.py', 'test_console.py',
              'test_evaluate.py', 'test_cityscapes_export.py', 'test_layers.py')


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)
    items.sort(key=rank)  # stable: each file's tests keep their order
