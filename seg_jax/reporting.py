"""What a training run leaves in its workdir for people to read: config, history, plots.

    workdir/config.json                 the resolved config (a replaced one is kept as
                                        config.replaced_<n>.json)
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

import io
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tqdm
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from seg_jax import config_diff
from seg_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from seg_jax.data.labels import (
    CLASS_NAMES, COURSE_CLASS_IDS, COURSE_CLASSES, PALETTE)
from seg_jax.errors import ShapeError
from seg_jax.files import png_bytes, write_atomically

HISTORY_FILE = 'history.jsonl'
CONFIG_FILE = 'config.json'
# Fields a run may change when it continues in its workdir: its length and reporting cadence,
# where the data lives, what --mode benchmark times and --mode predict / export write, and whether
# it skips bad steps or examples (to continue a run that stopped on one), and whether a fresh start
# requires pretrained weights (a resumed run has its own). Anything else would mix experiments.
CHANGEABLE_FIELDS = ('num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
                     'checkpoint_every_steps', 'keep_checkpoints', 'allow_config_change',
                     'skip_nonfinite_steps', 'data.skip_bad_examples', 'data.dir',
                     'data.manual_dir', 'data.tfds_dir', 'benchmark', 'predict',
                     'eval.export_dir', 'model.pretrained_required')
# Rows of the confusion matrix: the 19 train ids, then void ground truth (predicted as a class).
CONFUSION_ROWS: tuple[str, ...] = CLASS_NAMES + ('void',)
# Prediction panels are shrunk (by an integer stride, so label colours stay exact) to this width.
MAX_PANEL_WIDTH = 512
PANEL_GAP = 4  # white pixels between tiles
HEADER_HEIGHT = 20  # strip above the tiles for their titles
_TITLES = ('image', 'ground truth', 'prediction')
# What ``tensorboard.summary.scalar`` attaches to a value so TensorBoard's scalar dashboard shows
# it; written with core ``tf.summary.write`` because tensorflow-cpu does not bring TensorBoard.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name='scalars'))


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: arrays become lists and NaN / inf become None, since
    strict JSON readers (and ``json.dumps(allow_nan=False)``) reject NaN."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _to_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def _eval_json(record: Mapping[str, Any], confusion: np.ndarray) -> str:
    """``record`` indented, plus ``confusion`` one matrix row per line (fully indented, a 20x19
    matrix would take 400 lines)."""
    rows = ',\n  '.join(_to_json(row) for row in confusion)
    return _to_json(record, indent=1)[:-2] + f',\n "confusion": [\n  {rows}\n ]\n}}\n'


def resolved_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as ``config.json`` holds it: plain JSON types, tuples as lists."""
    return json_safe(json.loads(config.to_json_best_effort()))


