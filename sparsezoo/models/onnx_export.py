"""ONNX export of a classifier and its check in ONNX Runtime, the CPU inference engine users deploy with.

:func:`export_onnx` writes one self-contained ``.onnx`` file (weights inside; the batch axis, and for token inputs
the sequence axis, dynamic) with the input names of the model's batches (``input`` for images; ``input_ids``,
``attention_mask``, … for text) and one output, ``logits``. It uses ``torch.onnx.export``'s default exporter
(``torch.export`` based; needs ``onnxscript``). :func:`check_onnx` runs the file in ONNX Runtime (CPU provider) on
batches and compares its logits with the PyTorch model's: ONNX Runtime fuses and reorders float operations, so the
two agree to float rounding, not bit for bit (:data:`ONNX_REL_TOLERANCE`).

Needs the ``onnx`` extra (``pip install 'sparsezoo-dsc[onnx]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparsezoo.errors import SparsezooError
from sparsezoo.models.compaction import logits_of, split_batch

log = logging.getLogger(__name__)

ONNX_REL_TOLERANCE = 1e-4  # max |Δlogit| / max |logit| between ONNX Runtime and PyTorch
OPSET = 18


class OnnxUnavailableError(SparsezooError):
    """The ONNX packages (onnx, onnxruntime, onnxscript) are not installed, or the export failed."""


class _Logits(nn.Module):
    """``model`` called with named tensor inputs in a fixed order, returning its logits tensor."""

    def __init__(self, model: nn.Module, names: list[str], keyword: bool):
        super().__init__()
        self.model, self.names, self.keyword = model, names, keyword

    def forward(self, *inputs: Tensor) -> Tensor:
        out = self.model(**dict(zip(self.names, inputs, strict=True))) if self.keyword else self.model(*inputs)
        return out if isinstance(out, Tensor) else out.logits


def _named_inputs(batch: Any) -> tuple[list[str], list[Tensor], bool]:
    """(input names, tensors, whether they are keyword inputs) of a batch (see :func:`split_batch`)."""
    args, kwargs = split_batch(batch)
    if kwargs:
        names = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
        return names, [kwargs[k] for k in names], True
    return ["input"], [args[0]], False


def _require():
    """The ``onnxruntime`` module, once onnx, onnxruntime and onnxscript (the ``onnx`` extra) are all importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise OnnxUnavailableError(f"ONNX export needs onnx, onnxruntime and onnxscript ({e.name} is missing); "
                                   "pip install 'sparsezoo-dsc[onnx]'") from e
    return onnxruntime


def export_onnx(model: nn.Module, example: Any, path: str | Path) -> Path:
    """Export ``model`` (eval mode, on the CPU) to the single file ``path``, traced on the batch ``example``: the
    batch axis dynamic, and the sequence axis too for token inputs. Returns ``path``.

    Raises:
        OnnxUnavailableError: the ONNX packages are missing, or the exporter cannot export this model.
    """
    _require()
    names, tensors, keyword = _named_inputs(example)
    wrapper = _Logits(model.eval().cpu(), names, keyword).eval()
    dims = {0: torch.export.Dim.DYNAMIC, **({1: torch.export.Dim.DYNAMIC} if keyword else {})}
    path = Path(path)
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, tuple(t.cpu() for t in tensors), str(path), input_names=names,
                              output_names=["logits"], opset_version=OPSET, dynamo=True, external_data=False,
                              dynamic_shapes=(tuple(dims for _ in names),), verbose=False)  # *inputs: one tuple
    except Exception as e:  # the exporter raises many types; one line, the cause kept for -v
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
        raise OnnxUnavailableError(f"ONNX export failed: {(text or [type(e).__name__])[0][:300]}") from e
    log.debug("exported %s (inputs %s)", path, names)
    return path


@dataclass
class OnnxCheck:
    """ONNX Runtime against PyTorch on ``samples`` samples: the largest logit difference, absolute and relative
    to the largest |logit|, within :data:`ONNX_REL_TOLERANCE` or not."""

    samples: int
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float
    provider: str = "CPUExecutionProvider"
    tolerance: float = ONNX_REL_TOLERANCE

    @property
    def rel_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_logit, 1e-30)

    @property
    def ok(self) -> bool:
        return self.rel_diff <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rel_diff": self.rel_diff, "ok": self.ok}


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads; None: ONNX Runtime's default)."""
    ort = _require()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feed(session, batch: Any) -> dict[str, Any]:
    names, tensors, _ = _named_inputs(batch)
    by_name: Mapping[str, Tensor] = dict(zip(names, tensors, strict=True))
    return {i.name: by_name[i.name].cpu().numpy() for i in session.get_inputs()}


def check_onnx(path: str | Path, model: nn.Module, batches: Iterable[Any]) -> OnnxCheck:
    """Run the exported file in ONNX Runtime and ``model`` in PyTorch (eval, CPU) on ``batches``; compare logits."""
    session = onnx_session(path)
    model = model.eval().cpu()
    samples, diff, scale, agree = 0, 0.0, 0.0, 0
    with torch.no_grad():
        for batch in batches:
            want = logits_of(model, batch).float()
            got = torch.from_numpy(session.run(["logits"], _feed(session, batch))[0]).float()
            diff = max(diff, float((want - got).abs().max()))
            scale = max(scale, float(want.abs().max()))
            agree += int((want.argmax(-1) == got.argmax(-1)).sum())
            samples += int(want.shape[0])
    return OnnxCheck(samples, diff, scale, agree / max(samples, 1))
