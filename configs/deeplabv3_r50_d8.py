"""mmsegmentation's DeepLabV3 R-50-D8 on Cityscapes, 512x1024 crops, 80k steps: published val mIoU
79.32 (whole image) / 80.57 (multi-scale + flip). The recipe is configs/mmseg_cityscapes.py."""

from configs.mmseg_cityscapes import mmseg_config


def get_config():
    return mmseg_config('deeplabv3_mmseg', 'resnet50_v1c')
