"""What a person looks at for one top example: the receptive-field crop of an image, or the tokens around the
position where a text feature fired.

Receptive field: for a conv site, the input region whose pixels have a non-zero input gradient for the centre
position of the site's grid (summed over channels, on random images three times the input size so the border does
not cut it), translated to each position by the site's stride (input size / grid size) and clipped to the image.
For ViT patch tokens it is the token's patch (the prefix tokens see the whole image); for sites without positions,
the whole image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from analysis.errors import AnalysisError
from analysis.interpret.attribute import run_to_site
from analysis.interpret.grid import grid_shape
from analysis.interpret.inputs import ImageInputs
from analysis.sites import Site

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open) in input pixels


def _extent(model: nn.Module, site: Site, inputs: ImageInputs, x: Tensor) -> tuple[float, ...] | None:
    """(up, down, left, right): pixels with a non-zero input gradient for the centre position of the site's grid,
    measured from that position's centre in input pixels; None if the site has no spatial grid here."""
    x = x.detach().clone().requires_grad_(True)
    out = run_to_site(model, site, inputs, x)
    if out.dim() != 4:
        return None
    grid = out.permute(0, 3, 1, 2) if site.channels_last else out
    (h, w), (gh, gw) = x.shape[-2:], grid.shape[2:]
    ch, cw = gh // 2, gw // 2
    g = torch.autograd.grad(grid[:, :, ch, cw].sum(), x)[0].abs().sum((0, 1))
    rows, cols = torch.nonzero(g.sum(1)).view(-1), torch.nonzero(g.sum(0)).view(-1)
    if rows.numel() == 0:
        return None
    cy, cx = (ch + 0.5) * h / gh, (cw + 0.5) * w / gw
    return cy - int(rows[0]), int(rows[-1]) + 1 - cy, cx - int(cols[0]), int(cols[-1]) + 1 - cx


def receptive_boxes(model: nn.Module, site: Site, inputs: ImageInputs, positions: list[int]) -> list[Box]:
    """Receptive-field box (in input pixels, clipped to the image) of each flattened site position in ``positions``.

    The extent is measured on random images three times the input size, so that the image border does not clip it
    (models with a fixed input size fall back to the input size)."""
    h, w = inputs.x.shape[-2:]
    whole = (0, h, 0, w)
    with torch.no_grad():
        out = run_to_site(model, site, inputs, inputs.x[:1])
    if out.dim() == 3:  # tokens: a patch each
        try:
            p, gh, gw = grid_shape(out.shape[1], (h, w), getattr(model, "num_prefix_tokens", None))
        except AnalysisError:
            return [whole for _ in positions]
        ph, pw = h / gh, w / gw
        return [whole if t < p else (round((t - p) // gw * ph), round(((t - p) // gw + 1) * ph),
                                     round((t - p) % gw * pw), round(((t - p) % gw + 1) * pw)) for t in positions]
    if out.dim() != 4:
        return [whole for _ in positions]
    gh, gw = (out.shape[1:3] if site.channels_last else out.shape[2:])
    gen = torch.Generator().manual_seed(0)
    canvas = torch.randn((2, inputs.x.shape[1], 3 * h, 3 * w), generator=gen).to(inputs.x)
    try:
        ext = _extent(model, site, inputs, canvas)
    except (RuntimeError, ValueError, AnalysisError):  # a fixed input size
        ext = None
    ext = ext or _extent(model, site, inputs, inputs.x[:8])
    if ext is None:
        return [whole for _ in positions]
    up, down, left, right = ext
    sy, sx = h / gh, w / gw
    boxes = []
    for pos in positions:
        py, px = ((pos // gw) + 0.5) * sy, ((pos % gw) + 0.5) * sx
        boxes.append((max(0, round(py - up)), min(h, round(py + down)), max(0, round(px - left)), min(w, round(px + right))))
    return boxes


def display_images(x: Tensor) -> np.ndarray:
    """``[N, C, H, W]`` model inputs → ``[N, H, W, 3]`` uint8 for display: each image contrast-stretched to its own
    min..max (the model's normalization is not known here); one channel is shown as grey."""
    a = x.detach().float().cpu()
    a = a[:, :3] if a.shape[1] >= 3 else a[:, :1].expand(-1, 3, -1, -1)
    lo = a.amin((1, 2, 3), keepdim=True)
    hi = a.amax((1, 2, 3), keepdim=True)
    a = (a - lo) / (hi - lo).clamp_min(1e-12)
    return (a.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def tokens_of(ids: Tensor, mask: Tensor, tokenizer: Any = None) -> list[list[str]]:
    """The tokens of each row (padding dropped), as strings (``str(id)`` without a tokenizer)."""
    out = []
    for row, m in zip(ids.tolist(), mask.bool().tolist(), strict=True):
        real = [t for t, keep in zip(row, m, strict=True) if keep]
        out.append(tokenizer.convert_ids_to_tokens(real) if tokenizer is not None else [str(t) for t in real])
    return out


def window(n_tokens: int, center: int, width: int = 12) -> tuple[int, int]:
    """Token range ``[start, stop)`` of at most ``2·width + 1`` tokens around ``center``."""
    return max(0, center - width), min(n_tokens, center + width + 1)
