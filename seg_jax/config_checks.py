"""Every check of a config that needs no data, made once, before anything is built or compiled.

Each mode's entry point (training, ``--mode eval``, ``predict``, ``benchmark`` and ``export``) calls
``check_config(config, mode)`` first, so a bad value is refused in one line before a
checkpoint is restored, a split is listed or a function is compiled. The checks themselves live
with what they protect (the loss beside the losses, the inference settings beside inference,
...); this module only says which apply to which mode. The public functions that take those
values as arguments (``losses.segmentation_loss``, ``augment.train_transform``, the training
dataset) still check them for their own callers.
The model's fields are checked by ``build_model``, which each mode calls once, first of what it
builds; checks that need the data (the crop against the image size, the run's length in
epochs) are made when the data is first opened (``seg_jax.train.training_setup``).
"""

import ml_collections

from seg_jax import inference, losses, parallel
from seg_jax.data import augment, classes, crops
from seg_jax.errors import ConfigError

MODES = ('train', 'eval', 'predict', 'benchmark', 'export')


def _check_source_reads_table(data: ml_collections.ConfigDict,
                              table: classes.ClassTable) -> None:
    """Refuses Cityscapes' table for a VOC or ADE20K layout, whose labels hold other values.
    (Own tables go with any source: a data set in VOC's layout with its own classes is usual.)"""
    layout = data.synthetic.layout if data.source == 'synthetic' else data.source
    if table.is_cityscapes and layout in ('voc', 'ade20k'):
        num_classes = classes.class_table(layout).num_classes
        raise ConfigError(
            f'{layout} labels hold {layout}\'s values, not Cityscapes\' label ids, but '
            f'config.data.classes is \'cityscapes\'. Set --config.data.classes={layout} '
            f'--config.model.num_classes={num_classes} (or your own table).')


def _check_export(config: ml_collections.ConfigDict, table: classes.ClassTable) -> None:
    if config.eval.export_dir:
        classes.require_cityscapes(table, 'config.eval.export_dir (the official label-id PNGs)')
    if config.eval.export_dir and config.data.eval_scale != 1.0:
        raise ConfigError(
            f'config.eval.export_dir exports predictions at full resolution, but '
            f'config.data.eval_scale={config.data.eval_scale} resizes the images and labels '
            'themselves. Set --config.data.eval_scale=1.0 and, to infer at another scale, '
            f'--config.eval.scales="({config.data.eval_scale},)", which resizes only the '
            'network\'s input and predicts at full resolution.')


def _check_predict(config: ml_collections.ConfigDict) -> None:
    if not config.predict.input:
        raise ConfigError('--mode predict needs --config.predict.input: an image, a folder of '
                          'images or a glob such as "photos/*.jpg".')
    alpha = config.predict.overlay_alpha
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f'config.predict.overlay_alpha={alpha} must lie in [0, 1] (0: the '
                          'photo alone, 1: the colours alone).')


def check_config(config: ml_collections.ConfigDict, mode: str) -> None:
    """Raises ``ConfigError`` (or a subclass) for the first value ``mode`` cannot honour."""
    assert mode in MODES, mode
    inference.inference_settings(config.eval)  # every mode infers (training evaluates)
    table = classes.class_table(config.data.classes)  # every mode reports classes
    _check_source_reads_table(config.data, table)
    classes.check_num_classes(table, config.model.num_classes)
    crops.check_optional_size(config.data.eval_size, 'eval_size', 'height, width', '(512, 512)')
    parallel.check_batch_size(config.eval.batch_size, 'config.eval.batch_size')
    if mode in ('train', 'benchmark'):
        parallel.check_batch_size(config.global_batch_size, 'config.global_batch_size')
        losses.check_loss_config(config.loss)
        augment.check_train_options(**augment.train_options(config.data))
    if mode == 'eval':
        _check_export(config, table)
    if mode == 'predict':
        _check_predict(config)
    if mode == 'export':
        from seg_jax import export  # it imports this module
        export.check_export_config(config)
