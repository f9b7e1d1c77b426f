"""What the zoo's cards and commands say can be trusted: licenses never grant more than the weights and data allow,
base_model names the exact weights or nothing, builds never clobber recorded results, unreadable results are
refused untouched, publish refuses a variant built under another recipe, and a short name loads a local build."""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from test_hub_cards import card_sections, make_run

from sparsezoo import zoo
from sparsezoo.hub.cards import model_license, read_run, render_card
from sparsezoo.hub.licenses import combine, parse

REPO = Path(__file__).resolve().parent.parent
CARDS = REPO / "model_cards"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sparsezoo(capsys, monkeypatch):
    """Run the CLI in this process (``main([...])`` leaves the process as it found it) from a folder; returns
    ``(exit code, stdout, stderr)`` as a CompletedProcess."""
    from sparsezoo.cli import main

    def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return run


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"sparsezoo( \w+)?: error: ", lines[0]) and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- licenses and lineage


@pytest.mark.parametrize("weights, data, expected", [
    ("Apache-2.0", "CC BY-NC-SA 4.0", "cc-by-nc-sa-4.0"),  # share-alike and non-commercial pass on
    ("BSD-3-Clause", "CC BY-SA 3.0", "cc-by-sa-3.0"),
    ("Apache-2.0", "CC BY-NC 4.0", "cc-by-nc-4.0"),
    ("MIT", "BSD-3-Clause", "bsd-3-clause"),  # permissive: the one with more conditions
    ("Apache-2.0", "Apache-2.0", "apache-2.0"),
    ("CC BY-SA 3.0", "CC BY-NC-SA 4.0", "other"),  # two share-alike licenses: no single license meets both
    ("CC BY-SA 3.0", "CC BY-NC 4.0", "other"),
    ("Apache-2.0", "unknown (public research corpus)", "other"),
    (None, "MIT", "other"),
])
def test_a_models_license_is_the_most_restrictive_of_its_weights_and_data(weights, data, expected):
    assert combine(parse(weights), parse(data)).hub_id == expected


# the facts each registry entry's cards must state: (base_model, license)
PROVENANCE = {
    "mnv2-elpv": (None, "cc-by-nc-sa-4.0"),  # torchvision weights (no Hub repo holds them) on ELPV (CC BY-NC-SA 4.0)
    "effnet-lite0-mnist": (None, "other"),  # weights of unknown origin and license, on MNIST (CC BY-SA 3.0)
    "minilm-rotten-tomatoes": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "minilm-20newsgroups": ("sentence-transformers/all-MiniLM-L6-v2", "other"),  # 20 Newsgroups: no stated license
}


def test_every_entrys_cards_carry_its_true_license_and_lineage():
    reg = zoo.registry()
    assert set(reg.entries) == set(PROVENANCE)
    for name, entry in reg.entries.items():
        for variant in entry.variants:
            base, lic = entry.provenance(variant)
            assert (base, lic.hub_id) == PROVENANCE[name], (name, variant)
            assert lic.weights.name in lic.reason or not lic.weights.known


def test_the_committed_cards_and_results_state_the_same_license_and_lineage():
    recorded = json.loads((CARDS / zoo.ZOO_RESULTS).read_text())["entries"]
    for name, (base, lic) in PROVENANCE.items():
        assert recorded[name]["base_model"] == base
        for variant in recorded[name]["variants"]:
            card = ModelCard.load(CARDS / f"{name}-{variant}.md")
            assert card.data.license == lic and card.data.base_model == base, (name, variant)
            license_section = card_sections(card.text)["License"]
            assert f"`{lic}`" in license_section and "- Weights:" in license_section and "- Data:" in license_section
    assert "base_model" not in (REPO / "sparsezoo" / "zoo" / "zoo.yaml").read_text().split("entries:")[1]


