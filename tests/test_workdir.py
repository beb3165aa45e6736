"""The run folder's contract: which configs may continue in a workdir, and old configs."""

import json

from seg_jax import workdir


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
