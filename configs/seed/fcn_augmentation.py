"""Course row "FCN + augmentation": flip, rotation, rescale (31.3%)."""

from configs.seed import fcn
from configs.seed.course import with_course_augmentation


def get_config():
    return with_course_augmentation(fcn.get_config())
