"""Atomic writes: every file appears complete or not at all (temporary file, fsync, rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsezoo.errors import OutputExistsError, SparsezooError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header written in sorted key order (tensor entries and
    ``__metadata__``), compact and space-padded to 8 bytes as the format asks, so that equal tensors and metadata
    always give equal bytes (the writer's header order is not stable from run to run)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(dict(sorted(header.items())), separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (and ``metadata``) as a safetensors file, atomically and byte-reproducibly."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = canonical_safetensors(save(tensors, metadata=metadata))
    return atomic_write(path, lambda p: Path(p).write_bytes(data))


def atomic_dir(final: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create folder ``final`` by filling a temporary sibling folder, then renaming it into place.

    An existing ``final`` is replaced only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        fill(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_output_folder(out: str | os.PathLike, force: bool, hint: str = "pass --force to replace it") -> Path:
    """Check, before any computation, that folder ``out`` can be (re)written: it is not a file, nothing on its path
    is a file, it is empty or ``force`` is set, and its nearest existing ancestor is writable.

    Raises:
        OutputExistsError: ``out`` (or a parent) is a file, or ``out`` holds files and ``force`` is not set.
        SparsezooError: the folder cannot be created there (permissions).
    """
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise OutputExistsError(f"output path {p} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"output folder {out} exists; {hint}")
    base = next(p for p in (out, *out.parents) if p.exists())
    try:  # a real write (an unnamed temporary file): permission bits say nothing for root or immutable folders
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise SparsezooError(f"cannot write to {out}: {base} is not writable ({e.strerror})") from e
    return out
