"""Course row "FCN + weighted CE": w_c = 5 min_k sqrt(n_k) / sqrt(n_c) (32.4%)."""

from configs.seed import fcn


def get_config():
    config = fcn.get_config()
    config.loss.name = 'weighted_ce'
    config.loss.class_weights = 'course'
    return config
