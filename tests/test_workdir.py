"""The run folder's contract: which configs may continue in a workdir, and runs written by
earlier versions."""

import json
import shutil

import pytest

from conftest import REPO
from seg_jax import evaluate, train, workdir
from seg_jax.history import read_history
from test_train import tiny_config


def test_fields_added_since_a_run_was_written_compare_at_their_defaults(tmp_path):
    """A workdir of an older version lacks today's fields (say eval.scales): it is the same
    experiment, but a real change beside them is still found."""
    from configs import default
    stored = workdir.resolved_config(default.get_config())
    del stored['eval']['scales'], stored['predict']
    (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(stored))
    assert workdir.config_changes(str(tmp_path), default.get_config()) == []
    changed = default.get_config()
    changed.model.width = 0.5
    assert workdir.config_changes(str(tmp_path), changed) == ['model.width: 1.0 -> 0.5']


# A run written by seg_jax at commit d0ed8bf, the last version whose checkpoints orbax's
# StandardCheckpointHandler wrote (``python -m seg_jax.main --config tests/tiny_config.py`` with
# the overrides of ``old_run_config``, 8 fake CPU devices): config.json, history.jsonl,
# eval/validation_2.json and its checkpoints (step 2 and the best copy of it). Its plots and
# TensorBoard events are left out; they are only ever written, never read back.
OLD_RUN = REPO / 'tests' / 'data' / 'workdir_d0ed8bf'


def old_run_config(data_dir: str, steps: int):
    config = tiny_config(data_dir, steps)
    config.model.width = 0.03125
    config.data.synthetic.update(num_train=8, num_val=2)
    config.eval_every_steps = config.checkpoint_every_steps = 2
    config.keep_checkpoints = 1
    return config


def test_a_run_written_before_the_checkpoint_handler_change_evaluates_and_resumes(tmp_path):
    assert 'StandardCheckpointHandler' in (
        OLD_RUN / 'checkpoints' / '2' / '_CHECKPOINT_METADATA').read_text()
    run = shutil.copytree(OLD_RUN, tmp_path / 'run')
    data_dir = str(tmp_path / 'data')  # the same synthetic images, drawn again
    recorded = json.loads((run / 'eval' / 'validation_2.json').read_text())
    metrics = evaluate.evaluate_checkpoint(old_run_config(data_dir, steps=2), str(run))
    # The restored weights score what the run measured when it trained them.
    assert metrics['miou'] == pytest.approx(recorded['miou'], rel=1e-4)
    assert metrics['pixel_accuracy'] == pytest.approx(recorded['pixel_accuracy'], rel=1e-4)
    state = train.train_and_evaluate(old_run_config(data_dir, steps=4), str(run))
    assert int(state.step) == 4
    assert [e['step'] for e in read_history(str(run / 'history.jsonl'))
            if e['kind'] == 'train'] == [2, 4]  # step 2 from the old run, step 4 resumed
