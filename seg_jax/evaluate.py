"""Evaluation: every image of a split once, at full resolution, into one confusion matrix.

The same ``Evaluator`` serves the periodic evaluation of ``train.py`` and ``--mode eval``, which
restores a checkpoint (the latest, the best, or a given step) and evaluates it, and with
``config.eval.export_dir`` writes the official label-id PNGs too (``seg_jax.export``). Images are
inferred as ``config.eval`` says (``seg_jax.inference``).
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections

from seg_jax import checkpoints, inference, losses, metrics, optim, parallel, reporting
from seg_jax.data import pipeline
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import CheckpointError, ConfigError
from seg_jax.export import Exporter
from seg_jax.models import build_model
from seg_jax.state import TrainState, abstract_train_state


def make_eval_step(model, mesh: jax.sharding.Mesh,
                   settings: inference.InferenceSettings = inference.InferenceSettings()):
    """``step(variables, batch) -> (totals, predictions)``, jitted over ``mesh``.

    The model infers as ``settings`` say (whole image, sliding window, multi-scale + flip).
    ``totals`` (confusion matrix, loss sum, labelled pixels, images) are replicated; the
    predictions stay sharded like the batch, so each process can read its own rows. Padded
    examples (``mask`` False) become all-void, so they count in nothing.
    """
    def step(variables, batch):
        logits = inference.log_probabilities(model, variables, batch['image'], settings)
        labels = jnp.where(batch['mask'][:, None, None], batch['label'], IGNORE_LABEL)
        predictions = metrics.predictions_from_logits(logits)
        valid = jnp.sum(labels != IGNORE_LABEL)
        totals = {'confusion': metrics.confusion_matrix(predictions, labels, batch['mask']),
                  'loss_sum': losses.cross_entropy(logits, labels) * valid,
                  'valid': valid, 'images': jnp.sum(batch['mask'])}
        return totals, predictions

    return jax.jit(step, out_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)))


class Evaluator:
    """Compiled once per run; ``evaluate`` runs a split and reports it."""

    def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh):
        self.config, self.mesh = config, mesh
        self.settings = inference.inference_settings(config.eval)
        self.step = make_eval_step(model, mesh, self.settings)

    def evaluate(self, state, split: str, reporter: reporting.Reporter, step: int,
                 exporter: Exporter | None = None) -> dict:
        """Metrics of ``split``; every process must call it (the batches span all of them).
        With an ``exporter``, each process also writes its images' predictions."""
        start = time.perf_counter()
        variables = {'params': state.params, 'batch_stats': state.batch_stats}
        confusion, loss_sum, valid, images, sample = None, 0.0, 0, 0, None
        for host_batch in pipeline.build_input(self.config, split):
            totals, predictions = self.step(variables, parallel.global_batch(host_batch,
                                                                             self.mesh))
            if exporter is not None:
                exporter.write(host_batch['image_id'], parallel.local_rows(predictions),
                               host_batch['mask'])
            confusion = metrics.accumulate(confusion, totals['confusion'])
            loss_sum += float(totals['loss_sum'])
            valid += int(totals['valid'])
            images += int(totals['images'])
            if sample is None:  # this process's first images, for the prediction figure
                sample = (host_batch['image'], host_batch['label'],
                          parallel.local_rows(predictions))
        results = metrics.compute_metrics(confusion)
        results['loss'] = loss_sum / max(valid, 1)
        results['num_images'] = images
        results['inference'] = dataclasses.asdict(self.settings)  # how it was inferred
        results['seconds'] = time.perf_counter() - start
        table = reporter.log_eval(step, split, results, confusion)
        reporter.save_predictions(step, *sample)
        if reporter.enabled:
            print(f'Step {step}, {split} ({images} images, {valid:,} labelled pixels):\n{table}',
                  flush=True)
        return results


