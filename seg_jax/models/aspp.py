"""Atrous spatial pyramid pooling: the course element and DeepLabv3's, and
the course's best network, a backbone with ASPP as its classifier.

Both are five parallel branches (1x1, three dilated 3x3, image pooling) concatenated and
projected by a 1x1 conv; they differ only in options, so one module serves both. Children are
named like torchvision's ``ASPP`` (``convs/0/0``, ``convs/1/0``, ``convs/4/1``, ``project/0``).

* DeepLabv3: every branch is conv -> BN -> ReLU; the projection is conv -> BN -> ReLU -> dropout.
* Course: the 1x1 branch is a bare conv; the atrous branches may end in dropout; as a classifier
  the projection is a bare 1x1 conv whose output *is* the logits (no BN, no ReLU: the course code
  put BN + ReLU on its logits, which forces them >= 0), as an intermediate feature it is
  conv -> BN -> ReLU.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import ConvBN, check_input, conv, resize_bilinear, scaled


def atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """Rates scale with resolution: (12, 24, 36) at output stride 8, else (6, 12, 18)."""
    return (12, 24, 36) if output_stride == 8 else (6, 12, 18)


class ASPPBranches(nn.Module):
    """torchvision's ``ASPP.convs`` ModuleList; returns the concatenated branch outputs."""
    hidden: int
    rates: Sequence[int]
    bn_on_1x1: bool = True
    branch_dropout: float = 0.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        if self.bn_on_1x1:
            branches = [ConvBN(self.hidden, 1, name='0', **kw)(x, train)]
        else:
            branches = [conv(self.hidden, 1, use_bias=True, name='0', **kw)(x)]
        for i, rate in enumerate(self.rates, start=1):
            y = ConvBN(self.hidden, 3, dilation=rate, name=str(i), **kw)(x, train)
            branches.append(nn.Dropout(self.branch_dropout, deterministic=not train)(y))
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = ConvBN(self.hidden, 1, first_index=1, name=str(len(branches)), **kw)(pooled, train)
        # Bilinear resize of a 1x1 map is a broadcast.
        branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.hidden,)))
        return jnp.concatenate(branches, axis=-1)


class ASPP(nn.Module):
    """ASPP with ``out_channels`` outputs; ``classifier=True`` returns raw logits."""
    out_channels: int
    hidden: int = 256
    rates: Sequence[int] = (6, 12, 18)
    classifier: bool = False
    bn_on_1x1: bool = True
    branch_dropout: float = 0.0
    project_dropout: float = 0.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        y = ASPPBranches(self.hidden, tuple(self.rates), self.bn_on_1x1, self.branch_dropout,
                         name='convs', **kw)(x, train)
        if self.classifier:
            return conv(self.out_channels, 1, use_bias=True, name='project', **kw)(y)
        y = ConvBN(self.out_channels, 1, name='project', **kw)(y, train)
        return nn.Dropout(self.project_dropout, deterministic=not train)(y)


class ResNetASPP(nn.Module):
    """Backbone -> ASPP(C -> classes, h=256) as classifier -> bilinear upsample.

    With ``dual=True`` a second ASPP classifies layer3 (the backbone's ``'aux'`` feature) and
    its logits are added to layer4's: the course's strongest variant at output stride 8.
    """
    backbone: nn.Module
    num_classes: int = 19
    output_stride: int = 8
    dual: bool = True
    aspp_dropout: float = 0.0
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, 'ResNetASPP')
        size = x.shape[1:3]
        features = self.backbone(x, train)
        kw = dict(hidden=scaled(256, self.width), rates=atrous_rates(self.output_stride),
                  classifier=True, bn_on_1x1=False, branch_dropout=self.aspp_dropout,
                  initializer=self.initializer, dtype=self.dtype)
        logits = resize_bilinear(ASPP(self.num_classes, name='aspp', **kw)(
            features['out'], train), size)
        if self.dual:
            logits += resize_bilinear(ASPP(self.num_classes, name='aspp_aux', **kw)(
                features['aux'], train), size)
        return {'out': logits.astype(jnp.float32)}
