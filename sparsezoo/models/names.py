"""What a model name refers to: a local model folder, a timm architecture (with suggestions when it is none), or
something on the Hub (and whether the Hub answers). Shared by the timm factory (:mod:`sparsezoo.models.factory`)
and the transformers loader (:mod:`sparsezoo.models.hf`)."""

from __future__ import annotations

import difflib
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

from sparsezoo.errors import ModelNotFoundError


def local_config(name: str) -> dict | None:
    """The ``config.json`` of a local model folder (None: not a local model folder).

    Raises:
        ModelNotFoundError: the folder's ``config.json`` is unreadable or not a JSON object.
    """
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        try:
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelNotFoundError(f"model folder {p}: config.json is not valid JSON ({e})") from e
        if not isinstance(cfg, dict):
            raise ModelNotFoundError(f"model folder {p}: config.json must be a JSON object, not {type(cfg).__name__}")
        return cfg
    return None


def looks_like_path(name: str) -> bool:
    """Paths start with '.', '/' or '~' or have several '/'; Hub ids (``org/name``) have one."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def local_model_dir(name: str) -> Path | None:
    """The folder ``name`` points at if it is a local timm model folder, else None."""
    p = Path(name.removeprefix("local-dir:")).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        local_config(str(p))  # a folder with a broken config.json says so, not "unknown model"
        return p
    if name.startswith("local-dir:") or (looks_like_path(name) and not name.startswith("hf-hub:")):
        raise ModelNotFoundError(f"model folder {p} not found or has no config.json")
    return None


def suggest(name: str) -> str:
    import timm

    base = name.split(".")[0]
    names = timm.list_models()
    close = difflib.get_close_matches(base, names, n=4, cutoff=0.6)
    close += [n for n in timm.list_models(f"*{base}*")[:4] if n not in close]
    return f"; did you mean: {', '.join(close[:5])}?" if close else "; see timm.list_models() for names"


def check_architecture(name: str) -> str:
    """Return the timm architecture of ``name`` (tag removed), or raise ModelNotFoundError with suggestions."""
    import timm
    from timm.models import is_model, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not is_model(arch):
        raise ModelNotFoundError(f"unknown model {name!r}{suggest(name)}")
    if tag and not any(n == name for n in timm.list_pretrained(f"{arch}.*")):
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")[:6]) or "none"
        raise ModelNotFoundError(f"timm has no pretrained tag {tag!r} for {arch} (available: {tags})")
    return arch


def hub_reachable(url: str | None = None, timeout: float = 3.0) -> bool:
    """Quick TCP check that the Hub endpoint (or ``url``'s host) answers; False in offline mode."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    u = urlparse(url or constants.ENDPOINT)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False
