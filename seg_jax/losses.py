"""Segmentation losses: pure functions of logits, labels and a loss config.

Logits are NHWC ``(N, H, W, C)``; labels are ``(N, H, W)`` train ids ``0..C-1`` or
``IGNORE_LABEL`` (255, void). Void pixels enter no sum and no count, so a batch that is void
everywhere has loss 0 and a zero (finite) gradient rather than 0/0.

Everything that reads ``config.loss`` branches on Python values only, so the loss jit-compiles
with the config closed over as a constant. ``config.loss`` is validated on the host, once, by
``check_loss_config``, and class weights are resolved (and their values checked) by
``resolve_class_weights`` and passed in as an array; the functions traced inside the step check
only what they are given (shapes, and arguments for direct callers).

``config.loss`` fields:
  name: 'ce' | 'weighted_ce' | 'dice' | 'ce_dice' (ce + dice_weight * dice).
  class_weights: None | 'course' | 'median_frequency' | a sequence of C positive floats. They
    weight the cross-entropy of 'weighted_ce' (required there) and of 'ce_dice' (optional);
    'ce' and 'dice' reject them, since they would silently do nothing.
  dice_weight: lambda of 'ce_dice'.
  dice_variant: 'per_class' | 'global' (see ``dice_loss``).
  aux_weight: weight of the same loss on ``outputs['aux']`` (DeepLabv3's auxiliary head).
  normalizer: what cross-entropy's sum is divided by: 'valid' (non-void pixels, or with class
    weights the sum of their weights: PyTorch's mean) | 'all' (every pixel of the batch, void
    included: mmsegmentation's ``avg_non_ignore=False``, with which its published models were
    trained; void pixels then add 0 to the sum and 1 to the count).
"""

from collections.abc import Callable, Mapping, Sequence
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from seg_jax.data.labels import IGNORE_LABEL, NUM_CLASSES
from seg_jax.errors import ConfigError, DataError, ShapeError

LOSS_NAMES = ('ce', 'weighted_ce', 'dice', 'ce_dice')
NORMALIZERS = ('valid', 'all')
DICE_VARIANTS = ('per_class', 'global')
WEIGHT_METHODS = ('course', 'median_frequency')
# Losses whose cross-entropy term can take class weights; 'weighted_ce' insists on them.
_WEIGHTED_LOSSES = ('weighted_ce', 'ce_dice')
# Additive smoothing of the dice ratios: keeps them finite for classes absent from a batch.
DICE_SMOOTHING = 1.0


def _check_known(field: str, value: object, choices: Sequence[str], or_else: str = '') -> None:
    if value not in choices:
        raise ConfigError(f'config.loss.{field}={value!r} is not known; use one of '
                          f'{list(choices)}{or_else}.')


def _check_weight_method(method: str) -> None:
    _check_known('class_weights', method, WEIGHT_METHODS, ', an explicit list of weights, or None')


def _check_argument(function: str, argument: str, value: object, choices: Sequence) -> None:
    """For direct callers of the loss functions; ``config.loss`` is ``check_loss_config``'s."""
    if value not in choices:
        raise ValueError(f'{function}: {argument}={value!r} is not one of {list(choices)}.')


def _valid_mask_and_safe_labels(labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Float mask of non-void pixels, and labels with void replaced by class 0 (masked later).

    The replacement keeps gathers and one-hots in range; the mask removes what it contributes.
    """
    labels = labels.astype(jnp.int32)
    valid = labels != IGNORE_LABEL
    return valid.astype(jnp.float32), jnp.where(valid, labels, 0)


def _check_shapes(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim != 4 or labels.shape != logits.shape[:3]:
        raise ShapeError(f'logits of shape {logits.shape} do not fit labels of shape '
                         f'{labels.shape}; expected logits (N, H, W, C) and labels (N, H, W) at '
                         'the same resolution.')


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, or 0 where the denominator is 0, with a finite gradient.

    Dividing by a placeholder 1 (not by 0 and masking afterwards) keeps NaN out of the backward
    pass; the numerator is 0 wherever the denominator is, so the value is 0 there.
    """
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  class_weights: jax.Array | np.ndarray | None = None,
                  normalizer: str = 'valid') -> jax.Array:
    """Mean softmax cross-entropy over non-void pixels (a scalar).

    With ``class_weights`` ``w`` (shape (C,)) it is PyTorch's weighted mean,
    ``sum_i w[y_i] * ce_i / sum_i w[y_i]``, so the weights change which pixels matter, not the
    scale of the loss. A batch without valid pixels (or whose weights sum to 0) gives 0.
    ``normalizer='all'`` divides the same sum by the number of pixels instead, void included
    (mmsegmentation's ``avg_non_ignore=False``): a batch with more void pixels weighs less.
    """
    _check_argument('cross_entropy', 'normalizer', normalizer, NORMALIZERS)
    _check_shapes(logits, labels)
    valid, safe_labels = _valid_mask_and_safe_labels(labels)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels)
    if class_weights is None:
        pixel_weights = valid
    else:
        class_weights = jnp.asarray(class_weights, jnp.float32)
        if class_weights.shape != logits.shape[-1:]:
            raise ShapeError(f'class_weights of shape {class_weights.shape} do not fit logits '
                             f'with {logits.shape[-1]} classes.')
        pixel_weights = class_weights[safe_labels] * valid
    total = jnp.sum(pixel_weights * per_pixel)
    if normalizer == 'all':
        return total / labels.size
    return _safe_ratio(total, jnp.sum(pixel_weights))


