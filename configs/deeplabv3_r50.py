"""DeepLabv3 on a dilated ResNet-50 at output stride 8 with the auxiliary head, torchvision's
layout (256-channel head; loads torchvision's deeplabv3_resnet50). mmsegmentation's DeepLabV3,
the network behind the published Cityscapes numbers, is configs/deeplabv3_r50_d8.py."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'deeplabv3'
    config.model.backbone = 'resnet50'
    config.model.output_stride = 8
    config.model.aux_head = True
    config.model.pretrained_required = True  # from random weights DeepLabv3 falls far short
    return config
