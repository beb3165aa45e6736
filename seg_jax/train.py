"""Training: state, the jit-compiled data-parallel step, and the loop with eval and checkpoints.

Shaped like flax's ``examples/imagenet/train.py`` and big_vision's ``train.py``: the state is
created directly with its (replicated) sharding, the step is one ``jax.jit`` over a global batch
sharded along the ``data`` axis with the state donated, and metrics stay on the devices until
they are read every ``config.log_every_steps``.

A run is a pure function of (config, step): data order and augmentation follow (seed, position)
(``seg_jax.data.pipeline``), dropout keys are folded from the step, and the optimiser state is
checkpointed, so stopping and resuming continues the same trajectory.
"""

import dataclasses
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from seg_jax import (checkpoints, evaluate, losses, metrics, optim, parallel, pretrained,
                     reporting)
from seg_jax.data import pipeline
from seg_jax.data.cityscapes import open_split
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import ConfigError, SegJaxError, first_few
from seg_jax.models import build_model
from seg_jax.state import TrainState, abstract_train_state, create_train_state


class NonFiniteLossError(SegJaxError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def make_train_step(loss_config: ml_collections.ConfigDict, class_weights: np.ndarray | None,
                    schedule: optax.Schedule, seed: int) -> Callable:
    """``step(state, batch, first_nonfinite) -> (state, metrics, first_nonfinite)``, jitted.

    ``first_nonfinite`` is a device scalar holding the first step whose loss was not finite
    (-1 while all are), so detecting a NaN costs no host round-trip per step.
    """
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    dropout_root = jax.random.key(seed + 1)

    def step(state: TrainState, batch: dict[str, jax.Array], first_nonfinite: jax.Array):
        def loss_fn(params):
            outputs, updates = state.apply_fn(
                {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
                train=True, mutable=['batch_stats'],
                rngs={'dropout': jax.random.fold_in(dropout_root, state.step)})
            loss, terms = losses.segmentation_loss(outputs, batch['label'], loss_config,
                                                   weights)
            return loss, (terms, outputs['out'], updates['batch_stats'])

        (loss, (terms, logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        valid = batch['label'] != IGNORE_LABEL
        correct = (metrics.predictions_from_logits(logits) == batch['label']) & valid
        logged = {**terms, 'learning_rate': schedule(state.step),
                  'pixel_accuracy': correct.sum() / jnp.maximum(valid.sum(), 1)}
        finite = jnp.isfinite(loss)
        # Steps are numbered from 1, as the loop and the logs number them.
        first_nonfinite = jnp.where((first_nonfinite < 0) & ~finite, state.step + 1,
                                    first_nonfinite)
        return new_state, logged, first_nonfinite

    return jax.jit(step, donate_argnums=(0,))


def _check_finite(first_nonfinite: jax.Array, checkpoint_dir: str) -> None:
    bad_step = int(jax.device_get(first_nonfinite))
    if bad_step >= 0:
        raise NonFiniteLossError(
            f'The loss became NaN or infinite at step {bad_step}; training stopped and the last '
            f'good checkpoint in {checkpoint_dir} is kept (nothing after step {bad_step} was '
            'saved). Lower config.optimizer.learning_rate, add warmup, or check the data.')


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """What a training run builds from its config before it has a state: the network, the
    optimiser and its schedule, the loss's class weights, and the run's length."""
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    class_weights: np.ndarray | None
    total_steps: int


def training_setup(config: ml_collections.ConfigDict) -> TrainingSetup:
    """The run's setup; reads the training split's size (and, for class weights computed from
    them, its pixel counts), so a missing or broken data set fails here, before compiling."""
    total_steps, steps_per_epoch = optim.training_length(
        config, open_split(config.data, 'train').size)
    model = build_model(config.model)
    losses.check_loss_config(config.loss)
    class_weights = losses.resolve_class_weights(
        config.loss, lambda: pipeline.class_pixel_counts(config))
    tx, schedule = optim.build_optimizer(config, total_steps, steps_per_epoch)
    return TrainingSetup(model, tx, schedule, class_weights, total_steps)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config``'s model in ``workdir``, resuming from its latest checkpoint."""
    parallel.check_batch_size(config.global_batch_size, 'config.global_batch_size')
    parallel.check_batch_size(config.eval.batch_size, 'config.eval.batch_size')
    mesh = parallel.data_mesh()
    is_main = jax.process_index() == 0
    changes = reporting.config_changes(workdir, config)
    if changes and not config.allow_config_change:
        raise ConfigError(
            f'{workdir} holds a run with another config ({first_few(changes)}). Continuing it '
            'would mix two experiments in one workdir: use the config it was started with, '
            'another --workdir, or --config.allow_config_change=True to continue with this one '
            '(the old config.json is kept beside it).')
    reporter = reporting.Reporter(workdir, enabled=is_main)
    reporter.write_config(config)

    setup = training_setup(config)
    model, total_steps = setup.model, setup.total_steps
    state_arguments = (model, setup.tx, tuple(config.data.crop_size), config.seed, mesh)
    checkpointer = checkpoints.Checkpointer(f'{workdir}/checkpoints', keep=config.keep_checkpoints)
    if checkpointer.latest_step() is None:
        state = create_train_state(*state_arguments)
        if config.model.pretrained:  # a resumed run has them in its checkpoint
            state, load_report = pretrained.load_into_state(state, config.model, mesh)
            if is_main:
                print(load_report.summary(), flush=True)
        elif config.model.backbone:
            logging.warning('config.model.pretrained is not set: the %s backbone starts from '
                            'random weights. Published results start from ImageNet weights; '
                            'see README, "Pretrained weights".', config.model.backbone)
    else:  # restored straight into the abstract state: nothing is initialised only to be replaced
        state = checkpointer.restore(abstract_train_state(*state_arguments), 'latest')
        logging.info('Resumed from step %d in %s.', int(state.step), workdir)
    start_step = int(jax.device_get(state.step))

    train_step = make_train_step(config.loss, setup.class_weights, setup.schedule, config.seed)
    evaluator = evaluate.Evaluator(config, model, mesh)
    batches = parallel.prefetch_to_devices(
        pipeline.build_input(config, 'train', start_step=start_step), mesh)
    first_nonfinite = jax.device_put(jnp.int32(-1), parallel.replicated(mesh))

    progress = reporting.Progress(total_steps, start_step, enabled=is_main)
    pending, last_log = [], time.perf_counter()
    try:
        for step in range(start_step + 1, total_steps + 1):
            state, step_metrics, first_nonfinite = train_step(state, next(batches), first_nonfinite)
            pending.append(step_metrics)
            if step % config.log_every_steps == 0 or step == total_steps:
                _check_finite(first_nonfinite, checkpointer.directory)
                means = {k: float(np.mean([m[k] for m in jax.device_get(pending)]))
                         for k in pending[0]}
                elapsed, last_log = time.perf_counter() - last_log, time.perf_counter()
                means['images_per_s'] = len(pending) * config.global_batch_size / elapsed
                reporter.log_train(step, means)
                progress.update(step, means)
                logging.info('step %d/%d: loss %.4f, lr %.3g, %.1f images/s', step, total_steps,
                             means['loss'], means['learning_rate'], means['images_per_s'])
                pending = []
            if step % config.eval_every_steps == 0 or step == total_steps:
                _check_finite(first_nonfinite, checkpointer.directory)
                eval_metrics = evaluator.evaluate(state, config.eval.split, reporter, step)
                checkpointer.save_best(step, state, eval_metrics['miou'])
                reporter.plot_curves()
            if step % config.checkpoint_every_steps == 0 or step == total_steps:
                _check_finite(first_nonfinite, checkpointer.directory)
                checkpointer.save(step, state)
    finally:  # also on an interruption: pending checkpoint writes complete
        progress.close()
        checkpointer.close()
        reporter.close()
    return state
