"""The course's U-Net + ASPP: the last two decoder fuses are ASPPs, the last one the classifier."""

from ml_collections import config_dict

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'unet_aspp'
    config.model.backbone = config_dict.placeholder(str)  # no backbone
    config.model.output_stride = 16
    return config
