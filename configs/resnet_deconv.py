"""ResNet-50 encoder (output stride 32) + five-transposed-conv decoder, as the course built it."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'resnet_deconv'
    config.model.backbone = 'resnet50'
    config.model.output_stride = 32
    return config
