"""The embedded demo: synthetic Cityscapes at 128x256, a narrow U-Net, ~10 minutes on 2 CPU cores.

    python -m seg_jax.main --config configs/demo.py --workdir runs/demo

Needs no download: the synthetic Cityscapes is generated on first use into
~/.cache/seg_jax/synthetic_cityscapes/ (or --config.data.dir).
"""

from ml_collections import config_dict

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'unet'
    config.model.backbone = config_dict.placeholder(str)  # no backbone
    config.model.output_stride = 16
    config.model.width = 0.25
    config.model.init = 'kaiming'

    config.data.source = 'synthetic'
    config.data.synthetic.update(dict(num_train=300, num_val=50, num_test=10, height=128,
                                      width=256, seed=0))
    config.data.crop_size = (128, 256)
    config.data.scale_range = (0.75, 1.5)
    config.data.photometric = 0.2

    config.global_batch_size = 8
    config.eval.batch_size = 8
    config.num_train_steps = 600
    config.log_every_steps = 20
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200

    config.optimizer.name = 'adam'
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.name = 'poly'
    config.schedule.warmup_steps = 20
    return config
