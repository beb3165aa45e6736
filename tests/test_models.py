"""Every network of the zoo on tiny inputs: shapes, gradients, BN and dropout modes, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from conftest import CONFIG_NAMES, load_config
from seg_jax.errors import ConfigError, ShapeError
from seg_jax.models import build_model

BATCH, HEIGHT, WIDTH, CLASSES = 2, 64, 128, 19


def tiny_model(name: str, **overrides) -> nn.Module:
    """The network of ``configs/<name>.py`` at 1/8 width."""
    config = load_config(name)
    config.model.width = 0.125
    for field, value in overrides.items():
        config.model[field] = value
    return build_model(config.model)


def images(seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (BATCH, HEIGHT, WIDTH, 3))


def init(model: nn.Module, x: jax.Array):
    # Jitted: one program compiles faster than each initialiser run eagerly; the same numbers.
    return jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.key(1), x)


def eval_logits(model: nn.Module, variables, x: jax.Array) -> jax.Array:
    """Evaluation-mode logits, jitted for the same reason as ``init``."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False)['out'])(variables, x)


def probe_gradients(model, variables, x, probe):
    """Train-mode ``(grads, (outputs, new batch_stats))`` of a random projection of every
    output (so no parameter can cancel out)."""
    @jax.jit
    def run(params, batch_stats):
        def loss_fn(params):
            outputs, updates = model.apply(
                {'params': params, 'batch_stats': batch_stats}, x, train=True,
                mutable=['batch_stats'], rngs={'dropout': jax.random.key(3)})
            loss = sum(jnp.sum(out * probe) for out in outputs.values())
            return loss, (outputs, updates['batch_stats'])
        return jax.grad(loss_fn, has_aux=True)(params)
    return run(variables['params'], variables['batch_stats'])


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_train_step_shapes_gradients_and_batch_stats(name):
    model = tiny_model(name)
    x = images()
    variables = init(model, x)
    probe = jax.random.normal(jax.random.key(2), (BATCH, HEIGHT, WIDTH, CLASSES))

    grads, (outputs, new_stats) = probe_gradients(model, variables, x, probe)
    assert outputs['out'].shape == (BATCH, HEIGHT, WIDTH, CLASSES)
    assert outputs['out'].dtype == jnp.float32
    expected_keys = {'out', 'aux'} if name == 'deeplabv3_r50' else {'out'}
    assert set(outputs) == expected_keys
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(grad)), jax.tree_util.keystr(path)
        assert np.abs(grad).max() > 0, f'no gradient reaches {jax.tree_util.keystr(path)}'
    # Training mode moves every BN running statistic towards the batch statistics...
    old_stats = jax.tree_util.tree_leaves_with_path(variables['batch_stats'])
    for (path, old), new in zip(old_stats, jax.tree_util.tree_leaves(new_stats), strict=True):
        assert not np.allclose(old, new), f'{jax.tree_util.keystr(path)} did not update'
    # ...evaluation mode leaves them alone and returns only the main logits.
    eval_outputs, eval_updates = jax.jit(
        lambda v, x: model.apply(v, x, train=False, mutable=['batch_stats']))(variables, x)
    assert set(eval_outputs) == {'out'}
    jax.tree_util.tree_map(np.testing.assert_array_equal, eval_updates['batch_stats'],
                           variables['batch_stats'])


@pytest.mark.parametrize('name,overrides', [('deeplabv3_r50', {}),
                                            ('resnet_aspp', {'aspp_dropout': 0.5}),
                                            ('unet_aspp', {'aspp_dropout': 0.5})])
def test_dropout_acts_in_training_mode_only(name, overrides):
    model = tiny_model(name, **overrides)
    x = images()
    variables = init(model, x)

    @jax.jit
    def train_logits(key):
        outputs, _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                                 rngs={'dropout': key})
        return outputs['out']

    keys = [jax.random.key(seed) for seed in (0, 1)]
    assert not np.allclose(train_logits(keys[0]), train_logits(keys[1]))
    np.testing.assert_array_equal(train_logits(keys[0]), train_logits(keys[0]))
    # Evaluation needs no dropout key and is deterministic.
    first = eval_logits(model, variables, x)
    np.testing.assert_array_equal(first, eval_logits(model, variables, x))


