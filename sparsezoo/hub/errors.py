"""Errors of the Hub layer: one :class:`HubError` subclass per failure a user can cause, each with a one-line
message (the CLI prints it and exits with code 2), and the translation of ``huggingface_hub``'s exceptions into them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sparsezoo.errors import SparsezooError


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


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def translate(e: Exception, repo_id: str, revision: str | None) -> HubError | None:
    """The HubError for an exception of ``huggingface_hub`` (or of its HTTP client), None if it is a bug."""
    from httpx2 import TransportError  # the HTTP client of huggingface_hub 2.x
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(e, hf.HFValidationError):  # an argument the client refused before any request
        return HubError(f"{where}: {one_line(e)}")
    if isinstance(e, hf.RevisionNotFoundError):
        return HubRevisionNotFoundError(f"{repo_id} has no revision {revision!r} (branch, tag or commit)")
    if isinstance(e, hf.GatedRepoError):
        return HubPermissionError(f"{repo_id} is gated: accept its conditions on the Hub with the account of your token")
    if isinstance(e, hf.RepositoryNotFoundError):
        return HubRepoNotFoundError(f"repository {repo_id} not found on {endpoint()} "
                                    "(if it is private, use a token that can read it)")
    if isinstance(e, hf.OfflineModeIsEnabled):
        return HubUnavailableError(f"HF_HUB_OFFLINE=1 is set, and this needs the Hub ({where})")
    if isinstance(e, hf.LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return HubUnavailableError(f"HF_HUB_OFFLINE=1 and {where} is not (completely) in the Hugging Face cache "
                                       f"{constants.HF_HUB_CACHE}; pull it once with network access")
        cause = e.__cause__ or e
        return HubUnavailableError(f"cannot reach the Hub at {endpoint()} ({type(cause).__name__}) and {where} is not "
                                   f"in the Hugging Face cache {constants.HF_HUB_CACHE}")
    if isinstance(e, hf.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        said = one_line(e.server_message or "")
        if status == 401:
            return HubAuthError(f"the Hub rejected the token for {repo_id} (401{': ' + said if said else ''}); "
                                "log in again with `hf auth login` or set HF_TOKEN")
        if status == 403:
            return HubPermissionError(f"the token may not write to {repo_id} (403{': ' + said if said else ''})")
        return HubError(f"the Hub answered {status} for {where}{': ' + said if said else ''}")
    if isinstance(e, TransportError):
        return HubUnavailableError(f"cannot reach the Hub at {endpoint()}: {one_line(e) or type(e).__name__}")
    return None


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into :class:`HubError` subclasses with one-line messages."""
    try:
        yield
    except HubError:
        raise
    except Exception as e:
        err = translate(e, repo_id, revision)
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
        raise HubError(f"{name!r} is not a Hub repo id: {one_line(e)}") from e
    return repo, revision or rev or None
