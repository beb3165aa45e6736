"""mmsegmentation's DeepLabV3+ R-50-D8 on Pascal VOC 2012 + SBD, 512x512 crops, 40k steps:
published val mIoU 76.81. The recipe is configs/mmseg_512x512.py; --config.data.dir is the
VOC2012 folder."""

from configs.mmseg_512x512 import mmseg_512x512_config


def get_config():
    return mmseg_512x512_config('deeplabv3plus', 'resnet50_v1c', 'voc')
