"""Training end to end on tiny synthetic data: learning, data parallelism, resume, eval, outputs."""

import json
import os
import re

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import tiny_config as tiny_config_file
from seg_jax import checkpoints, evaluate, optim, parallel, train
from seg_jax import health as run_health
from seg_jax.data import pipeline
from seg_jax.errors import ConfigError
from seg_jax.models import build_model
from seg_jax.state import create_train_state


def tiny_config(data_dir: str, steps: int = 8):
    """tests/tiny_config.py on ``data_dir``, for ``steps`` steps (eval at the end)."""
    config = tiny_config_file.get_config()
    config.data.dir = data_dir
    config.num_train_steps = steps
    config.eval_every_steps = steps
    config.checkpoint_every_steps = steps // 2
    return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('synthetic'))


def read_history(workdir) -> list[dict]:
    with open(os.path.join(workdir, 'history.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_a_tiny_model_learns_without_recompiling(data_dir, tmp_path, monkeypatch):
    compiled, make_step = [], train.make_train_step

    def recorded(*args):
        compiled.append(make_step(*args))
        return compiled[-1]

    monkeypatch.setattr(train, 'make_train_step', recorded)
    config = tiny_config(data_dir, steps=60)
    config.optimizer.learning_rate = 1e-2
    config.log_every_steps = 10
    config.eval_every_steps = 30
    config.checkpoint_every_steps = 60
    train.train_and_evaluate(config, str(tmp_path))
    assert compiled[0]._cache_size() == 1  # one compilation for all 60 steps
    history = read_history(tmp_path)
    losses = [e['loss'] for e in history if e['kind'] == 'train']
    evals = [e for e in history if e['kind'] == 'eval']
    assert losses[-1] < 0.6 * losses[0]
    # 19 classes: a constant prediction scores mIoU well under 0.05 on these scenes.
    assert evals[-1]['miou'] > 0.15 and evals[-1]['pixel_accuracy'] > 0.6


def test_eight_devices_compute_what_one_device_computes(data_dir):
    config = tiny_config(data_dir)
    # SGD: Adam's normalisation would amplify reduction-order noise in near-zero gradients.
    config.optimizer.name, config.optimizer.learning_rate = 'sgd', 0.05
    model = build_model(config.model)
    tx, schedule = optim.build_optimizer(config, total_steps=100, steps_per_epoch=2)
    step = train.make_train_step(config.loss, config.optimizer, None, config.seed)
    host_batch = next(pipeline.build_input(config, 'train'))
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = Mesh(np.array(devices), (parallel.DATA_AXIS,),
                    axis_types=(jax.sharding.AxisType.Auto,))
        state = create_train_state(model, tx, tuple(config.data.crop_size), config.seed, mesh)
        health = run_health.initial(mesh)
        after_first, losses = None, []
        for _ in range(3):
            state, metrics, health = step(state, parallel.global_batch(host_batch, mesh),
                                          health, schedule)
            losses.append(float(metrics['loss']))
            if after_first is None:  # copied: the next step donates (reuses) these buffers
                after_first = jax.tree_util.tree_map(
                    lambda x: np.asarray(x).copy(),
                    {'params': state.params, 'stats': state.batch_stats})
        results.append((after_first, losses))
    (one, one_losses), (eight, eight_losses) = results
    # One step: equal up to float reduction order (BN statistics span the global batch).
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           one, eight)
    # Later steps: this tiny network amplifies reduction-order noise ~15x per step, so the
    # trajectories are compared through the loss.
    np.testing.assert_allclose(one_losses, eight_losses, rtol=1e-3)


def test_runs_of_other_lengths_and_rates_and_resumed_runs_compile_the_same_step(data_dir,
                                                                              tmp_path):
    """One program for all of them, so a persistent compilation cache compiles it once."""
    config, other = tiny_config(data_dir, steps=8), tiny_config(data_dir, steps=60)
    other.optimizer.learning_rate *= 3
    setup, other_setup = train.training_setup(config), train.training_setup(other)
    assert float(setup.schedule(4)) != float(other_setup.schedule(4))
    mesh = parallel.data_mesh()
    with checkpoints.Checkpointer(tmp_path, keep=1) as checkpointer:
        new = train.initial_state(config, setup, checkpointer, mesh)
        checkpointer.save(4, new)
    with checkpoints.Checkpointer(tmp_path, keep=1) as checkpointer:  # as a rerun finds it
        assert checkpointer.latest_step() == 4
        resumed = train.initial_state(config, setup, checkpointer, mesh)
    step = train.make_train_step(config.loss, config.optimizer, setup.class_weights, config.seed)
    batch = parallel.global_batch(next(pipeline.build_input(config, 'train')), mesh)
    health = run_health.initial(mesh)
    programs = [step.lower(state, batch, health, schedule).as_text()
                for state, schedule in ((new, setup.schedule), (new, other_setup.schedule),
                                        (resumed, setup.schedule))]
    assert programs[1] == programs[0] and programs[2] == programs[0]


def test_resume_continues_the_same_trajectory_and_eval_reproduces_metrics(
        data_dir, tmp_path, monkeypatch):
    straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
    state = train.train_and_evaluate(tiny_config(data_dir, steps=8), straight)
    # The same 8-step run, killed during step 5, after its step-4 checkpoint, then restarted.
    make_step, calls = train.make_train_step, []

    def killed_after_four_steps(*args):
        step = make_step(*args)

        def step_or_die(*step_args):
            calls.append(1)
            if len(calls) > 4:
                raise KeyboardInterrupt
            return step(*step_args)
        return step_or_die

    monkeypatch.setattr(train, 'make_train_step', killed_after_four_steps)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(tiny_config(data_dir, steps=8), resumed)
    monkeypatch.undo()
    resumed_state = train.train_and_evaluate(tiny_config(data_dir, steps=8), resumed)
    # The restart began at step 5: steps 2 and 4 were logged once, by the first run.
    logged_steps = [e['step'] for e in read_history(resumed) if e['kind'] == 'train']
    assert logged_steps == [2, 4, 6, 8]
    assert int(resumed_state.step) == int(state.step) == 8
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           jax.device_get(state.params), jax.device_get(resumed_state.params))
    # --mode eval of the final checkpoint reproduces what training logged at that step.
    logged = [e for e in read_history(straight) if e['kind'] == 'eval'][-1]
    restored = evaluate.evaluate_checkpoint(tiny_config(data_dir, steps=8), straight)
    assert restored['miou'] == pytest.approx(logged['miou'], abs=1e-6)
    assert restored['pixel_accuracy'] == pytest.approx(logged['pixel_accuracy'], abs=1e-6)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
        data_dir, tmp_path, monkeypatch):
    make_step = train.make_train_step

    def nan_from_step_three(*args):
        step = make_step(*args)
        calls = []

        def step_with_bad_data(state, batch, *rest):
            calls.append(1)
            if len(calls) >= 3:
                batch = {**batch, 'image': batch['image'] * np.nan}
            return step(state, batch, *rest)
        return step_with_bad_data

    monkeypatch.setattr(train, 'make_train_step', nan_from_step_three)
    config = tiny_config(data_dir, steps=8)
    config.checkpoint_every_steps = 2
    with pytest.raises(run_health.NonFiniteLossError, match='at step 3'):
        train.train_and_evaluate(config, str(tmp_path))
    saved = sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
    assert saved == ['2']


