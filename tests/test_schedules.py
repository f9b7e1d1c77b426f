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


# ----------------------------------------------------------------------------- ProSparse's staged λ


def test_sine_progress_is_prosparses_half_sine():
    from sparsezoo.train.schedules import sine_progress

    assert [sine_progress(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.0, 0.5, 1.0])
    assert sine_progress(0.25) == pytest.approx(0.5 * (math.sin(-math.pi / 4) + 1))  # = 0.1464…
    assert sine_progress(-1) == 0.0 and sine_progress(2) == 1.0


def test_staged_lambda_is_constant_in_warm_up_then_rises_stage_by_stage():
    from sparsezoo.train.schedules import staged_lam_at

    stages = [(2.0, 3e-4), (1.0, 1e-3)]
    at = [staged_lam_at(1e-4, e, 1.0, stages) for e in (0.0, 0.99, 1.0, 2.0, 3.0, 3.5, 4.0, 9.0)]
    assert at == pytest.approx([1e-4, 1e-4, 1e-4, 2e-4, 3e-4, 6.5e-4, 1e-3, 1e-3])
    assert staged_lam_at(1e-4, 1.5, 1.0, stages) == pytest.approx(1e-4 + 2e-4 * (0.5 * (math.sin(-math.pi / 4) + 1)))


def test_a_staged_schedule_comes_from_the_recipe_and_the_cli(capsys):
    import yaml

    from sparsezoo.cli import main
    from sparsezoo.recipe import Recipe
    from sparsezoo.train.schedules import scheduled_lam

    assert main(["finetune", "--print-recipe", "test_resnet", "--data", "digits", "--l1", "1e-5",
                 "--warmup-epochs", "1", "--lam-stages", "1:3e-5", "2:1e-4"]) == 0
    recipe = Recipe.from_dict(yaml.safe_load(capsys.readouterr().out))
    schedule = recipe.penalties[0].schedule
    assert schedule.shape == "staged" and [(s.epochs, s.lam) for s in schedule.stages] == [(1.0, 3e-5), (2.0, 1e-4)]
    assert [scheduled_lam(schedule, 1e-5, e) for e in (0.5, 2.0, 3.0, 4.0)] == pytest.approx([1e-5, 3e-5, 6.5e-5, 1e-4])


@pytest.mark.parametrize("schedule, message", [
    ({"shape": "staged"}, "shape staged needs stages"),
    ({"stages": [{"epochs": 1, "lam": 1e-4}]}, "stages need shape staged"),
    ({"shape": "staged", "stages": [{"epochs": 0, "lam": 1e-4}]}, "epochs must be > 0"),
    ({"shape": "staged", "stages": [{"epochs": 1, "lam": -1}]}, "lam >= 0"),
])
def test_bad_staged_schedules_are_refused(schedule, message):
    from sparsezoo.errors import RecipeError
    from sparsezoo.recipe import Recipe

    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict({"model": {"name": "test_resnet"}, "penalties": [{"kind": "l1", "lam": 1e-5, "schedule": schedule}]})
