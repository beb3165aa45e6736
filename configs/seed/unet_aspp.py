"""Course row "U-Net + ASPP": batch 16, 512x512 crops, Adam 1e-2 (49.9%)."""

from configs.seed.course import course_config


def get_config():
    return course_config('unet_aspp', batch_size=16, crop_size=(512, 512), learning_rate=1e-2)
