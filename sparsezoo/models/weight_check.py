"""Check a checkpoint's safetensors weights before they are published or loaded.

A truncated download, a file of random bytes or a run that diverged (NaN/inf weights) must not reach the Hub,
and must not surface as a long ``SafetensorError`` traceback. :func:`check_weights` finds the weight files of a
checkpoint folder (``model.safetensors``, or the shards ``model-00001-of-0000N.safetensors`` that
``model.safetensors.index.json`` names) and checks that each one's header parses and its data covers the file
exactly (what ``safetensors`` itself validates on opening), and, with ``finite=True``, that every floating-point
tensor holds only finite numbers. Each failure is a :class:`BrokenWeightsError` whose one-line message names the
file and the problem.

Example::

    >>> from sparsezoo.models.weight_check import check_weights
    >>> check_weights("runs/r50-l1")          # raises BrokenWeightsError if a file is broken
    [PosixPath('runs/r50-l1/model.safetensors')]
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sparsezoo.errors import SparsezooError

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD = re.compile(r"model-[^/\\]+-of-[^/\\]+\.safetensors")  # the glob model-*-of-*.safetensors, top level only


class BrokenWeightsError(SparsezooError):
    """A weight file is missing, unreadable, not valid safetensors (truncated, corrupt), or holds NaN/inf."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder, checked for presence but not read.

    ``model.safetensors`` if there is one, and every shard ``model-*-of-*.safetensors`` at the top of the folder
    together with those ``model.safetensors.index.json`` names (each must exist).

    Raises:
        BrokenWeightsError: no weights, an unreadable index, or an index naming a missing or foreign file.
    """
    folder = Path(folder)
    files = {p.name: p for p in folder.iterdir() if p.name == WEIGHTS or SHARD.fullmatch(p.name)}
    index = folder / INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = set(weight_map.values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BrokenWeightsError(f"{index}: not a safetensors index ({type(e).__name__}: "
                                     f"{_one_line(e)[:200]})") from e
        for name in sorted(names):
            if not isinstance(name, str) or not SHARD.fullmatch(name):
                raise BrokenWeightsError(f"{index} names the file {name!r}, which is not a shard "
                                         "(model-NNNNN-of-NNNNN.safetensors) of this folder")
            if not (folder / name).is_file():
                raise BrokenWeightsError(f"{index} names {name}, which {folder} does not have")
            files[name] = folder / name
    elif WEIGHTS not in files:
        raise BrokenWeightsError(f"{folder} has no safetensors weights ({WEIGHTS}, or shards with {INDEX})")
    return [files[name] for name in sorted(files)]


def check_file(path: str | Path, *, finite: bool = True) -> list[str]:
    """Check one safetensors file; the names of its tensors.

    The header must parse and the tensors' data must cover the rest of the file exactly (a truncated or padded
    file fails); with ``finite``, every floating-point (or complex) tensor must hold no NaN or inf.

    Raises:
        BrokenWeightsError: one line naming the file and the problem.
    """
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            if finite:
                for name in names:
                    t = f.get_tensor(name)
                    if not (t.is_floating_point() or t.is_complex()):
                        continue
                    try:
                        bad = int((~torch.isfinite(t)).sum())
                    except (RuntimeError, TypeError):  # dtypes without isfinite kernels (float8)
                        bad = int((~torch.isfinite(t.float())).sum())
                    if bad:
                        raise BrokenWeightsError(f"{path}: tensor {name!r} holds {bad} NaN/inf values (of "
                                                 f"{t.numel()}); the weights are broken (did training diverge?)")
    except SafetensorError as e:
        raise BrokenWeightsError(f"{path}: not a valid safetensors file, truncated or corrupt ({_one_line(e)})") from e
    except OSError as e:
        raise BrokenWeightsError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from e
    return names


def check_weights(folder: str | Path, *, finite: bool = True) -> list[Path]:
    """Check every weight file of a checkpoint folder (:func:`weight_files`, :func:`check_file`); the files.

    Raises:
        BrokenWeightsError: the first broken file, or an index naming tensors its shard does not hold.
    """
    folder = Path(folder)
    files = weight_files(folder)
    held = {p.name: set(check_file(p, finite=finite)) for p in files}
    index = folder / INDEX
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        for tensor, shard in sorted(weight_map.items()):
            if tensor not in held[shard]:
                raise BrokenWeightsError(f"{index} puts tensor {tensor!r} in {shard}, which does not hold it")
    return files
