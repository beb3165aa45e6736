"""The confusion matrix against direct counts; the metrics against cityscapesscripts' evaluation."""

import copy
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cityscapes_eval
from PIL import Image

from seg_jax import metrics
from seg_jax.data.labels import (CLASS_NAMES, COURSE_CLASSES, IGNORE_LABEL, LABEL_ID_TO_TRAIN_ID,
                                 LABEL_IDS, NUM_CLASSES, NUM_LABEL_IDS, TRAIN_ID_TO_LABEL_ID)

C = NUM_CLASSES


def numpy_confusion(predictions: np.ndarray, labels: np.ndarray,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Pixel-by-pixel reference count: any label outside 0..C-1 goes to the void row C."""
    if mask is not None:
        predictions, labels = predictions[mask], labels[mask]
    rows = np.where((labels >= 0) & (labels < C), labels, C).ravel()
    confusion = np.zeros((C + 1, C), np.int64)
    np.add.at(confusion, (rows, predictions.ravel()), 1)
    return confusion


def random_train_ids(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Train ids with ~25% void (255) and a few out-of-range values (19, 100, -1)."""
    labels = rng.integers(0, C, shape, dtype=np.int32)
    labels[rng.random(shape) < 0.25] = IGNORE_LABEL
    out_of_range = rng.random(shape) < 0.03
    labels[out_of_range] = rng.choice([C, 100, -1], out_of_range.sum())
    return labels


@pytest.mark.parametrize('with_mask', [False, True])
def test_confusion_matrix_counts_every_pixel_like_numpy_under_jit(with_mask):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 8, 12, C)).astype(np.float32)
    labels = random_train_ids(rng, (4, 8, 12))
    mask = np.array([True, False, True, False]) if with_mask else None

    @jax.jit
    def count(logits, labels, mask):
        return metrics.confusion_matrix(metrics.predictions_from_logits(logits), labels, mask)

    confusion = count(logits, labels, mask)
    assert confusion.shape == (C + 1, C) and confusion.dtype == jnp.int32
    expected = numpy_confusion(np.argmax(logits, axis=-1), labels, mask)
    np.testing.assert_array_equal(confusion, expected)
    real_pixels = (2 if with_mask else 4) * 8 * 12
    assert int(confusion.sum()) == real_pixels
    assert int(confusion[C].sum()) == int((expected[C]).sum()) > 0


def test_masked_examples_count_nothing_whatever_they_hold():
    rng = np.random.default_rng(1)
    predictions = rng.integers(0, C, (3, 6, 6), dtype=np.int32)
    labels = random_train_ids(rng, (3, 6, 6))
    mask = np.array([True, True, False])
    scrambled = predictions.copy()
    scrambled[2] = (scrambled[2] + 1) % C
    first = metrics.confusion_matrix(predictions, labels, mask)
    second = metrics.confusion_matrix(scrambled, labels, mask)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, metrics.confusion_matrix(predictions[:2], labels[:2]))


def test_out_of_range_predictions_are_credited_to_no_class():
    labels = np.array([[[0, 1, 255, 2]]], np.int32)
    predictions = np.array([[[0, -1, C, 300]]], np.int32)
    expected = np.zeros((C + 1, C), np.int32)
    expected[0, 0] = 1
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels), expected)


def test_confusion_matrix_on_a_batch_sharded_over_eight_devices():
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    rng = np.random.default_rng(2)
    predictions = rng.integers(0, C, (8, 4, 6), dtype=np.int32)
    labels = random_train_ids(rng, (8, 4, 6))
    mask = np.arange(8) < 5
    confusion = jax.jit(metrics.confusion_matrix)(*jax.device_put((predictions, labels, mask),
                                                                  sharding))
    np.testing.assert_array_equal(confusion, numpy_confusion(predictions, labels, mask))


