"""The training progress bar: step, loss, learning rate, images/s and the ETA, on process 0."""

import contextlib
from collections.abc import Iterator, Mapping

import tqdm


class Progress:
    """One tqdm bar over the run's steps, starting at the step it resumed from."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                              dynamic_ncols=True, disable=not enabled)

    def update(self, step: int, scalars: Mapping[str, float]) -> None:
        self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}",
                              img_s=f"{scalars['images_per_s']:.1f}", refresh=False)
        self._bar.update(step - self._bar.n)

    @contextlib.contextmanager
    def printing(self) -> Iterator[None]:
        """Clears the bar while the block prints (an evaluation's table), then redraws it, so
        the text does not continue the bar's line."""
        with tqdm.tqdm.external_write_mode():
            yield

    def close(self) -> None:
        self._bar.close()
