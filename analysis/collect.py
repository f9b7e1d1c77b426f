"""Hook plumbing shared by every measurement: collectors on sites, and one pass over a data loader.

A *collector* attaches forward hooks to modules and accumulates exact statistics from their outputs; several
collectors can share one pass over the data (:func:`run_pass`), so the model runs once per batch whatever is
measured. The collector knows, for every batch, the dataset index of each sample (for deterministic
subsampling) and an optional position mask (padding of token inputs).

Batches may be a tensor, a tuple/list whose first element is the input, or a dict of keyword inputs
(Hugging Face style; its ``attention_mask`` becomes the position mask).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Self

import torch
from torch import Tensor, nn

from analysis.sites import Site


def split_batch(batch: Any) -> tuple[Any, Tensor | None]:
    """(model input, position mask or None) from a loader batch."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        return inputs, batch.get("attention_mask")
    if isinstance(batch, (tuple, list)):
        return batch[0], None
    return batch, None


def batch_labels(batch: Any) -> Tensor | None:
    """The class labels of a loader batch, or None: a dict's ``labels``/``label``, a tuple's second element."""
    if isinstance(batch, dict):
        labels = batch.get("labels", batch.get("label"))
    elif isinstance(batch, (tuple, list)) and len(batch) > 1:
        labels = batch[1]
    else:
        return None
    return labels if isinstance(labels, Tensor) and labels.dim() == 1 else None


def output_logits(out: Any) -> Tensor | None:
    """The logits of a model output: a 2-D tensor, or a Hugging Face output's ``logits``."""
    logits = getattr(out, "logits", out)
    if isinstance(out, (tuple, list)) and out:
        logits = out[0]
    return logits if isinstance(logits, Tensor) and logits.dim() == 2 else None


class AccuracyMeter:
    """Top-1 and mean cross-entropy of the model's predictions over one pass (:func:`run_pass` feeds it).

    Measured only where every batch has labels and the model returns ``(batch, classes)`` logits with
    ``num_classes`` columns (when given: an ImageNet head on a 10-class data set is not a classifier of that
    data); otherwise :meth:`result` says why it is not. Exact: integer counts and a float64 sum of the losses,
    kept on the model's device (no host sync per batch; one in :meth:`result`).
    """

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self.correct: Tensor | None = None  # int64, on the logits' device
        self.loss_sum: Tensor | None = None  # float64, on the logits' device
        self.samples = 0
        self.skipped: str | None = None

    def update(self, out: Any, labels: Tensor | None) -> None:
        if self.skipped:
            return
        logits = output_logits(out)
        if labels is None:
            self.skipped = "the data has no labels"
        elif logits is None:
            self.skipped = "the model returns no (batch, classes) logits"
        else:
            self.skipped = self._not_a_classifier(logits, labels)
        if self.skipped or logits is None or labels is None:
            return
        labels = labels.to(logits.device)
        correct = (logits.argmax(1) == labels).sum()
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        self.correct = correct if self.correct is None else self.correct + correct
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.samples += len(labels)

    def _not_a_classifier(self, logits: Tensor, labels: Tensor) -> str | None:
        """Why these logits do not score these labels, or None."""
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            return (f"the model has {logits.shape[1]} outputs, the data {self.num_classes} classes "
                    "(its head is not a classifier of this data)")
        if len(labels) and int(labels.max()) >= logits.shape[1]:  # labels as the loader gives them (host memory)
            return f"labels go beyond the model's {logits.shape[1]} outputs"
        return None

    def result(self) -> dict:
        """``{"top1", "loss", "samples"}`` (fraction, nats per sample), or ``{"skipped": reason}``."""
        if self.skipped or self.correct is None or self.loss_sum is None:
            return {"skipped": self.skipped or "no samples"}
        return {"top1": int(self.correct) / self.samples, "loss": float(self.loss_sum) / self.samples,
                "samples": self.samples}


def batch_size(inputs: Any) -> int:
    if isinstance(inputs, dict):
        first = next(v for v in inputs.values() if isinstance(v, Tensor))
        return first.shape[0]
    return inputs.shape[0]


def to_device(inputs: Any, device: torch.device | str) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return inputs.to(device)


