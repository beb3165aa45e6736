"""What a user sees: the demo command's console, its closing summary, and the console's rules."""

import io
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys

import pytest
import tqdm

from conftest import REPO
from seg_jax import console
from seg_jax.progress import Progress
from seg_jax.run_report import command_for, duration, run_report

# The prefix of an absl-formatted record (``I1203 05:33:27.807151 1403 file.py:5] ...``): any
# such line is a library (or absl) speaking, never seg_jax.
ABSL_RECORD = re.compile(r'^[IWEF]\d{4} \d\d:\d\d:\d\d', re.MULTILINE)


def assert_no_library_records(printed: str) -> None:
    record = ABSL_RECORD.search(printed)
    assert record is None, printed[record.start():record.start() + 1000]


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The README's demo command at tiny size, run once, as a user's shell runs it: without
    the test suite's TF_CPP_MIN_LOG_LEVEL."""
    root = tmp_path_factory.mktemp('demo')
    workdir = root / 'demo'
    overrides = ['--config.data.dir=' + str(root / 'data'),
                 '--config.data.synthetic.num_train=16', '--config.data.synthetic.num_val=6',
                 '--config.data.synthetic.num_test=1', '--config.data.synthetic.height=64',
                 '--config.data.synthetic.width=128', '--config.data.crop_size=(64, 128)',
                 '--config.model.width=0.125', '--config.num_train_steps=4',
                 '--config.schedule.warmup_steps=0', '--config.log_every_steps=2',
                 '--config.eval_every_steps=4', '--config.checkpoint_every_steps=2',
                 '--config.eval.batch_size=8']
    env = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
    result = subprocess.run(
        [sys.executable, '-m', 'seg_jax.main', '--config', str(REPO / 'configs' / 'demo.py'),
         '--workdir', str(workdir), *overrides], capture_output=True, text=True, timeout=600,
        cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result, env


def test_demo_command_leaves_every_output(demo):
    workdir, result, _ = demo
    for path in ('config.json', 'history.jsonl', 'eval/validation_4.json', 'plots/curves.png',
                 'plots/predictions_4.png', 'plots/confusion_4.png', 'checkpoints/4'):
        assert (workdir / path).exists(), path
    assert list((workdir / 'tensorboard').rglob('events.out.tfevents.*'))
    assert 'building' in result.stdout  # the per-class table was printed
    assert json.loads((workdir / 'config.json').read_text())['model']['name'] == 'unet'


def test_the_demo_prints_seg_jax_only_one_bar_and_no_library_chatter(demo):
    _, result, _ = demo
    printed = result.stdout + result.stderr
    assert_no_library_records(printed)
    assert 'oneDNN' not in printed and 'orbax' not in printed
    # Into a pipe, the progress bar is one line per log step (2 and 4), nothing in between.
    assert re.findall(r'^ *\d+% (\d+)/(\d+) \[.*loss=', result.stderr, re.MULTILINE) == [
        ('2', '4'), ('4', '4')]
    assert '\r' not in printed
    # Each step's numbers appear once, in the bar, not again as a log line.
    assert 'step 4/4: loss' not in printed
    assert result.stdout.count('Step 4, validation') == 1


def test_the_demo_ends_on_its_results_and_the_commands_that_use_them(demo):
    workdir, result, _ = demo
    history = [json.loads(line) for line in (workdir / 'history.jsonl').read_text().splitlines()]
    final = [event for event in history if event['kind'] == 'eval'][-1]
    summary = result.stdout[result.stdout.index('Training finished: 4 steps.'):]
    assert (f'validation mIoU: final {100 * final["miou"]:.1f}% (seed mIoU '
            f'{100 * final["seed_miou"]:.1f}%) at step 4') in summary
    trained = sum(event['seconds'] for event in history if event['kind'] == 'train')
    assert f'training {duration(trained)}' in summary
    for path in ('plots/curves.png', 'plots/predictions_4.png', 'plots/confusion_4.png',
                 'eval/', 'tensorboard/'):
        assert str(workdir / path) in summary, path
    assert f'{workdir / "checkpoints"}/ (steps 2, 4; best: 4)' in summary
    assert f'tensorboard --logdir {workdir}' in summary
    # The eval command, run as printed (from where the user ran training), evaluates this run:
    # the same numbers, as quietly.
    command = shlex.split(re.search(r'^Evaluate: (.*)$', summary, re.MULTILINE).group(1))
    assert command[:3] == ['python', '-m', 'seg_jax.main'] and '--mode' in command
    evaluation = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                                timeout=600, cwd=workdir.parent, env=demo[2])
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert re.search(r'^mean +([\d.]+)', evaluation.stdout, re.MULTILINE).group(1) == (
        f'{100 * final["miou"]:.1f}')
    assert_no_library_records(evaluation.stdout + evaluation.stderr)
    predict = re.search(r'^Predict:  (.*)$', summary, re.MULTILINE).group(1)
    assert predict.endswith('--mode predict --config.predict.input=IMAGES')


