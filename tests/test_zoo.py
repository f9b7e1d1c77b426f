"""The model zoo: its registry and short names, a reduced build published to the Hub-protocol test server and loaded
back (plain timm, and sparsezoo.load by short name, also offline), and the committed cards against the committed
zoo results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from support.hub_server import HubServer

from sparsezoo.data.named import NAMED
from sparsezoo.zoo import ZOO_RESULTS, ZooError, recovery_class, registry

REPO = Path(__file__).resolve().parent.parent
CARDS = REPO / "model_cards"


def test_every_entry_has_a_dense_baseline_and_at_least_two_sparse_variants():
    reg = registry()
    assert {"mnv2-elpv", "effnet-lite0-mnist", "minilm-rotten-tomatoes", "minilm-20newsgroups"} <= set(reg.entries)
    for entry in reg.entries.values():
        base = entry.recipe_for(entry.baseline)
        assert all(p.lam == 0 for p in base.penalties), entry.name
        assert base.data.source in NAMED and base.train.seed == 0
        reseeded = [v for v in entry.variants if v.startswith(f"{entry.baseline}-seed")]  # the baseline, other seeds
        assert all(entry.recipe_for(v).penalties == base.penalties and entry.recipe_for(v).train.seed > 0
                   for v in reseeded)
        sparse = [v for v in entry.variants if v != entry.baseline and v not in reseeded]
        recipes = [entry.recipe_for(v) for v in sparse]
        assert len(recipes) >= 2
        assert all(any(p.lam > 0 for p in r.penalties) or r.model.activation for r in recipes)
        everything = [entry.recipe_for(v) for v in entry.variants]
        assert len({r.hash() for r in everything}) == len(everything)


def test_short_names_resolve_to_hub_repos():
    reg = registry()
    assert reg.resolve("mnv2-elpv:l1-1e-4") == f"{reg.org}/mnv2-elpv-l1-1e-4"
    assert reg.resolve("myorg/effnet-lite0-mnist:dense") == "myorg/effnet-lite0-mnist-dense"
    assert reg.resolve("myorg/some-model") is None and reg.resolve("resnet50") is None
    with pytest.raises(ZooError, match="unknown zoo entry 'mnv2-elpf'; did you mean mnv2-elpv"):
        reg.resolve("mnv2-elpf:dense")
    with pytest.raises(ZooError, match="has no variant 'l1-1e-9'"):
        reg.resolve("mnv2-elpv:l1-1e-9")


def test_recovery_classes_are_sparsezoos():
    assert [recovery_class(r) for r in (1.02, 1.0, 0.995, 0.99, 0.989)] == \
        ["conservative", "conservative", "moderate", "moderate", "aggressive"]


def test_reduced_overrides_apply_to_every_variant_and_are_checked():
    entry = registry().entry("mnv2-elpv")
    r = entry.recipe_for("l1-1e-4", {"train": {"epochs": 1}, "data": {"max_train_samples": 64}})
    assert (r.train.epochs, r.data.max_train_samples, r.data.source, r.penalties[0].lam) == (1, 64, "elpv", 1e-4)
    with pytest.raises(Exception, match="unknown key"):
        entry.recipe_for("dense", {"train": {"epoch": 1}})


# ----------------------------------------------------------------------------- a reduced build, end to end

REDUCED = ["--variants", "l1-1e-4", "--set", "train.epochs=1", "--set", "data.max_train_samples=64",
           "--set", "data.max_val_samples=32", "--set", "train.batch_size=16", "--samples", "32"]

LOAD = """
import sys
sys.modules["sparsezoo"] = None  # plain timm first: sparsezoo cannot even be imported
import timm, torch
from safetensors.torch import load_file, save_file
torch.set_num_threads(1)
repo, ref, out, offline = sys.argv[1], load_file(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
res = {}
with torch.no_grad():
    if not offline:
        res["plain"] = timm.create_model("hf-hub:" + repo, pretrained=True).eval()(ref["x"])
    del sys.modules["sparsezoo"]
    import sparsezoo
    org, name = repo.split("/")
    res["zoo"] = sparsezoo.load(f"{org}/effnet-lite0-mnist:l1-1e-4").model(ref["x"])
save_file(res, out)
"""


@pytest.mark.slow
def test_a_reduced_build_publishes_and_loads_back_by_repo_id_and_short_name(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    root, cards = tmp_path / "zoo", tmp_path / "cards"
    r = subprocess.run([sys.executable, "-m", "sparsezoo", "zoo", "build", "effnet-lite0-mnist", *REDUCED,
                        "--root", str(root), "--cards-dir", str(cards)], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((root / "effnet-lite0-mnist" / "results.json").read_text())
    assert list(results["variants"]) == ["dense", "l1-1e-4"] and results["overrides"]["train"]["epochs"] == 1
    for v, res in results["variants"].items():
        card = ModelCard.load(cards / f"effnet-lite0-mnist-{v}.md")
        assert card.data.sparsity["model_wide"]["zero_frac_mean_sites"]["value"] == res["zero_frac"]
        assert res["cka_to_baseline"] is not None and -1 <= res["cka_to_baseline"] <= 1
    assert (cards / "effnet-lite0-mnist.png").stat().st_size > 5000
    assert json.loads((cards / ZOO_RESULTS).read_text())["entries"]["effnet-lite0-mnist"] == results
    # building another variant fine-tunes only that one (resumable build: the others keep their weights, byte
    # for byte) and keeps the numbers of the variants it did not build
    weights = {v: (root / "effnet-lite0-mnist" / v / "model.safetensors").read_bytes() for v in ("dense", "l1-1e-4")}
    r = subprocess.run([sys.executable, "-m", "sparsezoo", "zoo", "build", "effnet-lite0-mnist",
                        *[a if a != "l1-1e-4" else "l1-1e-5" for a in REDUCED],
                        "--root", str(root), "--cards-dir", str(cards)], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0 and r.stderr.count("epoch 1/1") == 1, r.stderr[-2000:]
    assert all((root / "effnet-lite0-mnist" / v / "model.safetensors").read_bytes() == b for v, b in weights.items())
    again = json.loads((root / "effnet-lite0-mnist" / "results.json").read_text())
    assert list(again["variants"]) == ["dense", "l1-1e-5", "l1-1e-4"]
    assert again["variants"]["l1-1e-4"] == results["variants"]["l1-1e-4"]

    import timm

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(1)
    with torch.no_grad():
        y = timm.create_model(f"local-dir:{root / 'effnet-lite0-mnist' / 'l1-1e-4'}", pretrained=True).eval()(x)
    save_file({"x": x}, str(tmp_path / "ref.safetensors"))
    with HubServer({"hf_alice": ("alice", ["myorg"])}) as hub:
        pub_env = {**os.environ, **hub.env(tmp_path / "alice", token="hf_alice")}
        publish = [sys.executable, "-m", "sparsezoo", "zoo", "publish", "effnet-lite0-mnist", "--org", "myorg",
                   "--variants", "l1-1e-4", "--root", str(root)]
        r = subprocess.run(publish, env=pub_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "--force" in r.stderr, r.stderr[-3000:]  # a reduced build is not the registry's
        r = subprocess.run([*publish, "--force"], env=pub_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert {"myorg/effnet-lite0-mnist-dense", "myorg/effnet-lite0-mnist-l1-1e-4"} <= set(hub.state.repos)
        consumer = tmp_path / "consumer"
        for offline in ("0", "1"):  # online through the Hub, then from the consumer's HF cache alone
            out = tmp_path / f"out{offline}.safetensors"
            r = subprocess.run([sys.executable, "-c", LOAD, "myorg/effnet-lite0-mnist-l1-1e-4",
                                str(tmp_path / "ref.safetensors"), str(out), offline],
                               env={**os.environ, **hub.env(consumer, offline=offline == "1")}, capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
            got = load_file(out)
            assert torch.allclose(got["zoo"], y, atol=1e-5)
            if offline == "0":
                assert torch.allclose(got["plain"], y, atol=1e-5)


# ----------------------------------------------------------------------------- the committed cards


def recorded() -> dict:
    path = CARDS / ZOO_RESULTS
    return json.loads(path.read_text())["entries"] if path.is_file() else {}


def test_every_committed_zoo_card_matches_the_committed_results():
    entries = recorded()
    names = set(registry().entries)
    cards = sorted(p for p in CARDS.glob("*.md") if any(p.stem.startswith(f"{n}-") for n in names))
    expected = {f"{e}-{v}" for e, r in entries.items() for v in r["variants"]}
    assert {p.stem for p in cards} == expected  # a card for every recorded variant, and no other zoo card
    for path in cards:
        entry = next(n for n in names if path.stem.startswith(f"{n}-"))
        res = entries[entry]["variants"][path.stem.removeprefix(f"{entry}-")]
        card = ModelCard.load(path)
        block = card.data.sparsity
        assert block["model_wide"]["zero_frac_mean_sites"]["value"] == res["zero_frac"]
        assert block["recipe_hash"] == res["recipe_hash"]
        index = card.data.eval_results
        top1 = next(r.metric_value for r in index if r.metric_type == "accuracy")
        assert top1 == res["top1"]
        assert "sparsezoo" in card.data.tags


@pytest.mark.parametrize("marker, make", [("zoo-table", "results_table"), ("lambda-table", "lambda_table")])
def test_the_readme_tables_are_the_committed_results(marker, make):
    """The README's zoo and λ tables are exactly what `sparsezoo zoo list --markdown / --lambda-table` prints from
    model_cards/zoo-results.json (with no local build folder in the way)."""
    from sparsezoo import zoo

    readme = (REPO / "README.md").read_text()
    start = readme.index(f"<!-- {marker}")
    body = readme[readme.index("\n", start) + 1:readme.index(f"<!-- /{marker} -->")].strip()
    listings = zoo.list_entries(root=REPO / "no-such-build-folder", cards_dir=CARDS)
    assert body == getattr(zoo, make)(listings)
