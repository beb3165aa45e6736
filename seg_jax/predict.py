"""``--mode predict``: segments new images of any size with a trained model.

``config.predict.input`` is an image file, a folder (searched recursively) or a glob. For each
image ``<name>.<ext>`` (its path relative to the folder, or to the glob's fixed part, so images
of Cityscapes-style city folders keep their layout) it writes to ``config.predict.output``

    <name>_trainIds.png   the predicted train ids (0..18), uint8, at the image's size
    <name>_color.png      the prediction in the official Cityscapes colours
    <name>_overlay.png    those colours blended over the photo (``config.predict.overlay_alpha``)

The checkpoint is restored as ``--mode eval`` restores it (``config.eval.checkpoint``); images
are inferred as ``config.eval`` says (whole image, sliding window, multi-scale + flip). Images
of equal size are batched ``config.eval.batch_size`` at a time, each batch global and sharded
over every device like evaluation, so the step compiles once per image size; every process
reads and writes its share of each batch. Nothing is written over an existing file unless
``config.predict.overwrite``.
"""

import concurrent.futures
import dataclasses
import glob
import os
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import tqdm
from PIL import Image, ImageOps, UnidentifiedImageError

from seg_jax import config_checks, inference, parallel, restore
from seg_jax.data.augment import normalize
from seg_jax.data.classes import class_table
from seg_jax.errors import ConfigError, DataError, first_few
from seg_jax.files import BackgroundWriter, write_png

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')
OUTPUT_SUFFIXES = ('_trainIds.png', '_color.png', '_overlay.png')
DEFAULT_OUTPUT = 'predictions'  # under the workdir
# EXIF orientations that turn an image by 90 degrees, swapping its height and width.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@dataclasses.dataclass(frozen=True)
class InputImage:
    path: str
    name: str  # the output path stem: relative path without extension
    size: tuple[int, int]  # (height, width) as displayed, EXIF orientation applied


