"""Hook plumbing shared by every measurement: collectors on sites, and one pass over a data loader.

A *collector* attaches forward hooks to modules and accumulates exact statistics from their outputs; several
collectors can share one pass over the data (:func:`run_pass`), so the model runs once per batch whatever is
measured. The collector knows, for every batch, the dataset index of each sample (for deterministic
subsampling) and an optional position mask (padding of token inputs).

Batches may be a tensor, a tuple/list whose first element is the input, or a dict of keyword inputs
(Hugging Face style; its ``attention_mask`` becomes the position mask).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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


class HookSet:
    """Hooks that come and go together: :meth:`attach` registers them (once), :meth:`detach` removes them; also a
    context manager. Subclasses set ``self._handles = []`` and return their handles from :meth:`_register`."""

    _handles: list

    def _register(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach(self):
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
        m = self.position_mask
        if m is not None and out.dim() == 3 and tuple(m.shape) == tuple(out.shape[:2]):
            return m
        return None

    def _register(self) -> list:
        return [self.model.register_forward_pre_hook(self._start_batch, with_kwargs=True),
                *(s.hook(self._hook(s)) for s in self.sites)]


@torch.no_grad()
def run_pass(model: nn.Module, loader: Iterable, collectors: Iterable[SiteCollector], device: Any = None,
             max_samples: int | None = None, progress: bool = False, desc: str = "measuring") -> int:
    """Run ``model`` over ``loader`` once (eval mode, no grad) with all ``collectors`` attached.

    Returns the number of samples seen. With ``max_samples`` the last batch is cut so that exactly that
    many samples are used.
    """
    from tqdm.auto import tqdm

    collectors = list(collectors)
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
            b = batch_size(inputs)
            if max_samples is not None and seen + b > max_samples:
                keep = max_samples - seen
                if keep <= 0:
                    break
                inputs = {k: v[:keep] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:keep]
                mask = mask[:keep] if mask is not None else None
                b = keep
            inputs = to_device(inputs, device)
            for c in collectors:
                c.position_mask = mask.to(device).bool() if mask is not None else None
            call_model(model, inputs)
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
