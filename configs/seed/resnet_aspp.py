"""Course row "ResNet + ASPP": batch 6, 800x800 crops, Adam 1e-2 (50.0%); the dilated
output-stride-8 ResNet-50 with ASPPs on layer4 and layer3."""

from configs.seed.course import course_config


def get_config():
    return course_config('resnet_aspp', batch_size=6, crop_size=(800, 800), learning_rate=1e-2)
