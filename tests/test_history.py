"""The files a run leaves in its workdir: config, history, eval reports, TensorBoard, plots
(``seg_jax.history`` writing what ``seg_jax.figures`` and ``seg_jax.tables`` make), and how
``--mode eval``'s reports stay apart from training's."""

import io
import json
import math
import pathlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from seg_jax import figures, history, tables
from seg_jax.evaluate import EvalResult
from seg_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from seg_jax.data.labels import CLASS_NAMES, COURSE_CLASSES, IGNORE_LABEL, PALETTE

CAR, PERSON, TRAIN = (CLASS_NAMES.index(name) for name in ('car', 'person', 'train'))


def fake_metrics(scale: float = 1.0) -> dict:
    """What ``seg_jax.metrics.compute_metrics`` returns, with distinct per-class values (class
    c has IoU (c + 10)% times ``scale``) and 'train' absent (NaN)."""
    iou = scale * (np.arange(len(CLASS_NAMES)) + 10.0) / 100
    iou[TRAIN] = np.nan
    seed_iou = iou - 0.05
    return {'miou': float(np.nanmean(iou)), 'pixel_accuracy': 0.921 * scale,
            'mean_class_accuracy': 0.634, 'fw_iou': 0.857, 'seed_miou': float(np.nanmean(seed_iou)),
            'iou': iou, 'seed_iou': seed_iou,
            'iou_by_class': dict(zip(CLASS_NAMES, iou.tolist(), strict=True)),
            'seed_iou_by_class': dict(zip(CLASS_NAMES, seed_iou.tolist(), strict=True)),
            'loss': 0.75}


def fake_confusion() -> np.ndarray:
    return np.arange(20 * 19, dtype=np.int64).reshape(20, 19) * 10**9  # needs 64 bits


def strict_json(text: str):
    """``json.loads`` that rejects the NaN / Infinity extensions of Python's json."""
    def reject(constant):
        raise ValueError(f'{constant} is not JSON')
    return json.loads(text, parse_constant=reject)


def normalise(rgb: np.ndarray) -> np.ndarray:
    return ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def all_files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(path for path in root.rglob('*') if path.is_file())


def tensorboard_values(folder: pathlib.Path) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """Every summary value of the event files in ``folder``, as TensorBoard reads them:
    plugin name -> tag -> step -> tensor."""
    values: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for path in folder.glob('events.out.tfevents.*'):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                values.setdefault(plugin, {}).setdefault(value.tag, {})[event.step] = (
                    tf.make_ndarray(value.tensor))
    return values


def scalar_events(folder: pathlib.Path) -> dict[str, dict[int, float]]:
    """TensorBoard scalars under ``folder``: tag -> step -> value."""
    return {tag: {step: float(value) for step, value in steps.items()}
            for tag, steps in tensorboard_values(folder).get('scalars', {}).items()}


@pytest.fixture
def reporter(tmp_path):
    reporter = history.Reporter(str(tmp_path / 'run'))
    yield reporter
    reporter.close()


def test_config_json_round_trips_the_config(reporter, tmp_path):
    config = ml_collections.ConfigDict({
        'model': {'name': 'resnet_aspp', 'output_stride': 8, 'dropout': 0.1},
        'data': {'crop_size': (512, 1024), 'dir': None, 'flip': True}, 'bad': math.nan})
    reporter.write_config(config)
    written = strict_json((tmp_path / 'run' / 'config.json').read_text())
    assert written == {'model': {'name': 'resnet_aspp', 'output_stride': 8, 'dropout': 0.1},
                       'data': {'crop_size': [512, 1024], 'dir': None, 'flip': True},
                       'bad': None}


