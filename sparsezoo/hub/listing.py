"""The checkpoints published on the Hub with the ``sparsezoo`` tag, with the headline numbers of their cards
(``sparsezoo list``). The zoo's own registry of entries is :mod:`sparsezoo.zoo` (``sparsezoo zoo list``)."""

from __future__ import annotations

from dataclasses import dataclass

from sparsezoo.hub.errors import HubUnavailableError, endpoint, hub_errors


@dataclass
class PublishedModel:
    """One checkpoint of the zoo, with the headline numbers of its card.

    ``sparsity`` is the card's model-wide ``zero_frac_mean_sites`` (fraction of exact zeros after the
    activations, mean over feature sites); ``dense_sparsity`` the same for the dense baseline, when known.
    """

    repo_id: str
    library: str | None
    base_model: str | None
    top1: float | None
    sparsity: float | None
    dense_sparsity: float | None
    recipe_hash: str | None
    last_modified: str | None
    private: bool | None


def list_published(author: str | None = None, *, limit: int | None = None, token: str | None = None) -> list[PublishedModel]:
    """Checkpoints on the Hub tagged ``sparsezoo`` (of ``author`` only, if given), most recently updated first.

    Raises:
        HubUnavailableError, HubAuthError, HubError.
    """
    from huggingface_hub import HfApi, constants

    from sparsezoo.models.names import hub_reachable

    if not hub_reachable():  # fail now rather than after the client's retries (~20 s)
        offline = " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise HubUnavailableError(f"cannot reach the Hub at {endpoint()}{offline}; listing the zoo needs the network")
    entries = []
    with hub_errors(author or "the zoo"):
        for info in HfApi(token=token).list_models(filter="sparsezoo", author=author, cardData=True, limit=limit,
                                                  sort="last_modified"):
            card = info.card_data
            sparsity = getattr(card, "sparsity", None) or {}
            headline = (sparsity.get("model_wide") or {}).get("zero_frac_mean_sites") or {}
            top1 = next((r.metric_value for r in getattr(card, "eval_results", None) or []
                         if r.metric_type == "accuracy"), None)
            base = getattr(card, "base_model", None)
            entries.append(PublishedModel(
                repo_id=info.id, library=getattr(card, "library_name", None) or info.library_name,
                base_model=base[0] if isinstance(base, list) else base, top1=top1,
                sparsity=headline.get("value"), dense_sparsity=headline.get("dense_baseline"),
                recipe_hash=sparsity.get("recipe_hash"),
                last_modified=info.last_modified.isoformat() if info.last_modified else None, private=info.private))
    return entries
