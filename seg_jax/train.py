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
import functools
import math
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from seg_jax import (checkpoints, evaluate, losses, metrics, optim, parallel, preemption,
                     pretrained, reporting)
from seg_jax.data import crops, pipeline
from seg_jax.data.cityscapes import open_split
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import ConfigError, SegJaxError, first_few
from seg_jax.models import build_model
from seg_jax.state import TrainState, abstract_train_state, create_train_state


class NonFiniteLossError(SegJaxError, FloatingPointError):
    """The loss or the gradients became NaN or infinite; the last good checkpoint is kept."""


LIKELY_NONFINITE_CAUSES = (
    'Likely causes: a learning rate too high for this model and batch (lower '
    'config.optimizer.learning_rate or add config.schedule.warmup_steps); float overflow in '
    "bfloat16 compute (try config.model.compute_dtype='float32'); bad labels or images (NaN "
    'pixels, label ids outside the table, a corrupt file; see config.data.skip_bad_examples). '
    'config.skip_nonfinite_steps=N skips up to N such steps instead of stopping.')
NONFINITE_KINDS = {1: 'the loss', 2: 'the gradients'}


def initial_health(mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """The device-side record of non-finite steps that the train step carries: the first and
    the latest such step (-1 before any), how many there were, and what was not finite at the
    first (``NONFINITE_KINDS``). Kept on the devices, so watching for NaNs costs no host
    round-trip per step."""
    record = {'first_step': -1, 'last_step': -1, 'count': 0, 'first_kind': 0}
    return jax.device_put({key: jnp.int32(value) for key, value in record.items()},
                          parallel.replicated(mesh))


def _all_finite(tree) -> jax.Array:
    """Whether every element of every array in ``tree`` is finite (True for an empty tree)."""
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(leaf))
                                              for leaf in jax.tree.leaves(tree)), jnp.bool_(True))


@jax.jit
def _state_is_finite(state: TrainState) -> jax.Array:
    return _all_finite((state.params, state.batch_stats, state.opt_state))


