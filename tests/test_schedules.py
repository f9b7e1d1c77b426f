"""λ and learning-rate schedules, and the target-sparsity controller."""

import math

import pytest

from sparsezoo.train.schedules import TargetController, lam_at, lr_at


def test_lambda_warmup_then_linear_and_cosine_ramp():
    assert lam_at(1.0, 0.4, warmup_epochs=0.5, ramp_epochs=1.0) == 0.0
    assert lam_at(1.0, 1.0, 0.5, 1.0) == pytest.approx(0.5)
    assert lam_at(1.0, 1.0, 0.5, 1.0, "cosine") == pytest.approx(0.5)
    assert lam_at(1.0, 0.75, 0.5, 1.0, "cosine") == pytest.approx(0.5 - 0.5 * math.cos(math.pi / 4))
    assert lam_at(1.0, 9.0, 0.5, 1.0) == 1.0
    assert lam_at(2.0, 0.0, 0.0, 0.0) == 2.0


def test_lr_warmup_then_cosine_to_the_floor():
    assert lr_at(0, 100, 1.0, 10, "cosine", 0.01) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, "cosine", 0.01) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, "cosine", 0.01) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10, "cosine", 0.01) == pytest.approx(0.01)
    assert lr_at(50, 100, 1.0, 0, "constant", 0.01) == 1.0


def test_target_controller_raises_lambda_below_target_and_lowers_it_above():
    c = TargetController(target=0.6, lam=1e-3, gain=4.0)
    assert c.update(0.4) == pytest.approx(1e-3 * math.exp(0.8))
    lam = c.lam
    assert c.update(0.9) < lam
    c2 = TargetController(target=0.6, lam=1.0)
    c2.load_state_dict(c.state_dict())
    assert c2.lam == c.lam and c2.last_measured == 0.9


def test_target_controller_converges_on_a_monotone_plant():
    # zero_frac = 1 - exp(-lam / 0.01): the controller must find lam with zero_frac = 0.6
    c = TargetController(target=0.6, lam=1e-4, gain=4.0)
    for _ in range(200):
        c.update(1 - math.exp(-c.lam / 0.01))
    assert 1 - math.exp(-c.lam / 0.01) == pytest.approx(0.6, abs=0.01)