def _is_image_file(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def _under(path: str, folder: str | None) -> bool:
    return folder is not None and os.path.commonpath(
        [os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)


def find_images(spec: str, exclude: str | None = None) -> list[tuple[str, str]]:
    """(path, output name) of every image that ``spec`` (file, folder or glob) names, sorted;
    images under ``exclude`` (the output folder, when it lies inside the input) are left out."""
    spec = os.path.expanduser(spec)
    if os.path.isfile(spec):
        found, base = [spec], os.path.dirname(spec)
    elif os.path.isdir(spec):
        found = [os.path.join(root, name) for root, _, names in os.walk(spec) for name in names]
        base = spec
    else:
        found = glob.glob(spec, recursive=True)
        fixed = []
        for part in spec.split(os.sep):
            if glob.has_magic(part):
                break
            fixed.append(part)
        base = os.sep.join(fixed) or '.'
    images = sorted(path for path in found if _is_image_file(path) and not _under(path, exclude))
    if not images:
        raise DataError(f'config.predict.input={spec!r} names no image: it is not an image file, '
                        'a folder holding images or a glob matching any (images end in '
                        f'{", ".join(IMAGE_EXTENSIONS)}). Point it at your images.')
    return [(path, os.path.splitext(os.path.relpath(path, base))[0]) for path in images]


def _open(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f'{path} is not an image that can be read ({error}); remove it from '
                        'config.predict.input, or re-save it as PNG or JPEG.') from None


def _displayed_size(path: str) -> tuple[int, int]:
    """(height, width) from the file's header, turned as its EXIF orientation says."""
    with _open(path) as image:
        width, height = image.size
        if image.getexif().get(ImageOps.ExifTags.Base.Orientation) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width


def list_inputs(spec: str, exclude: str | None = None) -> list[InputImage]:
    """The images of ``spec`` with their sizes (headers only; nothing is decoded)."""
    images = [InputImage(path, name, _displayed_size(path))
              for path, name in find_images(spec, exclude)]
    by_name: dict[str, list[str]] = {}
    for image in images:
        by_name.setdefault(image.name, []).append(image.path)
    clashes = [' and '.join(paths) for paths in by_name.values() if len(paths) > 1]
    if clashes:
        raise DataError(f'Images would write the same outputs (they differ only in extension): '
                        f'{first_few(clashes)}. Rename or move one of each.')
    return images


def output_paths(output: str, image: InputImage) -> list[str]:
    return [os.path.join(output, image.name + suffix) for suffix in OUTPUT_SUFFIXES]


def check_outputs(output: str, images: list[InputImage], overwrite: bool) -> None:
    """Refuses to replace existing files unless ``overwrite``."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f'config.predict.output={output!r} is a file, not a folder; choose a '
                          'folder for the predictions.')
    existing = [path for image in images for path in output_paths(output, image)
                if os.path.exists(path)]
    if existing and not overwrite:
        raise ConfigError(f'{len(existing)} output files already exist, e.g. '
                          f'{first_few(existing, 3)}. Set another --config.predict.output, or '
                          '--config.predict.overwrite=True to replace them.')


def batches(images: list[InputImage], batch_size: int) -> list[list[InputImage]]:
    """Global batches of at most ``batch_size`` images of one size, sizes in first-seen order,
    so each size compiles the step once."""
    by_size: dict[tuple[int, int], list[InputImage]] = {}
    for image in images:
        by_size.setdefault(image.size, []).append(image)
    return [group[start:start + batch_size] for group in by_size.values()
            for start in range(0, len(group), batch_size)]


def process_share(batch: list[InputImage], batch_size: int, process_index: int,
                  process_count: int) -> list[tuple[InputImage, bool]]:
    """This process's slots of a global batch, each with whether it is real: slots past the
    batch's end repeat its first image (inferred, never written), so every batch is full."""
    per_process = batch_size // process_count
    slots = range(process_index * per_process, (process_index + 1) * per_process)
    return [(batch[slot], True) if slot < len(batch) else (batch[0], False) for slot in slots]


def load_image(path: str) -> np.ndarray:
    """uint8 HxWx3 RGB, turned upright as its EXIF orientation says."""
    with _open(path) as image:
        try:
            return np.asarray(ImageOps.exif_transpose(image).convert('RGB'))
        except (OSError, ValueError) as error:  # e.g. a truncated file
            raise DataError(f'{path} could not be decoded ({error}); re-save or remove it.') \
                from None


def overlay(photo: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``colours`` blended over ``photo`` with opacity ``alpha``, uint8."""
    blended = (1 - alpha) * photo.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def write_outputs(output: str, image: InputImage, photo: np.ndarray, prediction: np.ndarray,
                  alpha: float, palette: np.ndarray) -> None:
    train_ids_path, colour_path, overlay_path = output_paths(output, image)
    colours = palette[prediction]
    write_png(train_ids_path, prediction.astype(np.uint8))
    write_png(colour_path, colours)
    write_png(overlay_path, overlay(photo, colours, alpha))


def _host_batches(plan: list[list[InputImage]], batch_size: int
                  ) -> Iterator[tuple[list[tuple[InputImage, bool]], list[np.ndarray]]]:
    """This process's share of each global batch with its decoded photos; the next batch is
    decoded on threads while the current one is inferred."""
    shares = [process_share(batch, batch_size, jax.process_index(), jax.process_count())
              for batch in plan]
    with concurrent.futures.ThreadPoolExecutor(4, 'seg_jax_reader') as pool:
        def submit(share):
            return [pool.submit(load_image, image.path) for image, _ in share]

        pending = submit(shares[0]) if shares else []
        for index, share in enumerate(shares):
            current = pending
            if index + 1 < len(shares):
                pending = submit(shares[index + 1])
            yield share, [future.result() for future in current]


def infer_photos(predict_fn: Callable, variables: dict[str, Any], photos: list[np.ndarray],
                 mesh: jax.sharding.Mesh):
    """``predict_fn`` (``inference.make_predict_fn``'s) on this process's uint8 ``photos`` of
    one size, normalised as the input pipeline normalises them: one batch of --mode predict."""
    host_images = np.stack([normalize(photo).numpy() for photo in photos])
    return predict_fn(variables, parallel.global_batch({'image': host_images}, mesh))


def predict(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Segments every image of ``config.predict.input``; returns how many were written (by
    every process together). Bad config values and inputs are refused before anything is
    restored or written."""
    config_checks.check_config(config, 'predict')
    batch_size, alpha = config.eval.batch_size, config.predict.overlay_alpha
    palette = class_table(config.data.classes).palette
    output = os.path.expanduser(config.predict.output or os.path.join(workdir, DEFAULT_OUTPUT))
    images = list_inputs(config.predict.input, exclude=output)
    check_outputs(output, images, config.predict.overwrite)

    mesh = parallel.data_mesh()
    trained = restore.load_trained_model(config, workdir, mesh)
    predict_fn = inference.make_predict_fn(trained.model,
                                           inference.inference_settings(config.eval), mesh)
    plan = batches(images, batch_size)
    progress = tqdm.tqdm(total=len(images), unit='image', dynamic_ncols=True,
                         disable=jax.process_index() != 0)
    with BackgroundWriter() as writer:
        for batch, (share, photos) in zip(plan, _host_batches(plan, batch_size)):
            predictions = parallel.local_rows(
                infer_photos(predict_fn, trained.variables, photos, mesh))
            for (image, real), photo, prediction in zip(share, photos, predictions, strict=True):
                if real:
                    writer.submit(write_outputs, output, image, photo, prediction, alpha,
                                  palette)
            progress.update(len(batch))
    progress.close()
    if jax.process_index() == 0:
        sizes = len({image.size for image in images})
        print(f'Wrote predictions of {len(images)} images ({sizes} image size'
              f'{"s" if sizes > 1 else ""}, {trained.describe()}) to {output}: '
              f'<name>{", <name>".join(OUTPUT_SUFFIXES)}.', flush=True)
    return len(images)
