"""Defaults every config starts from: ``get_config()`` returns a locked ConfigDict.

Locked means a misspelt field (``--config.model.outptu_stride=16``) is an error, not a silent
no-op. Configs that need a new field add it inside ``with config.unlocked():``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = 'resnet_aspp'  # a key of seg_jax.models.MODELS
    # resnet18 | resnet34 | resnet50 | resnet101 | vgg16_bn; None for networks without one.
    config.model.backbone = 'resnet50'
    config.model.output_stride = 8  # 8 | 16 | 32 where the network has a backbone
    config.model.num_classes = 19  # Cityscapes train ids
    config.model.init = 'xavier'  # conv kernels: 'xavier' (course) | 'kaiming' (torchvision)
    config.model.compute_dtype = 'float32'  # 'float32' | 'bfloat16'; parameters stay float32
    config.model.width = 1.0  # channel multiplier; 1.0 is the published network
    config.model.aux_head = False  # deeplabv3: FCN head on layer3, used in training only
    config.model.dual_aspp = False  # resnet_aspp: second ASPP on layer3, logits summed
    config.model.aspp_dropout = 0.0  # course ASPP: dropout after the atrous branches

    config.data = ml_collections.ConfigDict()
    config.data.crop_size = (512, 1024)  # (height, width) of training crops

    config.seed = 0

    config.lock()
    return config
