"""Joint image/label augmentation: alignment, label validity, padding, exactness, draws."""

import numpy as np
import pytest
import tensorflow as tf

from seg_jax.data import augment
from seg_jax.errors import ConfigError, ShapeError

HEIGHT, WIDTH = 64, 96
IMAGE_SIZE = tf.constant([HEIGHT, WIDTH])
MEAN_255 = 255.0 * np.array(augment.IMAGENET_MEAN, np.float32)
STD_255 = 255.0 * np.array(augment.IMAGENET_STD, np.float32)
TRAIN_OPTIONS = dict(crop_size=(48, 56), scale_range=(0.5, 2.0), rotation_degrees=30.0,
                     flip=True, photometric=0.0)


def seed(k: int) -> tf.Tensor:
    return tf.constant([7, k], tf.int64)


def position_label() -> np.ndarray:
    """Train ids that encode position: 8x8 blocks numbered row-major, modulo 19."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return ((rows // 8 * 13 + cols // 8) % 19).astype(np.uint8)


def random_image(rng_seed: int = 0) -> np.ndarray:
    return np.random.default_rng(rng_seed).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)


def unnormalize(image: tf.Tensor) -> np.ndarray:
    return image.numpy() * STD_255 + MEAN_255


@pytest.fixture(scope='module')
def train_fn():
    """train_transform traced once per option set, so many seeds run fast."""
    cache = {}

    def run(image, label, k, **overrides):
        options = {**TRAIN_OPTIONS, **overrides}
        key = (tuple(sorted(options.items())), image.shape, label.shape)
        if key not in cache:
            cache[key] = tf.function(lambda *args: augment.train_transform(*args, **options))
        image_out, label_out = cache[key](image, label, seed(k))
        return image_out.numpy(), label_out.numpy()

    return run


def uniform_neighbourhood(label: np.ndarray) -> np.ndarray:
    """True where the pixel and its 8 neighbours hold the same label (borders excluded)."""
    centre = label[1:-1, 1:-1]
    same = np.ones_like(centre, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= label[1 + dy:label.shape[0] - 1 + dy, 1 + dx:label.shape[1] - 1 + dx] == centre
    return np.pad(same, 1)


def test_image_and_label_stay_aligned_under_every_augmentation(train_fn):
    label = position_label()
    image = np.repeat(label[..., None] * 10, 3, axis=-1)
    geometry_kinds = set()
    for k in range(40):
        image_out, label_out = train_fn(image, label, k)
        values = unnormalize(tf.constant(image_out))
        inside = uniform_neighbourhood(label_out) & (label_out != 255)
        assert inside.sum() > 100
        np.testing.assert_allclose(values[inside], 10.0 * label_out[inside][:, None].repeat(3, 1),
                                   atol=0.05)
        outside = uniform_neighbourhood(label_out) & (label_out == 255)
        np.testing.assert_allclose(image_out[outside], 0.0, atol=1e-6)
        geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, **without_photometric())
        geometry_kinds.add((bool(geometry.flip), float(geometry.scale) > 1.0,
                            float(geometry.angle_degrees) > 0))
    assert len(geometry_kinds) == 8  # flips, up/down scales and both rotation senses were run


def without_photometric(**options) -> dict:
    return {key: value for key, value in {**TRAIN_OPTIONS, **options}.items()
            if key != 'photometric'}


def test_labels_hold_only_source_ids_or_ignore(train_fn):
    sparse_ids = np.array([0, 7, 18, 255], np.uint8)  # any average of two would be a new value
    label = np.random.default_rng(1).choice(sparse_ids, (HEIGHT, WIDTH))
    for k in range(40):
        _, label_out = train_fn(random_image(), label, k)
        assert label_out.dtype == np.int32
        assert set(np.unique(label_out)) <= set(sparse_ids.tolist())


def test_rotation_corners_are_ignore_in_label_and_mean_in_image(train_fn):
    label = np.ones((HEIGHT, WIDTH), np.uint8)
    for k in range(5):
        image_out, label_out = train_fn(random_image(), label, k, crop_size=(HEIGHT, WIDTH),
                                        scale_range=(1.0, 1.0), rotation_degrees=45.0, flip=False)
        geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, crop_size=(HEIGHT, WIDTH),
                                           scale_range=(1.0, 1.0), rotation_degrees=45.0,
                                           flip=False)
        if abs(float(geometry.angle_degrees)) < 20:
            continue
        corners = (0, -1)
        for row in corners:
            for col in corners:
                assert label_out[row, col] == 255
                np.testing.assert_array_equal(image_out[row, col], 0.0)
        assert label_out[HEIGHT // 2, WIDTH // 2] == 1
        assert set(np.unique(label_out)) == {1, 255}


def test_padding_of_a_small_canvas_is_ignore_and_mean(train_fn):
    label = np.ones((HEIGHT, WIDTH), np.uint8)
    offsets = set()
    for k in range(10):
        image_out, label_out = train_fn(random_image(), label, k, crop_size=(HEIGHT, WIDTH),
                                        scale_range=(0.5, 0.5), rotation_degrees=0.0)
        content = label_out == 1
        rows, cols = np.nonzero(content)
        assert content.sum() == (HEIGHT // 2) * (WIDTH // 2)
        assert rows.max() - rows.min() + 1 == HEIGHT // 2
        assert cols.max() - cols.min() + 1 == WIDTH // 2
        assert set(np.unique(label_out)) == {1, 255}
        np.testing.assert_array_equal(image_out[~content], 0.0)
        offsets.add((rows.min(), cols.min()))
    assert len(offsets) > 3  # the canvas lands at random positions inside the crop


@pytest.mark.parametrize('crop_size', [(32, 40), (HEIGHT, WIDTH)])
def test_flip_and_crop_are_exact_copies(train_fn, crop_size):
    image = random_image()
    label = np.random.default_rng(2).integers(0, 19, (HEIGHT, WIDTH)).astype(np.uint8)
    options = dict(crop_size=crop_size, scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=True)
    flips, offsets = set(), set()
    for k in range(12):
        image_out, label_out = train_fn(image, label, k, **options)
        geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, **options)
        top, left, flip = int(geometry.top), int(geometry.left), bool(geometry.flip)
        window = np.s_[top:top + crop_size[0], left:left + crop_size[1]]
        image_ref, label_ref = image[window], label[window]
        if flip:
            image_ref, label_ref = image_ref[:, ::-1], label_ref[:, ::-1]
        np.testing.assert_array_equal(label_out, label_ref)
        np.testing.assert_array_equal(image_out, augment.normalize(image_ref).numpy())
        flips.add(flip)
        offsets.add((top, left))
    assert flips == {False, True}
    assert len(offsets) > 1 or crop_size == (HEIGHT, WIDTH)


def test_half_scale_averages_each_two_by_two_block(train_fn):
    """Pins the pixel-centre convention: output pixel u samples source 2u + 0.5, the middle of
    a 2x2 block (an off-by-half-pixel centre would copy one pixel of the block instead)."""
    image = random_image()
    label = np.random.default_rng(4).integers(0, 19, (HEIGHT, WIDTH)).astype(np.uint8)
    block_mean = image.reshape(HEIGHT // 2, 2, WIDTH // 2, 2, 3).astype(np.float32).mean((1, 3))
    half = (HEIGHT // 2, WIDTH // 2)
    train_image, train_label = train_fn(image, label, 0, crop_size=half, scale_range=(0.5, 0.5),
                                        rotation_degrees=0.0, flip=False)
    eval_image, eval_label = augment.eval_transform(image, label, scale=0.5)
    for image_out, label_out in ((train_image, train_label), (eval_image, eval_label.numpy())):
        np.testing.assert_allclose(unnormalize(tf.constant(image_out)), block_mean, atol=1e-3)
        np.testing.assert_array_equal(label_out, label[1::2, 1::2])  # nearest: within the block


def test_same_seed_same_output_different_seeds_different_crops(train_fn):
    image, label = random_image(), position_label()
    first, again = train_fn(image, label, 3), train_fn(image, label, 3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    others = [train_fn(image, label, k)[1] for k in range(4, 8)]
    assert all(not np.array_equal(first[1], other) for other in others)


def test_draws_follow_the_promised_distributions():
    options = dict(crop_size=(56, 80), scale_range=(0.75, 1.5), rotation_degrees=10.0, flip=True)
    draw = tf.function(lambda s: augment.sample_geometry(s, IMAGE_SIZE, **options))
    draws = [draw(seed(k)) for k in range(200)]
    scales = np.array([float(d.scale) for d in draws])
    angles = np.array([float(d.angle_degrees) for d in draws])
    flips = np.array([bool(d.flip) for d in draws])
    tops = np.array([int(d.top) for d in draws])
    assert 0.4 < flips.mean() < 0.6
    assert 0.75 <= scales.min() < 0.8 and 1.45 < scales.max() <= 1.5
    assert abs(scales.mean() - 1.125) < 0.04  # uniform, not clustered at one end
    assert -10 <= angles.min() < -9 and 9 < angles.max() <= 10
    assert abs(angles.mean()) < 1.0
    canvas_heights = np.round(HEIGHT * scales).astype(int)
    assert np.all(tops >= np.minimum(canvas_heights - 56, 0))
    assert np.all(tops <= np.maximum(canvas_heights - 56, 0))
    assert (tops < 0).any() and (tops > 0).any()  # small canvases padded, large ones cropped
    unflipped = augment.sample_geometry(seed(0), IMAGE_SIZE, **{**options, 'flip': False})
    assert not bool(unflipped.flip)


def test_photometric_jitter_changes_only_the_image_within_range(train_fn):
    image, label = random_image(), position_label()
    plain_image, plain_label = train_fn(image, label, 5)
    jittered_image, jittered_label = train_fn(image, label, 5, photometric=0.3)
    np.testing.assert_array_equal(jittered_label, plain_label)
    assert np.abs(jittered_image - plain_image).max() > 0.05
    values = unnormalize(tf.constant(jittered_image))
    assert values.min() >= -1e-3 and values.max() <= 255 + 1e-3
    padding = plain_label == 255
    assert padding.any()
    np.testing.assert_allclose(jittered_image[uniform_neighbourhood(plain_label) & padding], 0.0,
                               atol=1e-6)


def halves_label() -> np.ndarray:
    """Class 0 left of column 48, class 1 right of it, void on the top rows (the same share of
    every column): at scale 1, a 56-wide crop's largest class has a share below 0.75 only at
    left offsets 7..33 of 0..40."""
    label = np.where(np.arange(WIDTH) < 48, 0, 1).astype(np.uint8)[None].repeat(HEIGHT, 0)
    label[:10] = 255
    return label


def balanced(label: np.ndarray, cat_max_ratio: float) -> bool:
    """mmseg's RandomCrop test of a crop, written as mmseg writes it."""
    labels, counts = np.unique(label, return_counts=True)
    counts = counts[labels != 255]
    return len(counts) > 1 and np.max(counts) / np.sum(counts) < cat_max_ratio