def test_aspp_classifier_outputs_negative_logits():
    model = tiny_model('resnet_aspp')
    x = images()
    logits = eval_logits(model, init(model, x), x)
    assert float(logits.min()) < 0 < float(logits.max())
    unet_model = tiny_model('unet_aspp')
    logits = eval_logits(unet_model, init(unet_model, x), x)
    assert float(logits.min()) < 0 < float(logits.max())


@pytest.mark.parametrize('name,multiple', [('fcn', 32), ('unet', 16), ('resnet_aspp', 8),
                                           ('deeplabv3_r50', 8), ('resnet_deconv', 32)])
def test_input_not_a_multiple_of_the_output_stride_is_a_clear_error(name, multiple):
    model = tiny_model(name)
    bad = jnp.zeros((1, multiple * 2 + 4, multiple * 3, 3))
    with pytest.raises(ShapeError, match=f'divisible by its output stride {multiple}'):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), bad)
    with pytest.raises(ShapeError, match='NHWC'):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jnp.zeros((multiple, multiple, 3)))


@pytest.mark.parametrize('name', ['fcn', 'deeplabv3_r50'])
def test_bfloat16_compute_keeps_float32_parameters_and_logits(name):
    model = tiny_model(name, compute_dtype='bfloat16')
    x = images()
    variables = init(model, x)
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables))
    assert 'conv_general_dilated' in jaxpr and 'bf16[' in jaxpr
    logits = eval_logits(model, variables, x)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_bfloat16_logits_are_close_to_float32():
    x = images()
    float32 = tiny_model('resnet_aspp')
    variables = init(float32, x)
    reference = eval_logits(float32, variables, x)
    low = eval_logits(tiny_model('resnet_aspp', compute_dtype='bfloat16'), variables, x)
    error = np.abs(np.asarray(low) - np.asarray(reference)).max()
    assert error < 0.05 * np.abs(np.asarray(reference)).max()


@pytest.mark.parametrize('field,value,message', [
    ('name', 'segformer', 'not a known model'),
    ('backbone', 'resnet152', 'not known'),
    ('compute_dtype', 'float16', 'compute_dtype'),
    ('init', 'orthogonal', 'config.model.init'),
    ('output_stride', 4, 'output_stride=4'),
    ('aux_head', True, 'only deeplabv3, fcn_resnet and the mmseg networks have an auxiliary head'),
    ('width', 0.0, 'must be positive'),
])
def test_bad_model_config_is_a_clear_error(field, value, message):
    config = load_config('resnet_aspp')
    config.model[field] = value
    with pytest.raises(ConfigError, match=message):
        model = build_model(config.model)
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize('name,field,value', [
    ('fcn', 'backbone', 'resnet50'),
    ('unet', 'output_stride', 8),
    ('resnet_deconv', 'output_stride', 8),
    ('deeplabv3_r50', 'dual_aspp', True),
    ('unet', 'aspp_dropout', 0.1),
])
def test_fields_a_network_cannot_honour_are_rejected(name, field, value):
    config = load_config(name)
    config.model[field] = value
    with pytest.raises(ConfigError, match=f'does not apply to {config.model.name}'):
        build_model(config.model)


@pytest.mark.parametrize('name', ['resnet_deconv', 'resnet_aspp', 'deeplabv3_r50'])
@pytest.mark.parametrize('backbone', ['resnet18', 'resnet34', 'resnet101', 'vgg16_bn'])
def test_every_backbone_fits_every_network_that_has_one(name, backbone):
    model = tiny_model(name, backbone=backbone)
    x = jax.ShapeDtypeStruct((BATCH, HEIGHT, WIDTH, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    outputs = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                                 rngs={'dropout': jax.random.key(1)})[0], variables, x)
    for out in outputs.values():
        assert out.shape == (BATCH, HEIGHT, WIDTH, CLASSES)


