"""Official Cityscapes output: label-id PNGs for the evaluation scripts and the benchmark server.

``--mode eval`` with ``config.eval.export_dir`` writes, for every image of the evaluated split,

    <export_dir>/<val|test|train>/<city>/<city>_<sequence>_<frame>_pred_labelIds.png

a uint8 PNG of Cityscapes *label ids* (the predicted train ids mapped back through the official
table) at the image's full resolution. cityscapesscripts' ``csEvalPixelLevelSemanticLabeling``
finds a ground truth's prediction by the ``<city>_<sequence>_<frame>*.png`` name anywhere under
``CITYSCAPES_RESULTS``, and the benchmark server takes a zip of the test folder's files; both
refuse a folder with two predictions of one image, so an export goes into an empty folder.
"""

import os

import numpy as np

from seg_jax.data.cityscapes import SPLIT_FOLDERS
from seg_jax.data.labels import TRAIN_ID_TO_LABEL_ID
from seg_jax.errors import ConfigError
from seg_jax.files import BackgroundWriter, write_png

SUFFIX = '_pred_labelIds.png'


def split_folder(export_dir: str, split: str) -> str:
    """Where the export of ``split`` goes (Cityscapes' folder name for the split)."""
    return os.path.join(os.path.expanduser(export_dir), SPLIT_FOLDERS[split])


def prediction_path(folder: str, image_id: str) -> str:
    """``folder/<city>/<image_id>_pred_labelIds.png``; the city leads the image id."""
    city = image_id.rsplit('_', 2)[0]
    return os.path.join(folder, city, image_id + SUFFIX)


def check_export_folder(export_dir: str, split: str) -> str:
    """The export folder of ``split``, refused unless absent or empty: stale predictions of
    another model beside the new ones would be evaluated or submitted with them."""
    folder = split_folder(export_dir, split)
    if os.path.isfile(folder):
        raise ConfigError(f'config.eval.export_dir: {folder} is a file; exports go into a '
                          'folder there. Choose another config.eval.export_dir.')
    if os.path.isdir(folder) and any(files for _, _, files in os.walk(folder)):
        raise ConfigError(f'The export folder {folder} already holds files (an earlier '
                          'export?). Exports go into an empty folder, so that no stale '
                          'prediction is evaluated or submitted with the new ones: set another '
                          '--config.eval.export_dir, or move that folder away.')
    return folder


class Exporter:
    """Writes this process's predictions of one split as label-id PNGs, in the background."""

    def __init__(self, export_dir: str, split: str):
        self.folder = check_export_folder(export_dir, split)
        self.written = 0
        self._writer = BackgroundWriter()

    def write(self, image_ids: np.ndarray, predictions: np.ndarray, mask: np.ndarray) -> None:
        """One batch: train-id ``predictions`` (N, H, W) of ``image_ids`` (N bytes); rows with
        ``mask`` False (padding, skipped bad examples) are not written."""
        for image_id, prediction, keep in zip(image_ids, predictions, mask, strict=True):
            if keep:
                path = prediction_path(self.folder, image_id.decode())
                self._writer.submit(write_png, path, TRAIN_ID_TO_LABEL_ID[prediction])
                self.written += 1

    def close(self) -> None:
        """Waits until every PNG is written (raising the first write error)."""
        self._writer.close()