def test_history_has_one_json_object_per_event(reporter, tmp_path):
    reporter.log_train(10, {'loss': 1.5, 'learning_rate': np.float32(0.01)})
    reporter.log_train(20, {'loss': math.nan, 'learning_rate': 0.01})
    reporter.log_eval(20, 'val', fake_metrics(), fake_confusion())
    lines = (tmp_path / 'run' / 'history.jsonl').read_text().splitlines()
    events = [strict_json(line) for line in lines]
    assert [(event['step'], event['kind']) for event in events] == [
        (10, 'train'), (20, 'train'), (20, 'eval')]
    assert events[0] == {'step': 10, 'kind': 'train', 'loss': 1.5,
                         'learning_rate': pytest.approx(0.01)}
    assert events[1]['loss'] is None
    evaluation = events[2]
    assert evaluation['split'] == 'val'
    assert evaluation['miou'] == pytest.approx(fake_metrics()['miou'])
    assert evaluation['loss'] == 0.75
    assert evaluation['iou/car'] == pytest.approx((CAR + 10) / 100)
    assert evaluation['iou/train'] is None


def test_eval_file_holds_per_class_iou_by_name_and_confusion(reporter, tmp_path):
    metrics = fake_metrics()
    reporter.log_eval(300, 'val', metrics, fake_confusion())
    report = strict_json((tmp_path / 'run' / 'eval' / 'val_300.json').read_text())
    assert report['step'] == 300 and report['split'] == 'val'
    for key in ('miou', 'pixel_accuracy', 'mean_class_accuracy', 'fw_iou', 'seed_miou', 'loss'):
        assert report[key] == pytest.approx(metrics[key])
    assert list(report['iou']) == list(CLASS_NAMES)
    assert report['iou']['person'] == pytest.approx((PERSON + 10) / 100)
    assert report['seed_iou']['person'] == pytest.approx((PERSON + 5) / 100)
    assert report['iou']['train'] is None
    np.testing.assert_array_equal(np.array(report['confusion'], np.int64), fake_confusion())
    assert report['confusion_rows'] == list(CLASS_NAMES) + ['void']
    assert report['confusion_columns'] == list(CLASS_NAMES)


def test_tensorboard_files_hold_the_scalars(reporter, tmp_path):
    reporter.log_train(5, {'loss': 2.0})
    reporter.log_train(6, {'loss': 1.0})
    reporter.log_eval(6, 'val', fake_metrics(), fake_confusion())
    train = scalar_events(tmp_path / 'run' / 'tensorboard' / 'train')
    assert train == {'loss': {5: 2.0, 6: 1.0}}
    evaluation = scalar_events(tmp_path / 'run' / 'tensorboard' / 'eval')
    assert evaluation['val/miou'][6] == pytest.approx(fake_metrics()['miou'])
    assert evaluation['val/pixel_accuracy'][6] == pytest.approx(0.921)
    assert evaluation['val/loss'][6] == pytest.approx(0.75)
    assert evaluation['val/iou/car'][6] == pytest.approx((CAR + 10) / 100)


def test_class_table_shows_every_class_and_the_course_row():
    metrics = fake_metrics()
    table = tables.format_class_table(metrics)
    lines = table.splitlines()
    for class_id, name in enumerate(CLASS_NAMES):
        [line] = [line for line in lines if line.startswith(name + ' ')]
        if class_id == TRAIN:
            assert line.split()[-2:] == ['-', '-']
        else:
            assert line.split()[-2:] == [f'{class_id + 10:.1f}', f'{class_id + 5:.1f}']
        assert line.rstrip('-.0123456789 ').endswith('*') == (name in COURSE_CLASSES)
    [mean] = [line for line in lines if line.startswith('mean')]
    assert mean.split()[1:] == [f'{100 * metrics["miou"]:.1f}', f'{100 * metrics["seed_miou"]:.1f}']
    [header] = [line for line in lines if line.startswith('* course classes')]
    assert header.split()[3:] == 'building traffic sign person car bicycle mIoU pixel acc'.split()
    [official] = [line for line in lines if line.startswith('official')]
    course = [f'{CLASS_NAMES.index(name) + 10:.1f}' for name in COURSE_CLASSES]
    assert official.split()[1:] == course + [f'{100 * metrics["miou"]:.1f}', '92.1']
    assert 'pixel accuracy 92.1' in table and 'frequency-weighted IoU 85.7' in table


