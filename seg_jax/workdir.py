"""The run folder's contract: what a workdir holds and whether a config may continue in it.

    workdir/config.json        the resolved config of the run (a replaced one is kept as
                               config.replaced_<n>.json)
    workdir/checkpoints/       orbax checkpoints (``seg_jax.checkpoints``)
    workdir/history.jsonl ...  reports (``seg_jax.history``, ``seg_jax.figures``)

A workdir is one experiment. Training continues in it only with the config it was started
with, except the fields that cannot change what is learned (``CHANGEABLE_FIELDS``), and
evaluation restores its checkpoints only into a model of the same parameter shapes
(``PARAMETER_SHAPING_FIELDS``). A config.json written by an older seg_jax lacks the fields added
since; it is read on top of today's defaults, so those fields compare (and build) at the values
the old run had implicitly.
"""

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from seg_jax.errors import CheckpointError, ConfigError, first_few
from seg_jax.files import write_atomically

CONFIG_FILE = 'config.json'
CHECKPOINT_FOLDER = 'checkpoints'
# Fields a run may change when it continues in its workdir: its length and reporting cadence,
# where the data lives, what --mode benchmark times and --mode predict / export write, and whether
# it skips bad steps or examples (to continue a run that stopped on one), and whether a fresh start
# requires pretrained weights (a resumed run has its own). Anything else would mix experiments.
CHANGEABLE_FIELDS = ('num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
                     'checkpoint_every_steps', 'keep_checkpoints', 'allow_config_change',
                     'skip_nonfinite_steps', 'data.skip_bad_examples', 'data.dir',
                     'data.manual_dir', 'data.tfds_dir', 'benchmark', 'predict', 'export',
                     'eval.export_dir', 'model.pretrained_required')
# The model fields that shape the parameters: a checkpoint restores only into the same ones.
# (Others may differ at evaluation: output_stride, compute_dtype, remat, pretrained, ...)
PARAMETER_SHAPING_FIELDS = ('name', 'backbone', 'num_classes', 'width', 'aux_head', 'dual_aspp')


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINT_FOLDER)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: arrays become lists and NaN / inf become None, since
    strict JSON readers (and ``json.dumps(allow_nan=False)``) reject NaN."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: Any, indent: int | None = None) -> str:
    """Strict JSON of ``value`` (``json_safe`` first)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def resolved_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as ``config.json`` holds it: plain JSON types, tuples as lists."""
    return json_safe(json.loads(config.to_json_best_effort()))


def stored_config(workdir: str) -> dict[str, Any] | None:
    """The ``config.json`` of the run in ``workdir``; None for a workdir without one."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def with_defaults(stored: dict[str, Any]) -> ml_collections.ConfigDict:
    """A stored config on top of today's ``configs/default.py``: a run written before a field
    existed reads that field at its default (which reproduces what the older code did)."""
    from configs import default  # the package installed beside seg_jax
    config = default.get_config()
    with config.unlocked():
        config.update(stored)
    return config


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
    """``{'model': {'width': 1}}`` -> ``{'model.width': 1}``."""
    if isinstance(tree, Mapping):
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(value, f'{prefix}{key}.'))
        return flat
    return {prefix[:-1]: tree}


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                ignored: tuple[str, ...] = ()) -> list[str]:
    """``'field: old -> new'`` for every differing leaf of two nested mappings, in field order,
    except fields equal to or under one of the ``ignored`` prefixes. Also used where the
    processes of one job must agree (``seg_jax.distributed``)."""
    old, new = flatten(old), flatten(new)
    return [f'{key}: {old.get(key)!r} -> {new.get(key)!r}'
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
            and not any(key == field or key.startswith(field + '.') for field in ignored)]


def config_changes(workdir: str, config: ml_collections.ConfigDict,
                   ignored: tuple[str, ...] = CHANGEABLE_FIELDS) -> list[str]:
    """``'field: old -> new'`` for each field where ``config`` differs from the run already in
    ``workdir`` (none for a new workdir), except fields matching the ``ignored`` prefixes.
    Fields the stored config lacks (added to seg_jax since) compare at their defaults."""
    stored = stored_config(workdir)
    if stored is None:
        return []
    return differences(resolved_config(with_defaults(stored)), resolved_config(config), ignored)


def check_can_continue(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuses to train ``config`` in a workdir that holds a run of another config (beyond the
    changeable fields), unless ``config.allow_config_change``."""
    changes = config_changes(workdir, config)
    if changes and not config.allow_config_change:
        raise ConfigError(
            f'{workdir} holds a run with another config ({first_few(changes)}). Continuing it '
            'would mix two experiments in one workdir: use the config it was started with, '
            'another --workdir, or --config.allow_config_change=True to continue with this one '
            '(the old config.json is kept beside it).')


def check_trained_model(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses, in one line naming the fields and the flags that fix it, a model config other
    than the one ``workdir``'s run was trained with (its config.json), e.g. another
    num_classes; the leaf-by-leaf check of ``checkpoints`` stays as the last line of defence."""
    trained = (stored_config(workdir) or {}).get('model')
    if trained is None:
        return
    configured = resolved_config(config)['model']
    changed = [field for field in PARAMETER_SHAPING_FIELDS
               if field in trained and trained[field] != configured.get(field)]
    if changed:
        raise CheckpointError(
            f'The checkpoints in {workdir} were trained with another model: '
            + '; '.join(f'model.{field} is {trained[field]!r} there but {configured.get(field)!r} '
                        'in this config' for field in changed)
            + '. Evaluate with the config it was trained with, e.g. '
            + ' '.join(f'--config.model.{field}={trained[field]}' for field in changed) + '.')


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """``config.json``: the resolved config (tuples become lists, NaN becomes null). A
    different config already there is kept as ``config.replaced_<n>.json`` (n = 1, 2, ...)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if config_changes(workdir, config, ignored=()):
        replaced = 1
        while os.path.exists(os.path.join(workdir, f'config.replaced_{replaced}.json')):
            replaced += 1
        os.replace(path, os.path.join(workdir, f'config.replaced_{replaced}.json'))
    write_atomically(path, to_json(resolved_config(config), indent=2).encode())
