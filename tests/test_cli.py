"""The command line: bad input gives one line and exit code 2 and writes nothing; runs reproduce."""

import json
import os
import re
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


def bad_input_files(tmp, saved):
    """The paths the bad-input cases name: ``{out}`` and the broken files, written into ``tmp``."""
    (tmp / "bad.yaml").write_text("model: {name: test_resnet}\noptim: {lrr: 0.1}\n")
    (tmp / "garbage.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (tmp / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return {"out": tmp / "out", "tmp": tmp, "saved": saved, "bad_recipe": tmp / "bad.yaml",
            "garbage": tmp / "garbage.yaml", "corrupt": tmp / "w.safetensors"}


def case(id, *argv, message):
    return pytest.param(["finetune", *argv, "--out", "{out}"], message, id=id)


BAD_INPUTS = [  # argv ({name} is a path of bad_input_files), the message on stderr
    case("unknown model", "resnet5", *FAST, message="unknown model 'resnet5'; did you mean: resnet50"),
    case("negative lambda", "test_resnet", *FAST, "--l1", "-1e-4", message="argument --l1: must be >= 0"),
    case("missing data folder", "test_resnet", *FAST, "--data", "{tmp}/nope", message="data folder"),
    case("unknown label column", "test_resnet", *FAST, "--data", "{saved}", "--label-column", "lbl",
         message="label column 'lbl' is not in the dataset (columns: img, label)"),
    case("missing recipe", "--recipe", "{tmp}/missing.yaml", message="neither a file nor a built-in recipe"),
    case("binary recipe", "--recipe", "{garbage}", message="recipe"),
    case("unknown recipe key", "--recipe", "{bad_recipe}", message="unknown key recipe.optim.lrr (did you mean 'lr'?)"),
    case("no model", *FAST, message="no model given"),
    case("no site matches", "test_resnet", *FAST, "--sites", "layer9", message="no feature site matches"),
    case("corrupt weights", "test_resnet", *FAST, "--weights", "{corrupt}", message="cannot read weights file"),
    case("nothing to resume", "test_resnet", *FAST, "--resume", message="nothing to resume"),
    case("set without value", "test_resnet", *FAST, "--set", "optim.lr", message="--set expects KEY=VALUE"),
    case("target out of range", "test_resnet", *FAST, "--target-zero-frac", "1.5", message="must be in (0, 1)"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys, saved_dataset):
    paths = bad_input_files(tmp_path, saved_dataset)
    argv = [arg.format(**paths) for arg in argv]
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


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_module_entry_point_exit_code_in_a_real_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "sparsezoo", "finetune", "resnet5", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2
    # exactly one line: the closest timm name first, five suggestions in all (which ones depends on timm's
    # registry), and why no Hugging Face model of that name could be looked up
    (line,) = res.stderr.strip().splitlines()
    assert re.fullmatch(r"sparsezoo finetune: error: unknown model 'resnet5'; did you mean: resnet50(, [\w.]+){4}\? "
                        r"\(not a Hugging Face model in the cache either; the Hub is not reachable\)", line), line
    assert not (tmp_path / "o").exists()
