"""Pictures of a run: learning curves, panels of images, ground truth and predictions, and
confusion matrices.

Everything here is a pure function from numbers and arrays to a ``Figure``, an RGB array or
PNG bytes; writing them is the caller's (``seg_jax.history.Reporter``, ``seg_jax.compare``).
Matplotlib is used through ``Figure`` objects, never pyplot: no global state and no display.
"""

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from seg_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from seg_jax.data.classes import CITYSCAPES, ClassTable
from seg_jax.errors import ShapeError
from seg_jax.files import png_bytes

# Prediction panels are shrunk (by an integer stride, so label colours stay exact) to this width.
MAX_PANEL_WIDTH = 512
PANEL_GAP = 4  # white pixels between tiles
HEADER_HEIGHT = 20  # strip above the tiles for their titles
PANEL_TITLES = ('image', 'ground truth', 'prediction')
# Confusion matrices: white (none of the row's pixels) to dark blue (all of them); rows of a
# class absent from the ground truth (NaN) stay white, and say so.
CONFUSION_COLOURS = matplotlib.colormaps['Blues'].with_extremes(bad='white')
MARK_COLOUR = 'tab:red'  # the course classes' tick labels and diagonal cells
CONFUSION_PANEL_WIDTH = 6.0  # inches per matrix (100 pixels per inch)
CONFUSION_LABELS_WIDTH = 2.4  # inches for the row labels and the colour bar
CONFUSION_HEIGHT = 7.0
# Above this many classes (ADE20K's 150) the cells carry no numbers and the panels grow with the
# classes: tens of thousands of figures would be unreadable and take matplotlib minutes.
CONFUSION_MAX_ANNOTATED = 40
CONFUSION_INCHES_PER_CLASS = 0.1


def _plot(axis: Axes, events: list[dict[str, Any]], key: str, label: str, **style) -> None:
    """``key`` against step over ``events``, skipping events without it and None (NaN)."""
    points = [(event['step'], event[key]) for event in events if event.get(key) is not None]
    if points:
        steps, values = zip(*points, strict=True)
        # Markers keep a curve with a single point visible.
        axis.plot(steps, values, label=label, marker='o' if len(points) < 30 else None,
                  markersize=3, **style)


# At most this many classes are plotted one curve each when a class table marks none.
MAX_UNMARKED_CURVES = 6


def curves_figure(history: list[dict[str, Any]], table: ClassTable = CITYSCAPES) -> Figure:
    """Losses, pixel accuracy, mIoU and per-class IoU against training steps: of the classes
    ``table`` marks (Cityscapes: the course's five), or, for a table that marks none, of all
    its classes if it has at most ``MAX_UNMARKED_CURVES``."""
    plotted = table.marked or (table.names if table.num_classes <= MAX_UNMARKED_CURVES else ())
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
        for name in plotted:
            _plot(class_axis, events, f'iou/{name}', prefix + name)

    titles = ('loss', 'pixel accuracy', 'mIoU',
              f'IoU of the {table.marked_title}' if table.marked else 'IoU per class')
    for axis, title in zip(axes.flat, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel('step')
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize='small')
        else:
            empty = ('no data yet' if plotted or axis is not class_axis else
                     f'{table.num_classes} classes: mark some in the class table to plot them')
            axis.text(0.5, 0.5, empty, ha='center', va='center', transform=axis.transAxes,
                      color='gray')
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


def colorize(labels: np.ndarray, palette: np.ndarray = CITYSCAPES.palette) -> np.ndarray:
    """Train-id maps in a class table's colours (by default Cityscapes' official ones); void
    (255) is black."""
    return palette[np.asarray(labels, np.int64)]


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


def prediction_panel(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                     palette: np.ndarray = CITYSCAPES.palette) -> np.ndarray:
    """One row per example, image | ground truth | prediction (``tile_grid``) in ``palette``'s
    colours, as uint8 RGB."""
    if images.ndim != 4 or labels.shape != images.shape[:3] or predictions.shape != labels.shape:
        raise ShapeError(f'Expected images (N, H, W, 3) with labels and predictions (N, H, W); '
                         f'got {images.shape}, {labels.shape} and {predictions.shape}.')
    return tile_grid([denormalize(images), colorize(labels, palette),
                      colorize(predictions, palette)])


