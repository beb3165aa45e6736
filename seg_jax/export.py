"""``--mode export``: a trained model as files that segment without seg_jax's training code.

The model restored as ``--mode predict`` restores it (``config.eval.checkpoint`` of the workdir,
or ``config.model.pretrained``) is written to ``config.export.dir`` (default
``<workdir>/export/<step>``), never over an earlier export:

    segmenter.jax   the computation as serialized StableHLO (``jax.export``); run it with
                    ``seg_jax.serving``, which needs only jax and numpy
    saved_model/    the same computation in a TensorFlow SavedModel (jax2tf's native
                    serialization), signature ``serving_default``: TF Serving, LiteRT
    metadata.json   the model, its config and weights, classes and palette, the input rules,
                    the versions that wrote it, and the parity figures below

The computation is what ``--mode predict`` does to a photo: uint8 RGB images ``(N, H, W, 3)`` are
normalised, inferred as ``config.eval`` says (whole image, sliding window, multi-scale + flip) and
reduced to uint8 train ids ``(N, H, W)``, with float32 class probabilities ``(N, H, W, C)`` too
when ``config.export.probabilities``; the weights are constants inside. The batch size is free
(a symbolic dimension). Height and width are fixed, ``config.export.image_size`` (default: the
evaluation images' size): the padding to the network's stride, the windows' offsets and the
test-time scales are computed from the size as Python numbers, which ``jax.export`` cannot keep
symbolic.

Each file is loaded back and run before it is kept, on synthetic street scenes at the export
size, and compared with ``--mode predict``'s computation; an export whose class maps agree on
fewer than 99.99% of the pixels, or whose probabilities differ by more than 1e-4, is refused and
nothing is written. ONNX is not among the targets: jax2onnx 0.17.1, the newest release, converts
the ResNet networks into graphs that onnxruntime rejects or that segment differently (see the
README).
"""

import contextlib
import dataclasses
import importlib.metadata
import os
import shutil
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seg_jax import config_checks, inference, metrics, parallel, predict, restore, serving
from seg_jax.data.augment import INVERSE_STD_255, MEAN_255
from seg_jax.data.classes import class_table
from seg_jax.data.synthetic.scene import render_scene
from seg_jax.errors import ConfigError, SegJaxError
from seg_jax.workdir import resolved_config, to_json

CITYSCAPES_IMAGE_SIZE = (1024, 2048)
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # what jax.export can lower for
MIN_CLASS_AGREEMENT = 0.9999  # share of pixels whose class must match --mode predict's
MAX_PROBABILITY_DIFFERENCE = 1e-4
CHECK_SEED = 2024  # of the synthetic scenes each exported file is checked on
ONE_AT_A_TIME = f'{serving.EXPORTED_FILE}, one image at a time'
CHECKED_TARGETS = (serving.EXPORTED_FILE, ONE_AT_A_TIME, serving.SAVED_MODEL_FOLDER)

Segment = Callable[[jax.Array], dict[str, jax.Array]]


class ExportMismatchError(SegJaxError):
    """An exported file segments differently from the model it was exported from."""


def export_image_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(height, width) of the images the export takes: ``config.export.image_size``, else the
    evaluation images' size (the synthetic set's own, or Cityscapes' 1024x2048)."""
    size = inference.size_pair(config.export.image_size, 'config.export.image_size')
    if size is not None:
        return size
    synthetic = config.data.synthetic
    return ((synthetic.height, synthetic.width) if config.data.source == 'synthetic'
            else CITYSCAPES_IMAGE_SIZE)


def this_platform() -> str:
    """The ``jax.export`` platform name of the devices JAX runs on here."""
    device = jax.devices()[0]
    if device.platform != 'gpu':
        return device.platform
    return 'rocm' if 'rocm' in device.client.platform_version.lower() else 'cuda'


