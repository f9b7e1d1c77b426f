"""`sparsezoo analyze`: reports for real models render, are self-contained and finite; compare; bad input."""

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from sparsezoo.cli import main

SECTIONS = {"summary", "sparsity", "density", "coherence", "margins", "convergence", "definitions"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.cells, self.stack, self.external = set(), 0, [], [], []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs += 1
            assert a["src"].startswith("data:image/png;base64,")
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)
        self._in_td = tag == "td"

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()
        self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, float):
        yield obj


def check_report(folder, sections):
    rep = json.loads((folder / "report.json").read_text())  # strict JSON: no NaN/Infinity tokens
    assert "NaN" not in (folder / "report.json").read_text()
    assert all(math.isfinite(x) for x in numbers(rep))
    page = Page()
    page.feed((folder / "report.html").read_text())
    page.close()
    assert sections <= page.ids, sections - page.ids
    assert not page.external and not page.stack
    assert not any(c.strip().lower() in ("nan", "inf", "-inf") for c in page.cells)
    return rep, page


def run(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code


def test_report_for_the_offline_mobilenetv2_renders(tmp_path):
    out = tmp_path / "mnv2"
    assert run("analyze", "mobilenetv2_100", "--weights", "offline", "--data", "digits", "--img-size", "64",
               "--samples", "64", "--batch-size", "32", "--ista-samples", "4", "--ista-steps", "6", "--no-fused",
               "--explain", "--explain-top-k", "2", "--out", str(out)) == 0
    rep, page = check_report(out, SECTIONS | {"explain"})
    a = rep["models"][0]["analysis"]
    assert a["samples"] == 64 and len(a["sparsity"]["per_site"]) == 35
    assert rep["command"].startswith("sparsezoo analyze mobilenetv2_100")
    assert page.imgs > 7  # per-site, density, coherence, margins, relative change, CKA, ISTA + feature cards
    assert rep["models"][0]["analysis"]["explain"]
    assert all(v["verdict"] for v in a["margins"].values())
    ista = [v for v in a["convergence"]["ista"].values() if "skipped" not in v]
    assert ista and all(v["relative_error"][0] < 1e-3 for v in ista)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it); HTML checked without a browser")
    shot = tmp_path / "shot.png"
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                          f"--screenshot={shot}", "--window-size=1400,3000", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 50_000
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console


def test_compare_a_run_with_its_dense_original(tmp_path, small_recipe):
    from sparsezoo.train import finetune

    run_dir = tmp_path / "run"
    finetune(small_recipe(train__epochs=1, penalties=[{"kind": "l1", "lam": 0.5}]), run_dir)
    out = tmp_path / "cmp"
    assert run("analyze", str(run_dir), "--compare", "test_resnet", "--no-pretrained", "--data", "digits",
               "--samples", "32", "--batch-size", "16", "--no-fused", "--ista-steps", "4", "--out", str(out)) == 0
    rep, page = check_report(out, SECTIONS | {"deltas"})
    assert [m["label"] for m in rep["models"]] == ["run", "test_resnet"]
    d = rep["deltas"]
    assert set(d["sparsity_per_site"]) == set(rep["models"][0]["analysis"]["sparsity"]["per_site"])
    z = [m["analysis"]["sparsity"]["summary"]["zero_frac_mean_sites"] for m in rep["models"]]
    assert d["headline"]["zero_frac_mean_sites"] == pytest.approx(z[1] - z[0])


def test_weights_only_report_needs_no_data(tmp_path):
    out = tmp_path / "w"
    assert run("analyze", "resnet18", "--no-pretrained", "--weights-only", "--out", str(out)) == 0
    rep, page = check_report(out, {"summary", "coherence", "definitions"})
    assert "sparsity" not in page.ids and len(rep["models"][0]["analysis"]["coherence"]) == 21


@pytest.mark.parametrize("argv, message", [
    (["analyze", "resnet18", "--no-pretrained"], "--data is required"),
    (["analyze", "resnet5", "--weights-only"], "unknown model 'resnet5'"),
    (["analyze", "test_resnet", "--no-pretrained", "--data", "digits", "--sites", "nothing"], "no feature site matches"),
    (["analyze", "test_resnet", "--no-pretrained", "--data", "digits", "--batch-size", "2"], "--batch-size must be >= 4"),
])
def test_bad_input_one_line_exit_2(argv, message, tmp_path, capsys):
    capsys.readouterr()
    assert run(*argv, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_existing_report_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.html").write_text("keep")
    assert run("analyze", "resnet18", "--no-pretrained", "--weights-only", "--out", str(out)) == 2
    assert (out / "report.html").read_text() == "keep"


TIMM_FAMILIES = [
    pytest.param("tf_efficientnet_lite0", "random", 64, id="tf_efficientnet_lite0"),  # TF-"same" padding
    *(pytest.param(name, "random", 64, id=name, marks=pytest.mark.slow)
      for name in ("efficientnet_b0", "mobilenetv3_small_100", "resnet18", "regnetx_002", "convnext_atto", "test_vit")),
    pytest.param("tf_efficientnet_lite0", "offline", 64, id="tf_efficientnet_lite0-offline-64", marks=pytest.mark.slow),
    pytest.param("tf_efficientnet_lite0", "offline", 96, id="tf_efficientnet_lite0-offline-96", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, weights, size", TIMM_FAMILIES)
def test_analyze_reports_every_layer_of_every_timm_conv_family(name, weights, size, tmp_path):
    out = tmp_path / "r"
    w = ["--weights", "offline"] if weights == "offline" else ["--no-pretrained"]
    assert run("analyze", name, *w, "--data", "digits", "--img-size", str(size), "--samples", "16", "--batch-size", "8",
               "--ista-samples", "2", "--ista-steps", "3", "--no-fused", "--out", str(out)) == 0
    rep, _ = check_report(out, SECTIONS)
    a = rep["models"][0]["analysis"]
    assert set(a["margins"]) == set(a["coherence"])  # every conv/linear layer has its output code measured
    assert all(v["stripe_max"] <= v["window_size"] for v in a["margins"].values())
    shape_skips = [n for n, v in a["convergence"]["ista"].items() if "is not the layer output" in v.get("skipped", "")]
    assert not shape_skips  # the operator applies each layer's real padding
    for c in a["coherence"].values():  # zero atoms never turn into huge thresholds
        th = c.get("threshold") or {}
        assert th.get("max") is None or abs(th["max"]) < 1e6
