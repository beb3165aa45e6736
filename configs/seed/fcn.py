"""Course row "FCN baseline": batch 8, 800x800 crops, Adam 1e-3 (25.4% seed mIoU)."""

from configs.seed.course import course_config


def get_config():
    return course_config('fcn', batch_size=8, crop_size=(800, 800), learning_rate=1e-3)
