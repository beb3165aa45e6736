"""Runs a model written by ``--mode export`` with jax and numpy alone.

    from seg_jax import serving
    segmenter = serving.load('runs/demo/export/600')
    outputs = segmenter(images)  # uint8 (N, H, W, 3) RGB -> {'classes': uint8 (N, H, W), ...}

The export folder's ``segmenter.jax`` is the whole computation as serialized StableHLO (the
image normalisation, the network with its weights, the configured whole-image, sliding-window or
multi-scale + flip inference and the argmax), so this module imports neither flax nor the rest
of seg_jax: a serving image needs jax, jaxlib and numpy, nothing else. The batch size is free;
the height and width are the ones the model was exported for (``metadata.json``), and images of
another size, dtype or layout are refused with what to do about it rather than segmented wrongly.
"""

import json
import os
from typing import Any

import jax
import numpy as np

EXPORTED_FILE = 'segmenter.jax'
SAVED_MODEL_FOLDER = 'saved_model'
METADATA_FILE = 'metadata.json'


class InputError(ValueError):
    """Images the exported model cannot take; the message says what to change."""


def read_metadata(folder: str) -> dict[str, Any]:
    """``metadata.json`` of an export folder."""
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{folder} holds no {METADATA_FILE}: it is not a folder written '
                                'by python -m seg_jax.main --mode export.')
    with open(path) as f:
        return json.load(f)


def check_images(images: Any, height: int, width: int) -> np.ndarray:
    """``images`` as the exported model takes them, uint8 ``(N, height, width, 3)``, or an
    ``InputError`` that names what is wrong with them."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f'Images must be uint8 RGB values in [0, 255], not {images.dtype}: '
                         'pass the decoded pixels, e.g. np.asarray(PIL.Image.open(path)'
                         '.convert("RGB")); normalisation happens inside the model.')
    if images.ndim != 4:
        hint = ' (one image: images[None])' if images.ndim == 3 else ''
        raise InputError(f'Images must be a batch of shape (N, {height}, {width}, 3), not '
                         f'{images.shape}{hint}.')
    if images.shape[3] != 3:
        raise InputError(f'Images must have 3 channels (RGB, channels last), not '
                         f'{images.shape[3]}: shape {images.shape}; convert RGBA or grey images '
                         'to RGB, and NCHW batches to NHWC.')
    if images.shape[0] == 0:
        raise InputError(f'The batch {images.shape} holds no image; pass at least one.')
    if images.shape[1:3] != (height, width):
        raise InputError(f'This model was exported for {height}x{width} images; got '
                         f'{images.shape[1]}x{images.shape[2]}. Resize them to {height}x{width}, '
                         'or export again with --config.export.image_size='
                         f'"({images.shape[1]}, {images.shape[2]})".')
    return images


def read_exported(folder: str) -> jax.export.Exported:
    """The deserialized ``segmenter.jax`` of an export folder."""
    with open(os.path.join(folder, EXPORTED_FILE), 'rb') as f:
        return jax.export.deserialize(bytearray(f.read()))


class Segmenter:
    """An exported model, loaded once and compiled once per batch size."""

    def __init__(self, folder: str):
        self.metadata = read_metadata(folder)
        self._exported = read_exported(folder)
        self._call = jax.jit(self._exported.call)
        self.image_size: tuple[int, int] = tuple(self.metadata['input']['image_size'])
        self.class_names: list[str] = self.metadata['classes']['names']
        self.palette = np.asarray(self.metadata['classes']['palette'], np.uint8)

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms the model runs on (the ones it was exported for)."""
        return tuple(self._exported.platforms)

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        """``{'classes': uint8 (N, H, W)}`` (train ids), with ``'probabilities'`` (float32
        ``(N, H, W, C)``) too when the model was exported with them."""
        images = check_images(images, *self.image_size)
        return {name: np.asarray(value) for name, value in self._call(images).items()}


def load(folder: str) -> Segmenter:
    """The model of an export folder (``segmenter.jax`` and ``metadata.json``)."""
    return Segmenter(folder)
