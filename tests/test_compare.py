"""python -m seg_jax.compare on real tiny runs: every file, the runs' own numbers (their
training's evaluations, not --mode eval's), refusals."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seg_jax import compare, figures, train
from seg_jax.data.labels import CLASS_NAMES, COURSE_CLASSES
from seg_jax.errors import ConfigError


@pytest.fixture(scope='module')
def two_runs(trained_run, tmp_path_factory):
    """The session's tiny run (cross-entropy) and the same network trained with dice loss on
    the same data, 12 steps with an evaluation every 4."""
    config, first = trained_run
    config = copy.deepcopy(config)
    config.loss.name = 'dice'
    config.num_train_steps, config.eval_every_steps = 12, 4
    second = str(tmp_path_factory.mktemp('dice_run'))
    train.train_and_evaluate(config, second)
    return first, second


def read_evals(run):
    """The records of ``run``'s training evaluations (``validation_<step>.json``) by step."""
    records = {}
    for name in os.listdir(os.path.join(run, 'eval')):
        if name.removeprefix('validation_').removesuffix('.json').isdigit():
            with open(os.path.join(run, 'eval', name)) as f:
                record = json.load(f)
            records[record['step']] = record
    return records


def test_comparison_writes_every_file_with_the_runs_numbers(two_runs, tmp_path, capsys):
    first, second = two_runs
    output = tmp_path / 'comparison'
    compare.main([first, second, '--output', str(output), '--images', '2'])
    assert sorted(os.listdir(output)) == ['confusion.png', 'curves.png', 'predictions.png',
                                          'results.json', 'results.md']
    assert ('Wrote results.md, results.json, curves.png, predictions.png and confusion.png to '
            f'{output}.') in capsys.readouterr().out
    results = json.loads((output / 'results.json').read_text())
    rows = {row['run']: row for row in results['runs']}
    for run in (first, second):
        row = rows[os.path.basename(run)]
        evals = read_evals(run)
        best_step = max(evals, key=lambda step: (evals[step]['miou'], step))
        record = evals[best_step]
        assert row['step'] == best_step
        assert row['miou'] == record['miou'] and row['seed_miou'] == record['seed_miou']
        assert row['pixel_accuracy'] == record['pixel_accuracy']
        assert row['iou'] == {name: record['iou'][name] for name in COURSE_CLASSES}
        assert row['parameters'] > 10_000 and row['gflops_per_image'] > 0
        assert row['train_images_per_s'] > 0 and row['train_seconds'] > 0
    assert rows[os.path.basename(second)]['loss'] == 'dice'
    # The markdown shows the same numbers, in percent, in both IoU tables.
    markdown = (output / 'results.md').read_text()
    for row in rows.values():
        official, seed = [line for line in markdown.splitlines()
                          if line.startswith(f'| {row["run"]} | unet |')]
        assert f'| {100 * row["miou"]:.1f} | {100 * row["pixel_accuracy"]:.1f} |' in official
        assert f'| {100 * row["seed_miou"]:.1f} |' in seed
    # The grid: a header, then 2 rows of image | ground truth | one column per run.
    grid = np.asarray(Image.open(output / 'predictions.png'))
    tile_width = (grid.shape[1] + 4) // 4 - 4
    assert tile_width == 128 and grid.shape[0] == 20 + 2 * 64 + 4
    assert np.asarray(Image.open(output / 'curves.png')).shape[2] in (3, 4)
    # One confusion matrix per run, side by side.
    with Image.open(output / 'confusion.png') as confusion:
        assert confusion.format == 'PNG'
        assert confusion.size == (
            round(100 * (figures.CONFUSION_LABELS_WIDTH + 2 * figures.CONFUSION_PANEL_WIDTH)),
            round(100 * figures.CONFUSION_HEIGHT))


def test_the_confusion_panels_are_the_compared_evaluations(two_runs):
    runs = [compare.Run(run, 'best', 'validation') for run in two_runs]
    figure = figures.confusion_figure(compare.confusion_panels(runs), CLASS_NAMES)
    for run, axis in zip(runs, figure.axes, strict=False):
        assert axis.get_title() == (f'{run.name}: step {run.eval["step"]}, mIoU '
                                    f'{100 * run.eval["miou"]:.1f}%')
        np.testing.assert_array_equal(
            axis.images[0].get_array(),
            figures.row_normalised(np.asarray(run.eval['confusion'])[:19]))


