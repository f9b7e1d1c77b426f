"""Attributions with captum: input attributions of many features at once, and class attributions.

**Feature attributions.** A feature's response to an input is its largest activation over positions at the site
(:func:`feature_response`). Row ``r`` of the inputs is attributed to feature ``features[r]``: the batched path runs
*one* captum method over all rows with the forward function :class:`SiteResponse` (the model stopped at the site,
each row picking its own feature: batched targets through ``additional_forward_args``), in chunks of at most
``internal_batch_size`` rows per forward pass. The reference path (``batched=False``) makes one captum call per
feature with captum's neuron classes (``NeuronIntegratedGradients`` with a callable neuron selector), as one would
without this module. Both give the same numbers (exactly, on a linear model; see the tests).

**Class attributions** of the predicted class: Integrated Gradients on the pixels, Grad-CAM on a spatial layer
upsampled to the input (ViT tokens are reshaped to their patch grid first), and for text Integrated Gradients on the
word embeddings (``LayerIntegratedGradients``).

Methods are looked up by name in :data:`FEATURE_METHODS` and :data:`CLASS_METHODS`; an unknown name raises
:class:`~analysis.errors.AnalysisError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import torch
from torch import Tensor, nn

from analysis.errors import AnalysisError
from analysis.interpret.grid import grid_shape, tokens_to_grid
from analysis.interpret.inputs import ImageInputs, Inputs, logits_of
from analysis.interpret.select import feature_view
from analysis.sites import Site, find_sites

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only type checkers read it


@dataclass(frozen=True)
class FeatureMethod:
    """A captum method for feature attributions, by class name: ``input_cls`` attributes pixels, ``layer_cls``
    token embeddings, ``neuron_cls`` is captum's one-neuron-per-call class (the reference path; ``times_input``:
    multiply its result by the input). ``path``: integrates along a path from a baseline (takes ``baselines``,
    ``n_steps``, ``internal_batch_size`` and returns a completeness delta)."""

    input_cls: str
    layer_cls: str
    neuron_cls: str
    path: bool
    times_input: bool = False


FEATURE_METHODS: dict[str, FeatureMethod] = {
    "integrated_gradients": FeatureMethod("IntegratedGradients", "LayerIntegratedGradients",
                                          "NeuronIntegratedGradients", path=True),
    "input_x_gradient": FeatureMethod("InputXGradient", "LayerGradientXActivation", "NeuronGradient", path=False,
                                      times_input=True),
}


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise AnalysisError(f"unknown {what} {name!r} (known: {', '.join(registry)})")
    return registry[name]


def check_methods(method: str, class_method: str | None) -> None:
    """Raise AnalysisError for an unknown feature or class attribution method."""
    _lookup(FEATURE_METHODS, method, "attribution method")
    if class_method not in (None, "auto"):
        _lookup(CLASS_METHODS, class_method, "class attribution method")


# ---------------------------------------------------------------------------------------------- features


def feature_response(out: Tensor, site: Site, features: Tensor, mask: Tensor | None = None) -> Tensor:
    """Response of row ``n`` of the site output to feature ``features[n]``: its maximum over positions,
    ignoring positions where ``mask`` (``[N, P]``, e.g. the attention mask) is False. Shape ``[N]``."""
    if isinstance(out, (tuple, list)):
        out = out[site.output_index]
    o = feature_view(out, site)
    sel = o[torch.arange(o.shape[0], device=o.device), features.to(o.device)]
    if mask is not None and tuple(mask.shape) == tuple(sel.shape):
        sel = sel.masked_fill(~mask.to(sel.device), -torch.inf)
    return sel.amax(1)


class _Stop(Exception):
    """Raised by the site hook: nothing after the site is needed."""


def run_to_site(model: nn.Module, site: Site, inputs: Inputs, *model_args, stop: bool = True) -> Tensor:
    """The output of ``site`` for ``model_args``; the forward stops right after the site (unless ``stop`` is False)."""
    box = {}

    def grab(out: Tensor):
        box.setdefault("out", out)
        if stop:
            raise _Stop

    handle = site.hook(grab)
    try:
        inputs.call(model, *model_args)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in box:
        raise AnalysisError(f"site {site.name} did not run in the model's forward")
    return box["out"]


class SiteResponse:
    """captum forward function ``f(*model_args, features) -> [N]``: the model run up to ``site`` (the rest of the
    network is skipped unless ``stop`` is False) and each row's response to its own feature."""

    def __init__(self, model: nn.Module, site: Site, inputs: Inputs, stop: bool = True):
        self.model, self.site, self.inputs, self.stop = model, site, inputs, stop

    def __call__(self, *args) -> Tensor:
        *model_args, features = args
        out = run_to_site(self.model, self.site, self.inputs, *model_args, stop=self.stop)
        return feature_response(out, self.site, features, self.inputs.position_mask(tuple(model_args[1:])))


