"""Checkpointer: roundtrips, retention, best tracking, errors, sharded restore (8 CPU devices),
damaged checkpoints."""

import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax.checkpoints import Checkpointer
from seg_jax.damaged_checkpoints import DamagedCheckpointError
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


def test_host_values_roundtrip_beside_device_arrays(tmp_path):
    """States built on the host (numpy arrays and scalars) save and restore as orbax's
    defaults save them."""
    state = {'device': jnp.arange(4.0), 'host': np.arange(3, dtype=np.int16),
             'count': np.int64(5)}
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        assert checkpointer.save(1, state)
    with Checkpointer(tmp_path, keep=1, read_only=True) as checkpointer:
        restored = checkpointer.restore(jax.tree.map(np.zeros_like, state))
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


@pytest.fixture(scope='module')
def saved(tmp_path_factory) -> pathlib.Path:
    """A checkpoint folder with periodic steps 1, 2, 3 and step 3 as the best (0.5)."""
    directory = tmp_path_factory.mktemp('saved') / 'checkpoints'
    with Checkpointer(directory, keep=3) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, make_state(seed=step, step=step))
        checkpointer.save_best(3, make_state(seed=3, step=3), 0.5)
    return directory


def copy_of(saved: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """``saved`` as ``<tmp_path>/checkpoints``: ``tmp_path`` is then its workdir."""
    return pathlib.Path(shutil.copytree(saved, tmp_path / 'checkpoints'))


def data_file(step_folder: pathlib.Path) -> pathlib.Path:
    """The step's largest array data file (for these tiny states, the only one)."""
    return max((step_folder / 'default' / 'd').iterdir(), key=lambda path: path.stat().st_size)


def truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def flip_bytes(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def contents(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in folder.rglob('*') if path.is_file()}


RESTORE_ANOTHER = ('Restore another step; rerunning the training moves it to '
                   '<workdir>/damaged_checkpoints/ and resumes from the newest intact step.')


# What orbax / tensorstore raised for each damage, measured on orbax-checkpoint 0.12.8.
@pytest.mark.parametrize('damage,reason', [
    (lambda step: truncate(data_file(step)), r'the array \S+ cannot be read from default/d/\w+ '
     r'\(OUT_OF_RANGE: Requested byte range \[0, \d+\) is not valid for value of size \d+\)'),
    (lambda step: data_file(step).unlink(), r'the array \S+ cannot be read from default/d/\w+ '
     r'\(NOT_FOUND: Error reading Byte range \[0, \d+\) of local file "default/d/\w+"\)'),
    (lambda step: flip_bytes(data_file(step)), r'the array \S+ cannot be read from default/d/\w+ '
     r'\(DATA_LOSS: Error decoding b-tree node: CRC-32C checksum verification failed: .*\)'),
    (lambda step: (step / 'default' / 'manifest.ocdbt').unlink(), r'the array \S+ cannot be '
     r'read \(NOT_FOUND: Metadata at "\S+/\.zarray" in OCDBT database at local file "default/" '
     r'does not exist\)'),
    (lambda step: truncate(step / 'default' / 'manifest.ocdbt'), r'the array \S+ cannot be read '
     r'from default/manifest\.ocdbt \(DATA_LOSS: Error decoding manifest: Length in header '
     r'\(\d+\) does not match actual length \(\d+\); at byte \d+\)'),
    (lambda step: truncate(step / 'default' / '_METADATA'), r"default/_METADATA cannot be read "
     r"\(not valid JSON: Expecting ',' delimiter: line 1 column \d+ \(char \d+\)\)"),
    (lambda step: (step / 'default' / '_METADATA').unlink(), 'default/_METADATA is missing'),
    (lambda step: shutil.rmtree(step / 'default'), 'default/_METADATA is missing'),
    (lambda step: (step / 'default' / '_sharding').write_text('{'), r'default/_sharding cannot be '
     r'read \(FAILED_PRECONDITION: Invalid JSON\)'),
    (lambda step: (step / 'default' / 'array_metadatas' / 'process_0').write_bytes(b'\xff{}'),
     r'default/array_metadatas/process_0 cannot be read \(not valid UTF-8 text at byte 0\)'),
], ids=['data truncated', 'data deleted', 'data bit flip', 'manifest deleted',
        'manifest truncated', '_METADATA truncated', '_METADATA deleted', 'item folder deleted',
        '_sharding not JSON', 'array metadata not UTF-8'])
def test_a_damaged_checkpoint_is_named_with_its_file_and_reason(saved, tmp_path, damage, reason):
    directory = copy_of(saved, tmp_path)
    damage(directory / '3')
    with Checkpointer(directory, keep=3, read_only=True) as checkpointer:
        with pytest.raises(DamagedCheckpointError) as error:
            checkpointer.restore(make_state(), 'latest')
        assert int(checkpointer.restore(make_state(), 2).step) == 2  # the others restore
        assert int(checkpointer.restore(make_state(), 'best').step) == 3
    assert isinstance(error.value, CheckpointError) and error.value.step == 3
    assert re.fullmatch(rf'Checkpoint step 3 in {re.escape(str(directory / "3"))} is damaged: '
                        rf'{reason}\. {re.escape(RESTORE_ANOTHER)}', str(error.value)), error.value


def chained_read_error(*args, **kwargs):
    """orbax's error for a truncated chunk of a larger array: tensorstore's, wrapped."""
    try:
        raise ValueError('OUT_OF_RANGE: Error reading "params.conv.kernel/0.0.1.0" in OCDBT '
                         'database at local file "/x/3/default/": Requested byte range [8, 16) '
                         'is not valid for value of size 4 [tensorstore_spec=\'{"driver"...}\']')
    except ValueError as error:
        raise Exception('Encountered error while reading array index: (slice(0, 3, 1),). See '
                        'full TensorStore details: <TensorStore({...})>') from error


def raiser(error: BaseException):
    def read(*args, **kwargs):
        raise error
    return read


@pytest.mark.parametrize('read,raised', [
    (chained_read_error, DamagedCheckpointError),
    (raiser(KeyboardInterrupt()), KeyboardInterrupt),
    (raiser(ValueError('pytree structure error: different types at key path')), ValueError),
    (raiser(ValueError('PERMISSION_DENIED: Error reading local file "/x/3/default/_METADATA"')),
     ValueError),
], ids=['wrapped read error', 'KeyboardInterrupt', 'tree mismatch', 'permission denied'])
def test_only_errors_of_reading_the_files_are_damage(saved, tmp_path, monkeypatch, read, raised):
    directory = copy_of(saved, tmp_path)
    monkeypatch.setattr(ocp.CheckpointManager, 'restore', read)
    with Checkpointer(directory, keep=3, read_only=True) as checkpointer:
        with pytest.raises(raised) as error:
            checkpointer.restore(make_state(), 3)
    assert type(error.value) is raised
    if raised is DamagedCheckpointError:
        assert str(error.value).startswith(
            f'Checkpoint step 3 in {directory / "3"} is damaged: the array params.conv.kernel '
            'cannot be read (OUT_OF_RANGE: Requested byte range [8, 16) is not valid for value '
            'of size 4). ')


def test_a_checkpoint_of_another_model_is_not_damaged(saved):
    with Checkpointer(saved, keep=3, read_only=True) as checkpointer:
        with pytest.raises(CheckpointError, match='does not fit the configured model') as error:
            checkpointer.restore(make_state(width=5))
    assert not isinstance(error.value, DamagedCheckpointError)


def test_resume_moves_damaged_steps_aside_and_restores_the_newest_intact_one(saved, tmp_path,
                                                                              caplog):
    directory, aside = copy_of(saved, tmp_path), tmp_path / 'damaged_checkpoints'
    (aside / '3').mkdir(parents=True)  # left by an earlier resume: kept as it is
    for folder in (directory / '3', directory / 'best' / '3'):  # both copies of step 3
        truncate(data_file(folder))
    damaged = {folder: contents(directory / folder) for folder in ('3', 'best/3')}
    with Checkpointer(directory, keep=3) as checkpointer:
        state, skipped = checkpointer.restore_newest_intact(make_state())
        assert_bitwise_equal(state, make_state(seed=2, step=2))
        assert [(each.step, str(each.moved_from), str(each.moved_to)) for each in skipped] == [
            (3, str(directory / '3'), str(aside / '3.1')),
            (3, str(directory / 'best' / '3'), str(aside / 'best' / '3'))]
        assert checkpointer.all_steps() == [1, 2] and checkpointer.best_value is None
        # The resumed run saves step 3 again, and as the best: nothing remembers the old one.
        assert checkpointer.save(3, make_state(seed=3, step=3))
        assert checkpointer.save_best(3, make_state(seed=3, step=3), 0.5)
    assert contents(aside / '3.1') == damaged['3'] and contents(aside / 'best' / '3') == \
        damaged['best/3']
    assert not any((aside / '3').iterdir())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING' and
                r.getMessage().startswith('Skipped checkpoint')]
    assert len(warnings) == 2
    assert re.fullmatch(r'Skipped checkpoint step 3, which is damaged: the array \S+ cannot be '
                        r'read from default/d/\w+ \(OUT_OF_RANGE: .*\); moved '
                        f'{re.escape(str(directory / "3"))} to {re.escape(str(aside / "3.1"))} '
                        r'and resumed from step 2\.', warnings[0]), warnings[0]
    assert warnings[1].endswith(f'; moved {directory / "best" / "3"} to {aside / "best" / "3"} '
                                'and resumed from step 2.')


def test_resume_takes_the_intact_best_copy_of_a_damaged_periodic_step(saved, tmp_path):
    directory = copy_of(saved, tmp_path)
    truncate(data_file(directory / '3'))
    with Checkpointer(directory, keep=3) as checkpointer:
        state, skipped = checkpointer.restore_newest_intact(make_state())
        assert_bitwise_equal(state, make_state(seed=3, step=3))
        assert [str(each.moved_to) for each in skipped] == [str(tmp_path / 'damaged_checkpoints'
                                                                / '3')]
        assert checkpointer.all_steps() == [1, 2, 3] and checkpointer.best_value == 0.5

def test_resume_with_every_checkpoint_damaged_names_each_and_where_it_went(saved, tmp_path):
    directory, aside = copy_of(saved, tmp_path), tmp_path / 'damaged_checkpoints'
    for folder in ('1', '2', '3', 'best/3'):
        (directory / folder / 'default' / '_METADATA').unlink()
    with Checkpointer(directory, keep=3) as checkpointer:
        with pytest.raises(CheckpointError) as error:
            checkpointer.restore_newest_intact(make_state())
        assert checkpointer.all_steps() == []
    moved = '; '.join(f'step {step} (default/_METADATA is missing) was moved to {aside / folder}'
                      for step, folder in ((3, '3'), (3, 'best/3'), (2, '2'), (1, '1')))
    assert str(error.value) == (
        f'Every checkpoint in {directory} is damaged, so training cannot resume: {moved}. '
        'Nothing was deleted; rerunning the same command starts the run from scratch (or use '
        'another --workdir).')
    assert sorted(path.name for path in aside.iterdir()) == ['1', '2', '3', 'best']


def test_read_only_moves_nothing_and_lists_the_intact_steps(saved, tmp_path):
    directory = copy_of(saved, tmp_path)
    truncate(data_file(directory / '3'))
    before = contents(tmp_path)
    with Checkpointer(directory, keep=3, read_only=True) as checkpointer:
        with pytest.raises(DamagedCheckpointError) as error:
            checkpointer.restore_newest_intact(make_state())
        assert checkpointer.intact_steps(make_state(), excluding=error.value.folder) == [1, 2]
        assert checkpointer.intact_steps(make_state()) == [1, 2]  # step 3 is the damaged one
    assert error.value.step == 3 and str(error.value.folder) == str(directory / '3')
    assert contents(tmp_path) == before