def test_log_eval_returns_the_class_table(reporter):
    table = reporter.log_eval(1, 'val', fake_metrics(), fake_confusion())
    assert table == tables.format_class_table(fake_metrics())


def assert_png(path: pathlib.Path, min_size: tuple[int, int]) -> Image.Image:
    with Image.open(path) as image:
        image.verify()
    image = Image.open(path)
    assert image.format == 'PNG'
    assert image.width >= min_size[0] and image.height >= min_size[1]
    return image


@pytest.mark.parametrize('evaluations', [(), (100,), (100, 200, 300)])
def test_curves_png_from_any_history(reporter, tmp_path, evaluations):
    for step in range(0, 301, 25):
        reporter.log_train(step, {'loss': 3.0 / (1 + step)})
    for step in evaluations:
        reporter.log_eval(step, 'val', fake_metrics(step / 300), fake_confusion())
    reporter.plot_curves()
    image = assert_png(tmp_path / 'run' / 'plots' / 'curves.png', (600, 400))
    # Curves were drawn in colour, not just an empty frame.
    assert len(np.unique(np.asarray(image.convert('RGB')).reshape(-1, 3), axis=0)) > 20


def test_plot_curves_without_history_writes_nothing(reporter, tmp_path):
    reporter.plot_curves()
    assert not (tmp_path / 'run' / 'plots').exists()


def test_predictions_panel_shows_image_labels_and_predictions_in_palette_colours(
        reporter, tmp_path):
    count, height, width = 3, 40, 60
    rgb = np.zeros((count, height, width, 3), np.uint8)
    rgb[:] = (10, 128, 250)
    labels = np.full((count, height, width), CAR, np.int32)
    labels[:, :, width // 2:] = IGNORE_LABEL
    predictions = labels.clip(0, PERSON)  # car -> person, void -> person
    reporter.save_predictions(42, 'val', normalise(rgb), labels, predictions, max_images=2)
    panel = np.asarray(assert_png(tmp_path / 'run' / 'plots' / 'predictions_42.png',
                                  (3 * width, 2 * height)).convert('RGB'))
    gap, header = figures.PANEL_GAP, figures.HEADER_HEIGHT
    assert panel.shape == (header + 2 * height + gap, 3 * width + 2 * gap, 3)  # two rows only
    top = header + height + gap + height // 2  # the middle of the second row
    image_left, truth_left, prediction_left = (column * (width + gap) for column in range(3))
    np.testing.assert_array_equal(panel[top, image_left + 5], (10, 128, 250))
    np.testing.assert_array_equal(panel[top, truth_left + 5], PALETTE[CAR])
    np.testing.assert_array_equal(panel[top, truth_left + width - 5], (0, 0, 0))
    np.testing.assert_array_equal(panel[top, prediction_left + 5], PALETTE[PERSON])
    truth_tile = panel[header:header + height, truth_left:truth_left + width].reshape(-1, 3)
    assert {tuple(colour) for colour in truth_tile} == {tuple(PALETTE[CAR]), (0, 0, 0)}


def test_wide_predictions_are_subsampled_with_exact_colours():
    width = 3 * figures.MAX_PANEL_WIDTH - 7
    labels = np.tile(np.arange(width) % 19, (1, 6, 1))
    canvas = figures.prediction_panel(normalise(np.zeros((1, 6, width, 3))), labels, labels)
    tile_width = (canvas.shape[1] + figures.PANEL_GAP) // 3 - figures.PANEL_GAP
    assert tile_width <= figures.MAX_PANEL_WIDTH
    truth = canvas[figures.HEADER_HEIGHT, tile_width + figures.PANEL_GAP:][:tile_width]
    np.testing.assert_array_equal(truth, PALETTE[np.arange(0, width, 3) % 19])


def test_denormalize_inverts_imagenet_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(figures.denormalize(normalise(rgb)), rgb)


def test_mismatched_shapes_are_rejected(reporter):
    with pytest.raises(ValueError, match='labels and predictions'):
        reporter.save_predictions(0, 'val', np.zeros((1, 4, 4, 3)),
                                  np.zeros((1, 4, 4), np.int32), np.zeros((1, 4, 5), np.int32))


def test_history_keeps_the_latest_record_of_a_step_and_skips_a_torn_line(reporter, tmp_path):
    for step, loss in ((1, 3.0), (2, 2.0), (3, 1.0), (2, 2.5)):  # resumed from step 1
        reporter.log_train(step, {'loss': loss})
    path = tmp_path / 'run' / history.HISTORY_FILE
    with open(path, 'a') as f:
        f.write('{"step": 4, "kind": "tr')  # killed mid-write
    events = history.read_history(str(path))
    assert [(event['step'], event['loss']) for event in events] == [(1, 3.0), (2, 2.5), (3, 1.0)]


def test_outputs_leave_no_partial_files(reporter, tmp_path):
    reporter.write_config(ml_collections.ConfigDict({'seed': 0}))
    reporter.log_train(1, {'loss': 1.0})
    reporter.log_eval(1, 'val', fake_metrics(), fake_confusion())
    reporter.plot_curves()
    reporter.save_predictions(1, 'val', np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8), np.int32),
                              np.zeros((1, 8, 8), np.int32))
    names = {path.relative_to(tmp_path / 'run').as_posix()
             for path in all_files(tmp_path / 'run') if 'tensorboard' not in path.parts}
    assert names == {'config.json', 'history.jsonl', 'eval/val_1.json', 'plots/curves.png',
                     'plots/predictions_1.png', 'plots/confusion_1.png'}


