"""Theory margins: how far a layer's measured input codes are from the uniqueness regime.

The theorem (DESIGN §4) applies to a layer when the stripe sparsity of its input code is below the layer's
uniqueness bound ``s* = ½(1 + 1/μ)``. The *stripe sparsity* ``‖Γ‖_{0,∞}`` of the input of a conv layer with a
``kh×kw`` kernel is the largest number of non-zeros inside one ``kh×kw`` window (the receptive field of one
output position), summed over the input channels of a group; for a linear layer it is the number of non-zeros
of the input vector (per token). The margin is ``s* − max stripe``; positive means the theorem applies.
Real networks are far outside; the report says by what factor.

:class:`StripeCollector` measures it in one streaming pass: exact max, mean and an exact histogram of window
counts (so the 95th percentile is exact too), per layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.collect import HookSet


class StripeCollector(HookSet):
    """Forward pre-hooks on conv/linear layers accumulating the stripe sparsity of their inputs."""

    def __init__(self, model: nn.Module, layers: Iterable[tuple[str, nn.Module]] | None = None):
        self.model = model
        if layers is None:
            layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
        self.layers = list(layers)
        self.state: dict[str, dict] = {}
        self._model_input_ptr: int | None = None
        self._handles: list = []

    @staticmethod
    def _window_counts(module: nn.Module, x: Tensor) -> tuple[Tensor, int]:
        """Non-zeros per receptive-field window and group (``[N]`` float counts), and the largest possible count."""
        nz = (x != 0).to(torch.float32)
        if isinstance(module, nn.Linear):
            return nz.reshape(-1, nz.shape[-1]).sum(-1), nz.shape[-1]
        g = module.groups
        cin = nz.shape[1]
        conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
        ones = torch.ones(g, cin // g, *module.kernel_size, device=x.device)
        counts = conv(nz, ones, stride=module.stride, padding=module.padding, dilation=module.dilation, groups=g)
        return counts.round().reshape(-1), (cin // g) * math.prod(module.kernel_size)

    def _pre(self, name: str, module: nn.Module):
        def hook(mod, args):
            if not args or not isinstance(args[0], Tensor):
                return
            x = args[0].detach()
            counts, cap = self._window_counts(mod, x)
            hist = torch.bincount(counts.to(torch.int64), minlength=cap + 1)[: cap + 1]
            st = self.state.get(name)
            new = {"max": counts.max(), "sum": counts.sum(dtype=torch.float64), "n": counts.numel(), "hist": hist,
                   "cap": cap, "from_input": x.data_ptr() == self._model_input_ptr}
            if st is None:
                self.state[name] = new
            else:
                st["max"] = torch.maximum(st["max"], new["max"])
                st["sum"] += new["sum"]
                st["n"] += new["n"]
                st["hist"] += new["hist"]
                st["from_input"] |= new["from_input"]

        return hook

    def _root(self, module, args, kwargs):
        x = args[0] if args else None
        self._model_input_ptr = x.data_ptr() if isinstance(x, Tensor) else None

    def _register(self) -> list:
        return [self.model.register_forward_pre_hook(self._root, with_kwargs=True),
                *(m.register_forward_pre_hook(self._pre(n, m)) for n, m in self.layers)]

    def results(self) -> dict[str, dict]:
        out = {}
        for name, st in self.state.items():
            hist = st["hist"].cpu().double()
            cdf = hist.cumsum(0) / hist.sum()
            p95 = int(torch.searchsorted(cdf, torch.tensor(0.95, dtype=cdf.dtype)))
            out[name] = {"stripe_max": int(st["max"]), "stripe_mean": float(st["sum"]) / st["n"], "stripe_p95": p95,
                         "windows": st["n"], "window_size": st["cap"], "input_is_model_input": bool(st["from_input"])}
        return out


def theory_margins(stripes: dict[str, dict], coherences: dict[str, dict]) -> dict[str, dict]:
    """Join measured stripe sparsity with each layer's uniqueness bound and state the result plainly.

    Uses the shift-aware ``s*`` for conv layers (the global convolutional dictionary) and the local one for
    linear layers. ``factor`` = measured max stripe sparsity / s*.
    """
    out = {}
    for name, st in stripes.items():
        coh = coherences.get(name)
        if coh is None:
            continue
        s_star = coh["s_star_shift"] if coh.get("s_star_shift") is not None else coh["s_star_local"]
        measured = st["stripe_max"]
        margin = s_star - measured
        factor = measured / s_star if s_star > 0 else math.inf
        if margin > 0:
            verdict = f"inside the theorem's regime (margin {margin:.2f} non-zeros)"
        else:
            verdict = f"outside the theorem's regime by a factor of {factor:.1f}"
        if st["input_is_model_input"]:
            verdict += "; its input is the data itself, not a sparse code"
        out[name] = {**st, "s_star": s_star, "margin": margin, "factor": factor, "verdict": verdict}
    return out
