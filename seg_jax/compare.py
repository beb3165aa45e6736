"""Compares finished runs as the course project did: tables, curves, predictions, confusions.

    python -m seg_jax.compare RUN_DIR [RUN_DIR ...] --output DIR [--eval best|latest]

For each run (a ``--workdir``) it reads ``config.json``, ``history.jsonl`` and the chosen
evaluation of its training (``eval/<split>_<step>.json``: the best by mIoU, or the latest;
the records of ``--mode eval``, ``eval/<split>_<step>_<suffix>.json``, measure other weights or
another inference and are not compared), and writes

* ``DIR/results.md``: the course's table (building, traffic sign, person, car,
  bicycle, mIoU, pixel accuracy) in the official IoU and in the course's stricter seed IoU,
  and a cost table (parameters, forward GFLOPs per image at the training crop, training
  images/s, training and evaluation wall time);
* ``DIR/results.json``: the same numbers, per run;
* ``DIR/curves.png``: every run's validation mIoU against steps;
* ``DIR/predictions.png``: a few validation images, their ground truth and each run's
  prediction (from the checkpoint of the chosen evaluation), titled by run;
* ``DIR/confusion.png``: each run's confusion matrix of the chosen evaluation, rows normalised,
  side by side on one colour scale, titled by run, step and mIoU.

Runs are compared only on the same evaluation: a run without one is reported and left out, and
runs that differ in dataset, split or number of classes are refused, never mixed.
"""

import argparse
import functools
import glob
import json
import os
import re
import statistics
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from seg_jax import console, figures, inference, parallel, restore
from seg_jax.data import pipeline
from seg_jax.data.classes import ClassTable, class_table
from seg_jax.errors import ConfigError, SegJaxError
from seg_jax.files import write_atomically
from seg_jax.history import HISTORY_FILE, best_evaluation, read_history, total_seconds
from seg_jax.summary import model_summary
from seg_jax.tables import percent
from seg_jax.workdir import json_safe, resolved_config, stored_config, with_defaults

COURSE_COLUMNS = ('building', 'sign', 'person', 'car', 'bicycle')  # the course table's headers


def eval_records(run: str, split: str) -> list[dict[str, Any]]:
    """Every evaluation of ``split`` by ``run``'s training (``eval/<split>_<step>.json``, not
    the ``--mode eval`` records beside them), by step."""
    records = []
    training = re.compile(re.escape(split) + r'_\d+\.json')
    for path in glob.glob(os.path.join(run, 'eval', f'{split}_*.json')):
        if not training.fullmatch(os.path.basename(path)):
            continue
        with open(path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda record: record['step'])


def _dataset(config: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two runs' numbers to compare: the data (for Cityscapes, not where
    it lives; an own data set is its folder and layout), its classes and how it is evaluated.
    ``config`` is a resolved config on today's defaults, so runs of older versions compare."""
    data = config['data']
    dataset = {'source': 'cityscapes' if data['source'] in ('tfds', 'folder') else data['source']}
    if data['source'] == 'synthetic':
        dataset['synthetic'] = data['synthetic']
    if data['source'] in ('pairs', 'voc', 'ade20k'):
        dataset['dir'] = os.path.abspath(os.path.expanduser(data['dir']))
    if data['source'] == 'pairs':
        dataset['pairs'] = data['pairs']
    for key in ('eval_scale', 'eval_size', 'classes'):
        dataset[key] = data[key]
    return dataset


class Run:
    """One run directory: its config, history and the evaluation chosen to compare."""

    def __init__(self, directory: str, which: str, split: str):
        self.directory = os.path.normpath(directory)
        self.name = os.path.basename(self.directory)
        self.config = stored_config(directory)
        if self.config is None:
            raise ConfigError(f'{directory} is not a seg_jax run: it has no config.json. Pass '
                              'the --workdir of a training run.')
        self.history = read_history(os.path.join(directory, HISTORY_FILE))
        records = eval_records(directory, split)
        self.eval = None
        if records:
            self.eval = best_evaluation(records) if which == 'best' else records[-1]

    @property
    def dataset(self) -> dict[str, Any]:
        return _dataset(resolved_config(self.config_dict))

    @property
    def config_dict(self) -> ml_collections.ConfigDict:
        """The run's config on today's defaults (a run of an older version builds too)."""
        return with_defaults(self.config)

    @functools.cached_property
    def table(self) -> ClassTable:
        return class_table(self.config_dict.data.classes)

    @property
    def num_classes(self) -> int:
        return self.config['model']['num_classes']


