"""mmsegmentation's DeepLabV3 R-101-D8 on Cityscapes, 512x1024 crops, 80k steps: published val mIoU
80.20 (whole image) / 81.21 (multi-scale + flip). The recipe is configs/mmseg_cityscapes.py."""

from configs.mmseg_cityscapes import mmseg_config


def get_config():
    return mmseg_config('deeplabv3_mmseg', 'resnet101_v1c')