def check_export_config(config: ml_collections.ConfigDict) -> None:
    """Refuses export settings that cannot be honoured, before anything is restored."""
    export_image_size(config)
    platforms = config.export.platforms
    listed = tuple(platforms) if isinstance(platforms, (tuple, list)) else ()
    if not listed or len(set(listed)) != len(listed) or not set(listed) <= set(PLATFORMS):
        raise ConfigError(f'config.export.platforms={platforms!r} must be a tuple of distinct '
                          f'names from {PLATFORMS}, e.g. --config.export.platforms='
                          '"(\'cpu\', \'cuda\')".')
    # Each file is checked before it is kept: segmenter.jax here, the SavedModel in
    # tensorflow-cpu; a file that cannot run on either could not be checked.
    needed = [p for p in dict.fromkeys(('cpu', this_platform())) if p not in listed]
    if needed:
        raise ConfigError(f'config.export.platforms={platforms!r} lacks {needed}: each exported '
                          'file is run before it is kept, here and in tensorflow-cpu; add '
                          f'{" and ".join(repr(p) for p in needed)}.')
    count = config.export.check_images
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 2):
        raise ConfigError(f'config.export.check_images={count!r} must be 2 or more images (the '
                          'exported batch is checked at two batch sizes).')


def segment_function(model: nn.Module, variables: dict[str, Any],
                     settings: inference.InferenceSettings, probabilities: bool) -> Segment:
    """``segment(uint8 images (N, H, W, 3)) -> {'classes', ['probabilities']}``, the weights
    closed over; normalised with the input pipeline's constants and operations."""
    def segment(images: jax.Array) -> dict[str, jax.Array]:
        normalised = ((images.astype(jnp.float32) - jnp.asarray(MEAN_255, jnp.float32))
                      * jnp.asarray(INVERSE_STD_255, jnp.float32))
        log_probs = inference.log_probabilities(model, variables, normalised, settings)
        outputs = {'classes': metrics.predictions_from_logits(log_probs).astype(jnp.uint8)}
        if probabilities:
            outputs['probabilities'] = jnp.exp(log_probs)
        return outputs
    return segment


def export_stablehlo(segment: Segment, image_size: tuple[int, int],
                     platforms: tuple[str, ...]) -> jax.export.Exported:
    """``segment`` lowered for ``platforms``, the batch dimension symbolic."""
    batch, = jax.export.symbolic_shape('batch')
    return jax.export.export(jax.jit(segment), platforms=platforms)(
        jax.ShapeDtypeStruct((batch, *image_size, 3), jnp.uint8))


def write_saved_model(segment: Segment, image_size: tuple[int, int],
                      platforms: tuple[str, ...], folder: str) -> None:
    """``segment`` as a SavedModel whose ``serving_default`` takes ``images``, uint8
    ``(batch, height, width, 3)``, and refuses any other shape in one message."""
    import tensorflow as tf  # only this target needs it
    from jax.experimental import jax2tf
    height, width = image_size
    converted = jax2tf.convert(segment, polymorphic_shapes=[f'(batch, {height}, {width}, 3)'],
                               native_serialization_platforms=platforms, with_gradient=False)
    refusal = (f'images must be uint8 RGB of shape (batch, {height}, {width}, 3), channels last: '
               f'this model was exported for {height}x{width} images; resize them, or export '
               'again with --config.export.image_size')

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # A signature checks the dtype but not the shape, so the shape is checked here, its
        # rank too (hence a signature of unknown shape); unchecked, another size fails deep
        # inside the XlaCallModule op with a shape-refinement error.
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[:4]  # any rank, 4 numbers
        right_shape = tf.logical_and(tf.equal(tf.size(shape), 4),
                                     tf.reduce_all(tf.equal(padded[1:], [height, width, 3])))
        shape_check = tf.debugging.Assert(right_shape, [refusal, 'got shape', shape],
                                          summarize=8)
        with tf.control_dependencies([shape_check]):
            return converted(tf.ensure_shape(images, (None, height, width, 3)))

    module = tf.Module()
    module.serve = tf.function(serve, autograph=False,
                               input_signature=[tf.TensorSpec(None, tf.uint8, name='images')])
    tf.saved_model.save(module, folder, signatures={'serving_default': module.serve})


