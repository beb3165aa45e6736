"""Shared test setup: 8 fake CPU devices for multi-device tests, tiny model configs.

XLA reads XLA_FLAGS once, when jax first initialises its backends, so it is set here, before
any test module imports jax. Subprocesses started by tests inherit it.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import importlib  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAMES = ('fcn', 'unet', 'unet_aspp', 'resnet_deconv', 'resnet_aspp', 'deeplabv3_r50')


def load_config(name: str):
    """``configs/<name>.py``'s ``get_config()``."""
    return importlib.import_module(f'configs.{name}').get_config()


@pytest.fixture(scope='session')
def repo() -> pathlib.Path:
    return REPO