def test_steps_and_epochs_are_exclusive(data_dir):
    config = tiny_config(data_dir)
    config.num_epochs = 2.0
    with pytest.raises(ConfigError, match='exactly one of config.num_train_steps'):
        optim.training_length(config, num_train_examples=16)
    config.num_train_steps = None
    assert optim.training_length(config, num_train_examples=24) == (6, 3)


def test_a_workdir_refuses_another_experiment_unless_allowed(data_dir, tmp_path):
    workdir = tmp_path / 'run'
    train.train_and_evaluate(tiny_config(data_dir, steps=2), str(workdir))
    written = (workdir / 'config.json').read_text()
    history = (workdir / 'history.jsonl').read_text()
    other = tiny_config(data_dir, steps=4)
    other.optimizer.learning_rate = 1e-4
    with pytest.raises(ConfigError, match=re.escape(
            f'{workdir} holds a run with another config (optimizer.learning_rate: 0.003 -> '
            '0.0001). Continuing it would mix two experiments')):
        train.train_and_evaluate(other, str(workdir))
    # Refused before anything was written.
    assert (workdir / 'config.json').read_text() == written
    assert (workdir / 'history.jsonl').read_text() == history
    # Run length, cadence and data location may change: the run continues to step 4.
    longer = tiny_config(data_dir, steps=4)
    longer.log_every_steps = 1
    assert int(train.train_and_evaluate(longer, str(workdir)).step) == 4
    # Allowed explicitly, the new config is written and the old one kept beside it.
    other.num_train_steps, other.allow_config_change = 6, True
    assert int(train.train_and_evaluate(other, str(workdir)).step) == 6
    assert json.loads((workdir / 'config.json').read_text())['optimizer']['learning_rate'] == 1e-4
    # Every config it replaced is kept, in order: the 2-step run's, then the 4-step run's.
    kept = [json.loads((workdir / f'config.replaced_{n}.json').read_text()) for n in (1, 2)]
    assert [(c['num_train_steps'], c['optimizer']['learning_rate']) for c in kept] == [
        (2, 0.003), (4, 0.003)]
    assert not (workdir / 'config.replaced_3.json').exists()
