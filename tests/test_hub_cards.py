"""Model cards and the Hub helpers that need no network: what the card says, and which files a push takes."""

import hashlib
import json
import re

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from sparsezoo.cli import main
from sparsezoo.errors import SparsezooError
from sparsezoo.hub.cards import LIMITATIONS, CardError, base_model, read_baseline, read_run, render_card, sparsity_block
from sparsezoo.hub.errors import HubError, UnsafeRunFileError, split_repo
from sparsezoo.hub.upload import plan_push, upload_files
from sparsezoo.models.weight_check import BrokenWeightsError
from sparsezoo.recipe import Recipe

TIMM_CONFIG = {"architecture": "resnet18", "num_classes": 10, "label_names": [str(i) for i in range(10)],
               "pretrained_cfg": {"tag": "a1_in1k", "license": "apache-2.0", "input_size": [3, 32, 32]}}
BERT_CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
# a complete summary as metrics.json holds it (analysis.sparsity.SparsitySummary), and a key it does not know
SPARSITY = {"sites": 3, "zero_frac_mean_sites": 0.6131, "zero_frac_all_entries": 0.5, "l0_per_position_mean_sites": 12.5,
            "l0_per_position_frac_mean_sites": 0.25, "near_zero_frac(rel,tau=0.01)_mean_sites": 0.7, "dead_units": 4,
            "dense_units": 1, "zero_frac_per_stage": {"r4": 0.55, "r8": 0.6}, "future_measure": 1.0}


def make_run(path, config=TIMM_CONFIG, lam=1e-4, sparsity=SPARSITY, top1=0.75, model="resnet18.a1_in1k", **recipe):
    """A run folder with the files a finished fine-tune leaves (the weights are two small tensors)."""
    r = Recipe.from_dict({"model": model if isinstance(model, dict) else {"name": model},
                          "data": {"source": recipe.pop("source", "digits")},
                          "penalties": [{"kind": "l1", "lam": lam}] if lam else [], **recipe})
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, str(path / "model.safetensors"))
    (path / "recipe.yaml").write_text(r.to_yaml())
    final = {"top1": top1, "loss": 0.5, "sparsity": sparsity}
    (path / "metrics.json").write_text(json.dumps({"complete": True, "recipe_hash": r.hash(), "final": final,
                                                   "history": [{"epoch": 1, "val": {"samples": 90, **final}}]}))
    return path


def card_sections(text: str) -> dict[str, str]:
    """The body of every ``## `` section of a card, by heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def table_rows(text: str) -> dict[str, list[str]]:
    """The cells of every Markdown table row of ``text`` by its first cell, separator rows left out."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # "\|" is a pipe inside a cell
            rows[cells[0]] = cells[1:]
    return rows


SECTIONS = {"How to use", "Results", "Recipe and how to reproduce", "Limitations"}


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


def test_a_partial_summary_publishes_the_numbers_it_has_as_a_complete_one_does():
    """A summary missing numbers (hand-made, or from an older version) cannot be read as a SparsitySummary; its
    numbers are published under the same definitions."""
    full = sparsity_block({"final": {"sparsity": SPARSITY}})
    partial = {k: v for k, v in SPARSITY.items() if k != "zero_frac_all_entries"}
    block = sparsity_block({"final": {"sparsity": partial}}, {"final": {"sparsity": SPARSITY}})
    assert list(block["model_wide"]) == [k for k in full["model_wide"] if k != "zero_frac_all_entries"]
    for key, entry in block["model_wide"].items():
        assert entry == {**full["model_wide"][key], "dense_baseline": SPARSITY[key]}
    assert block["per_stage"]["zero_frac"]["values"] == full["per_stage"]["zero_frac"]["values"]


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
    # apache-2.0 weights on a Hub data set whose license nobody stated: the card grants nothing more ("other")
    assert data.library_name == "timm" and data.license == "other" and data.base_model == "timm/resnet18.a1_in1k"
    assert data.datasets == ["org/reviews"] and data.pipeline_tag == "image-classification"
    assert data.tags[:2] == ["sparsezoo", "sparse-features"] and "l1-penalty" in data.tags
    assert data.sparsity == sparsity_block(run.metrics)
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("accuracy", 0.75),
                                                                          ("zero_frac_mean_sites", 0.6131)]
    sections = card_sections(card.text)
    assert SECTIONS <= set(sections)
    rows = table_rows(sections["Results"])  # measure or stage → (definition,) dense baseline, this model
    assert rows["top-1 accuracy"][-2:] == ["—", "0.7500"] and rows["zero_frac_mean_sites"][-2:] == ["—", "0.6131"]
    assert rows["r4"] == ["—", "0.5500"] and rows["r8"] == ["—", "0.6000"]
    assert rows["zero_frac_mean_sites"][0].startswith("`zero_frac`")
    near = rows["near_zero_frac(rel,tau=0.01)_mean_sites"]
    assert near[0].startswith("`near_zero_frac(rel)`") and "0.01" in near[0] and near[-1] == "0.7000"
    assert "future_measure" not in rows  # as in the sparsity block
    assert all(cells[-2] == "—" for name, cells in rows.items() if name not in ("measure", "stage"))  # no baseline
    bullets = [line.removeprefix("- ") for line in sections["Limitations"].strip().splitlines()]
    assert bullets == list(LIMITATIONS)