def titled_png(canvas: np.ndarray, titles: list[str]) -> bytes:
    """A ``tile_grid`` canvas as PNG bytes, each column titled in the strip above it."""
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=HEADER_HEIGHT - 6)
    width = (canvas.shape[1] + PANEL_GAP) // len(titles)
    for column, title in enumerate(titles):
        draw.text((column * width + 2, 2), title, fill=(0, 0, 0), font=font)
    return png_bytes(np.asarray(image))


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix (a ground-truth class) divided by its sum: the share of
    that class's pixels predicted as each class. A class absent from the ground truth has
    nothing to share out: its row is NaN, which ``confusion_figure`` leaves blank."""
    counts = np.asarray(confusion, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)


def _confusion_axis(axis: Axes, title: str, shares: np.ndarray, class_names: Sequence[str],
                    marked: Sequence[str], marked_title: str, first: bool) -> AxesImage:
    """One panel of ``confusion_figure``: the shares as colours, those of 1% or more in figures
    too (up to ``CONFUSION_MAX_ANNOTATED`` classes), marked classes in red (tick labels and a
    frame on their diagonal cell)."""
    image = axis.imshow(shares, cmap=CONFUSION_COLOURS, vmin=0.0, vmax=1.0,
                        interpolation='nearest')
    positions = range(len(class_names))
    annotated = len(class_names) <= CONFUSION_MAX_ANNOTATED
    fontsize = 8 if annotated else 5
    axis.set_xticks(positions, class_names, rotation=90, fontsize=fontsize)
    axis.set_yticks(positions, class_names if first else [], fontsize=fontsize)
    for labels in (axis.get_xticklabels(), axis.get_yticklabels() if first else []):
        for label in labels:
            if label.get_text() in marked:
                label.set_color(MARK_COLOUR)
                label.set_fontweight('bold')
    for row, column in zip(*np.nonzero(shares >= 0.01) if annotated else ((), ()), strict=True):
        value = shares[row, column]
        axis.text(column, row, f'{100 * value:.0f}', ha='center', va='center', fontsize=6,
                  color='white' if value > 0.5 else 'black')
    for row in np.flatnonzero(np.isnan(shares).all(axis=1)):
        axis.text(len(class_names) / 2 - 0.5, row, 'not in the ground truth', ha='center',
                  va='center', fontsize=7, color='gray', style='italic')
    for index, name in enumerate(class_names):
        if name in marked:
            axis.add_patch(Rectangle((index - 0.5, index - 0.5), 1, 1, fill=False,
                                     edgecolor=MARK_COLOUR, linewidth=1.5))
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(f'prediction (red: the {marked_title})' if marked else 'prediction')
    if first:
        axis.set_ylabel('ground truth')
    return image


def confusion_figure(panels: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                     marked: Sequence[str] = (), marked_title: str = 'course classes') -> Figure:
    """Confusion matrices, one ``(title, matrix)`` panel each, side by side on one colour scale
    with one colour bar: rows are the ground truth, columns the prediction, both labelled with
    ``class_names``, each row normalised (``row_normalised``) so that a rare class reads as
    clearly as road, and the ``marked`` classes in red.

    A matrix may hold one row more than ``class_names``, void ground truth, as evaluations
    record it; that row is left out: void pixels are not scored."""
    count = len(class_names)
    for title, matrix in panels:
        if np.ndim(matrix) != 2 or np.shape(matrix)[1] != count or np.shape(matrix)[0] not in (
                count, count + 1):
            raise ShapeError(f'The confusion matrix of {title!r} has shape {np.shape(matrix)}; '
                             f'expected ({count}, {count}) or ({count + 1}, {count}) for '
                             f'{count} class names.')
    panel = max(CONFUSION_PANEL_WIDTH, CONFUSION_INCHES_PER_CLASS * count)
    figure = Figure(figsize=(CONFUSION_LABELS_WIDTH + panel * len(panels),
                             CONFUSION_HEIGHT + panel - CONFUSION_PANEL_WIDTH),
                    layout='compressed')
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for index, (axis, (title, matrix)) in enumerate(zip(axes, panels, strict=True)):
        image = _confusion_axis(axis, title, row_normalised(np.asarray(matrix)[:count]),
                                class_names, marked, marked_title, first=index == 0)
    colour_bar = figure.colorbar(image, ax=list(axes), shrink=0.8, pad=0.01)
    colour_bar.set_label("share of the ground-truth class's pixels")
    return figure
