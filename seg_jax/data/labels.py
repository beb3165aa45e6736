"""The Cityscapes label table, taken from ``cityscapesscripts.helpers.labels`` (not retyped).

Cityscapes stores *label ids* (0..33) in ``*_gtFine_labelIds.png``; training and the benchmark
use the 19 *train ids*, every other id is void and maps to ``IGNORE_LABEL`` (255).
"""

import numpy as np
from cityscapesscripts.helpers import labels as _cityscapes

IGNORE_LABEL = 255
NUM_CLASSES = 19
NUM_LABEL_IDS = 34  # ids 0..33 can appear in a labelIds PNG (license plate, -1, never does)

# The 19 evaluated classes, in train-id order.
TRAIN_LABELS = sorted((label for label in _cityscapes.labels
                       if 0 <= label.trainId < IGNORE_LABEL), key=lambda label: label.trainId)

CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in TRAIN_LABELS)
# Official colours, indexed by train id; void (255) is black.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:NUM_CLASSES] = [label.color for label in TRAIN_LABELS]

# label id -> train id (void -> 255), for ids 0..255 so any uint8 indexes it safely; ids outside
# the table are reported as errors by the readers, not silently mapped.
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, np.uint8)
for _label in _cityscapes.labels:
    if 0 <= _label.id < NUM_LABEL_IDS and 0 <= _label.trainId < IGNORE_LABEL:
        LABEL_ID_TO_TRAIN_ID[_label.id] = _label.trainId
# train id -> label id (255 -> 0, 'unlabeled'), for benchmark-server PNGs.
TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)
TRAIN_ID_TO_LABEL_ID[:NUM_CLASSES] = [label.id for label in TRAIN_LABELS]

# The five classes the course project reports beside the mean: train ids.
COURSE_CLASSES: tuple[str, ...] = ('building', 'traffic sign', 'person', 'car', 'bicycle')
COURSE_CLASS_IDS: tuple[int, ...] = tuple(CLASS_NAMES.index(name) for name in COURSE_CLASSES)

# Label ids by name, for code that writes label maps (the synthetic generator).
LABEL_IDS: dict[str, int] = {label.name: label.id for label in _cityscapes.labels
                             if 0 <= label.id < NUM_LABEL_IDS}