def test_card_compares_with_a_dense_baseline_of_the_same_model_and_data(tmp_path):
    run = read_run(make_run(tmp_path / "l1"))
    dense = make_run(tmp_path / "dense", lam=0, top1=0.8, sparsity={**SPARSITY, "zero_frac_mean_sites": 0.25})
    text = str(render_card(run, "myorg/r18-l1", baseline=read_baseline(dense, run)))
    results = card_sections(text)["Results"]
    rows = table_rows(results)
    assert rows["top-1 accuracy"][-2:] == ["0.8000", "0.7500"] and rows["zero_frac_mean_sites"][-2:] == ["0.2500", "0.6131"]
    assert rows["r8"] == ["0.6000", "0.6000"]
    assert "`dense`" in results  # the baseline run is named
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
    assert "AutoTokenizer" in card.text and "`reviews.csv`" in card.text
    assert SECTIONS <= set(card_sections(card.text))
    assert card.data.license == "other"  # local data of unknown license
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


# ----------------------------------------------------------------------------- what push refuses, and its dry run


def one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(f in err for f in fragments), err
    return err


@pytest.mark.parametrize("make_link", [
    lambda run: (run / "vocab.txt").symlink_to("/etc/passwd"),
    lambda run: (run / "tokenizer.json").symlink_to(run.parent / "elsewhere.json"),
    lambda run: ((run / "model.safetensors").rename(run / "real.safetensors"),
                 (run / "model.safetensors").symlink_to("real.safetensors")),  # even one inside the folder
], ids=["outside", "sibling folder", "inside"])
def test_push_refuses_symbolic_links(tmp_path, capsys, make_link):
    run = make_run(tmp_path / "run")
    (tmp_path / "elsewhere.json").write_text("{}")
    make_link(run)
    with pytest.raises(UnsafeRunFileError, match="is a symbolic link"):
        upload_files(run)
    with pytest.raises(UnsafeRunFileError):
        plan_push(run, "myorg/r18")
    assert main(["push", str(run), "--repo", "myorg/r18", "--dry-run"]) == 2
    one_error_line(capsys, "sparsezoo push: error:", str(run), "is a symbolic link")


def test_push_refuses_an_allowlisted_name_that_is_not_a_file(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "vocab.txt").mkdir()
    with pytest.raises(UnsafeRunFileError, match="vocab.txt is not a regular file"):
        upload_files(run)


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def poison(path, value):
    tensors = load_file(path)
    tensors["conv.weight"][1, 0, 0, 0] = value
    save_file(tensors, str(path))


