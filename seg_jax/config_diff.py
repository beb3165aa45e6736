"""What differs between two configs, field by field, for errors that name the fields.

Used where two configs must agree: the processes of one job (``seg_jax.distributed``) and a run
continuing in a workdir that holds another run's ``config.json`` (``seg_jax.train``).
"""

from collections.abc import Mapping
from typing import Any


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
    except fields equal to or under one of the ``ignored`` prefixes."""
    old, new = flatten(old), flatten(new)
    return [f'{key}: {old.get(key)!r} -> {new.get(key)!r}'
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
            and not any(key == field or key.startswith(field + '.') for field in ignored)]
