"""The optimiser and its learning-rate schedule, from ``config.optimizer`` and ``config.schedule``.

Every schedule is a function of the absolute update count ``t`` (optax's ``count``, 0 before the
first update), so step-decay boundaries fall on epoch multiples and poly / cosine reach their end
at ``total_steps`` whether or not there is a warmup. Warmup multiplies the schedule by
``min(1, t / warmup_steps)``: a linear ramp from 0 (mmsegmentation's linear warmup with ratio 0),
continuous where it ends.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from seg_jax.errors import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'step', 'poly', 'cosine')


def training_length(config: ml_collections.ConfigDict, num_train_examples: int
                    ) -> tuple[int, int]:
    """(total steps, steps per epoch): ``config.num_train_steps``, or ``config.num_epochs``
    converted with the training split's size; exactly one of the two is set."""
    steps_per_epoch = max(1, num_train_examples // config.global_batch_size)
    steps, epochs = config.num_train_steps, config.num_epochs
    if (steps is None) == (epochs is None):
        raise ConfigError('Set exactly one of config.num_train_steps and config.num_epochs '
                          f'(got num_train_steps={steps}, num_epochs={epochs}).')
    total = steps if steps is not None else int(math.ceil(epochs * steps_per_epoch))
    return total, steps_per_epoch


@struct.dataclass
class Schedule:
    """``config.schedule``'s learning rate as a function of the update count.

    Its kind (the name, and whether it warms up) shapes the formula; its numbers are the
    leaves of a pytree. The train step takes the schedule as an argument, so the numbers are
    values the compiled program reads rather than constants compiled into it: runs that differ
    only in their length or rates share one compiled step (found again by a persistent
    compilation cache), and a resumed run compiles what the new run did.
    """
    name: str = struct.field(pytree_node=False)
    warms_up: bool = struct.field(pytree_node=False)
    learning_rate: float
    total_steps: float  # poly and cosine end here
    warmup_steps: float
    end_value: float  # poly's floor
    power: float  # poly's exponent
    decay_every: float  # step's interval, in updates
    decay_factor: float  # step's factor

    def __call__(self, count: jax.Array) -> jax.Array:
        rate = self._decayed(count)
        if self.warms_up:
            rate = rate * jnp.minimum(1.0, count / self.warmup_steps)
        return rate

    def _decayed(self, count: jax.Array) -> jax.Array:
        """The rate at ``count`` without warmup."""
        if self.name == 'constant':
            return jnp.full(jnp.shape(count), self.learning_rate, jnp.float32)
        if self.name == 'step':
            return self.learning_rate * self.decay_factor ** jnp.floor(count / self.decay_every)
        if self.name == 'poly':
            remaining = 1.0 - jnp.clip(count, 0, self.total_steps) / self.total_steps
            return (self.learning_rate - self.end_value) * remaining ** self.power + self.end_value
        if self.name == 'cosine':
            done = jnp.minimum(count, self.total_steps) / self.total_steps
            return self.learning_rate * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        raise ValueError(f'{self.name!r} is not one of {list(SCHEDULES)}')


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                    steps_per_epoch: int | None = None
                    ) -> tuple[optax.GradientTransformation, Schedule]:
    """The optimiser and its schedule; the train step rebuilds the optimiser from the schedule
    it is given (``update_rule``), and logs the schedule's rate.

    Args:
      config: the full config; reads ``config.optimizer`` and ``config.schedule``.
      total_steps: number of optimiser updates in the whole run (poly and cosine end there).
      steps_per_epoch: updates per epoch; only the 'step' schedule needs it.
    """
    schedule = build_schedule(config.schedule, config.optimizer.learning_rate, total_steps,
                              steps_per_epoch)
    return update_rule(config.optimizer, schedule), schedule


