"""The Hugging Face Hub: push, pull and load checkpoints, list the published ones, and the model cards (with their
licenses) they carry.

Every network call sparsezoo makes lives in this room, through ``huggingface_hub``; it follows the usual Hugging Face
environment: ``HF_TOKEN`` (or ``hf auth login``), ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE=1``. Downloads go to the Hugging Face cache, so they work offline once fetched.

- :func:`push` (:mod:`.upload`) uploads a finished run folder (an allowlist of files at its top, :mod:`.files`; never
  a symbolic link) and its model card (:mod:`.cards`) in one commit whose message names the recipe, once the run is
  complete and its weights intact and finite; :func:`plan_push` lists what it would upload without a token or the
  network.
- :func:`pull` (:mod:`.download`) downloads a checkpoint's safe files at the top of the repo (never pickles, never code,
  nothing in sub-folders) and checks every file against the hash the Hub lists for it.
- :func:`load` (:mod:`.loading`) pulls and builds the model: ``sparsezoo.load("org/name")``.
- :func:`list_published` (:mod:`.listing`) finds the checkpoints tagged ``sparsezoo`` with their headline numbers.

Every failure a user can cause raises a :class:`HubError` subclass (:mod:`.errors`) with a one-line message (the CLI
prints it and exits with code 2).

Example::

    >>> import sparsezoo
    >>> zoo = sparsezoo.load("myorg/resnet50-l1e-4")
    >>> zoo.model(x), zoo.recipe.penalties, zoo.metrics["final"]["top1"]
"""

from typing import TYPE_CHECKING

from analysis._lazy import lazy_exports

if TYPE_CHECKING:
    from sparsezoo.hub.download import Snapshot, pull
    from sparsezoo.hub.errors import (
        HubAuthError,
        HubConflictError,
        HubError,
        HubIntegrityError,
        HubPermissionError,
        HubRepoNotFoundError,
        HubRevisionNotFoundError,
        HubUnavailableError,
        UnsafeModelError,
        UnsafeRunFileError,
        split_repo,
    )
    from sparsezoo.hub.listing import PublishedModel, list_published
    from sparsezoo.hub.loading import ZooModel, load
    from sparsezoo.hub.upload import PushPlan, PushResult, plan_push, push, upload_files

_ERRORS = ("HubError", "HubAuthError", "HubPermissionError", "HubRepoNotFoundError", "HubRevisionNotFoundError",
           "HubUnavailableError", "HubConflictError", "HubIntegrityError", "UnsafeRunFileError", "UnsafeModelError",
           "split_repo")
_LAZY = {
    **{name: "sparsezoo.hub.errors" for name in _ERRORS},
    **{name: "sparsezoo.hub.upload" for name in ("push", "plan_push", "upload_files", "PushPlan", "PushResult")},
    "pull": "sparsezoo.hub.download", "Snapshot": "sparsezoo.hub.download",
    "load": "sparsezoo.hub.loading", "ZooModel": "sparsezoo.hub.loading",
    "list_published": "sparsezoo.hub.listing", "PublishedModel": "sparsezoo.hub.listing",
}
__all__ = ["HubAuthError", "HubConflictError", "HubError", "HubIntegrityError", "HubPermissionError",
           "HubRepoNotFoundError", "HubRevisionNotFoundError", "HubUnavailableError", "PublishedModel", "PushPlan",
           "PushResult", "Snapshot", "UnsafeModelError", "UnsafeRunFileError", "ZooModel", "list_published", "load",
           "plan_push", "pull", "push", "split_repo", "upload_files"]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
