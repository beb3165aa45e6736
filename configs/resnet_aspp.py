"""ResNet-50 + ASPP, the course's best: dilated to output stride 8, ASPPs on layer4
and layer3 with logits summed. Override --config.model.output_stride=16 or 32 (rates follow)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'resnet_aspp'
    config.model.backbone = 'resnet50'
    config.model.output_stride = 8
    config.model.dual_aspp = True
    return config