def _captum(name: str):
    import captum.attr

    return getattr(captum.attr, name)


def _chunks(n: int, size: int | None):
    size = size or n
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class AttributionSettings(TypedDict, total=False):
    """The keyword arguments of :func:`feature_attributions`: ``n_steps`` (integration steps of path methods),
    ``internal_batch_size`` (most rows of one forward pass; None: all) and ``batched`` (False: one captum call per
    feature, the reference path)."""

    n_steps: int
    internal_batch_size: int | None
    batched: bool


@dataclass(frozen=True)
class FeatureAttribution:
    """One feature-attribution job: ``model`` up to ``site``, the captum ``method``, the embedding ``layer`` it
    attributes (token inputs; None: the pixels), ``n_steps`` integration steps and at most ``internal_batch_size``
    rows per forward pass (None: all); ``batched`` False: one captum call per feature (the reference path)."""

    model: nn.Module
    site: Site
    method: FeatureMethod
    layer: nn.Module | None
    n_steps: int = 32
    internal_batch_size: int | None = 64
    batched: bool = True

    def path_kwargs(self, baselines: Tensor, internal_batch_size: int | None) -> dict:
        """captum's path arguments (path methods only): ``baselines``, ``n_steps``, ``internal_batch_size``."""
        if not self.method.path:
            return {}
        return dict(baselines=baselines, n_steps=self.n_steps, internal_batch_size=internal_batch_size)


def feature_attributions(model: nn.Module, site: Site, inputs: Inputs, features: Tensor,
                         method: str = "integrated_gradients",
                         **settings: Unpack[AttributionSettings]) -> tuple[Tensor, Tensor | None]:
    """Attribution of row ``r`` of ``inputs`` to its response to feature ``features[r]``.

    Returns ``(attributions, delta)``: attributions shaped like the attributed tensor (pixels ``[R, C, H, W]``, or
    token embeddings ``[R, T, D]``), and for path methods on the batched path the completeness delta
    ``Σ attribution − (f(x) − f(baseline))`` per row (None otherwise). ``settings``: :class:`AttributionSettings`
    (``n_steps`` 32, ``internal_batch_size`` 64: bounds the rows of one forward pass, examples × integration
    steps; ``batched`` True).
    """
    m = _lookup(FEATURE_METHODS, method, "attribution method")
    features = torch.as_tensor(features, dtype=torch.long, device=inputs_device(inputs))
    job = FeatureAttribution(model, site, m, inputs.layer(model), **settings)
    return _batched(job, inputs, features) if job.batched else _per_neuron(job, inputs, features)


def inputs_device(inputs: Inputs) -> torch.device:
    return inputs.x.device if isinstance(inputs, ImageInputs) else inputs.ids.device


def _needs_grad(x: Tensor) -> Tensor:
    """Pixels get ``requires_grad`` (captum would set it and warn); token ids stay as they are."""
    return x.detach().requires_grad_(True) if x.is_floating_point() else x


def _batched(job: FeatureAttribution, inputs: Inputs, features: Tensor) -> tuple[Tensor, Tensor | None]:
    """One captum call per chunk of at most ``internal_batch_size`` rows (features mixed), one integration step per
    forward pass: captum then adds the steps elementwise in order, so a row's result does not depend on the other
    rows of its chunk (with ``internal_batch_size=None``: all rows and steps in one pass, captum's default)."""
    m, ibs = job.method, job.internal_batch_size
    fwd = SiteResponse(job.model, job.site, inputs)
    algo = _captum(m.layer_cls)(fwd, job.layer) if job.layer is not None else _captum(m.input_cls)(fwd)
    attrs, deltas = [], []
    for sl in _chunks(len(inputs), ibs):
        x, base, extra = inputs.rows(torch.arange(sl.start, sl.stop)).captum()
        x = _needs_grad(x)
        kw = job.path_kwargs(base, None if ibs is None else sl.stop - sl.start)
        out = algo.attribute(x, additional_forward_args=(*extra, features[sl]), **kw,
                             **({"return_convergence_delta": True} if m.path else {}))
        attr, delta = out if m.path else (out, None)
        attrs.append(attr.detach())
        if delta is not None:
            deltas.append(delta.detach())
    return torch.cat(attrs), torch.cat(deltas) if deltas else None


