"""What every data source shares: split names, class-label columns and vocabularies, the image dataset types,
the stratified split and the seeded sample caps. Image (:mod:`~sparsezoo.data.loaders`), text
(:mod:`~sparsezoo.data.text`) and named (:mod:`~sparsezoo.data.named`) sources all read these, so a rule (which
column holds labels, how a split is held out) is written once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsezoo.errors import DataError

VAL_SPLIT_NAMES = ("validation", "valid", "val")  # a split of these names validates; "test" never does
TEST_SPLIT = "test"  # a source's split of this name is its test split: read once, after everything is chosen
TEST_SEED = 0  # the seed of a named set's fixed test part (not the recipe's split_seed: the test part never moves)
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category", "sentiment")
MAX_CLASSES = 10_000  # a label column with more distinct values than this is not class labels


def label_column(features: Any, given: str | None) -> str | None:
    """The label column of a Hugging Face dataset: ``given``, else a ``ClassLabel`` feature, else a column named
    like one (``label``, ``labels``, …); None if there is none."""
    from datasets import ClassLabel

    cols = list(features)
    return given or next((c for c in cols if isinstance(features[c], ClassLabel)), None) or next(
        (c for c in cols if c.lower() in LABEL_COLUMN_NAMES), None)


def class_vocabulary(dataset: Any, column: str) -> tuple[list[str], dict[Any, int] | None]:
    """(class names, value → class index) of a label column; the mapping is None for a ``ClassLabel`` column, whose
    values are already indices. Other values are sorted by their text.

    Raises:
        DataError: the column does not look like class labels (floats, lists, or more than MAX_CLASSES values).
    """
    from datasets import ClassLabel

    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names), None
    values = sorted(set(dataset[column]), key=str)
    if len(values) > MAX_CLASSES or any(isinstance(v, (float, list, dict)) for v in values[:100]):
        raise DataError(f"column {column!r} does not look like class labels (e.g. {values[:3]})")
    return [str(v) for v in values], {v: i for i, v in enumerate(values)}


def split_names(splits: Any, spec: Any, description: str) -> tuple[str | None, str | None]:
    """Check ``spec``'s splits exist in ``splits`` (names). Returns the validation split to use (None: hold one out
    of the training split) and the test split (``test`` when the source has one that neither trains nor validates;
    None otherwise). A ``test`` split validates only when ``--val-split test`` says so, and then there is no test.

    Raises:
        DataError: the training or the requested validation split is missing.
    """
    for name in (spec.train_split, spec.val_split):
        if name is not None and name not in splits:
            raise DataError(f"split {name!r} not in {description} (splits: {', '.join(splits)})")
    val = spec.val_split or next((n for n in VAL_SPLIT_NAMES if n in splits and n != spec.train_split), None)
    test = TEST_SPLIT if TEST_SPLIT in splits and TEST_SPLIT not in (val, spec.train_split) else None
    return val, test


def held_out_text(fraction: float, of: str, seed: int, fixed: bool = False) -> str:
    """How a held-out part was drawn, as runs record it: ``20% of train, stratified by class, split_seed 0``."""
    return (f"{fraction:.0%} of {of}, stratified by class, {'seed' if fixed else 'split_seed'} {seed}"
            + (" (fixed: the same for every recipe)" if fixed else ""))


def split_roles(spec: Any, val: str | None, test: str | None, test_how: str | None = None) -> dict[str, Any]:
    """What a run records of the splits it uses (``metrics.json`` ``splits``), before their sizes are known: per
    role (train, validation, test) the split's name and, for a part held out of another split, how (fraction,
    stratification, seed); test None when the source has none. ``val`` None: validation is held out of train."""
    how = None if val else held_out_text(spec.val_fraction, spec.train_split, spec.split_seed)
    roles: dict[str, Any] = {"train": {"name": spec.train_split}, "validation": {"name": val or "validation"},
                             "test": {"name": test or "test"} if test or test_how else None}
    if how:
        roles["validation"]["held_out"] = how
    if test_how:
        roles["test"]["held_out"] = test_how
    return roles


def with_sizes(roles: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """``roles`` (:func:`split_roles`) with each split's size (after the recipe's sample caps)."""
    return {k: None if v is None else {**v, "size": int(sizes[k])} for k, v in roles.items()}


class SealedSplit:
    """The test split of a run, closed until everything the run chooses (λ, thresholds, the checkpoint kept) has
    been chosen on validation; :meth:`open` is the one way to its samples, and the training loop calls it once, at
    the end. ``info`` (what the run records of it: name, size, how it was held out) can be read at any time."""

    def __init__(self, dataset: Any, info: dict[str, Any]):
        self._dataset, self.info = dataset, info
        self.opened = False

    def open(self) -> Any:
        """The test samples; from now on this run chooses nothing."""
        self.opened = True
        return self._dataset


class ImageList:
    """A map-style dataset of ``(PIL RGB image, class index)`` pairs over a loader function."""

    def __init__(self, load: Any, labels: Sequence[int], indices: Sequence[int] | None = None):
        self._load = load  # index -> PIL image
        self.labels = list(labels)
        self.indices = list(range(len(self.labels))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        return self._load(j), self.labels[j]

    def subset(self, idx: Sequence[int]) -> ImageList:
        return ImageList(self._load, self.labels, [self.indices[i] for i in idx])

    def targets(self) -> list[int]:
        return [self.labels[j] for j in self.indices]


@dataclass
class ImageData:
    train: ImageList
    val: ImageList
    label_names: list[str]
    description: str
    default_augment: str = "standard"
    eval_crop_pct: float | None = None
    test: ImageList | None = None
    splits: dict[str, Any] = field(default_factory=dict)  # split_record per role: train, validation, test


def three_way(labels: Sequence[int], test_fraction: float, spec: Any) -> tuple[list[int], list[int], list[int]]:
    """Train / validation / test indices of a set with no splits of its own: first a fixed test part
    (``test_fraction``, stratified, :data:`TEST_SEED`: the same for every recipe), then ``spec.val_fraction`` of the
    rest held out for validation (stratified, ``spec.split_seed``)."""
    rest, test = stratified_split(labels, test_fraction, TEST_SEED)
    tr, va = stratified_split([labels[i] for i in rest], spec.val_fraction, spec.split_seed)
    return [rest[i] for i in tr], [rest[i] for i in va], test


def three_way_roles(spec: Any, test_fraction: float, what: str) -> dict[str, Any]:
    """The :func:`split_roles` of :func:`three_way`'s parts (``what``: the whole set, in words)."""
    roles = split_roles(spec, None, None, held_out_text(test_fraction, what, TEST_SEED, fixed=True))
    roles["validation"]["held_out"] = held_out_text(spec.val_fraction, "the rest", spec.split_seed)
    return roles


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic stratified split: per class, a seeded permutation; ``val_fraction`` of it to val (at least one
    sample of each class with two or more on each side).

    Raises:
        DataError: the fraction is less than one sample, or leaves less than one (``val_fraction * n`` rounds to 0
            or ``n``): an empty split asked for.
    """
    labels = np.asarray(labels)
    n = len(labels)
    held = int(round(val_fraction * n))
    if n and held < 1:
        raise DataError(f"data.val_fraction {val_fraction:g} of {n:,} samples is less than one validation sample "
                        f"(the smallest fraction that holds one out is {1 / n:.2g})")
    if n and held >= n:
        raise DataError(f"data.val_fraction {val_fraction:g} of {n:,} samples leaves less than one training sample")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(val)


def cap_indices(available: int, cap: int | None, seed: int, split: str, description: str) -> list[int] | None:
    """Indices of the ``cap`` samples kept of ``available`` (a seeded choice, in order); None keeps them all.

    Raises:
        DataError: ``cap`` is not positive, or more than the split has (``split`` is "training" or "validation").
    """
    if cap is None:
        return None
    key = "max_train_samples" if split == "training" else "max_val_samples"
    if cap < 1:
        raise DataError(f"data.{key} must be positive, got {cap}")
    if cap > available:
        raise DataError(f"data.{key} {cap:,} is more than the {available:,} {split} samples of {description}")
    if cap == available:
        return None
    return np.sort(np.random.default_rng(seed).permutation(available)[:cap]).tolist()


def open_image(path: Path):
    """An image file as an RGB PIL image; DataError (one line) if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
