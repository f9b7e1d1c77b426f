"""``sparsezoo dsc``: user errors are one line and exit 2 and write nothing; a run is reproducible; quick is quick."""

import json
import time

import pytest

from sparsezoo.cli import main

TINY = ["--sweeps", "depth,noise", "--set", "n_train=128", "--set", "n_test=64", "--set", "bootstrap=20",
        "--set", "estimators.alista.steps=5", "--set", "estimators.mlp.steps=20", "--set", "estimators.mlp.depths=[1,2]",
        "--set", "sweeps.noise.vary.values=[0,0.01,0.02]", "--no-progress"]


def run_cli(capsys, *argv):
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--config", "huge"], "unknown config 'huge' (choose from quick, full)"),
    (["--set", "n_tset=3"], "unknown key 'n_tset' in the config"),
    (["--set", "n_test"], "expected KEY=VALUE"),
    (["--set", "depths=[0,1]"], "depths must be a non-empty list of positive integers"),
    (["--set", "sweeps.mu.vary.values=[12]"], "hadamard: n must be a power of 2"),
    (["--set", "estimators.ista.lamb=1"], "unknown parameter(s) ['lamb']"),
    (["--sweeps", "depth,nosie"], "unknown sweep(s) ['nosie']"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_user_errors_are_one_line_exit_2_and_write_nothing(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "dsc", *argv, "--out", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_existing_output_needs_force(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "dsc", *TINY, "--sweeps", "noise", "--out", str(out))
    assert code == 2 and "--force" in err and (out / "keep.txt").read_text() == "mine"


def test_same_command_twice_gives_identical_json_and_force_replaces(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(capsys, "dsc", *TINY, "--out", str(a))[0] == 0
    code, stdout, _ = run_cli(capsys, "dsc", *TINY, "--out", str(b))
    assert code == 0 and "ok   the floor grows ∝ σ" in stdout
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert (a / "summary.md").read_text() == (b / "summary.md").read_text()
    for name in ("error_vs_depth_depth.png", "error_vs_depth_noise.png", "rate_vs_predicted.png", "floor_vs_noise.png"):
        assert (a / "plots" / name).stat().st_size > 1000
    results = json.loads((a / "results.json").read_text())
    assert results["schema"] == "sparsezoo.dsc/1" and set(results["sweeps"]) == {"depth", "noise"}
    assert json.loads((a / "run.json").read_text())["wall_s"] > 0
    (b / "stray.txt").write_text("old")
    assert run_cli(capsys, "dsc", *TINY, "--sweeps", "noise", "--out", str(b), "--force")[0] == 0
    assert not (b / "stray.txt").exists() and set(json.loads((b / "results.json").read_text())["sweeps"]) == {"noise"}


def test_print_config_shows_overrides_and_runs_nothing(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "dsc", "--set", "n_test=77", "--seed", "5", "--print-config", "--out", str(tmp_path / "o"))
    cfg = json.loads(stdout)
    assert code == 0 and cfg["n_test"] == 77 and cfg["seed"] == 5 and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_quick_config_finishes_in_under_five_minutes_and_every_claim_holds(capsys, tmp_path):
    start = time.perf_counter()
    code, stdout, _ = run_cli(capsys, "dsc", "--config", "quick", "--out", str(tmp_path / "q"), "--no-progress")
    elapsed = time.perf_counter() - start
    assert code == 0 and elapsed < 300
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    assert len(results["checks"]) >= 8 and all(c["holds"] for c in results["checks"]), results["checks"]
    assert "FAIL" not in stdout
    assert (tmp_path / "q" / "plots" / "support_vs_sparsity.png").exists()
