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


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

# Measures the page as a reader's browser lays it out: the viewport, the page's own width, the headline block's
# bottom edge, and the right edge and width of every table box.
PROBE = """<script>window.addEventListener("load", () => {
  const box = e => e.getBoundingClientRect();
  const r = {width: innerWidth, height: innerHeight, page_width: document.documentElement.scrollWidth,
             headline_bottom: box(document.getElementById("headline")).bottom,
             tables: [...document.querySelectorAll("table")].map(t => {
               const b = box(t.closest(".tw") || t); return [b.right, b.width]; })};
  document.body.setAttribute("data-probe", JSON.stringify(r));
});</script>"""


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (.ci/run installs it); HTML checked without a browser")
    return found


def layout(report_html, tmp_path, width=1280, height=800):
    """The page's layout in headless Chromium at ``width``×``height`` (see PROBE)."""
    import html as _html
    import re

    probed = tmp_path / "probed.html"
    probed.write_text(report_html.read_text().replace("</body>", PROBE + "</body>"))
    res = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'probe-profile'}",
                          f"--window-size={width},{height}", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert found, res.stderr[-2000:]
    return json.loads(_html.unescape(found.group(1)))


def check_first_screen(report_html, tmp_path):
    """The headline block is on the first screen (1280×800) and nothing is wider than the viewport."""
    m = layout(report_html, tmp_path)
    assert m["width"] == 1280
    assert 0 < m["headline_bottom"] <= min(800, m["height"]), m
    assert m["page_width"] <= m["width"], m
    assert m["tables"] and all(right <= m["width"] and w <= m["width"] for right, w in m["tables"]), m


