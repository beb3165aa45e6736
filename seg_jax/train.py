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
import logging
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from seg_jax import (checkpoints, config_checks, evaluate, health, losses, metrics, optim,
                     parallel, preemption, pretrained, workdir_lock)
from seg_jax.data import pipeline
from seg_jax.history import Reporter
from seg_jax.models import build_model
from seg_jax.progress import Progress
from seg_jax.state import TrainState, abstract_train_state, create_train_state
from seg_jax.workdir import check_can_continue, checkpoint_dir

log = logging.getLogger(__name__)


def make_train_step(loss_config: ml_collections.ConfigDict,
                    optimizer_config: ml_collections.ConfigDict,
                    class_weights: np.ndarray | None, seed: int) -> Callable:
    """``step(state, batch, health, schedule) -> (state, metrics, health)``, jitted.

    The optimiser is ``optimizer_config``'s update rule driven by ``schedule`` (an
    ``optim.Schedule``, an argument so that its numbers are not compiled into the program);
    ``state.tx``, the same rule, made the optimiser state the step updates.

    A step whose loss or gradients are not finite changes nothing but the step counter (the
    data moves on; parameters, optimiser state and BatchNorm statistics stay as they were), and
    is recorded in ``health`` (``seg_jax.health``); the loop decides whether to stop.
    """
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    dropout_root = jax.random.key(seed + 1)

    def step(state: TrainState, batch: dict[str, jax.Array], record: health.Health,
             schedule: optim.Schedule):
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
        loss_finite, grads_finite = jnp.isfinite(loss), health.all_finite(grads)
        finite = loss_finite & grads_finite
        # Updated by the rule driven by the traced schedule; the state keeps its own tx.
        updated = state.replace(tx=optim.update_rule(optimizer_config, schedule)).apply_gradients(
            grads=grads, batch_stats=batch_stats).replace(tx=state.tx)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                                 state).replace(step=updated.step)
        logged = {**terms, 'learning_rate': schedule(state.step),
                  'pixel_accuracy': metrics.pixel_accuracy(logits, batch['label'])}
        # Steps are numbered from 1, as the loop and the logs number them.
        record = health.record_step(record, state.step + 1, loss_finite, grads_finite)
        return new_state, logged, record

    return jax.jit(step, donate_argnums=(0,))


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """What a training run builds from its config before it has a state: the network, the
    optimiser and its schedule, the loss's class weights, the run's length, and the training
    and evaluation splits (each opened, and so checked, once)."""
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optim.Schedule
    class_weights: np.ndarray | None
    total_steps: int
    train_split: pipeline.Split
    eval_split: pipeline.Split


