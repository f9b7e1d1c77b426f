"""Run folders: what a fine-tune writes, and the per-epoch checkpoints that ``--resume`` continues from.

Layout of ``--out``::

    model.safetensors     final weights (timm state dict)       ┐ loadable by plain timm:
    config.json           timm config with num_classes, labels  ┘ timm.create_model("local-dir:<out>")
    recipe.yaml           the full recipe (written before training starts)
    metrics.json          per-epoch history, final numbers, metric definitions
    train_log.jsonl       one JSON object per logged step and per epoch
    checkpoints/epoch-0003/{model.safetensors, optimizer.safetensors, state.json}

Nothing is pickled: optimizer state is split into tensors (safetensors) and a JSON skeleton.
Every file and checkpoint folder is written atomically.

``--force`` never deletes a finished run before its replacement exists: the new run is built in a sibling
``.NAME.new`` folder and swapped in (:func:`replace_run`) once it holds its first checkpoint; a run killed before
that leaves the old one intact (the next run, holding the folder's lock, clears the leftovers with
:func:`recover_output`). ``--resume`` continues only a checkpoint made under the same recipe, up to the keys
in :data:`RESUMABLE_KEYS`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sparsezoo.errors import OutputExistsError, RecipeError, ResumeError
from sparsezoo.io import atomic_dir, atomic_save_safetensors, atomic_write, atomic_write_json
from sparsezoo.recipe import Recipe, diff

CHECKPOINTS = "checkpoints"
RUN_FILES = ("model.safetensors", "config.json", "recipe.yaml", "metrics.json", "train_log.jsonl")
# recipe keys that do not change the trained weights, so they may differ on --resume
RESUMABLE_KEYS = ("train.log_every", "train.keep_checkpoints", "train.eval_batch_size", "data.num_workers")
_TENSOR = "__tensor__"


def flatten_state(obj: Any, prefix: str = "", tensors: dict | None = None) -> tuple[Any, dict]:
    """Split a nested state (dicts, lists, tensors, scalars) into a JSON skeleton and a tensor dict."""
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().clone()
        return {_TENSOR: prefix}, tensors
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)[0]] for k, v in obj.items()]}, tensors
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors)[0] for i, v in enumerate(obj)], tensors
    return obj, tensors


def unflatten_state(skel: Any, tensors: dict) -> Any:
    if isinstance(skel, dict) and _TENSOR in skel:
        return tensors[skel[_TENSOR]]
    if isinstance(skel, dict) and "__dict__" in skel:
        return {k: unflatten_state(v, tensors) for k, v in skel["__dict__"]}
    if isinstance(skel, list):
        return [unflatten_state(v, tensors) for v in skel]
    return skel


def model_state(model) -> dict:
    """State dict with private copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- output folder


def prepare_output(out: Path, recipe: Recipe, resume: bool, force: bool) -> Path | None:
    """Check ``out`` before anything is written (read-only, safe on every process).

    Returns the checkpoint to resume from (None: start from scratch).

    Raises:
        OutputExistsError: ``out`` holds files and neither ``resume`` nor ``force`` is set.
        ResumeError: nothing to resume, no checkpoint yet, or the recipe differs from the one the checkpoint was
            made under (in other keys than :data:`RESUMABLE_KEYS`).
    """
    if resume and force:
        raise ResumeError("--resume and --force exclude each other")
    if not out.exists():
        if resume:
            raise ResumeError(f"nothing to resume: {out} does not exist")
        return None
    if not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a folder")
    if force:
        return None
    if resume:
        saved = out / "recipe.yaml"
        if not saved.is_file():
            raise ResumeError(f"nothing to resume: {out} has no recipe.yaml")
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise ResumeError(f"nothing to resume: {out} has no checkpoint yet (the run stopped before its first epoch "
                              "ended); start it again with --force")
        check_resumable(ckpt, recipe)
        return ckpt
    if any(out.iterdir()):
        raise OutputExistsError(f"output folder {out} exists; pass --resume to continue it or --force to overwrite it")
    return None


