"""Text tables of an evaluation, as the console shows them.

``format_class_table`` is what the loop and ``--mode eval`` print after each evaluation: every
class's official IoU and the course's stricter seed IoU, then the row of the course's results
table (its five classes beside mIoU and pixel accuracy).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from seg_jax.data.classes import CITYSCAPES, ClassTable


def percent(value: float | None) -> str:
    """A fraction in % with one decimal; '-' for a missing or non-finite value (a class that
    is absent from both ground truth and prediction has NaN IoU)."""
    return '-' if value is None or not math.isfinite(value) else f'{100 * value:.1f}'


def format_class_table(metrics: Mapping[str, Any], table: ClassTable = CITYSCAPES) -> str:
    """Every class of ``table`` with its IoU (official and the course's stricter seed IoU, in
    %), then the row of the classes the table marks (Cityscapes: the course results table's
    five) beside mIoU and pixel accuracy; no such row for a table that marks none.

    Classes absent from both ground truth and prediction have NaN IoU and show as '-'.
    """
    iou = np.asarray(metrics['iou'], np.float64)
    seed_iou = np.asarray(metrics['seed_iou'], np.float64)
    marked_ids = table.marked_ids
    name_width = max(len(name) for name in table.names) + 3
    lines = [f'{"class":<{name_width}}{"IoU":>7}{"seed IoU":>10}']
    for class_id, name in enumerate(table.names):
        label = f'{name} *' if class_id in marked_ids else name
        lines.append(f'{label:<{name_width}}{percent(iou[class_id]):>7}'
                     f'{percent(seed_iou[class_id]):>10}')
    lines.append(f'{"mean":<{name_width}}{percent(metrics["miou"]):>7}'
                 f'{percent(metrics["seed_miou"]):>10}')
    lines.append(f'pixel accuracy {percent(metrics["pixel_accuracy"])}, '
                 f'mean class accuracy {percent(metrics["mean_class_accuracy"])}, '
                 f'frequency-weighted IoU {percent(metrics["fw_iou"])}')
    if not marked_ids:
        return '\n'.join(lines)
    lines.append('')

    headers = (f'* {table.marked_title}',) + table.marked + ('mIoU', 'pixel acc')
    widths = [len(headers[0])] + [max(len(header), 5) + 2 for header in headers[1:]]
    rows = [
        ['official'] + [percent(iou[i]) for i in marked_ids]
        + [percent(metrics['miou']), percent(metrics['pixel_accuracy'])],
        ['seed'] + [percent(seed_iou[i]) for i in marked_ids]
        + [percent(metrics['seed_miou']), ''],
    ]
    for first, *cells in [headers] + rows:
        lines.append((f'{first:<{widths[0]}}' + ''.join(
            f'{cell:>{width}}' for cell, width in zip(cells, widths[1:], strict=True))).rstrip())
    return '\n'.join(lines)
