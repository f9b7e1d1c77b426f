"""Model cards and the Hub helpers that need no network: what the card says, and which files a push takes."""

import json

import pytest
from huggingface_hub import ModelCard

from sparsezoo.cards import CardError, base_model, read_baseline, read_run, render_card, sparsity_block
from sparsezoo.cli import main
from sparsezoo.hub import HubError, split_repo, upload_files
from sparsezoo.recipe import Recipe

TIMM_CONFIG = {"architecture": "resnet18", "num_classes": 10, "label_names": [str(i) for i in range(10)],
               "pretrained_cfg": {"tag": "a1_in1k", "license": "apache-2.0", "input_size": [3, 32, 32]}}
BERT_CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
SPARSITY = {"sites": 3, "zero_frac_mean_sites": 0.6131, "zero_frac_all_entries": 0.5, "l0_per_position_mean_sites": 12.5,
            "near_zero_frac(rel,tau=0.01)_mean_sites": 0.7, "dead_units": 4, "dense_units": 1,
            "zero_frac_per_stage": {"r4": 0.55, "r8": 0.6}, "future_measure": 1.0}


def make_run(path, config=TIMM_CONFIG, lam=1e-4, sparsity=SPARSITY, top1=0.75, model="resnet18.a1_in1k", **recipe):
    """A run folder with the files a finished fine-tune leaves (the weights are a placeholder)."""
    r = Recipe.from_dict({"model": model if isinstance(model, dict) else {"name": model},
                          "data": {"source": recipe.pop("source", "digits")},
                          "penalties": [{"kind": "l1", "lam": lam}] if lam else [], **recipe})
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "recipe.yaml").write_text(r.to_yaml())
    final = {"top1": top1, "loss": 0.5, "sparsity": sparsity}
    (path / "metrics.json").write_text(json.dumps({"complete": True, "recipe_hash": r.hash(), "final": final,
                                                   "history": [{"epoch": 1, "val": {"samples": 90, **final}}]}))
    return path


def test_sparsity_block_copies_values_with_their_definitions_and_thresholds():
    dense = {"final": {"sparsity": {**SPARSITY, "zero_frac_mean_sites": 0.3, "zero_frac_per_stage": {"r4": 0.2}}}}
    block = sparsity_block({"recipe_hash": "abc", "final": {"sparsity": SPARSITY},
                            "history": [{"val": {"samples": 90}}]}, dense)
    assert block["recipe_hash"] == "abc" and block["sites"] == 3 and block["evaluated_samples"] == 90
    zf = block["model_wide"]["zero_frac_mean_sites"]
    assert zf == {"definition": "zero_frac", "threshold": 0.0, "aggregate": zf["aggregate"], "value": 0.6131,
                  "dense_baseline": 0.3}
    near = block["model_wide"]["near_zero_frac(rel,tau=0.01)_mean_sites"]
    assert near["definition"] == "near_zero_frac(rel)" and near["threshold"] == 0.01 and "largest" in near["aggregate"]
    assert block["model_wide"]["l0_per_position_mean_sites"]["definition"] == "l0_per_position"
    assert "future_measure" not in block["model_wide"]  # a number without a known definition is not published
    stage = block["per_stage"]["zero_frac"]
    assert stage["values"] == {"r4": 0.55, "r8": 0.6} and stage["dense_baseline"] == {"r4": 0.2}


def test_base_model_is_a_hub_id_only_when_fine_tuning_started_from_hub_weights(tmp_path):
    assert base_model(read_run(make_run(tmp_path / "a"))) == "timm/resnet18.a1_in1k"
    assert base_model(read_run(make_run(tmp_path / "b", model="resnet18"))) == "timm/resnet18.a1_in1k"  # config tag
    assert base_model(read_run(make_run(tmp_path / "c", model="hf-hub:org/r18"))) == "org/r18"
    assert base_model(read_run(make_run(tmp_path / "d", model={"name": "resnet18", "pretrained": False}))) is None
    assert base_model(read_run(make_run(tmp_path / "e", model={"name": "resnet18", "weights": "w.safetensors"}))) is None
    bert = read_run(make_run(tmp_path / "f", config=BERT_CONFIG, model="sentence-transformers/all-MiniLM-L6-v2"))
    assert base_model(bert) == "sentence-transformers/all-MiniLM-L6-v2"