def test_disabled_reporter_writes_nothing(tmp_path):
    reporter = history.Reporter(str(tmp_path / 'run'), enabled=False)
    reporter.write_config(ml_collections.ConfigDict({'seed': 0}))
    reporter.log_train(1, {'loss': 1.0})
    table = reporter.log_eval(1, 'val', fake_metrics(), fake_confusion())
    reporter.plot_curves()
    reporter.save_predictions(1, 'val', np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8), np.int32),
                              np.zeros((1, 8, 8), np.int32))
    reporter.close()
    assert 'bicycle' in table
    assert all_files(tmp_path) == []


def fake_result(scale: float = 1.0) -> EvalResult:
    """What ``Evaluator.evaluate`` returns: ``fake_metrics`` and two 8x16 examples whose cars
    are predicted as persons."""
    metrics = {**fake_metrics(scale), 'num_images': 2}
    sample = (normalise(np.zeros((2, 8, 16, 3))), np.full((2, 8, 16), CAR, np.int32),
              np.full((2, 8, 16), PERSON, np.int32))
    return EvalResult(metrics, fake_confusion(), sample, labelled_pixels=2 * 8 * 16)


def test_each_evaluation_draws_its_confusion_matrix_beside_its_predictions(reporter, tmp_path):
    for step in (4, 8):
        reporter.log_evaluation(step, 'val', fake_result(step / 8))
    plots = tmp_path / 'run' / 'plots'
    assert sorted(path.name for path in plots.iterdir()) == [
        'confusion_4.png', 'confusion_8.png', 'predictions_4.png', 'predictions_8.png']
    # One matrix: the width of one panel and the row labels.
    width = round(100 * (figures.CONFUSION_LABELS_WIDTH + figures.CONFUSION_PANEL_WIDTH))
    assert assert_png(plots / 'confusion_8.png', (0, 0)).size == (
        width, round(100 * figures.CONFUSION_HEIGHT))