def dice_loss(logits: jax.Array, labels: jax.Array, variant: str = 'per_class') -> jax.Array:
    """Soft dice loss of softmax probabilities ``p`` against one-hot labels ``t`` (a scalar).

    Sums run over the whole batch and over non-void pixels only; smoothing is ``s = 1``.

    'per_class': ``1 - mean_c (2 sum(p_c t_c) + s) / (sum(p_c) + sum(t_c) + s)`` over *all* C
      classes. A class absent from the labels scores ``s / (sum(p_c) + s)``: ~1 when the network
      puts ~no mass on it, lower (a penalty) for each pixel it wrongly claims. The smoothing keeps
      every denominator >= 1, so value and gradient stay finite for absent classes.
    'global': the course's single dice over all classes and pixels,
      ``1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)``.
    """
    _check_argument('dice_loss', 'variant', variant, DICE_VARIANTS)
    _check_shapes(logits, labels)
    valid, safe_labels = _valid_mask_and_safe_labels(labels)
    mask = valid[..., None]
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * mask
    targets = jax.nn.one_hot(safe_labels, logits.shape[-1], dtype=jnp.float32) * mask
    if variant == 'global':
        overlap = 2 * jnp.sum(probabilities * targets) + DICE_SMOOTHING
        return 1 - overlap / (jnp.sum(probabilities ** 2) + jnp.sum(targets ** 2) + DICE_SMOOTHING)
    pixel_axes = (0, 1, 2)
    overlap = 2 * jnp.sum(probabilities * targets, axis=pixel_axes) + DICE_SMOOTHING
    total = (jnp.sum(probabilities, axis=pixel_axes) + jnp.sum(targets, axis=pixel_axes)
             + DICE_SMOOTHING)
    return 1 - jnp.mean(overlap / total)