# The model fields that shape the parameters: a checkpoint restores only into the same ones.
# (Others may differ at evaluation: output_stride, compute_dtype, remat, pretrained, ...)
PARAMETER_SHAPING_FIELDS = ('name', 'backbone', 'num_classes', 'width', 'aux_head', 'dual_aspp')


def _check_trained_model(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses, in one line naming the fields and the flags that fix it, a model config other
    than the one ``workdir``'s run was trained with (its config.json), e.g. another
    num_classes; the leaf-by-leaf check of ``checkpoints`` stays as the last line of defence."""
    trained = (reporting.stored_config(workdir) or {}).get('model')
    if trained is None:
        return
    configured = reporting.resolved_config(config)['model']
    changed = [field for field in PARAMETER_SHAPING_FIELDS
               if field in trained and trained[field] != configured.get(field)]
    if changed:
        raise CheckpointError(
            f'The checkpoints in {workdir} were trained with another model: '
            + '; '.join(f'model.{field} is {trained[field]!r} there but {configured.get(field)!r} '
                        'in this config' for field in changed)
            + '. Evaluate with the config it was trained with, e.g. '
            + ' '.join(f'--config.model.{field}={trained[field]}' for field in changed) + '.')


def restore_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str,
                       mesh: jax.sharding.Mesh) -> TrainState:
    """The state saved in ``workdir`` as ``which`` ('latest', 'best' or a step), replicated over
    ``mesh``, whatever number of processes and devices wrote it."""
    checkpoint_dir = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(checkpoint_dir):  # checked first: opening a Checkpointer creates it
        raise CheckpointError(f'No checkpoint in {checkpoint_dir}; train first, or pass the '
                              '--workdir of a run that has trained.')
    _check_trained_model(config, workdir)
    model = build_model(config.model)
    tx = optim.restorable_optimizer(config)  # the optimiser state is part of what was saved
    target = abstract_train_state(model, tx, tuple(config.data.crop_size), config.seed, mesh)
    with checkpoints.Checkpointer(checkpoint_dir, keep=config.keep_checkpoints,
                                  read_only=True) as ckpt:
        return ckpt.restore(target, int(which) if which.isdigit() else which)


def _exporter(config: ml_collections.ConfigDict) -> Exporter | None:
    """The exporter ``config.eval.export_dir`` asks for, checked before anything is restored."""
    if not config.eval.export_dir:
        return None
    if config.data.eval_scale != 1.0:
        raise ConfigError(
            f'config.eval.export_dir exports predictions at full resolution, but '
            f'config.data.eval_scale={config.data.eval_scale} resizes the images and labels '
            'themselves. Set --config.data.eval_scale=1.0 and, to infer at another scale, '
            f'--config.eval.scales="({config.data.eval_scale},)", which resizes only the '
            'network\'s input and predicts at full resolution.')
    return Exporter(config.eval.export_dir, config.eval.split)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``--mode eval``: restores ``config.eval.checkpoint`` from ``workdir`` and evaluates it;
    with ``config.eval.export_dir`` it also writes the official label-id PNGs."""
    parallel.check_batch_size(config.eval.batch_size, 'config.eval.batch_size')
    mesh = parallel.data_mesh()
    evaluator = Evaluator(config, build_model(config.model), mesh)  # checks config.eval
    exporter = _exporter(config)
    state = restore_checkpoint(config, workdir, str(config.eval.checkpoint), mesh)
    reporter = reporting.Reporter(workdir, enabled=jax.process_index() == 0)
    step = int(jax.device_get(state.step))
    try:
        results = evaluator.evaluate(state, config.eval.split, reporter, step, exporter)
    finally:
        if exporter is not None:
            exporter.close()
        reporter.close()
    if exporter is not None and reporter.enabled:
        print(f'Exported {results["num_images"]} label-id PNGs (this process: '
              f'{exporter.written}) to {exporter.folder}. Evaluate them with '
              'python -m seg_jax.tools.cityscapes_eval (README, "Inference").',
              flush=True)
    return results
