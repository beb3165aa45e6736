"""``python tests/interrupted_at_step.py STEP COUNT ARGS...`` runs ``seg_jax.main ARGS...`` and,
as training step STEP starts, sends this process COUNT real SIGINTs (Ctrl-C), one after the
other: each is handled before the next is sent, as a person pressing Ctrl-C twice would be.

Sent from inside the run, the signals arrive at a known step, so a test can tell what one
Ctrl-C (save after this step, exit 75) and two (stop at once, exit 130) leave behind.
"""

import os
import runpy
import signal
import sys

from seg_jax import train

_STEP, _COUNT = int(sys.argv.pop(1)), int(sys.argv.pop(1))
_make_train_step = train.make_train_step


def _make_interrupted_step(*args):
    step, calls = _make_train_step(*args), []

    def interrupted_step(*step_args):
        calls.append(1)
        if len(calls) == _STEP:
            for _ in range(_COUNT):
                os.kill(os.getpid(), signal.SIGINT)  # its handler runs before kill returns
        return step(*step_args)
    return interrupted_step


train.make_train_step = _make_interrupted_step
sys.argv[0] = 'seg_jax.main'
runpy.run_module('seg_jax.main', run_name='__main__', alter_sys=True)
