"""mmsegmentation's Cityscapes recipe (``*_4xb2-80k_cityscapes-512x1024``), applied to one of its
networks: the training behind its published model-zoo numbers, as seg_jax options.

* Network: the model on a ResNet-V1c dilated to output stride 8 ("-D8"), the auxiliary FCN head
  on layer3 (loss weight 0.4), mmseg's initialisation (Kaiming convs, N(0, 0.01) classifiers),
  the backbone from mmseg's ImageNet V1c weights (required: pass --config.model.pretrained).
* Data: rescale by U(0.5, 2.0), 512x1024 crops redrawn (up to 10 times) while one class covers
  75% or more of the crop's labelled pixels, flip p = 0.5, mmseg's PhotoMetricDistortion.
* Optimisation: SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every parameter, poly 0.9 down
  to 1e-4, 80k steps of 8 crops, BatchNorm over the global batch; cross-entropy divided by all
  pixels (mmseg's avg_non_ignore=False).
* Evaluation: the whole 1024x2048 image every 8000 steps; mmseg's multi-scale + flip is
  --config.eval.scales="(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)" --config.eval.flip=True.
"""

import ml_collections

from configs import default


def mmseg_config(model: str, backbone: str) -> ml_collections.ConfigDict:
    """The recipe for ``model`` (deeplabv3_mmseg, deeplabv3plus, pspnet) on ``backbone``
    (resnet50_v1c, resnet101_v1c)."""
    config = default.get_config()
    config.model.name = model
    config.model.backbone = backbone
    config.model.output_stride = 8
    config.model.aux_head = True
    config.model.init = 'mmseg'
    config.model.pretrained_required = True

    config.data.crop_size = (512, 1024)
    config.data.scale_range = (0.5, 2.0)
    config.data.rotation_degrees = 0.0
    config.data.flip = True
    config.data.photometric = 0.0  # the jitter's strength: the distortion below replaces it
    config.data.photometric_style = 'mmseg'
    config.data.cat_max_ratio = 0.75

    config.global_batch_size = 8
    config.num_train_steps = 80_000
    config.eval_every_steps = 8000

    config.optimizer.name = 'sgd'
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = 'poly'
    config.schedule.power = 0.9
    config.schedule.end_value = 1e-4
    config.schedule.warmup_steps = 0

    config.loss.name = 'ce'
    config.loss.aux_weight = 0.4
    config.loss.normalizer = 'all'
    return config