def test_tensorboard_shows_the_pictures_and_the_class_iou_table(reporter, tmp_path):
    reporter.log_evaluation(6, 'val', fake_result())
    values = tensorboard_values(tmp_path / 'run' / 'tensorboard' / 'eval')
    plots = tmp_path / 'run' / 'plots'
    for tag, path in (('val/confusion', plots / 'confusion_6.png'),
                      ('val/predictions', plots / 'predictions_6.png')):
        width, height, png = values['images'][tag][6]  # the image plugin's layout
        assert png == path.read_bytes()
        assert Image.open(io.BytesIO(png)).size == (int(width), int(height))
    [table] = values['text']['val/iou_table'].values()
    rows = {cells[0].strip('*'): cells[1:] for cells in (
        [cell.strip() for cell in line.strip('|').split('|')]
        for line in table.item().decode().splitlines() if line.startswith('|'))}
    assert rows['car'] == [f'{CAR + 10:.1f}', f'{CAR + 5:.1f}']
    assert rows['train'] == ['-', '-']
    assert rows['mean'] == [f'{100 * fake_metrics()["miou"]:.1f}',
                            f'{100 * fake_metrics()["seed_miou"]:.1f}']
    assert '| **person** |' in table.item().decode() and '| road |' in table.item().decode()
    assert values['scalars']['val/iou/person'][6] == pytest.approx((PERSON + 10) / 100)


def test_mode_eval_reports_beside_training_and_out_of_its_curves(reporter, tmp_path, capsys):
    run = tmp_path / 'run'
    reporter.log_evaluation(8, 'val', fake_result())  # training's evaluation of step 8
    training = {path: path.read_bytes() for path in all_files(run) if 'tensorboard' not in
                path.parts and path.name != history.HISTORY_FILE}
    capsys.readouterr()
    reporter.log_evaluation(8, 'val', fake_result(0.5), suffix='best_whole_flip')
    reporter.log_evaluation(8, 'val', fake_result(0.25), suffix='latest_whole')
    reporter.log_evaluation(8, 'val', fake_result(0.75), suffix='latest_whole')  # again
    assert {path: path.read_bytes() for path in training} == training  # untouched
    assert {path.relative_to(run).as_posix() for path in all_files(run)
            if 'tensorboard' not in path.parts} - {
        path.relative_to(run).as_posix() for path in training} == {
        'history.jsonl', 'eval/val_8_best_whole_flip.json', 'eval/val_8_latest_whole.json',
        'plots/predictions_val_8_best_whole_flip.png', 'plots/confusion_val_8_best_whole_flip.png',
        'plots/predictions_val_8_latest_whole.png', 'plots/confusion_val_8_latest_whole.png'}
    rerun = json.loads((run / 'eval' / 'val_8_latest_whole.json').read_text())
    assert rerun['miou'] == pytest.approx(fake_metrics(0.75)['miou'])  # the latest rerun
    events = history.read_history(str(run / history.HISTORY_FILE))
    assert [(event['kind'], event.get('record'), event['miou']) for event in events] == [
        ('eval', None, pytest.approx(fake_metrics()['miou'])),
        ('mode_eval', 'eval/val_8_best_whole_flip.json', pytest.approx(fake_metrics(0.5)['miou'])),
        ('mode_eval', 'eval/val_8_latest_whole.json', pytest.approx(fake_metrics(0.75)['miou']))]
    # Training's curves and TensorBoard run show training's evaluation only.
    miou_axis = figures.curves_figure(events).axes[2]
    assert [list(line.get_ydata()) for line in miou_axis.lines
            if line.get_label() == 'val'] == [[pytest.approx(fake_metrics()['miou'])]]
    board = run / 'tensorboard'
    assert scalar_events(board / 'eval')['val/miou'] == {8: pytest.approx(fake_metrics()['miou'])}
    assert scalar_events(board / 'eval_best_whole_flip')['val/miou'] == {
        8: pytest.approx(fake_metrics(0.5)['miou'])}
    out = capsys.readouterr().out
    assert (f'Wrote {run / "eval" / "val_8_best_whole_flip.json"}, '
            f'{run / "plots" / "predictions_val_8_best_whole_flip.png"} and '
            f'{run / "plots" / "confusion_val_8_best_whole_flip.png"} (training\'s own record of '
            'step 8, if any, stays as it was).') in out
