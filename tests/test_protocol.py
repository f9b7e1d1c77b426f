"""Issue 23's protocol: whatever chooses (the recovery controller, the threshold search, the checkpoint kept) sees the
validation split only; the test split is read once, after everything is chosen; runs record the splits they used;
``--min-recovery R`` ends with a checkpoint that meets its target on validation."""

import json

import numpy as np
import pytest
from PIL import Image

from sparsezoo.recipe import RecoverySpec
from sparsezoo.train.recovery import RecoveryController, check_indices

FAST = ["test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's digits as an image folder with train/ and test/ split folders (1,297 / 500 images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits-folder")
    order = np.random.default_rng(0).permutation(len(d.target))
    for rank, i in enumerate(order):
        split = "test" if rank < 500 else "train"
        folder = root / split / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def dense_reference(digits_folder, tmp_path_factory):
    from sparsezoo.cli import main

    out = tmp_path_factory.mktemp("ref") / "dense"
    assert main(["-q", "finetune", *FAST, "--data", str(digits_folder), "--out", str(out)]) == 0
    return out


def test_the_test_split_is_read_once_after_every_choice(digits_folder, dense_reference, tmp_path, cli, monkeypatch):
    """Every image read is logged: the validation part (held out of train/) and the test split (test/). Selection
    that read the test split (a controller check, a threshold candidate, an epoch chosen on it) would read test
    images before the last validation read, or read them more than once: both fail here."""
    import sparsezoo.data.loaders as loaders

    reads: list[str] = []
    real = loaders.open_image

    def logged(path):
        reads.append("test" if "/test/" in str(path) else "train")
        return real(path)

    monkeypatch.setattr(loaders, "open_image", logged)
    out = tmp_path / "run"
    code, err = cli("finetune", *FAST, "--data", str(digits_folder), "--l1", "1e-3", "--min-recovery", "0.9",
                    "--reference", str(dense_reference), "--thresholds", "shift", "--out", str(out))
    assert code == 0, err
    first_test = reads.index("test")
    assert "train" not in reads[first_test:]  # nothing trained, validated or chosen after the test split was opened
    assert reads.count("test") == 500  # each test image read exactly once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"]["test"] == {"name": "test", "size": 500}
    assert metrics["splits"]["validation"]["held_out"].startswith("20% of train")
    assert metrics["test"]["samples"] == 500 and 0 <= metrics["test"]["top1"] <= 1
    assert metrics["thresholds"]["split"] == "validation" and metrics["recovery"]["split"] == "validation"


