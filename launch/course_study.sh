#!/usr/bin/env bash
# Reruns the course project's study: trains every configs/seed/ config (one per row of the
# course's results table) and the DeepLabv3-ResNet-50 recipe, one after another, then compares
# them with python -m seg_jax.compare (results.md, results.json, curves.png, predictions.png).
#
#   launch/course_study.sh [--data synthetic|cityscapes] [--scale small|full] [--root DIR]
#                          [--cityscapes_dir DIR] [-- extra seg_jax.main flags]
#
#   --data synthetic    the embedded synthetic Cityscapes (default; nothing to download)
#   --data cityscapes   real Cityscapes: the extracted folders in --cityscapes_dir (source
#                       folder), or without it the TFDS build (README, "Data")
#   --scale small       (default) every network at width 0.25 on 128x256 images, 128x128 crops,
#                       batch 8, 10 epochs of 300 images (DeepLabv3: 370 steps): a 2-core CPU
#                       runs the whole study in well under an hour (synthetic data)
#   --scale full        the configs as they are: the course's crops, batches and 100 epochs,
#                       full-width networks at 1024x2048 (synthetic data at that size too)
#   --root DIR          where the runs and the comparison go (default
#                       runs/course_study_<data>_<scale>)
#
# Rerunning the same command resumes each unfinished run and skips finished ones (training
# resumes from its workdir), then compares again. Environment: PYTHON (default python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
data=synthetic scale=small root='' cityscapes_dir='' extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --data) data=${2:?--data needs synthetic or cityscapes}; shift 2 ;;
    --scale) scale=${2:?--scale needs small or full}; shift 2 ;;
    --root) root=${2:?--root needs a folder}; shift 2 ;;
    --cityscapes_dir) cityscapes_dir=${2:?--cityscapes_dir needs a folder}; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
done
[[ $data == synthetic || $data == cityscapes ]] || {
  echo "error: --data is synthetic or cityscapes, not $data" >&2; exit 2; }
[[ $scale == small || $scale == full ]] || {
  echo "error: --scale is small or full, not $scale" >&2; exit 2; }
root=${root:-runs/course_study_${data}_${scale}}

data_flags=()
if [[ $data == synthetic ]]; then
  data_flags=(--config.data.source=synthetic)
  if [[ $scale == small ]]; then  # the demo's data set: 300 train and 50 val images of 128x256
    data_flags+=(--config.data.synthetic.height=128 --config.data.synthetic.width=256
                 --config.data.synthetic.num_train=300 --config.data.synthetic.num_val=50
                 --config.data.synthetic.num_test=10)
  else  # Cityscapes' size and split sizes
    data_flags+=(--config.data.synthetic.height=1024 --config.data.synthetic.width=2048
                 --config.data.synthetic.num_train=2975 --config.data.synthetic.num_val=500
                 --config.data.synthetic.num_test=1525)
  fi
elif [[ -n $cityscapes_dir ]]; then
  data_flags=(--config.data.source=folder "--config.data.dir=$cityscapes_dir")
else
  data_flags=(--config.data.source=tfds)
fi

scale_flags=()
if [[ $scale == small ]]; then
  scale_flags=(--config.model.width=0.25 '--config.data.crop_size=(128, 128)'
               --config.global_batch_size=8 --config.eval.batch_size=8
               --config.log_every_steps=25 --config.eval_every_steps=125
               --config.checkpoint_every_steps=125)
fi

seed_configs=(fcn resnet_deconv unet unet_aspp resnet_aspp fcn_dice fcn_weighted_ce
              fcn_augmentation)
workdirs=()
for name in "${seed_configs[@]}" deeplabv3_r50; do
  if [[ $name == deeplabv3_r50 ]]; then
    config=$repo/configs/deeplabv3_r50.py
    # From random weights, as the seed configs start here (its recipe otherwise asks for the
    # ImageNet backbone: README, "Pretrained weights").
    length=(--config.model.pretrained_required=False)
    [[ $scale == small ]] && length+=(--config.num_train_steps=370)
  else
    config=$repo/configs/seed/$name.py
    length=()
    [[ $scale == small ]] && length=(--config.num_epochs=10)
  fi
  workdir=$root/$name
  workdirs+=("$workdir")
  echo "=== course study: $name -> $workdir" >&2
  "$python" -m seg_jax.main --config "$config" --workdir "$workdir" "${data_flags[@]}" \
    "${scale_flags[@]}" "${length[@]}" ${extra[@]+"${extra[@]}"}
done

"$python" -m seg_jax.compare "${workdirs[@]}" --output "$root/comparison"
