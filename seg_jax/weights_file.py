"""Reading a weights file without running code from it: ``.pth`` (torchvision, mmseg) and
``.safetensors`` files -> numpy arrays and the file's own meta.

``.pth`` files are pickles, and unpickling can run any code the file names. They are read with
``torch.load(weights_only=True)``, which builds only tensors and containers, plus the numpy
scalars that mmsegmentation's ``meta`` may hold; a file that needs anything else is refused by
name with the command that keeps only its tensors, without a fallback to a full unpickle.
Mapping the arrays onto a model is ``seg_jax.pretrained``'s.
"""

import json
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from seg_jax.errors import SegJaxError

HOW_TO_GET = ('torchvision publishes ImageNet and COCO files (e.g. resnet50-11ad3fa6.pth, '
              'deeplabv3_resnet50_coco-cd0a2569.pth), mmsegmentation its Cityscapes models and '
              'V1c backbones (e.g. deeplabv3_r50-d8_512x1024_80k_cityscapes_*.pth, '
              'resnet50_v1c-2cccc1ad.pth); see README, "Pretrained weights" and "Model zoo".')
# What a weights-only unpickle may build besides tensors and containers: numpy scalars, which
# mmseg's ``meta`` (e.g. a best score in ``hook_msgs``) can hold, under the names numpy 1 (which
# wrote the model zoo's files) and numpy 2 pickle them with.
NUMPY_SCALAR_NAMES = ('numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar')


class WeightsError(SegJaxError):
    """A weights file that cannot be read or does not fit the configured model."""


class WeightsFile(NamedTuple):
    """A file's tensors as numpy arrays, and what it says about itself (mmseg's ``meta``)."""
    state: dict[str, np.ndarray]
    meta: dict[str, Any]


def _numpy_safe_globals() -> list:
    """numpy's scalar constructor under each name of NUMPY_SCALAR_NAMES, ``numpy.dtype`` and
    every numpy dtype class, for ``torch.serialization.safe_globals``."""
    scalar = np._core.multiarray.scalar
    return [*((scalar, name) for name in NUMPY_SCALAR_NAMES), np.dtype,
            *(type(np.dtype(code)) for code in np.typecodes['All'] if code not in 'MmOV')]


def _load_pickle(path: str) -> Any:
    """``torch.load`` of ``path`` that runs no code from it, or a WeightsError saying why not."""
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f'Reading {path} needs PyTorch, which is not installed. Install it (the CPU build is '
            'enough: pip install torch), or convert the file where torch is installed and copy '
            f'the result here: python -m seg_jax.tools.convert_weights {path} '
            f'{os.path.splitext(path)[0]}.safetensors') from None
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r'GLOBAL ([\w.]+)', str(error))
        what = found.group(1) if found else 'a Python object'
        raise WeightsError(
            f'{path} holds {what}, which a weights-only load does not build: seg_jax never runs '
            'code from a weights file. If you trust the file, keep only its tensors where its '
            'own library is installed, e.g. python -c "import torch; c = torch.load(\'IN\', '
            'weights_only=False); torch.save({\'state_dict\': c[\'state_dict\']}, \'OUT.pth\')"'
            ', and load OUT.pth.') from None
    except (RuntimeError, EOFError, OSError) as error:
        raise WeightsError(f'{path} is not a readable PyTorch file ({error}); download it '
                           'again.') from None


def _tensors_of(checkpoint: Any, path: str) -> tuple[Mapping, dict]:
    """(state dict, meta) of what ``torch.load`` returned: a flat state dict (torchvision,
    mmseg's V1c backbones), or mmseg's ``{'meta': ..., 'state_dict': ...}`` checkpoint (an
    ``optimizer`` entry, left in some files, is not read)."""
    import torch
    state, meta = checkpoint, {}
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('state_dict'), Mapping):
        state, meta = checkpoint['state_dict'], checkpoint.get('meta') or {}
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise WeightsError(f'{path} is not a flat state dict of tensors nor an mmsegmentation '
                           "checkpoint ({'meta', 'state_dict'}): a training checkpoint holding "
                           'one, perhaps; save model.state_dict() itself.')
    return state, dict(meta) if isinstance(meta, Mapping) else {}


def read_weights(path: str) -> WeightsFile:
    """A weights file as numpy arrays and its meta: ``.safetensors`` with the safetensors
    package (its meta from the header, as ``seg_jax.tools.convert_weights`` writes it),
    ``.pth`` / ``.pt`` with torch (``weights_only``: no code in the file is run)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise WeightsError(f'No weights file at {path}. {HOW_TO_GET}')
    extension = os.path.splitext(path)[1].lower()
    if extension == '.safetensors':
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file
        try:
            with safe_open(path, 'np') as header:
                meta = json.loads((header.metadata() or {}).get('meta', '{}'))
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:  # ValueError: a header not JSON
            raise WeightsError(f'{path} is not a readable .safetensors file ({error}); convert '
                               'or download it again.') from None
        return WeightsFile(state, meta if isinstance(meta, dict) else {})
    if extension not in ('.pth', '.pt'):
        raise WeightsError(f'{path}: pretrained weights must be a .safetensors or .pth file '
                           '(a torchvision state dict or an mmsegmentation checkpoint); got '
                           f'{extension or "no extension"!r}.')
    state, meta = _tensors_of(_load_pickle(path), path)
    # numpy has no bfloat16: such tensors become float32, which the load casts as needed.
    import torch
    return WeightsFile({key: (value.float() if value.dtype == torch.bfloat16 else value)
                        .cpu().numpy() for key, value in state.items()}, meta)
