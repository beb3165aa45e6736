"""What a seg_jax command prints: seg_jax's own messages, and other libraries' only when asked.

orbax, tfds, JAX and TensorFlow report routine work at INFO (every checkpoint save is a few
dozen records of handler registries and options; TensorFlow's C++ side prints its oneDNN
notice), and absl's ``app.run`` turns INFO on when ``--verbosity`` is not given. Left alone,
that drowns the progress bar, the evaluation tables and the warnings that ask the user to act.
So by default the libraries speak at WARNING and above only (nothing that warns about a real
problem is hidden), and seg_jax's messages go through the ``seg_jax`` logger with a handler of
their own: plain text on stderr, warnings prefixed ``warning:``. ``--verbosity=0`` brings the
libraries' INFO records back, ``--verbosity=1`` their debug records and seg_jax's too.

In a multi-process job every process runs the same code and would say the same thing N times:
INFO messages are printed by process 0 only, unless a message is marked as one process's own
(``extra=EVERY_PROCESS``); warnings and errors are printed by every process, since each may
have its own cause.
"""

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import tqdm

LOGGER_NAME = 'seg_jax'
QUIET = -1  # absl's verbosity numbers: -1 WARNING, 0 INFO, 1 DEBUG
EVERY_PROCESS = {'every_process': True}  # ``extra=`` of a message each process prints itself


class _SegJaxFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f'{record.levelname.lower()}: {message}'
        return message


class _OnProcessZero(logging.Filter):
    """Lets INFO and DEBUG records through on process 0 only (see the module docstring)."""

    def __init__(self, process_index: int):
        super().__init__()
        self.process_index = process_index

    def filter(self, record: logging.LogRecord) -> bool:
        return (self.process_index == 0 or record.levelno >= logging.WARNING or
                getattr(record, 'every_process', False))


class _ConsoleHandler(logging.StreamHandler):
    """Writes above the progress bar: the bar is cleared, the message written, the bar redrawn
    (otherwise a message would continue the bar's line)."""

    def emit(self, record: logging.LogRecord) -> None:
        with tqdm.tqdm.external_write_mode(file=self.stream):
            super().emit(record)


_PROCESS_FILTER = _OnProcessZero(0)


def configure(verbosity: int) -> None:
    """Sets what this process prints; called once, first thing, by each command-line entry.

    ``verbosity`` is absl's number: -1 (``QUIET``, the default of seg_jax's commands), 0 for the
    libraries' INFO records, 1 for DEBUG. TensorFlow's C++ log level is read when TensorFlow
    is first imported, so this must run before that (no entry point imports it at load time);
    a ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept.
    """
    from absl import logging as absl_logging
    if verbosity <= QUIET:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # C++ INFO off, warnings kept
    else:  # asked for: libraries' records in absl's format, argparse tools too
        absl_logging.use_absl_handler()
    absl_logging.set_verbosity(max(verbosity, QUIET))  # the root logger's level, for everyone
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)  # configured again: write to today's sys.stderr
    handler = _ConsoleHandler(sys.stderr)
    handler.setFormatter(_SegJaxFormatter('%(message)s'))
    handler.addFilter(_PROCESS_FILTER)
    logger.addHandler(handler)
    logger.propagate = False  # printed once, by this handler, not again by absl's on the root
    sys.unraisablehook = sys.__unraisablehook__ if verbosity >= 1 else _print_unraisable


def _abandoned_orbax_read(unraisable: 'sys.UnraisableHookArgs') -> bool:
    """Whether ``unraisable`` comes from one of orbax's array reads that was closed unfinished
    (its restore had already failed on another array), re-raising the read's error."""
    code = getattr(unraisable.object, 'cr_code', None)
    return code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename and (
        code.co_name == '_read_array_index_and_device_put')


def _print_unraisable(unraisable: 'sys.UnraisableHookArgs') -> None:
    """``sys.unraisablehook`` without two harmless tracebacks. When an orbax save or restore
    fails (a full disk, a damaged checkpoint), orbax's asyncio loop ends at the first error
    while TensorStore still finishes the operation's other reads and writes; their completion
    callbacks then find the loop closed ('Event loop is closed'), and the reads of a failed
    restore that never finished are closed when they are collected, raising their own read
    error again. Python would print either at some later point, often at exit, after seg_jax
    has reported the failure itself. Every other unraisable exception is printed as Python
    prints it."""
    loop_closed = (unraisable.exc_type is RuntimeError
                   and str(unraisable.exc_value) == 'Event loop is closed')
    if not (loop_closed or _abandoned_orbax_read(unraisable)):
        sys.__unraisablehook__(unraisable)


def set_process_index(process_index: int) -> None:
    """Tells the console which process this is, once the job is joined (default: 0)."""
    _PROCESS_FILTER.process_index = process_index


def add_verbosity_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbosity`` for the argparse tools, with the meaning of seg_jax.main's (absl's)."""
    parser.add_argument('--verbosity', type=int, default=QUIET,
                        help='-1 (default): seg_jax\'s messages and every warning; 0: also the '
                        'libraries\' INFO logs (orbax, absl, TensorFlow, tfds); 1: also debug.')


class _Notice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def without_library_notice(prefix: str) -> Iterator[None]:
    """Drops, for the block, an absl-logged library warning that starts with ``prefix`` and
    only restates what seg_jax asked for (orbax warns that a manager opened read-only is
    read-only): a warning the user can do nothing about teaches them to ignore warnings."""
    absl_logger, notice = logging.getLogger('absl'), _Notice(prefix)
    absl_logger.addFilter(notice)
    try:
        yield
    finally:
        absl_logger.removeFilter(notice)
