"""``sparsezoo.load``: a zoo short name from a local build, the Hugging Face cache or the Hub; other names go
straight to :func:`sparsezoo.hub.loading.load`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sparsezoo.zoo.entries import SHORT_NAME, registry
from sparsezoo.zoo.results import run_complete

if TYPE_CHECKING:
    from sparsezoo.hub.loading import ZooModel


def load(name: str, *, revision: str | None = None, token: str | None = None, root: str | Path = "zoo") -> ZooModel:
    """Load a zoo checkpoint (:class:`sparsezoo.hub.loading.ZooModel`) by its short name ``[ORG/]ENTRY:VARIANT``, or any
    checkpoint by Hub id (``org/name``, ``hf-hub:org/name``, ``org/name@rev``) or run folder.

    A short name is looked up in a local build first (``root/ENTRY/VARIANT``, default ``zoo/``: what
    ``sparsezoo zoo build ENTRY`` writes, used when its run is complete), then in the Hugging Face cache, then on
    the Hub (``ORG/ENTRY-VARIANT``, default org of the registry), and the error names every place it looked.

    Example:
        >>> sparsezoo.load("effnet-lite0-mnist:dense").model      # after `sparsezoo zoo build effnet-lite0-mnist`
        >>> sparsezoo.load("myorg/minilm-l1").processor

    Raises:
        ZooError: an unknown entry or variant.
        HubError subclasses (:func:`sparsezoo.hub.loading.load`): not found in any of the places, or not loadable.
    """
    from sparsezoo import hub

    reg = registry()
    repo = reg.resolve(name)
    if repo is None:
        return hub.load(name, revision=revision, token=token)
    m = SHORT_NAME.match(name)
    assert m is not None
    local = Path(root) / m["entry"] / m["variant"]
    if run_complete(local):
        return hub.load(str(local))
    try:
        return hub.load(repo, revision=revision, token=token)
    except hub.HubError as e:
        raise type(e)(f"{m['entry']}:{m['variant']} is not built locally ({local} has no complete run; "
                      f"`sparsezoo zoo build {m['entry']} --root {root}` builds it), and {repo}: {e}") from e
