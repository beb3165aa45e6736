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
"""

import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from seg_jax.errors import CheckpointError, first_few

BEST_SUBDIR = 'best'
MAX_LISTED_DIFFERENCES = 5


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
        if read_only:
            periodic_options = ocp.CheckpointManagerOptions(read_only=True)
            best_options = ocp.CheckpointManagerOptions(read_only=True, **ranking)
        else:
            periodic_options = ocp.CheckpointManagerOptions(
                save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every_steps),
                preservation_policy=checkpoint_managers.LatestN(keep))
            best_options = ocp.CheckpointManagerOptions(
                preservation_policy=checkpoint_managers.BestN(get_metric_fn=self._metric_of,
                                                              n=1), **ranking)
        self._periodic = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(),
            options=periodic_options)
        self._best = ocp.CheckpointManager(
            self.directory / BEST_SUBDIR, item_handlers=ocp.StandardCheckpointHandler(),
            options=best_options)
        self._best_value = self._stored_best_value()

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
        return self._periodic.save(step, args=ocp.args.StandardSave(state), force=force)

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
        saved = self._best.save(step, args=ocp.args.StandardSave(state),
                                metrics={self.best_metric: value}, force=True)
        if saved:
            self._best_value = value
        return saved

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
        tree structure, dtypes and, where leaves carry one, shardings.
        """
        self.wait_until_finished()  # a step saved by this process may still be in flight
        manager, step = self._find(step)
        _check_fits(target, manager.item_metadata(step).tree,
                    f'{manager.directory / str(step)}')
        return manager.restore(step, args=ocp.args.StandardRestore(target))

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
        self._periodic.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves; call it (or use ``with``) before the process exits."""
        self._periodic.close()
        self._best.close()

    def __enter__(self) -> 'Checkpointer':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def has_checkpoint(directory: str | epath.PathLike) -> bool:
    """Whether ``directory`` holds a finished checkpoint (periodic or best), looked up without
    opening a manager, which would create the folder."""
    root = _absolute(directory)
    return any(folder.exists() and any(child.name.isdigit() for child in folder.iterdir())
               for folder in (root, root / BEST_SUBDIR))


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
