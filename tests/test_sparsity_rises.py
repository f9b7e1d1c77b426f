"""Sparsity rises with λ on several real architectures (slow: real pretrained weights, more steps)."""

import json

import pytest

from sparsezoo.cli import main

COMMON = ["--data", "digits", "--epochs", "3", "--batch-size", "32", "--lr", "1e-3", "--no-progress",
          "--set", "data.max_train_samples=768", "--set", "data.max_val_samples=120"]


@pytest.mark.slow
@pytest.mark.parametrize("model, lam, extra", [
    ("resnet18", 1e-3, ["--no-pretrained", "--img-size", "32"]),
    # pretrained weights move slowly (AdamW: about lr per step), so more, cheaper steps and a strong λ
    ("tf_efficientnet_lite0", 1e-2, ["--weights", "offline", "--img-size", "32", "--epochs", "8"]),
])
def test_zero_frac_rises_with_lambda(model, lam, extra, tmp_path):
    zero = {}
    for value in (0.0, lam):
        out = tmp_path / f"l1_{value}"
        assert main(["finetune", model, *COMMON, *extra, "--l1", str(value), "--out", str(out)]) == 0
        zero[value] = json.loads((out / "metrics.json").read_text())["final"]["sparsity"]["zero_frac_mean_sites"]
    assert zero[lam] > zero[0.0] + 0.02, zero


@pytest.mark.slow
def test_demo_writes_the_table(tmp_path):
    from sparsezoo.train.demo import run_demo

    rows = run_demo(tmp_path / "demo", lams=[0.0, 1e-3], epochs=3)  # mobilenetv2_100, offline ImageNet weights
    assert [r["lam"] for r in rows] == [0.0, 1e-3]
    assert rows[1]["zero_frac_mean_sites"] > rows[0]["zero_frac_mean_sites"] + 0.02
    assert all(r["top1"] > 0.8 for r in rows)  # real pretrained features: digits are easy
    table = (tmp_path / "demo" / "summary.md").read_text()
    assert table.startswith("| λ (l1) | val top-1 | zero_frac (mean over sites) | zero_frac r2 |")
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["rows"] == rows
