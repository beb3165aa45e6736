"""Course row "FCN + dice loss": the FCN row with the course's global dice loss (29.6%)."""

from configs.seed import fcn


def get_config():
    config = fcn.get_config()
    config.loss.name = 'dice'
    config.loss.dice_variant = 'global'
    return config
