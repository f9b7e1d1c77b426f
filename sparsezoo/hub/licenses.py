"""The license a fine-tuned checkpoint may carry: never more than its weights and its data allow.

A model fine-tuned from pretrained weights on a data set is bound by both licenses. :func:`combine` takes the
most restrictive of the two: a share-alike license (CC BY-SA) passes on unchanged to what is made from it, a
non-commercial clause (NC) passes on, and two licenses that cannot both be met by one Hub license id give
``other`` with the reason, which the card prints. An unknown license on either side gives ``other`` too: a card
must not grant what nobody checked.

Licenses are named as people write them (``"CC BY-NC-SA 4.0"``, ``"Apache-2.0"``) and carried as Hub license ids
(``cc-by-nc-sa-4.0``, ``apache-2.0``; https://huggingface.co/docs/hub/repositories-licenses).

Example::

    >>> combine(parse("Apache-2.0"), parse("CC BY-NC-SA 4.0")).hub_id
    'cc-by-nc-sa-4.0'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# permissive licenses, least to most conditions (a pair of them gives the one with more)
PERMISSIVE = ("mit", "bsd-2-clause", "bsd-3-clause", "apache-2.0", "cc-by-4.0", "cc-by-3.0")
_ALIASES = {"apache 2.0": "apache-2.0", "apache license 2.0": "apache-2.0", "bsd": "bsd-3-clause",
            "new bsd": "bsd-3-clause", "bsd license": "bsd-3-clause"}


@dataclass(frozen=True)
class License:
    """One license: its Hub id (``other`` when it has none or is unknown) and the name people know it by."""

    hub_id: str
    name: str

    @property
    def known(self) -> bool:
        return self.hub_id not in ("other", "unknown")

    @property
    def share_alike(self) -> bool:
        return "-sa-" in self.hub_id + "-"

    @property
    def non_commercial(self) -> bool:
        return "-nc" in self.hub_id


@dataclass(frozen=True)
class Combined:
    """The license of a model made from ``weights`` and ``data``; ``reason`` says why, in one sentence."""

    hub_id: str
    weights: License
    data: License
    reason: str


def parse(name: str | None) -> License:
    """A license from the way it is written: SPDX (``Apache-2.0``), CC (``CC BY-SA 3.0``), or a Hub id.
    Anything else (None, ``unknown (public research corpus)``) is unknown: ``hub_id == "unknown"``."""
    if not name:
        return License("unknown", "unknown")
    text = name.strip().lower()
    cc = re.fullmatch(r"cc[ -]by((?:[ -](?:nc|sa|nd))*)[ -](\d\.\d)", text)
    if cc:
        terms = re.findall(r"nc|sa|nd", cc[1])
        return License("-".join(["cc-by", *terms, cc[2]]), name.strip())
    hub = _ALIASES.get(text, text)
    if hub in PERMISSIVE or re.fullmatch(r"cc-by(-nc)?(-sa|-nd)?-\d\.\d", hub):
        return License(hub, name.strip())
    return License("unknown", name.strip())


def combine(weights: License, data: License) -> Combined:
    """The most restrictive license that both inputs allow, or ``other`` with the reason (see module docstring)."""
    def said(lic: License) -> str:
        if lic.known:
            return f"{lic.name} ({lic.hub_id})"
        return f"an unknown license ({lic.name.removeprefix('unknown').strip(' ()') or 'none stated'})"

    both = f"the weights are under {said(weights)} and the fine-tuning data under {said(data)}"
    if not weights.known or not data.known:
        which = " and ".join(w for w, lic in (("the weights", weights), ("the data", data)) if not lic.known)
        return Combined("other", weights, data, f"{both}: the license of {which} is not known, so no license is "
                                                "granted beyond what its owners allow")
    if weights.hub_id == data.hub_id:
        return Combined(weights.hub_id, weights, data, f"{both}: the same license")
    sa = [lic for lic in (weights, data) if lic.share_alike]
    if len(sa) == 2 or any(lic.hub_id.startswith("cc-by-nd") or "-nd-" in lic.hub_id for lic in (weights, data)):
        return Combined("other", weights, data, f"{both}: no single license meets both (share-alike or "
                                                "no-derivatives terms on both sides)")
    if sa:
        other = data if sa[0] is weights else weights
        if other.non_commercial and not sa[0].non_commercial:
            return Combined("other", weights, data, f"{both}: a share-alike license without a non-commercial "
                                                    "clause cannot carry the other's non-commercial clause")
        return Combined(sa[0].hub_id, weights, data, f"{both}: the share-alike license passes on to the model")
    nc = [lic for lic in (weights, data) if lic.non_commercial]
    if nc:
        return Combined(nc[0].hub_id, weights, data, f"{both}: the non-commercial clause passes on to the model")
    stricter = max(weights, data, key=lambda lic: PERMISSIVE.index(lic.hub_id))
    return Combined(stricter.hub_id, weights, data, f"{both}: permissive licenses; the model carries the one with "
                                                    "more conditions")
