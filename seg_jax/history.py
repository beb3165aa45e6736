"""What a run records for people to read: history, TensorBoard, eval records and pictures.

    workdir/history.jsonl                 one JSON object per train / eval event
    workdir/tensorboard/train/            the training scalars
    workdir/tensorboard/eval/             per evaluation: its scalars ({split}/miou,
                                          {split}/iou/<class>, ...), the per-class IoU table
                                          (text) and the two pictures below (images)
    workdir/eval/{split}_{step}.json      every metric, per-class IoU by name, confusion matrix
    workdir/plots/curves.png              losses, pixel accuracy, mIoU, course classes vs. step
    workdir/plots/predictions_{step}.png  image | ground truth | prediction
    workdir/plots/confusion_{step}.png    the confusion matrix, each ground-truth row normalised

``--mode eval`` measures a checkpoint again, often another one or with test-time augmentation;
its results must neither replace training's record of the same step nor join training's curves.
So its files carry a suffix that says which weights and which inference
(``seg_jax.evaluate.record_suffix``): ``eval/{split}_{step}_{suffix}.json``,
``plots/predictions_{split}_{step}_{suffix}.png`` (and ``confusion_...``), the TensorBoard run
``eval_{suffix}``, and history events of kind ``'mode_eval'`` that name their record file.

A ``Reporter`` built with ``enabled=jax.process_index() == 0`` writes on process 0 only, so
the loop can call it on every process. JSON and PNG files are written to a temporary name and
renamed over the target, so an interrupted run never leaves a half-written file where a good one
was. The history is appended a line at a time; a torn last line is skipped when it is read back.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np

from seg_jax import figures
from seg_jax.data.classes import CITYSCAPES, ClassTable
from seg_jax.files import write_atomically
from seg_jax.tables import format_class_table, percent
from seg_jax.tensorboard_events import EventWriters, iou_markdown
from seg_jax.workdir import to_json, write_config

if TYPE_CHECKING:  # evaluate imports this module
    from seg_jax.evaluate import EvalResult

HISTORY_FILE = 'history.jsonl'
# The history events of --mode eval: kept beside training's 'eval' events, never in its curves.
MODE_EVAL_KIND = 'mode_eval'


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
    from a checkpoint a step can be logged twice; the later record wins. An evaluation by
    ``--mode eval`` (kind ``MODE_EVAL_KIND``) replaces only an earlier one of the same record
    file, never training's event of its step."""
    if not os.path.exists(path):
        return []
    latest: dict[tuple[str, str | None, int, str | None], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = (event['kind'], event.get('split'), event['step'], event.get('record'))
            latest[key] = event
    return sorted(latest.values(), key=lambda event: event['step'])


def total_seconds(history: Sequence[Mapping[str, Any]], kind: str) -> float | None:
    """The summed ``seconds`` of the ``kind`` events ('train': steps only, evaluations
    excluded; 'eval': evaluations), or None for a history that records none."""
    seconds = [event['seconds'] for event in history
               if event['kind'] == kind and 'seconds' in event]
    return sum(seconds) if seconds else None


def best_evaluation(evaluations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The evaluation (history event or eval record) of the highest mIoU, the later one on a
    tie; a NaN or missing mIoU (a split without labels) ranks last."""
    def rank(evaluation: Mapping[str, Any]) -> tuple[float, int]:
        miou = evaluation.get('miou')
        return (miou if miou is not None and math.isfinite(miou) else -math.inf,
                evaluation['step'])
    return max(evaluations, key=rank)


@dataclasses.dataclass(frozen=True)
class EvalFiles:
    """Where one evaluation's files go, relative to the workdir: training's when ``suffix`` is
    empty, else those of a ``--mode eval`` (module docstring)."""
    split: str
    step: int
    suffix: str = ''

    @property
    def kind(self) -> str:
        """The kind of its history event."""
        return MODE_EVAL_KIND if self.suffix else 'eval'

    @property
    def _name(self) -> str:
        return f'{self.split}_{self.step}' + (f'_{self.suffix}' if self.suffix else '')

    @property
    def record(self) -> str:
        return os.path.join('eval', f'{self._name}.json')

    def plot(self, picture: str) -> str:
        """``picture`` ('predictions' or 'confusion')'s PNG."""
        return os.path.join('plots', f'{picture}_{self._name if self.suffix else self.step}.png')

    @property
    def tensorboard_run(self) -> str:
        return f'eval_{self.suffix}' if self.suffix else 'eval'


class Reporter:
    """Writes a run's reports under ``workdir``, naming and colouring the classes as
    ``classes`` (the run's class table) does; every method does nothing when not enabled
    (processes other than 0), so the loop can call it unconditionally."""

    def __init__(self, workdir: str, enabled: bool = True, classes: ClassTable = CITYSCAPES):
        self.workdir = workdir
        self.enabled = enabled
        self.classes = classes
        self._events = EventWriters(os.path.join(workdir, 'tensorboard'))

    def _path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

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
        self._events.write('train', step, scalars=scalars)

    def log_eval(self, step: int, split: str, metrics: Mapping[str, Any],
                 confusion: np.ndarray, suffix: str = '') -> str:
        """One evaluation of ``split`` (``EvalFiles(split, step, suffix)`` says where to):

        * a history line with the scalar metrics and ``iou/{class}``;
        * the eval record (JSON) with every metric, per-class values by class name, the
          confusion matrix (rows: the classes, then void; columns: the classes), and how the
          images were inferred and from which weights (``metrics['inference']``,
          ``metrics['weights']``, where given);
        * the confusion matrix's picture (``figures.confusion_figure``);
        * in TensorBoard, the scalars as ``{split}/...``, the per-class IoU table as the text
          ``{split}/iou_table`` and the picture as the image ``{split}/confusion``.

        Returns the per-class table of ``format_class_table``.
        """
        table = format_class_table(metrics, self.classes)
        if not self.enabled:
            return table
        files = EvalFiles(split, int(step), suffix)
        scalars = scalar_metrics(metrics)
        # compute_metrics already keys the per-class values by class name.
        per_class = {'iou': metrics['iou_by_class'], 'seed_iou': metrics['seed_iou_by_class']}
        class_iou = {f'iou/{name}': value for name, value in per_class['iou'].items()}
        named = {'record': files.record} if suffix else {}
        self._append_history({'step': files.step, 'kind': files.kind, 'split': split, **named,
                              **scalars, **class_iou})
        record = {'step': files.step, 'split': split, **scalars, **per_class,
                  **{key: metrics[key] for key in ('inference', 'weights') if key in metrics},
                  'confusion_rows': self.classes.names + ('void',),
                  'confusion_columns': self.classes.names}
        write_atomically(self._path(files.record),
                         _eval_json(record, np.asarray(confusion, np.int64)).encode())
        miou = percent(metrics['miou'])  # '-' for a split without labels (Cityscapes' test)
        title = (f'{split}, step {files.step}{f" ({suffix})" if suffix else ""}: '
                 f'mIoU {miou}{"" if miou == "-" else "%"}')
        picture = figures.figure_png(figures.confusion_figure(
            [(title, np.asarray(confusion))], self.classes.names, self.classes.marked,
            self.classes.marked_title))
        write_atomically(self._path(files.plot('confusion')), picture)
        self._events.write(
            files.tensorboard_run, files.step,
            scalars={f'{split}/{key}': value for key, value in {**scalars, **class_iou}.items()},
            images={f'{split}/confusion': picture},
            texts={f'{split}/iou_table': iou_markdown(
                per_class['iou'], per_class['seed_iou'], metrics['miou'], metrics['seed_miou'],
                self.classes)})
        return table

    def plot_curves(self) -> None:
        """``plots/curves.png`` from ``history.jsonl``; nothing when there is no history yet."""
        if not self.enabled:
            return
        history = read_history(self._path(HISTORY_FILE))
        if history:
            write_atomically(self._path('plots', 'curves.png'),
                             figures.figure_png(figures.curves_figure(history, self.classes)))

    def save_predictions(self, step: int, split: str, images: np.ndarray, labels: np.ndarray,
                         predictions: np.ndarray, max_images: int = 4, suffix: str = '') -> None:
        """The prediction panel of the first ``max_images`` examples, one per row, as a PNG
        (``EvalFiles.plot('predictions')``) and the TensorBoard image ``{split}/predictions``.

        ``images`` are ImageNet-normalised (N, H, W, 3); ``labels`` and ``predictions`` are
        train-id maps (N, H, W).
        """
        if not self.enabled:
            return
        files = EvalFiles(split, int(step), suffix)
        canvas = figures.prediction_panel(np.asarray(images)[:max_images],
                                          np.asarray(labels)[:max_images],
                                          np.asarray(predictions)[:max_images],
                                          self.classes.palette)
        picture = figures.titled_png(canvas, list(figures.PANEL_TITLES))
        write_atomically(self._path(files.plot('predictions')), picture)
        self._events.write(files.tensorboard_run, files.step,
                           images={f'{split}/predictions': picture})

    def log_evaluation(self, step: int, split: str, result: 'EvalResult',
                       suffix: str = '') -> None:
        """Everything one evaluation leaves: its record and confusion matrix (``log_eval``),
        its prediction panel, and on the console its table and where its files went.
        ``suffix`` is empty for training's evaluations; ``--mode eval`` passes
        ``seg_jax.evaluate.record_suffix``'s."""
        table = self.log_eval(step, split, result.metrics, result.confusion, suffix)
        self.save_predictions(step, split, *result.sample, suffix=suffix)
        if self.enabled:
            files = EvalFiles(split, int(step), suffix)
            written = [self._path(path) for path in
                       (files.record, files.plot('predictions'), files.plot('confusion'))]
            kept = (f" (training's own record of step {step}, if any, stays as it was)"
                    if suffix else '')
            print(f'Step {step}, {split} ({result.metrics["num_images"]} images, '
                  f'{result.labelled_pixels:,} labelled pixels):\n{table}\n'
                  f'Wrote {written[0]}, {written[1]} and {written[2]}{kept}.', flush=True)

    def close(self) -> None:
        self._events.close()