def _per_neuron(job: FeatureAttribution, inputs: Inputs, features: Tensor) -> tuple[Tensor | None, None]:
    """One captum call per feature over the rows that attribute it (the reference path; no delta)."""
    m, model, site = job.method, job.model, job.site
    out = None
    for f in dict.fromkeys(features.tolist()):
        rows = torch.nonzero(features == f).view(-1)
        part = inputs.rows(rows)
        x, base, extra = part.captum()
        x = _needs_grad(x)
        kw = job.path_kwargs(base, job.internal_batch_size)
        if job.layer is None:  # captum's neuron class on the site module, a callable selector for feature f
            algo = _captum(m.neuron_cls)(lambda *a, p=part: p.call(model, *a), site.module)
            attr = algo.attribute(x, _selector(site, f), additional_forward_args=extra or None, **kw)
            attr = attr * x if m.times_input else attr
        else:  # tokens: one Layer* call per feature on the embeddings, the whole model run as captum's neuron classes do
            algo = _captum(m.layer_cls)(SiteResponse(model, site, part, stop=False), job.layer)
            attr = algo.attribute(x, additional_forward_args=(*extra, torch.full((len(rows),), f)), **kw)
        if out is None:
            out = torch.empty((len(inputs), *attr.shape[1:]), dtype=attr.dtype, device=attr.device)
        out[rows] = attr.detach()
    return out, None


def _selector(site: Site, feature: int) -> Callable:
    """A captum neuron selector: each row's response to ``feature``."""

    def select(out) -> Tensor:
        n = (out[0] if isinstance(out, (tuple, list)) else out).shape[0]
        return feature_response(out, site, torch.full((n,), feature), None)

    return select


# ---------------------------------------------------------------------------------------------- classes


def predict(model: nn.Module, inputs: Inputs, batch_size: int = 64) -> tuple[Tensor, int]:
    """Predicted class of every row (argmax of the logits) and the number of classes of the model's head."""
    preds, classes = [], 0
    with torch.no_grad():
        for sl in _chunks(len(inputs), batch_size):
            x, _, extra = inputs.rows(torch.arange(sl.start, sl.stop)).captum()
            logits = logits_of(inputs.call(model, x, *extra))
            preds.append(logits.argmax(-1))
            classes = logits.shape[-1]
    return torch.cat(preds), classes


def _logit_fn(model: nn.Module, inputs: Inputs) -> Callable:
    return lambda *a: logits_of(inputs.call(model, *a))


class ClassSettings(TypedDict, total=False):
    """The keyword arguments of :func:`class_attributions`: the Grad-CAM ``layer`` (a module name; None: the last
    spatial site), ``n_steps`` (integration steps) and ``internal_batch_size`` (most rows of one forward pass)."""

    layer: str | None
    n_steps: int
    internal_batch_size: int | None


@dataclass(frozen=True)
class ClassAttribution:
    """One class-attribution job: ``model``, the Grad-CAM ``layer`` (a module name; None: the last spatial site),
    ``n_steps`` integration steps and at most ``internal_batch_size`` rows per forward pass (None: all)."""

    model: nn.Module
    layer: str | None = None
    n_steps: int = 32
    internal_batch_size: int | None = 64


def _class_ig(job: ClassAttribution, inputs: Inputs, targets: Tensor) -> tuple[Tensor, Tensor | None]:
    """Integrated gradients of each row's ``targets`` logit: on the pixels, or on the token embeddings."""
    model, ibs = job.model, job.internal_batch_size
    layer = inputs.layer(model)
    fwd = _logit_fn(model, inputs)
    algo = _captum("LayerIntegratedGradients")(fwd, layer) if layer is not None else _captum("IntegratedGradients")(fwd)
    attrs, deltas = [], []
    for sl in _chunks(len(inputs), ibs):
        x, base, extra = inputs.rows(torch.arange(sl.start, sl.stop)).captum()
        a, d = algo.attribute(x, baselines=base, target=targets[sl], additional_forward_args=extra or None,
                              n_steps=job.n_steps, internal_batch_size=ibs, return_convergence_delta=True)
        attrs.append(a.detach())
        deltas.append(d.detach())
    return inputs.to_map(torch.cat(attrs)), torch.cat(deltas)


