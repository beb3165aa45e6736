"""Evaluation: every image of a split once, at full resolution, into one confusion matrix.

The same ``Evaluator`` serves the periodic evaluation of ``train.py`` and ``--mode eval``, which
restores a checkpoint (the latest, the best, or a given step) and evaluates it.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from seg_jax import checkpoints, losses, metrics, optim, parallel, reporting
from seg_jax.data import pipeline
from seg_jax.data.cityscapes import open_split
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import CheckpointError
from seg_jax.models import build_model
from seg_jax.state import create_train_state


def make_eval_step(model):
    """``step(variables, batch) -> (confusion, loss_sum, valid_pixels, predictions)``.

    Padded examples (``mask`` False) become all-void, so they count in nothing.
    """
    def step(variables, batch):
        logits = model.apply(variables, batch['image'], train=False)['out']
        labels = jnp.where(batch['mask'][:, None, None], batch['label'], IGNORE_LABEL)
        predictions = metrics.predictions_from_logits(logits)
        valid = jnp.sum(labels != IGNORE_LABEL)
        loss_sum = losses.cross_entropy(logits, labels) * valid
        confusion = metrics.confusion_matrix(predictions, labels, batch['mask'])
        return confusion, loss_sum, valid, predictions

    return jax.jit(step)


class Evaluator:
    """Compiled once per run; ``evaluate`` runs a split and reports it."""

    def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh):
        self.config, self.mesh = config, mesh
        self.step = make_eval_step(model)

    def evaluate(self, state, split: str, reporter: reporting.Reporter, step: int) -> dict:
        variables = {'params': state.params, 'batch_stats': state.batch_stats}
        confusion, loss_sum, valid, sample = None, 0.0, 0, None
        for host_batch in pipeline.build_input(self.config, split):
            batch = parallel.global_batch(host_batch, self.mesh)
            batch_confusion, batch_loss, batch_valid, predictions = self.step(variables, batch)
            confusion = metrics.accumulate(confusion, batch_confusion)
            loss_sum += float(batch_loss)
            valid += int(batch_valid)
            if sample is None:
                sample = (host_batch['image'], host_batch['label'],
                          np.asarray(multihost_utils.process_allgather(predictions, tiled=True)))
        results = metrics.compute_metrics(confusion)
        results['loss'] = loss_sum / max(valid, 1)
        table = reporter.log_eval(step, split, results, confusion)
        reporter.save_predictions(step, *sample)
        if reporter.enabled:
            print(f'Step {step}, {split} ({valid:,} labelled pixels):\n{table}', flush=True)
        return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``--mode eval``: restores ``config.eval.checkpoint`` from ``workdir`` and evaluates it."""
    parallel.check_batch_size(config.eval.batch_size, 'config.eval.batch_size')
    checkpoint_dir = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(checkpoint_dir):  # checked first: opening a Checkpointer creates it
        raise CheckpointError(f'No checkpoint in {checkpoint_dir}; train first, or pass the '
                              '--workdir of a run that has trained.')
    mesh = parallel.data_mesh()
    model = build_model(config.model)
    # The optimiser shapes the state to restore into, so it is built as training built it.
    tx, _ = optim.build_optimizer(
        config, *optim.training_length(config, open_split(config.data, 'train').size))
    target = jax.eval_shape(lambda: create_train_state(
        model, tx, tuple(config.data.crop_size), config.seed, mesh))
    with checkpoints.Checkpointer(checkpoint_dir, keep=config.keep_checkpoints) as ckpt:
        which = str(config.eval.checkpoint)
        state = ckpt.restore(target, int(which) if which.isdigit() else which)
    reporter = reporting.Reporter(workdir, enabled=jax.process_index() == 0)
    step = int(jax.device_get(state.step))
    results = Evaluator(config, model, mesh).evaluate(state, config.eval.split, reporter, step)
    reporter.close()
    return results

