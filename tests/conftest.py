"""Shared test setup: offline Hub, small real models, the digits data set."""

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
