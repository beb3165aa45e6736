"""Course row "U-Net": batch 10, 608x608 crops, Adam 1e-2 (42.7%)."""

from configs.seed.course import course_config


def get_config():
    return course_config('unet', batch_size=10, crop_size=(608, 608), learning_rate=1e-2)
