"""``python tests/stalled_commit.py STEP ARGS...`` runs ``seg_jax.main ARGS...`` with the commit of
checkpoint STEP held back: the checkpoint's arrays are written into orbax's temporary folder,
then the commit (the rename to ``<STEP>/``) waits forever after printing ``STALLED <folder>``.

The reliability tests kill this process with SIGKILL at that point, the worst moment of a save,
and check that the previous checkpoint is intact and the rerun resumes from it.
"""

import runpy
import sys
import time

from orbax.checkpoint._src.path import atomicity

_STEP = sys.argv.pop(1)


async def _finalize_or_stall(self) -> None:
    if self.get_final().name == _STEP:
        print('STALLED', self.get(), flush=True)
        while True:
            time.sleep(60)  # blocks orbax's commit thread only; training goes on until it waits
    await _finalize(self)


_finalize = atomicity.AtomicRenameTemporaryPath.finalize
atomicity.AtomicRenameTemporaryPath.finalize = _finalize_or_stall
sys.argv[0] = 'seg_jax.main'
runpy.run_module('seg_jax.main', run_name='__main__', alter_sys=True)
