"""``--mode summary``: what the configured network is and costs, without running it.

Parameters come from ``jax.eval_shape`` of ``init`` (no memory is allocated for them) and FLOPs
from XLA's cost analysis of the lowered forward pass (nothing is compiled or executed), so the
summary of a full-size DeepLabv3 takes seconds on a laptop.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seg_jax.data.crops import check_crop_size
from seg_jax.models import build_model


def abstract_variables(model: nn.Module, image_shape: tuple[int, ...]) -> Any:
    """The variables ``model.init`` would create for NHWC ``image_shape``, as shapes only."""
    images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    return jax.eval_shape(lambda rng, x: model.init(rng, x, train=False),
                          jax.random.key(0), images)


def count_parameters(variables: Any) -> int:
    """Number of trainable scalars (the ``params`` collection; BN statistics excluded)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables['params']))


def forward_flops(model: nn.Module, variables: Any, image_shape: tuple[int, ...]) -> int:
    """FLOPs of one evaluation-mode forward pass, from XLA's cost analysis of the lowered HLO.

    XLA counts a multiply-add as two FLOPs and skips taps that fall on convolution padding.
    """
    images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images)
    return int(lowered.cost_analysis()['flops'])


def model_summary(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Name, parameter count, forward FLOPs per image, output shape and stride of the model."""
    height, width = check_crop_size(config.data.crop_size)
    model = build_model(config.model)
    image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    variables = abstract_variables(model, image.shape)
    outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, image)
    return {
        'model': config.model.name,
        'backbone': config.model.backbone,
        'parameters': count_parameters(variables),
        'flops_per_image': forward_flops(model, variables, image.shape),
        'input_shape': list(image.shape),
        'output_shape': list(outputs['out'].shape),
        'output_stride': model.output_stride,
        'compute_dtype': config.model.compute_dtype,
    }