def shard(run):
    """Split the weights into two shards with an index, the way transformers saves large models."""
    tensors = load_file(run / "model.safetensors")
    (run / "model.safetensors").unlink()
    weight_map = {}
    for i, name in enumerate(sorted(tensors), 1):
        file = f"model-{i:05d}-of-00002.safetensors"
        save_file({name: tensors[name]}, str(run / file))
        weight_map[name] = file
    (run / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return run


BROKEN_WEIGHTS = {  # name: (breakage, file named in the message, problem named in the message)
    "truncated": (lambda run: truncate(run / "model.safetensors"), "model.safetensors", "truncated or corrupt"),
    "random bytes": (lambda run: (run / "model.safetensors").write_bytes(bytes(range(256)) * 8), "model.safetensors",
                     "not a valid safetensors file"),
    "empty": (lambda run: (run / "model.safetensors").write_bytes(b""), "model.safetensors", "not a valid safetensors"),
    "nan": (lambda run: poison(run / "model.safetensors", float("nan")), "model.safetensors",
            "tensor 'conv.weight' holds 1 NaN/inf values"),
    "inf": (lambda run: poison(run / "model.safetensors", float("-inf")), "model.safetensors", "NaN/inf"),
    "truncated shard": (lambda run: truncate(shard(run) / "model-00002-of-00002.safetensors", 0.9),
                        "model-00002-of-00002.safetensors", "truncated or corrupt"),
    "missing shard": (lambda run: (shard(run) / "model-00001-of-00002.safetensors").unlink(),
                      "model.safetensors.index.json", "names model-00001-of-00002.safetensors, which"),
    "index naming a foreign file": (
        lambda run: (shard(run) / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"conv.weight": "../elsewhere.safetensors"}})),
        "model.safetensors.index.json", "which is not a shard"),
    "no weights": (lambda run: (run / "model.safetensors").rename(run / "extra.safetensors"), "run",
                   "has no safetensors weights"),
}


@pytest.mark.parametrize("name", BROKEN_WEIGHTS)
def test_card_and_push_refuse_broken_weights_with_one_line_naming_the_file(tmp_path, capsys, name):
    breakage, file, problem = BROKEN_WEIGHTS[name]
    run = make_run(tmp_path / "run")
    breakage(run)
    with pytest.raises(BrokenWeightsError, match=re.escape(problem)):
        read_run(run)
    assert main(["card", str(run), "--out", str(tmp_path / "card.md")]) == 2
    one_error_line(capsys, "sparsezoo card: error:", file, problem)
    assert not (tmp_path / "card.md").exists()
    assert main(["push", str(run), "--repo", "myorg/r18", "--dry-run"]) == 2
    one_error_line(capsys, "sparsezoo push: error:", file, problem)


def test_sharded_weights_pass_and_are_all_uploaded(tmp_path):
    run = shard(make_run(tmp_path / "run"))
    plan = plan_push(run, "myorg/r18")
    assert [f.name for f in plan.files] == ["config.json", "metrics.json", "model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                            "recipe.yaml", "README.md"]


@pytest.mark.parametrize("complete", [False, "yes", 1, None])
def test_card_needs_metrics_saying_the_run_completed(tmp_path, capsys, complete):
    run = make_run(tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["complete"] = complete
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["card", str(run)]) == 2
    one_error_line(capsys, "is not complete (metrics.json has no complete: true)")


@pytest.mark.parametrize("name", ["truncated", "random bytes", "missing shard"])
def test_load_of_broken_weights_raises_one_clear_line(tmp_path, name):
    import sparsezoo

    breakage, file, problem = BROKEN_WEIGHTS[name]
    run = make_run(tmp_path / "run")
    breakage(run)
    with pytest.raises(BrokenWeightsError) as e:
        sparsezoo.load(str(run))
    assert isinstance(e.value, SparsezooError) and len(str(e.value).splitlines()) == 1
    assert file in str(e.value) and problem in str(e.value)


def test_dry_run_lists_every_file_with_size_and_sha256_and_the_card(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    run = make_run(tmp_path / "run")
    (run / "notes.txt").write_text("not for the Hub")
    assert main(["push", str(run), "--repo", "myorg/r18", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dry run: would push 4 files + README.md to myorg/r18@main")
    listed = {line.split()[0]: (int(line.split()[1]), line.split()[3].removeprefix("sha256:")) for line in out[1:]}
    assert main(["card", str(run), "--repo", "myorg/r18"]) == 0
    card = capsys.readouterr().out.encode()
    expected = {name: (len(data), hashlib.sha256(data).hexdigest())
                for name, data in [(p.name, p.read_bytes()) for p in sorted(run.iterdir()) if p.name != "notes.txt"]}
    assert listed == {**expected, "README.md": (len(card), hashlib.sha256(card).hexdigest())}
    plan = plan_push(run, "myorg/r18")
    assert plan.card.encode() == card
    assert [(f.name, f.size, f.sha256) for f in plan.files] == [(n, *listed[n]) for n in listed]