def test_cat_max_ratio_redraws_until_no_class_dominates(train_fn):
    label, image = halves_label(), random_image()
    plain = dict(scale_range=(1.0, 1.0), rotation_degrees=0.0)
    first_draw_failed = 0
    for k in range(30):
        _, label_out = train_fn(image, label, k, cat_max_ratio=0.75, **plain)
        assert balanced(label_out, 0.75)
        first = augment.sample_geometry(seed(k), IMAGE_SIZE, **without_photometric(**plain))
        first_draw_failed += not 7 <= int(first.left) <= 33
    assert first_draw_failed >= 3  # redraws were needed, and found a balanced crop
    # With scale and rotation too, the check sees the crop as warped: a crop accepted within
    # the 10 checks is balanced.
    checked = 0
    for k in range(15):
        geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, **without_photometric())
        _, draws = augment.balance_crop(seed(k), geometry, label, crop_size=(48, 56),
                                        cat_max_ratio=0.75)
        _, label_out = train_fn(image, label, k, cat_max_ratio=0.75)
        if int(draws) <= augment.MAX_CROP_CHECKS:
            assert balanced(label_out, 0.75)
            checked += 1
    assert checked >= 10


def test_cat_max_ratio_gives_up_after_ten_checks_with_the_eleventh_draw():
    crop_size = (48, 56)
    for label in (np.full((HEIGHT, WIDTH), 4, np.uint8), np.full((HEIGHT, WIDTH), 255, np.uint8)):
        for k in range(3):
            geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, **without_photometric())
            chosen, draws = augment.balance_crop(seed(k), geometry, label, crop_size=crop_size,
                                                 cat_max_ratio=0.75)
            assert int(draws) == 11
            last = augment.redraw_crop_position(seed(k), geometry, 10, IMAGE_SIZE, crop_size)
            assert (int(chosen.top), int(chosen.left)) == (int(last.top), int(last.left))
            for kept in ('scale', 'angle_degrees', 'flip'):  # only the position is redrawn
                assert float(getattr(chosen, kept)) == float(getattr(geometry, kept))
    redraws = {(int(g.top), int(g.left)) for g in (
        augment.redraw_crop_position(seed(0), geometry, n, IMAGE_SIZE, crop_size)
        for n in range(1, 11))}
    assert len(redraws) > 5  # each redraw from its own stream
    mixed = np.random.default_rng(0).integers(0, 19, (HEIGHT, WIDTH)).astype(np.uint8)
    chosen, draws = augment.balance_crop(seed(0), geometry, mixed, crop_size=crop_size,
                                         cat_max_ratio=0.75)
    assert int(draws) == 1 and int(chosen.top) == int(geometry.top)
    assert int(chosen.left) == int(geometry.left)


