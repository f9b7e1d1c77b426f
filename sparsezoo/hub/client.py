"""The zoo on the Hugging Face Hub: push run folders, pull and load checkpoints, list the zoo.

Every network call sparsezoo makes lives in this module, through ``huggingface_hub``; it follows the usual
Hugging Face environment: ``HF_TOKEN`` (or ``hf auth login``), ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``
and ``HF_HUB_OFFLINE=1``. Downloads go to the Hugging Face cache, so they work offline once fetched.

- :func:`push` uploads a finished run folder (an allowlist of files at its top, see :data:`UPLOAD_FILES`;
  never a symbolic link) and its model card (:mod:`sparsezoo.hub.cards`) in one commit whose message names the
  recipe, once the run is complete and its weights intact and finite; :func:`plan_push` lists what it would
  upload (size and sha256 of each file) without a token or the network.
- :func:`pull` downloads a checkpoint's safe files at the top of the repo (never pickles, never code, nothing
  in sub-folders) and checks every file against the hash the Hub lists for it (sha256 of LFS files, git blob id
  of the others).
- :func:`load` pulls and builds the model: ``sparsezoo.load("org/name")``.
- :func:`list_zoo` finds the checkpoints tagged ``sparsezoo`` with their headline numbers.

Every failure a user can cause raises a :class:`HubError` subclass with a one-line message (the CLI prints
it and exits with code 2).

Example::

    >>> import sparsezoo
    >>> zoo = sparsezoo.load("myorg/resnet50-l1e-4")
    >>> zoo.model(x), zoo.recipe.penalties, zoo.metrics["final"]["top1"]
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsezoo.errors import OutputExistsError, SparsezooError, WeightsUnavailableError
from sparsezoo.hub.cards import CardError, Library, Run, detect_library, read_baseline, read_json, read_run, render_card
from sparsezoo.io import atomic_dir
from sparsezoo.models.weight_check import check_weights
from sparsezoo.recipe import Recipe, load_recipe

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
UPLOAD_FILES = (
    *WEIGHT_FILES, "config.json", "generation_config.json",
    # tokenizers and processors
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "preprocessor_config.json", "processor_config.json",
    "recipe.yaml", "metrics.json",
)
DOWNLOAD_FILES = (*UPLOAD_FILES, "README.md")
CARD = "README.md"
_KEEP_REMOTE = (CARD, ".gitattributes")  # never a conflict, never deleted


class HubError(SparsezooError):
    """A Hub operation failed for a reason the user can act on."""


class HubAuthError(HubError):
    """No token, or the Hub rejected it."""


class HubPermissionError(HubError):
    """The token may not write to (or read) this repo or namespace."""


class HubRepoNotFoundError(HubError):
    """No such repo on the Hub (or it is private and the token cannot see it)."""


class HubRevisionNotFoundError(HubError):
    """The repo has no such branch, tag or commit."""


class HubUnavailableError(HubError):
    """The Hub cannot be reached (down, no network, ``HF_HUB_OFFLINE=1``) and the files are not cached."""


class HubConflictError(HubError):
    """The repo already holds different content at the revision pushed to."""


class HubIntegrityError(HubError):
    """A downloaded file does not match the hash the Hub lists for it."""


class UnsafeRunFileError(HubError):
    """A file :func:`push` would upload is a symbolic link or not a regular file."""


class UnsafeModelError(HubError):
    """The checkpoint could only be loaded by unpickling or by running code from the repo; sparsezoo does neither."""


# ----------------------------------------------------------------------------- errors of the client


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _translate(e: Exception, repo_id: str, revision: str | None) -> HubError | None:
    """The HubError for an exception of ``huggingface_hub`` (or of its HTTP client), None if it is a bug."""
    from httpx2 import TransportError  # the HTTP client of huggingface_hub 2.x
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(e, hf.HFValidationError):  # an argument the client refused before any request
        return HubError(f"{where}: {_one_line(e)}")
    if isinstance(e, hf.RevisionNotFoundError):
        return HubRevisionNotFoundError(f"{repo_id} has no revision {revision!r} (branch, tag or commit)")
    if isinstance(e, hf.GatedRepoError):
        return HubPermissionError(f"{repo_id} is gated: accept its conditions on the Hub with the account of your token")
    if isinstance(e, hf.RepositoryNotFoundError):
        return HubRepoNotFoundError(f"repository {repo_id} not found on {_endpoint()} "
                                    "(if it is private, use a token that can read it)")
    if isinstance(e, hf.OfflineModeIsEnabled):
        return HubUnavailableError(f"HF_HUB_OFFLINE=1 is set, and this needs the Hub ({where})")
    if isinstance(e, hf.LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return HubUnavailableError(f"HF_HUB_OFFLINE=1 and {where} is not (completely) in the Hugging Face cache "
                                       f"{constants.HF_HUB_CACHE}; pull it once with network access")
        cause = e.__cause__ or e
        return HubUnavailableError(f"cannot reach the Hub at {_endpoint()} ({type(cause).__name__}) and {where} is not "
                                   f"in the Hugging Face cache {constants.HF_HUB_CACHE}")
    if isinstance(e, hf.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        said = _one_line(e.server_message or "")
        if status == 401:
            return HubAuthError(f"the Hub rejected the token for {repo_id} (401{': ' + said if said else ''}); "
                                "log in again with `hf auth login` or set HF_TOKEN")
        if status == 403:
            return HubPermissionError(f"the token may not write to {repo_id} (403{': ' + said if said else ''})")
        return HubError(f"the Hub answered {status} for {where}{': ' + said if said else ''}")
    if isinstance(e, TransportError):
        return HubUnavailableError(f"cannot reach the Hub at {_endpoint()}: {_one_line(e) or type(e).__name__}")
    return None


@contextmanager
def _hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into :class:`HubError` subclasses with one-line messages."""
    try:
        yield
    except HubError:
        raise
    except Exception as e:
        err = _translate(e, repo_id, revision)
        if err is None:
            raise
        raise err from e