def test_batch_norm_statistics_span_the_global_batch_on_a_data_mesh():
    """Data-parallel jit over 8 devices computes what one device computes on the whole batch."""
    assert jax.device_count() == 8, 'conftest.py sets 8 fake CPU devices'
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    model = tiny_model('resnet_aspp')
    x = jax.random.normal(jax.random.key(0), (8, HEIGHT, WIDTH, 3))
    variables = init(model, x)

    def train_forward(variables, x):
        return model.apply(variables, x, train=True, mutable=['batch_stats'])

    single = jax.jit(train_forward)(variables, x)
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded_x = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
    sharded = jax.jit(train_forward)(jax.device_put(variables, replicated), sharded_x)
    assert sharded[0]['out'].sharding.spec == PartitionSpec('data')
    # Reduction order differs across devices (~3e-4 here); BN over 2-image
    # shards instead of the global batch changes these logits by ~9.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3),
                           single, sharded)


def _count_primitive(jaxpr, name: str) -> int:
    """Occurrences of primitive ``name`` in ``jaxpr`` and every jaxpr nested in it."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += _count_primitive(sub.jaxpr, name)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += _count_primitive(sub, name)
    return count


# ResNet-50: 3 + 4 + 6 + 3 bottlenecks. U-Net: five encoder stages and four fuses, of which
# unet_aspp replaces the last two by ASPPs, which are not wrapped.
@pytest.mark.parametrize('name,blocks', [('deeplabv3_r50', 16), ('resnet_deconv', 16),
                                         ('unet', 9), ('unet_aspp', 7)])
@pytest.mark.parametrize('remat', [False, True])
def test_remat_wraps_every_repeated_block(name, blocks, remat):
    model = tiny_model(name, remat=remat)
    x = jax.ShapeDtypeStruct((BATCH, HEIGHT, WIDTH, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: init(model, x), x)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(
        v, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(0)}))(
            variables, x)
    # jax.checkpoint's primitive is 'remat2'; the count also sees remat nested in remat.
    assert _count_primitive(jaxpr.jaxpr, 'remat2') == (blocks if remat else 0)


@pytest.mark.parametrize('name', ['deeplabv3_r50', 'unet'])
def test_remat_keeps_parameters_outputs_gradients_and_batch_stats(name):
    """Recomputing activations changes memory, not the network: same names, same numbers."""
    x = images()
    plain, rematted = tiny_model(name), tiny_model(name, remat=True)
    variables = init(plain, x)
    remat_variables = init(rematted, x)
    # The same tree (checkpoints and torchvision weights map by name), even the same init.
    assert (jax.tree_util.tree_structure(remat_variables)
            == jax.tree_util.tree_structure(variables))
    jax.tree_util.tree_map(np.testing.assert_array_equal, remat_variables, variables)
    if name == 'deeplabv3_r50':
        assert 'kernel' in variables['params']['backbone']['layer1']['0']['conv1']
    probe = jax.random.normal(jax.random.key(2), (BATCH, HEIGHT, WIDTH, CLASSES))

    (grads, outputs_stats), (remat_grads, remat_outputs_stats) = (
        probe_gradients(plain, variables, x, probe),
        probe_gradients(rematted, variables, x, probe))
    assert (jax.tree_util.tree_structure(remat_grads)
            == jax.tree_util.tree_structure(grads))
    # Logits and BN statistics come out of the same forward pass (bit-equal on XLA:CPU).
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           remat_outputs_stats, outputs_stats)
    # The recomputing backward pass fuses and so sums differently: ResNet gradients move by
    # up to ~3e-6 of their leaf's largest entry (U-Net ones are bit-equal on XLA:CPU).
    for (path, remat_grad), grad in zip(jax.tree_util.tree_leaves_with_path(remat_grads),
                                        jax.tree_util.tree_leaves(grads), strict=True):
        np.testing.assert_allclose(remat_grad, grad, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(grad).max()),
                                   err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('name,overrides', [('fcn', {}),
                                            ('resnet_aspp', {'backbone': 'vgg16_bn'})])
def test_remat_is_rejected_where_no_block_is_wrapped(name, overrides):
    config = load_config(name)
    for field, value in {'remat': True, **overrides}.items():
        config.model[field] = value
    with pytest.raises(ConfigError, match=r'config\.model\.remat=True does not apply to '
                       rf'{config.model.name}: .* no .*blocks to recompute'):
        build_model(config.model)
    config.model.remat = False
    build_model(config.model)
