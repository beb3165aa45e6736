"""DeepLabv3 on a dilated ResNet-50 at output stride 8 with the auxiliary head (SPEC 3.7)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'deeplabv3'
    config.model.backbone = 'resnet50'
    config.model.output_stride = 8
    config.model.aux_head = True
    return config
