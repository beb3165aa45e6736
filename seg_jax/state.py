"""The training state and its creation on the devices."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from seg_jax import parallel


class TrainState(train_state.TrainState):
    """Parameters, optimiser state and step, plus the BatchNorm running statistics."""
    batch_stats: Any


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       crop_size: tuple[int, int], seed: int,
                       mesh: jax.sharding.Mesh) -> TrainState:
    """Initialises the state directly on the devices, replicated, with no host copy.

    The step counter is a plain int32, as a restored checkpoint's is (``TrainState.create``
    makes a weakly typed one): the jitted step then sees the same types in a new run and a
    resumed one, and compiles to the same program, which a persistent compilation cache
    finds again instead of compiling a second one.
    """
    def init(rng):
        images = jnp.zeros((1, *crop_size, 3), jnp.float32)
        variables = model.init(rng, images, train=False)
        return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                                 batch_stats=variables.get('batch_stats', {})
                                 ).replace(step=jnp.zeros((), jnp.int32))

    return jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(seed))


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         crop_size: tuple[int, int], seed: int,
                         mesh: jax.sharding.Mesh) -> TrainState:
    """The state ``create_train_state`` would make, as shapes, dtypes and shardings only: what
    a checkpoint restores into, on ``mesh`` whatever mesh wrote it. Nothing is computed.

    The sharding is set on every leaf: ``jax.eval_shape`` leaves it out on one device, and
    orbax would then fall back to the writer's device layout.
    """
    shapes = jax.eval_shape(lambda: create_train_state(model, tx, crop_size, seed, mesh))
    sharding = parallel.replicated(mesh)
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=sharding), shapes)