def restorable_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The run's update rule on a constant schedule, for restoring a checkpoint.

    An optimiser's state has the same tree and shapes whatever its schedule (every schedule is
    a function of the update count, stored the same way), and that is all a restore needs; so
    evaluation and prediction need neither the training split nor the run's length.
    """
    return update_rule(config.optimizer, _schedule('constant', config.optimizer.learning_rate))


def build_schedule(config: ml_collections.ConfigDict, learning_rate: float, total_steps: int,
                   steps_per_epoch: int | None = None) -> Schedule:
    """``config.schedule``'s learning rate as a function of the update count."""
    if total_steps < 1:
        raise ConfigError(f'The number of training steps is {total_steps}; it must be positive '
                          '(set config.num_train_steps or config.num_epochs).')
    if config.warmup_steps < 0 or config.warmup_steps > total_steps:
        raise ConfigError(f'config.schedule.warmup_steps={config.warmup_steps} must lie in '
                          f'[0, {total_steps}] (the number of training steps); 0 means none.')
    if config.name != 'poly' and config.end_value:
        raise ConfigError(f'config.schedule.end_value={config.end_value} is the floor of the '
                          f"'poly' schedule; {config.name!r} has none. Set it to 0, or use "
                          "config.schedule.name='poly'.")
    if config.name not in SCHEDULES:
        raise ConfigError(f'config.schedule.name={config.name!r} is not a known schedule; use '
                          f'one of {list(SCHEDULES)}.')
    numbers = dict(total_steps=total_steps, warmup_steps=config.warmup_steps)
    if config.name == 'poly':
        numbers.update(end_value=_end_value(config, learning_rate), power=config.power)
    if config.name == 'step':
        numbers.update(decay_every=_step_interval(config, steps_per_epoch),
                       decay_factor=config.step_factor)
    return _schedule(config.name, learning_rate, **numbers)


def _schedule(name: str, learning_rate: float, total_steps: int = 1, warmup_steps: int = 0,
              end_value: float = 0.0, power: float = 1.0, decay_every: int = 1,
              decay_factor: float = 1.0) -> Schedule:
    """A ``Schedule`` with float leaves, the same types whatever the config, so that two
    schedules of one kind are the same pytree type to ``jax.jit``; numbers the kind does not
    use keep harmless defaults (no division by zero)."""
    return Schedule(name=name, warms_up=warmup_steps > 0, learning_rate=float(learning_rate),
                    total_steps=float(total_steps), warmup_steps=float(warmup_steps),
                    end_value=float(end_value), power=float(power),
                    decay_every=float(decay_every), decay_factor=float(decay_factor))


def _end_value(config: ml_collections.ConfigDict, learning_rate: float) -> float:
    """poly's floor: ``(lr0 - end) (1 - t / T)^power + end``, mmsegmentation's ``min_lr``
    (0.x, whose formula this is) or ``eta_min`` (1.x's PolyLR, which counts T one step
    shorter)."""
    end = config.end_value
    if not 0 <= end <= learning_rate:
        raise ConfigError(f'config.schedule.end_value={end} must lie in [0, {learning_rate}] '
                          '(config.optimizer.learning_rate): poly decays from the rate to it. '
                          "mmsegmentation's recipes use 1e-4; 0 decays to zero.")
    return end


def _step_interval(config: ml_collections.ConfigDict, steps_per_epoch: int | None) -> int:
    """Updates between two step decays; the course multiplies the lr by 0.2 every 10 epochs."""
    if steps_per_epoch is None:
        raise ConfigError("config.schedule.name='step' decays every "
                          f'{config.step_every_epochs} epochs, so build_optimizer needs '
                          'steps_per_epoch; pass it, or pick a schedule counted in steps '
                          "('constant', 'poly', 'cosine').")
    interval = int(config.step_every_epochs * steps_per_epoch)
    if interval < 1:
        raise ConfigError(f'config.schedule.step_every_epochs={config.step_every_epochs} with '
                          f'{steps_per_epoch} steps per epoch gives no step between decays; '
                          'both must be positive.')
    return interval


def update_rule(config: ml_collections.ConfigDict,
                schedule: Schedule) -> optax.GradientTransformation:
    """``config.optimizer``'s update rule driven by ``schedule``."""
    if config.name == 'adam':
        return _adam(config, schedule)
    if config.name == 'adamw':
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.name == 'sgd':
        return _sgd(config, schedule)
    raise ConfigError(f'config.optimizer.name={config.name!r} is not a known optimiser; use '
                      f'one of {list(OPTIMIZERS)}.')


def _adam(config: ml_collections.ConfigDict,
          schedule: Schedule) -> optax.GradientTransformation:
    """Plain Adam, as the course used it; weight decay belongs to AdamW."""
    if config.weight_decay:
        raise ConfigError(f'config.optimizer.weight_decay={config.weight_decay} does not apply '
                          "to 'adam'; use config.optimizer.name='adamw' for (decoupled) weight "
                          'decay, or set config.optimizer.weight_decay=0.')
    return optax.adam(schedule)


def _sgd(config: ml_collections.ConfigDict,
         schedule: Schedule) -> optax.GradientTransformation:
    """SGD with momentum as PyTorch's ``SGD(momentum, weight_decay)`` does it.

    The L2 term ``weight_decay * param`` is added to the gradient before the momentum buffer,
    which is what the public DeepLabv3 recipe (lr 0.01, momentum 0.9, decay 5e-4) was tuned with.
    """
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(schedule, momentum=config.momentum or None))