def test_card_front_matter_round_trips_through_model_card(tmp_path):
    run = read_run(make_run(tmp_path / "run", source="org/reviews"))
    text = str(render_card(run, "myorg/r18-l1"))
    card = ModelCard(text)
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0" and data.base_model == "timm/resnet18.a1_in1k"
    assert data.datasets == ["org/reviews"] and data.pipeline_tag == "image-classification"
    assert data.tags[:2] == ["sparsezoo", "sparse-features"] and "l1-penalty" in data.tags
    assert data.sparsity == sparsity_block(run.metrics)
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("accuracy", 0.75),
                                                                          ("zero_frac_mean_sites", 0.6131)]
    assert "| top-1 accuracy |" in text and "| zero_frac_mean_sites |" in text and "| r8 | — | 0.6000 |" in text
    assert "No dense baseline was measured" in text
    assert "skip zero activations" in text and "structured (block or channel) activation sparsity" in text


def test_card_compares_with_a_dense_baseline_of_the_same_model_and_data(tmp_path):
    run = read_run(make_run(tmp_path / "l1"))
    dense = make_run(tmp_path / "dense", lam=0, top1=0.8, sparsity={**SPARSITY, "zero_frac_mean_sites": 0.25})
    text = str(render_card(run, "myorg/r18-l1", baseline=read_baseline(dense, run)))
    assert "| top-1 accuracy | fraction of validation samples whose arg-max logit is the label | 0.8000 | 0.7500 |" in text
    assert "| 0.2500 | 0.6131 |" in text and "The dense baseline is the run `dense`" in text
    with pytest.raises(CardError, match="is not dense"):
        read_baseline(tmp_path / "l1", run)
    with pytest.raises(CardError, match="uses data 'org/other'"):
        read_baseline(make_run(tmp_path / "other", lam=0, source="org/other"), run)


def test_transformers_card_shows_the_auto_class_and_the_near_zero_measure(tmp_path):
    run = read_run(make_run(tmp_path / "bert", config=BERT_CONFIG, model="sentence-transformers/all-MiniLM-L6-v2",
                            source="reviews.csv"))
    card = render_card(run, "myorg/minilm-l1")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert 'AutoModelForSequenceClassification.from_pretrained("myorg/minilm-l1")' in card.text
    assert "AutoTokenizer" in card.text and "data `reviews.csv`" in card.text
    assert card.data.license == "unknown"
    assert render_card(run, "myorg/minilm-l1", license="mit").data.license == "mit"


@pytest.mark.parametrize("breakage, message", [
    (lambda p: (p / "metrics.json").unlink(), "has no metrics.json"),
    (lambda p: (p / "metrics.json").write_text('{"complete": false}'), "is not complete"),
    (lambda p: (p / "metrics.json").write_text("{not json"), "cannot read"),
    (lambda p: (p / "model.safetensors").unlink(), "has no safetensors weights"),
    (lambda p: (p / "config.json").write_text('{"foo": 1}'), "neither a timm nor a transformers"),
    (lambda p: (p / "recipe.yaml").write_text("model: {name: resnet50}\n"), "from different runs"),
])
def test_broken_run_folders_are_refused_with_one_line(tmp_path, capsys, breakage, message):
    run = make_run(tmp_path / "run")
    breakage(run)
    with pytest.raises(CardError, match=message):
        read_run(run)
    assert main(["card", str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_card_command_prints_or_writes_the_card(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["card", str(run), "--repo", "myorg/r18"]) == 0
    printed = capsys.readouterr().out
    assert ModelCard(printed).data.sparsity["recipe_hash"] == read_run(run).recipe.hash()
    assert main(["card", str(run), "--repo", "myorg/r18", "--out", str(tmp_path / "card.md")]) == 0
    assert (tmp_path / "card.md").read_text() == printed
    assert main(["card", str(run)]) == 0 and "<org>/run" in capsys.readouterr().out


def test_push_takes_only_the_allowlisted_files(tmp_path):
    run = make_run(tmp_path / "run")
    for name in ("tokenizer.json", "vocab.txt", "train_log.jsonl", "notes.txt", "README.md", "pytorch_model.bin",
                 "extra.safetensors", "model-00001-of-00002.safetensors"):
        (run / name).write_text("x")
    (run / "checkpoints" / "epoch-0001").mkdir(parents=True)
    (run / "checkpoints" / "epoch-0001" / "model.safetensors").write_text("x")
    assert sorted(upload_files(run)) == ["config.json", "metrics.json", "model-00001-of-00002.safetensors",
                                         "model.safetensors", "recipe.yaml", "tokenizer.json", "vocab.txt"]


def test_repo_names():
    assert split_repo("myorg/r50") == ("myorg/r50", None)
    assert split_repo("hf-hub:myorg/r50@v1") == ("myorg/r50", "v1")
    assert split_repo("myorg/r50@v1", "v2") == ("myorg/r50", "v2")
    for bad in ("r50", "a/b/c", "myorg/", "my org/x", "org/x--y"):
        with pytest.raises(HubError, match="is not a Hub repo id"):
            split_repo(bad)
