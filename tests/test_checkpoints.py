"""Checkpointer: roundtrips, retention, best tracking, errors, sharded restore (8 CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax.checkpoints import Checkpointer
from seg_jax.errors import CheckpointError, SegJaxError


@struct.dataclass
class TrainState:
    params: dict
    batch_stats: dict
    opt_state: optax.OptState
    step: jax.Array


def make_state(seed: int = 0, step: int = 0, width: int = 3) -> TrainState:
    """A small state shaped like a real one: params, BN statistics, Adam moments, step."""
    keys = jax.random.split(jax.random.key(seed), 2)
    params = {'conv': {'kernel': jax.random.normal(keys[0], (3, 3, 2, width)),
                       'bias': jnp.zeros((width,), jnp.bfloat16)},
              'head': {'kernel': jax.random.normal(keys[1], (width, 4))}}
    batch_stats = {'bn': {'mean': jnp.full((width,), seed, jnp.float32),
                          'var': jnp.ones((width,))}}
    return TrainState(params=params, batch_stats=batch_stats,
                      opt_state=optax.adam(1e-3).init(params), step=jnp.int32(step))


def assert_bitwise_equal(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_roundtrip_is_bit_for_bit(tmp_path):
    state = make_state(seed=1, step=7)
    with Checkpointer(tmp_path, keep=2) as checkpointer:
        assert checkpointer.save(7, state)
    with Checkpointer(tmp_path, keep=2) as checkpointer:  # a fresh process resuming
        assert checkpointer.latest_step() == 7
        restored = checkpointer.restore(make_state(seed=2))
    assert isinstance(restored, TrainState)
    assert_bitwise_equal(restored, state)


def test_relative_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer('workdir/checkpoints', keep=1) as checkpointer:
        assert checkpointer.save(1, make_state(step=1))
    assert (tmp_path / 'workdir' / 'checkpoints' / '1').is_dir()


def test_keeps_newest_periodic_steps_and_best_survives(tmp_path):
    with Checkpointer(tmp_path, keep=2) as checkpointer:
        for step in (1, 2, 3, 4):
            assert checkpointer.save(step, make_state(seed=step, step=step))
            if step == 1:
                assert checkpointer.save_best(step, make_state(seed=step, step=step), 0.5)
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [1, 3, 4]
        assert checkpointer.best_step() == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ['3', '4', 'best']
        best = checkpointer.restore(make_state(), 'best')
        assert_bitwise_equal(best, make_state(seed=1, step=1))
        assert int(checkpointer.restore(make_state(), 'latest').step) == 4
        assert int(checkpointer.restore(make_state(), 3).step) == 3
        assert int(checkpointer.restore(make_state(), 1).step) == 1  # served by best/


def test_save_best_only_on_improvement_and_remembers_value_across_runs(tmp_path):
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        assert checkpointer.save_best(10, make_state(step=10), 0.4)
        assert not checkpointer.save_best(20, make_state(step=20), 0.3)
        assert not checkpointer.save_best(30, make_state(step=30), 0.4)
        assert not checkpointer.save_best(35, make_state(step=35), float('nan'))
        assert checkpointer.save_best(40, make_state(step=40), 0.6)
        checkpointer.wait_until_finished()
        assert checkpointer.best_step() == 40
        assert [p.name for p in (tmp_path / 'best').iterdir() if p.name.isdigit()] == ['40']
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        assert checkpointer.best_value == pytest.approx(0.6)
        assert not checkpointer.save_best(50, make_state(step=50), 0.55)
        assert checkpointer.best_step() == 40


def test_save_respects_interval_and_never_rewrites_a_step(tmp_path):
    with Checkpointer(tmp_path, keep=3, every_steps=5) as checkpointer:
        assert not checkpointer.save(3, make_state(step=3))
        assert checkpointer.save(5, make_state(seed=5, step=5))
        assert checkpointer.save(7, make_state(seed=7, step=7), force=True)
        # Resumed at 7 and saving 7 again, or an older step: skipped, the original is kept.
        assert not checkpointer.save(7, make_state(seed=99, step=7), force=True)
        assert not checkpointer.save(5, make_state(seed=99, step=5), force=True)
        assert checkpointer.all_steps() == [5, 7]
        assert_bitwise_equal(checkpointer.restore(make_state(), 7), make_state(seed=7, step=7))


def test_interrupted_save_is_ignored(tmp_path):
    with Checkpointer(tmp_path, keep=3) as checkpointer:
        checkpointer.save(5, make_state(seed=5, step=5))
    unfinished = tmp_path / '9.orbax-checkpoint-tmp-1234567890'
    (unfinished / 'default').mkdir(parents=True)
    (unfinished / 'default' / 'partial').write_bytes(b'\0' * 16)
    with Checkpointer(tmp_path, keep=3) as checkpointer:
        assert checkpointer.all_steps() == [5]
        assert int(checkpointer.restore(make_state()).step) == 5
        with pytest.raises(CheckpointError, match=r'step 9 .* available steps are \[5\]'):
            checkpointer.restore(make_state(), 9)


def test_empty_directory_says_train_first(tmp_path):
    with Checkpointer(tmp_path / 'run', keep=1) as checkpointer:
        assert checkpointer.latest_step() is None and checkpointer.best_step() is None
        for step in ('latest', 'best', 3):
            with pytest.raises(CheckpointError) as error:
                checkpointer.restore(make_state(), step)
            assert str(error.value) == (f'No checkpoint in {tmp_path / "run"}; train first or '
                                        'pass --workdir of a finished run.')


def test_missing_step_lists_available_steps(tmp_path):
    with Checkpointer(tmp_path, keep=3) as checkpointer:
        checkpointer.save(2, make_state(step=2))
        checkpointer.save(4, make_state(step=4))
        with pytest.raises(CheckpointError, match=r'step 3 .*available steps are \[2, 4\]'):
            checkpointer.restore(make_state(), 3)
        with pytest.raises(CheckpointError, match=r"No best checkpoint .* steps \[2, 4\]"):
            checkpointer.restore(make_state(), 'best')
        with pytest.raises(CheckpointError, match="an int, 'latest' or 'best'; got 'newest'"):
            checkpointer.restore(make_state(), 'newest')
        assert int(checkpointer.restore(make_state(), '2').step) == 2  # a --flag value


def test_mismatched_model_names_the_leaf(tmp_path):
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        checkpointer.save(1, make_state(width=3))
        with pytest.raises(SegJaxError) as error:
            checkpointer.restore(make_state(width=5))
        message = str(error.value)
        assert 'does not fit the configured model' in message
        assert 'params/conv/kernel has shape (3, 3, 2, 3) in the checkpoint but (3, 3, 2, 5)' \
            in message
        assert 'different model config' in message

        wider_tree = make_state()
        wider_tree.params['extra'] = {'kernel': jnp.zeros((2,))}
        with pytest.raises(CheckpointError, match='params/extra/kernel is not in the checkpoint'):
            checkpointer.restore(wider_tree)


def test_restore_into_named_sharding_over_8_devices(tmp_path):
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    state = make_state(seed=3, step=11)
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        checkpointer.save(11, state)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        restored = checkpointer.restore(abstract)
    assert len(jax.devices()) == 8
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated
    assert_bitwise_equal(restored, state)


def test_bad_arguments(tmp_path):
    with pytest.raises(CheckpointError, match='keep >= 1'):
        Checkpointer(tmp_path, keep=0)