def stored_config(workdir: str) -> dict[str, Any] | None:
    """The ``config.json`` of the run in ``workdir``; None for a workdir without one."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def with_defaults(stored: dict[str, Any]) -> ml_collections.ConfigDict:
    """A stored config on top of today's ``configs/default.py``: a run written before a field
    existed ran with what is now its default, so it gets that value (and builds and restores
    with today's code)."""
    from configs import default  # the package installed beside seg_jax
    config = default.get_config()
    with config.unlocked():
        config.update(stored)
    return config


def config_changes(workdir: str, config: ml_collections.ConfigDict,
                   ignored: tuple[str, ...] = CHANGEABLE_FIELDS) -> list[str]:
    """``'field: old -> new'`` for each field where ``config`` differs from the run already in
    ``workdir`` (none for a new workdir), except fields matching the ``ignored`` prefixes.
    Fields the stored config lacks (added to seg_jax since) compare at their defaults."""
    stored = stored_config(workdir)
    if stored is None:
        return []
    return config_diff.differences(resolved_config(with_defaults(stored)),
                                   resolved_config(config), ignored)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are single numbers (mIoU, pixel accuracy, loss, ...), as floats."""
    return {key: float(value) for key, value in metrics.items()
            if not isinstance(value, Mapping) and np.ndim(value) == 0}


def _percent(value: float) -> str:
    return f'{100 * value:.1f}' if math.isfinite(value) else '-'


def format_class_table(metrics: Mapping[str, Any]) -> str:
    """Every class's IoU (official and the course's stricter seed IoU, in %), then the course
    results-table row: the five classes it singles out beside mIoU and pixel accuracy.

    Classes absent from both ground truth and prediction have NaN IoU and show as '-'.
    """
    iou = np.asarray(metrics['iou'], np.float64)
    seed_iou = np.asarray(metrics['seed_iou'], np.float64)
    name_width = max(len(name) for name in CLASS_NAMES) + 3
    lines = [f'{"class":<{name_width}}{"IoU":>7}{"seed IoU":>10}']
    for class_id, name in enumerate(CLASS_NAMES):
        label = f'{name} *' if class_id in COURSE_CLASS_IDS else name
        lines.append(f'{label:<{name_width}}{_percent(iou[class_id]):>7}'
                     f'{_percent(seed_iou[class_id]):>10}')
    lines.append(f'{"mean":<{name_width}}{_percent(metrics["miou"]):>7}'
                 f'{_percent(metrics["seed_miou"]):>10}')
    lines.append(f'pixel accuracy {_percent(metrics["pixel_accuracy"])}, '
                 f'mean class accuracy {_percent(metrics["mean_class_accuracy"])}, '
                 f'frequency-weighted IoU {_percent(metrics["fw_iou"])}')
    lines.append('')

    headers = ('* course classes',) + COURSE_CLASSES + ('mIoU', 'pixel acc')
    widths = [len(headers[0])] + [max(len(header), 5) + 2 for header in headers[1:]]
    rows = [
        ['official'] + [_percent(iou[i]) for i in COURSE_CLASS_IDS]
        + [_percent(metrics['miou']), _percent(metrics['pixel_accuracy'])],
        ['seed'] + [_percent(seed_iou[i]) for i in COURSE_CLASS_IDS]
        + [_percent(metrics['seed_miou']), ''],
    ]
    for first, *cells in [headers] + rows:
        lines.append((f'{first:<{widths[0]}}' + ''.join(
            f'{cell:>{width}}' for cell, width in zip(cells, widths[1:], strict=True))).rstrip())
    return '\n'.join(lines)


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


def _plot(axis: Axes, events: list[dict[str, Any]], key: str, label: str, **style) -> None:
    """``key`` against step over ``events``, skipping events without it and None (NaN)."""
    points = [(event['step'], event[key]) for event in events if event.get(key) is not None]
    if points:
        steps, values = zip(*points, strict=True)
        # Markers keep a curve with a single point visible.
        axis.plot(steps, values, label=label, marker='o' if len(points) < 30 else None,
                  markersize=3, **style)


def curves_figure(history: list[dict[str, Any]]) -> Figure:
    """Losses, pixel accuracy, mIoU and the course classes' IoU against training steps.

    A ``Figure`` rather than pyplot: no global state and no display backend.
    """
    train = [event for event in history if event['kind'] == 'train']
    evals: dict[str, list[dict[str, Any]]] = {}
    for event in history:
        if event['kind'] == 'eval':
            evals.setdefault(event['split'], []).append(event)

    figure = Figure(figsize=(12, 8), layout='constrained')
    axes = figure.subplots(2, 2)
    loss_axis, accuracy_axis, miou_axis, class_axis = axes.flat
    _plot(loss_axis, train, 'loss', 'train', linewidth=1)
    for split, events in evals.items():
        _plot(loss_axis, events, 'loss', split)
        _plot(accuracy_axis, events, 'pixel_accuracy', split)
        _plot(miou_axis, events, 'miou', split)
        _plot(miou_axis, events, 'seed_miou', f'{split} (seed IoU)', linestyle='--')
        prefix = f'{split} ' if len(evals) > 1 else ''
        for name in COURSE_CLASSES:
            _plot(class_axis, events, f'iou/{name}', prefix + name)

    titles = ('loss', 'pixel accuracy', 'mIoU', 'IoU of the course classes')
    for axis, title in zip(axes.flat, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel('step')
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize='small')
        else:
            axis.text(0.5, 0.5, 'no data yet', ha='center', va='center',
                      transform=axis.transAxes, color='gray')
    for axis in (accuracy_axis, miou_axis, class_axis):
        axis.set_ylim(0, 1)
    return figure


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100)
    return buffer.getvalue()


def denormalize(images: np.ndarray) -> np.ndarray:
    """ImageNet-normalised float images back to uint8 RGB."""
    rgb = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(255 * rgb), 0, 255).astype(np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Train-id maps in the official Cityscapes colours; void (255) is black."""
    return PALETTE[np.asarray(labels, np.int64)]


