"""Shared test setup: offline Hub, small real models, the digits data set, one fine-tuned run for all readers."""

import os

# The Hub client reads these at import: set them before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture
def small_recipe():
    """A recipe for a real timm test model on digits that trains in seconds on a CPU."""
    from sparsezoo.recipe import Recipe

    def make(**over):
        d = {
            "model": {"name": "test_resnet", "pretrained": False},
            "data": {"source": "digits", "img_size": 32, "max_train_samples": 256, "max_val_samples": 96},
            "penalties": [],
            "optim": {"lr": 2e-3, "warmup_epochs": 0.0},
            "train": {"epochs": 2, "batch_size": 32, "seed": 0, "log_every": 4},
        }
        for key, value in over.items():
            section, _, field = key.partition("__")
            if field:
                d[section][field] = value
            else:
                d[section] = value
        return Recipe.from_dict(d)

    return make


@pytest.fixture(scope="session")
def l1_run(tmp_path_factory):
    """One finished fine-tune, made once per session for every test that only reads a run (its files, loading it,
    resuming to it, publishing it): timm's ``test_resnet`` on digits, 2 epochs with a warmed-up, ramped l1 penalty
    and both epoch checkpoints kept. ``(recipe, out folder, FinetuneResult)``; copy the folder before changing it.
    """
    from sparsezoo.recipe import Recipe
    from sparsezoo.train.loop import finetune

    recipe = Recipe.from_dict({
        "model": {"name": "test_resnet", "pretrained": False},
        "data": {"source": "digits", "img_size": 32, "max_train_samples": 256, "max_val_samples": 96},
        "penalties": [{"kind": "l1", "lam": 0.05, "schedule": {"warmup_epochs": 0.5, "ramp_epochs": 0.5}}],
        "optim": {"lr": 2e-3},
        "train": {"epochs": 2, "batch_size": 32, "seed": 0, "log_every": 4, "keep_checkpoints": 2},
    })
    out = tmp_path_factory.mktemp("runs") / "l1"
    return recipe, out, finetune(recipe, out)


@pytest.fixture
def cli(capsys):
    """Run the command line in this process (``main([...])`` leaves the process as it found it): ``cli(*argv)`` gives
    ``(exit code, stderr)``."""
    from sparsezoo.cli import main

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()  # drop what fixtures printed
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        return code, capsys.readouterr().err

    return run