def test_cat_max_ratio_of_one_leaves_crops_unchanged(train_fn):
    """On one class everywhere any ratio below 1 redraws; the default 1.0 takes the first draw,
    so the crop (seen in the image) is exactly the one sample_geometry places."""
    image, label = random_image(), np.full((HEIGHT, WIDTH), 4, np.uint8)
    plain = dict(scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=False)
    moved = 0
    for k in range(6):
        default, _ = train_fn(image, label, k, **plain)
        off, _ = train_fn(image, label, k, cat_max_ratio=1.0, **plain)
        redrawn, _ = train_fn(image, label, k, cat_max_ratio=0.75, **plain)
        geometry = augment.sample_geometry(seed(k), IMAGE_SIZE, **without_photometric(**plain))
        last = augment.redraw_crop_position(seed(k), geometry, 10, IMAGE_SIZE, (48, 56))
        for placed, out in ((geometry, default), (geometry, off), (last, redrawn)):
            top, left = int(placed.top), int(placed.left)
            np.testing.assert_array_equal(
                out, augment.normalize(image[top:top + 48, left:left + 56]).numpy())
        moved += not np.array_equal(default, redrawn)
    assert moved >= 4


def test_eval_transform_passes_through_at_scale_one_and_resizes_otherwise():
    image = random_image()
    label = np.random.default_rng(3).choice(np.array([0, 7, 18, 255], np.uint8), (HEIGHT, WIDTH))
    image_out, label_out = augment.eval_transform(image, label)
    np.testing.assert_array_equal(label_out.numpy(), label.astype(np.int32))
    np.testing.assert_allclose(image_out.numpy(),
                               (image / 255.0 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD,
                               atol=1e-5)
    assert image_out.dtype == tf.float32 and label_out.dtype == tf.int32
    small_image, small_label = augment.eval_transform(image, label, scale=0.5)
    assert small_image.shape == (HEIGHT // 2, WIDTH // 2, 3)
    assert small_label.shape == (HEIGHT // 2, WIDTH // 2)
    assert set(np.unique(small_label.numpy())) <= {0, 7, 18, 255}


def test_eval_transform_at_half_scale_keeps_content_aligned():
    label = position_label()
    image = np.repeat(label[..., None] * 10, 3, axis=-1)
    image_out, label_out = augment.eval_transform(image, label, scale=0.5)
    label_out = label_out.numpy()
    inside = uniform_neighbourhood(label_out)
    np.testing.assert_allclose(unnormalize(image_out)[inside],
                               10.0 * label_out[inside][:, None].repeat(3, 1), atol=0.05)
    assert (label_out != 255).all()  # a pure rescale covers the whole output


def test_works_in_tf_data_with_dynamic_shapes():
    sizes = [(40, 60), (70, 50), (64, 96)]

    def examples():
        for height, width in sizes:
            yield (np.full((height, width, 3), 100, np.uint8),
                   np.full((height, width), 3, np.uint8))

    dataset = tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((None, None), tf.uint8)))
    train = dataset.enumerate().map(lambda k, example: augment.train_transform(
        *example, tf.stack([tf.constant(0, tf.int64), k]), **TRAIN_OPTIONS))
    assert train.element_spec[0].shape == (48, 56, 3)
    assert train.element_spec[1].shape == (48, 56)
    for _, label_out in train:
        assert set(np.unique(label_out.numpy())) <= {3, 255}
        assert (label_out.numpy() == 3).any()
    evaluation = dataset.map(lambda *example: augment.eval_transform(*example, scale=0.5))
    for (image_out, label_out), (height, width) in zip(evaluation, sizes, strict=True):
        assert image_out.shape == (height // 2, width // 2, 3)
        assert label_out.shape == (height // 2, width // 2)


@pytest.mark.parametrize('overrides, message', [
    (dict(crop_size=(0, 56)), 'crop_size=(0, 56) must be two positive ints'),
    (dict(crop_size=(48,)), 'config.data.crop_size'),
    (dict(scale_range=(2.0, 0.5)), 'scale_range=(2.0, 0.5) must be (low, high) with 0 < low'),
    (dict(scale_range=(0.0, 1.0)), 'config.data.scale_range'),
    (dict(rotation_degrees=-3.0), 'rotation_degrees=-3.0 must be >= 0'),
    (dict(photometric=-0.1), 'photometric=-0.1 must be in [0, 1)'),
    (dict(photometric=1.5), 'config.data.photometric'),
    (dict(cat_max_ratio=0.0), 'cat_max_ratio=0.0 must be in (0, 1]'),
    (dict(cat_max_ratio=1.5), 'config.data.cat_max_ratio'),
    (dict(photometric_style='mmseg', photometric=0.2), 'config.data.photometric=0'),
])
def test_bad_arguments_raise_at_call_time(overrides, message):
    with pytest.raises(ConfigError, match=None) as error:
        augment.train_transform(random_image(), position_label(), seed(0),
                                **{**TRAIN_OPTIONS, **overrides})
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_bad_shapes_and_eval_scale_raise():
    with pytest.raises(ShapeError, match='squeeze a trailing channel axis'):
        augment.eval_transform(random_image(), position_label()[..., None])
    with pytest.raises(ShapeError, match='image must be HxWx3'):
        augment.eval_transform(random_image()[..., :1], position_label())
    with pytest.raises(ConfigError, match='config.data.eval_scale'):
        augment.eval_transform(random_image(), position_label(), scale=0.0)


# (image sum, sum of squares, void pixels, sum of labels) of three crops drawn by seg_jax before
# crop balancing and the mmseg distortion existed (commit a4bba20), with the default jitter.
EARLIER_CROPS = {0: (2522.15, 12007.079, 0, 73661), 1: (14651.364, 36416.665, 0, 73844),
                 2: (12912.923, 34123.282, 0, 73334)}


def test_default_augmentation_replays_what_earlier_versions_drew():
    """A run resumed by today's code must read the augmented crops it read before."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (96, 160)).astype(np.uint8)
    for seed, (total, squares, void, label_sum) in EARLIER_CROPS.items():
        crop, crop_label = augment.train_transform(
            image, label, tf.constant([seed, 7]), crop_size=(64, 128), scale_range=(0.5, 2.0),
            rotation_degrees=3.0, flip=True, photometric=0.3)
        crop, crop_label = crop.numpy().astype(np.float64), crop_label.numpy()
        assert crop.sum() == pytest.approx(total, rel=1e-5, abs=0.01)
        assert (crop ** 2).sum() == pytest.approx(squares, rel=1e-6)
        assert int((crop_label == 255).sum()) == void
        assert int(crop_label[crop_label != 255].sum()) == label_sum