def test_the_committed_cards_name_the_split_the_loader_evaluated_on():
    """The recorded zoo predates recorded splits (issue 23's protocol): its loader validated MNIST on its own
    validation split, 20 Newsgroups on its test split and the others on 20 % of train, and every card says so. A run
    that records its splits names them (tests/test_protocol.py); one that does not is not guessed at."""
    from sparsezoo.hub.cards import Run, dataset

    then = {"mnist": "validation", "20newsgroups": "test"}
    recorded = json.loads((CARDS / zoo.ZOO_RESULTS).read_text())["entries"]
    for name, entry in zoo.registry().entries.items():
        for variant in recorded.get(name, {}).get("variants", {}):
            source = entry.recipe_for(variant).data.source
            split = then.get(source, "20% of train held out (stratified, split_seed 0)")
            card = ModelCard.load(CARDS / f"{name}-{variant}.md")
            assert {r.dataset_split for r in card.data.eval_results} == {split}, (name, variant)
            assert f"split: {split}" in card.text
    old = dataset(Run(Path("x"), "timm", {}, zoo.registry().entries["effnet-lite0-mnist"].recipe_for("dense"), {}))
    assert old[2] == "validation (not recorded: a run made before sparsezoo recorded its splits)"


def test_packaged_weights_are_the_files_their_lineage_names():
    """base_model and licenses rest on the shipped files being the ones recorded (sha256)."""
    from sparsezoo.models.offline_weights import PACKAGED_MODELS, PROVIDERS, packaged_model_dir

    for provider in PROVIDERS.values():
        try:
            path = provider.locate()
        except (ImportError, OSError):
            pytest.skip(f"{provider.package} is not installed")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == provider.sha256
        assert provider.sha256.startswith(path.stem.rsplit("-", 1)[1])  # torch-hub names carry the sha256 prefix
    for dist, model in PACKAGED_MODELS.items():
        folder = Path(packaged_model_dir(f"pypi:{dist}/{dist.replace('-', '_')}/model"))
        assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == model.sha256


def test_a_license_override_may_not_grant_more_than_the_inputs_allow(tmp_path):
    from sparsezoo.hub.cards import CardError

    run = read_run(make_run(tmp_path / "elpv", source="elpv"))  # resnet18.a1_in1k (apache-2.0) on ELPV
    assert model_license(run).hub_id == "cc-by-nc-sa-4.0"
    with pytest.raises(CardError, match="not what the inputs allow"):
        model_license(run, "apache-2.0")
    hub_data = read_run(make_run(tmp_path / "hub", source="org/reviews"))  # a Hub data set: license unknown
    assert model_license(hub_data).hub_id == "other"
    assert model_license(hub_data, "mit").hub_id == "mit"  # left open: the publisher decides, and the card says so


# ----------------------------------------------------------------------------- builds that cannot clobber results


def test_a_reduced_build_into_the_recorded_cards_dir_is_refused_before_training(sparsezoo, tmp_path):
    before = tree_digest(CARDS)
    r = sparsezoo("zoo", "build", "effnet-lite0-mnist", "--set", "train.epochs=1", "--root", str(tmp_path / "zoo"))
    one_error_line(r, "--cards-dir", "effnet-lite0-mnist")
    assert tree_digest(CARDS) == before and not (tmp_path / "zoo").exists()
    # the same refusal for a folder holding a copy of the recorded results, and a fresh folder is fine to plan
    shutil.copytree(CARDS, tmp_path / "cards")
    with pytest.raises(zoo.ZooError, match="--cards-dir"):
        zoo.plan_build("effnet-lite0-mnist", tmp_path / "zoo",
                       zoo.BuildOptions(overrides={"train": {"epochs": 1}}, cards_dir=tmp_path / "cards"))
    with pytest.raises(zoo.ZooError, match="--cards-dir"):  # some variants, other analysis samples: drops numbers
        zoo.plan_build("effnet-lite0-mnist", tmp_path / "zoo",
                       zoo.BuildOptions(variants=["l1-1e-4"], samples=64, cards_dir=tmp_path / "cards"))
    plan = zoo.plan_build("effnet-lite0-mnist", tmp_path / "zoo",
                          zoo.BuildOptions(overrides={"train": {"epochs": 1}}, cards_dir=tmp_path / "new-cards"))
    assert plan.reduced and plan.names[0] == "dense"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_unreadable_recorded_results_are_refused_and_left_untouched(sparsezoo, tmp_path, content):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / zoo.ZOO_RESULTS).write_text(content)
    r = sparsezoo("zoo", "build", "effnet-lite0-mnist", "--root", str(tmp_path / "zoo"), "--cards-dir", str(cards))
    one_error_line(r, str(cards / zoo.ZOO_RESULTS))
    r = sparsezoo("zoo", "list", "--cards-dir", str(cards), "--root", str(tmp_path / "zoo"))
    one_error_line(r, "cannot read" if content != "[1, 2]" else "not a zoo results file")
    assert (cards / zoo.ZOO_RESULTS).read_text() == content and not (tmp_path / "zoo").exists()


