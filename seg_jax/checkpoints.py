"""Checkpoints of any pytree state with orbax: periodic ones, the best one, restore by name.

Layout of ``directory``::

    <step>/         periodic checkpoints; the newest ``keep`` survive
    best/<step>/    the best checkpoint by ``best_metric`` (higher is better), kept apart so the
                    periodic cleanup never deletes it; its metric value is stored beside it
                    (orbax ``best_fn``), so a resumed run still knows the value to beat

Guarantees the training loop relies on:

* A saved step is never rewritten: saving a step at or before the newest saved one is skipped
  and returns False, so a run resumed at step N that saves step N again keeps the original.
* Saves are atomic: orbax writes ``<step>.orbax-checkpoint-tmp-*`` and renames it when complete,
  so an interrupted save leaves a temporary folder that no restore looks at. Such folders are
  left in place (not cleaned at start-up), so an evaluator opening the directory of a running
  job never deletes a save in progress.
* Saves are asynchronous: ``save`` returns once the arrays are copied to host memory (so the
  state may then be donated to the next step) and writing continues in the background;
  ``close`` waits for it.
* Evaluation opens the directory ``read_only``: it creates, writes and deletes nothing there,
  so evaluating a running job's checkpoints cannot disturb them.
* A checkpoint damaged on disk after its save (a file truncated, deleted or corrupted) is
  refused with a ``DamagedCheckpointError`` naming the step, its folder, the file or array and
  the reason. Resuming training (``restore_newest_intact``) moves such a step's folder to
  ``<workdir>/damaged_checkpoints/`` (never deletes it) and resumes from the next older step.
* A save that fails for want of room or permission (full disk, quota, read-only file system)
  raises one ``CheckpointWriteError`` naming the failed step, the newest intact one and the fix
  (``seg_jax.write_failures``); ``close`` removes the failed step's temporary folder.
"""

import contextlib
import logging
import math
import os
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers
from orbax.checkpoint._src.metadata import array_metadata_store

from seg_jax import console, write_failures
from seg_jax.damaged_checkpoints import (DAMAGED_FOLDER, ITEM_METADATA_FILE,
                                         DamagedCheckpointError, SkippedCheckpoint, reading,
                                         unused_path)
from seg_jax.errors import CheckpointError, first_few

log = logging.getLogger(__name__)

