"""Defaults every config starts from: ``get_config()`` returns a locked ConfigDict.

The training fields are the standard Cityscapes recipe (SGD 0.01, momentum 0.9,
weight decay 5e-4, poly 0.9, 80k steps of 8 crops of 512x1024, rescale [0.5, 2], flip,
photometric jitter); the course's settings live in configs/seed/.

Locked means a misspelt field (``--config.model.outptu_stride=16``) is an error, not a silent
no-op. Configs that need a new field add it inside ``with config.unlocked():``.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = 'resnet_aspp'  # a key of seg_jax.models.MODELS
    # resnet18 | resnet34 | resnet50 | resnet101 | vgg16_bn | resnet50_v1c | resnet101_v1c (mmseg's
    # deep-stem ResNets); None for networks without one.
    config.model.backbone = 'resnet50'
    config.model.output_stride = 8  # 8 | 16 | 32 where the network has a backbone
    config.model.num_classes = 19  # Cityscapes train ids; the class table's number of classes
    # conv kernels: 'xavier' (course) | 'kaiming' (torchvision) | 'mmseg' (Kaiming, and N(0, 0.01)
    # for the classifiers of deeplabv3_mmseg, deeplabv3plus and pspnet)
    config.model.init = 'xavier'
    config.model.compute_dtype = 'float32'  # 'float32' | 'bfloat16'; parameters stay float32
    config.model.width = 1.0  # channel multiplier; 1.0 is the published network
    config.model.aux_head = False  # FCN head on layer3, used in training only (DeepLab, PSPNet)
    config.model.dual_aspp = False  # resnet_aspp: second ASPP on layer3, logits summed
    config.model.aspp_dropout = 0.0  # course ASPP: dropout after the atrous branches
    # Recompute each block's activations in the backward pass: less memory, ~1/3 more compute.
    config.model.remat = False
    # Weights to start from (.safetensors, or .pth with torch installed), see
    # seg_jax/pretrained.py: torchvision's ImageNet ResNet-18/34/50/101 or VGG-16-BN, or mmseg's
    # ResNet-50/101-V1c, for the backbone; or a whole model: torchvision's deeplabv3_resnet50/101
    # (model deeplabv3) or fcn_resnet50/101 (fcn_resnet), an mmsegmentation model-zoo checkpoint
    # (deeplabv3_mmseg, deeplabv3plus, pspnet). --mode eval / predict use it when the workdir
    # has no checkpoint.
    config.model.pretrained = placeholder(str)
    # True: a fresh training refuses to start without config.model.pretrained (recipes whose
    # published numbers need ImageNet weights); set False to train from random weights anyway.
    config.model.pretrained_required = False

    config.data = ml_collections.ConfigDict()
    # Cityscapes: 'tfds' (built from the two official zips) | 'folder' (extracted leftImg8bit/
    # + gtFine/) | 'synthetic' (generated on first use; needs nothing). Other data sets
    # (seg_jax/data/pairs.py): 'pairs' (folders of images and label PNGs, config.data.pairs)
    # | 'voc' (Pascal VOC 2012) | 'ade20k' (ADEChallengeData2016).
    config.data.source = 'tfds'
    config.data.dir = placeholder(str)  # the data set's root (tfds: unused)
    # What the label values mean (seg_jax/data/classes.py): 'cityscapes' | 'voc' | 'ade20k', or
    # a .json / .csv class table; config.model.num_classes must match it.
    config.data.classes = 'cityscapes'
    # 'pairs': folders relative to config.data.dir, {split} standing for the split's folder name
    # in `splits`; images and labels matched by name. split_list: a file of names per split
    # (e.g. 'lists/{split}.txt'); empty: every image in the folder.
    config.data.pairs = ml_collections.ConfigDict(dict(
        images='images/{split}', labels='labels/{split}', image_suffix='.jpg',
        label_suffix='.png', split_list='',
        splits=dict(train='train', validation='val', test='test')))
    config.data.voc_aug = False  # voc: train on SBD's augmented set too (SegmentationClassAug)
    config.data.manual_dir = placeholder(str)  # tfds: the zips (<tfds_dir>/downloads/manual)
    config.data.tfds_dir = placeholder(str)  # tfds: where it builds (default ~/tensorflow_datasets)
    # layout: 'cityscapes', or 'voc' / 'ade20k' (those data sets' layouts and classes, read by
    # their sources; set config.data.classes to match).
    config.data.synthetic = ml_collections.ConfigDict(dict(
        num_train=200, num_val=40, num_test=20, height=256, width=512, seed=0,
        layout='cityscapes'))
    config.data.crop_size = (512, 1024)  # (height, width) of training crops
    config.data.scale_range = (0.5, 2.0)  # random rescale factor
    # (short, long): the rescale factor applies to each image fitted to this size first,
    # keeping its aspect ratio (mmseg's VOC / ADE20K recipes: (512, 2048)); None: to the image.
    config.data.base_size = placeholder(tuple)
    config.data.rotation_degrees = 0.0  # random rotation in [-r, r]
    config.data.flip = True  # horizontal flip with p = 0.5
    config.data.photometric = 0.3  # brightness / contrast jitter strength; 0 turns it off
    config.data.photometric_style = 'jitter'  # 'jitter' | 'mmseg' (mmseg's PhotoMetricDistortion)
    config.data.cat_max_ratio = 1.0  # redraw crops where one class has this share (mmseg 0.75)
    config.data.eval_scale = 1.0  # evaluation resizes full images by this factor
    # (height, width): evaluation pads images of many sizes to this canvas (void labels), and
    # shrinks any larger one to fit; None: every image of a split has one size (Cityscapes).
    config.data.eval_size = placeholder(tuple)
    config.data.skip_bad_examples = False  # True: a malformed pair is logged, stands in as void

    config.global_batch_size = 8  # summed over every device of every process
    config.num_train_steps = 80_000  # or None and set num_epochs: exactly one of the two
    config.num_epochs = placeholder(float)
    config.log_every_steps = 50
    config.eval_every_steps = 4000
    config.checkpoint_every_steps = 2000
    config.keep_checkpoints = 3  # newest periodic checkpoints kept; the best is kept apart
    # Steps whose loss or gradients are NaN/inf that a run skips (leaving the state unchanged)
    # before it stops; 0 stops at the first. Counted per invocation (a resumed run starts at 0).
    config.skip_nonfinite_steps = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'sgd'  # 'adam' | 'adamw' | 'sgd'
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 5e-4  # adamw: decoupled; sgd: L2 added to the gradient
    config.optimizer.momentum = 0.9  # sgd

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = 'poly'  # 'constant' | 'step' | 'poly' | 'cosine'
    config.schedule.warmup_steps = 0  # linear warmup from 0
    config.schedule.power = 0.9  # poly
    # poly: the rate it decays to at the last step, lr = (lr0 - end) (1 - t / T)^power + end
    # (mmsegmentation's min_lr / eta_min; its recipes use 1e-4).
    config.schedule.end_value = 0.0
    config.schedule.step_every_epochs = 10  # step: multiply the rate by step_factor this often
    config.schedule.step_factor = 0.2

    config.loss = ml_collections.ConfigDict()
    config.loss.name = 'ce'  # 'ce' | 'weighted_ce' | 'dice' | 'ce_dice'
    # weighted_ce: 'course' | 'median_frequency' (from cached training-set pixel counts), or an
    # explicit list of 19 weights.
    config.loss.class_weights = placeholder(object)
    config.loss.dice_weight = 1.0  # ce_dice: ce + dice_weight * dice
    config.loss.dice_variant = 'per_class'  # 'per_class' | 'global' (the course's)
    config.loss.aux_weight = 0.4  # weight of the auxiliary head's loss, where there is one
    # Cross-entropy's divisor: 'valid' (labelled pixels, or the sum of their class weights:
    # PyTorch's mean) | 'all' (every pixel, void included: mmseg's avg_non_ignore=False).
    config.loss.normalizer = 'valid'

    config.eval = ml_collections.ConfigDict()
    config.eval.split = 'validation'
    config.eval.batch_size = 8  # global, like global_batch_size
    config.eval.checkpoint = 'latest'  # --mode eval / predict restore 'latest', 'best' or a step
    # How every evaluation (periodic, --mode eval) and --mode predict infer a full image
    # (seg_jax/inference.py): whole image by default; a sliding window of window=(h, w) moved
    # by stride=(h, w) (default: the window), overlapping logits averaged; and test-time
    # augmentation: each of scales, mirrored too with flip, probabilities averaged.
    config.eval.window = placeholder(tuple)
    config.eval.stride = placeholder(tuple)
    config.eval.scales = (1.0,)  # e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) with flip: the MS+flip protocol
    config.eval.flip = False
    # --mode eval writes the official label-id PNGs of config.eval.split here (seg_jax/cityscapes_export.py)
    config.eval.export_dir = placeholder(str)

    # --mode predict (seg_jax/predict.py): segments images of any size with the restored model,
    # config.eval.batch_size at a time, inferring as config.eval says.
    config.predict = ml_collections.ConfigDict()
    config.predict.input = placeholder(str)  # an image file, a folder (searched recursively) or a glob
    config.predict.output = placeholder(str)  # default: <workdir>/predictions
    config.predict.overlay_alpha = 0.5  # opacity of the colours over the photo in *_overlay.png
    config.predict.overwrite = False  # True: replace outputs of an earlier prediction

    # --mode export (seg_jax/export.py): the restored model as segmenter.jax (jax.export), a
    # TensorFlow SavedModel and metadata.json, each checked against --mode predict before it is kept.
    config.export = ml_collections.ConfigDict()
    config.export.dir = placeholder(str)  # default: <workdir>/export/<step>; never overwritten
    # (height, width) of the images it takes; default: the eval images' (synthetic: their own,
    # Cityscapes: 1024x2048). The batch size is free.
    config.export.image_size = placeholder(tuple)
    config.export.probabilities = False  # True: class probabilities beside the train ids
    config.export.platforms = ('cpu', 'cuda', 'tpu')  # what segmenter.jax and the SavedModel run on
    config.export.check_images = 2  # synthetic scenes each file is checked on (rounded up to the devices)

    # --mode benchmark (seg_jax/benchmark.py): what is timed, and how long.
    config.benchmark = ml_collections.ConfigDict()
    config.benchmark.warmup_steps = 3  # train steps run before timing
    config.benchmark.steps = 20  # train steps timed
    config.benchmark.eval_size = (1024, 2048)  # eval images: full Cityscapes resolution
    config.benchmark.eval_batches = 5  # eval batches timed
    config.benchmark.input_batches = 20  # input-pipeline batches timed
    config.benchmark.peak_size = 4096  # side of the square matmul that measures the peak

    # Continue a run in a workdir whose config.json differs in more than run length, cadence,
    # data location or benchmark settings (refused by default: it would mix two experiments).
    config.allow_config_change = False

    config.seed = 0

    config.lock()
    return config
