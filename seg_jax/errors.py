"""Exceptions for problems a user can fix; ``main`` prints their message without a traceback."""

from collections.abc import Iterator


class SegJaxError(Exception):
    """Base class: the message says what was wrong and what to do about it."""


class ConfigError(SegJaxError, ValueError):
    """A config value that seg_jax cannot honour."""


class ShapeError(SegJaxError, ValueError):
    """An input whose shape a model or function cannot take."""


class DataError(SegJaxError, ValueError):
    """Missing, incomplete or malformed data: names the file or folder and how to fix it."""


class CheckpointError(SegJaxError, ValueError):
    """No checkpoint, a missing step, or a checkpoint that does not fit the configured model."""


def first_few(items: list[str], limit: int = 6, separator: str = '; ') -> str:
    """The first ``limit`` of ``items`` for an error message, and how many more there are."""
    shown = separator.join(items[:limit])
    more = len(items) - limit
    return shown + (f'{separator}and {more} more' if more > 0 else '')


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