def check_resumable(ckpt: Path, recipe: Recipe) -> None:
    """Refuse to continue ``ckpt`` under a recipe that would have trained other weights."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise ResumeError(f"checkpoint {ckpt} is unreadable ({e}); start again with --force") from e
    if state.get("recipe_hash") == recipe.hash():
        return
    if "recipe" not in state:
        raise ResumeError(f"checkpoint {ckpt} was made under another recipe (hash {state.get('recipe_hash')}, now "
                          f"{recipe.hash()}); use another --out, or --force to start over")
    try:
        made_under = Recipe.from_dict(state["recipe"])
    except RecipeError as e:
        raise ResumeError(f"checkpoint {ckpt} holds an unreadable recipe ({e})") from e
    changes = [c for c in diff(made_under, recipe) if c.split(":")[0] not in RESUMABLE_KEYS]
    if changes:
        shown = "; ".join(changes[:3]) + ("; …" if len(changes) > 3 else "")
        raise ResumeError(f"the recipe changed since {ckpt.name} was written ({shown}); a resume may change only "
                          f"{', '.join(RESUMABLE_KEYS)}; use another --out, or --force to start over")


def truncate_log(path: Path, epochs: int) -> None:
    """Drop the records of epochs after ``epochs`` from ``train_log.jsonl`` (an interrupted epoch being redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        if rec.get("epoch", 0) <= epochs:
            keep.append(line)
    atomic_write(path, lambda p: Path(p).write_text("".join(f"{line}\n" for line in keep)))


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.new"


def recover_output(out: Path) -> None:
    """Undo what a run killed mid-way through a ``--force`` left beside ``out`` (call holding ``out``'s lock)."""
    old = out.parent / f".{out.name}.old"
    if old.is_dir() and not out.exists():  # killed between the two renames of replace_run
        os.replace(old, out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging_folder(out), ignore_errors=True)


def replace_run(staging: Path, out: Path) -> None:
    """Swap the new run in ``staging`` in for the old one in ``out``; files other than a run's own stay."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    if old.is_dir():
        for p in old.iterdir():
            if p.name not in RUN_FILES and p.name != CHECKPOINTS and not (out / p.name).exists():
                os.replace(p, out / p.name)
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir(out: Path, epoch: int) -> Path:
    return out / CHECKPOINTS / f"epoch-{epoch:04d}"


def latest_checkpoint(out: Path) -> Path | None:
    root = out / CHECKPOINTS
    done = sorted(p for p in root.glob("epoch-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(out: Path, epoch: int, model, optimizer, state: dict, keep: int) -> Path:
    """Write ``checkpoints/epoch-NNNN`` atomically and keep only the newest ``keep`` checkpoints.

    ``epoch`` is the number of completed epochs; ``state`` must be JSON-serializable.
    """
    skel, tensors = flatten_state(optimizer.state_dict(), "optim")

    def fill(tmp: Path) -> None:
        atomic_save_safetensors(tmp / "model.safetensors", model_state(model))
        atomic_save_safetensors(tmp / "optimizer.safetensors", tensors)
        atomic_write_json(tmp / "state.json", {**state, "epoch": epoch, "optimizer": skel})

    path = atomic_dir(checkpoint_dir(out, epoch), fill)
    for old in sorted((out / CHECKPOINTS).glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Restore model and optimizer from a checkpoint folder; returns its ``state.json``."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    tensors = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").is_file() else {}
    optimizer.load_state_dict(unflatten_state(state.pop("optimizer"), tensors))
    return state


# ----------------------------------------------------------------------------- final model files


def save_model_files(out: Path, model, label_names: list[str], data_config: dict, metadata: dict[str, str]) -> None:
    """``model.safetensors`` and a timm ``config.json`` (num_classes, label names, input config)."""
    from timm.models._hub import save_config_for_hf

    atomic_save_safetensors(out / "model.safetensors", model_state(model), metadata={"format": "pt", **metadata})
    data_cfg = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
                if k in data_config}
    atomic_write(out / "config.json", lambda p: save_config_for_hf(
        model, p, model_config={"label_names": list(label_names)}, data_config=data_cfg))