def tile_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Columns of uint8 RGB tiles ``(N, H, W, 3)`` (one row per example) side by side on white,
    below a strip for titles. Large tiles are subsampled by an integer stride (nearest
    neighbour), so every label pixel keeps exactly its palette colour."""
    stride = math.ceil(columns[0].shape[2] / MAX_PANEL_WIDTH)
    tiles = [column[:, ::stride, ::stride] for column in columns]
    count, height, width = tiles[0].shape[:3]
    canvas = np.full((HEADER_HEIGHT + count * (height + PANEL_GAP) - PANEL_GAP,
                      len(tiles) * (width + PANEL_GAP) - PANEL_GAP, 3), 255, np.uint8)
    for column, tile in enumerate(tiles):
        left = column * (width + PANEL_GAP)
        for row in range(count):
            top = HEADER_HEIGHT + row * (height + PANEL_GAP)
            canvas[top:top + height, left:left + width] = tile[row]
    return canvas


def prediction_panel(images: np.ndarray, labels: np.ndarray,
                     predictions: np.ndarray) -> np.ndarray:
    """One row per example, image | ground truth | prediction (``tile_grid``), as uint8 RGB."""
    if images.ndim != 4 or labels.shape != images.shape[:3] or predictions.shape != labels.shape:
        raise ShapeError(f'Expected images (N, H, W, 3) with labels and predictions (N, H, W); '
                         f'got {images.shape}, {labels.shape} and {predictions.shape}.')
    return tile_grid([denormalize(images), colorize(labels), colorize(predictions)])


def titled_png(canvas: np.ndarray, titles: list[str]) -> bytes:
    """A ``tile_grid`` canvas as PNG bytes, each column titled in the strip above it."""
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=HEADER_HEIGHT - 6)
    width = (canvas.shape[1] + PANEL_GAP) // len(titles)
    for column, title in enumerate(titles):
        draw.text((column * width + 2, 2), title, fill=(0, 0, 0), font=font)
    return png_bytes(np.asarray(image))


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
            f.write(_to_json(event) + '\n')

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        """``config.json``: the resolved config (tuples become lists, NaN becomes null). A
        different config already there is kept as ``config.replaced_<n>.json`` (n = 1, 2, ...)."""
        if not self.enabled:
            return
        path = self._path(CONFIG_FILE)
        if config_changes(self.workdir, config, ignored=()):
            replaced = 1
            while os.path.exists(self._path(f'config.replaced_{replaced}.json')):
                replaced += 1
            os.replace(path, self._path(f'config.replaced_{replaced}.json'))
        write_atomically(path, _to_json(resolved_config(config), indent=2).encode())

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
                             figure_png(curves_figure(history)))

    def save_predictions(self, step: int, images: np.ndarray, labels: np.ndarray,
                         predictions: np.ndarray, max_images: int = 4) -> None:
        """``plots/predictions_{step}.png``: the first ``max_images`` examples, one per row.

        ``images`` are ImageNet-normalised (N, H, W, 3); ``labels`` and ``predictions`` are
        train-id maps (N, H, W).
        """
        if not self.enabled:
            return
        canvas = prediction_panel(np.asarray(images)[:max_images],
                                  np.asarray(labels)[:max_images],
                                  np.asarray(predictions)[:max_images])
        write_atomically(self._path('plots', f'predictions_{int(step)}.png'),
                         titled_png(canvas, list(_TITLES)))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class Progress:
    """A progress bar on process 0: step, loss, learning rate, images/s and the ETA."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                              dynamic_ncols=True, disable=not enabled)

    def update(self, step: int, scalars: Mapping[str, float]) -> None:
        self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}",
                              img_s=f"{scalars['images_per_s']:.1f}", refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()
