"""Which config checks apply to which mode, made before any data is read or model compiled."""

import pytest

from seg_jax.config_checks import check_config
from seg_jax.errors import ConfigError
from tests.tiny_config import get_config


def config_with(**fields):
    config = get_config()
    # A data folder that does not exist: the checks must not read any data.
    config.data.dir = '/nonexistent/seg_jax/data'
    for path, value in fields.items():
        node, *parts = path.split('__')
        section = config
        for part in [node, *parts][:-1]:
            section = section[part]
        section[[node, *parts][-1]] = value
    return config


@pytest.mark.parametrize('mode', ['train', 'eval', 'predict', 'benchmark'])
def test_a_valid_config_passes_in_every_mode_without_touching_the_data(mode):
    check_config(config_with(predict__input='photos/*.jpg'), mode)


@pytest.mark.parametrize('fields,modes,message', [
    (dict(loss__name='cross_entropy'), ('train', 'benchmark'), "config.loss.name='cross_entropy'"),
    (dict(global_batch_size=7), ('train', 'benchmark'), 'config.global_batch_size=7'),
    (dict(data__rotation_degrees=-1.0), ('train', 'benchmark'), 'rotation_degrees=-1.0'),
    (dict(eval__batch_size=3), ('train', 'eval', 'predict', 'benchmark'),
     'config.eval.batch_size=3'),
    (dict(eval__stride=(8, 8)), ('train', 'eval', 'predict', 'benchmark'),
     'needs config.eval.window'),
    (dict(eval__export_dir='/tmp/x', data__eval_scale=0.5), ('eval',), 'full resolution'),
    (dict(predict__input=None), ('predict',), 'needs --config.predict.input'),
    (dict(predict__overlay_alpha=1.5), ('predict',), 'overlay_alpha=1.5'),
])
def test_each_check_applies_to_the_modes_it_protects(fields, modes, message):
    config = config_with(**{'predict__input': 'photos/*.jpg', **fields})
    for mode in ('train', 'eval', 'predict', 'benchmark'):
        if mode in modes:
            with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
                check_config(config, mode)
        else:  # what a mode does not use does not stop it (a training-only loss typo, say)
            check_config(config, mode)
