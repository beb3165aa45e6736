"""The label tables against cityscapesscripts, id by id."""

import numpy as np
from cityscapesscripts.helpers import labels as cityscapes

from seg_jax.data import labels


def test_label_id_to_train_id_agrees_with_cityscapesscripts_for_every_id():
    for label in cityscapes.labels:
        if label.id < 0:  # license plate: never stored in a labelIds PNG
            continue
        expected = label.trainId if 0 <= label.trainId < 255 else 255
        assert labels.LABEL_ID_TO_TRAIN_ID[label.id] == expected, label.name
    # Values no Cityscapes label uses are void too.
    assert np.all(labels.LABEL_ID_TO_TRAIN_ID[labels.NUM_LABEL_IDS:] == labels.IGNORE_LABEL)


def test_train_id_to_label_id_inverts_the_mapping_on_train_ids():
    for train_id in range(labels.NUM_CLASSES):
        label = cityscapes.id2label[int(labels.TRAIN_ID_TO_LABEL_ID[train_id])]
        assert label.trainId == train_id
    ids = np.arange(labels.NUM_CLASSES)
    np.testing.assert_array_equal(
        labels.LABEL_ID_TO_TRAIN_ID[labels.TRAIN_ID_TO_LABEL_ID[ids]], ids)
    assert cityscapes.id2label[int(labels.TRAIN_ID_TO_LABEL_ID[255])].name == 'unlabeled'


def test_names_palette_and_course_classes():
    assert len(labels.CLASS_NAMES) == 19
    assert labels.CLASS_NAMES[0] == 'road' and labels.CLASS_NAMES[18] == 'bicycle'
    for train_id, name in enumerate(labels.CLASS_NAMES):
        assert tuple(labels.PALETTE[train_id]) == cityscapes.name2label[name].color
    assert tuple(labels.PALETTE[255]) == (0, 0, 0)
    # building 11/2, traffic sign 20/7, person 24/11, car 26/13, bicycle 33/18
    assert labels.COURSE_CLASS_IDS == (2, 7, 11, 13, 18)
    assert [labels.TRAIN_ID_TO_LABEL_ID[i] for i in labels.COURSE_CLASS_IDS] == [11, 20, 24, 26, 33]
    assert labels.LABEL_IDS['road'] == 7 and labels.LABEL_IDS['ego vehicle'] == 1
