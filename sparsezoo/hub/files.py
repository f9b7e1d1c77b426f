"""Which files a checkpoint repo holds (the allowlists push uploads and pull downloads) and how a local file is
compared with the Hub's listing of it (sha256 for LFS files, the git blob id for the others)."""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
UPLOAD_FILES = (
    *WEIGHT_FILES, "config.json", "generation_config.json",
    # tokenizers and processors
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "preprocessor_config.json", "processor_config.json",
    "recipe.yaml", "metrics.json",
    "thresholds.safetensors",  # hard activation thresholds (sparsezoo.models.thresholds), restored by sparsezoo.load
)
DOWNLOAD_FILES = (*UPLOAD_FILES, "README.md")
CARD = "README.md"
KEEP_REMOTE = (CARD, ".gitattributes")  # never a conflict, never deleted


def top_level(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` is a file at the top of a run folder or repo that matches one of the glob ``patterns``
    (fnmatch's ``*`` also matches ``/``, so nested paths are excluded first)."""
    return "/" not in name and "\\" not in name and any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256 of the content, git blob id of the content) in one pass over the file."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file of a content with this sha256 and size (what git stores for an LFS file)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def matches_remote(local: Path, remote) -> bool:
    """Whether a local file has the content the Hub lists for it (a :class:`huggingface_hub.hf_api.RepoFile`).

    LFS files (the weights) are compared by sha256: the listing's ``lfs.sha256`` when it has one, else through
    the git blob id, which for an LFS file is that of its pointer, and the pointer holds the sha256. Other files
    are compared by git blob id.
    """
    if local.stat().st_size != (remote.lfs.size if remote.lfs is not None else remote.size):
        return False
    sha256, blob_id = file_hashes(local)
    if remote.lfs is not None:
        return sha256 == remote.lfs.sha256
    return remote.blob_id in (blob_id, git_blob_id(lfs_pointer(sha256, local.stat().st_size)))
