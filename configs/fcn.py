"""The course's FCN baseline: five stride-2 convs, five transposed convs, no skips."""

from ml_collections import config_dict

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'fcn'
    config.model.backbone = config_dict.placeholder(str)  # no backbone
    config.model.output_stride = 32
    return config
