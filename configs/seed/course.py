"""The course project's training settings, applied to a zoo config.

Adam without weight decay, learning rate x0.2 every 10 epochs, 100 epochs, Xavier init, random
crops only (the "+ augmentation" row adds flip, rotation and rescaling).
"""

import importlib

import ml_collections


def course_config(network: str, *, batch_size: int, crop_size: tuple[int, int],
                  learning_rate: float) -> ml_collections.ConfigDict:
    """``configs/<network>.py`` with the course's optimiser, schedule and augmentation."""
    config = importlib.import_module(f'configs.{network}').get_config()
    config.global_batch_size = batch_size
    config.data.crop_size = crop_size
    config.data.scale_range = (1.0, 1.0)
    config.data.flip = False
    config.data.rotation_degrees = 0.0
    config.data.photometric = 0.0
    config.model.init = 'xavier'
    config.optimizer.name = 'adam'
    config.optimizer.learning_rate = learning_rate
    config.optimizer.weight_decay = 0.0
    config.schedule.name = 'step'
    config.schedule.step_every_epochs = 10
    config.schedule.step_factor = 0.2
    config.schedule.warmup_steps = 0
    config.num_train_steps = None
    config.num_epochs = 100.0
    return config


def with_course_augmentation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Flip p=0.5, rotation in [-3, 3] degrees, rescale in [0.8, 1.2], the course's augmentation."""
    config.data.flip = True
    config.data.rotation_degrees = 3.0
    config.data.scale_range = (0.8, 1.2)
    return config
