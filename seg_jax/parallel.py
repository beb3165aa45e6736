"""Data parallelism: one ``data`` mesh axis over every device of every process.

Parameters are replicated, batches are sharded along ``data``; ``jax.jit`` then runs one program
over all devices (what ``pmap`` used to do) and reductions such as BatchNorm statistics, the
loss mean and the confusion matrix span the global batch with no explicit collectives.
"""

import collections
import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seg_jax.errors import ConfigError

DATA_AXIS = 'data'


def data_mesh() -> Mesh:
    """A 1-D mesh over every device of every process."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``data`` axis, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's numpy batch -> global arrays sharded over the mesh.

    Only numeric fields go to the devices; strings (image ids) stay on the host.
    """
    sharding = batch_sharded(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, value)
            for name, value in host_batch.items() if value.dtype.kind in 'biuf'}


def local_rows(array: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded global array that this process holds, in batch order: the
    inverse of ``global_batch`` for one field, with no transfer between processes."""
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])


def prefetch_to_devices(batches: Iterable[dict[str, np.ndarray]], mesh: Mesh,
                        size: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Keeps ``size`` batches in flight to the devices, so transfers overlap the step."""
    queue = collections.deque()
    iterator = iter(batches)
    for batch in itertools.islice(iterator, size):
        queue.append(global_batch(batch, mesh))
    while queue:
        yield queue.popleft()
        for batch in itertools.islice(iterator, 1):
            queue.append(global_batch(batch, mesh))


def check_batch_size(batch_size: int, field: str) -> None:
    """A global batch must split evenly over the devices (and so over the processes)."""
    if batch_size < 1 or batch_size % jax.device_count():
        devices = jax.device_count()
        suggestion = max(1, round(batch_size / devices)) * devices
        raise ConfigError(f'{field}={batch_size} must be a positive multiple of the number of '
                          f'devices, {devices}, to split evenly over them; set '
                          f'--{field}={suggestion}.')
