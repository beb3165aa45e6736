"""A trained model for use: a workdir's checkpoint or a pretrained file -> model + variables.

``--mode eval``, ``--mode predict`` and the run comparison all start here. The network is built
once from ``config.model`` and the variables are restored straight into its abstract shapes,
replicated over the mesh, whatever number of processes and devices wrote them. A workdir with
no checkpoint falls back to ``config.model.pretrained`` (a downloaded model-zoo file, say),
which must then fill every variable of the model: evaluating random weights measures nothing.
"""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from seg_jax import checkpoints, damaged_checkpoints, optim, parallel, pretrained
from seg_jax.errors import CheckpointError, first_few
from seg_jax.models import build_model
from seg_jax.state import TrainState, abstract_train_state
from seg_jax.summary import abstract_variables
from seg_jax.workdir import check_trained_model, checkpoint_dir


@dataclasses.dataclass
class TrainedModel:
    """The network and the variables eval, predict and compare run, and where they come from."""
    model: nn.Module
    variables: dict[str, Any]  # {'params', 'batch_stats'}, replicated over the mesh
    step: int  # the checkpoint's step; 0 for a pretrained file
    source: str  # 'checkpoint' | 'pretrained'
    path: str  # the workdir, or the pretrained file

    @property
    def record(self) -> dict[str, Any]:
        """What eval records say of the weights."""
        return {'source': self.source, 'path': self.path, 'step': self.step}

    def describe(self) -> str:
        if self.source == 'pretrained':
            return f'the pretrained file {self.path} (config.model.pretrained)'
        return f'step {self.step} of {self.path}'


def restore_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str,
                       mesh: jax.sharding.Mesh, model: nn.Module | None = None) -> TrainState:
    """The state saved in ``workdir`` as ``which`` ('latest', 'best' or a step), replicated over
    ``mesh``; refused in one line when ``config.model`` is not the model trained there."""
    folder = checkpoint_dir(workdir)
    if not os.path.isdir(folder):  # checked first: opening a Checkpointer creates it
        raise CheckpointError(f'No checkpoint in {folder}; train first, pass the '
                              '--workdir of a run that has trained, or evaluate a trained '
                              'weights file with --config.model.pretrained=FILE.')
    check_trained_model(config, workdir)
    model = model or build_model(config.model)
    tx = optim.restorable_optimizer(config)  # the optimiser state is part of what was saved
    target = abstract_train_state(model, tx, tuple(config.data.crop_size), config.seed, mesh)
    with checkpoints.Checkpointer(folder, keep=config.keep_checkpoints,
                                  read_only=True) as ckpt:
        try:
            return ckpt.restore(target, int(which) if which.isdigit() else which)
        except damaged_checkpoints.DamagedCheckpointError as damaged:
            intact = ckpt.intact_steps(target, excluding=damaged.folder)
            raise damaged_checkpoints.DamagedCheckpointError(
                damaged.step, damaged.folder, damaged.reason, _other_steps(intact)) from damaged


def _other_steps(intact: list[int]) -> str:
    """What to do instead of restoring a damaged step, given the steps that restore."""
    if not intact:
        return ('No other step there restores either: train again, in another --workdir or '
                'here (the first rerun of the training moves the damaged steps to <workdir>/'
                f'{damaged_checkpoints.DAMAGED_FOLDER}/ and stops; the next one starts from '
                'scratch).')
    return (f'The steps that restore are {intact} (evaluate or predict one with '
            f'--config.eval.checkpoint={intact[-1]}); {damaged_checkpoints.RESUME_ADVICE}')


def _pretrained_variables(config: ml_collections.ConfigDict, model: nn.Module,
                          mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """``config.model.pretrained`` loaded as it is, replicated over ``mesh``; refused when it
    leaves a variable freshly initialised (an ImageNet backbone, another class count)."""
    target = abstract_variables(model, (1, *config.data.crop_size, 3))
    variables, report = pretrained.load_pretrained(target, config.model)
    if report.fresh:
        names = list(report.fresh)
        raise pretrained.WeightsError(
            f'{config.model.pretrained} does not hold the whole configured model: '
            f'{len(names)} variables would be random ({first_few(names, 3)}; '
            f'{report.fresh[names[0]]}). Evaluating needs a trained model (e.g. an mmseg '
            'model-zoo checkpoint with its config, README "Model zoo"), or train first.')
    if jax.process_index() == 0:
        print(report.summary(), flush=True)
    return jax.device_put({'params': variables['params'],
                           'batch_stats': variables.get('batch_stats', {})},
                          parallel.replicated(mesh))


def load_trained_model(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh, which: str | None = None) -> TrainedModel:
    """Checkpoint ``which`` (default ``config.eval.checkpoint``) of ``workdir``, or, when the
    workdir has no checkpoint at all, ``config.model.pretrained`` (said on screen)."""
    model = build_model(config.model)
    folder = checkpoint_dir(workdir)
    if config.model.pretrained and not checkpoints.has_checkpoint(folder):
        if jax.process_index() == 0:
            print(f'No checkpoint in {folder}: using config.model.pretrained '
                  f'({config.model.pretrained}) as it is.', flush=True)
        return TrainedModel(model, _pretrained_variables(config, model, mesh), 0, 'pretrained',
                            config.model.pretrained)
    which = str(config.eval.checkpoint) if which is None else which
    state = restore_checkpoint(config, workdir, which, mesh, model)
    return TrainedModel(model, {'params': state.params, 'batch_stats': state.batch_stats},
                        int(jax.device_get(state.step)), 'checkpoint', workdir)