def run(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code


@pytest.mark.slow  # an end-to-end subprocess or real-weights run; CI runs it (quick loop <= 120 s)
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
    assert rep["models"][0]["analysis"]["explain"]["class_names"][:2] == ["tench", "goldfish"]  # ImageNet's names
    assert all(v["verdict"] for v in a["margins"].values())
    ista = [v for v in a["convergence"]["ista"].values() if "skipped" not in v]
    assert ista and all(v["relative_error"][0] < 1e-3 for v in ista)
    assert "top1" not in rep["models"][0]["headline"]  # an ImageNet head is not a classifier of digits
    assert "1000 outputs, the data 10 classes" in a["accuracy"]["skipped"]
    shot = tmp_path / "shot.png"
    res = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--enable-logging=stderr", "--v=0",
                          f"--screenshot={shot}", "--window-size=1400,3000", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 50_000
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    check_first_screen(out / "report.html", tmp_path)


def test_compare_a_run_with_its_dense_original(tmp_path, l1_run):
    _, run_dir, _ = l1_run
    out = tmp_path / "cmp"
    assert run("analyze", str(run_dir), "--compare", "test_resnet", "--no-pretrained", "--data", "digits",
               "--samples", "32", "--batch-size", "16", "--no-fused", "--ista-steps", "4", "--out", str(out)) == 0
    rep, page = check_report(out, SECTIONS | {"deltas", "headline"})
    assert [m["label"] for m in rep["models"]] == ["l1", "test_resnet"]
    d = rep["deltas_subject_minus_baseline"]
    assert (d["subject"], d["baseline"]) == ("l1", "test_resnet") and "deltas" not in rep
    assert set(d["sparsity_per_site"]) == set(rep["models"][0]["analysis"]["sparsity"]["per_site"])
    z = [m["analysis"]["sparsity"]["summary"]["zero_frac_mean_sites"] for m in rep["models"]]
    assert d["headline"]["zero_frac_mean_sites"] == pytest.approx(z[0] - z[1])
    # the run was fine-tuned on digits: top-1 in the same pass; the random ImageNet-sized head is not scored
    acc = rep["models"][0]["analysis"]["accuracy"]
    assert acc["samples"] == 32 and 0 <= acc["top1"] <= 1 and acc["loss"] > 0
    assert rep["models"][0]["headline"]["top1"] == acc["top1"]
    assert "skipped" in rep["models"][1]["analysis"]["accuracy"]
    figures = {f["key"]: f for f in rep["headline_figures"]}
    assert figures["zero_frac_mean_sites"]["delta"] == pytest.approx(z[0] - z[1])
    assert figures["top1"]["values"] == [acc["top1"], None]
    html_text = (out / "report.html").read_text()
    assert "change (l1 − test_resnet)" in html_text and "Deltas are" not in html_text
    assert html_text.index('id="headline"') < html_text.index("<nav>")
    assert all(f'id="def-{k}"' in html_text for k in ("top1", "zero-frac-mean-sites", "factor-outside", "mu"))
    check_first_screen(out / "report.html", tmp_path)


def _hand_made(top1, zero_frac, dead, mu):
    """An analysis result with only what the headline reads."""
    summary = {"sites": 2, "zero_frac_mean_sites": zero_frac, "zero_frac_all_entries": zero_frac,
               "l0_per_position_frac_mean_sites": 1 - zero_frac, "dead_units": dead, "dense_units": 0,
               "near_zero_frac(abs,tau=0.01)_mean_sites": zero_frac + 0.01}
    layer = {"local": {"mu": mu}, "mu_shift": None}
    return {"model": {"parameters": 1}, "accuracy": {"top1": top1, "loss": 1 - top1, "samples": 100},
            "coherence": {"conv": layer}, "samples": 100,
            "sparsity": {"summary": summary, "per_site": {}, "stages": {}}}


def test_changes_are_subject_minus_baseline_with_units():
    from analysis.report import Report, build_report, headline_html

    sparse, dense = _hand_made(0.90, 0.63, 12, 0.50), _hand_made(0.92, 0.41, 2, 0.55)
    rep = build_report([("sparse", "runs/sparse", sparse), ("dense", "runs/dense", dense)], "test")
    d = rep["deltas_subject_minus_baseline"]
    assert d["headline"]["zero_frac_mean_sites"] == pytest.approx(0.22)
    assert d["headline"]["top1"] == pytest.approx(-0.02) and d["headline"]["dead_units"] == 10
    figures = {f["key"]: f for f in rep["headline_figures"]}
    assert figures["zero_frac_mean_sites"]["values"] == [0.63, 0.41]
    assert figures["mu_local_median"]["delta"] == pytest.approx(-0.05)
    headline = headline_html(Report.from_json(rep))
    for text in ("63.0 %", "41.0 %", "+22.0 pts", "90.0 %", "-2.0 pts", "+10", "change (sparse − dense)",
                 'href="#def-zero-frac-mean-sites"', 'href="#def-top1"'):
        assert text in headline, text
    # one model alone: the same figures, no change column
    single = build_report([("sparse", "runs/sparse", sparse)], "test")
    assert "deltas_subject_minus_baseline" not in single
    single_html = headline_html(Report.from_json(single))
    assert "63.0 %" in single_html and "change (" not in single_html


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


def test_accuracy_meter_known_answers():
    """top1 = correct / samples; loss = mean cross-entropy in nats; batches split anywhere give the same numbers."""
    import torch

    from analysis.collect import AccuracyMeter

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # predictions 0, 1, 0
    labels = torch.tensor([0, 0, 0])
    expected_loss = (math.log1p(math.exp(-2)) + math.log1p(math.e) + math.log1p(math.exp(-1))) / 3
    whole, split = AccuracyMeter(num_classes=2), AccuracyMeter(num_classes=2)
    whole.update(logits, labels)
    split.update(logits[:1], labels[:1])
    split.update(logits[1:], labels[1:])
    for meter in (whole, split):
        r = meter.result()
        assert r["samples"] == 3 and r["top1"] == pytest.approx(2 / 3) and r["loss"] == pytest.approx(expected_loss)
    for meter, args, reason in [(AccuracyMeter(num_classes=10), (logits, labels), "2 outputs, the data 10 classes"),
                                (AccuracyMeter(), (logits, None), "no labels"),
                                (AccuracyMeter(), (logits, torch.tensor([0, 2, 1])), "beyond the model's 2 outputs"),
                                (AccuracyMeter(), (logits[0], labels), "no (batch, classes) logits")]:
        meter.update(*args)
        assert reason in meter.result()["skipped"]
