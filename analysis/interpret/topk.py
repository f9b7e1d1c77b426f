"""Top-activating examples per feature, streamed: a bounded buffer per feature, then the rows fetched back.

A feature's *response* to a sample is its largest activation over positions (spatial positions, or tokens that
are not padding). :class:`TopK` keeps, for every feature at once, the ``k`` largest responses seen so far with
their sample index and position: a ``[C, k]`` buffer merged with each batch by one stable sort, so memory is
``O(C·k)`` whatever the data size (a bounded heap, vectorized over features). Ties go to the lower sample index,
so the result equals a brute-force stable sort over all samples and does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from analysis.collect import batch_labels, split_batch


class TopK:
    """The ``k`` largest responses per feature with sample index and position (``-1``: slot unused)."""

    def __init__(self, channels: int, k: int, device=None):
        self.k = k
        self.values = torch.full((channels, k), -torch.inf, device=device)
        self.samples = torch.full((channels, k), -1, dtype=torch.long, device=device)
        self.positions = torch.full((channels, k), -1, dtype=torch.long, device=device)

    def update(self, responses: Tensor, positions: Tensor, sample_idx: Tensor) -> None:
        """Merge a batch: ``responses`` and ``positions`` are ``[B, C]``, ``sample_idx`` is ``[B]`` (ascending and
        larger than every index seen before)."""
        c = responses.shape[1]
        vals = torch.cat([self.values, responses.T.float()], 1)
        smp = torch.cat([self.samples, sample_idx.view(1, -1).expand(c, -1)], 1)
        pos = torch.cat([self.positions, positions.T], 1)
        order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.samples, self.positions = vals.gather(1, order), smp.gather(1, order), pos.gather(1, order)

    def of(self, feature: int) -> list[tuple[int, float, int]]:
        """``(sample index, response, position)`` of one feature, largest response first."""
        keep = self.samples[feature] >= 0
        return list(zip(self.samples[feature][keep].tolist(), self.values[feature][keep].tolist(),
                        self.positions[feature][keep].tolist(), strict=True))


def _cat(parts: list[Any], pad_values: dict[str, int]) -> Any:
    """Concatenate row batches; dict batches of token tensors are right-padded to the longest row."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if not isinstance(vals[0], Tensor):  # a constant option such as interpolate_pos_encoding
            out[k] = vals[0]
            continue
        if vals[0].dim() == 2 and len({v.shape[1] for v in vals}) > 1:
            t = max(v.shape[1] for v in vals)
            vals = [torch.nn.functional.pad(v, (0, t - v.shape[1]), value=pad_values.get(k, 0)) for v in vals]
        out[k] = torch.cat(vals)
    return out


def fetch_rows(loader: Iterable, indices: Sequence[int], pad_id: int = 0) -> tuple[Any, Tensor | None]:
    """Model inputs and labels of the samples at ``indices`` (positions in the loader's order), in that order.

    A ``DataLoader`` over a map-style dataset with sequential sampling is indexed directly; any other loader is
    iterated once more (it must yield the same samples in the same order as the first pass).
    """
    want = list(indices)
    from torch.utils.data import DataLoader, SequentialSampler

    if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and hasattr(loader.dataset,
                                                                                                     "__getitem__"):
        batch = loader.collate_fn([loader.dataset[i] for i in want])
        inputs, _ = split_batch(batch)
        return inputs, batch_labels(batch)
    rank = {s: i for i, s in enumerate(want)}
    found: dict[int, tuple[Any, Tensor | None]] = {}
    seen = 0
    for batch in loader:
        inputs, _ = split_batch(batch)
        n = (next(v for v in inputs.values() if isinstance(v, Tensor)) if isinstance(inputs, dict) else inputs).shape[0]
        y = batch_labels(batch)
        for j in range(n):
            if seen + j in rank:
                row = ({k: v[j: j + 1] if isinstance(v, Tensor) else v for k, v in inputs.items()}
                       if isinstance(inputs, dict) else inputs[j: j + 1])
                found[seen + j] = (row, None if y is None else y[j: j + 1])
        seen += n
        if len(found) == len(want):
            break
    rows = [found[s] for s in want]
    inputs = _cat([r[0] for r in rows], {"input_ids": pad_id})
    labels = None if rows[0][1] is None else torch.cat([r[1] for r in rows])
    return inputs, labels
