"""The training progress bar: step, loss, learning rate, images/s and the ETA, on process 0.

On a terminal it is one tqdm bar, redrawn in place. Into a log file or a pipe (a batch job,
``tee``, a multi-process launcher that prefixes each line) a bar redrawn with carriage returns
becomes one endless line that other output continues; there each update is a line of its own,
with the same numbers.
"""

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TextIO

import tqdm

LINE_FORMAT = '{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]'


class Progress:
    """Progress over the run's steps, starting at the step it resumed from."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True,
                 stream: TextIO | None = None):
        self._stream = stream or sys.stderr
        self._as_lines = enabled and not self._stream.isatty()
        self._total, self._start_step, self._start = total_steps, start_step, time.perf_counter()
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                              dynamic_ncols=True, file=self._stream,
                              disable=not enabled or self._as_lines)

    def update(self, step: int, scalars: Mapping[str, float]) -> None:
        postfix = {'loss': f"{scalars['loss']:.4f}", 'lr': f"{scalars['learning_rate']:.2e}",
                   'img_s': f"{scalars['images_per_s']:.1f}"}
        if self._as_lines:
            line = tqdm.tqdm.format_meter(
                step, self._total, time.perf_counter() - self._start, unit='step',
                initial=self._start_step, bar_format=LINE_FORMAT,
                postfix=', '.join(f'{key}={value}' for key, value in postfix.items()))
            print(line, file=self._stream, flush=True)
            return
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    @contextlib.contextmanager
    def printing(self) -> Iterator[None]:
        """Clears a terminal's bar while the block prints (an evaluation's table), then redraws
        it, so the text does not continue the bar's line."""
        with tqdm.tqdm.external_write_mode(file=self._stream):
            yield

    def close(self) -> None:
        self._bar.close()
