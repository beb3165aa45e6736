"""Runs models written by ``--mode export`` as a deployment would: in a process that imports
neither flax nor seg_jax's model code, only ``seg_jax.serving`` (jax + numpy) and TensorFlow.

    python tests/serve_exported.py IMAGES.npy OUTPUT_FOLDER EXPORT_FOLDER...

For the k-th export folder it writes ``OUTPUT_FOLDER/<k>.npz``: the outputs of
``seg_jax.serving`` on the whole batch (``batch_*``) and on its first image alone (``first_*``:
another batch size), and of the SavedModel on both (``saved_model_*``,
``saved_model_first_*``). ``OUTPUT_FOLDER/report.json`` holds the modules this process imported and
the errors each kind of bad input got from ``seg_jax.serving`` and from the SavedModel.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from seg_jax import serving


def bad_inputs(images: np.ndarray) -> dict[str, np.ndarray]:
    return {'dtype': images.astype(np.float32), 'rank': images[0],
            'size': images[:, :-1], 'channels': images[..., :2], 'empty': images[:0]}


def refusals(run, images: np.ndarray, error_types: tuple[type, ...]) -> dict[str, str]:
    """The message of the error ``run`` raises for each bad input ('' if none was raised)."""
    messages = {}
    for kind, value in bad_inputs(images).items():
        try:
            run(value)
            messages[kind] = ''
        except error_types as error:
            messages[kind] = f'{type(error).__name__}: {error}'
    return messages


def main(images_path: str, output: str, folders: list[str]) -> None:
    images = np.load(images_path)
    report = {'serving_errors': [], 'saved_model_errors': []}
    for k, folder in enumerate(folders):
        segmenter = serving.load(folder)
        serve = tf.saved_model.load(
            os.path.join(folder, serving.SAVED_MODEL_FOLDER)).signatures['serving_default']

        def run_saved_model(batch):
            return {name: value.numpy() for name, value in serve(images=tf.constant(batch)).items()}

        outputs = {'batch': segmenter(images), 'first': segmenter(images[:1]),
                   'saved_model': run_saved_model(images),
                   'saved_model_first': run_saved_model(images[:1])}
        np.savez(os.path.join(output, f'{k}.npz'),
                 **{f'{target}_{name}': value for target, values in outputs.items()
                    for name, value in values.items()})
        report['serving_errors'].append(refusals(segmenter, images, (serving.InputError,)))
        report['saved_model_errors'].append(
            refusals(run_saved_model, images, (TypeError, ValueError, tf.errors.OpError)))
    report['modules'] = sorted(sys.modules)
    with open(os.path.join(output, 'report.json'), 'w') as f:
        json.dump(report, f)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
