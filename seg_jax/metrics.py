"""Segmentation metrics from one confusion matrix: training-time eval, ``--mode eval``, benchmarks.

The device counts a batch into a small int32 matrix with plain ``jax.numpy`` ops, so it runs
inside the jit-compiled eval step on sharded global arrays; the host adds those matrices into an
int64 total over the whole split and derives every metric from the total (the official Cityscapes
definitions, plus the course's stricter seed IoU).

The matrix has ``num_classes + 1`` rows and ``num_classes`` columns: entry ``[g, p]`` counts pixels
with ground-truth train id ``g`` predicted as ``p``; the extra last row counts void pixels by
predicted class. The official Cityscapes metrics ignore that row; the course's stricter "seed IoU"
counts it as false positives.
"""

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.data.labels import CLASS_NAMES, COURSE_CLASSES, IGNORE_LABEL, NUM_CLASSES


def predictions_from_logits(logits: jax.Array) -> jax.Array:
    """Per-pixel class: argmax over the last (class) axis of ``(N, H, W, C)`` logits, int32."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def pixel_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The share of a batch's labelled pixels whose argmax class is right (0 with none), on
    the devices: the training step's running accuracy."""
    valid = labels != IGNORE_LABEL
    correct = (predictions_from_logits(logits) == labels) & valid
    return correct.sum() / jnp.maximum(valid.sum(), 1)


def confusion_matrix(predictions: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
                     num_classes: int = NUM_CLASSES) -> jax.Array:
    """Counts one batch into an int32 ``(num_classes + 1, num_classes)`` matrix.

    Args:
      predictions: int ``(N, H, W)`` predicted train ids, expected in ``0..num_classes - 1``.
      labels: int ``(N, H, W)`` ground-truth train ids; 255, and any other value outside
        ``0..num_classes - 1``, is void and lands in the last row, so a corrupt label can never
        be credited to a class.
      mask: optional bool ``(N,)``, False for the padding examples that fill the last eval batch;
        their pixels count nothing.
      num_classes: C.

    A prediction outside ``0..num_classes - 1`` (impossible for an argmax) is not counted at all
    rather than landing in another class's cell. int32 holds any batch below 2^31 pixels (a
    1024x2048 image has 2^21, so fewer than 1024 such images per call); accumulate batches on the
    host with ``accumulate``, in int64.
    """
    predictions = predictions.astype(jnp.int32)
    labels = labels.astype(jnp.int32)
    ground_truth = jnp.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    counted = (predictions >= 0) & (predictions < num_classes)
    if mask is not None:
        counted &= mask.astype(bool).reshape((-1,) + (1,) * (labels.ndim - 1))
    cells = ground_truth * num_classes + jnp.clip(predictions, 0, num_classes - 1)
    counts = jnp.bincount(cells.ravel(), weights=counted.astype(jnp.int32).ravel(),
                          length=(num_classes + 1) * num_classes)
    return counts.reshape(num_classes + 1, num_classes)


def accumulate(total: np.ndarray | None, batch: jax.Array | np.ndarray) -> np.ndarray:
    """``total + batch`` as a new int64 array (``batch`` alone when ``total`` is None).

    A split's counts reach ~10^9 pixels per cell and overflow int32; int64 does not.
    """
    batch = np.asarray(batch, dtype=np.int64)
    return batch if total is None else np.asarray(total, dtype=np.int64) + batch


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator as float64, NaN where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, np.asarray(numerator, dtype=np.float64) / safe, np.nan)


def _mean_defined(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without a warning) when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float('nan')


def compute_metrics(confusion: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES,
                    marked: tuple[str, ...] = COURSE_CLASSES) -> dict:
    """Every reported metric from an ``(C + 1, C)`` confusion matrix (``confusion_matrix`` rows).

    Official Cityscapes definitions (``evalPixelLevelSemanticLabeling``), void rows excluded:
    ``iou`` per class TP / (TP + FP + FN), NaN for a class absent from both ground truth and
    prediction (on valid pixels); ``miou`` the mean over the defined (non-NaN) IoUs;
    ``pixel_accuracy`` correct / valid pixels; ``mean_class_accuracy`` the mean of TP / (TP + FN)
    over classes present in ground truth; ``fw_iou`` the IoUs weighted by ground-truth frequency.

    The course's ``seed_iou`` adds the void pixels predicted as c to c's false positives:
    TP / (TP + FP + FN + void_predicted_as_c), NaN only when that denominator is 0; ``seed_miou``
    is the mean over its defined entries.

    Values are Python floats and lists (JSON-serialisable); NaN marks "undefined" exactly as
    cityscapesscripts writes it (``json.dumps`` emits it as ``NaN`` by default).
    ``iou_by_class`` / ``seed_iou_by_class`` key the per-class values by name, and
    ``course_iou`` / ``course_seed_iou`` pick out the ``marked`` classes for reports (the class
    table's: Cityscapes' are the course's five).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    num_classes = len(class_names)
    if confusion.shape != (num_classes + 1, num_classes):
        raise ValueError(f'confusion has shape {confusion.shape}, expected '
                         f'{(num_classes + 1, num_classes)} for {num_classes} class names.')
    valid = confusion[:num_classes]
    void_predicted = confusion[num_classes]
    true_positives = np.diag(valid)
    ground_truth_pixels = valid.sum(axis=1)
    predicted_pixels = valid.sum(axis=0)
    union = ground_truth_pixels + predicted_pixels - true_positives

    iou = _ratio(true_positives, union)
    seed_iou = _ratio(true_positives, union + void_predicted)
    class_accuracy = _ratio(true_positives, ground_truth_pixels)
    valid_pixels = ground_truth_pixels.sum()
    # Absent classes weigh 0 in fw_iou; their IoU may be NaN, so they are left out, not summed.
    present = ground_truth_pixels > 0

    iou_by_class = dict(zip(class_names, iou.tolist(), strict=True))
    seed_iou_by_class = dict(zip(class_names, seed_iou.tolist(), strict=True))
    course = [name for name in marked if name in iou_by_class]
    return {
        'iou': iou.tolist(),
        'miou': _mean_defined(iou),
        'pixel_accuracy': float(_ratio(true_positives.sum(), valid_pixels)),
        'mean_class_accuracy': _mean_defined(class_accuracy),
        'fw_iou': float(_ratio((ground_truth_pixels[present] * iou[present]).sum(),
                               valid_pixels)),
        'seed_iou': seed_iou.tolist(),
        'seed_miou': _mean_defined(seed_iou),
        'iou_by_class': iou_by_class,
        'seed_iou_by_class': seed_iou_by_class,
        'course_iou': {name: iou_by_class[name] for name in course},
        'course_seed_iou': {name: seed_iou_by_class[name] for name in course},
    }
