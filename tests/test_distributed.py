"""Two real processes (DDP over gloo on CPU): parameters stay in sync, one set of outputs is written."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sparsezoo.train.checkpoint import RUN_FILES

ARGS = ["finetune", "test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--epochs", "2",
        "--batch-size", "16", "--l1", "0.05", "--set", "data.max_train_samples=128", "--set",
        "data.max_val_samples=61", "--no-progress"]


def launcher(kind: str) -> list[str]:
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sparsezoo"]
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sparsezoo"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torchrun", "accelerate"])
def test_two_process_run_keeps_parameters_in_sync_and_writes_once(kind, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher(kind), *ARGS, "--out", str(out)], capture_output=True, text=True, env=env,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["environment"]["processes"] == 2
    assert metrics["environment"]["params_in_sync"] is True
    assert all(h["val"]["samples"] == 61 for h in metrics["history"])  # odd size: every sample counted once
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "checkpoints"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [1, 2]  # one writer
    # each process sees 64 of the 128 training samples per epoch: 4 steps of 16
    assert max(r["step"] for r in log) == 8
    import timm

    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 10


@pytest.mark.slow
def test_two_processes_distil_from_one_teacher_and_stay_in_sync(l1_run, tmp_path):
    """Each process loads the teacher and distils on its own shard; parameters stay in sync."""
    _, teacher, _ = l1_run
    out = tmp_path / "ddp-distill"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher("torchrun"), *ARGS, "--distill", str(teacher), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["environment"]["processes"] == 2 and metrics["environment"]["params_in_sync"] is True
    assert "distill" in (out / "recipe.yaml").read_text()
