"""Evaluation: every image of a split once, at full resolution, into one confusion matrix.

``Evaluator.evaluate`` returns what it measured (metrics, the confusion matrix, a few
predictions) and writes nothing; its callers report it: the training loop after each periodic
evaluation, and ``--mode eval`` (``evaluate_checkpoint``), which restores a checkpoint (the
latest, the best, a given step, or a pretrained file: ``seg_jax.restore``) and, with
``config.eval.export_dir``, also writes the official label-id PNGs (``seg_jax.cityscapes_export``).
Images are inferred as ``config.eval`` says (``seg_jax.inference``).

``--mode eval`` reports under names of its own (``record_suffix``: which weights, which
inference), so that evaluating a step again, with test-time augmentation or another checkpoint,
never replaces what training recorded of that step (``seg_jax.history``).
"""

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seg_jax import config_checks, inference, losses, metrics, parallel, restore
from seg_jax.cityscapes_export import Exporter
from seg_jax.data import pipeline
from seg_jax.data.sources import open_split
from seg_jax.data.split import Split
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.history import Reporter

# Called with each batch this process holds and its rows of the predictions (e.g. an export).
BatchCallback = Callable[[dict[str, np.ndarray], np.ndarray], None]


def eval_totals(log_probabilities: jax.Array, classes: jax.Array,
                batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A batch's share of the split's totals: confusion matrix, loss sum, labelled pixels and
    images. Padded examples (``mask`` False) become all-void, so they count in nothing."""
    labels = jnp.where(batch['mask'][:, None, None], batch['label'], IGNORE_LABEL)
    valid = jnp.sum(labels != IGNORE_LABEL)
    return {'confusion': metrics.confusion_matrix(classes, labels, batch['mask'],
                                                  num_classes=log_probabilities.shape[-1]),
            'loss_sum': losses.cross_entropy(log_probabilities, labels) * valid,
            'valid': valid, 'images': jnp.sum(batch['mask'])}


@dataclasses.dataclass
class EvalResult:
    """One evaluation of a split: ``metrics`` (``compute_metrics``' values plus loss,
    num_images, inference and seconds), the ``confusion`` matrix (rows: ground truth, then void;
    columns: predicted), and a ``sample`` of this process's first images, labels and
    predictions, for the prediction panel."""
    metrics: dict[str, Any]
    confusion: np.ndarray
    sample: tuple[np.ndarray, np.ndarray, np.ndarray]
    labelled_pixels: int


class Evaluator:
    """Evaluates one split (opened, and so checked, once) with a model and ``config.eval``'s
    inference settings; the predict function compiles once per image size."""

    def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh,
                 split: str | Split):
        self.config, self.mesh = config, mesh
        self.split = split if isinstance(split, Split) else open_split(config.data, split)
        self.settings = inference.inference_settings(config.eval)
        self.predict = inference.make_predict_fn(model, self.settings, mesh, eval_totals)

    def evaluate(self, variables: dict[str, Any],
                 on_batch: BatchCallback | None = None) -> EvalResult:
        """The split inferred with ``variables`` (``params`` and ``batch_stats``); every process
        must call it (the batches span all of them). ``on_batch`` sees each of this process's
        batches with its predictions."""
        start = time.perf_counter()
        confusion, loss_sum, valid, images, sample = None, 0.0, 0, 0, None
        for host_batch in pipeline.build_input(self.config, self.split):
            classes, totals = self.predict(variables, parallel.global_batch(host_batch,
                                                                            self.mesh))
            local_classes = parallel.local_rows(classes)
            if on_batch is not None:
                on_batch(host_batch, local_classes)
            confusion = metrics.accumulate(confusion, totals['confusion'])
            loss_sum += float(totals['loss_sum'])
            valid += int(totals['valid'])
            images += int(totals['images'])
            if sample is None:
                sample = (host_batch['image'], host_batch['label'], local_classes)
        results = metrics.compute_metrics(confusion, self.split.classes.names,
                                          self.split.classes.marked)
        results['loss'] = loss_sum / max(valid, 1)
        results['num_images'] = images
        results['inference'] = dataclasses.asdict(self.settings)  # how it was inferred
        results['seconds'] = time.perf_counter() - start
        return EvalResult(results, np.asarray(confusion), sample, valid)


def record_suffix(weights: str, settings: inference.InferenceSettings,
                  eval_scale: float = 1.0, eval_size: tuple[int, int] | None = None) -> str:
    """What ``--mode eval`` appends to its records' names: which weights (``weights``:
    ``config.eval.checkpoint``, 'latest', 'best' or a step, which becomes 'step' as the name
    holds the step already; or 'pretrained' for ``config.model.pretrained``) and how the images
    were inferred: 'whole' or ``window{h}x{w}-stride{h}x{w}``, then ``ms{scales}`` for scales
    other than (1.0,), 'flip', ``resized{factor}`` for ``config.data.eval_scale`` other than 1,
    and ``canvas{h}x{w}`` for ``config.data.eval_size`` (which shrinks larger images). E.g.
    'latest_whole', 'pretrained_whole', 'best_whole_ms0.5-0.75-1.0_flip',
    'step_window512x1024-stride341x683'."""
    parts = ['step' if weights.isdigit() else weights]
    if settings.window is None:
        parts.append('whole')
    else:
        parts.append('window{}x{}-stride{}x{}'.format(*settings.window, *settings.stride))
    if settings.scales != (1.0,):
        parts.append('ms' + '-'.join(str(float(scale)) for scale in settings.scales))
    if settings.flip:
        parts.append('flip')
    if eval_scale != 1.0:
        parts.append(f'resized{float(eval_scale)}')
    if eval_size is not None:
        parts.append('canvas{}x{}'.format(*eval_size))
    return '_'.join(parts)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """``--mode eval``: restores ``config.eval.checkpoint`` from ``workdir`` (or, without
    checkpoints, ``config.model.pretrained``), evaluates it and reports it in the workdir
    under names that say which weights and which inference (``record_suffix``); with
    ``config.eval.export_dir`` it also writes the official label-id PNGs. Returns the
    metrics."""
    config_checks.check_config(config, 'eval')
    mesh = parallel.data_mesh()
    exporter = (Exporter(config.eval.export_dir, config.eval.split)  # checks its folder
                if config.eval.export_dir else None)
    trained = restore.load_trained_model(config, workdir, mesh)
    evaluator = Evaluator(config, trained.model, mesh, config.eval.split)
    reporter = Reporter(workdir, enabled=jax.process_index() == 0,
                        classes=evaluator.split.classes)
    on_batch = None if exporter is None else (
        lambda batch, classes: exporter.write(batch['image_id'], classes, batch['mask']))
    try:
        result = evaluator.evaluate(trained.variables, on_batch)
        result.metrics['weights'] = trained.record
        weights = 'pretrained' if trained.source == 'pretrained' else str(config.eval.checkpoint)
        reporter.log_evaluation(trained.step, config.eval.split, result, record_suffix(
            weights, evaluator.settings, config.data.eval_scale, config.data.eval_size))
    finally:
        if exporter is not None:
            exporter.close()
        reporter.close()
    if exporter is not None and reporter.enabled:
        print(f'Exported {result.metrics["num_images"]} label-id PNGs (this process: '
              f'{exporter.written}) to {exporter.folder}. Evaluate them with '
              'python -m seg_jax.tools.cityscapes_eval (README, "Inference").',
              flush=True)
    return result.metrics