def split_repo(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """``(repo_id, revision)`` from ``org/name``, ``hf-hub:org/name`` or ``org/name@rev``.

    Raises:
        HubError: not of the form ``org/name``.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo, _, rev = name.removeprefix("hf-hub:").partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise HubError(f"{name!r} is not a Hub repo id (expected org/name)")
    try:
        validate_repo_id(repo)  # the client's own rules (no "..", "--", leading or trailing "." or "-", length)
    except HFValidationError as e:
        raise HubError(f"{name!r} is not a Hub repo id: {_one_line(e)}") from e
    return repo, revision or rev or None


# ----------------------------------------------------------------------------- hashes


def _hashes(path: Path) -> tuple[str, str]:
    """(sha256 of the content, git blob id of the content) in one pass over the file."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file of a content with this sha256 and size (what git stores for an LFS file)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _matches(local: Path, remote) -> bool:
    """Whether a local file has the content the Hub lists for it (a :class:`huggingface_hub.hf_api.RepoFile`).

    LFS files (the weights) are compared by sha256: the listing's ``lfs.sha256`` when it has one, else through
    the git blob id, which for an LFS file is that of its pointer, and the pointer holds the sha256. Other files
    are compared by git blob id.
    """
    if local.stat().st_size != (remote.lfs.size if remote.lfs is not None else remote.size):
        return False
    sha256, blob_id = _hashes(local)
    if remote.lfs is not None:
        return sha256 == remote.lfs.sha256
    return remote.blob_id in (blob_id, _git_blob_id(_lfs_pointer(sha256, local.stat().st_size)))


# ----------------------------------------------------------------------------- push


def _top_level(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` is a file at the top of a run folder or repo that matches one of the glob ``patterns``
    (fnmatch's ``*`` also matches ``/``, so nested paths are excluded first)."""
    return "/" not in name and "\\" not in name and any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


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
        if p.name == CARD or not _top_level(p.name, UPLOAD_FILES):
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
        sha256, _ = _hashes(path)
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
    with _hub_errors(repo_id, revision):
        target = _prepare_revision(api, repo_id, revision, private)
        stale = sorted(p for p in target.remote if p not in files and p not in _KEEP_REMOTE)
        changed = sorted(p for p, local in files.items() if p not in target.remote or not _matches(local, target.remote[p]))
        _refuse_conflict(target, stale, [p for p in changed if p in target.remote], force)
        card_same = CARD in target.remote and target.remote[CARD].blob_id == _git_blob_id(card_bytes)
        url = f"{_endpoint()}/{repo_id}/tree/{revision}"
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


# ----------------------------------------------------------------------------- pull


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
    with _hub_errors(repo_id, revision):
        # fnmatch's "*" matches "/" too: "*/*" keeps the allowlist's patterns to the top of the repo
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(DOWNLOAD_FILES),
                                        ignore_patterns=["*/*"], token=token))
        listing = _listing(repo_id, folder.name, token)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and _top_level(p.name, DOWNLOAD_FILES))
    for name in files:
        entry = listing.get(name)
        if entry is None or not _matches(folder / name, entry):
            _evict(folder / name)
            raise HubIntegrityError(f"{name} of {repo_id} (commit {folder.name[:12]}) does not match the hash the Hub "
                                    "lists for it; removed it from the cache")
    if not any(_top_level(f, WEIGHT_FILES) for f in files) or "config.json" not in files:
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


# ----------------------------------------------------------------------------- load


@dataclass
class ZooModel:
    """A ready model (eval mode) with what was published with it.

    ``recipe`` and ``metrics`` are None for checkpoints without ``recipe.yaml`` / ``metrics.json``;
    ``processor`` is the tokenizer or image processor of a transformers checkpoint (None for timm).
    """

    model: Any
    library: Library
    path: Path
    recipe: Recipe | None
    metrics: dict | None
    processor: Any = None
    repo_id: str | None = None
    commit: str | None = None


def load(name: str, *, revision: str | None = None, token: str | None = None) -> ZooModel:
    """Load a checkpoint by Hub id (``org/name``, ``hf-hub:org/name``, ``org/name@rev``) or local run folder.
    ``sparsezoo.load`` (:func:`sparsezoo.zoo.entries.load`) also takes the zoo's short names ``ENTRY:VARIANT``.

    Hub checkpoints are pulled and verified first (:func:`pull`); timm and transformers models are built from
    the safetensors weights only, and ``trust_remote_code`` is never enabled.

    Example:
        >>> zoo = sparsezoo.load("myorg/minilm-l1")
        >>> zoo.model(**zoo.processor("a fine film", return_tensors="pt")).logits

    Raises:
        HubError subclasses (see :func:`pull`), UnsafeModelError, WeightsUnavailableError, RecipeError.
        BrokenWeightsError: a weight file is truncated or not safetensors.
    """
    local = Path(name).expanduser()
    if not name.startswith("hf-hub:") and local.is_dir():
        folder, repo_id, commit = local, None, None
        if not any(local.glob("*.safetensors")):
            raise UnsafeModelError(f"{local} has no safetensors weights; sparsezoo never unpickles")
    else:
        snap = pull(name, revision=revision, token=token)
        folder, repo_id, commit = snap.path, snap.repo_id, snap.commit
    config = read_json(folder / "config.json")
    library = detect_library(config) if isinstance(config, dict) else None
    if library is None:
        raise WeightsUnavailableError(f"{folder}/config.json is neither a timm nor a transformers model config")
    check_weights(folder, finite=False)  # a truncated or corrupt file: one line, not the loader's traceback
    model, processor = (_build_timm(folder), None) if library == "timm" else _build_transformers(folder, config)
    recipe = load_recipe(str(folder / "recipe.yaml")) if (folder / "recipe.yaml").is_file() else None
    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    return ZooModel(model.eval(), library, folder, recipe, metrics, processor, repo_id, commit)


def _build_timm(folder: Path):
    import timm

    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise WeightsUnavailableError(f"cannot build the timm model in {folder}: {_one_line(e)[:300]}") from e


def _build_transformers(folder: Path, config: dict):
    import transformers

    arch = (config.get("architectures") or [""])[0]
    cls = getattr(transformers, arch, None) if arch else transformers.AutoModel
    if not (isinstance(cls, type) and hasattr(cls, "from_pretrained")):
        raise UnsafeModelError(f"{folder} needs the model class {arch!r}, which is not part of transformers; "
                               "sparsezoo never runs code from a repo (trust_remote_code)")
    try:
        model = cls.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
            processor = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        elif (folder / "preprocessor_config.json").is_file():
            processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        else:
            processor = None
    except (OSError, ValueError, KeyError) as e:
        raise WeightsUnavailableError(f"cannot build the transformers model in {folder}: {_one_line(e)[:300]}") from e
    return model, processor


# ----------------------------------------------------------------------------- list


@dataclass
class ZooEntry:
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


def list_zoo(author: str | None = None, *, limit: int | None = None, token: str | None = None) -> list[ZooEntry]:
    """Checkpoints on the Hub tagged ``sparsezoo`` (of ``author`` only, if given), most recently updated first.

    Raises:
        HubUnavailableError, HubAuthError, HubError.
    """
    from huggingface_hub import HfApi, constants

    from sparsezoo.models.names import hub_reachable

    if not hub_reachable():  # fail now rather than after the client's retries (~20 s)
        offline = " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise HubUnavailableError(f"cannot reach the Hub at {_endpoint()}{offline}; listing the zoo needs the network")
    entries = []
    with _hub_errors(author or "the zoo"):
        for info in HfApi(token=token).list_models(filter="sparsezoo", author=author, cardData=True, limit=limit,
                                                  sort="last_modified"):
            card = info.card_data
            sparsity = getattr(card, "sparsity", None) or {}
            headline = (sparsity.get("model_wide") or {}).get("zero_frac_mean_sites") or {}
            top1 = next((r.metric_value for r in getattr(card, "eval_results", None) or []
                         if r.metric_type == "accuracy"), None)
            base = getattr(card, "base_model", None)
            entries.append(ZooEntry(
                repo_id=info.id, library=getattr(card, "library_name", None) or info.library_name,
                base_model=base[0] if isinstance(base, list) else base, top1=top1,
                sparsity=headline.get("value"), dense_sparsity=headline.get("dense_baseline"),
                recipe_hash=sparsity.get("recipe_hash"),
                last_modified=info.last_modified.isoformat() if info.last_modified else None, private=info.private))
    return entries