def _finite_means(logged: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each metric's mean over the logged steps, leaving out the non-finite values of skipped
    steps (NaN if a metric has no finite value)."""
    means = {}
    for key in logged[0]:
        values = np.asarray([step_metrics[key] for step_metrics in logged], np.float64)
        finite = values[np.isfinite(values)]
        means[key] = float(finite.mean()) if finite.size else math.nan
    return means


def make_train_step(loss_config: ml_collections.ConfigDict, class_weights: np.ndarray | None,
                    schedule: optax.Schedule, seed: int) -> Callable:
    """``step(state, batch, health) -> (state, metrics, health)``, jitted.

    A step whose loss or gradients are not finite changes nothing but the step counter (the
    data moves on; parameters, optimiser state and BatchNorm statistics stay as they were), and
    is recorded in ``health`` (see ``initial_health``); the loop decides whether to stop.
    """
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    dropout_root = jax.random.key(seed + 1)

    def step(state: TrainState, batch: dict[str, jax.Array], health: dict[str, jax.Array]):
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
        loss_finite, grads_finite = jnp.isfinite(loss), _all_finite(grads)
        finite = loss_finite & grads_finite
        updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                                 state).replace(step=updated.step)
        valid = batch['label'] != IGNORE_LABEL
        correct = (metrics.predictions_from_logits(logits) == batch['label']) & valid
        logged = {**terms, 'learning_rate': schedule(state.step),
                  'pixel_accuracy': correct.sum() / jnp.maximum(valid.sum(), 1)}
        # Steps are numbered from 1, as the loop and the logs number them.
        step_number, first = state.step + 1, health['count'] == 0
        health = jax.tree.map(lambda bad, good: jnp.where(finite, good, bad), {
            'first_step': jnp.where(first, step_number, health['first_step']),
            'last_step': step_number,
            'count': health['count'] + 1,
            'first_kind': jnp.where(first, jnp.where(loss_finite, 2, 1), health['first_kind']),
        }, health)
        return new_state, logged, health

    return jax.jit(step, donate_argnums=(0,))


def _check_finite(health: dict[str, jax.Array], allowed: int, checkpoint_dir: str) -> int:
    """Raises once more than ``allowed`` steps were not finite; returns how many were."""
    record = {key: int(value) for key, value in jax.device_get(health).items()}
    if record['count'] > allowed:
        where = (f'at step {record["first_step"]}' if record['count'] == 1 else
                 f'at {record["count"]} steps, the first at step {record["first_step"]} and the '
                 f'latest at step {record["last_step"]}')
        raise NonFiniteLossError(
            f'{NONFINITE_KINDS[record["first_kind"]].capitalize()} became NaN or infinite '
            f'{where} (config.skip_nonfinite_steps={allowed}); training stopped, those steps '
            f'changed no parameters, and the last good checkpoint in {checkpoint_dir} is kept. '
            f'{LIKELY_NONFINITE_CAUSES}')
    return record['count']


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
    """The run's setup; reads the training split's size and first image (for the crop check)
    and, for class weights computed from them, its pixel counts, so a missing or broken data set
    or a config that does not fit it fails here, before compiling."""
    train_split = open_split(config.data, 'train')
    total_steps, steps_per_epoch = optim.training_length(config, train_split.size)
    crops.check_crop_fits_images(config.data.crop_size, config.data.scale_range,
                                 pipeline.image_size(train_split))
    model = build_model(config.model)
    losses.check_loss_config(config.loss)
    class_weights = losses.resolve_class_weights(
        config.loss, lambda: pipeline.class_pixel_counts(config))
    tx, schedule = optim.build_optimizer(config, total_steps, steps_per_epoch)
    return TrainingSetup(model, tx, schedule, class_weights, total_steps)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config``'s model in ``workdir``, resuming from its latest checkpoint.

    On SIGTERM it saves a checkpoint at the current step and raises ``preemption.Preempted``;
    called again, it resumes from there.
    """
    with preemption.PreemptionNotice() as notice:
        return _train(config, workdir, notice)


def _train(config: ml_collections.ConfigDict, workdir: str,
           preemption_notice: preemption.PreemptionNotice) -> TrainState:
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
    if not checkpoints.has_checkpoint(f'{workdir}/checkpoints'):  # a resumed run has weights
        pretrained.check_required(config.model)
    setup = training_setup(config)  # checks config and data: a refused run writes nothing
    reporter = reporting.Reporter(workdir, enabled=is_main)
    reporter.write_config(config)
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
    health = initial_health(mesh)

    def check_finite(step: int, state_leaves_devices: bool) -> int:
        """Stops once too many steps were not finite, and before a non-finite state is evaluated
        or saved; returns the skipped steps. One read of the health record per step at most."""
        skipped = _check_finite(health, config.skip_nonfinite_steps, checkpointer.directory)
        if state_leaves_devices and not bool(_state_is_finite(state)):
            raise NonFiniteLossError(
                f'The parameters or optimiser state became NaN or infinite by step {step} '
                f'although every loss and gradient was finite; they were not saved, and the last '
                f'good checkpoint in {checkpointer.directory} is kept. {LIKELY_NONFINITE_CAUSES}')
        return skipped

    progress = reporting.Progress(total_steps, start_step, enabled=is_main)
    pending, last_log, skipped_logged = [], time.perf_counter(), 0
    try:
        for step in range(start_step + 1, total_steps + 1):
            state, step_metrics, health = train_step(state, next(batches), health)
            pending.append(step_metrics)
            log_due = step % config.log_every_steps == 0 or step == total_steps
            eval_due = step % config.eval_every_steps == 0 or step == total_steps
            save_due = step % config.checkpoint_every_steps == 0 or step == total_steps
            # Every process asks at every step (a multi-process job agrees on the step here).
            preempted = step < total_steps and preemption_notice.reached(step)
            if not (log_due or eval_due or save_due or preempted):
                continue
            skipped = check_finite(step, state_leaves_devices=eval_due or save_due or preempted)
            if log_due:
                if skipped > skipped_logged:
                    logging.warning('Skipped %d steps whose loss or gradients were not finite '
                                    'so far (config.skip_nonfinite_steps=%d allows %d).',
                                    skipped, config.skip_nonfinite_steps,
                                    config.skip_nonfinite_steps)
                    skipped_logged = skipped
                means = _finite_means(jax.device_get(pending))
                elapsed, last_log = time.perf_counter() - last_log, time.perf_counter()
                means['images_per_s'] = len(pending) * config.global_batch_size / elapsed
                means['seconds'] = elapsed  # training time of these steps, evaluations excluded
                if config.skip_nonfinite_steps:
                    means['skipped_nonfinite_steps'] = skipped
                reporter.log_train(step, means)
                progress.update(step, means)
                logging.info('step %d/%d: loss %.4f, lr %.3g, %.1f images/s', step, total_steps,
                             means['loss'], means['learning_rate'], means['images_per_s'])
                pending = []
            if eval_due:
                eval_start = time.perf_counter()
                eval_metrics = evaluator.evaluate(state, config.eval.split, reporter, step)
                checkpointer.save_best(step, state, eval_metrics['miou'])
                reporter.plot_curves()
                last_log += time.perf_counter() - eval_start  # not training time
            if save_due or preempted:  # the preemption save is forced, off the cadence
                checkpointer.save(step, state, force=preempted)
            if preempted:
                raise preemption.Preempted(step, str(checkpointer.directory))
    finally:  # also on an interruption: pending checkpoint writes complete
        progress.close()
        checkpointer.close()
        reporter.close()
    return state
