"""The run's health: steps whose loss or gradients were not finite, counted on the devices.

The train step records such steps in a small device-side record (``initial`` ->
``record_step``) and changes nothing else for them, so watching for NaNs costs no host
round-trip per step. The loop reads the record only when it logs, evaluates or saves
(``check``), stopping once more steps were skipped than ``config.skip_nonfinite_steps`` allows,
and checks the whole state (``check_state``) before it leaves the devices, so a non-finite state
is never evaluated or saved.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import parallel
from seg_jax.errors import SegJaxError

Health = dict[str, jax.Array]


class NonFiniteLossError(SegJaxError, FloatingPointError):
    """The loss or the gradients became NaN or infinite; the last good checkpoint is kept."""


LIKELY_CAUSES = (
    'Likely causes: a learning rate too high for this model and batch (lower '
    'config.optimizer.learning_rate or add config.schedule.warmup_steps); float overflow in '
    "bfloat16 compute (try config.model.compute_dtype='float32'); bad labels or images (NaN "
    'pixels, label ids outside the table, a corrupt file; see config.data.skip_bad_examples). '
    'config.skip_nonfinite_steps=N skips up to N such steps instead of stopping.')
# What was not finite at the first bad step, as ``first_kind`` records it.
KINDS = {1: 'the loss', 2: 'the gradients'}


def initial(mesh: jax.sharding.Mesh) -> Health:
    """No bad step yet: the first and latest bad step (-1 before any), how many there were, and
    what was not finite at the first (``KINDS``), replicated over ``mesh``."""
    record = {'first_step': -1, 'last_step': -1, 'count': 0, 'first_kind': 0}
    return jax.device_put({key: jnp.int32(value) for key, value in record.items()},
                          parallel.replicated(mesh))


def all_finite(tree) -> jax.Array:
    """Whether every element of every array in ``tree`` is finite (True for an empty tree)."""
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(leaf))
                                              for leaf in jax.tree.leaves(tree)), jnp.bool_(True))


def record_step(health: Health, step_number: jax.Array, loss_finite: jax.Array,
                grads_finite: jax.Array) -> Health:
    """``health`` after step ``step_number`` (numbered from 1, as the logs number steps);
    unchanged when the loss and the gradients were finite. Traced inside the train step."""
    first = health['count'] == 0
    bad = {'first_step': jnp.where(first, step_number, health['first_step']),
           'last_step': step_number,
           'count': health['count'] + 1,
           'first_kind': jnp.where(first, jnp.where(loss_finite, 2, 1), health['first_kind'])}
    finite = loss_finite & grads_finite
    return jax.tree.map(lambda after, before: jnp.where(finite, before, after), bad, health)


def check(health: Health, allowed: int, checkpoint_dir: str) -> int:
    """Raises once more than ``allowed`` steps were not finite; returns how many were."""
    record = {key: int(value) for key, value in jax.device_get(health).items()}
    if record['count'] > allowed:
        where = (f'at step {record["first_step"]}' if record['count'] == 1 else
                 f'at {record["count"]} steps, the first at step {record["first_step"]} and the '
                 f'latest at step {record["last_step"]}')
        raise NonFiniteLossError(
            f'{KINDS[record["first_kind"]].capitalize()} became NaN or infinite '
            f'{where} (config.skip_nonfinite_steps={allowed}); training stopped, those steps '
            f'changed no parameters, and the last good checkpoint in {checkpoint_dir} is kept. '
            f'{LIKELY_CAUSES}')
    return record['count']


@jax.jit
def _state_is_finite(state) -> jax.Array:
    return all_finite((state.params, state.batch_stats, state.opt_state))


def check_state(state, step: int, checkpoint_dir: str) -> None:
    """Raises if the parameters, BatchNorm statistics or optimiser state of ``state`` are not
    finite (which finite losses and gradients do not rule out, e.g. an overflowing update)."""
    if not bool(_state_is_finite(state)):
        raise NonFiniteLossError(
            f'The parameters or optimiser state became NaN or infinite by step {step} '
            f'although every loss and gradient was finite; they were not saved, and the last '
            f'good checkpoint in {checkpoint_dir} is kept. {LIKELY_CAUSES}')


def finite_means(logged: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each metric's mean over the logged steps, leaving out the non-finite values of skipped
    steps (NaN if a metric has no finite value)."""
    means = {}
    for key in logged[0]:
        values = np.asarray([step_metrics[key] for step_metrics in logged], np.float64)
        finite = values[np.isfinite(values)]
        means[key] = float(finite.mean()) if finite.size else math.nan
    return means