def write_png(path, array: np.ndarray) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def test_official_metrics_match_cityscapesscripts_evaluation(tmp_path):
    """Label-id PNGs through ``evaluateImgLists`` versus ``compute_metrics`` on the same pixels.

    'train' occurs nowhere (NaN in both), 'motorcycle' is predicted only on void ground truth
    (no valid-pixel FP, so NaN officially), the rest are random with void ids 0..6, 9, 10, ...
    """
    rng = np.random.default_rng(3)
    shape = (3, 40, 64)
    never = {LABEL_IDS['train'], LABEL_IDS['motorcycle']}
    ground_truth_ids = rng.choice([i for i in range(NUM_LABEL_IDS) if i not in never], shape)
    ground_truth = LABEL_ID_TO_TRAIN_ID[ground_truth_ids].astype(np.int32)
    predicted_classes = [c for c in range(C) if CLASS_NAMES[c] not in ('train', 'motorcycle')]
    predictions = rng.choice(predicted_classes, shape).astype(np.int32)
    on_void = (ground_truth == IGNORE_LABEL) & (rng.random(shape) < 0.3)
    predictions[on_void] = CLASS_NAMES.index('motorcycle')

    ground_truth_files, prediction_files = [], []
    for k in range(shape[0]):
        stem = f'city_{k:06d}_000019'
        ground_truth_files.append(write_png(tmp_path / f'{stem}_gtFine_labelIds.png',
                                            ground_truth_ids[k]))
        prediction_files.append(write_png(tmp_path / f'{stem}_pred.png',
                                          TRAIN_ID_TO_LABEL_ID[predictions[k]]))
    args = copy.copy(cityscapes_eval.args)
    args.quiet = True
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.exportFile = str(tmp_path / 'result.json')
    official = cityscapes_eval.evaluateImgLists(prediction_files, ground_truth_files, args)

    total = None
    for k in range(shape[0]):  # one call per image, as eval does per batch
        total = metrics.accumulate(total, metrics.confusion_matrix(predictions[k:k + 1],
                                                                   ground_truth[k:k + 1]))
    result = metrics.compute_metrics(total)

    # Our matrix is theirs, relabelled: class rows/columns, and all void rows summed.
    theirs = np.array(official['confMatrix'], np.int64)
    class_ids = TRAIN_ID_TO_LABEL_ID[:C]
    void_ids = [i for i in range(NUM_LABEL_IDS) if LABEL_ID_TO_TRAIN_ID[i] == IGNORE_LABEL]
    np.testing.assert_array_equal(total[:C], theirs[np.ix_(class_ids, class_ids)])
    np.testing.assert_array_equal(total[C], theirs[np.ix_(void_ids, class_ids)].sum(axis=0))

    ours = [result['iou_by_class'][name] for name in CLASS_NAMES]
    expected = [official['classScores'][name] for name in CLASS_NAMES]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert np.isnan(result['iou_by_class']['train'])
    assert np.isnan(result['iou_by_class']['motorcycle'])
    assert result['miou'] == pytest.approx(official['averageScoreClasses'], rel=1e-12)


def test_seed_iou_counts_predictions_on_void_as_false_positives():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, C, (2, 30, 30), dtype=np.int32)
    labels[rng.random(labels.shape) < 0.25] = IGNORE_LABEL
    predictions = rng.integers(0, C, labels.shape, dtype=np.int32)
    predictions[predictions == CLASS_NAMES.index('bus')] = 0
    labels[labels == CLASS_NAMES.index('bus')] = 0
    predictions[(labels == IGNORE_LABEL) & (rng.random(labels.shape) < 0.2)] = (
        CLASS_NAMES.index('bus'))
    result = metrics.compute_metrics(np.asarray(metrics.confusion_matrix(predictions, labels)))

    seed_iou = []
    for c in range(C):  # every pixel predicted c that is not c is a false positive, void included
        predicted, actual = predictions == c, labels == c
        true_positives = np.sum(predicted & actual)
        false_positives = np.sum(predicted & ~actual)
        false_negatives = np.sum(~predicted & actual)
        seed_iou.append(true_positives / (true_positives + false_positives + false_negatives))
    np.testing.assert_allclose(result['seed_iou'], seed_iou, rtol=1e-12)
    assert result['seed_miou'] == pytest.approx(np.mean(seed_iou), rel=1e-12)
    assert result['seed_iou_by_class']['bus'] == 0.0 and np.isnan(result['iou_by_class']['bus'])
    defined = ~np.isnan(result['iou'])
    assert np.all(np.array(result['seed_iou'])[defined] <= np.array(result['iou'])[defined])


