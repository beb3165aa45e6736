"""Evaluation's reports: each training evaluation's record and pictures, and ``--mode eval``'s
under names of their own (``seg_jax.evaluate.record_suffix``), leaving training's as they were."""

import copy
import json
import pathlib
import shutil

import pytest

import tiny_config
from seg_jax import evaluate, history, inference
from test_history import all_files, assert_png, tensorboard_values


@pytest.mark.parametrize('weights, fields, eval_scale, suffix', [
    ('latest', {}, 1.0, 'latest_whole'),
    ('pretrained', {}, 1.0, 'pretrained_whole'),
    ('best', dict(scales=(0.5, 0.75, 1.0), flip=True), 1.0, 'best_whole_ms0.5-0.75-1.0_flip'),
    ('400', dict(window=(512, 1024), stride=(341, 683)), 1.0,
     'step_window512x1024-stride341x683'),
    ('400', dict(window=(512, 1024)), 1.0, 'step_window512x1024-stride512x1024'),
    ('latest', dict(scales=(2,)), 1.0, 'latest_whole_ms2.0'),
    ('latest', dict(flip=True), 0.5, 'latest_whole_flip_resized0.5'),
])
def test_record_suffix_names_the_weights_and_the_inference(weights, fields, eval_scale,
                                                            suffix):
    config = tiny_config.get_config()
    config.eval.update(fields)
    settings = inference.inference_settings(config.eval)
    assert evaluate.record_suffix(weights, settings, eval_scale) == suffix


def test_training_evaluations_leave_a_record_two_pictures_and_tensorboard_images(trained_run):
    config, trained = trained_run
    workdir, step = pathlib.Path(trained), config.num_train_steps
    record = json.loads((workdir / 'eval' / f'validation_{step}.json').read_text())
    assert record['step'] == step and 'weights' not in record
    for picture in ('predictions', 'confusion'):
        assert_png(workdir / 'plots' / f'{picture}_{step}.png', (100, 100))
    images = tensorboard_values(workdir / 'tensorboard' / 'eval')['images']
    assert {tag: set(steps) for tag, steps in images.items()} == {
        'validation/predictions': {step}, 'validation/confusion': {step}}


def test_mode_eval_reports_beside_training_and_leaves_its_files_byte_identical(
        trained_run, tmp_path, capsys):
    trained_config, trained = trained_run
    workdir = tmp_path / 'run'
    shutil.copytree(trained, workdir)
    step = trained_config.num_train_steps
    before = {path: path.read_bytes() for path in all_files(workdir)}
    config = copy.deepcopy(trained_config)
    config.eval.checkpoint, config.eval.flip = 'best', True
    results = evaluate.evaluate_checkpoint(config, str(workdir))

    changed = {path for path, data in before.items() if path.read_bytes() != data}
    assert changed == {workdir / history.HISTORY_FILE}
    log = (workdir / history.HISTORY_FILE).read_bytes()
    assert log.startswith(before[workdir / history.HISTORY_FILE])  # appended to, only
    name = f'validation_{step}_best_whole_flip'
    added = {path.relative_to(workdir).as_posix() for path in all_files(workdir)} - {
        path.relative_to(workdir).as_posix() for path in before}
    assert {path for path in added if not path.startswith('tensorboard/')} == {
        f'eval/{name}.json', f'plots/predictions_{name}.png', f'plots/confusion_{name}.png'}
    assert any(path.startswith('tensorboard/eval_best_whole_flip/') for path in added)
    record = json.loads((workdir / 'eval' / f'{name}.json').read_text())
    assert record['miou'] == pytest.approx(results['miou'])
    assert record['inference']['flip'] is True
    assert record['weights'] == {'source': 'checkpoint', 'path': str(workdir), 'step': step}
    # The copied history (the session's run, which other tests may have evaluated with
    # --mode eval too) plus this evaluation's event, and nothing else.
    events = history.read_history(str(workdir / history.HISTORY_FILE))
    copied = history.read_history(str(pathlib.Path(trained, history.HISTORY_FILE)))
    [rerun] = [event for event in events if event.get('record') == f'eval/{name}.json']
    assert [event for event in events if event is not rerun] == copied
    assert rerun['record'] == f'eval/{name}.json' and rerun['step'] == step
    assert rerun['miou'] == pytest.approx(results['miou'])
    assert f'Wrote {workdir / "eval" / name}.json' in capsys.readouterr().out


def test_record_suffix_names_an_evaluation_canvas():
    settings = inference.inference_settings(tiny_config.get_config().eval)
    assert evaluate.record_suffix('best', settings, 1.0, (512, 512)) == 'best_whole_canvas512x512'
