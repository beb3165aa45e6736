"""What TensorBoard shows of a run: scalars, images and text, as TensorBoard's own summaries
write them, with TensorFlow's core ``tf.summary.write``.

tensorflow-cpu does not bring TensorBoard, whose ``tensorboard.summary`` API would write these
events; the events are the same. Each value carries the ``SummaryMetadata`` that TensorBoard's
dashboards look for (the plugin's name and the data class), images are PNG files stored as they
are (the image plugin's layout: the string tensor ``[width, height, png]``), and text is
markdown (the text plugin renders tables). Each folder under the root is one run in
TensorBoard's run selector.
"""

import io
import os
from collections.abc import Mapping

import tensorflow as tf
from PIL import Image
from tensorflow.core.framework import summary_pb2

from seg_jax.data.classes import CITYSCAPES, ClassTable
from seg_jax.tables import percent


def _metadata(plugin_name: str, data_class: int) -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
        data_class=data_class)


SCALAR_METADATA = _metadata('scalars', summary_pb2.DATA_CLASS_SCALAR)
IMAGE_METADATA = _metadata('images', summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
TEXT_METADATA = _metadata('text', summary_pb2.DATA_CLASS_TENSOR)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes, read from the header."""
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def iou_markdown(iou_by_class: Mapping[str, float], seed_iou_by_class: Mapping[str, float],
                 miou: float, seed_miou: float, table: ClassTable = CITYSCAPES) -> str:
    """Every class's IoU and seed IoU (%) as a markdown table, the classes ``table`` marks
    (Cityscapes: the course's) in bold, the means last: the text TensorBoard shows beside the
    per-class scalars."""
    lines = ['| class | IoU (%) | seed IoU (%) |', '|---|---:|---:|']
    for name in table.names:
        label = f'**{name}**' if name in table.marked else name
        lines.append(f'| {label} | {percent(iou_by_class[name])} | '
                     f'{percent(seed_iou_by_class[name])} |')
    lines.append(f'| mean | {percent(miou)} | {percent(seed_miou)} |')
    return '\n'.join(lines) + (f'\n\nBold: the {table.marked_title}.' if table.marked else '')


class EventWriters:
    """One TensorBoard event writer per run folder under ``root``, each opened on first use."""

    def __init__(self, root: str):
        self.root = root
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.root, run))
        return self._writers[run]

    def write(self, run: str, step: int, scalars: Mapping[str, float] | None = None,
              images: Mapping[str, bytes] | None = None,
              texts: Mapping[str, str] | None = None) -> None:
        """``step``'s scalars, PNG images and markdown texts, by tag, into ``run``'s events,
        flushed: a run that stops right after still shows them."""
        writer = self._writer(run)
        with writer.as_default():
            for tag, value in (scalars or {}).items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=SCALAR_METADATA)
            for tag, png in (images or {}).items():
                width, height = png_size(png)
                fields = [str(width).encode(), str(height).encode(), png]
                tf.summary.write(tag, tf.constant(fields, tf.string), step=step,
                                 metadata=IMAGE_METADATA)
            for tag, markdown in (texts or {}).items():
                tf.summary.write(tag, tf.constant(markdown, tf.string), step=step,
                                 metadata=TEXT_METADATA)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