BEST_SUBDIR = 'best'
MAX_LISTED_DIFFERENCES = 5
# Replicated arrays are copied to the host in 1/R slices from each of their R devices
# ("replica-parallel") only where a slice holds at least this much. Each slice is a separate
# device operation, so slicing small arrays costs more than it saves: a tiny U-Net's 738
# arrays on 8 devices were 5,778 slices and 6 s per save on the CPU, against 0.4 s unsliced.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """The handler orbax's StandardCheckpointHandler wraps (the same files, every type orbax
    saves by default: jax and numpy arrays, scalars, strings), with replica-parallel copies
    of jax arrays limited to slices of ``MIN_REPLICA_SLICE_BYTES`` or more."""
    arrays = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=array_metadata_store.Store())
    handlers = [(kind, arrays if kind is jax.Array else ocp.type_handlers.get_type_handler(kind))
                for kind in ocp.type_handlers.supported_types()]
    return ocp.PyTreeCheckpointHandler(
        type_handler_registry=ocp.type_handlers.create_type_handler_registry(*handlers))


class Checkpointer:
    """Saves and restores a training state (e.g. a flax TrainState); also a context manager.

    Args:
      directory: where checkpoints live (a local path or any path orbax's epath understands).
      keep: how many periodic checkpoints to keep; older ones are deleted after each save.
      every_steps: ``save`` writes only at multiples of this, so the loop may call it every
        step; ``force=True`` writes regardless (the loop's preemption save).
      best_metric: the metric ``save_best`` ranks by; higher is better (mIoU, accuracy).
      read_only: for evaluation: restores only, and never creates, writes or deletes anything
        under ``directory`` (``save`` and ``save_best`` raise).
    """

    def __init__(self, directory: str | epath.PathLike, *, keep: int, every_steps: int = 1,
                 best_metric: str = 'miou', read_only: bool = False):
        if keep < 1 or every_steps < 1:
            raise CheckpointError(f'Checkpointer needs keep >= 1 and every_steps >= 1; got '
                                  f'keep={keep}, every_steps={every_steps}.')
        self.directory = _absolute(directory)
        self.best_metric = best_metric
        self.read_only = read_only
        # The handler is named up front so that a fresh process can read a step's metadata
        # (for the fit check) before it has saved or restored anything.
        ranking = dict(best_fn=self._metric_of, best_mode='max')
        if read_only:  # with the options orbax would otherwise warn that it changes
            quiet_read_only = dict(read_only=True, save_interval_steps=0, create=False)
            periodic_options = ocp.CheckpointManagerOptions(**quiet_read_only)
            best_options = ocp.CheckpointManagerOptions(**quiet_read_only, **ranking)
        else:
            periodic_options = ocp.CheckpointManagerOptions(
                save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every_steps),
                preservation_policy=checkpoint_managers.LatestN(keep))
            best_options = ocp.CheckpointManagerOptions(
                preservation_policy=checkpoint_managers.BestN(get_metric_fn=self._metric_of,
                                                              n=1), **ranking)
        with console.without_library_notice('Given directory is read only'):
            self._periodic = ocp.CheckpointManager(
                self.directory, item_handlers=_state_handler(),
                options=periodic_options)
            self._best = ocp.CheckpointManager(
                self.directory / BEST_SUBDIR, item_handlers=_state_handler(),
                options=best_options)
        self._best_value = self._stored_best_value()
        self._failed_saves: list[tuple[str, int | None]] = []  # (folder, step) of failed saves
        # The step each manager was last asked to save: asynchronous, it may still be writing.
        self._started: dict[str, int] = {}
        self._closed = False
        self._quiet = contextlib.ExitStack()
        if not read_only:
            self._quiet.enter_context(write_failures.quiet_background_write_errors())

    def _metric_of(self, metrics: dict[str, float]) -> float:
        """The ranked value; a checkpoint saved under another metric name never wins."""
        return metrics.get(self.best_metric, -math.inf)

    def _stored_best_value(self) -> float | None:
        step = self._best.best_step()
        return None if step is None else self._metric_of(self._best.metrics(step) or {})

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves ``state`` as periodic checkpoint ``step`` if it is due; True if it was saved.

        Due means a multiple of ``every_steps``, or ``force``. Steps at or before the newest
        periodic checkpoint are never saved (see the module docstring).
        """
        self._check_writable()
        latest = self._periodic.latest_step()
        if latest is not None and step <= latest:
            return False
        with self._write_failures_reported(self._periodic, step):
            saved = self._periodic.save(step, args=ocp.args.PyTreeSave(state), force=force)
        if saved:
            self._started[str(self._periodic.directory)] = step
        return saved

    def save_best(self, step: int, state: Any, metric_value: float) -> bool:
        """Saves ``state`` as the best checkpoint if ``metric_value`` beats the stored best.

        Non-finite values never count as an improvement; the previous best is deleted only
        once the new one is written. Returns True if it was saved.
        """
        self._check_writable()
        value = float(metric_value)
        improves = math.isfinite(value) and (self._best_value is None or value > self._best_value)
        if not improves or step in self._best.all_steps():
            return False
        with self._write_failures_reported(self._best, step):
            saved = self._best.save(step, args=ocp.args.PyTreeSave(state),
                                    metrics={self.best_metric: value}, force=True)
        if saved:
            self._best_value = value
            self._started[str(self._best.directory)] = step
        return saved

    @contextlib.contextmanager
    def _write_failures_reported(self, manager: ocp.CheckpointManager,
                                 step: int | None = None) -> Iterator[None]:
        """Turns a failed write under ``manager`` (full disk, quota, read-only, permission)
        into one CheckpointWriteError naming the failed step, the intact one and the fix.
        ``step`` is the save being started. An asynchronous save's failure surfaces at the next
        call: it is the step named by its temporary folder in the error where it is, else the
        step started before, if that never finished (the new save had not begun). ``close``
        (which training runs before the error reaches the user) removes the failed step's
        temporary folder."""
        try:
            yield
        except Exception as error:
            code = write_failures.write_failure_code(error)
            if code is None:
                raise
            started = self._started.get(str(manager.directory))
            unfinished = (started is not None and
                          not (epath.Path(manager.directory) / str(started)).exists())
            failed = write_failures.failed_step(error, started if unfinished else step)
            self._failed_saves.append((str(manager.directory), failed))
            intact = [s for s in finished_steps(self.directory) if s != failed]
            raise write_failures.write_error(code, failed, str(manager.directory),
                                             intact[-1] if intact else None) from None

    def check_room(self, state: Any) -> None:
        """Raises before training when the checkpoint folder has no room for one checkpoint of
        ``state`` (its arrays' bytes), instead of failing at the first save."""
        write_failures.check_room(str(self.directory),
                                  sum(leaf.nbytes for leaf in jax.tree.leaves(state)
                                      if hasattr(leaf, 'nbytes')))

    def _check_writable(self) -> None:
        if self.read_only:
            raise CheckpointError(f'{self.directory} was opened read-only (for evaluation); '
                                  'nothing is saved there.')

    @property
    def best_value(self) -> float | None:
        """The ``best_metric`` value of the best checkpoint, None before the first one."""
        return self._best_value

    def latest_step(self) -> int | None:
        """The newest saved step, periodic or best; None if there is none (a fresh run)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        return self._best.best_step()

    def all_steps(self) -> list[int]:
        """Every step that ``restore`` accepts, ascending."""
        return sorted(set(self._periodic.all_steps()) | set(self._best.all_steps()))

    def restore(self, target: Any, step: int | str = 'latest') -> Any:
        """The checkpoint ``step`` (an int, 'latest' or 'best') in the structure of ``target``.

        ``target`` is the state the configured model would start from, concrete or abstract
        (``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape``); the result has its
        tree structure, dtypes and, where leaves carry one, shardings. A checkpoint whose files
        cannot be read raises a ``DamagedCheckpointError``.
        """
        self.wait_until_finished()  # a step saved by this process may still be in flight
        return self._restore_from(*self._find(step), target)

    def restore_newest_intact(self, target: Any) -> tuple[Any, list[SkippedCheckpoint]]:
        """The newest checkpoint that restores (as ``restore(target, 'latest')``), for resuming
        training, and the damaged ones skipped on the way, newest first.

        Each damaged step's folder is moved to ``<workdir>/damaged_checkpoints/`` (kept, to be
        inspected or recovered), so that training saves that step afresh and no later resume
        meets it again, and a warning names it, the reason, where it went and the step resumed
        from. Of a step saved both as periodic and as best, the other copy is tried next. Read-
        only, nothing is moved: the first damaged step raises. When none restores, raises a
        CheckpointError naming each damaged step and where it went.
        """
        self.wait_until_finished()
        self._find('latest')  # the usual error when there is no checkpoint at all
        skipped = []
        for manager, step in self._folders_newest_first():
            try:
                state = self._restore_from(manager, step, target)
            except DamagedCheckpointError as damaged:
                if self.read_only:
                    raise
                skipped.append(SkippedCheckpoint(step, damaged.reason, damaged.folder,
                                                 self._move_aside(manager, damaged.folder)))
                continue
            for each in skipped:
                log.warning('Skipped checkpoint step %d, which is damaged: %s; moved %s to %s '
                            'and resumed from step %d.', each.step, each.reason,
                            each.moved_from, each.moved_to, step)
            return state, skipped
        moved = '; '.join(f'step {each.step} ({each.reason}) was moved to {each.moved_to}'
                          for each in skipped)
        raise CheckpointError(
            f'Every checkpoint in {self.directory} is damaged, so training cannot resume: '
            f'{moved}. Nothing was deleted; rerunning the same command starts the run from '
            'scratch (or use another --workdir).')

    def intact_steps(self, target: Any, excluding: epath.Path | None = None) -> list[int]:
        """The steps that ``restore`` restores into ``target``, but the one in the folder
        ``excluding``; found by restoring each in turn, so costly: for an error message."""
        steps = []
        for step in self.all_steps():
            manager, _ = self._find(step)
            if manager.directory / str(step) != excluding and self._restores(manager, step,
                                                                              target):
                steps.append(step)
        return steps

    def _restores(self, manager: ocp.CheckpointManager, step: int, target: Any) -> bool:
        """Whether the step restores into ``target``; the state itself is dropped at once."""
        try:
            self._restore_from(manager, step, target)
        except CheckpointError:  # damaged, or not of this model
            return False
        return True

    def _restore_from(self, manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
        """Checkpoint ``step`` of ``manager`` in the structure of ``target``. Only errors of
        reading its files become DamagedCheckpointErrors; one that does not fit the model stays
        the CheckpointError of ``_check_fits``, and any other error passes unchanged."""
        folder = manager.directory / str(step)
        if not (folder / ITEM_METADATA_FILE).exists():
            raise DamagedCheckpointError(step, folder, f'{ITEM_METADATA_FILE} is missing')
        with reading(step, folder):
            stored = manager.item_metadata(step).tree
        _check_fits(target, stored, str(folder))
        with reading(step, folder):
            return manager.restore(step, args=ocp.args.PyTreeRestore(
                target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)))

    def _folders_newest_first(self) -> list[tuple[ocp.CheckpointManager, int]]:
        """Every checkpoint as (manager, step), newest step first; of a step saved both as
        periodic and as best, the periodic one first, as ``_find`` chooses."""
        return [(manager, step) for step in reversed(self.all_steps())
                for manager in (self._periodic, self._best) if step in manager.all_steps()]

    def _move_aside(self, manager: ocp.CheckpointManager, folder: epath.Path) -> epath.Path:
        """Moves the damaged step ``folder`` of ``manager`` to ``<workdir>/damaged_checkpoints/``
        under the same relative name (``40``, ``best/40``; ``40.1`` ... if taken) and updates
        what the managers know. A rename, so nothing is copied or lost; in a multi-process job
        process 0 renames once every process has stopped reading the folder."""
        destination = unused_path(self.directory.parent / DAMAGED_FOLDER /
                                   folder.relative_to(self.directory))
        _sync_processes(f'seg_jax: read {folder}')
        if jax.process_index() == 0:
            destination.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(destination)
        _sync_processes(f'seg_jax: moved {folder}')
        manager.reload()  # its cached step list would still hold the step
        if manager is self._best:
            self._best_value = self._stored_best_value()
        return destination

    def _find(self, step: int | str) -> tuple[ocp.CheckpointManager, int]:
        """The manager holding ``step`` and the step as an int, or an error saying what exists."""
        if isinstance(step, str) and step.isdigit():
            step = int(step)
        if not self.all_steps():
            raise CheckpointError(f'No checkpoint in {self.directory}; train first or pass '
                                  '--workdir of a finished run.')
        if step == 'latest':
            step = self.latest_step()
        elif step == 'best':
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f'No best checkpoint in {self.directory / BEST_SUBDIR} (one is saved after '
                    f'an evaluation improves {self.best_metric}); restore \'latest\' or one of '
                    f'the steps {self.all_steps()} instead.')
            return self._best, step  # its own copy, intact when the periodic one is damaged
        elif not isinstance(step, int):
            raise CheckpointError(f"A checkpoint step is an int, 'latest' or 'best'; got {step!r}.")
        if step in self._periodic.all_steps():
            return self._periodic, step
        if step in self._best.all_steps():
            return self._best, step
        raise CheckpointError(f'No checkpoint for step {step} in {self.directory}; the available '
                              f"steps are {self.all_steps()} (or 'latest', 'best').")

    def wait_until_finished(self) -> None:
        """Blocks until every asynchronous save is written and old checkpoints are deleted."""
        for manager in (self._periodic, self._best):
            with self._write_failures_reported(manager):
                manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves; call it (or use ``with``) before the process exits. Calling
        it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close(self._periodic)
        finally:
            try:
                self._close(self._best)
            finally:
                # Only now: writes of a failed save that orbax's threads abandoned may still
                # be landing until the managers are closed.
                for folder, step in self._failed_saves:
                    if step is not None:
                        write_failures.remove_temporary(folder, step)
                self._quiet.close()

    def _close(self, manager: ocp.CheckpointManager) -> None:
        """Closes ``manager``; after a reported write failure, its copy of the same error is not
        raised again."""
        already_reported = bool(self._failed_saves)
        try:
            with self._write_failures_reported(manager):
                manager.close()
        except Exception:
            if not already_reported:
                raise

    def __enter__(self) -> 'Checkpointer':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def finished_steps(directory: str | epath.PathLike) -> list[int]:
    """The finished checkpoints' steps in ``directory`` (periodic and best), ascending, read
    from the folder names without opening a manager, which would create the folder."""
    root = _absolute(directory)
    return sorted({int(child.name) for folder in (root, root / BEST_SUBDIR) if folder.exists()
                   for child in folder.iterdir() if child.name.isdigit()})


def has_checkpoint(directory: str | epath.PathLike) -> bool:
    """Whether ``directory`` holds a finished checkpoint (periodic or best)."""
    return bool(finished_steps(directory))


def _absolute(directory: str | epath.PathLike) -> epath.Path:
    """orbax's array writer rejects relative paths; URLs such as gs://... are kept as they are."""
    text = os.fspath(directory)
    return epath.Path(text if '://' in text else os.path.abspath(text))


def _leaf_name(path: tuple) -> str:
    """'params/conv1/kernel' for a key path, whether its keys are dict keys, fields or indices."""
    keys = (getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key))) for key in path)
    return '/'.join(str(key) for key in keys)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Each leaf's shape by name; Python scalars have shape ()."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_leaf_name(path): tuple(getattr(leaf, 'shape', ())) for path, leaf in leaves}


def _check_fits(target: Any, stored_tree: Any, where: str) -> None:
    """Raises naming the leaves where ``target`` and the stored tree differ.

    Checked here rather than left to orbax, whose errors on a mismatch come from deep inside
    its reader and do not say that the model config is the likely cause.
    """
    wanted, stored = _leaf_shapes(target), _leaf_shapes(stored_tree)
    differences = [f'{name} is not in the checkpoint' for name in wanted if name not in stored]
    differences += [f'{name} is in the checkpoint but not in the model'
                    for name in stored if name not in wanted]
    differences += [f'{name} has shape {stored[name]} in the checkpoint but {shape} in the model'
                    for name, shape in wanted.items() if name in stored and stored[name] != shape]
    if differences:
        raise CheckpointError(
            f'The checkpoint {where} does not fit the configured model: '
            f'{first_few(differences, MAX_LISTED_DIFFERENCES)}. It was probably written with a '
            'different model config (model name, backbone, width, num_classes) or optimiser; '
            'use the config it was trained with, or another --workdir.')


def _sync_processes(name: str) -> None:
    """Waits until every process of a multi-process job has reached the call named ``name``."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