def test_commands_keep_the_users_flags_and_replace_the_mode():
    argv = ['/site/seg_jax/main.py', '--config', 'configs/demo.py', '--mode', 'train',
            '--workdir=runs/my run', '--config.model.width=0.5', '--mode=train']
    assert command_for(argv, 'eval') == ("python -m seg_jax.main --config configs/demo.py "
                                         "'--workdir=runs/my run' --config.model.width=0.5 "
                                         "--mode eval")
    assert command_for(argv, 'predict', '--config.predict.input=IMAGES').endswith(
        '--mode predict --config.predict.input=IMAGES')


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (4.4, 59.6, 61, 725, 3720)] == ['4s', '1m00s', '1m01s',
                                                                 '12m05s', '1h02m']


def test_the_report_names_the_best_and_the_final_evaluation(tmp_path):
    events = [{'step': 2, 'kind': 'train', 'seconds': 30.0},
              {'step': 2, 'kind': 'eval', 'split': 'validation', 'miou': 0.5, 'seed_miou': 0.4,
               'seconds': 5.0},
              {'step': 4, 'kind': 'train', 'seconds': 30.0},
              {'step': 4, 'kind': 'eval', 'split': 'validation', 'miou': math.nan,
               'seed_miou': math.nan, 'seconds': 5.0}]
    (tmp_path / 'history.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in events))
    report = run_report(str(tmp_path), 4, ['main.py', '--workdir', str(tmp_path)])
    assert ('validation mIoU: final -% (seed mIoU -%) at step 4; best 50.0% (seed mIoU 40.0%) '
            'at step 2.') in report
    assert 'Time: training 1m00s, evaluation 10s.' in report
    assert 'Results in' not in report  # nothing was written but the history: nothing listed


@pytest.fixture
def configured():
    """console.configure for one test (conftest puts the loggers back after it)."""
    yield console.configure
    console.set_process_index(0)


def test_quiet_by_default_and_the_libraries_back_at_verbosity_zero(configured, capfd, caplog):
    configured(console.QUIET)
    logging.getLogger('absl').info('orbax-like chatter')
    logging.getLogger('jax._src.xla_bridge').info('backend chatter')
    logging.getLogger('absl').warning('a library warning')
    logging.getLogger('seg_jax.train').info('Resumed from step 2.')
    logging.getLogger('seg_jax.train').warning('Skipped 1 steps.')
    logging.getLogger('seg_jax.train').debug('step 4/4: loss 1.0')
    # Libraries' records reach the root's handlers (pytest's here) from WARNING up only, and
    # seg_jax's do not (they would be printed twice).
    assert [r.getMessage() for r in caplog.records] == ['a library warning']
    # seg_jax's own go to stderr once each, plain, through seg_jax's handler.
    assert capfd.readouterr().err == 'Resumed from step 2.\nwarning: Skipped 1 steps.\n'
    caplog.clear()
    configured(0)
    logging.getLogger('absl').info('orbax-like chatter')
    assert [r.getMessage() for r in caplog.records] == ['orbax-like chatter']
    configured(1)
    logging.getLogger('seg_jax.train').debug('step 4/4: loss 1.0')
    assert 'step 4/4: loss 1.0' in capfd.readouterr().err


def test_other_processes_print_only_warnings_and_their_own_facts(configured, capfd):
    configured(console.QUIET)
    console.set_process_index(1)
    log = logging.getLogger('seg_jax.distributed')
    log.info('said by process 0')
    log.info('Process 1 of 2 joined.', extra=console.EVERY_PROCESS)
    log.warning('this process cannot write')
    err = capfd.readouterr().err
    assert 'said by process 0' not in err
    assert 'Process 1 of 2 joined.' in err and 'warning: this process cannot write' in err


def test_a_message_during_training_is_written_above_the_progress_bar(configured):
    configured(console.QUIET)
    stream = io.StringIO()
    handler = logging.getLogger(console.LOGGER_NAME).handlers[-1]
    handler.setStream(stream)
    bar = tqdm.tqdm(total=4, file=stream, ncols=60)
    bar.update(1)
    logging.getLogger('seg_jax.train').warning('Skipped 1 steps.')
    bar.close()
    text = stream.getvalue()
    start = text.index('warning: Skipped 1 steps.')
    assert text[start - 1] in '\r\n'  # the bar's line was cleared first, not continued
    assert '1/4' in text[start:]  # and the bar was drawn again below the message


class _RaisesWhenCollected:
    def __init__(self, message: str):
        self.message = message

    def __del__(self):
        raise RuntimeError(self.message)


def test_a_closed_loop_callback_after_a_failed_save_prints_nothing_other_errors_do(configured,
                                                                                     capfd):
    configured(console.QUIET)
    _RaisesWhenCollected('Event loop is closed')  # what TensorStore's late callbacks raise
    assert capfd.readouterr().err == ''
    _RaisesWhenCollected('something else went wrong')
    assert 'RuntimeError: something else went wrong' in capfd.readouterr().err
    configured(1)  # asked for everything: nothing is filtered
    _RaisesWhenCollected('Event loop is closed')
    assert 'Event loop is closed' in capfd.readouterr().err


class _Pending:
    def __await__(self):
        yield


def _abandoned_read(filename: str) -> None:
    """A coroutine named as orbax's array read, defined in ``filename``, left unfinished and
    collected: closing it raises the read's error, as orbax's reads of a failed restore do."""
    source = ('async def _read_array_index_and_device_put(pending):\n'
              '    try:\n'
              '        await pending\n'
              '    except GeneratorExit:\n'
              '        raise Exception("the array cannot be read")\n')
    namespace = {}
    exec(compile(source, filename, 'exec'), namespace)
    coroutine = namespace['_read_array_index_and_device_put'](_Pending())
    coroutine.send(None)  # suspended at the read
    del coroutine  # collected unfinished: Python reports the error as unraisable


def test_an_abandoned_orbax_read_of_a_failed_restore_prints_nothing_other_coroutines_do(
        configured, capfd):
    configured(console.QUIET)
    _abandoned_read(os.path.join(os.sep, 'lib', 'orbax', 'checkpoint', 'serialization.py'))
    assert capfd.readouterr().err == ''
    _abandoned_read(os.path.join(os.sep, 'lib', 'elsewhere', 'reader.py'))
    assert 'the array cannot be read' in capfd.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


SCALARS = {'loss': 0.5, 'learning_rate': 1e-3, 'images_per_s': 12.0}


def test_progress_is_a_bar_on_a_terminal_and_a_line_per_update_in_a_file():
    log = io.StringIO()
    progress = Progress(10, 4, stream=log)  # resumed at step 4
    progress.update(6, SCALARS)
    progress.update(8, SCALARS)
    progress.close()
    lines = log.getvalue().splitlines()
    assert [line.split(' [')[0] for line in lines] == [' 60% 6/10', ' 80% 8/10']
    assert all('loss=0.5000, lr=1.00e-03, img_s=12.0]' in line for line in lines)
    terminal = _Terminal()
    progress = Progress(10, 4, stream=terminal)
    progress.update(6, SCALARS)
    progress.close()
    assert '\r' in terminal.getvalue() and '6/10' in terminal.getvalue()
    quiet = io.StringIO()  # processes other than 0
    progress = Progress(10, 4, enabled=False, stream=quiet)
    progress.update(6, SCALARS)
    progress.close()
    assert quiet.getvalue() == ''


def test_a_tool_that_loads_tensorflow_with_its_modules_prints_nothing_of_it():
    # seg_jax.compare imports the input pipeline, hence TensorFlow, before it parses its flags:
    # TensorFlow's oneDNN notice (printed at load on CPUs where oneDNN's kernels are on) must be
    # off by then, in a shell without the suite's settings.
    env = {key: value for key, value in os.environ.items()
           if key not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')}
    result = subprocess.run([sys.executable, '-m', 'seg_jax.compare', '--help'],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0 and result.stdout.startswith('usage: python -m seg_jax.compare')
    assert result.stderr == ''