def call_model(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def fitting_mask(mask: Tensor | None, out: Tensor) -> Tensor | None:
    """``mask`` (``[B, T]`` positions of a token batch) if it fits the site output ``out`` (``[B, T, C]``), else
    None: conv feature maps and other shapes have no padding to leave out."""
    if mask is not None and out.dim() == 3 and tuple(mask.shape) == tuple(out.shape[:2]):
        return mask
    return None


def compile_with_hook_guards(fn: Callable, **options: Any) -> Callable:
    """``torch.compile(fn, **options)`` whose compiled code is reused only while the modules' hooks are the ones
    it was traced with.

    By default Dynamo does not guard on ``nn.Module`` hook dictionaries (``skip_nnmodule_hook_guards``): a graph
    traced without the sparsity hooks (another instance of the same architecture, or before :meth:`HookSet.attach`)
    would then be reused with them attached, and the penalty or the statistics would silently be missing. The
    returned callable traces with those guards on, so a change of hooks recompiles instead.
    """
    import torch._dynamo

    compiled = torch.compile(fn, **options)

    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            return compiled(*args, **kwargs)

    return call


class HookSet:
    """Hooks that come and go together: :meth:`attach` registers them (once), :meth:`detach` removes them; also a
    context manager. Subclasses set ``self._handles = []`` and return their handles from :meth:`_register`."""

    _handles: list
    position_mask: Tensor | None = None  # set per batch by run_pass (padding of token inputs)
    # a collector that runs the model itself (one compiled graph with its statistics): run_pass calls its
    # ``forward(inputs)`` instead of the model, and runs it alone (other hooks would be traced into its graph)
    owns_forward: bool = False

    def forward(self, inputs: Any) -> Any:  # pragma: no cover - only collectors with owns_forward
        raise NotImplementedError

    def _register(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach(self) -> Self:
        if not self._handles:
            self._handles = self._register()
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


class SiteCollector(HookSet):
    """Base class: forward hooks on ``sites`` that call :meth:`observe` with each output.

    A module that runs several times per forward (a reused ``ReLU``) is observed once per call, under the keys
    ``name``, ``name@1``, ``name@2``, …  Subclasses implement :meth:`observe` (and a result method).
    """

    def __init__(self, model: nn.Module, sites: Iterable[Site]):
        self.model = model
        self.sites = list(sites)
        self.position_mask: Tensor | None = None  # [B, T] for token models; set per batch by run_pass
        self.sample_idx: Tensor | None = None  # dataset index of each sample of the current batch
        self._seen = 0
        self._calls: dict[str, int] = {}
        self._handles = []

    def observe(self, key: str, site: Site, out: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _start_batch(self, module, args, kwargs):
        self._calls.clear()
        inputs = kwargs if kwargs else (args[0] if args else None)
        b = batch_size(inputs) if inputs is not None else 0
        dev = next((p.device for p in module.parameters()), torch.device("cpu"))
        self.sample_idx = torch.arange(self._seen, self._seen + b, device=dev)
        self._seen += b

    def _hook(self, site: Site):
        def hook(out: Tensor) -> None:
            k = self._calls.get(site.name, 0)
            self._calls[site.name] = k + 1
            self.observe(site.name if k == 0 else f"{site.name}@{k}", site, out.detach())

        return hook

    def mask_for(self, out: Tensor) -> Tensor | None:
        """The position mask if it fits ``out`` (token sites ``[B, T, C]``), else None."""
        return fitting_mask(self.position_mask, out)

    def _register(self) -> list:
        return [self.model.register_forward_pre_hook(self._start_batch, with_kwargs=True),
                *(s.hook(self._hook(s)) for s in self.sites)]


@torch.no_grad()
def run_pass(model: nn.Module, loader: Iterable, collectors: Iterable[HookSet], *, device: Any = None,
             max_samples: int | None = None, progress: bool = False, desc: str = "measuring",
             accuracy: AccuracyMeter | None = None) -> int:
    """Run ``model`` over ``loader`` once (eval mode, no grad) with all ``collectors`` attached; ``accuracy``
    scores the predictions of the same forward passes.

    Returns the number of samples seen. With ``max_samples`` the last batch is cut so that exactly that
    many samples are used.
    """
    from tqdm.auto import tqdm

    collectors = list(collectors)
    owner = next((c for c in collectors if c.owns_forward), None)
    if owner is not None and len(collectors) > 1:
        raise ValueError("a collector that runs the model itself (whole-graph statistics) must run alone")
    forward = owner.forward if owner is not None else (lambda inputs: call_model(model, inputs))
    device = device or next((p.device for p in model.parameters()), "cpu")
    was_training = model.training
    model.eval()
    seen = 0
    bar = tqdm(total=max_samples, desc=desc, unit="img", disable=not progress, leave=False)
    for c in collectors:
        c.attach()
    try:
        for batch in loader:
            inputs, mask = split_batch(batch)
            labels = batch_labels(batch)
            b = batch_size(inputs)
            if max_samples is not None and seen + b > max_samples:
                keep = max_samples - seen
                if keep <= 0:
                    break
                inputs = {k: v[:keep] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:keep]
                mask = mask[:keep] if mask is not None else None
                labels = labels[:keep] if labels is not None else None
                b = keep
            inputs = to_device(inputs, device)
            for c in collectors:
                c.position_mask = mask.to(device).bool() if mask is not None else None
            out = forward(inputs)
            if accuracy is not None:
                accuracy.update(out, labels)
            seen += b
            bar.update(b)
            if max_samples is not None and seen >= max_samples:
                break
    finally:
        for c in collectors:
            c.detach()
        bar.close()
        model.train(was_training)
    return seen
