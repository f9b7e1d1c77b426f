"""The lab's measurements on cases with known answers: rate fit, floor, support metrics, config overrides."""

import pytest
import torch

from analysis.dsc.configs import apply_override, get_config
from analysis.dsc.metrics import fit_rate, per_sample, summarize
from analysis.errors import AnalysisError

DEPTHS = [1, 2, 4, 8, 16, 32, 64]


def errors(rel_err: list[float], samples: int = 20):
    """Per-sample squared errors whose pooled relative error is ``rel_err`` at every depth."""
    sq_norm = torch.linspace(0.5, 2.0, samples, dtype=torch.float64)
    sq_err = sq_norm[:, None] * torch.tensor(rel_err, dtype=torch.float64)[None] ** 2
    return sq_err, sq_norm


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.9])
def test_geometric_decay_above_a_floor_gives_back_its_rate(rho):
    floor = 1e-6
    rel = [floor + 0.7 * rho**k for k in DEPTHS]
    out = fit_rate(DEPTHS, *errors(rel))
    # at ρ = 0.9 the error is still decaying at K = 64, so "floor = last value" is slightly too high: 0.1 % bias
    assert out["rho_hat"] == pytest.approx(rho, rel=2e-3) and out["r2"] > 0.9999
    assert out["floor_rel_err"] == pytest.approx(rel[-1])
    assert all(rel[DEPTHS.index(k)] >= 10 * rel[-1] for k in out["fit_depths"])
    lo, hi = out["ci95"]
    assert lo == pytest.approx(out["rho_hat"], rel=1e-9) and hi == pytest.approx(out["rho_hat"], rel=1e-9)  # samples decay alike


def test_no_rate_when_the_error_never_leaves_the_floor():
    out = fit_rate(DEPTHS, *errors([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert out["rho_hat"] is None and out["ci95"] is None and out["fit_depths"] == []


def test_support_metrics_on_a_hand_made_case():
    true = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    est = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 2.0, 0.0, 1e-9]], dtype=torch.float64)  # 1e-9 < tol: not selected
    m = summarize(per_sample(est, true, amplitude_max=2.0))
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["exact_support"] == 0.5 and m["false_pos"] == 0.5
    assert m["nmse"] == pytest.approx((0.01 + 0.01 + 0.25 + 1e-18) / 5.25)


def test_overrides_reach_nested_values_and_reject_typos():
    cfg = get_config("quick")
    apply_override(cfg, "sweeps.mu.vary.values=[16,64]")
    apply_override(cfg, "sweeps.layers.problem.layers.0.n=128")
    apply_override(cfg, "estimators.ista_decay.activation=silu")  # a new estimator default is allowed
    assert cfg["sweeps"]["mu"]["vary"]["values"] == [16, 64] and cfg["sweeps"]["layers"]["problem"]["layers"][0]["n"] == 128
    assert cfg["estimators"]["ista_decay"] == {"activation": "silu"}
    for bad in ("sweeps.mu.vary.valuez=[1]", "sweeps.layers.problem.layers.3.n=1", "seed.x=1", "nope"):
        with pytest.raises(AnalysisError):
            apply_override(cfg, bad)
    assert get_config("quick")["sweeps"]["mu"]["vary"]["values"] == [16, 64, 256]  # the registry is not mutated
