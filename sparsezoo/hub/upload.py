"""Push a finished run folder to the Hub with its model card, in one commit (:func:`push`); :func:`plan_push` lists
what it would upload without a token or the network."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sparsezoo.hub.cards import CardError, Run, read_baseline, read_run, render_card
from sparsezoo.hub.errors import HubAuthError, HubConflictError, HubError, UnsafeRunFileError, endpoint, hub_errors, split_repo
from sparsezoo.hub.files import CARD, KEEP_REMOTE, UPLOAD_FILES, file_hashes, git_blob_id, matches_remote, top_level

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


def upload_files(run: str | Path) -> dict[str, Path]:
    """Files of a run folder that :func:`push` uploads (top level, names in :data:`UPLOAD_FILES`).

    Raises:
        CardError: the run folder does not exist.
        UnsafeRunFileError: one of these names is a symbolic link (it could point anywhere, ``/etc/passwd``
            included) or not a regular file; push uploads only regular files inside the run folder.
    """
    run = Path(run)
    if not run.is_dir():
        raise CardError(f"run folder {run} not found")
    files = {}
    for p in sorted(run.iterdir()):
        if p.name == CARD or not top_level(p.name, UPLOAD_FILES):
            continue
        if p.is_symlink():
            raise UnsafeRunFileError(f"{p} is a symbolic link (to {os.readlink(p)}); push uploads only regular files "
                                     "inside the run folder: copy the file in instead of linking it")
        if not p.is_file():
            raise UnsafeRunFileError(f"{p} is not a regular file; push uploads only regular files")
        files[p.name] = p
    return files


@dataclass(frozen=True)
class UploadFile:
    """One file of a push: its name in the repo, size in bytes and sha256 (hex) of its content.

    ``path`` is the local file, None for the model card (``README.md``), which is rendered, not read.
    """

    name: str
    size: int
    sha256: str
    path: Path | None


@dataclass
class PushPlan:
    """What :func:`push` would commit, computed without the network (:func:`plan_push`).

    ``files``: the run's files, then the rendered card ``README.md`` last. A push uploads exactly these (minus
    those the Hub already holds with the same content).
    """

    repo_id: str
    revision: str
    run: Run
    files: list[UploadFile]
    card: str


def plan_push(run: str | Path, repo_id: str, *, revision: str = "main", baseline: str | Path | None = None,
              license: str | None = None) -> PushPlan:
    """What ``push(run, repo_id, …)`` would upload, checked as push checks it, with no token and no network.

    The run must be complete (``metrics.json``: ``complete: true``), its weights intact safetensors holding only
    finite numbers, and every file to upload a regular file inside the run folder.

    Example:
        >>> plan = plan_push("runs/r50-l1", "myorg/resnet50-l1e-4")
        >>> [(f.name, f.size, f.sha256[:8]) for f in plan.files]
        [('config.json', 1208, '3c1f…'), …, ('README.md', 6230, '9e0a…')]

    Raises:
        HubError: ``repo_id`` is not ``org/name``, or ``revision`` is a commit.
        UnsafeRunFileError, CardError, BrokenWeightsError, RecipeError: the run folder cannot be published.
    """
    repo_id, _ = split_repo(repo_id)
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        raise HubError(f"{revision!r} is a commit; push to a branch (--revision NAME)")
    paths = upload_files(run)
    info = read_run(run)
    card = str(render_card(info, repo_id, baseline=read_baseline(baseline, info) if baseline else None,
                           license=license))
    files = []
    for name, path in paths.items():
        sha256, _ = file_hashes(path)
        files.append(UploadFile(name, path.stat().st_size, sha256, path))
    data = card.encode("utf-8")
    files.append(UploadFile(CARD, len(data), hashlib.sha256(data).hexdigest(), None))
    return PushPlan(repo_id, revision, info, files, card)


@dataclass
class PushResult:
    """What :func:`push` did. ``unchanged``: the revision already held exactly these files (no commit made)."""

    repo_id: str
    revision: str
    commit: str
    url: str
    files: list[str]
    deleted: list[str] = field(default_factory=list)
    created_repo: bool = False
    created_branch: bool = False
    unchanged: bool = False


def push(run: str | Path, repo_id: str, *, revision: str = "main", private: bool = False, force: bool = False,
         baseline: str | Path | None = None, license: str | None = None, token: str | None = None) -> PushResult:
    """Publish a finished run folder as ``repo_id`` (created if needed) with its model card, in one commit.

    Uploads only the files of :data:`UPLOAD_FILES` found at the top of ``run`` plus the rendered card
    (``README.md``). Pushing the same run again only refreshes the card. A revision that already holds another
    model (other weights, config, recipe or metrics, or files this run does not have) is a conflict: push to a
    new branch with ``revision`` or replace it with ``force`` (files the run lacks are then deleted).
    Nothing is sent before the run passes the checks of :func:`plan_push` (complete run, intact finite weights,
    no symbolic links), which also lists what would be uploaded without a token or the network.

    Args:
        run: run folder of ``sparsezoo finetune`` (timm) or a transformers run (``save_pretrained`` layout).
        repo_id: ``org/name`` on the Hub.
        revision: branch to commit to; created from ``main`` if it does not exist.
        private: create the repo private (an existing repo keeps its visibility).
        force: overwrite a revision that holds other content.
        baseline: a dense run of the same model and data; its numbers go into the card as the baseline.
        license: license of the card (default: the one in the timm config, else ``unknown``).
        token: Hub token (default: ``HF_TOKEN`` or the one saved by ``hf auth login``).

    Raises:
        CardError, RecipeError: the run folder is incomplete or inconsistent.
        BrokenWeightsError, UnsafeRunFileError: the weights are broken, or a file is a symbolic link.
        HubAuthError, HubPermissionError, HubConflictError, HubUnavailableError, HubError.
    """
    from huggingface_hub import HfApi

    plan = plan_push(run, repo_id, revision=revision, baseline=baseline, license=license)
    repo_id = plan.repo_id
    files = {f.name: f.path for f in plan.files if f.path is not None}
    api = HfApi(token=_write_token(token))
    card_bytes = plan.card.encode("utf-8")
    with hub_errors(repo_id, revision):
        target = _prepare_revision(api, repo_id, revision, private)
        stale = sorted(p for p in target.remote if p not in files and p not in KEEP_REMOTE)
        changed = sorted(p for p, local in files.items() if p not in target.remote or not matches_remote(local, target.remote[p]))
        _refuse_conflict(target, stale, [p for p in changed if p in target.remote], force)
        card_same = CARD in target.remote and target.remote[CARD].blob_id == git_blob_id(card_bytes)
        url = f"{endpoint()}/{repo_id}/tree/{revision}"
        if not (stale or changed or not card_same):
            return PushResult(repo_id, revision, target.head, url, sorted(files), created_repo=target.created_repo,
                              created_branch=target.created_branch, unchanged=True)
        ops = _commit_operations(plan, changed, stale, card_bytes)
        message, description = _commit_message(plan.run, files)
        commit = api.create_commit(repo_id, ops, revision=revision, parent_commit=target.head,
                                   commit_message=message, commit_description=description)
    log.debug("pushed %s to %s@%s (commit %s)", plan.run.path, repo_id, revision, commit.oid[:12])
    return PushResult(repo_id, revision, commit.oid, url, sorted(files), stale, target.created_repo,
                      target.created_branch)


def _write_token(token: str | None) -> str:
    """``token``, else the one of ``HF_TOKEN`` / ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubAuthError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (write access)")
    return token


