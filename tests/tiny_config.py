"""configs/demo.py shrunk for tests: 64x128 synthetic images, a 1/8-width U-Net, 8 steps.

Usable in-process (``get_config()``) and as a config file for subprocesses
(``--config tests/tiny_config.py --config.data.dir=...``); ``recipe`` shrinks another config
the same way.
"""

import importlib

from configs import demo


def get_config():
    config = demo.get_config()
    config.data.synthetic.update(dict(num_train=16, num_val=6, num_test=1, height=64,
                                      width=128))
    config.data.crop_size = (64, 128)
    config.model.width = 0.125
    config.global_batch_size = 8
    config.eval.batch_size = 8
    config.num_train_steps = 8
    config.schedule.warmup_steps = 0
    config.log_every_steps = 2
    config.eval_every_steps = 8
    config.checkpoint_every_steps = 4
    return config


def recipe(name: str, data_dir: str, **model):
    """``configs/<name>.py`` on the tests' 64x128 synthetic Cityscapes, 2 steps, evaluated."""
    config = importlib.import_module(f'configs.{name}').get_config()
    small = get_config()
    config.data.source = 'synthetic'
    config.data.dir = data_dir
    config.data.synthetic = small.data.synthetic
    config.data.crop_size = (64, 128)
    config.eval.batch_size = small.eval.batch_size
    config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 2, 2, 2
    config.log_every_steps = 1
    config.model.update(model)
    return config