def test_mode_eval_records_are_not_compared(two_runs, tmp_path):
    """A --mode eval record beside training's (here a made-up one, later and far better) is
    neither the best nor the latest evaluation compared: other weights or another inference."""
    first, _ = two_runs
    run = tmp_path / 'evaluated_again'
    shutil.copytree(first, run)
    training = read_evals(first)
    rerun = {**training[max(training)], 'step': 100, 'miou': 0.99}
    (run / 'eval' / 'validation_100_best_whole_flip.json').write_text(json.dumps(rerun))
    for which in ('best', 'latest'):
        [row] = compare.compare([str(run)], str(tmp_path / which), which, num_images=1)['runs']
        assert row['step'] in training and row['miou'] == training[row['step']]['miou']


def test_a_run_without_an_evaluation_is_reported_not_compared(two_runs, tmp_path):
    first, _ = two_runs
    unfinished = tmp_path / 'unfinished'
    unfinished.mkdir()
    shutil.copy(os.path.join(first, 'config.json'), unfinished)
    output = tmp_path / 'comparison'
    results = compare.compare([first, str(unfinished)], str(output), num_images=1)
    assert [row['run'] for row in results['runs']] == [os.path.basename(first)]
    assert 'unfinished' in results['not_compared'][0]
    assert 'Not compared' in (output / 'results.md').read_text()


def test_runs_with_different_classes_are_refused(two_runs, tmp_path):
    first, second = two_runs
    # A copy of a real run whose config says it predicts 5 classes: refused from its config.
    other = tmp_path / 'five_classes'
    shutil.copytree(second, other, ignore=shutil.ignore_patterns('checkpoints'))
    stored = json.loads((other / 'config.json').read_text())
    stored['model']['num_classes'] = 5
    (other / 'config.json').write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match='five_classes has model.num_classes=5 but'):
        compare.compare([first, str(other)], str(tmp_path / 'comparison'))
    assert not (tmp_path / 'comparison').exists()
    with pytest.raises(SystemExit, match='do not compare'):
        compare.main([first, str(other), '--output', str(tmp_path / 'comparison')])


def test_runs_on_other_data_are_refused(two_runs, tmp_path):
    first, second = two_runs
    other = tmp_path / 'bigger_images'
    shutil.copytree(second, other, ignore=shutil.ignore_patterns('checkpoints'))
    stored = json.loads((other / 'config.json').read_text())
    stored['data']['synthetic']['height'] = 128
    (other / 'config.json').write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match='bigger_images was trained and evaluated on'):
        compare.compare([first, str(other)], str(tmp_path / 'comparison'))


COURSE_STUDY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'launch', 'course_study.sh')


def test_course_study_builds_every_seed_config_and_deeplabv3_at_the_small_scale(tmp_path):
    """Each of the study's nine commands, with --mode=summary appended (no training): every
    config takes the small-scale flags and builds; the comparison then names the missing runs."""
    result = subprocess.run(
        [COURSE_STUDY, '--root', str(tmp_path / 'study'), '--', '--mode=summary'],
        env=dict(os.environ, PYTHON=sys.executable), cwd=tmp_path, capture_output=True,
        text=True, timeout=600)
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
    assert [s['model'] for s in summaries] == [
        'fcn', 'resnet_deconv', 'unet', 'unet_aspp', 'resnet_aspp', 'fcn', 'fcn', 'fcn',
        'deeplabv3']
    assert all(s['output_shape'] == [1, 128, 128, 19] for s in summaries)
    assert result.returncode == 1
    assert 'is not a seg_jax run: it has no config.json' in result.stderr


@pytest.mark.parametrize('arguments, message', [
    (['--data', 'imagenet'], '--data is synthetic or cityscapes'),
    (['--scale', 'huge'], '--scale is small or full'),
    (['--epochs', '3'], 'unknown argument --epochs'),
])
def test_course_study_refuses_bad_arguments(tmp_path, arguments, message):
    result = subprocess.run([COURSE_STUDY, *arguments], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert not list(tmp_path.iterdir())
