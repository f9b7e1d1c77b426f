"""Text classification data: a Hub dataset id, a local CSV/JSONL file, or a saved dataset folder.

Columns are detected unless given: the text column (``text``, ``sentence``, ``review``, … or the first string
column), an optional second text column for sentence pairs (``sentence1``/``sentence2``, ``question``/
``sentence``, ``premise``/``hypothesis``), and the label column (a ``ClassLabel``, or ``label``/``labels``/…).
Without a validation split, ``val_fraction`` of the training split is held out, stratified, fixed by
``split_seed``. Batches are tokenized on the fly: truncated to ``max_length`` and padded to the longest
sequence of the batch (``padding: longest``) or to ``max_length`` (``padding: max_length``); the attention
mask marks the padding, which every sparsity statistic and penalty leaves out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsezoo.data.common import (
    cap_indices,
    class_vocabulary,
    label_column,
    split_names,
    split_roles,
    stratified_split,
    with_sizes,
)
from sparsezoo.errors import DataError
from sparsezoo.recipe import DataSpec

TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content", "document", "comment", "body", "question")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
                ("text_a", "text_b"), ("question1", "question2"))


@dataclass
class TextData:
    train: Any  # datasets.Dataset with columns "text", ("text_pair"), "label"
    val: Any
    label_names: list[str]
    pair: bool
    description: str
    test: Any = None  # the test split (None: the source has none)
    splits: dict[str, Any] = field(default_factory=dict)  # per role: name, size, how it was held out


def _root_cause(e: BaseException) -> BaseException:
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    return e


def _open(spec: DataSpec):
    """(the source's ``DatasetDict`` or ``Dataset``, its description, its split roles where a named set makes its
    own parts, else None)."""
    from sparsezoo.data.named import named

    known = named(spec.source, "text")
    if known is not None:
        return known.load(spec), f"{known.name}: {known.description}", known.roles(spec)
    data, description = _open_source(spec)
    return data, description, None


def _open_source(spec: DataSpec):
    import datasets

    from sparsezoo.data.named import did_you_mean

    src = spec.source
    path = Path(src).expanduser()
    if path.is_file():
        kind = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix.lower())
        if kind is None:
            raise DataError(f"{path}: text data files must be .csv, .tsv, .json or .jsonl")
        extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        quiet = logging.getLogger("datasets")  # it logs its own line for a file it cannot parse; ours is enough
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            return datasets.load_dataset(kind, data_files={"train": str(path)}, **extra), f"file {path}"
        except Exception as e:  # malformed CSV/JSON, not UTF-8
            first = (str(_root_cause(e)).strip() or type(e).__name__).splitlines()[0]
            if isinstance(_root_cause(e), UnicodeDecodeError) or "utf" in first.lower():
                raise DataError(f"cannot read {path}: it is not UTF-8 text ({first}); save it as UTF-8") from e
            raise DataError(f"cannot read {path}: {first}") from e
        finally:
            quiet.setLevel(level)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return datasets.load_from_disk(str(path)), f"saved dataset {path}"
        raise DataError(f"{path} is a folder but not a saved dataset (use a .csv/.jsonl file or save_to_disk)")
    if src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise DataError(f"data file {path} not found")
    try:
        return datasets.load_dataset(src, spec.config), f"dataset {src}"
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot load dataset {src!r} (not a local file; from the Hub: {msg}){did_you_mean(src, 'text')}") from e


def _columns(features: dict, spec: DataSpec) -> tuple[str, str | None, str]:
    from datasets import Value

    cols = list(features)
    for given, what in ((spec.text_column, "text"), (spec.text_pair_column, "text pair"),
                        (spec.label_column, "label")):
        if given is not None and given not in features:
            raise DataError(f"{what} column {given!r} is not in the dataset (columns: {', '.join(cols)})")
    lab = label_column(features, spec.label_column)
    if lab is None:
        raise DataError(f"cannot find a label column (columns: {', '.join(cols)}); pass --label-column")
    strings = [c for c in cols if isinstance(features[c], Value) and features[c].dtype in ("string", "large_string")
               and c != lab]
    text, pair = spec.text_column, spec.text_pair_column
    if text is None:
        found = next(((a, b) for a, b in PAIR_COLUMNS if a in strings and b in strings), None)
        if found and pair is None:
            text, pair = found
        else:
            text = next((c for c in strings if c.lower() in TEXT_COLUMN_NAMES), strings[0] if strings else None)
    if text is None:
        raise DataError(f"cannot find a text column (columns: {', '.join(cols)}); pass --text-column")
    return text, pair, lab


def load_text_data(spec: DataSpec) -> TextData:
    """Resolve ``spec.source`` to train/val datasets with columns ``text`` (``text_pair``) and ``label``."""
    from datasets import DatasetDict

    dsd, description, roles = _open(spec)
    if not isinstance(dsd, DatasetDict):
        dsd = DatasetDict({spec.train_split: dsd})
    val_name, test_name = split_names(dsd, spec, description)
    roles = roles or split_roles(spec, val_name, test_name)
    train = dsd[spec.train_split]
    text, pair, lab = _columns(train.features, spec)
    names, to_index = class_vocabulary(train, lab)

    def prepare(ds):
        keep = [text] + ([pair] if pair else []) + [lab]
        ds = ds.select_columns(keep)
        if to_index is not None:
            unknown = sorted({v for v in ds[lab] if v not in to_index}, key=str)
            if unknown:
                raise DataError(f"labels {unknown[:3]} of the validation split do not occur in the training split")
            ds = ds.map(lambda r: {lab: to_index[r[lab]]})
        rename = {text: "text", lab: "label"} | ({pair: "text_pair"} if pair else {})
        rename = {k: v for k, v in rename.items() if k != v}
        return ds.rename_columns(rename) if rename else ds

    train = prepare(train)
    if val_name:
        val = prepare(dsd[val_name])
    else:
        tr, va = stratified_split(train["label"], spec.val_fraction, spec.split_seed)
        train, val = train.select(tr), train.select(va)
    keep = cap_indices(len(train), spec.max_train_samples, spec.split_seed, "training", description)
    train = train if keep is None else train.select(keep)
    keep = cap_indices(len(val), spec.max_val_samples, spec.split_seed, "validation", description)
    val = val if keep is None else val.select(keep)
    if len(val) == 0 or len(train) == 0:
        raise DataError(f"{description}: the training or validation split is empty")
    test = prepare(dsd[test_name]) if test_name else None
    sizes = {"train": len(train), "validation": len(val), "test": len(test) if test is not None else 0}
    return TextData(train, val, names, pair is not None, description, test, with_sizes(roles, sizes))


class TextCollator:
    """Tokenize a list of rows into a padded batch dict (``input_ids``, ``attention_mask``, …, ``labels``)."""

    def __init__(self, tokenizer: Any, max_length: int, padding: str = "longest"):
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if "text_pair" in rows[0] else None
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=self.padding,
                             return_tensors="pt")
        enc = dict(enc)
        enc["labels"] = torch.tensor([int(r["label"]) for r in rows])
        return enc
