"""Vision-transformer tokens as an image grid and back.

A ViT block outputs ``[B, T, C]``: ``p`` prefix tokens (class token, registers) followed by ``gh·gw`` patch tokens
in row-major order. :func:`tokens_to_grid` gives the patch tokens as a ``[B, C, gh, gw]`` map (what Grad-CAM and
heat maps need) plus the prefix; :func:`grid_to_tokens` is its exact inverse.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from analysis.errors import AnalysisError


def grid_shape(tokens: int, image_hw: tuple[int, int], num_prefix: int | None = None) -> tuple[int, int, int]:
    """``(num_prefix, gh, gw)`` for ``tokens`` tokens of an ``image_hw`` image: the smallest prefix (or the given
    one) that leaves a patch grid with the image's aspect ratio."""
    h, w = image_hw
    for p in ([num_prefix] if num_prefix is not None else range(0, 9)):
        n = tokens - p
        if n <= 0:
            continue
        gh = round(math.sqrt(n * h / w))
        if gh > 0 and n % gh == 0 and abs(gh / (n // gh) - h / w) < 1e-6 * max(1.0, h / w):
            return p, gh, n // gh
    raise AnalysisError(f"{tokens} tokens do not form a patch grid for a {h}×{w} image")


def tokens_to_grid(x: Tensor, grid: tuple[int, int], num_prefix: int = 0) -> tuple[Tensor, Tensor]:
    """``[B, T, C]`` tokens → (``[B, C, gh, gw]`` patch grid, ``[B, num_prefix, C]`` prefix tokens)."""
    b, t, c = x.shape
    gh, gw = grid
    if t != num_prefix + gh * gw:
        raise AnalysisError(f"{t} tokens != {num_prefix} prefix + {gh}×{gw} patches")
    return x[:, num_prefix:].transpose(1, 2).reshape(b, c, gh, gw), x[:, :num_prefix]


def grid_to_tokens(grid: Tensor, prefix: Tensor) -> Tensor:
    """Inverse of :func:`tokens_to_grid`: ``[B, C, gh, gw]`` and ``[B, p, C]`` → ``[B, p + gh·gw, C]``."""
    b, c = grid.shape[:2]
    return torch.cat([prefix, grid.reshape(b, c, -1).transpose(1, 2)], 1)
