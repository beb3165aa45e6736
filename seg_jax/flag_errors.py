"""One-line errors for a bad ``--config`` file or override, in place of ml_collections' own.

ml_collections reports a misspelt field (``--config.model.widht=2``, or ``config.model.widht = 2``
in a config file) as a bare ``KeyError`` raised from deep inside flag parsing, and a wrong type or
any other fault of a config file as a flag error holding the whole traceback. Users get one line
instead: the field, the fields beside it (read from the ConfigDict that refused it, which the
exception's traceback still holds) and the fix, or the config file's line and what went wrong.
"""

import difflib
import sys
import sysconfig
import traceback
from types import FrameType

from absl import flags
from ml_collections import config_dict
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

# Frames below ml_collections' loading of the config file run the file's code; those of these
# two ConfigDict methods hold the ConfigDict that refused a field (self), the field and the value.
_LOAD_CONFIG_FILE = ConfigFileFlagParser.parse.__code__
_CONFIG_DICT_ACCESS = (config_dict.ConfigDict.__getitem__.__code__,
                       config_dict.ConfigDict.__setitem__.__code__)
_LIBRARIES = tuple(  # the standard library and site-packages: not the config file's code
    {path for name, path in sysconfig.get_paths().items() if 'lib' in name})


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run(..., flags_parser=parse_flags)``), exiting with one line
    where the config file or an override is at fault."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as error:
        sys.exit(f'error: {message(error)}')


def message(error: Exception) -> str:
    """``error``, raised by parsing the flags, as one line."""
    raised, where = _in_config_file(error)
    refused, refusal = _refusal(error)
    node, key = refused.get('self'), refused.get('key')
    if isinstance(refusal, KeyError):
        cause = _unknown_field(node, key)
    elif isinstance(refusal, TypeError) and 'value' in refused:  # ConfigDict[key] = value
        value = refused['value']
        cause = (f'field {key} must be of type {node.get_type(key).__name__}, '
                 f'not {type(value).__name__} ({value!r})')
    elif where:
        cause = traceback.format_exception_only(raised)[-1]
    elif isinstance(error, flags.Error):
        cause = f'{error} (--helpfull lists the flags)'
    else:
        cause = traceback.format_exception_only(error)[-1]
    cause = ' '.join(cause.split())
    return f'{where}: {cause}' if where else cause


def _unknown_field(node: config_dict.ConfigDict, key: str) -> str:
    # ml_collections' own did-you-mean; the fields in the order the config declares them.
    guess = difflib.get_close_matches(str(key), [str(field) for field in node], 1, 0.75)
    fields = ', '.join(map(str, getattr(node, '_fields', node)))
    return (f'the config has no field {key!r}'
            + (f' (did you mean {guess[0]!r}?)' if guess else '')
            + (f'; the fields beside it are: {fields}' if fields else '')
            + '. Configs are locked so that a misspelt field is an error, not silently ignored; '
            'configs/default.py lists every field.')


def _chain(error: BaseException):
    """``error`` and the exceptions it was raised while handling, outermost first."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _frames(error: BaseException) -> list[tuple[FrameType, int]]:
    return list(traceback.walk_tb(error.__traceback__))


def _in_config_file(error: Exception) -> tuple[BaseException, str | None]:
    """The exception the config file's code raised and where (``File "...", line N``: its
    innermost line outside the installed libraries), or ``(error, None)`` where the config file
    raised nothing (an override was at fault)."""
    for raised in _chain(error):
        frames = _frames(raised)
        codes = [frame.f_code for frame, _ in frames]
        if _LOAD_CONFIG_FILE in codes:
            below = frames[codes.index(_LOAD_CONFIG_FILE) + 1:]
            own = [(frame, line) for frame, line in below
                   if not frame.f_code.co_filename.startswith(_LIBRARIES)] or below
            if own:
                frame, line = own[-1]
                return raised, f'File "{frame.f_code.co_filename}", line {line}'
    return error, None


def _refusal(error: Exception) -> tuple[dict, BaseException | None]:
    """The local variables of the innermost ``ConfigDict[key]`` (or ``ConfigDict[key] = value``)
    in ``error``'s chain (``self``: the ConfigDict that refused, ``key``, ``value``) and the
    exception raised there, or ``({}, None)``."""
    refusals = [(frame.f_locals, raised) for raised in _chain(error)
                for frame, _ in _frames(raised) if frame.f_code in _CONFIG_DICT_ACCESS]
    return refusals[-1] if refusals else ({}, None)
