"""mmsegmentation's 512x512 recipes on Pascal VOC 2012 + SBD (``*_4xb4-40k_voc12aug-512x512``) and
ADE20K (``*_4xb4-160k_ade20k-512x512``), applied to one of its networks.

They are its Cityscapes recipe (configs/mmseg_cityscapes.py: network, initialisation,
PhotoMetricDistortion, cat_max_ratio 0.75, SGD 0.01 with poly 0.9 down to 1e-4, cross-entropy
over all pixels) with the data sets' own settings:

* Data: each image is fitted to 512x2048 (short x long side, keeping its aspect ratio), then
  rescaled by U(0.5, 2.0), and a 512x512 crop taken (mmseg's Resize scale=(2048, 512),
  ratio_range=(0.5, 2.0)); 16 crops per step. VOC trains on train.txt plus SBD's aug.txt
  (10,582 images), ADE20K on its 20,210 training images.
* Length: VOC 40k steps, evaluated every 4000; ADE20K 160k steps, every 16000.
* Evaluation: every image at its own resolution, padded to one canvas for batching (VOC's
  images are at most 500x500; ADE20K's larger than 1024 are shrunk to fit). mmseg instead
  resizes each image to 512 on its short side and scores at the label's resolution.
"""

import ml_collections

from configs.mmseg_cityscapes import mmseg_config

DATA_SETS = {
    # source, class table, classes, steps, eval every, eval canvas
    'voc': ('voc', 'voc', 21, 40_000, 4000, (512, 512)),
    'ade20k': ('ade20k', 'ade20k', 150, 160_000, 16_000, (1024, 1024)),
}


def mmseg_512x512_config(model: str, backbone: str, data_set: str) -> ml_collections.ConfigDict:
    """The recipe of ``data_set`` ('voc', 'ade20k') for ``model`` on ``backbone``."""
    source, classes, num_classes, steps, eval_every, canvas = DATA_SETS[data_set]
    config = mmseg_config(model, backbone)
    config.model.num_classes = num_classes
    config.data.source = source
    config.data.classes = classes
    config.data.voc_aug = data_set == 'voc'
    config.data.crop_size = (512, 512)
    config.data.base_size = (512, 2048)
    config.data.eval_size = canvas
    config.global_batch_size = 16
    config.num_train_steps = steps
    config.eval_every_steps = eval_every
    return config