def check_comparable(runs: list[Run]) -> None:
    """Refuses runs whose numbers do not compare: other classes, data or evaluation images."""
    first = runs[0]
    problems = []
    for run in runs[1:]:
        if run.num_classes != first.num_classes:
            problems.append(f'{run.name} has model.num_classes={run.num_classes} but '
                            f'{first.name} has {first.num_classes}')
        if run.dataset != first.dataset:
            problems.append(f'{run.name} was trained and evaluated on {run.dataset} but '
                            f'{first.name} on {first.dataset}')
        if run.eval['num_images'] != first.eval['num_images']:
            problems.append(f'{run.name} was evaluated on {run.eval["num_images"]} images but '
                            f'{first.name} on {first.eval["num_images"]}')
    if problems:
        raise ConfigError('These runs do not compare: ' + '; '.join(problems) + '. Compare runs '
                          'of one dataset and class set (run the comparison once per group).')


def _train_images_per_s(run: Run) -> float | None:
    rates = [event['images_per_s'] for event in run.history
             if event['kind'] == 'train' and 'images_per_s' in event]
    return statistics.median(rates[1:] or rates) if rates else None  # the first one compiles


def run_row(run: Run) -> dict[str, Any]:
    """Every number the tables show for ``run``."""
    summary = model_summary(run.config_dict)
    record = run.eval
    model = run.config['model']
    marked = run.table.marked
    return {
        'run': run.name, 'directory': run.directory,
        'model': model['name'] + (f' ({model["backbone"]})' if model.get('backbone') else ''),
        'loss': run.config['loss']['name'], 'step': record['step'], 'split': record['split'],
        'num_images': record['num_images'],
        'iou': {name: record['iou'][name] for name in marked},
        'seed_iou': {name: record['seed_iou'][name] for name in marked},
        'miou': record['miou'], 'seed_miou': record['seed_miou'],
        'pixel_accuracy': record['pixel_accuracy'],
        'inference': record.get('inference'),
        'parameters': summary['parameters'],
        'gflops_per_image': summary['flops_per_image'] / 1e9,
        'crop': list(run.config['data']['crop_size']),
        'train_images_per_s': _train_images_per_s(run),
        'train_seconds': total_seconds(run.history, 'train'),
        'eval_seconds': total_seconds(run.history, 'eval'),
    }


def _minutes(seconds: float | None) -> str:
    return '-' if seconds is None else f'{seconds / 60:.1f}'


def results_markdown(rows: list[dict[str, Any]], skipped: list[str], which: str,
                     table: ClassTable) -> str:
    """The course's table twice (official and seed IoU), the cost table, and what was left out.
    Its class columns are those ``table`` marks (Cityscapes: the course's five; none for a
    table that marks none)."""
    columns = COURSE_COLUMNS if table.is_cityscapes else table.marked
    header = '| run | model | loss | ' + ''.join(f'{c} | ' for c in columns) + 'mIoU | pixel acc |'
    rule = '|---|---|---|' + '---:|' * (len(columns) + 2)
    lines = [f'# Results ({rows[0]["split"]}, {int(rows[0]["num_images"])} images, the {which} '
             'evaluation of each run)', '']
    for title, key, mean in ((f'Official {"Cityscapes " if table.is_cityscapes else ""}IoU (%)',
                              'iou', 'miou'),
                             ("The course's seed IoU (%): predictions on void pixels count as "
                              'false positives', 'seed_iou', 'seed_miou')):
        lines += [f'## {title}', '', header, rule]
        for row in rows:
            cells = [percent(row[key][name]) for name in table.marked]
            lines.append(f'| {row["run"]} | {row["model"]} | {row["loss"]} | '
                         + ''.join(f'{cell} | ' for cell in cells) + f'{percent(row[mean])} | '
                         f'{percent(row["pixel_accuracy"])} |')
        lines.append('')
    lines += ['## Cost', '', '| run | step | parameters | GFLOPs / image (crop) | train images/s '
              '| train min | eval min |', '|---|---:|---:|---:|---:|---:|---:|']
    for row in rows:
        rate = row['train_images_per_s']
        lines.append(f'| {row["run"]} | {row["step"]} | {row["parameters"]:,} | '
                     f'{row["gflops_per_image"]:.1f} ({row["crop"][0]}x{row["crop"][1]}) | '
                     f'{"-" if rate is None else f"{rate:.1f}"} | '
                     f'{_minutes(row["train_seconds"])} | {_minutes(row["eval_seconds"])} |')
    if skipped:
        lines += ['', '## Not compared', ''] + [f'* {reason}' for reason in skipped]
    return '\n'.join(lines) + '\n'


