"""Faults a real run meets: kill -9 at random points then --resume, two runs into one folder, a --force run killed
before its first checkpoint, a full disk, a folder the user cannot write. Each run is a real `sparsezoo`
process (python -m sparsezoo), killed with SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = {
    "model": {"name": "test_resnet", "pretrained": False},
    "data": {"source": "digits", "img_size": 32, "max_train_samples": 192, "max_val_samples": 32},
    "penalties": [{"kind": "l1", "lam": 0.5}],
    "train": {"epochs": 4, "batch_size": 16, "seed": 0, "log_every": 2},
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}


def sparsezoo(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sparsezoo", *argv], env=kw.pop("env", ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(cond, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    import yaml

    p = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


@pytest.fixture(scope="module")
def reference(recipe_file, tmp_path_factory) -> Path:
    """An uninterrupted run of the recipe."""
    out = tmp_path_factory.mktemp("ref") / "run"
    code, err = finish(sparsezoo("finetune", "--recipe", str(recipe_file), "--out", str(out), "--no-progress"))
    assert code == 0, err
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_then_resume_gives_the_same_bytes(seed, recipe_file, reference, tmp_path):
    out = tmp_path / "run"
    p = sparsezoo("finetune", "--recipe", str(recipe_file), "--out", str(out), "--no-progress")
    wait_for(lambda: (out / "recipe.yaml").is_file(), proc=p)  # started: the model is built, training begins
    time.sleep(random.Random(seed).uniform(0.0, 4.0))
    p.send_signal(signal.SIGKILL)
    p.wait()
    has_ckpt = any((out / "checkpoints").glob("epoch-*/state.json")) if out.is_dir() else False
    again = ["--resume"] if has_ckpt else ["--force"]
    code, err = finish(sparsezoo("finetune", "--recipe", str(recipe_file), "--out", str(out), "--no-progress", *again))
    assert code == 0, err
    assert sha(out / "model.safetensors") == sha(reference / "model.safetensors")
    assert json.loads((out / "metrics.json").read_text())["complete"]
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in steps if r["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]  # no epoch logged twice after the resume
    ref_steps = [json.loads(line) for line in (reference / "train_log.jsonl").read_text().splitlines()]
    assert [(r["event"], r["epoch"], r["step"]) for r in steps] == [(r["event"], r["epoch"], r["step"]) for r in ref_steps]


@pytest.mark.slow
def test_two_runs_into_one_folder_one_wins_the_other_stops_with_one_line(recipe_file, tmp_path):
    """The first run trains long enough (40 epochs, ~30 s) that the second, whose start alone takes seconds, meets
    it while it runs; the refused second run leaves the first's folder as an uninterrupted run leaves it."""
    out = tmp_path / "run"
    longer = ["--set", "train.epochs=40"]
    first = sparsezoo("finetune", "--recipe", str(recipe_file), *longer, "--out", str(out), "--no-progress")
    wait_for(lambda: (out / "recipe.yaml").is_file(), proc=first)
    code, err = finish(sparsezoo("finetune", "--recipe", str(recipe_file), *longer, "--out", str(out),
                                 "--no-progress", "--force"))
    assert first.poll() is None, "the first run ended before the second met it: the test proved nothing"
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another run" in err, err
    assert f"pid {first.pid}" in err
    code, err = finish(first)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and [r["epoch"] for r in metrics["history"]] == list(range(1, 41))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder or lock left beside it


@pytest.mark.slow
def test_a_force_run_killed_before_its_first_checkpoint_leaves_the_old_run_intact(recipe_file, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = {p.name: sha(p) for p in out.iterdir() if p.is_file()}
    p = sparsezoo("finetune", "--recipe", str(recipe_file), "--out", str(out), "--no-progress", "--force",
                  "--set", "penalties=[{kind: l1, lam: 0.1}]")
    staging = out.parent / f".{out.name}.new"
    wait_for(lambda: (staging / "recipe.yaml").is_file(), proc=p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert {p.name: sha(p) for p in out.iterdir() if p.is_file()} == before  # the old run, byte for byte
    assert json.loads((out / "metrics.json").read_text())["complete"]
    # the next run (holding the lock) clears the leftovers and replaces the old run once it has a checkpoint
    code, err = finish(sparsezoo("finetune", "--recipe", str(recipe_file), "--out", str(out), "--no-progress",
                                 "--force", "--set", "penalties=[{kind: l1, lam: 0.1}]"))
    assert code == 0, err
    assert not staging.exists() and not (out.parent / f".{out.name}.old").exists()
    assert sha(out / "model.safetensors") != before["model.safetensors"]
    assert "lam: 0.1" in (out / "recipe.yaml").read_text()


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_a_full_disk_is_one_line_and_leaves_no_partial_report(tmp_path):
    """RLIMIT_FSIZE makes every write past 64 KiB fail with EFBIG, as a full disk does (Python ignores SIGXFSZ)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
            "from sparsezoo.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "analyze", "resnet18", "--no-pretrained", "--weights-only",
                          "--out", str(tmp_path / "rep")], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "File too large" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write into, root included (the immutable attribute; CI runs as root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        yield ro
    finally:
        subprocess.run(["chattr", "-i", str(ro)], check=True)


@pytest.mark.slow  # a subprocess per command; CI runs it (quick loop <= 120 s)
@pytest.mark.parametrize("argv", [
    ["analyze", "test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--samples", "8"],
    ["dsc", "--config", "quick"],
], ids=["analyze", "dsc"])
def test_a_read_only_folder_is_refused_before_any_work(argv, read_only_folder):
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "sparsezoo", *argv, "--out", str(read_only_folder / "out")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "not writable" in res.stderr, res.stderr
    assert time.perf_counter() - t < 60  # refused up front, not after the computation (dsc quick takes minutes)
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.slow
def test_analyze_on_a_cpu_machine_prints_no_torch_cuda_line(tmp_path):
    """torch.compile (the fused statistics) warns "No CUDA runtime is found" on CPU-only machines; the CLI hides it."""
    res = subprocess.run([sys.executable, "-m", "sparsezoo", "analyze", "test_resnet", "--no-pretrained", "--data",
                          "digits", "--img-size", "32", "--samples", "16", "--batch-size", "8", "--no-ista",
                          "--out", str(tmp_path / "rep")], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "CUDA" not in res.stderr, res.stderr