def test_metrics_of_a_hand_counted_matrix():
    confusion = np.array([[3, 0, 0],   # ground truth a
                          [1, 2, 0],   # ground truth b
                          [0, 0, 0],   # ground truth c: absent
                          [2, 0, 1]])  # void, predicted as a, b, c
    result = metrics.compute_metrics(confusion, class_names=('a', 'b', 'c'))
    np.testing.assert_allclose(result['iou'], [3 / 4, 2 / 3, np.nan])
    assert result['miou'] == pytest.approx((3 / 4 + 2 / 3) / 2)  # c left out of the mean
    assert result['pixel_accuracy'] == pytest.approx(5 / 6)
    assert result['mean_class_accuracy'] == pytest.approx((3 / 3 + 2 / 3) / 2)
    assert result['fw_iou'] == pytest.approx((3 * 3 / 4 + 3 * 2 / 3) / 6)  # weights: ground truth
    np.testing.assert_allclose(result['seed_iou'], [3 / 6, 2 / 3, 0.0])
    assert result['seed_miou'] == pytest.approx((3 / 6 + 2 / 3 + 0.0) / 3)
    assert result['iou_by_class']['b'] == pytest.approx(2 / 3)
    assert result['course_iou'] == {}
    with pytest.raises(ValueError, match='expected'):
        metrics.compute_metrics(confusion[:3], class_names=('a', 'b', 'c'))


def test_an_all_void_map_gives_undefined_metrics_without_warnings():
    labels = np.full((2, 5, 7), IGNORE_LABEL, np.int32)
    predictions = np.full_like(labels, CLASS_NAMES.index('car'))
    confusion = metrics.accumulate(None, metrics.confusion_matrix(predictions, labels))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        result = metrics.compute_metrics(confusion)
    assert all(np.isnan(result[key]) for key in
               ('miou', 'pixel_accuracy', 'mean_class_accuracy', 'fw_iou'))
    assert np.all(np.isnan(result['iou']))
    assert result['seed_iou_by_class']['car'] == 0.0 and result['seed_miou'] == 0.0


def test_report_is_json_serialisable_and_names_the_course_classes():
    rng = np.random.default_rng(5)
    labels = random_train_ids(rng, (1, 16, 16))
    predictions = rng.integers(0, C, labels.shape, dtype=np.int32)
    result = metrics.compute_metrics(metrics.accumulate(
        None, metrics.confusion_matrix(predictions, labels)))
    assert json.loads(json.dumps(result)).keys() == result.keys()
    assert list(result['course_iou']) == list(COURSE_CLASSES)
    assert result['course_seed_iou']['car'] == result['seed_iou'][CLASS_NAMES.index('car')]
    assert all(type(value) is float for value in result['iou'])


def test_accumulate_sums_in_int64_past_the_int32_range():
    rng = np.random.default_rng(6)
    first = rng.integers(0, 1000, (C + 1, C), dtype=np.int32)
    second = jnp.asarray(rng.integers(0, 1000, (C + 1, C), dtype=np.int32))
    total = metrics.accumulate(metrics.accumulate(None, first), second)
    assert total.dtype == np.int64
    np.testing.assert_array_equal(total, first.astype(np.int64) + np.asarray(second))

    big = jnp.full((C + 1, C), 2**30, jnp.int32)  # a synthetic batch of ~2^30 pixels per cell
    total = None
    for _ in range(5):
        total = metrics.accumulate(total, big)
    assert total.dtype == np.int64 and np.all(total == 5 * 2**30)
