"""The command line: bad input gives one line and exit code 2 and writes nothing; runs reproduce."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sparsezoo.cli import main

FAST = ["--no-pretrained", "--data", "digits", "--img-size", "32", "--epochs", "1", "--batch-size", "32",
        "--set", "data.max_train_samples=128", "--set", "data.max_val_samples=64", "--no-progress"]


def run_cli(capsys, *argv):
    capsys.readouterr()  # drop what fixtures printed
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()} if path.exists() else None


@pytest.fixture
def saved_dataset(tmp_path):
    from test_data import make_saved_dataset

    return make_saved_dataset(tmp_path / "ds")


def bad_inputs(tmp, saved):
    bad_recipe = tmp / "bad.yaml"
    bad_recipe.write_text("model: {name: test_resnet}\noptim: {lrr: 0.1}\n")
    garbage = tmp / "garbage.yaml"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    corrupt = tmp / "w.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    out = str(tmp / "out")
    return [
        (["finetune", "resnet5", *FAST, "--out", out], "unknown model 'resnet5'; did you mean: resnet50"),
        (["finetune", "test_resnet", *FAST, "--l1", "-1e-4", "--out", out], "argument --l1: must be >= 0"),
        (["finetune", "test_resnet", *FAST, "--data", str(tmp / "nope"), "--out", out], "data folder"),
        (["finetune", "test_resnet", *FAST, "--data", str(saved), "--label-column", "lbl", "--out", out],
         "label column 'lbl' is not in the dataset (columns: img, label)"),
        (["finetune", "--recipe", str(tmp / "missing.yaml"), "--out", out], "neither a file nor a built-in recipe"),
        (["finetune", "--recipe", str(garbage), "--out", out], "recipe"),
        (["finetune", "--recipe", str(bad_recipe), "--out", out], "unknown key recipe.optim.lrr (did you mean 'lr'?)"),
        (["finetune", *FAST, "--out", out], "no model given"),
        (["finetune", "test_resnet", *FAST, "--sites", "layer9", "--out", out], "no feature site matches"),
        (["finetune", "test_resnet", *FAST, "--weights", str(corrupt), "--out", out], "cannot read weights file"),
        (["finetune", "test_resnet", *FAST, "--resume", "--out", out], "nothing to resume"),
        (["finetune", "test_resnet", *FAST, "--set", "optim.lr", "--out", out], "--set expects KEY=VALUE"),
        (["finetune", "test_resnet", *FAST, "--target-zero-frac", "1.5", "--out", out], "must be in (0, 1)"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, saved_dataset):
    argv, message = bad_inputs(tmp_path, saved_dataset)[case]
    before = tree(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err
    assert tree(tmp_path) == before


def test_existing_output_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("precious")
    code, _, err = run_cli(capsys, "finetune", "test_resnet", *FAST, "--out", str(out))
    assert code == 2 and "exists; pass --resume" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_text() == "precious"
    code, _, _ = run_cli(capsys, "finetune", "test_resnet", *FAST, "--out", str(out), "--force")
    assert code == 0 and json.loads((out / "metrics.json").read_text())["complete"]


def test_finetune_then_reproduce_from_the_saved_recipe_then_resume(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, _ = run_cli(capsys, "finetune", "test_resnet", *FAST, "--l1", "0.05", "--out", str(a))
    assert code == 0 and "zero_frac" in out and f"local-dir:{a}" in out
    code, _, _ = run_cli(capsys, "finetune", "--recipe", str(a / "recipe.yaml"), "--out", str(b), "--no-progress")
    assert code == 0
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    code, _, _ = run_cli(capsys, "finetune", "--resume", "--out", str(a), "--no-progress")  # already complete
    assert code == 0
    code, _, err = run_cli(capsys, "finetune", "test_resnet", *FAST, "--l1", "0.1", "--resume", "--out", str(a))
    assert code == 2 and "recipe changed" in err and "penalties" in err


def test_print_recipe_reflects_flags(capsys):
    code, out, _ = run_cli(capsys, "finetune", "resnet50", "--l1", "1e-4", "--warmup-epochs", "0.5", "--lr", "1e-3",
                           "--data", "digits", "--print-recipe")
    import yaml

    d = yaml.safe_load(out)
    assert code == 0 and d["model"]["name"] == "resnet50" and d["optim"]["lr"] == 1e-3
    assert d["penalties"] == [{"kind": "l1", "lam": 1e-4, "schedule": {"warmup_epochs": 0.5, "ramp_epochs": 0.0,
                               "shape": "linear"}, "target_zero_frac": None, "target_gain": 4.0, "target_every": 10}]


def test_help_imports_no_heavy_library():
    code = ("import sys; from sparsezoo.cli import COMMANDS, main\n"
            "for argv in [['--help']] + [[c, '--help'] for c in COMMANDS]:\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'timm', 'transformers', 'captum', 'datasets', 'huggingface_hub',\n"
            "                     'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stdout


def test_module_entry_point_exit_code_in_a_real_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "sparsezoo", "finetune", "resnet5", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "sparsezoo finetune: error: unknown model 'resnet5'; did you mean: resnet50, resnet18, resnet34, resnet26, "
        "resnet26d?"] or ("unknown model 'resnet5'" in res.stderr and len(res.stderr.strip().splitlines()) == 1)
    assert not (tmp_path / "o").exists()