def class_weights(pixel_counts: np.ndarray, method: str) -> np.ndarray:
    """Per-class loss weights (float32, (C,)) from training-set pixel counts ``n_c``.

    'course': ``w_c = 5 * min_k sqrt(n_k) / sqrt(n_c)``: the rarest class gets 5, a class 100x
      more frequent gets 0.5.
    'median_frequency': ``w_c = median_k(f_k) / f_c`` with ``f_c = n_c / sum_k n_k``
      (Eigen & Fergus), the median taken over the classes that occur.

    A class with no pixels is at least as rare as the rarest counted one, so it gets the largest
    weight of the counted classes (the min and median also skip it). Weights thus stay positive
    and finite, and such a class is weighted, not dropped, should it appear after all.
    """
    _check_weight_method(method)
    counts = np.asarray(pixel_counts, np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise DataError(f'pixel counts must be a 1-D array of non-negative numbers, got {counts}.')
    present = counts > 0
    if not np.any(present):
        raise DataError('the training labels have no labelled pixels, so class weights cannot '
                        'be computed; check the training data, or set '
                        'config.loss.class_weights to an explicit list.')
    if method == 'course':
        weights = 5 * np.sqrt(counts[present].min()) / np.sqrt(counts[present])
    else:
        frequencies = counts[present] / counts.sum()
        weights = np.median(frequencies) / frequencies
    result = np.full(counts.shape, weights.max())
    result[present] = weights
    return result.astype(np.float32)


def _check_explicit_weights(weights: Sequence[float], num_classes: int) -> np.ndarray:
    fix = (f'set config.loss.class_weights to {num_classes} positive numbers (one per train '
           f'id), or to one of {list(WEIGHT_METHODS)}, or None.')
    try:
        array = np.asarray(weights, np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f'config.loss.class_weights={weights!r} is not a list of numbers; '
                          f'{fix}') from None
    if array.shape != (num_classes,):
        raise ConfigError(f'config.loss.class_weights has shape {array.shape}, not '
                          f'({num_classes},); {fix}')
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ConfigError(f'config.loss.class_weights={list(weights)} has a weight that is not '
                          f'positive and finite; {fix}')
    return array.astype(np.float32)


def resolve_class_weights(loss_config: ml_collections.ConfigDict,
                          pixel_counts_fn: Callable[[], np.ndarray],
                          num_classes: int = NUM_CLASSES) -> np.ndarray | None:
    """``config.loss.class_weights`` as a float32 (C,) array, or None when there are none.

    ``pixel_counts_fn()`` returns the training-set pixel counts; it is called only for the
    methods computed from them, since counting a split can take a pass over the data.
    """
    weights = loss_config.class_weights
    if weights is None:
        return None
    if isinstance(weights, str):
        return class_weights(pixel_counts_fn(), weights)
    return _check_explicit_weights(weights, num_classes)


def _check_nonnegative(loss_config: ml_collections.ConfigDict, field: str) -> None:
    value = loss_config[field]
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise ConfigError(f'config.loss.{field}={value!r} must be a non-negative number.')


def check_loss_config(loss_config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a ``config.loss`` that ``segmentation_loss`` cannot honour.

    The one validation of ``config.loss`` (``resolve_class_weights`` checks the weights' values,
    which need the number of classes). Cheap and host-side: call it before building the data
    pipeline and compiling the step.
    """
    _check_known('name', loss_config.name, LOSS_NAMES)
    _check_known('dice_variant', loss_config.dice_variant, DICE_VARIANTS)
    _check_nonnegative(loss_config, 'dice_weight')
    _check_nonnegative(loss_config, 'aux_weight')
    _check_known('normalizer', loss_config.normalizer, NORMALIZERS)
    if loss_config.name == 'dice' and loss_config.normalizer != 'valid':
        raise ConfigError(f'config.loss.normalizer={loss_config.normalizer!r} divides the '
                          "cross-entropy, which config.loss.name='dice' does not have; leave it "
                          "at 'valid', or use name='ce_dice'.")
    weights = loss_config.class_weights
    if isinstance(weights, str):
        _check_weight_method(weights)
    if loss_config.name == 'weighted_ce' and weights is None:
        raise ConfigError("config.loss.name='weighted_ce' needs config.loss.class_weights: set it "
                          f'to one of {list(WEIGHT_METHODS)} or a list of weights, or use '
                          "name='ce'.")
    if loss_config.name not in _WEIGHTED_LOSSES and weights is not None:
        raise ConfigError(f'config.loss.name={loss_config.name!r} does not use class weights, '
                          f'but config.loss.class_weights={weights!r}; set class_weights=None, or '
                          f'use one of {list(_WEIGHTED_LOSSES)}.')


def _single_head_loss(logits: jax.Array, labels: jax.Array,
                      loss_config: ml_collections.ConfigDict,
                      weights: jax.Array | np.ndarray | None) -> dict[str, jax.Array]:
    """The configured loss of one head's logits, as {'total': ..., plus its ce/dice terms}."""
    name = loss_config.name
    if name in ('ce', 'weighted_ce'):
        return {'total': cross_entropy(logits, labels, weights, loss_config.normalizer)}
    dice = dice_loss(logits, labels, loss_config.dice_variant)
    if name == 'dice':
        return {'total': dice}
    ce = cross_entropy(logits, labels, weights, loss_config.normalizer)
    return {'total': ce + loss_config.dice_weight * dice, 'ce': ce, 'dice': dice}


def _check_weights_array(name: str, class_weights: jax.Array | np.ndarray | None) -> None:
    """The array passed to ``segmentation_loss`` against the loss, which check_loss_config has
    matched with config.loss.class_weights: a mismatch means it is not their resolution."""
    if name == 'weighted_ce' and class_weights is None:
        problem = 'needs class weights, but segmentation_loss was passed none'
    elif name not in _WEIGHTED_LOSSES and class_weights is not None:
        problem = 'does not use class weights, but segmentation_loss was passed some'
    else:
        return
    raise ConfigError(f'config.loss.name={name!r} {problem}; pass it '
                      'resolve_class_weights(config.loss, ...).')


def segmentation_loss(outputs: Mapping[str, jax.Array], labels: jax.Array,
                      loss_config: ml_collections.ConfigDict,
                      class_weights: jax.Array | np.ndarray | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss of a model's outputs and its named terms for logging.

    ``outputs`` is ``{'out': logits}`` plus, for DeepLabv3 in training, ``'aux': logits``;
    the total is ``loss(out) + aux_weight * loss(aux)``. ``class_weights`` is the array from
    ``resolve_class_weights``. Terms: 'loss' (the total), 'main', 'aux' when there is an
    auxiliary head, and 'ce' / 'dice' (of the main head) for 'ce_dice'.
    """
    # Repeats the caller's check at trace time (no cost at run time): tests/test_losses.py
    # expects segmentation_loss itself to reject a bad config.loss.
    check_loss_config(loss_config)
    _check_weights_array(loss_config.name, class_weights)
    main = _single_head_loss(outputs['out'], labels, loss_config, class_weights)
    terms = {'main': main['total']}
    terms.update({key: value for key, value in main.items() if key != 'total'})
    total = main['total']
    if 'aux' in outputs:
        terms['aux'] = _single_head_loss(outputs['aux'], labels, loss_config,
                                         class_weights)['total']
        total = total + loss_config.aux_weight * terms['aux']
    return total, {'loss': total, **terms}
