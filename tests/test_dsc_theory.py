"""The theorem's form on synthetic DSC data (not fixed numbers).

In-theory problems use the identity + normalized Hadamard frame (μ = 1/√n) with (2s − 1)μ < 1. The estimator
under test is non-negative ISTA with step 1 and the theorem's decaying thresholds (``ista_decay``); the
claims are those stated by :func:`analysis.dsc.report.checks` (from arXiv:2408.05540, Thm. 1 and its rate).
"""

import copy
import math

import pytest
import torch

from analysis.dsc.configs import get_config
from analysis.dsc.estimators import build_estimator
from analysis.dsc.experiments import run_experiments
from analysis.dsc.generator import DSCModel
from analysis.dsc.metrics import SUPPORT_TOL
from analysis.dsc.report import RATE_TOLERANCE


@pytest.fixture(autouse=True)
def one_thread():
    """The lab's tensors are small: one intra-op thread is fastest (and what run_experiments uses on a CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BASE = {"layers": [{"dictionary": "hadamard", "n": 64}], "s": 2, "amplitude": [0.5, 1.0], "sigma": 0.0}


def lab(estimators, vary=None, n_train=256, n_test=128, **problem):
    """Run one sweep of a small config; returns its runs."""
    cfg = get_config("quick")
    cfg.update(n_train=n_train, n_test=n_test, bootstrap=50)
    cfg["estimators"]["alista"].update(steps=30, train_samples=128)
    cfg["sweeps"] = {"t": {"description": "test", "problem": {**copy.deepcopy(BASE), **problem}, "vary": vary,
                           "estimators": estimators}}
    return run_experiments(cfg)["sweeps"]["t"]["runs"]


def rates(runs, label="ista_decay"):
    return [r["estimators"][label]["rate"]["rho_hat"] for r in runs]


def test_log_error_vs_depth_is_linear_before_the_floor():
    run = lab(["ista_decay"])[0]
    rate = run["estimators"]["ista_decay"]["rate"]
    assert run["predicted_rate"] == pytest.approx(3 / 8, rel=1e-6) and run["in_theory_frac"] == 1.0
    assert len(rate["fit_depths"]) >= 4 and rate["r2"] >= 0.95
    errs = [row["rel_err"] for row in run["estimators"]["ista_decay"]["depths"]]
    assert all(b < a for a, b in zip(errs, errs[1:-1], strict=False))  # strictly decreasing down to the floor


@pytest.mark.parametrize(("problem", "vary"), [
    ({}, {"path": "layers.0.n", "values": [16, 64, 256]}),
    ({}, {"path": "s", "values": [1, 2, 3, 4]}),
    ({"s": 3}, {"path": "layers", "values": [[{"dictionary": "conv1d", "n": 64, "k": 13}],
                                             [{"dictionary": "design", "p": 31, "d": 8}]]}),
    ({"s": 2}, {"path": "layers", "values": [[{"dictionary": "conv2d", "size": 16, "k": 5}],
                                             [{"dictionary": "design", "p": 13, "d": 5}]]}),
])
def test_fitted_rate_does_not_exceed_2s_minus_1_mu_without_noise(problem, vary):
    for run in lab(["ista_decay"], vary, **problem):
        assert run["predicted_rate"] < 1 and run["in_theory_frac"] == 1.0
        rate = run["estimators"]["ista_decay"]["rate"]
        assert rate["ci95"][0] <= rate["ci95"][1]
        # the bound is attained when the worst sign pattern occurs (s ≤ 2), so allow the fit's transient slack
        assert rate["rho_hat"] <= run["predicted_rate"] * (1 + RATE_TOLERANCE), (run["value"], rate)


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_worst_case_l1_error_contracts_by_at_most_2s_minus_1_mu_each_step(s):
    """The theorem's own statement: with θ_k = μ·sup‖Γ^k − Γ‖₁ there is no false positive, and
    sup‖Γ^{k+1} − Γ‖₁ ≤ (2s−1)μ·sup‖Γ^k − Γ‖₁ (sups over the calibration samples)."""
    model = DSCModel.from_spec({**BASE, "s": s})
    train = model.sample(256, seed=0)
    est = build_estimator("ista_decay").fit(model, train, [64])
    sched = est.describe()["schedules"]["layer1"]
    mu = model.dictionaries[0].mu
    sup_err = [t / mu for t in sched["theta"]]  # σ = 0: τ = 0 and θ_k = μ·sup‖Γ^k − Γ‖₁
    assert sched["tau"] == 0.0
    ratios = [b / a for a, b in zip(sup_err, sup_err[1:], strict=False) if a > 1e-8]  # far above float64 round-off
    assert len(ratios) >= 5 and max(ratios) <= (2 * s - 1) * mu * (1 + 1e-6)
    codes = est.estimate(train.x, [32])[32][0]
    assert ((codes > SUPPORT_TOL) == (train.codes[0] > 0)).all()  # no false positive, nothing missed


def test_fitted_rate_increases_with_coherence_and_with_sparsity():
    by_mu = lab(["ista_decay"], {"path": "layers.0.n", "values": [256, 64, 16]})  # μ = 1/16, 1/8, 1/4
    r = rates(by_mu)
    assert r[0] < r[1] < r[2]
    by_s = lab(["ista_decay"], {"path": "s", "values": [1, 2, 3, 4]})
    r = rates(by_s)
    assert r[0] < r[1] < r[2] < r[3]


def test_floor_grows_in_proportion_to_sigma_and_vanishes_without_noise_only_for_decaying_thresholds():
    runs = lab(["ista_decay", "ista"], {"path": "sigma", "values": [0.0, 0.005, 0.01, 0.02]})
    floor = {r["sigma"]: r["estimators"]["ista_decay"]["rate"]["floor_rel_err"] for r in runs}
    fixed = {r["sigma"]: r["estimators"]["ista"]["rate"]["floor_rel_err"] for r in runs}
    assert floor[0.0] < 1e-12  # round-off only
    assert fixed[0.0] > 1e-3  # the LASSO bias of a fixed threshold
    slope = (math.log(floor[0.02]) - math.log(floor[0.005])) / math.log(4)
    assert slope == pytest.approx(1.0, abs=0.05)
    assert floor[0.01] / 0.01 == pytest.approx(floor[0.02] / 0.02, rel=0.05)
    assert fixed[0.02] / fixed[0.005] < 3  # a fixed threshold's floor is not proportional to σ


def test_exact_support_recovery_is_complete_below_the_bound_and_degrades_above_it():
    runs = lab(["ista_decay"], {"path": "s", "values": [1, 2, 3, 4, 6, 8, 12]})
    star = runs[0]["s_star"][0]
    exact = {r["s"][0]: r["estimators"]["ista_decay"]["depths"][-1]["exact_support"] for r in runs}
    assert star == pytest.approx(4.5)
    assert all(e == 1.0 for s, e in exact.items() if s < star)
    above = [e for s, e in sorted(exact.items()) if s > star]
    assert above[-1] < 0.5 and all(b <= a for a, b in zip(above, above[1:], strict=False))


def test_learned_unrolled_network_beats_plain_ista_at_equal_depth():
    run = lab(["ista", "alista"])[0]
    ista = {row["K"]: row["rel_err"] for row in run["estimators"]["ista"]["depths"]}
    learned = {row["K"]: row["rel_err"] for row in run["estimators"]["alista"]["depths"]}
    assert set(ista) == set(learned) == set(get_config("quick")["depths"])
    assert all(learned[k] < ista[k] for k in ista)


def test_layered_thresholding_needs_contrast_above_2s_minus_1_mu_and_unrolling_does_not():
    runs = lab(["thresholding", "ista_decay"], {"path": "amplitude.0", "values": [0.1, 0.75]})  # (2s−1)μ = 0.375
    low, high = ({k: e["depths"][-1]["exact_support"] for k, e in r["estimators"].items()} for r in runs)
    assert high["thresholding"] == 1.0 and low["thresholding"] < 1.0
    assert low["ista_decay"] == high["ista_decay"] == 1.0


def test_two_layer_model_converges_at_the_slower_layers_rate():
    two = [{"dictionary": "hadamard", "n": 256}, {"dictionary": "design", "p": 127, "d": 4, "slopes": 2, "rows": 512}]
    runs = lab(["ista_decay"], {"path": "layers", "values": [two]}, n_train=128, n_test=64)
    run = runs[0]
    rate = run["estimators"]["ista_decay"]["rate"]
    assert len(run["predicted_rate_layers"]) == 2 and run["predicted_rate"] < 1
    assert rate["rho_hat"] <= run["predicted_rate"] and rate["floor_rel_err"] < 1e-8
    assert all(v < 1e-12 for v in run["estimators"]["ista_decay"]["depths"][-1]["nmse_layers"])


def test_smooth_activations_add_a_floor_that_shrinks_with_their_temperature():
    runs = lab([{"name": "ista_decay", "activation": "relu"}, {"name": "ista_decay", "activation": "silu", "temperature": 1e-2},
                {"name": "ista_decay", "activation": "silu", "temperature": 1e-3}])
    floor = {k: e["rate"]["floor_rel_err"] for k, e in runs[0]["estimators"].items()}
    assert floor["ista_decay[activation=relu]"] < 1e-12
    hot, cold = floor["ista_decay[activation=silu,temperature=0.01]"], floor["ista_decay[activation=silu,temperature=0.001]"]
    assert 1e-12 < cold < hot / 5


def test_attention_steps_pool_noise_over_tokens_that_share_a_code():
    runs = lab(["ista_decay", "attention"], sigma=0.02, repeat=4)
    est = runs[0]["estimators"]
    assert est["attention"]["fitted"]["leak"] < 0.05
    assert est["attention"]["rate"]["floor_rel_err"] < 0.75 * est["ista_decay"]["rate"]["floor_rel_err"]


def test_estimators_are_deterministic():
    model = DSCModel.from_spec(BASE)
    train, test = model.sample(128, 0), model.sample(64, 1)
    for spec in ({"name": "alista", "steps": 5}, {"name": "mlp", "depths": [2], "steps": 10}):
        a = build_estimator(spec).fit(model, train, [1, 2]).estimate(test.x, [2])[2][-1]
        b = build_estimator(spec).fit(model, train, [1, 2]).estimate(test.x, [2])[2][-1]
        assert torch.equal(a, b)
