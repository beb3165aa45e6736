"""Inference on whole images: whole-image, sliding-window and multi-scale + flip, combinable.

``log_probabilities`` is a pure function of the variables and a batch of normalised images of
any size; it returns per-pixel class log-probabilities at the input size, and their argmax is
the prediction. ``make_predict_fn`` jits it over the mesh: the one predict function of
evaluation, ``--mode predict``, the benchmark and the run comparison.

* Whole image (default): the model on the image, padded at the bottom and right to a multiple
  of the network's output stride (the networks need one; mmsegmentation's take any size and
  are not padded) and cropped back; no padding for Cityscapes' 1024x2048.
* Sliding window (``config.eval.window``, ``config.eval.stride``): windows every ``stride``
  pixels, the last one in each direction flush with the image's edge, as mmsegmentation's
  ``slide_inference``; where windows overlap their logits are averaged.
* Multi-scale + flip (``config.eval.scales``, ``config.eval.flip``): the image resized by each
  scale (bilinear, PyTorch's ``align_corners=False``), and mirrored too when ``flip``; each view
  is inferred as above, its logits resized back to the input size (and un-mirrored), and the
  views' softmax probabilities averaged, as DeepLab's and mmsegmentation's test-time
  augmentation do. One view (scale 1.0, no flip) is exactly the whole-image result.
"""

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seg_jax import metrics, parallel
from seg_jax.errors import ConfigError
from seg_jax.models import input_multiple
from seg_jax.models.layers import resize_bilinear


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How to infer a full image: window and stride as (height, width) or None (whole image)."""
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def size_pair(value, name: str) -> tuple[int, int] | None:
    """``value`` as (height, width), two positive integers, or None; else a ConfigError naming
    the field ``name`` (e.g. ``'config.eval.window'``)."""
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (tuple, list)) else None
    if (pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  and v > 0 for v in pair)):
        raise ConfigError(f'{name}={value!r} must be (height, width), two positive integers, '
                          f'e.g. --{name}="(512, 1024)".')
    return pair


def inference_settings(config: ml_collections.ConfigDict) -> InferenceSettings:
    """The validated inference settings of ``config.eval`` (used by eval and predict)."""
    window = size_pair(config.window, 'config.eval.window')
    stride = size_pair(config.stride, 'config.eval.stride')
    if stride is not None and window is None:
        raise ConfigError(f'config.eval.stride={config.stride!r} needs config.eval.window: the '
                          'stride is the step between sliding windows; set both, or neither for '
                          'whole-image inference.')
    if window is not None:
        stride = stride or window
        if stride[0] > window[0] or stride[1] > window[1]:
            raise ConfigError(f'config.eval.stride={stride} is larger than config.eval.window='
                              f'{window}, which would leave pixels between windows unseen; use a '
                              f'stride of at most the window, e.g. two thirds of it.')
    scales = tuple(config.scales) if isinstance(config.scales, (tuple, list)) else ()
    if not scales or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                             and math.isfinite(s) and s > 0 for s in scales):
        raise ConfigError(f'config.eval.scales={config.scales!r} must be a non-empty tuple of '
                          'positive factors, e.g. (1.0,) or (0.5, 0.75, 1.0, 1.25, 1.5, 1.75).')
    return InferenceSettings(window, stride, tuple(float(s) for s in scales), bool(config.flip))


def _padded_logits(model: nn.Module, variables, images: jax.Array) -> jax.Array:
    """The model's float32 logits for ``images`` of any size: padded with zeros (the mean, after
    normalisation) at the bottom and right up to the size the network needs, then cropped
    back."""
    height, width = images.shape[1:3]
    multiple = input_multiple(model)
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        images = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    logits = model.apply(variables, images, train=False)['out']
    return logits[:, :height, :width].astype(jnp.float32)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Offsets of the windows along one axis: every ``stride`` pixels, the last flush with the
    edge; one window at 0 when the image is no larger than the window."""
    if size <= window:
        return [0]
    last = size - window
    return sorted(set(range(0, last, stride)) | {last})


