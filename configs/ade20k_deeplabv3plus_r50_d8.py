"""mmsegmentation's DeepLabV3+ R-50-D8 on ADE20K, 512x512 crops, 160k steps: published val mIoU
43.95. The recipe is configs/mmseg_512x512.py; --config.data.dir is ADEChallengeData2016 (or the
folder holding it)."""

from configs.mmseg_512x512 import mmseg_512x512_config


def get_config():
    return mmseg_512x512_config('deeplabv3plus', 'resnet50_v1c', 'ade20k')
