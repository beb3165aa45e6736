"""Evaluation: every image of a split once, at full resolution, into one confusion matrix.

The same ``Evaluator`` serves the periodic evaluation of ``train.py`` and ``--mode eval``, which
restores a checkpoint (the latest, the best, or a given step) and evaluates it, and with
``config.eval.export_dir`` writes the official label-id PNGs too (``seg_jax.export``). Images are
inferred as ``config.eval`` says (``seg_jax.inference``). A workdir without checkpoints
evaluates ``config.model.pretrained`` instead (a downloaded model-zoo file, say), which must
then fill every variable of the model.
"""

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from seg_jax import (checkpoints, inference, losses, metrics, optim, parallel, pretrained,
                     reporting)
from seg_jax.data import pipeline
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import CheckpointError, ConfigError, first_few
from seg_jax.export import Exporter
from seg_jax.models import build_model
from seg_jax.state import TrainState, abstract_train_state
from seg_jax.summary import abstract_variables


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
                 exporter: Exporter | None = None, weights_record: dict | None = None) -> dict:
        """Metrics of ``split`` of ``state`` (a TrainState, or anything with ``params`` and
        ``batch_stats`` such as ``Weights``); every process must call it (the batches span all
        of them). With an ``exporter``, each process also writes its images' predictions;
        ``weights_record`` says where the variables come from (``Weights.record``)."""
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
        if weights_record is not None:
            results['weights'] = weights_record
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
        raise CheckpointError(f'No checkpoint in {checkpoint_dir}; train first, pass the '
                              '--workdir of a run that has trained, or evaluate a trained '
                              'weights file with --config.model.pretrained=FILE.')
    _check_trained_model(config, workdir)
    model = build_model(config.model)
    tx = optim.restorable_optimizer(config)  # the optimiser state is part of what was saved
    target = abstract_train_state(model, tx, tuple(config.data.crop_size), config.seed, mesh)
    with checkpoints.Checkpointer(checkpoint_dir, keep=config.keep_checkpoints,
                                  read_only=True) as ckpt:
        return ckpt.restore(target, int(which) if which.isdigit() else which)


@dataclasses.dataclass
class Weights:
    """The variables eval and predict run, and where they come from."""
    params: Any
    batch_stats: Any
    step: int  # the checkpoint's step; 0 for a pretrained file
    source: str  # 'checkpoint' | 'pretrained'
    path: str  # the workdir, or the pretrained file

    @property
    def record(self) -> dict:
        """What eval records say of the weights."""
        return {'source': self.source, 'path': self.path, 'step': self.step}

    def describe(self) -> str:
        if self.source == 'pretrained':
            return f'the pretrained file {self.path} (config.model.pretrained)'
        return f'step {self.step} of {self.path}'


def _pretrained_weights(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Weights:
    """``config.model.pretrained`` loaded as it is, replicated over ``mesh``; refused when it
    leaves a variable freshly initialised (an ImageNet backbone, another class count), since
    evaluating random weights would measure nothing."""
    model = build_model(config.model)
    target = abstract_variables(model, (1, *config.data.crop_size, 3))
    variables, report = pretrained.load_pretrained(target, config.model)
    if report.fresh:
        names = list(report.fresh)
        raise pretrained.WeightsError(
            f'{config.model.pretrained} does not hold the whole configured model: '
            f'{len(names)} variables would be random ({first_few(names, 3)}; '
            f'{report.fresh[names[0]]}). Evaluating needs a trained model (e.g. an mmseg '
            'model-zoo checkpoint with its config, README "Model zoo"), or train first.')
    if jax.process_index() == 0:
        print(report.summary(), flush=True)
    variables = jax.device_put(variables, parallel.replicated(mesh))
    return Weights(variables['params'], variables.get('batch_stats', {}), 0, 'pretrained',
                   config.model.pretrained)


def weights_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          mesh: jax.sharding.Mesh) -> Weights:
    """What ``--mode eval`` and ``predict`` run: ``config.eval.checkpoint`` of ``workdir``,
    or, when the workdir has no checkpoint at all, ``config.model.pretrained`` (said on
    screen)."""
    checkpoint_dir = os.path.join(workdir, 'checkpoints')
    if config.model.pretrained and not checkpoints.has_checkpoint(checkpoint_dir):
        if jax.process_index() == 0:
            print(f'No checkpoint in {checkpoint_dir}: using config.model.pretrained '
                  f'({config.model.pretrained}) as it is.', flush=True)
        return _pretrained_weights(config, mesh)
    state = restore_checkpoint(config, workdir, str(config.eval.checkpoint), mesh)
    return Weights(state.params, state.batch_stats, int(jax.device_get(state.step)),
                   'checkpoint', workdir)


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
    """``--mode eval``: restores ``config.eval.checkpoint`` from ``workdir`` (or, without
    checkpoints, ``config.model.pretrained``) and evaluates it; with ``config.eval.export_dir``
    it also writes the official label-id PNGs."""
    parallel.check_batch_size(config.eval.batch_size, 'config.eval.batch_size')
    mesh = parallel.data_mesh()
    evaluator = Evaluator(config, build_model(config.model), mesh)  # checks config.eval
    exporter = _exporter(config)
    weights = weights_for_inference(config, workdir, mesh)
    reporter = reporting.Reporter(workdir, enabled=jax.process_index() == 0)
    try:
        results = evaluator.evaluate(weights, config.eval.split, reporter, weights.step,
                                     exporter, weights.record)
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