def curves_png(runs: list[Run], split: str) -> bytes:
    """Validation mIoU of every run against steps, on one plot."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(7, 4.5))
    axis = figure.add_subplot()
    for run in runs:
        events = [e for e in run.history if e['kind'] == 'eval' and e.get('split') == split]
        axis.plot([e['step'] for e in events], [100 * e['miou'] for e in events], marker='o',
                  markersize=3, label=run.name)
    axis.set_xlabel('step')
    axis.set_ylabel(f'{split} mIoU (%)')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figures.figure_png(figure)


def predictions_png(runs: list[Run], num_images: int) -> bytes:
    """The first ``num_images`` images of the evaluated split | ground truth | each run's
    prediction, from the checkpoint of the evaluation compared (best or latest step)."""
    first = runs[0].config_dict
    split = runs[0].eval['split']
    batch = next(pipeline.build_input(first, split))
    keep = batch['mask'][:num_images]
    images, labels = batch['image'][:num_images][keep], batch['label'][:num_images][keep]
    mesh = parallel.data_mesh()
    palette = runs[0].table.palette
    columns = [figures.denormalize(images), figures.colorize(labels, palette)]
    titles = ['image', 'ground truth']
    # The batch is sharded over the devices: pad it to a multiple of them with its first image.
    padding = np.repeat(images[:1], -len(images) % jax.device_count(), axis=0)
    global_images = parallel.global_batch({'image': np.concatenate([images, padding])}, mesh)
    for run in runs:
        trained = restore.load_trained_model(run.config_dict, run.directory, mesh,
                                             str(run.eval['step']))
        predict = inference.make_predict_fn(trained.model, _inference_of(run.eval), mesh)
        classes = parallel.local_rows(predict(trained.variables, global_images))
        columns.append(figures.colorize(classes[:len(images)], palette))
        titles.append(run.name)
    return figures.titled_png(figures.tile_grid(columns), titles)


def confusion_panels(runs: list[Run]) -> list[tuple[str, np.ndarray]]:
    """Each run's title (name, step, mIoU) and confusion matrix of the compared evaluation."""
    return [(f'{run.name}: step {run.eval["step"]}, mIoU {percent(run.eval["miou"])}%',
             np.asarray(run.eval['confusion'])) for run in runs]


def confusion_png(runs: list[Run]) -> bytes:
    """The compared evaluations' confusion matrices side by side, on one colour scale
    (``figures.confusion_figure``)."""
    table = runs[0].table
    return figures.figure_png(figures.confusion_figure(confusion_panels(runs), table.names,
                                                       table.marked, table.marked_title))


def _inference_of(record: dict[str, Any]) -> inference.InferenceSettings:
    """The inference the evaluation ran (whole image for records that do not say)."""
    settings = record.get('inference') or {}
    pairs = {key: tuple(settings[key]) if settings.get(key) else None
             for key in ('window', 'stride')}
    return inference.InferenceSettings(**pairs, scales=tuple(settings.get('scales', (1.0,))),
                                       flip=bool(settings.get('flip', False)))


def compare(run_dirs: list[str], output: str, which: str = 'best', num_images: int = 3,
            split: str = 'validation') -> dict[str, Any]:
    """Writes the five files of the module docstring into ``output``; returns results.json's
    content."""
    runs, skipped = [], []
    for directory in run_dirs:
        run = Run(directory, which, split)
        if run.eval is None:
            skipped.append(f'{run.name} ({run.directory}): no {split} evaluation yet '
                           f'(no eval/{split}_<step>.json)')
        else:
            runs.append(run)
    for reason in skipped:
        print(f'warning: not compared: {reason}', file=sys.stderr)
    if not runs:
        raise ConfigError(f'None of the runs has a {split} evaluation to compare: '
                          + '; '.join(skipped) + '. Train them (evaluation runs at the end) or '
                          'run --mode eval in each.')
    check_comparable(runs)
    rows = [run_row(run) for run in runs]
    results = {'split': split, 'evaluation': which, 'runs': rows, 'not_compared': skipped}
    write_atomically(os.path.join(output, 'results.md'),
                     results_markdown(rows, skipped, which, runs[0].table).encode())
    write_atomically(os.path.join(output, 'results.json'),
                     (json.dumps(json_safe(results), indent=1) + '\n').encode())
    write_atomically(os.path.join(output, 'curves.png'), curves_png(runs, split))
    write_atomically(os.path.join(output, 'predictions.png'), predictions_png(runs, num_images))
    write_atomically(os.path.join(output, 'confusion.png'), confusion_png(runs))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m seg_jax.compare',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', metavar='RUN_DIR', help='workdirs of training runs')
    parser.add_argument('--output', required=True, help='folder for the five result files')
    parser.add_argument('--eval', choices=('best', 'latest'), default='best',
                        help="each run's evaluation to compare: its best by mIoU or its latest")
    parser.add_argument('--images', type=int, default=3, help='rows of predictions.png')
    console.add_verbosity_argument(parser)
    parser.add_argument('--split', default='validation')
    args = parser.parse_args(argv)
    console.configure(args.verbosity)
    try:
        compare(args.runs, args.output, args.eval, args.images, args.split)
    except SegJaxError as error:
        sys.exit(f'error: {error}')
    print(f'Wrote results.md, results.json, curves.png, predictions.png and confusion.png to '
          f'{args.output}.')


if __name__ == '__main__':
    main()
