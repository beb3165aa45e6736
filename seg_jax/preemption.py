"""Stop requests (SIGTERM, Ctrl-C) become a checkpoint at a step every process reaches.

SLURM (on preemption, ``scancel`` or the time limit) and Cloud TPU maintenance stop a job by
sending SIGTERM, then SIGKILL after a grace period (SLURM's KillWait, 30 s by default); a person
at a terminal presses Ctrl-C (SIGINT). The training loop asks ``PreemptionNotice.reached(step)``
after every step; once it is True the loop saves a checkpoint at that step and raises
``Preempted``, which ``main`` turns into exit status ``EXIT_STATUS`` (75, EX_TEMPFAIL: "try
again"): a script or scheduler sees that the run did not finish, and rerunning the same command
resumes from the checkpoint. A second Ctrl-C stops at once, without that save, and raises
``Interrupted`` (exit status 130); the checkpoints saved before stay as they are, and the rerun
resumes from the newest.

* One process: Python handlers set a flag; the next step boundary stops.
* Several processes: JAX's preemption service (started by ``jax.distributed.initialize``)
  catches SIGTERM in any process, tells the others, and picks the next step that all of them
  will reach (``multihost_utils.reached_preemption_sync_point``), so they save one collective
  checkpoint at the same step instead of hanging in it. No Python SIGTERM handler is installed
  there (it would replace JAX's); a first Ctrl-C is passed on to that service as a SIGTERM.
"""

import logging
import os
import signal
import sys
import threading
import types

import jax
from jax.experimental import multihost_utils

from seg_jax.errors import SegJaxError

log = logging.getLogger(__name__)

EXIT_STATUS = os.EX_TEMPFAIL
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT  # what a shell reports for a Ctrl-C'd command
_CAUSES = {signal.SIGTERM: 'SIGTERM (preemption)', signal.SIGINT: 'Ctrl-C (SIGINT)'}


class Preempted(SegJaxError):
    """Training stopped on request after saving a checkpoint; rerun the command to resume."""

    def __init__(self, step: int, checkpoint_dir: str, cause: str = _CAUSES[signal.SIGTERM]):
        super().__init__(
            f'Stopped by {cause} after step {step}: saved the checkpoint of step {step} in '
            f'{checkpoint_dir}. Rerun the same command to resume from it.')
        self.step = step


class Interrupted(KeyboardInterrupt):
    """Training stopped at once by a second Ctrl-C, without saving the current step."""

    def __init__(self, saved_steps: list[int], checkpoint_dir: str):
        kept = (f'the newest saved checkpoint, step {saved_steps[-1]}, is intact in '
                f'{checkpoint_dir}; rerun the same command to resume from it' if saved_steps
                else f'no checkpoint had been saved in {checkpoint_dir} yet; rerunning the same '
                'command starts again from step 0')
        super().__init__(f'Stopped at once by a second Ctrl-C, without saving: {kept}.')


class PreemptionNotice:
    """Whether the job has been asked to stop; a context manager that owns the SIGTERM and
    SIGINT handlers of the run (restoring the previous ones on exit)."""

    def __init__(self):
        self._cause = None
        self._previous_handlers = {}
        self._multi_process = jax.process_count() > 1

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if signum == signal.SIGINT and self._cause is not None:
            raise KeyboardInterrupt  # the second request: stop now
        self._cause = _CAUSES[signum]  # acted on at the next step boundary, not mid-step
        if signum == signal.SIGINT:
            print('\nCtrl-C: saving a checkpoint after this step, then stopping. Press Ctrl-C '
                  'again to stop at once without saving.', file=sys.stderr, flush=True)
            if self._multi_process:
                os.kill(os.getpid(), signal.SIGTERM)  # for JAX's service to pick the step

    def __enter__(self) -> 'PreemptionNotice':
        if threading.current_thread() is not threading.main_thread():
            # Python delivers signals to the main thread only.
            log.warning('Training outside the main thread: SIGTERM and Ctrl-C will end the '
                        'process without saving a checkpoint first.')
            return self
        handled = (signal.SIGINT,) if self._multi_process else (signal.SIGINT, signal.SIGTERM)
        for signum in handled:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    @property
    def cause(self) -> str:
        """What asked the run to stop, for the message of ``Preempted``."""
        return self._cause or _CAUSES[signal.SIGTERM]  # JAX's service saw a SIGTERM

    def reached(self, step: int) -> bool:
        """True at the step where training should save and stop; call it after every step
        (all processes of a job, with the same steps)."""
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._cause is not None