def test_min_recovery_keeps_a_checkpoint_that_meets_its_target_on_validation(digits_folder, dense_reference,
                                                                            tmp_path, cli):
    out = tmp_path / "run"
    code, err = cli("finetune", *FAST, "--data", str(digits_folder), "--l1", "1e-4", "--min-recovery", "0.95",
                    "--reference", str(dense_reference), "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    rec = metrics["recovery"]
    assert rec["subset"]["size"] == metrics["splits"]["validation"]["size"]  # small split: the whole of it
    assert len(rec["checks"]) == 4 and rec["reference_top1"] == rec["reference_top1_subset"]
    pressures = [c["pressure"] for c in rec["checks"]]
    for i, (before, after, check) in enumerate(zip(pressures, pressures[1:], rec["checks"], strict=False)):
        steered = any(c["met"] for c in rec["checks"][:i])  # a miss backs off once the target was met before
        assert after == pytest.approx(before * 2 if check["met"] else before / 2 if steered else before)
    assert rec["met"], rec["checks"]  # a 1e-4 start on digits meets 95 % of the dense reference
    kept = rec["kept"]
    assert kept["top1"] >= rec["floor"] and kept["zero_frac"] == max(c["zero_frac"] for c in rec["checks"] if c["met"])
    # the run ends on the kept checkpoint: the final validation numbers are its numbers, and they meet the target
    assert metrics["final"]["top1"] == pytest.approx(kept["top1"]) and metrics["final"]["top1"] >= rec["floor"]
    assert rec["met_full"] and rec["restored"]


def test_the_controller_raises_on_a_met_check_and_backs_off_on_a_miss():
    c = RecoveryController(RecoverySpec(min=0.9), reference_top1=0.8, subset={"size": 10, "of": 10},
                           reference_top1_full=0.8)
    assert c.floor == pytest.approx(0.72)
    assert not c.observe(0.30, 0.4, 0) and c.pressure == 1.0  # still learning the task: the pressure is held
    assert c.observe(0.75, 0.5, 1) and c.pressure == 2.0  # met: kept, pressure doubled
    assert c.observe(0.73, 0.6, 2) and c.pressure == 4.0  # met and sparser: kept
    assert not c.observe(0.70, 0.9, 3) and c.pressure == 2.0  # missed: not kept however sparse; backed off
    assert not c.observe(0.80, 0.55, 4) and c.pressure == 4.0  # met but less sparse than the kept one
    assert c.best["step"] == 2 and c.to_json()["met"]
    again = RecoveryController(RecoverySpec(min=0.9), 0.8, {"size": 10, "of": 10}, 0.8)
    again.load_state_dict(c.state_dict())
    assert again.best == c.best and again.pressure == c.pressure


def test_the_check_subset_is_a_fixed_seeded_choice():
    spec = RecoverySpec(subset=100)
    keep, rec = check_indices(1000, spec, seed=0)
    assert len(keep) == 100 and keep == sorted(keep) and rec == {"size": 100, "of": 1000, "seed": 0}
    assert check_indices(1000, spec, seed=0)[0] == keep and check_indices(1000, spec, seed=1)[0] != keep
    assert check_indices(50, spec, seed=0) == (list(range(50)), {"size": 50, "of": 50})


@pytest.mark.parametrize("argv, message", [
    (["--l1", "1e-4", "--min-recovery", "0", "--reference", "x"], "must be in (0, 1]"),
    (["--l1", "1e-4", "--min-recovery", "1.5", "--reference", "x"], "must be in (0, 1]"),
    (["--l1", "1e-4", "--min-recovery", "-0.5", "--reference", "x"], "must be >= 0"),
    (["--l1", "1e-4", "--reference", "x"], "pass --min-recovery R"),
    (["--l1", "1e-4", "--min-recovery", "0.99"], "needs a dense reference"),
    (["--min-recovery", "0.99", "--reference", "x"], "give it a penalty"),
    (["--l1", "1e-4", "--target-zero-frac", "0.5", "--min-recovery", "0.99", "--reference", "x"], "choose one"),
])
def test_bad_recovery_flags_are_one_line_and_write_nothing(argv, message, tmp_path, cli):
    code, err = cli("finetune", *FAST, "--data", "digits", *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_reference_of_another_label_space_is_refused_before_training(digits_folder, tmp_path, cli):
    from sparsezoo.cli import main

    three = tmp_path / "three-classes"
    for c in ("0", "1", "2"):
        (three / c).mkdir(parents=True)
        for f in sorted((digits_folder / "train" / c).iterdir())[:20]:
            (three / c / f.name).write_bytes(f.read_bytes())
    ref = tmp_path / "ref3"
    assert main(["-q", "finetune", *FAST, "--data", str(three), "--out", str(ref)]) == 0
    code, err = cli("finetune", *FAST, "--data", str(digits_folder), "--l1", "1e-4", "--min-recovery", "0.99",
                    "--reference", str(ref), "--out", str(tmp_path / "run"))
    assert code == 2 and "classes" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_finetune_help_lists_the_recovery_tools(capsys):
    from sparsezoo.cli import main

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    for flag in ("--distill", "--min-recovery", "--reference", "--thresholds", "--lam-stages", "--target-zero-frac"):
        assert flag in out, flag
