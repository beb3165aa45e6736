"""The lines a finished training ends on: what it achieved, where its results are, what next.

A run's console scrolls through progress updates and one table per evaluation; at the end a
user wants the answer (the final and the best validation mIoU, official and the course's seed
IoU, with their steps), the cost (training and evaluation time), the files to open, and the
commands that evaluate or apply this run, ready to copy. Everything is read back from what the
run wrote (``history.jsonl``, the workdir's folders), so a resumed run reports the whole run.
"""

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from seg_jax.checkpoints import BEST_SUBDIR
from seg_jax.history import HISTORY_FILE, best_evaluation, read_history, total_seconds
from seg_jax.tables import percent
from seg_jax.workdir import checkpoint_dir


def duration(seconds: float) -> str:
    """``1h02m``, ``12m05s`` or ``42s``: what a person reads at a glance."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f'{hours}h{minutes:02d}m'
    return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


def command_for(argv: Sequence[str], mode: str, *extra: str) -> str:
    """The ``python -m seg_jax.main`` command of ``argv`` (this process's ``sys.argv``) with
    ``--mode mode`` instead of its own and ``extra`` flags appended: the user's config, workdir
    and overrides stay as they were typed, so the command restores this very run."""
    kept, skip_next = [], False
    for argument in argv[1:]:
        if skip_next:
            skip_next = False
        elif argument == '--mode':
            skip_next = True
        elif not argument.startswith('--mode='):
            kept.append(argument)
    words = ['python', '-m', 'seg_jax.main', *kept, '--mode', mode, *extra]
    return ' '.join(shlex.quote(word) for word in words)


def _score(event: Mapping[str, Any]) -> str:
    return (f'{percent(event["miou"])}% (seed mIoU {percent(event["seed_miou"])}%) '
            f'at step {event["step"]}')


def _steps(folder: str) -> list[int]:
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def run_report(workdir: str, steps: int, argv: Sequence[str]) -> str:
    """The end-of-training summary of ``workdir``, trained for ``steps`` (see the module
    docstring); ``argv`` is the training command, to derive the eval and predict commands from."""
    history = read_history(os.path.join(workdir, HISTORY_FILE))
    evaluations = [event for event in history if event['kind'] == 'eval']
    lines = [f'Training finished: {steps} steps.']
    if evaluations:
        final = evaluations[-1]
        best = best_evaluation(evaluations)
        lines.append(f'{final["split"]} mIoU: final {_score(final)}; best {_score(best)}.')
    times = [f'{label} {duration(seconds)}' for label, seconds in
             (('training', total_seconds(history, 'train')),
              ('evaluation', total_seconds(history, 'eval'))) if seconds is not None]
    if times:
        lines.append('Time: ' + ', '.join(times) + '.')

    last_step = evaluations[-1]['step'] if evaluations else None
    outputs = [('curves', os.path.join('plots', 'curves.png')),
               ('predictions', os.path.join('plots', f'predictions_{last_step}.png')),
               ('confusion matrix', os.path.join('plots', f'confusion_{last_step}.png')),
               ('eval records', 'eval' + os.sep),
               ('TensorBoard', 'tensorboard' + os.sep)]
    found = [(label, os.path.join(workdir, path)) for label, path in outputs
             if os.path.exists(os.path.join(workdir, path))]
    checkpoints = checkpoint_dir(workdir)
    periodic, best_steps = _steps(checkpoints), _steps(os.path.join(checkpoints, BEST_SUBDIR))
    if periodic or best_steps:
        found.append(('checkpoints', f'{checkpoints}{os.sep} (steps '
                      f'{", ".join(map(str, periodic)) or "none"}; best: '
                      f'{", ".join(map(str, best_steps)) or "none"})'))
    if found:
        width = max(len(label) for label, _ in found)
        lines.append(f'Results in {workdir}:')
        lines += [f'  {label:<{width}}  {path}' for label, path in found]
    if any(label == 'TensorBoard' for label, _ in found):
        lines.append(f'  (view: tensorboard --logdir {shlex.quote(workdir)})')
    lines.append('Evaluate: ' + command_for(argv, 'eval'))
    lines.append('Predict:  ' + command_for(argv, 'predict', '--config.predict.input=IMAGES'))
    return '\n'.join(lines)
