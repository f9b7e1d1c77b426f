"""The threshold step of a fine-tune (``--thresholds shift|hard``): the search runs on the validation split after
training, the final numbers are the thresholded model's, and loading reproduces it (plain timm for the folded
shift; ``sparsezoo.load`` for hard thresholds, whose loss under plain loading the run records)."""

import json

import pytest
import torch

FAST = ["test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--epochs", "1",
        "--set", "data.max_train_samples=256", "--set", "data.max_val_samples=64"]


@pytest.mark.parametrize("realization", ["shift", "hard"])
def test_a_run_searches_thresholds_on_validation_and_loads_back(realization, tmp_path, cli):
    import timm

    import sparsezoo

    out = tmp_path / realization
    code, err = cli("finetune", *FAST, "--thresholds", realization, "--threshold-budget", "0.05",
                    "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    search = metrics["thresholds"]
    assert search["split"] == "validation" and search["realization"] == realization
    assert search["top1_after"] >= search["floor"] and metrics["final"]["top1"] == pytest.approx(search["top1_after"])
    assert all(s["threshold"] >= 0 for s in search["sites"])
    before = metrics["history"][-1]["val"]["sparsity"]["zero_frac_mean_sites"]
    assert metrics["final"]["sparsity"]["zero_frac_mean_sites"] >= before
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sparsezoo.load(str(out)).model(x)
        plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
    if realization == "shift":  # folded into the biases: plain timm computes the thresholded model
        assert torch.allclose(ours, plain, atol=1e-5) and not (out / "thresholds.safetensors").exists()
    else:  # FATReLU: sparsezoo.load restores it, plain loading is a ReLU model, and the run says by how much
        assert (out / "thresholds.safetensors").is_file()
        assert metrics["plain_loading"]["samples"] == 64 and 0 <= metrics["plain_loading"]["top1_agreement"] <= 1
        thresholds = [s["threshold"] for s in search["sites"]]
        assert any(t > 0 for t in thresholds) == (not torch.allclose(ours, plain))


@pytest.mark.parametrize("argv, message", [
    (["--thresholds", "shift", "--threshold-budget", "-0.1"], "must be >= 0"),
    (["--threshold-budget", "0.01"], "need the search: pass --thresholds"),
    (["--thresholds", "shift", "--threshold-budget", "1.5", "--threshold-budget-relative"], "must be < 1"),
    (["--thresholds", "shift", "--threshold-sites", "("], "invalid regex"),
])
def test_bad_threshold_flags_are_one_line(argv, message, tmp_path, cli):
    code, err = cli("finetune", *FAST, *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
