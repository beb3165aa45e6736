"""Preemption: a stop request (SIGTERM) becomes a checkpoint at a step every process reaches.

SLURM (on preemption, ``scancel`` or the time limit) and Cloud TPU maintenance stop a job by
sending SIGTERM, then SIGKILL after a grace period (SLURM's KillWait, 30 s by default). The
training loop asks ``PreemptionNotice.reached(step)`` after every step; once it is True the loop
saves a checkpoint at that step and raises ``Preempted``, which ``main`` turns into exit status
``EXIT_STATUS`` (75, EX_TEMPFAIL: "try again"): a script or scheduler sees that the run did not
finish, and rerunning the same command resumes from the checkpoint.

* One process: a Python SIGTERM handler sets a flag; the next step boundary stops.
* Several processes: JAX's preemption service (started by ``jax.distributed.initialize``)
  catches SIGTERM in any process, tells the others, and picks the next step that all of them
  will reach (``multihost_utils.reached_preemption_sync_point``), so they save one collective
  checkpoint at the same step instead of hanging in it. No Python handler is installed there: it
  would replace JAX's.
"""

import os
import signal
import threading
import types

import jax
from absl import logging
from jax.experimental import multihost_utils

from seg_jax.errors import SegJaxError

EXIT_STATUS = os.EX_TEMPFAIL


class Preempted(SegJaxError):
    """Training stopped on request after saving a checkpoint; rerun the command to resume."""

    def __init__(self, step: int, checkpoint_dir: str):
        super().__init__(
            f'Stopped by SIGTERM (preemption) after step {step}: saved the checkpoint of step '
            f'{step} in {checkpoint_dir}. Rerun the same command to resume from it.')
        self.step = step


class PreemptionNotice:
    """Whether the job has been asked to stop; a context manager that owns the SIGTERM handler
    of a single-process run (restoring the previous one on exit)."""

    def __init__(self):
        self._requested = False
        self._previous_handler = None
        self._multi_process = jax.process_count() > 1

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        self._requested = True  # acted on at the next step boundary, not mid-step

    def __enter__(self) -> 'PreemptionNotice':
        if not self._multi_process:
            if threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            else:  # Python delivers signals to the main thread only
                logging.warning('Training outside the main thread: SIGTERM will end the process '
                                'without saving a checkpoint first.')
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def reached(self, step: int) -> bool:
        """True at the step where training should save and stop; call it after every step
        (all processes of a job, with the same steps)."""
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested
