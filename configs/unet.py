"""The course's modified U-Net, trained from scratch."""

from ml_collections import config_dict

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'unet'
    config.model.backbone = config_dict.placeholder(str)  # no backbone
    config.model.output_stride = 16
    return config
