"""Optimisers and schedules against their closed forms and hand-computed updates."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seg_jax.errors import ConfigError
from seg_jax.optim import build_optimizer

LR = 0.01
TOTAL = 1000


def make_config(optimizer: str = 'adam', schedule: str = 'constant', *, weight_decay=0.0,
                momentum=0.9, warmup_steps=0, learning_rate=LR,
                end_value=0.0) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        optimizer=dict(name=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
                       momentum=momentum),
        schedule=dict(name=schedule, warmup_steps=warmup_steps, step_every_epochs=10,
                      step_factor=0.2, power=0.9, end_value=end_value),
    ))


def lr_at(schedule: optax.Schedule, step: int) -> float:
    return float(schedule(jnp.asarray(step, jnp.int32)))


def test_constant_schedule():
    _, schedule = build_optimizer(make_config(schedule='constant'), TOTAL)
    for step in (0, 1, 500, TOTAL):
        assert lr_at(schedule, step) == pytest.approx(LR, rel=1e-6)


def test_step_schedule_decays_by_factor_at_epoch_multiples():
    steps_per_epoch = 7  # decays every 10 epochs = 70 steps
    _, schedule = build_optimizer(make_config(schedule='step'), TOTAL, steps_per_epoch)
    expected = {0: LR, 69: LR, 70: LR * 0.2, 139: LR * 0.2, 140: LR * 0.04, 700: LR * 0.2**10}
    for step, lr in expected.items():
        assert lr_at(schedule, step) == pytest.approx(lr, rel=1e-5), step


def test_poly_schedule_follows_closed_form_and_ends_at_zero():
    _, schedule = build_optimizer(make_config(schedule='poly'), TOTAL)
    for step in (0, 1, 250, 500, 999):
        # rel 1e-4: 1 - t/T loses digits in float32 near the end.
        assert lr_at(schedule, step) == pytest.approx(LR * (1 - step / TOTAL)**0.9, rel=1e-4)
    assert lr_at(schedule, TOTAL) == 0.0
    assert lr_at(schedule, TOTAL + 10) == 0.0


def test_poly_floor_is_mmsegmentations_min_lr():
    # mmcv's PolyLrUpdaterHook (the recipe of mmseg's model zoo):
    # (lr0 - min_lr) * (1 - t / T)^0.9 + min_lr, reaching min_lr at T and staying there.
    floor = 1e-4
    _, schedule = build_optimizer(make_config(schedule='poly', end_value=floor), TOTAL)
    for step in (0, 1, 250, 500, 999):
        expected = (LR - floor) * (1 - step / TOTAL)**0.9 + floor
        assert lr_at(schedule, step) == pytest.approx(expected, rel=1e-4), step
    assert lr_at(schedule, TOTAL) == pytest.approx(floor, rel=1e-6)
    assert lr_at(schedule, TOTAL + 10) == pytest.approx(floor, rel=1e-6)


@pytest.mark.parametrize('schedule, end_value, message', [
    ('poly', -1e-4, r'end_value=-0.0001 must lie in \[0, 0.01\]'),
    ('poly', 0.1, r'end_value=0.1 must lie in \[0, 0.01\]'),
    ('cosine', 1e-4, "floor of the 'poly' schedule; 'cosine' has none"),
])
def test_a_floor_poly_cannot_honour_is_refused(schedule, end_value, message):
    with pytest.raises(ConfigError, match=message):
        build_optimizer(make_config(schedule=schedule, end_value=end_value), TOTAL)


def test_cosine_schedule_is_half_at_mid_point():
    _, schedule = build_optimizer(make_config(schedule='cosine'), TOTAL)
    assert lr_at(schedule, 0) == pytest.approx(LR, rel=1e-6)
    assert lr_at(schedule, TOTAL // 2) == pytest.approx(LR / 2, rel=1e-5)
    assert lr_at(schedule, 250) == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-5)
    assert lr_at(schedule, TOTAL) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize('name', ['constant', 'poly', 'cosine', 'step'])
def test_warmup_ramps_linearly_from_zero_into_the_schedule(name):
    warmup = 100
    _, plain = build_optimizer(make_config(schedule=name), TOTAL, steps_per_epoch=7)
    _, warmed = build_optimizer(make_config(schedule=name, warmup_steps=warmup), TOTAL,
                                steps_per_epoch=7)
    assert lr_at(warmed, 0) == 0.0
    for step in (25, 50, 99):
        assert lr_at(warmed, step) == pytest.approx(lr_at(plain, step) * step / warmup, rel=1e-5)
    for step in (warmup, 500):
        assert lr_at(warmed, step) == pytest.approx(lr_at(plain, step), rel=1e-6)


def quadratic_grad(params):
    """Gradient of 0.5 * sum(a * p**2), a tiny problem with a known gradient."""
    return jax.grad(lambda p: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 3.0]) * p['w']**2))(params)


def run_updates(optimizer: optax.GradientTransformation, params, num_updates: int):
    state = optimizer.init(params)
    for _ in range(num_updates):
        updates, state = optimizer.update(quadratic_grad(params), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params['w'])


P0 = np.array([1.0, -2.0, 0.5], np.float32)
A = np.array([1.0, 2.0, 3.0], np.float32)


def test_adam_one_update_matches_hand_computation():
    optimizer, _ = build_optimizer(make_config('adam'), TOTAL)
    g = A * P0
    # Bias-corrected first step: m_hat = g, v_hat = g**2.
    expected = P0 - LR * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(run_updates(optimizer, {'w': jnp.asarray(P0)}, 1), expected,
                               rtol=1e-6)


def test_adamw_decay_is_decoupled_from_the_gradient():
    wd = 0.1
    optimizer, _ = build_optimizer(make_config('adamw', weight_decay=wd), TOTAL)
    g = A * P0
    expected = P0 - LR * (g / (np.abs(g) + 1e-8) + wd * P0)
    np.testing.assert_allclose(run_updates(optimizer, {'w': jnp.asarray(P0)}, 1), expected,
                               rtol=1e-6)


def test_sgd_momentum_and_weight_decay_as_pytorch():
    wd, momentum = 0.05, 0.9
    optimizer, _ = build_optimizer(make_config('sgd', weight_decay=wd, momentum=momentum), TOTAL)
    # torch.optim.SGD: g += wd * p; buf = momentum * buf + g (buf = g at first); p -= lr * buf.
    g1 = A * P0 + wd * P0
    p1 = P0 - LR * g1
    g2 = A * p1 + wd * p1
    p2 = p1 - LR * (momentum * g1 + g2)
    params = {'w': jnp.asarray(P0)}
    np.testing.assert_allclose(run_updates(optimizer, params, 1), p1, rtol=1e-6)
    np.testing.assert_allclose(run_updates(optimizer, params, 2), p2, rtol=1e-6)


def test_optimizer_follows_its_schedule():
    optimizer, _ = build_optimizer(make_config('sgd', momentum=0.0, warmup_steps=10), TOTAL)
    params = {'w': jnp.asarray(P0)}
    np.testing.assert_array_equal(run_updates(optimizer, params, 1), P0)  # lr 0 at step 0
    g = A * P0
    np.testing.assert_allclose(run_updates(optimizer, params, 2), P0 - LR * 0.1 * g, rtol=1e-6)


@pytest.mark.parametrize('config, message', [
    (make_config('rmsprop'), "config.optimizer.name='rmsprop' is not a known optimiser; use one "
                             "of ['adam', 'adamw', 'sgd']"),
    (make_config(schedule='linear'), "config.schedule.name='linear' is not a known schedule; "
                                     "use one of ['constant', 'step', 'poly', 'cosine']"),
    (make_config('adam', weight_decay=1e-4), "use config.optimizer.name='adamw'"),
    (make_config(warmup_steps=TOTAL + 1), 'config.schedule.warmup_steps=1001 must lie in'),
])
def test_bad_config_values_are_named(config, message):
    with pytest.raises(ConfigError) as error:
        build_optimizer(config, TOTAL)
    assert message in str(error.value)


def test_step_schedule_without_steps_per_epoch_says_what_to_pass():
    with pytest.raises(ConfigError, match='needs steps_per_epoch'):
        build_optimizer(make_config(schedule='step'), TOTAL)


def test_non_positive_total_steps_is_an_error():
    with pytest.raises(ConfigError, match='must be positive'):
        build_optimizer(make_config(schedule='poly'), 0)
