"""Defaults every config starts from: ``get_config()`` returns a locked ConfigDict.

Locked means a misspelt field (``--config.model.outptu_stride=16``) is an error, not a silent
no-op. Configs that need a new field add it inside ``with config.unlocked():``.
"""

import ml_collections
from ml_collections.config_dict import placeholder


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
    # 'tfds' (built from the two official zips) | 'folder' (extracted leftImg8bit/ + gtFine/)
    # | 'synthetic' (generated on first use; needs nothing).
    config.data.source = 'tfds'
    config.data.dir = placeholder(str)  # folder / synthetic: the Cityscapes root
    config.data.manual_dir = placeholder(str)  # tfds: the zips (<tfds_dir>/downloads/manual)
    config.data.tfds_dir = placeholder(str)  # tfds: where it builds (default ~/tensorflow_datasets)
    config.data.synthetic = ml_collections.ConfigDict(dict(
        num_train=200, num_val=40, num_test=20, height=256, width=512, seed=0))
    config.data.crop_size = (512, 1024)  # (height, width) of training crops
    config.data.scale_range = (0.5, 2.0)  # random rescale factor
    config.data.rotation_degrees = 0.0  # random rotation in [-r, r]
    config.data.flip = True  # horizontal flip with p = 0.5
    config.data.photometric = 0.0  # brightness / contrast jitter strength, e.g. 0.3
    config.data.eval_scale = 1.0  # evaluation resizes full images by this factor

    config.global_batch_size = 8  # summed over every device of every process

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 8  # global, like global_batch_size

    config.seed = 0

    config.lock()
    return config