def training_setup(config: ml_collections.ConfigDict) -> TrainingSetup:
    """The run's setup; reads the training split's size and first image (for the crop check)
    and, for class weights computed from them, its pixel counts, and lists the evaluation split
    (the sources of other data sets check every label as they open a split), so a missing or
    broken data set or a config that does not fit it fails here, before anything is written
    or compiled."""
    model = build_model(config.model)  # checks the model's fields before any data is read
    train_split = pipeline.open_training_split(config)
    eval_split = pipeline.open_split(config.data, config.eval.split)
    total_steps, steps_per_epoch = optim.training_length(config, train_split.size)
    class_weights = losses.resolve_class_weights(
        config.loss, lambda: pipeline.class_pixel_counts(config, train_split),
        train_split.classes.num_classes)
    tx, schedule = optim.build_optimizer(config, total_steps, steps_per_epoch)
    return TrainingSetup(model, tx, schedule, class_weights, total_steps, train_split,
                         eval_split)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config``'s model in ``workdir``, resuming from its latest checkpoint.

    On SIGTERM or Ctrl-C it saves a checkpoint at the current step and raises
    ``preemption.Preempted``; called again, it resumes from there. Before the config, the
    workdir and the data have been checked, nothing is written but the workdir's lock
    (``seg_jax.workdir_lock``, which refuses a second training of the same workdir), and a run
    refused by a check leaves no trace.
    """
    config_checks.check_config(config, 'train')
    check_can_continue(workdir, config)
    with workdir_lock.hold(workdir):
        if not checkpoints.has_checkpoint(checkpoint_dir(workdir)):  # a resumed run has weights
            pretrained.check_required(config.model)
        setup = training_setup(config)
        with preemption.PreemptionNotice() as notice:
            return _train(config, workdir, setup, notice)


def initial_state(config: ml_collections.ConfigDict, setup: TrainingSetup,
                  checkpointer: checkpoints.Checkpointer, mesh: jax.sharding.Mesh) -> TrainState:
    """The state of the newest checkpoint that restores (damaged ones are moved aside, with a
    warning), restored straight into the abstract state (nothing is initialised only to be
    replaced); for a new run, a fresh state with the pretrained weights of
    ``config.model.pretrained`` where set."""
    state_arguments = (setup.model, setup.tx, tuple(config.data.crop_size), config.seed, mesh)
    if checkpointer.latest_step() is not None:
        state, _ = checkpointer.restore_newest_intact(abstract_train_state(*state_arguments))
        log.info('Resumed from step %d in %s.', int(state.step), checkpointer.directory)
        return state
    state = create_train_state(*state_arguments)
    if config.model.pretrained:
        state, load_report = pretrained.load_into_state(state, config.model, mesh)
        if jax.process_index() == 0:
            print(load_report.summary(), flush=True)
    elif config.model.backbone:
        log.warning('config.model.pretrained is not set: the %s backbone starts from '
                    'random weights. Published results start from ImageNet weights; '
                    'see README, "Pretrained weights".', config.model.backbone)
    return state


def _train(config: ml_collections.ConfigDict, workdir: str, setup: TrainingSetup,
           preemption_notice: preemption.PreemptionNotice) -> TrainState:
    mesh = parallel.data_mesh()
    is_main = jax.process_index() == 0
    reporter = Reporter(workdir, enabled=is_main, classes=setup.train_split.classes)
    reporter.write_config(config)
    total_steps, allowed_nonfinite = setup.total_steps, config.skip_nonfinite_steps
    checkpointer = checkpoints.Checkpointer(checkpoint_dir(workdir),
                                            keep=config.keep_checkpoints)
    state = initial_state(config, setup, checkpointer, mesh)
    checkpointer.check_room(state)
    start_step = int(jax.device_get(state.step))

    train_step = make_train_step(config.loss, config.optimizer, setup.class_weights,
                                 config.seed)
    evaluator = evaluate.Evaluator(config, setup.model, mesh, setup.eval_split)
    batches = parallel.prefetch_to_devices(
        pipeline.build_input(config, setup.train_split, start_step=start_step), mesh)
    record = health.initial(mesh)
    progress = Progress(total_steps, start_step, enabled=is_main)
    pending, last_log, skipped_logged = [], time.perf_counter(), 0
    try:
        for step in range(start_step + 1, total_steps + 1):
            state, step_metrics, record = train_step(state, next(batches), record,
                                                     setup.schedule)
            pending.append(step_metrics)
            log_due = step % config.log_every_steps == 0 or step == total_steps
            eval_due = step % config.eval_every_steps == 0 or step == total_steps
            save_due = step % config.checkpoint_every_steps == 0 or step == total_steps
            # Every process asks at every step (a multi-process job agrees on the step here).
            preempted = step < total_steps and preemption_notice.reached(step)
            if not (log_due or eval_due or save_due or preempted):
                continue
            # One read of the health record per step at most; the state is checked before it
            # is evaluated or saved.
            skipped = health.check(record, allowed_nonfinite, str(checkpointer.directory))
            if eval_due or save_due or preempted:
                health.check_state(state, step, str(checkpointer.directory))
            if log_due:
                if skipped > skipped_logged:
                    log.warning('Skipped %d steps whose loss or gradients were not finite '
                                'so far (config.skip_nonfinite_steps=%d allows %d).',
                                skipped, allowed_nonfinite, allowed_nonfinite)
                    skipped_logged = skipped
                means = health.finite_means(jax.device_get(pending))
                elapsed, last_log = time.perf_counter() - last_log, time.perf_counter()
                means['images_per_s'] = len(pending) * config.global_batch_size / elapsed
                means['seconds'] = elapsed  # training time of these steps, evaluations excluded
                if allowed_nonfinite:
                    means['skipped_nonfinite_steps'] = skipped
                reporter.log_train(step, means)
                progress.update(step, means)
                log.debug('step %d/%d: loss %.4f, lr %.3g, %.1f images/s', step, total_steps,
                          means['loss'], means['learning_rate'], means['images_per_s'])
                pending = []
            if eval_due:
                eval_start = time.perf_counter()
                result = evaluator.evaluate({'params': state.params,
                                             'batch_stats': state.batch_stats})
                with progress.printing():
                    reporter.log_evaluation(step, config.eval.split, result)
                checkpointer.save_best(step, state, result.metrics['miou'])
                reporter.plot_curves()
                last_log += time.perf_counter() - eval_start  # not training time
            if save_due or preempted:  # the preemption save is forced, off the cadence
                checkpointer.save(step, state, force=preempted)
            if preempted:
                raise preemption.Preempted(step, str(checkpointer.directory),
                                           preemption_notice.cause)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; what was saved stays
        checkpointer.close()
        raise preemption.Interrupted(checkpoints.finished_steps(checkpointer.directory),
                                     str(checkpointer.directory)) from None
    finally:  # also on an interruption: pending checkpoint writes complete
        progress.close()
        checkpointer.close()
        reporter.close()
    return state
