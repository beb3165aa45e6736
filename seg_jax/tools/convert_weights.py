"""Converts a PyTorch state dict or mmseg checkpoint (.pth) to .safetensors, for machines
without torch.

    python -m seg_jax.tools.convert_weights IN.pth OUT.safetensors

Run it where torch is installed; the training machine then reads OUT.safetensors with the
safetensors package alone (``--config.model.pretrained=OUT.safetensors``). The tensors are
copied unchanged (PyTorch layout and names): seg_jax maps them when it loads them, so the file
stays usable by any other tool; an mmsegmentation checkpoint's ``meta`` goes into the header
(as JSON), so the load report still says what the model was trained on. An existing OUT is
never overwritten.
"""

import argparse
import json
import os
import sys

from seg_jax.files import write_atomically
from seg_jax.pretrained import family, identify
from seg_jax.weights_file import WeightsError, read_weights


def convert(source: str, destination: str) -> str:
    """Writes ``source``'s tensors to ``destination``; returns the architecture they are."""
    from safetensors.numpy import save

    if os.path.exists(destination):
        raise WeightsError(f'{destination} already exists; choose another output path (nothing '
                           'is overwritten).')
    if not destination.endswith('.safetensors'):
        raise WeightsError(f'The output {destination} must end in .safetensors.')
    state, meta = read_weights(source)
    architecture = identify(state)  # refuses a file seg_jax could not load anyway
    metadata = {'source': os.path.basename(source), 'architecture': architecture,
                'format': 'pt', 'meta': json.dumps(meta, default=str)}
    write_atomically(destination, save(state, metadata=metadata))
    return architecture


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m seg_jax.tools.convert_weights',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('source', help='A torchvision state dict or an mmsegmentation '
                        'checkpoint, .pth or .pt.')
    parser.add_argument('destination', help='The .safetensors file to write.')
    args = parser.parse_args(argv)
    try:
        architecture = convert(args.source, args.destination)
    except WeightsError as error:
        sys.exit(f'error: {error}')
    print(f'Wrote {args.destination}: {family(architecture)} {architecture}.')


if __name__ == '__main__':
    main()