@dataclass
class _PushTarget:
    """The branch a push commits to, as found on the Hub (after creating the repo or the branch if needed)."""

    repo_id: str
    revision: str
    head: str  # the commit the push's commit will have as parent
    remote: dict  # path -> huggingface_hub.hf_api.RepoFile at head
    created_repo: bool
    created_branch: bool


def _prepare_revision(api, repo_id: str, revision: str, private: bool) -> _PushTarget:
    """Create the repo and the branch ``revision`` if needed (never onto a tag), and list the files at its head."""
    from huggingface_hub.hf_api import RepoFile

    created_repo = _create_repo(api, repo_id, private)
    refs = api.list_repo_refs(repo_id)
    if revision in {t.name for t in refs.tags}:
        raise HubError(f"{revision!r} is a tag of {repo_id}; push to a branch (--revision NAME)")
    branches = {b.name: b.target_commit for b in refs.branches}
    created_branch = revision not in branches
    if created_branch:
        api.create_branch(repo_id, branch=revision)
    head = branches.get(revision) or api.repo_info(repo_id, revision=revision).sha
    remote = {f.path: f for f in api.list_repo_tree(repo_id, revision=revision, recursive=True)
              if isinstance(f, RepoFile)}
    return _PushTarget(repo_id, revision, head, remote, created_repo, created_branch)


def _refuse_conflict(target: _PushTarget, stale: list[str], overwritten: list[str], force: bool) -> None:
    """A branch that held another model (files to overwrite or delete) is replaced only with ``force``."""
    if (stale or overwritten) and not (force or target.created_repo or target.created_branch):
        what = ", ".join((overwritten + stale)[:4]) + (", …" if len(overwritten + stale) > 4 else "")
        raise HubConflictError(f"{target.repo_id}@{target.revision} already holds another model ({what} differ); push "
                               "to a new branch with --revision NAME, or replace it with --force")


def _commit_operations(plan: PushPlan, changed: list[str], stale: list[str], card_bytes: bytes) -> list:
    """Uploads of the changed files (each checked to be the content :func:`plan_push` hashed), the card, and the
    deletions of the stale files."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    files = {f.name: f for f in plan.files if f.path is not None}
    ops: list = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(files[p].path)) for p in changed]
    for op in ops:  # hashed by the client as it reads the file for upload: the same content as checked?
        if op.upload_info.sha256.hex() != files[op.path_in_repo].sha256:
            raise HubError(f"{files[op.path_in_repo].path} changed while it was being pushed; nothing was uploaded, "
                           "push again once the run folder is final")
    ops.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card_bytes))
    ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
    return ops


def _commit_message(info: Run, files: dict[str, Path]) -> tuple[str, str]:
    """The commit's message (run folder, recipe hash and tag) and description (headline numbers, files)."""
    recipe = info.recipe
    top1 = info.final.get("top1", info.final.get("accuracy"))
    zero = (info.final.get("sparsity") or {}).get("zero_frac_mean_sites")
    return (f"sparsezoo: {info.path.name}, recipe {recipe.hash()} ({recipe.tag()})",
            f"top-1 {top1}, zero_frac_mean_sites {zero}; files from {info.path.name}: {', '.join(sorted(files))}")


def _create_repo(api, repo_id: str, private: bool) -> bool:
    """Create ``repo_id``; False if it already existed."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, private=private)
        return True
    except HfHubHTTPError as e:
        if e.response is None or e.response.status_code != 409:
            raise
    if private:
        log.warning("%s exists already; --private does not change its visibility", repo_id)
    return False
