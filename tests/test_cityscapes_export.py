"""--mode eval with config.eval.export_dir: label-id PNGs that cityscapesscripts evaluates to
seg_jax's own numbers, in the layout the benchmark server takes."""

import copy
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seg_jax import cityscapes_export, evaluate
from seg_jax.data.labels import LABEL_ID_TO_TRAIN_ID, TRAIN_ID_TO_LABEL_ID
from seg_jax.errors import ConfigError


def export_config(config, export_dir, **eval_fields):
    config = copy.deepcopy(config)
    config.eval.export_dir = str(export_dir)
    config.eval.update(eval_fields)
    return config


def cityscapes_evaluation(data_dir: str, results_dir: str, output_dir) -> dict:
    """cityscapesscripts' pixel-level evaluation as the README runs it (``main`` of
    ``csEvalPixelLevelSemanticLabeling`` through seg_jax.tools.cityscapes_eval, which lets it
    run on numpy >= 2.4): it finds each prediction by name under CITYSCAPES_RESULTS."""
    env = dict(os.environ, CITYSCAPES_DATASET=data_dir, CITYSCAPES_RESULTS=results_dir,
               CITYSCAPES_EXPORT_DIR=str(output_dir))
    result = subprocess.run([sys.executable, '-m', 'seg_jax.tools.cityscapes_eval'], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Score Average' in result.stdout  # its IoU table
    with open(os.path.join(output_dir, 'resultPixelLevelSemanticLabeling.json')) as f:
        return json.load(f)


def test_exported_pngs_evaluate_to_seg_jax_metrics_with_cityscapesscripts(trained_run,
                                                                           tmp_path):
    config, workdir = trained_run
    results = evaluate.evaluate_checkpoint(export_config(config, tmp_path / 'export'), workdir)
    ground_truths = sorted(glob.glob(os.path.join(config.data.dir, 'gtFine', 'val', '*',
                                                  '*_gtFine_labelIds.png')))
    exported = sorted(glob.glob(str(tmp_path / 'export' / 'val' / '*' / '*.png')))
    assert len(exported) == len(ground_truths) == results['num_images'] == 6
    for truth, prediction in zip(ground_truths, exported):
        # Same city folder and image id, full resolution, label ids only.
        assert os.path.basename(prediction) == os.path.basename(truth).replace(
            '_gtFine_labelIds.png', cityscapes_export.SUFFIX)
        assert os.path.basename(os.path.dirname(prediction)) == os.path.basename(
            os.path.dirname(truth))
        ids = np.asarray(Image.open(prediction))
        assert ids.dtype == np.uint8 and ids.shape == np.asarray(Image.open(truth)).shape
        assert set(np.unique(ids)) <= set(TRAIN_ID_TO_LABEL_ID[:19].tolist())

    official = cityscapes_evaluation(config.data.dir, str(tmp_path / 'export' / 'val'),
                                     tmp_path)
    assert official['averageScoreClasses'] == pytest.approx(results['miou'], abs=1e-6)
    for name, iou in results['iou_by_class'].items():
        theirs = official['classScores'][name]
        assert (np.isnan(iou) and np.isnan(theirs)) or theirs == pytest.approx(iou, abs=1e-6)


def test_export_with_test_time_augmentation_keeps_full_resolution(trained_run, tmp_path):
    """Multi-scale + flip + sliding window still exports at the image size; the train ids of
    the PNGs are those the evaluation counted (its confusion matrix's predictions)."""
    config, workdir = trained_run
    tta = dict(scales=(0.5, 1.0), flip=True, window=(64, 64), stride=(32, 32))
    results = evaluate.evaluate_checkpoint(export_config(config, tmp_path / 'tta', **tta),
                                           workdir)
    exported = sorted(glob.glob(str(tmp_path / 'tta' / 'val' / '*' / '*.png')))
    predicted = np.zeros(19, np.int64)
    for path in exported:
        train_ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(path))]
        assert train_ids.shape == (64, 128)
        predicted += np.bincount(train_ids.ravel(), minlength=19)[:19]
    record_name = (f'validation_{config.num_train_steps}_latest_window64x64-stride32x32_'
                   'ms0.5-1.0_flip.json')  # --mode eval's record of this inference
    with open(os.path.join(workdir, 'eval', record_name)) as f:
        record = json.load(f)
    assert record['inference'] == {'window': [64, 64], 'stride': [32, 32],
                                   'scales': [0.5, 1.0], 'flip': True}
    confusion = np.asarray(record['confusion'])
    # The record of this inference. Its column sums count every
    # prediction (void ground truth included in the last row).
    np.testing.assert_array_equal(predicted, confusion.sum(axis=0))
    assert results['num_images'] == len(exported) == 6


def test_test_split_exports_for_the_benchmark_server(trained_run, tmp_path):
    config, workdir = trained_run
    evaluate.evaluate_checkpoint(export_config(config, tmp_path / 'export', split='test'),
                                 workdir)
    exported = glob.glob(str(tmp_path / 'export' / 'test' / '*' / f'*{cityscapes_export.SUFFIX}'))
    test_images = glob.glob(os.path.join(config.data.dir, 'leftImg8bit', 'test', '*', '*.png'))
    assert len(exported) == len(test_images) == 1
    assert os.path.basename(exported[0]).split('_pred')[0] == os.path.basename(
        test_images[0]).split('_leftImg8bit')[0]


def test_an_export_never_mixes_with_an_earlier_one(trained_run, tmp_path):
    config, workdir = trained_run
    stale = tmp_path / 'export' / 'val' / 'frankfurt' / 'frankfurt_000000_000294_pred_labelIds.png'
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b'an earlier export')
    with pytest.raises(ConfigError, match='already holds files'):
        evaluate.evaluate_checkpoint(export_config(config, tmp_path / 'export'), workdir)
    assert stale.read_bytes() == b'an earlier export'
    assert sorted(p.name for p in stale.parent.iterdir()) == [stale.name]


def test_export_refuses_a_resized_evaluation(trained_run, tmp_path):
    config, workdir = trained_run
    config = export_config(config, tmp_path / 'export')
    config.data.eval_scale = 0.5
    with pytest.raises(ConfigError, match=r'config.eval.scales="\(0.5,\)"'):
        evaluate.evaluate_checkpoint(config, workdir)
    assert not (tmp_path / 'export').exists()