def fake_build(root: Path, entry: str, overrides: dict | None = None) -> Path:
    """A build folder whose run folders hold the files publish checks first (results, metrics, recipe)."""
    e = zoo.registry().entry(entry)
    folder = root / entry
    variants = {}
    for v in e.variant_names()[:2]:
        (folder / v).mkdir(parents=True)
        recipe = e.recipe_for(v, overrides)
        (folder / v / "recipe.yaml").write_text(recipe.to_yaml())
        (folder / v / "metrics.json").write_text(json.dumps({"complete": True, "recipe_hash": recipe.hash()}))
        variants[v] = {"variant": v}
    (folder / zoo.RESULTS).write_text(json.dumps({"entry": entry, "overrides": overrides or {}, "variants": variants}))
    (folder / zoo.MARKER).write_text(json.dumps({"entry": entry}))
    return folder


def test_publish_refuses_a_variant_built_under_another_recipe_unless_forced(sparsezoo, tmp_path):
    fake_build(tmp_path / "reduced", "effnet-lite0-mnist", {"train": {"epochs": 1}})
    variants = zoo.registry().entry("effnet-lite0-mnist").variant_names()[1:2]
    with pytest.raises(zoo.ZooError, match=r"effnet-lite0-mnist:dense .* built under recipe \w+, the registry's is"):
        zoo.publish("effnet-lite0-mnist", "myorg", tmp_path / "reduced", variants=variants, dry_run=True)
    r = sparsezoo("zoo", "publish", "effnet-lite0-mnist", "--org", "myorg", "--variants", *variants,
                  "--root", str(tmp_path / "reduced"), "--dry-run")
    one_error_line(r, "--force")
    fake_build(tmp_path / "full", "effnet-lite0-mnist")  # the registry's recipes: past the check, to the run files
    with pytest.raises(Exception) as err:
        zoo.publish("effnet-lite0-mnist", "myorg", tmp_path / "full", variants=variants, dry_run=True)
    assert "registry" not in str(err.value)


@pytest.mark.parametrize("args, needle", [
    (["pull", "../x"], "'../x' is not a Hub repo id"),
    (["pull", "org/..x"], "is not a Hub repo id"),
    (["push", "no-such-run", "--repo", "a--b/c", "--dry-run"], ""),
    (["card", "no-such-run", "--repo", "../x"], "is not a Hub repo id"),
    (["zoo", "publish", "mnv2-elpv", "--org", "../x", "--root", "no-such-root"], "is not a Hub repo id"),
    (["zoo", "build", "mnv2-elpv", "--set", "train.epochs"], "KEY=VALUE"),
    (["zoo", "build", "no-such-entry"], "unknown zoo entry"),
    (["zoo", "build", "mnv2-elpv", "--variants", "l1-9"], "has no variant 'l1-9'"),
])
def test_bad_repo_ids_and_zoo_arguments_end_in_one_line(sparsezoo, tmp_path, args, needle):
    one_error_line(sparsezoo(*args, cwd=tmp_path), needle)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- using a zoo model as a new user


