"""Pull a checkpoint's safe files into the Hugging Face cache (or a folder) and verify every one against the
Hub's listing; works offline from what an earlier pull cached."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sparsezoo.errors import OutputExistsError
from sparsezoo.hub.errors import HubIntegrityError, UnsafeModelError, hub_errors, split_repo
from sparsezoo.hub.files import DOWNLOAD_FILES, WEIGHT_FILES, matches_remote, top_level
from sparsezoo.io import atomic_dir

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


@dataclass
class Snapshot:
    """A checkpoint downloaded and verified by :func:`pull`."""

    repo_id: str
    revision: str | None
    commit: str
    path: Path
    files: list[str]


def pull(repo: str, *, revision: str | None = None, out: str | Path | None = None, force: bool = False,
         token: str | None = None) -> Snapshot:
    """Download a checkpoint's files (:data:`DOWNLOAD_FILES`, at the top of the repo: the files :func:`push`
    writes, never those in sub-folders) into the Hugging Face cache and verify them.

    Works offline (``HF_HUB_OFFLINE=1``, or when the Hub cannot be reached) from what an earlier pull cached.
    Each file is checked against the Hub's listing of the commit: sha256 for LFS files (the weights), the git
    blob id for the others. A file that fails is removed from the cache (a later pull fetches it again).
    Pickled weights (``.bin``, ``.pth``) and code files are never downloaded.

    Args:
        repo: ``org/name``, ``hf-hub:org/name`` or ``org/name@revision``.
        revision: branch, tag or commit (default ``main``).
        out: also copy the files into this folder (created atomically; an existing non-empty one needs ``force``).
        token: Hub token for private repos.

    Raises:
        HubRepoNotFoundError, HubRevisionNotFoundError, HubUnavailableError, HubIntegrityError, UnsafeModelError,
        OutputExistsError.
    """
    from huggingface_hub import snapshot_download

    repo_id, revision = split_repo(repo, revision)
    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
            raise OutputExistsError(f"output folder {out} exists; pass --force to replace it")
    with hub_errors(repo_id, revision):
        # fnmatch's "*" matches "/" too: "*/*" keeps the allowlist's patterns to the top of the repo
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(DOWNLOAD_FILES),
                                        ignore_patterns=["*/*"], token=token))
        listing = _listing(repo_id, folder.name, token)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and top_level(p.name, DOWNLOAD_FILES))
    for name in files:
        entry = listing.get(name)
        if entry is None or not matches_remote(folder / name, entry):
            _evict(folder / name)
            raise HubIntegrityError(f"{name} of {repo_id} (commit {folder.name[:12]}) does not match the hash the Hub "
                                    "lists for it; removed it from the cache")
    if not any(top_level(f, WEIGHT_FILES) for f in files) or "config.json" not in files:
        raise UnsafeModelError(f"{repo_id} has no safetensors weights with a config.json; sparsezoo loads only "
                               "safetensors checkpoints (it never unpickles)")
    snapshot = Snapshot(repo_id, revision, folder.name, folder, files)
    if out is not None:
        def copy(tmp: Path) -> None:
            for f in files:
                shutil.copy2(folder / f, tmp / f)

        atomic_dir(out, copy)
        snapshot.path = out
    log.info("%s@%s (commit %s): %d files verified", repo_id, revision or "main", folder.name[:12], len(files))
    return snapshot


def _listing(repo_id: str, commit: str, token: str | None) -> dict:
    """The Hub's file listing of ``commit`` (``path → RepoFile``): the copy ``snapshot_download`` cached (git blob
    ids only), else fetched (online only; with the sha256 of LFS files)."""
    from huggingface_hub import HfApi, constants, get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        return {f.path: f for f in get_cached_repo_tree(repo_id, revision=commit)}
    except CachedRepoTreeNotFoundError as e:
        if constants.HF_HUB_OFFLINE:
            raise HubIntegrityError(f"the cache holds {repo_id} (commit {commit[:12]}) without the Hub's file listing, "
                                    "so it cannot be verified offline; pull it once with network access") from e
    return {f.path: f for f in HfApi(token=token).list_repo_tree(repo_id, revision=commit, recursive=True)
            if isinstance(f, RepoFile)}


def _evict(path: Path) -> None:
    """Remove a cached file: its snapshot link and the blob it points to."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path and target.parent.name == "blobs":
        target.unlink(missing_ok=True)
