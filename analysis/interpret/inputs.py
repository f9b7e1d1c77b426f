"""What differs between image and token inputs when attributing, in one place.

An :class:`Inputs` holds a batch of model inputs and knows how to hand them to captum: which tensor is
attributed (pixels, or the token ids whose embeddings a ``Layer*`` method attributes), its baseline, the extra
forward arguments (attention mask, token types), how to call the model, and how to turn an attribution tensor
into one number per pixel or per token. :func:`make_inputs` picks the kind from the batch (a registry keyed by
batch layout, not a chain of checks in every function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from analysis.errors import AnalysisError


def logits_of(out: Any) -> Tensor:
    """The logits of a model output: a tensor, an object with ``.logits`` (transformers), or a tuple's first item."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise AnalysisError(f"cannot find logits in a model output of type {type(out).__name__}")


class ImageInputs:
    """Pixel tensors ``[N, C, H, W]`` (or any float tensor input); attributed directly.

    ``keyword``: the model is called as ``model(**{keyword: x}, **options)`` (``pixel_values`` for transformers
    vision models, with constant ``options`` such as ``interpolate_pos_encoding``), else as ``model(x)``.
    """

    kind = "image"

    def __init__(self, x: Tensor, keyword: str | None = None, baseline: float = 0.0, options: dict | None = None):
        self.x, self.keyword, self.baseline, self.options = x, keyword, baseline, dict(options or {})

    def __len__(self) -> int:
        return self.x.shape[0]

    def rows(self, idx: Tensor) -> ImageInputs:
        return ImageInputs(self.x[idx], self.keyword, self.baseline, self.options)

    def to(self, device) -> ImageInputs:
        return ImageInputs(self.x.to(device), self.keyword, self.baseline, self.options)

    def captum(self) -> tuple[Tensor, Tensor, tuple]:
        """(attributed tensor, its baseline, extra forward args)."""
        return self.x, torch.full_like(self.x, self.baseline), ()

    def call(self, model: nn.Module, x: Tensor, *extra) -> Any:
        return model(**{self.keyword: x}, **self.options) if self.keyword else model(x)

    def layer(self, model: nn.Module) -> nn.Module | None:
        """The layer a ``Layer*`` captum method attributes (None: attribute the input itself)."""
        return None

    def position_mask(self, extra: tuple) -> Tensor | None:
        return None

    def to_map(self, attr: Tensor) -> Tensor:
        """One signed number per pixel: the attribution summed over colour channels, ``[N, H, W]``."""
        return attr.sum(1) if attr.dim() == 4 else attr.reshape(attr.shape[0], -1)


class TokenInputs:
    """Token ids with attention mask (and token types); a ``Layer*`` method attributes the word embeddings.

    The baseline replaces every token by ``baseline_id`` (the pad token) except special tokens (``[CLS]``,
    ``[SEP]``), which stay, so the baseline is a well-formed empty sequence.
    """

    kind = "text"

    def __init__(self, batch: dict[str, Tensor], baseline_id: int = 0, special_ids: Sequence[int] = ()):
        if "input_ids" not in batch:
            raise AnalysisError("token inputs need an 'input_ids' entry")
        self.batch = batch
        self.baseline_id, self.special_ids = baseline_id, tuple(special_ids)

    @property
    def ids(self) -> Tensor:
        return self.batch["input_ids"]

    @property
    def mask(self) -> Tensor:
        m = self.batch.get("attention_mask")
        return m if m is not None else torch.ones_like(self.ids)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def rows(self, idx: Tensor) -> TokenInputs:
        return TokenInputs({k: v[idx] for k, v in self.batch.items()}, self.baseline_id, self.special_ids)

    def to(self, device) -> TokenInputs:
        return TokenInputs({k: v.to(device) for k, v in self.batch.items()}, self.baseline_id, self.special_ids)

    def captum(self) -> tuple[Tensor, Tensor, tuple]:
        ids = self.ids
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for s in self.special_ids:
            keep |= ids == s
        base = torch.where(keep, ids, torch.full_like(ids, self.baseline_id))
        return ids, base, (self.mask, self.batch.get("token_type_ids"))

    def call(self, model: nn.Module, ids: Tensor, mask: Tensor, token_types: Tensor | None = None, *extra) -> Any:
        kw = {"input_ids": ids, "attention_mask": mask}
        if token_types is not None:
            kw["token_type_ids"] = token_types
        return model(**kw)

    def layer(self, model: nn.Module) -> nn.Module:
        if not hasattr(model, "get_input_embeddings"):
            raise AnalysisError(f"{type(model).__name__} has no get_input_embeddings(); cannot attribute tokens")
        return model.get_input_embeddings()

    def position_mask(self, extra: tuple) -> Tensor | None:
        return extra[0].bool()

    def to_map(self, attr: Tensor) -> Tensor:
        """One signed number per token: the attribution summed over embedding dimensions, ``[N, T]``;
        padding is 0."""
        return attr.sum(-1) * self.mask.to(attr.dtype)


Inputs = ImageInputs | TokenInputs


def make_inputs(model_inputs: Any, tokenizer: Any = None, baseline: float = 0.0) -> Inputs:
    """The :class:`Inputs` for a batch as :func:`analysis.collect.split_batch` returns it."""
    if isinstance(model_inputs, Tensor):
        if not model_inputs.is_floating_point():
            raise AnalysisError("integer tensor inputs need to come as a dict with input_ids and attention_mask")
        return ImageInputs(model_inputs, baseline=baseline)
    if isinstance(model_inputs, dict):
        if "input_ids" in model_inputs:
            pad = getattr(tokenizer, "pad_token_id", None)
            special = getattr(tokenizer, "all_special_ids", ()) or ()
            return TokenInputs(dict(model_inputs), 0 if pad is None else int(pad), [s for s in special if s != pad])
        if "pixel_values" in model_inputs:
            options = {k: v for k, v in model_inputs.items() if not isinstance(v, Tensor)}
            return ImageInputs(model_inputs["pixel_values"], "pixel_values", baseline, options)
    raise AnalysisError(f"cannot attribute inputs of type {type(model_inputs).__name__} (expected an image tensor, "
                        "or a dict with input_ids or pixel_values)")