def test_a_short_name_loads_the_local_build_first_and_says_where_it_looked(tmp_path, l1_run):
    _, run_dir, _ = l1_run
    root = tmp_path / "zoo"
    shutil.copytree(run_dir, root / "effnet-lite0-mnist" / "dense", ignore=shutil.ignore_patterns("checkpoints"))
    model = zoo.load("effnet-lite0-mnist:dense", root=root)
    assert model.path == root / "effnet-lite0-mnist" / "dense" and model.repo_id is None
    from sparsezoo.hub.errors import HubError

    with pytest.raises(HubError) as err:  # offline, nothing cached, nothing built
        zoo.load("effnet-lite0-mnist:l1-1e-4", root=root)
    said = str(err.value)
    assert "is not built locally" in said and "zoo build effnet-lite0-mnist" in said and "cache" in said


def test_zoo_list_shows_the_recorded_numbers_from_the_package(sparsezoo, tmp_path):
    packaged = REPO / "sparsezoo" / "zoo" / zoo.ZOO_RESULTS
    assert packaged.read_bytes() == (CARDS / zoo.ZOO_RESULTS).read_bytes()  # the shipped copy is the recorded zoo
    r = sparsezoo("zoo", "list", cwd=tmp_path)  # no model_cards/ and no build here: the package's copy
    assert r.returncode == 0 and re.search(r"^  mnv2-elpv:dense +top-1 0\.\d{4}", r.stdout, re.M), r.stdout
    recorded = json.loads(packaged.read_text())["entries"]
    for name, entry in recorded.items():  # every recorded variant shows its numbers (variants registered after the
        for v in entry["variants"]:       # recorded build, awaiting the rebuild, say "not built")
            assert re.search(rf"^  {name}:{re.escape(v)} +top-1 0\.\d{{4}}", r.stdout, re.M), (name, v)


def test_the_card_of_a_zoo_variant_folder_names_its_repo_baseline_and_short_name(sparsezoo, tmp_path, l1_run):
    _, run_dir, _ = l1_run
    folder = tmp_path / "zoo" / "effnet-lite0-mnist"
    for v in ("dense", "l1-1e-4"):
        shutil.copytree(run_dir, folder / v, ignore=shutil.ignore_patterns("checkpoints"))
    (folder / zoo.MARKER).write_text(json.dumps({"entry": "effnet-lite0-mnist"}))
    dense = folder / "dense"
    recipe = dense / "recipe.yaml"  # make the baseline dense: no penalty
    from sparsezoo.recipe import Recipe, load_recipe

    r = load_recipe(str(recipe)).to_dict()
    r["penalties"] = []
    recipe.write_text(Recipe.from_dict(r).to_yaml())
    metrics = json.loads((dense / "metrics.json").read_text())
    metrics["recipe_hash"] = Recipe.from_dict(r).hash()
    (dense / "metrics.json").write_text(json.dumps(metrics))
    out = sparsezoo("card", str(folder / "l1-1e-4"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "# effnet-lite0-mnist-l1-1e-4" in out.stdout and "sparsezoo-dsc/effnet-lite0-mnist-l1-1e-4" in out.stdout
    assert "The dense baseline is the run `dense`" in out.stdout
    assert 'sparsezoo.load("effnet-lite0-mnist:l1-1e-4")' in out.stdout and "zoo/effnet-lite0-mnist/l1-1e-4" in out.stdout
    text = str(render_card(read_run(dense)))
    assert "this is a dense baseline" in text and "No dense baseline was measured" not in text
    assert "with a sparsity penalty" not in text


def test_the_cards_how_to_use_snippet_runs_as_written(tmp_path, l1_run, monkeypatch, capsys):
    """The timm snippet of a card, with the Hub id swapped for the local folder, classifies a grayscale image."""
    from PIL import Image

    _, run_dir, _ = l1_run
    text = str(render_card(read_run(run_dir), "myorg/l1"))
    code = re.search(r"```python\n(import timm.*?)```", text, re.S)[1]
    assert code.count('"hf-hub:myorg/l1"') == 1
    Image.new("L", (8, 8), 128).save(tmp_path / "example.png")  # grayscale, as the zoo's image data sets are
    code = code.replace('"hf-hub:myorg/l1"', json.dumps(f"local-dir:{run_dir}"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "card snippet", "exec"), {})
    assert capsys.readouterr().out.strip()  # it printed the predicted class
