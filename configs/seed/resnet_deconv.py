"""Course row "ResNet-50 + deconv": batch 16, 800x800 crops, Adam 1e-2 (29.1%)."""

from configs.seed.course import course_config


def get_config():
    return course_config('resnet_deconv', batch_size=16, crop_size=(800, 800), learning_rate=1e-2)