def _sliding_window_logits(model: nn.Module, variables, images: jax.Array,
                           window: tuple[int, int], stride: tuple[int, int]) -> jax.Array:
    """Logits averaged over overlapping windows, the model compiled once (a scan over the
    windows' offsets) however many windows there are."""
    batch, height, width, _ = images.shape
    window = (min(window[0], height), min(window[1], width))
    offsets = np.array([(top, left)
                        for top in window_starts(height, window[0], stride[0])
                        for left in window_starts(width, window[1], stride[1])], np.int32)
    coverage = np.zeros((height, width), np.float32)
    for top, left in offsets:
        coverage[top:top + window[0], left:left + window[1]] += 1

    def add_window(total, offset):
        top, left = offset[0], offset[1]
        crop = jax.lax.dynamic_slice(images, (0, top, left, 0), (batch, *window, images.shape[3]))
        logits = _padded_logits(model, variables, crop)
        here = jax.lax.dynamic_slice(total, (0, top, left, 0), logits.shape)
        return jax.lax.dynamic_update_slice(total, here + logits, (0, top, left, 0)), None

    total = jnp.zeros((batch, height, width, model.num_classes), jnp.float32)
    total, _ = jax.lax.scan(add_window, total, jnp.asarray(offsets))
    return total / coverage[None, :, :, None]


def _view_logits(model: nn.Module, variables, images: jax.Array,
                 settings: InferenceSettings) -> jax.Array:
    if settings.window is None:
        return _padded_logits(model, variables, images)
    return _sliding_window_logits(model, variables, images, settings.window, settings.stride)


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return tuple(max(1, int(round(side * scale))) for side in size)


def log_probabilities(model: nn.Module, variables, images: jax.Array,
                      settings: InferenceSettings = InferenceSettings()) -> jax.Array:
    """Per-pixel class log-probabilities ``(N, H, W, C)`` for normalised ``images``
    ``(N, H, W, 3)``, inferred as ``settings`` say (see the module docstring)."""
    size = images.shape[1:3]
    views = []
    for scale in settings.scales:
        scaled_size = _scaled_size(size, scale)
        scaled = images if scaled_size == size else resize_bilinear(images, scaled_size)
        if settings.flip:  # both mirror images through one compiled model (a scan over two)
            logits = jax.lax.map(lambda view: _view_logits(model, variables, view, settings),
                                 jnp.stack([scaled, scaled[:, :, ::-1]]))
            scale_views = [logits[0], logits[1][:, :, ::-1]]
        else:
            scale_views = [_view_logits(model, variables, scaled, settings)]
        for logits in scale_views:
            if scaled_size != size:
                logits = resize_bilinear(logits, size)
            views.append(jax.nn.log_softmax(logits, axis=-1))
    if len(views) == 1:
        return views[0]
    # log(mean of the views' probabilities), computed stably.
    return jax.nn.logsumexp(jnp.stack(views), axis=0) - math.log(len(views))


# What evaluation adds to a prediction, in the same jitted call:
# ``totals(log_probabilities, classes, batch) -> replicated arrays``.
Totals = Callable[[jax.Array, jax.Array, dict[str, jax.Array]], dict[str, jax.Array]]


def make_predict_fn(model: nn.Module, settings: InferenceSettings, mesh: jax.sharding.Mesh,
                    totals: Totals | None = None) -> Callable:
    """``predict(variables, batch) -> classes`` (uint8 train ids ``(N, H, W)``, sharded like
    the batch, so each process reads its own rows), or ``(classes, totals)`` with ``totals``
    replicated; ``batch['image']`` holds normalised images. Build it once per run: it
    compiles once per input shape."""
    def predict(variables: dict[str, Any], batch: dict[str, jax.Array]):
        log_probs = log_probabilities(model, variables, batch['image'], settings)
        classes = metrics.predictions_from_logits(log_probs)
        # uint8 holds every class count seg_jax trains (at most 256) at a quarter of the bytes.
        if totals is None:
            return classes.astype(jnp.uint8)
        return classes.astype(jnp.uint8), totals(log_probs, classes, batch)

    sharded = parallel.batch_sharded(mesh)
    return jax.jit(predict, out_shardings=sharded if totals is None
                   else (sharded, parallel.replicated(mesh)))
