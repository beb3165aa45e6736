"""mmsegmentation's PSPNet R-50-D8 on Cityscapes, 512x1024 crops, 80k steps: published val mIoU
78.55 (whole image) / 79.79 (multi-scale + flip). The recipe is configs/mmseg_cityscapes.py."""

from configs.mmseg_cityscapes import mmseg_config


def get_config():
    return mmseg_config('pspnet', 'resnet50_v1c')