def spatial_layer(model: nn.Module, inputs: ImageInputs, name: str | None = None) -> tuple[Site, tuple]:
    """The layer Grad-CAM uses: the named module, else the last site (activation or block output, in the order
    they run) whose output is a spatial map or a patch-token grid. Returns the site and its output shape."""
    sites = find_sites(model, include=f"^{name}$" if name else None, kinds=("activation", "block"))
    shapes: list[tuple[Site, tuple]] = []
    handles = [s.hook(lambda o, s=s: shapes.append((s, tuple(o.shape)))) for s in sites]
    try:
        with torch.no_grad():
            inputs.call(model, inputs.x[:1])
    finally:
        for h in handles:
            h.remove()
    hw = tuple(inputs.x.shape[-2:])

    def spatial(s: Site, shape: tuple) -> bool:
        if len(shape) == 4:
            return min(shape[1:3] if s.channels_last else shape[2:]) > 1
        if len(shape) == 3:
            try:
                return grid_shape(shape[1], hw, getattr(model, "num_prefix_tokens", None))[1] > 1
            except AnalysisError:
                return False
        return False

    found = [(s, shape) for s, shape in shapes if spatial(s, shape)]
    if not found:
        raise AnalysisError("grad_cam needs a layer with a spatial output (a conv map or ViT patch tokens); "
                            "use class method integrated_gradients")
    return found[-1]


def _as_map(a: Tensor, site: Site, hw: tuple[int, int], model: nn.Module) -> Tensor:
    """A layer output as ``[N, C, h, w]``."""
    if a.dim() == 3:
        p, gh, gw = grid_shape(a.shape[1], hw, getattr(model, "num_prefix_tokens", None))
        return tokens_to_grid(a, (gh, gw), p)[0]
    return a.permute(0, 3, 1, 2) if site.channels_last else a


def _grid_cam(model: nn.Module, inputs: ImageInputs, site: Site, x: Tensor, targets: Tensor,
              hw: tuple[int, int]) -> Tensor:
    """Grad-CAM ``relu(Σ_c mean(∂logit/∂A_c) · A_c)`` on a layer whose output is turned into ``[N, C, h, w]``."""
    box = {}

    def keep(o: Tensor) -> Tensor:
        box["a"] = o.clone()
        return box["a"]

    handle = site.hook(keep)
    try:
        x = x.detach().requires_grad_(True)
        logit = logits_of(inputs.call(model, x)).gather(1, targets.view(-1, 1)).sum()
        grad = torch.autograd.grad(logit, box["a"])[0]
    finally:
        handle.remove()
    a, g = _as_map(box["a"].detach(), site, hw, model), _as_map(grad, site, hw, model)
    return (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp_min(0)


def _grad_cam(job: ClassAttribution, inputs: Inputs, targets: Tensor) -> tuple[Tensor, None]:
    """Grad-CAM of each row's ``targets`` logit on a spatial layer, upsampled to the image."""
    if not isinstance(inputs, ImageInputs):
        raise AnalysisError("grad_cam applies to image models; for text use integrated_gradients")
    model, ibs = job.model, job.internal_batch_size
    site, shape = spatial_layer(model, inputs, job.layer)
    hw = tuple(inputs.x.shape[-2:])
    layer_attr = _captum("LayerAttribution")
    maps = []
    for sl in _chunks(len(inputs), ibs):
        x = inputs.x[sl]
        if len(shape) == 4 and not site.channels_last:  # captum's LayerGradCam on an NCHW map
            cam = _captum("LayerGradCam")(_logit_fn(model, inputs), site.module).attribute(
                x, target=targets[sl], relu_attributions=True)
        else:  # the same formula on channels-last maps and ViT tokens reshaped to their grid
            cam = _grid_cam(model, inputs, site, x, targets[sl], hw)
        maps.append(layer_attr.interpolate(cam.detach(), hw, interpolate_mode="bilinear")[:, 0])
    return torch.cat(maps), None


CLASS_METHODS: dict[str, Callable[[ClassAttribution, Inputs, Tensor], tuple[Tensor, Tensor | None]]] = {
    "integrated_gradients": _class_ig,
    "grad_cam": _grad_cam,
}


def class_attributions(model: nn.Module, inputs: Inputs, targets: Tensor, method: str = "auto",
                       **settings: Unpack[ClassSettings]) -> tuple[Tensor, Tensor | None, str]:
    """Attribution of each row's logit of class ``targets[r]``: one number per pixel ``[N, H, W]`` or per token
    ``[N, T]``, the completeness delta for integrated gradients (None for Grad-CAM), and the method used.

    ``auto`` is Grad-CAM for image models and integrated gradients on the embeddings for text. ``settings``:
    :class:`ClassSettings` (``layer``: module name of the Grad-CAM layer, default the last spatial site;
    ``n_steps`` 32; ``internal_batch_size`` 64).
    """
    if method == "auto":
        method = "grad_cam" if isinstance(inputs, ImageInputs) else "integrated_gradients"
    fn = _lookup(CLASS_METHODS, method, "class attribution method")
    maps, delta = fn(ClassAttribution(model, **settings), inputs, targets)
    return maps, delta, method
