"""Losses against independent numpy computations, void handling, weights and config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seg_jax import losses
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import ConfigError, DataError, ShapeError

NUM_CLASSES = 4
WEIGHTS = np.array([0.5, 2.0, 1.0, 3.0], np.float32)


def make_batch(seed: int = 0, void_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Random (2, 5, 7, 4) logits and labels with about ``void_fraction`` void pixels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(2, 5, 7, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=(2, 5, 7)).astype(np.int32)
    labels[rng.random(labels.shape) < void_fraction] = IGNORE_LABEL
    assert np.any(labels == IGNORE_LABEL) and np.any(labels != IGNORE_LABEL)
    return logits, labels


def loss_config(name: str, **overrides) -> ml_collections.ConfigDict:
    fields = dict(name=name, class_weights=None, dice_weight=1.0, dice_variant='per_class',
                  aux_weight=0.4, normalizer='valid')
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def numpy_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def numpy_cross_entropy(logits, labels, weights=None) -> float:
    valid = labels != IGNORE_LABEL
    probabilities = numpy_softmax(logits)[valid]
    targets = labels[valid]
    per_pixel = -np.log(probabilities[np.arange(len(targets)), targets])
    pixel_weights = np.ones_like(per_pixel) if weights is None else weights[targets]
    return float(np.sum(pixel_weights * per_pixel) / np.sum(pixel_weights))


def numpy_dice(logits, labels, variant) -> float:
    valid = labels != IGNORE_LABEL
    p = numpy_softmax(logits)[valid]
    t = np.eye(NUM_CLASSES)[labels[valid]]
    if variant == 'global':
        return float(1 - (2 * np.sum(p * t) + 1) / (np.sum(p ** 2) + np.sum(t ** 2) + 1))
    per_class = [(2 * np.sum(p[:, c] * t[:, c]) + 1) / (np.sum(p[:, c]) + np.sum(t[:, c]) + 1)
                 for c in range(NUM_CLASSES)]
    return float(1 - np.mean(per_class))


@pytest.mark.parametrize('weights', [None, WEIGHTS])
def test_cross_entropy_matches_numpy(weights):
    logits, labels = make_batch()
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, weights),
                               numpy_cross_entropy(logits, labels, weights), rtol=1e-5)


def test_class_weights_change_cross_entropy_as_predicted():
    logits, labels = make_batch()
    plain = losses.cross_entropy(logits, labels)
    weighted = losses.cross_entropy(logits, labels, WEIGHTS)
    assert abs(float(weighted) - float(plain)) > 1e-3
    # A zero weight removes a class: the loss is the plain mean over the other classes' pixels.
    only_class_1 = np.array([0, 1, 0, 0], np.float32)
    labels_1 = np.where(labels == 1, 1, IGNORE_LABEL)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, only_class_1),
                               numpy_cross_entropy(logits, labels_1), rtol=1e-5)


def test_cross_entropy_gradient_matches_numpy():
    """d(mean CE)/d(logits) = (softmax - one_hot) / valid_count at valid pixels, 0 at void."""
    logits, labels = make_batch()
    valid = labels != IGNORE_LABEL
    expected = (numpy_softmax(logits) - np.eye(NUM_CLASSES)[np.where(valid, labels, 0)])
    expected = expected * valid[..., None] / valid.sum()
    gradient = jax.grad(losses.cross_entropy)(jnp.asarray(logits), labels)
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


@pytest.mark.parametrize('loss_fn', [
    losses.cross_entropy,
    lambda logits, labels: losses.cross_entropy(logits, labels, WEIGHTS),
    lambda logits, labels: losses.dice_loss(logits, labels, 'per_class'),
    lambda logits, labels: losses.dice_loss(logits, labels, 'global'),
], ids=['ce', 'weighted_ce', 'dice_per_class', 'dice_global'])
def test_void_pixels_are_excluded(loss_fn):
    logits, labels = make_batch()
    void = labels == IGNORE_LABEL
    changed = logits.copy()
    changed[void] = np.random.default_rng(1).normal(scale=10.0, size=changed[void].shape)
    np.testing.assert_allclose(loss_fn(changed, labels), loss_fn(logits, labels), rtol=1e-6)
    gradient = np.asarray(jax.grad(loss_fn)(jnp.asarray(logits), labels))
    assert np.all(gradient[void] == 0)
    assert np.any(gradient[~void] != 0)


@pytest.mark.parametrize('loss_fn', [
    losses.cross_entropy,
    lambda logits, labels: losses.cross_entropy(logits, labels, WEIGHTS),
    lambda logits, labels: losses.dice_loss(logits, labels, 'per_class'),
    lambda logits, labels: losses.dice_loss(logits, labels, 'global'),
    lambda logits, labels: losses.segmentation_loss(
        {'out': logits, 'aux': logits}, labels, loss_config('ce_dice'))[0],
], ids=['ce', 'weighted_ce', 'dice_per_class', 'dice_global', 'ce_dice_aux'])
def test_all_void_batch_gives_zero_and_finite_gradient(loss_fn):
    logits, _ = make_batch()
    labels = np.full(logits.shape[:3], IGNORE_LABEL, np.int32)
    value, gradient = jax.value_and_grad(loss_fn)(jnp.asarray(logits), labels)
    assert float(value) == 0.0
    assert np.all(np.isfinite(gradient))


@pytest.mark.parametrize('variant', ['per_class', 'global'])
def test_dice_matches_numpy(variant):
    logits, labels = make_batch()
    np.testing.assert_allclose(losses.dice_loss(logits, labels, variant),
                               numpy_dice(logits, labels, variant), rtol=1e-5)


@pytest.mark.parametrize('variant', ['per_class', 'global'])
def test_dice_gradient_finite_when_class_absent(variant):
    """Class 3 is neither labelled nor predicted (its probability underflows to exactly 0)."""
    logits, labels = make_batch()
    labels = np.where(labels == 3, 0, labels)
    logits[..., 3] = -1e4
    assert np.all(numpy_softmax(logits)[..., 3] == 0)
    value, gradient = jax.value_and_grad(losses.dice_loss)(jnp.asarray(logits), labels, variant)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(value, numpy_dice(logits, labels, variant), rtol=1e-5)


def test_dice_per_class_counts_absent_class_as_perfect_when_not_predicted():
    """An absent, unpredicted class scores dice 1; predicting it lowers the score."""
    logits, labels = make_batch()
    labels = np.where(labels == 3, 0, labels)
    logits[..., 3] = -1e4
    per_class_present = losses.dice_loss(logits, labels)
    logits[..., 3] = 0.0
    assert float(losses.dice_loss(logits, labels)) > float(per_class_present) + 1e-3


def test_dice_rejects_unknown_variant():
    logits, labels = make_batch()
    with pytest.raises(ValueError, match="'soft'.*per_class"):
        losses.dice_loss(logits, labels, 'soft')


def test_shape_mismatch_is_named():
    logits, labels = make_batch()
    with pytest.raises(ShapeError, match='do not fit labels'):
        losses.cross_entropy(logits, labels[:, :4])
    with pytest.raises(ShapeError, match='class_weights'):
        losses.cross_entropy(logits, labels, WEIGHTS[:3])


def test_course_weights():
    counts = np.array([1000, 40, 250, 10, 90], np.int64)
    weights = losses.class_weights(counts, 'course')
    assert weights.dtype == np.float32 and weights.shape == (5,)
    assert weights[3] == 5.0
    np.testing.assert_allclose(weights, 5 * np.sqrt(10) / np.sqrt(counts), rtol=1e-6)
    np.testing.assert_allclose(weights[0], 0.5, rtol=1e-6)


def test_median_frequency_weights():
    counts = np.array([1000, 40, 250, 10, 90], np.int64)
    weights = losses.class_weights(counts, 'median_frequency')
    frequencies = counts / counts.sum()
    np.testing.assert_allclose(weights, np.median(frequencies) / frequencies, rtol=1e-6)
    assert weights[4] == pytest.approx(1.0)  # 90 is the median count
    assert weights.dtype == np.float32


@pytest.mark.parametrize('method', ['course', 'median_frequency'])
def test_zero_count_classes_get_the_largest_weight(method):
    counts = np.array([1000, 0, 250, 10, 0, 90], np.int64)
    weights = losses.class_weights(counts, method)
    present = losses.class_weights(counts[counts > 0], method)
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)
    np.testing.assert_allclose(weights[counts > 0], present)
    np.testing.assert_allclose(weights[counts == 0], present.max())


def test_class_weights_errors():
    with pytest.raises(ConfigError, match='config.loss.class_weights'):
        losses.class_weights(np.ones(4), 'inverse')
    with pytest.raises(DataError, match='no labelled pixels'):
        losses.class_weights(np.zeros(4, np.int64), 'course')
    with pytest.raises(DataError, match='non-negative'):
        losses.class_weights(np.array([3, -1, 2]), 'course')


def test_resolve_class_weights():
    counts = np.array([1000, 40, 250, 10], np.int64)
    calls = []

    def pixel_counts():
        calls.append(1)
        return counts

    assert losses.resolve_class_weights(loss_config('ce'), pixel_counts) is None
    explicit = losses.resolve_class_weights(
        loss_config('weighted_ce', class_weights=[1, 2, 3.5, 4]), pixel_counts, NUM_CLASSES)
    np.testing.assert_array_equal(explicit, [1, 2, 3.5, 4])
    assert explicit.dtype == np.float32
    assert not calls
    for method in ('course', 'median_frequency'):
        resolved = losses.resolve_class_weights(
            loss_config('weighted_ce', class_weights=method), pixel_counts)
        np.testing.assert_array_equal(resolved, losses.class_weights(counts, method))
    assert len(calls) == 2


@pytest.mark.parametrize('bad, message', [
    ([1.0, 2.0, 3.0], r'shape \(3,\), not \(4,\)'),
    ([1.0, 2.0, 0.0, 1.0], 'not positive'),
    ([1.0, -2.0, 1.0, 1.0], 'not positive'),
    ([1.0, float('nan'), 1.0, 1.0], 'not positive and finite'),
    (['a', 'b', 'c', 'd'], 'not a list of numbers'),
])
def test_resolve_class_weights_rejects_bad_lists(bad, message):
    config = loss_config('weighted_ce', class_weights=bad)
    with pytest.raises(ConfigError, match=message) as error:
        losses.resolve_class_weights(config, lambda: None, NUM_CLASSES)
    assert 'config.loss.class_weights' in str(error.value)
    assert '4 positive numbers' in str(error.value)


def test_ce_dice_is_ce_plus_lambda_dice():
    logits, labels = make_batch()
    config = loss_config('ce_dice', dice_weight=0.7, dice_variant='global')
    total, terms = losses.segmentation_loss({'out': logits}, labels, config, WEIGHTS)
    expected = (numpy_cross_entropy(logits, labels, WEIGHTS)
                + 0.7 * numpy_dice(logits, labels, 'global'))
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert set(terms) == {'loss', 'main', 'ce', 'dice'}
    np.testing.assert_allclose(terms['ce'], numpy_cross_entropy(logits, labels, WEIGHTS),
                               rtol=1e-5)


@pytest.mark.parametrize('name, main_loss', [
    ('ce', lambda logits, labels: numpy_cross_entropy(logits, labels)),
    ('dice', lambda logits, labels: numpy_dice(logits, labels, 'per_class')),
])
def test_aux_term_is_weighted_and_absent_without_aux_output(name, main_loss):
    logits, labels = make_batch()
    aux_logits, _ = make_batch(seed=5)
    config = loss_config(name, aux_weight=0.25)
    total, terms = losses.segmentation_loss({'out': logits, 'aux': aux_logits}, labels, config)
    np.testing.assert_allclose(terms['main'], main_loss(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(terms['aux'], main_loss(aux_logits, labels), rtol=1e-5)
    np.testing.assert_allclose(total, terms['main'] + 0.25 * terms['aux'], rtol=1e-6)
    assert terms['loss'] is total
    total_without, terms_without = losses.segmentation_loss({'out': logits}, labels, config)
    assert 'aux' not in terms_without
    np.testing.assert_allclose(total_without, main_loss(logits, labels), rtol=1e-5)


def test_weighted_ce_uses_the_weights():
    logits, labels = make_batch()
    total, _ = losses.segmentation_loss({'out': logits}, labels,
                                        loss_config('weighted_ce', class_weights='course'),
                                        WEIGHTS)
    np.testing.assert_allclose(total, numpy_cross_entropy(logits, labels, WEIGHTS), rtol=1e-5)


def test_segmentation_loss_under_jit_and_grad():
    logits, labels = make_batch()
    config = loss_config('ce_dice', class_weights='course', dice_weight=0.5)
    weights = jnp.asarray(WEIGHTS)

    @jax.jit
    def loss_and_grad(logits, aux_logits, labels):
        def loss_fn(logits, aux_logits):
            return losses.segmentation_loss({'out': logits, 'aux': aux_logits}, labels, config,
                                            weights)
        return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(logits, aux_logits)

    (total, terms), (gradient, aux_gradient) = loss_and_grad(logits, logits * 0.5, labels)
    eager_total, _ = losses.segmentation_loss({'out': logits, 'aux': logits * 0.5}, labels,
                                              config, WEIGHTS)
    np.testing.assert_allclose(total, eager_total, rtol=1e-5)
    assert set(terms) == {'loss', 'main', 'ce', 'dice', 'aux'}
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)
    assert np.all(np.isfinite(aux_gradient)) and np.any(aux_gradient != 0)


@pytest.mark.parametrize('overrides, message', [
    (dict(name='focal'), r"config.loss.name='focal' is not known; use one of \['ce'"),
    (dict(dice_variant='soft'), r"config.loss.dice_variant='soft' is not known"),
    (dict(name='weighted_ce', class_weights='inverse'),
     r"config.loss.class_weights='inverse' is not known; use one of \['course'"),
    (dict(name='weighted_ce'), 'needs config.loss.class_weights'),
    (dict(name='ce', class_weights='course'), 'does not use class weights'),
    (dict(aux_weight=-0.4), 'config.loss.aux_weight=-0.4 must be a non-negative number'),
    (dict(dice_weight='1'), "config.loss.dice_weight='1' must be a non-negative number"),
    (dict(normalizer='pixels'), r"config.loss.normalizer='pixels' is not known; use one of "
                                r"\['valid', 'all'\]"),
    (dict(name='dice', normalizer='all'), "which config.loss.name='dice' does not have"),
])
def test_bad_loss_configs_raise_config_error(overrides, message):
    config = loss_config(**{'name': 'ce', **overrides})
    with pytest.raises(ConfigError, match=message):
        losses.check_loss_config(config)
    logits, labels = make_batch()
    with pytest.raises(ConfigError, match=message):
        losses.segmentation_loss({'out': logits}, labels, config)


@pytest.mark.parametrize('weights', [None, WEIGHTS])
def test_normalizer_all_divides_by_every_pixel_as_mmsegmentation(weights):
    # mmseg's cross_entropy with avg_non_ignore=False: F.cross_entropy(reduction='none',
    # ignore_index=255) gives w[y] * ce on labelled pixels and 0 on void ones, averaged over
    # all N * H * W pixels.
    logits, labels = make_batch()
    probabilities = numpy_softmax(logits)
    valid = labels != IGNORE_LABEL
    safe = np.where(valid, labels, 0)
    per_pixel = -np.log(np.take_along_axis(probabilities, safe[..., None], -1)[..., 0])
    pixel_weights = valid * (1.0 if weights is None else np.asarray(weights)[safe])
    expected = np.sum(pixel_weights * per_pixel) / labels.size
    ours = losses.cross_entropy(logits, labels, weights, normalizer='all')
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
    # ...which is the 'valid' mean scaled by the labelled share of the batch.
    by_valid = losses.cross_entropy(logits, labels, weights)
    np.testing.assert_allclose(float(ours), float(by_valid) * pixel_weights.sum() / labels.size,
                               rtol=1e-5)
    config = loss_config('ce' if weights is None else 'weighted_ce', normalizer='all',
                         class_weights=None if weights is None else list(weights))
    total, _ = losses.segmentation_loss({'out': logits}, labels, config,
                                        None if weights is None else np.asarray(weights))
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_segmentation_loss_checks_weights_array_against_name():
    logits, labels = make_batch()
    config = loss_config('weighted_ce', class_weights='course')
    with pytest.raises(ConfigError, match='resolve_class_weights'):
        losses.segmentation_loss({'out': logits}, labels, config)
    with pytest.raises(ConfigError, match='does not use class weights'):
        losses.segmentation_loss({'out': logits}, labels, loss_config('dice'), WEIGHTS)


def test_good_loss_configs_pass():
    for name in losses.LOSS_NAMES:
        weights = 'median_frequency' if name == 'weighted_ce' else None
        losses.check_loss_config(loss_config(name, class_weights=weights))
    losses.check_loss_config(loss_config('ce_dice', class_weights=[1.0, 2.0], dice_weight=0))
