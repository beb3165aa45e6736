"""What a run records for people to read: history, TensorBoard, eval records and plots.

    workdir/history.jsonl               one JSON object per train / eval event
    workdir/tensorboard/{train,eval}/   the same scalars for TensorBoard
    workdir/eval/{split}_{step}.json    every metric, per-class IoU by name, confusion matrix
    workdir/plots/curves.png            losses, pixel accuracy, mIoU, course classes vs. step
    workdir/plots/predictions_{step}.png  image | ground truth | prediction

A ``Reporter`` built with ``enabled=jax.process_index() == 0`` writes on process 0 only, so
the loop can call it on every process. JSON and PNG files are written to a temporary name and
renamed over the target, so an interrupted run never leaves a half-written file where a good one
was. The history is appended a line at a time; a torn last line is skipped when it is read back.
"""

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import tensorflow as tf

from seg_jax import figures
from seg_jax.data.labels import CLASS_NAMES
from seg_jax.files import write_atomically
from seg_jax.tables import format_class_table
from seg_jax.workdir import to_json, write_config

if TYPE_CHECKING:  # evaluate imports this module
    from seg_jax.evaluate import EvalResult

HISTORY_FILE = 'history.jsonl'
# Rows of the confusion matrix: the 19 train ids, then void ground truth (predicted as a class).
CONFUSION_ROWS: tuple[str, ...] = CLASS_NAMES + ('void',)
# What ``tensorboard.summary.scalar`` attaches to a value so TensorBoard's scalar dashboard shows
# it; written with core ``tf.summary.write`` because tensorflow-cpu does not bring TensorBoard.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name='scalars'))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are single numbers (mIoU, pixel accuracy, loss, ...), as floats."""
    return {key: float(value) for key, value in metrics.items()
            if not isinstance(value, Mapping) and np.ndim(value) == 0}


def _eval_json(record: Mapping[str, Any], confusion: np.ndarray) -> str:
    """``record`` indented, plus ``confusion`` one matrix row per line (fully indented, a 20x19
    matrix would take 400 lines)."""
    rows = ',\n  '.join(to_json(row) for row in confusion)
    return to_json(record, indent=1)[:-2] + f',\n "confusion": [\n  {rows}\n ]\n}}\n'


def read_history(path: str) -> list[dict[str, Any]]:
    """The events of ``history.jsonl`` in step order, skipping a torn last line. After a resume
    from a checkpoint a step can be logged twice; the later record wins."""
    if not os.path.exists(path):
        return []
    latest: dict[tuple[str, str | None, int], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[(event['kind'], event.get('split'), event['step'])] = event
    return sorted(latest.values(), key=lambda event: event['step'])


class Reporter:
    """Writes a run's reports under ``workdir``; every method does nothing when not enabled
    (processes other than 0), so the loop can call it unconditionally."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def _writer(self, kind: str) -> tf.summary.SummaryWriter:
        """TensorBoard writer for 'train' or 'eval', created on first use."""
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(self._path('tensorboard', kind))
        return self._writers[kind]

    def _write_scalars(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        writer = self._writer(kind)
        with writer.as_default():
            for tag, value in scalars.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=_SCALAR_METADATA)
        writer.flush()

    def _append_history(self, event: Mapping[str, Any]) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        with open(self._path(HISTORY_FILE), 'a') as f:
            f.write(to_json(event) + '\n')

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        """The workdir's ``config.json`` (``seg_jax.workdir.write_config``)."""
        if self.enabled:
            write_config(self.workdir, config)

    def log_train(self, step: int, scalars: Mapping[str, float]) -> None:
        """One train event: a history line and TensorBoard scalars under their own names."""
        if not self.enabled:
            return
        step = int(step)
        scalars = {key: float(value) for key, value in scalars.items()}
        self._append_history({'step': step, 'kind': 'train', **scalars})
        self._write_scalars('train', step, scalars)

    def log_eval(self, step: int, split: str, metrics: Mapping[str, Any],
                 confusion: np.ndarray) -> str:
        """One evaluation of ``split``: a history line with the scalar metrics and
        ``iou/{class}``, the same as TensorBoard scalars ``{split}/...``, and
        ``eval/{split}_{step}.json`` with every metric, per-class values by class name and the
        confusion matrix (rows ``CONFUSION_ROWS``, columns ``CLASS_NAMES``), and how the images
        were inferred and from which weights (``metrics['inference']``, ``metrics['weights']``,
        where given). Returns the per-class table of
        ``format_class_table``.
        """
        table = format_class_table(metrics)
        if not self.enabled:
            return table
        step = int(step)
        scalars = scalar_metrics(metrics)
        # compute_metrics already keys the per-class values by class name.
        per_class = {'iou': metrics['iou_by_class'], 'seed_iou': metrics['seed_iou_by_class']}
        class_iou = {f'iou/{name}': value for name, value in per_class['iou'].items()}
        self._append_history({'step': step, 'kind': 'eval', 'split': split, **scalars,
                              **class_iou})
        record = {'step': step, 'split': split, **scalars, **per_class,
                  **{key: metrics[key] for key in ('inference', 'weights') if key in metrics},
                  'confusion_rows': CONFUSION_ROWS, 'confusion_columns': CLASS_NAMES}
        write_atomically(self._path('eval', f'{split}_{step}.json'),
                         _eval_json(record, np.asarray(confusion, np.int64)).encode())
        tags = {f'{split}/{key}': value for key, value in {**scalars, **class_iou}.items()}
        self._write_scalars('eval', step, tags)
        return table

    def plot_curves(self) -> None:
        """``plots/curves.png`` from ``history.jsonl``; nothing when there is no history yet."""
        if not self.enabled:
            return
        history = read_history(self._path(HISTORY_FILE))
        if history:
            write_atomically(self._path('plots', 'curves.png'),
                             figures.figure_png(figures.curves_figure(history)))

    def save_predictions(self, step: int, images: np.ndarray, labels: np.ndarray,
                         predictions: np.ndarray, max_images: int = 4) -> None:
        """``plots/predictions_{step}.png``: the first ``max_images`` examples, one per row.

        ``images`` are ImageNet-normalised (N, H, W, 3); ``labels`` and ``predictions`` are
        train-id maps (N, H, W).
        """
        if not self.enabled:
            return
        canvas = figures.prediction_panel(np.asarray(images)[:max_images],
                                          np.asarray(labels)[:max_images],
                                          np.asarray(predictions)[:max_images])
        write_atomically(self._path('plots', f'predictions_{int(step)}.png'),
                         figures.titled_png(canvas, list(figures.PANEL_TITLES)))

    def log_evaluation(self, step: int, split: str, result: 'EvalResult') -> None:
        """Everything one evaluation  leaves: its record
        (``log_eval``), its prediction panel, and its table on the console."""
        table = self.log_eval(step, split, result.metrics, result.confusion)
        self.save_predictions(step, *result.sample)
        if self.enabled:
            print(f'Step {step}, {split} ({result.metrics["num_images"]} images, '
                  f'{result.labelled_pixels:,} labelled pixels):\n{table}', flush=True)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