def check_scenes(count: int, image_size: tuple[int, int]) -> np.ndarray:
    """``count`` synthetic street scenes, uint8 ``(count, H, W, 3)``: images a trained model
    segments into several classes, unlike noise."""
    rngs = np.random.default_rng(CHECK_SEED).spawn(count)
    return np.stack([render_scene(rng, *image_size)[0] for rng in rngs])


def predict_outputs(model: nn.Module, variables: dict[str, Any],
                    settings: inference.InferenceSettings, images: np.ndarray, batch_size: int,
                    probabilities: bool, mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
    """What ``--mode predict`` computes for ``images``, ``batch_size`` at a time: normalised by
    the input pipeline, inferred by the predict function over the mesh; with ``probabilities``,
    the class probabilities beside the classes."""
    predict_fn = inference.make_predict_fn(
        model, settings, mesh,
        totals=(lambda log_probs, classes, batch: jnp.exp(log_probs)) if probabilities else None)
    outputs = []
    for start in range(0, len(images), batch_size):
        result = predict.infer_photos(predict_fn, variables, list(images[start:start + batch_size]),
                                      mesh)
        outputs.append(dict(zip(('classes', 'probabilities'),
                                result if probabilities else (result,))))
    return {name: np.concatenate([np.asarray(chunk[name]) for chunk in outputs])
            for name in outputs[0]}


def parity(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """How closely ``outputs`` match ``reference``: the share of pixels of equal class and, when
    exported, the largest difference of a probability."""
    figures = {'class_agreement': float(np.mean(outputs['classes'] == reference['classes']))}
    if 'probabilities' in outputs:
        figures['max_probability_difference'] = float(
            np.max(np.abs(outputs['probabilities'] - reference['probabilities'])))
    return figures


def _check_parity(target: str, figures: dict[str, float]) -> None:
    agreement = figures['class_agreement']
    difference = figures.get('max_probability_difference', 0.0)
    if agreement < MIN_CLASS_AGREEMENT or difference > MAX_PROBABILITY_DIFFERENCE:
        probabilities = ('' if 'max_probability_difference' not in figures else
                         f' and its probabilities differ by up to {difference:.3g} (at most '
                         f'{MAX_PROBABILITY_DIFFERENCE:g})')
        raise ExportMismatchError(
            f'The exported {target} segments differently from the model: its classes agree with '
            f'--mode predict\'s on {agreement:.4%} of the pixels (at least '
            f'{MIN_CLASS_AGREEMENT:.2%} needed){probabilities}; nothing was written. Please '
            'report it with the config: it is a bug of the export.')


def _in_batches(run: Callable[[np.ndarray], dict[str, Any]], images: np.ndarray,
                batch_size: int) -> dict[str, np.ndarray]:
    batches = [run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: np.concatenate([np.asarray(outputs[name]) for outputs in batches])
            for name in batches[0]}


def _run_exported(folder: str, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """The serialized StableHLO of ``folder`` on ``images``, ``batch_size`` at a time."""
    return _in_batches(jax.jit(serving.read_exported(folder).call), images, batch_size)


def _run_saved_model(folder: str, images: np.ndarray, batch_size: int
                     ) -> dict[str, np.ndarray]:
    import tensorflow as tf
    serve = tf.saved_model.load(folder).signatures['serving_default']
    return _in_batches(lambda batch: {name: value.numpy() for name, value in
                                      serve(images=tf.constant(batch)).items()},
                       images, batch_size)


def _versions() -> dict[str, str]:
    import tensorflow as tf
    return {'seg_jax': importlib.metadata.version('seg_jax'), 'jax': jax.__version__,
            'jaxlib': importlib.metadata.version('jaxlib'), 'tensorflow': tf.__version__}


def _folder_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def metadata(config: ml_collections.ConfigDict, trained: restore.TrainedModel,
             settings: inference.InferenceSettings, image_size: tuple[int, int],
             platforms: tuple[str, ...], checks: dict[str, Any]) -> dict[str, Any]:
    """``metadata.json``: everything a user of the files needs, and how they were checked."""
    num_classes = trained.model.num_classes
    table = class_table(config.data.classes)  # check_config: it has num_classes classes
    height, width = image_size
    return {
        'files': {
            serving.EXPORTED_FILE: 'jax.export (serialized StableHLO); seg_jax.serving.load('
                                   'folder), or jax.export.deserialize',
            serving.SAVED_MODEL_FOLDER: 'TensorFlow SavedModel, signature serving_default',
        },
        'model': resolved_config(config)['model'],
        'weights': trained.record,
        'input': {'name': 'images', 'dtype': 'uint8', 'layout': 'NHWC', 'channels': 'RGB',
                  'shape': ['batch', height, width, 3], 'image_size': [height, width],
                  'batch': 'any size (a symbolic dimension)',
                  'size_rule': f'exactly {height}x{width} (config.export.image_size); resize '
                               'other images first, or export again at their size',
                  'normalisation': 'inside: (x - 255 mean) / (255 std), ImageNet mean and std'},
        'outputs': {'classes': f'uint8 (batch, {height}, {width}): train ids 0..'
                               f'{num_classes - 1}',
                    **({'probabilities': f'float32 (batch, {height}, {width}, {num_classes}): '
                                         'class probabilities'}
                       if config.export.probabilities else {})},
        'inference': dataclasses.asdict(settings),
        'classes': {'table': table.name, 'names': list(table.names),
                    'palette': table.palette[:num_classes].tolist()},
        'platforms': list(platforms),
        'versions': _versions(),
        'parity': checks,
        'config': resolved_config(config),
    }


def write_targets(segment: Segment, image_size: tuple[int, int], platforms: tuple[str, ...],
                  folder: str) -> None:
    """``segmenter.jax`` and ``saved_model/`` of ``segment`` in ``folder``."""
    with open(os.path.join(folder, serving.EXPORTED_FILE), 'wb') as f:
        f.write(export_stablehlo(segment, image_size, platforms).serialize())
    write_saved_model(segment, image_size, platforms,
                      os.path.join(folder, serving.SAVED_MODEL_FOLDER))


def check_targets(folder: str, images: np.ndarray, reference: dict[str, np.ndarray],
                  batch_size: int) -> dict[str, Any]:
    """The parity figures of each file in ``folder`` against ``reference`` on ``images``, run
    as a user would run them: read back from disk, ``batch_size`` (at least 2) images at a
    time, and the StableHLO also one image at a time, another batch size, which its symbolic
    batch must take; raises ``ExportMismatchError`` at the first that segments differently."""
    outputs = {serving.EXPORTED_FILE: _run_exported(folder, images, batch_size),
               ONE_AT_A_TIME: _run_exported(folder, images, 1),
               serving.SAVED_MODEL_FOLDER: _run_saved_model(
                   os.path.join(folder, serving.SAVED_MODEL_FOLDER), images, batch_size)}
    checks = {'images': len(images), 'images_from': 'synthetic street scenes at the export size',
              'reference': "--mode predict's computation of the restored model"}
    for target in CHECKED_TARGETS:
        checks[target] = parity(reference, outputs[target])
        _check_parity(target, checks[target])
    return checks


def _destination(config: ml_collections.ConfigDict, workdir: str, step: int) -> str:
    folder = os.path.expanduser(config.export.dir or os.path.join(workdir, 'export', str(step)))
    if os.path.exists(folder):
        raise ConfigError(f'{folder} exists already (an earlier export?); nothing was '
                          'overwritten. Export elsewhere with --config.export.dir=FOLDER, or '
                          'remove it first.')
    return folder


def _staging_folder(folder: str) -> tuple[str, list[str]]:
    """A hidden folder beside ``folder`` to write the export into, renamed into place only
    when complete and checked, so that no half-written export ever has the final name; and
    the parent folders made for it (removed again if the export fails)."""
    parent, name = os.path.split(os.path.abspath(folder))
    created, ancestor = [], parent
    while not os.path.exists(ancestor):
        created.insert(0, ancestor)
        ancestor = os.path.dirname(ancestor)
    staging = os.path.join(parent, f'.{name}.incomplete-{os.getpid()}')
    try:
        os.makedirs(staging)
    except OSError as error:
        raise ConfigError(f'Cannot write the export to {parent} ({error.strerror}); choose a '
                          'writable folder with --config.export.dir=FOLDER.') from None
    return staging, created


def export_model(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the export folder and returns its path; refuses before writing anything when
    the folder exists, the config is wrong, or an exported file disagrees with the model."""
    config_checks.check_config(config, 'export')
    if jax.process_count() > 1:
        raise ConfigError('--mode export runs in a single process; run it without the '
                          'multi-process flags (it writes files on one host).')
    image_size, platforms = export_image_size(config), tuple(config.export.platforms)
    mesh = parallel.data_mesh()
    trained = restore.load_trained_model(config, workdir, mesh)
    folder = _destination(config, workdir, trained.step)
    settings = inference.inference_settings(config.eval)
    segment = segment_function(trained.model, jax.device_get(trained.variables), settings,
                               config.export.probabilities)
    print(f'Exporting {trained.describe()} for {image_size[0]}x{image_size[1]} images '
          f'({", ".join(platforms)}).', flush=True)

    count = -(-config.export.check_images // jax.device_count()) * jax.device_count()
    batch_size = max(2, config.eval.batch_size)
    images = check_scenes(count, image_size)
    reference = predict_outputs(trained.model, trained.variables, settings, images, batch_size,
                                config.export.probabilities, mesh)
    staging, created = _staging_folder(folder)
    try:
        write_targets(segment, image_size, platforms, staging)
        checks = check_targets(staging, images, reference, batch_size)
        with open(os.path.join(staging, serving.METADATA_FILE), 'w') as f:
            f.write(to_json(metadata(config, trained, settings, image_size, platforms, checks),
                            indent=2))
        _destination(config, workdir, trained.step)  # still free?
        try:
            os.rename(staging, folder)
        except OSError:  # made by another export since: it is kept, this one is not
            _destination(config, workdir, trained.step)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):  # the folders made for it, innermost first
            with contextlib.suppress(OSError):
                os.rmdir(parent)
        raise
    agreement = min(checks[target]['class_agreement'] for target in CHECKED_TARGETS)
    difference = max(checks[target].get('max_probability_difference', 0.0)
                     for target in CHECKED_TARGETS)
    probabilities = (f' and their probabilities within {difference:.2g}'
                     if config.export.probabilities else '')
    print(f'Wrote {folder}: {serving.EXPORTED_FILE} '
          f'({_folder_size(os.path.join(folder, serving.EXPORTED_FILE)) / 2**20:.1f} MiB), '
          f'{serving.SAVED_MODEL_FOLDER}/ '
          f'({_folder_size(os.path.join(folder, serving.SAVED_MODEL_FOLDER)) / 2**20:.1f} MiB), '
          f'{serving.METADATA_FILE}. On {count} synthetic scenes both agree with --mode '
          f'predict on {agreement:.4%} of the pixels{probabilities}. Load with '
          f'seg_jax.serving.load({folder!r}) or tf.saved_model.load.', flush=True)
    return folder


