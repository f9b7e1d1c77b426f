"""A small Hugging Face Hub-protocol server, so that tests run the real ``huggingface_hub`` client over HTTP.

It binds to 127.0.0.1 on a free port, keeps everything in memory, and speaks the part of the Hub protocol that
``create_repo``, ``create_commit`` (LFS "basic" transfers, no Xet), ``snapshot_download``, ``hf_hub_download``,
``list_models``, ``model_info``, ``list_repo_tree``, ``get_paths_info``, ``list_repo_refs``, ``create_branch``
and ``create_tag`` use, which is what timm and transformers need to load a model by Hub id:

=========================================================  ==================================================
``GET  /api/whoami-v2``                                    the token's user and organizations
``POST /api/repos/create``                                 409 with ``url`` when the repo exists
``POST /api/validate-yaml``                                400 with ``errors`` for unparsable front matter
``GET  /api/models``                                       ``filter`` (tags, all must match), ``author``,
                                                           ``search``, ``sort=lastModified``, ``cardData``/``full``,
                                                           ``limit``
``GET  /api/models/{repo}[/revision/{rev}]``               repo info with siblings, tags, cardData
``GET  /api/models/{repo}/refs``                           branches and tags
``POST /api/models/{repo}/branch/{name}``                  409 when it exists
``POST /api/models/{repo}/tag/{rev}``                      409 when it exists
``POST /api/models/{repo}/preupload/{rev}``                upload mode (lfs/regular) and remote oid per file
``POST /{repo}.git/info/lfs/objects/batch``                LFS upload actions (PUT to ``/__lfs__/{oid}``)
``PUT  /__lfs__/{oid}``                                    the object; its sha256 must equal ``oid``
``POST /api/models/{repo}/commit/{rev}``                   ndjson: header, file, lfsFile, deletedFile/Folder
``GET  /api/models/{repo}/tree/{rev}[/{path}]``            404 + ``X-Error-Code: EntryNotFound`` if missing
``POST /api/models/{repo}/paths-info/{rev}``               form data ``paths`` (repeated), ``expand``
``HEAD|GET /{repo}/resolve/{rev}/{path}``                  ``X-Repo-Commit``, ``ETag``, and for LFS files
                                                           ``X-Linked-Etag`` / ``X-Linked-Size``; ``Range``
=========================================================  ==================================================

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and ``X-Error-Message``
the way the Hub sends them, so the client raises its own typed errors. Private repos are visible only to tokens
whose user owns the namespace (or is in that organization). Model repos only; no pull requests, no Xet, no
pagination (every list fits in one page).

The client reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported, so point a fresh process
at the server with :meth:`HubServer.env`::

    with HubServer(tokens={"hf_alice": ("alice", ["myorg"])}) as hub:
        env = {**os.environ, **hub.env(tmp_path / "hf_home", token="hf_alice")}
        subprocess.run([sys.executable, "-m", "sparsezoo", "pull", "myorg/model"], env=env, check=True)

:meth:`HubServer.tamper` changes the stored bytes of a file without changing what the Hub says its sha256 is,
to test that downloads are verified.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.model", "*.msgpack",
                "*.npz", "*.npy", "*.zip", "*.tar", "*.gz", "*.tflite")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files always go to LFS, as on the Hub
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob: sha1 of ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class Blob:
    """A file at a commit. LFS files keep only their sha256; the bytes live in the server's LFS store."""

    size: int
    oid: str  # git object id: of the content (regular) or of the LFS pointer file (LFS)
    sha256: str | None = None
    data: bytes | None = None

    @classmethod
    def regular(cls, data: bytes) -> Blob:
        return cls(size=len(data), oid=git_blob_oid(data), data=data)

    @classmethod
    def lfs(cls, sha256: str, size: int) -> Blob:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        return cls(size=size, oid=git_blob_oid(pointer), sha256=sha256)

    def pointer_size(self) -> int:
        return len(f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None

    def card(self) -> dict:
        """Front matter of README.md on the main branch ({} when absent or unparsable)."""
        head = self.resolve("main")
        blob = head.files.get("README.md") if head else None
        return front_matter(blob.data.decode("utf-8", "replace")) if blob and blob.data else {}


def front_matter(text: str) -> dict:
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


class HubError(Exception):
    """An error answer: status, message (body ``error`` and ``X-Error-Message``), ``X-Error-Code``, extra body keys."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = headers or {}, extra or {}


class HubState:
    """Repos, LFS objects and users. All access goes through one lock."""

    def __init__(self, tokens: dict[str, tuple[str, list[str]]]):
        self.tokens = tokens
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.tampered: dict[tuple[str, str], bytes] = {}  # (repo, sha256) → the wrong bytes served instead
        self.lock = threading.RLock()
        self._counter = 0

    # ---------------------------------------------------------------- access
    def user(self, token: str | None) -> tuple[str, list[str]] | None:
        if token is None:
            return None
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    @staticmethod
    def can_write(user: tuple[str, list[str]] | None, namespace: str) -> bool:
        return user is not None and (namespace == user[0] or namespace in user[1])

    def repo(self, repo_id: str, user, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self.can_write(user, repo_id.split("/")[0])):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write:
            if user is None:
                raise HubError(401, "You must be authenticated to write to a repo")
            if not self.can_write(user, repo_id.split("/")[0]):
                raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def commit_at(repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------- changes
    def new_commit(self, repo: Repo, parent: Commit | None, title: str, description: str,
                   files: dict[str, Blob]) -> Commit:
        self._counter += 1
        seed = f"{repo.id}|{parent.oid if parent else ''}|{title}|{self._counter}|{time.time_ns()}"
        for path in sorted(files):
            seed += f"|{path}:{files[path].oid}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent.oid if parent else None, title, description,
                        dict(files), now_iso())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(id=repo_id, private=private, created=now_iso())
        first = self.new_commit(repo, None, "initial commit", "", {".gitattributes": Blob.regular(GITATTRIBUTES)})
        repo.branches["main"] = first.oid
        self.repos[repo_id] = repo
        return repo


class HubServer:
    """The server: ``with HubServer(tokens) as hub:`` serves on ``hub.url`` until the block ends.

    Args:
        tokens: access token → (user name, organizations the user belongs to).

    Attributes:
        requests: ``(method, path, status)`` of every request served, in order.
        unhandled: requests no route matched (a test that needs a new endpoint shows up here).
    """

    def __init__(self, tokens: dict[str, tuple[str, list[str]]] | None = None):
        self.state = HubState(tokens or {})
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- life cycle
    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def env(self, hf_home: str | Path, token: str | None = None, offline: bool = False) -> dict[str, str]:
        """Environment for a client process: this endpoint, its own HF_HOME, LFS uploads (no Xet)."""
        return {"HF_ENDPOINT": self.url, "HF_HOME": str(hf_home), "HF_TOKEN_PATH": str(Path(hf_home) / "token"),
                "HF_TOKEN": token or "", "HF_HUB_OFFLINE": "1" if offline else "0", "TRANSFORMERS_OFFLINE": "0",
                "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    # ---------------------------------------------------------------- test helpers
    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """Every file of ``repo_id`` at ``rev`` with its stored bytes."""
        with self.state.lock:
            commit = self.state.commit_at(self.state.repos[repo_id], rev)
            return {p: b.data if b.data is not None else self.state.lfs[b.sha256] for p, b in commit.files.items()}

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> str:
        """Create ``repo_id`` with these files in one commit (``*.bin``, ``*.safetensors``… as LFS); its oid."""
        with self.state.lock:
            repo = self.state.create_repo(repo_id, private)
            head = repo.resolve("main")
            blobs = dict(head.files)
            for path, data in files.items():
                if any(fnmatch.fnmatch(path, p) for p in LFS_PATTERNS):
                    oid = hashlib.sha256(data).hexdigest()
                    self.state.lfs[oid] = data
                    blobs[path] = Blob.lfs(oid, len(data))
                else:
                    blobs[path] = Blob.regular(data)
            commit = self.state.new_commit(repo, head, "add files", "", blobs)
            repo.branches["main"] = commit.oid
            return commit.oid

    def tag(self, repo_id: str, name: str, rev: str = "main") -> None:
        with self.state.lock:
            repo = self.state.repos[repo_id]
            repo.tags[name] = self.state.commit_at(repo, rev).oid

    def commits(self, repo_id: str, rev: str = "main") -> list[Commit]:
        """The history of ``rev``, newest first."""
        with self.state.lock:
            repo = self.state.repos[repo_id]
            out, commit = [], self.state.commit_at(repo, rev)
            while commit is not None:
                out.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out

    def tamper(self, repo_id: str, path: str, rev: str = "main") -> None:
        """Serve ``path`` of ``repo_id`` with one byte flipped; the listing keeps the original sha256 and size.
        (Only this repo: other repos holding the same LFS object still get the right bytes.)"""
        with self.state.lock:
            blob = self.state.commit_at(self.state.repos[repo_id], rev).files[path]
            if blob.sha256 is None:
                raise ValueError(f"{path} is not an LFS file")
            data = bytearray(self.state.lfs[blob.sha256])
            data[len(data) // 2] ^= 0xFF
            self.state.tampered[(repo_id, blob.sha256)] = bytes(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Any:
        return json.loads(self.body) if self.body else {}

    def _send(self, status: int, body: Any = b"", headers: dict | None = None, content_type: str | None = None) -> None:
        if not isinstance(body, bytes):
            body, content_type = json.dumps(body).encode(), content_type or "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.requests.append((self.command, self.path, status))

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.body = self._read_body()  # always, so that an error answer leaves the kept-alive connection clean
        try:
            for methods, pattern, handler in ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and method in methods:
                    with self.hub.state.lock:
                        user = self.hub.state.user(self._token())
                        groups = {k: unquote(v) if v is not None else None for k, v in m.groupdict().items()}
                        handler(self, user, parse_qs(url.query), **groups)
                    return
            self.hub.unhandled.append((method, self.path))
            raise HubError(404, f"no route for {method} {url.path}")
        except HubError as e:
            headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode(), **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message, **e.extra}, headers)

    # ------------------------------------------------------------------ helpers
    def _base(self) -> str:
        return self.hub.url

    def _entry(self, path: str, blob: Blob | None) -> dict:
        if blob is None:  # a folder
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        entry = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.sha256:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size()}
        return entry

    def _info(self, repo: Repo, commit: Commit, card_data: bool = True, siblings: bool = True) -> dict:
        card = repo.card()
        tags = [t for t in card.get("tags") or [] if isinstance(t, str)]
        if isinstance(card.get("library_name"), str):
            tags.append(card["library_name"])
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        info = {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
                "author": repo.id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                "createdAt": repo.created, "private": repo.private, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": list(dict.fromkeys(tags)),
                "library_name": card.get("library_name")}
        if card_data:
            info["cardData"] = card
        if siblings:
            info["siblings"] = [{"rfilename": p, "size": b.size, "blobId": b.oid,
                                 **({"lfs": {"sha256": b.sha256, "size": b.size, "pointerSize": b.pointer_size()}}
                                    if b.sha256 else {})} for p, b in sorted(commit.files.items())]
        return info

    # ------------------------------------------------------------------ endpoints
    def whoami(self, user, query):
        if user is None:
            raise HubError(401, "Invalid username or password.")
        self._send(200, {"type": "user", "name": user[0], "orgs": [{"name": o} for o in user[1]],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def create_repo(self, user, query):
        body = self._json_body()
        if user is None:
            raise HubError(401, "Invalid username or password.")
        if body.get("type") not in (None, "model"):
            raise HubError(400, "this test server only hosts model repos")
        namespace = body.get("organization") or user[0]
        repo_id = f"{namespace}/{body['name']}"
        if not HubState.can_write(user, namespace):
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if repo_id in self.hub.state.repos:
            raise HubError(409, "You already created this model repo", extra={"url": f"{self._base()}/{repo_id}"})
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.hub.state.create_repo(repo_id, private)
        self._send(200, {"url": f"{self._base()}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self, user, query):
        body = self._json_body()
        text = body.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
        errors = []
        if m:
            try:
                data = yaml.safe_load(m.group(1))
                if data is not None and not isinstance(data, dict):
                    errors.append("metadata must be a YAML mapping")
                elif data and not (data.get("tags") is None or isinstance(data["tags"], list)):
                    errors.append('"tags" must be an array')
            except yaml.YAMLError as e:
                errors.append(f"invalid YAML: {e}")
        if errors:
            self._send(400, {"errors": [{"message": e} for e in errors]})
        else:
            self._send(200, {"warnings": []})

    def list_models(self, user, query):
        state = self.hub.state
        tags_wanted = query.get("filter", [])
        author = (query.get("author") or [None])[0]
        search = (query.get("search") or [""])[0].lower()
        with_card = "cardData" in query or "full" in query
        out = []
        repos = sorted(state.repos.values(), key=lambda r: r.id)
        if (query.get("sort") or [""])[0] == "lastModified":  # newest first, as on the Hub
            repos.sort(key=lambda r: state.commit_at(r, "main").date, reverse=True)
        for repo in repos:
            if repo.private and not state.can_write(user, repo.id.split("/")[0]):
                continue
            if author and repo.id.split("/")[0] != author:
                continue
            if search and search not in repo.id.lower():
                continue
            info = self._info(repo, state.commit_at(repo, "main"), card_data=with_card, siblings="full" in query)
            if all(t in info["tags"] for t in tags_wanted):
                out.append(info)
        limit = int((query.get("limit") or [0])[0] or 0)
        self._send(200, out[:limit] if limit else out)

    def model_info(self, user, query, repo, rev=None):
        r = self.hub.state.repo(repo, user)
        self._send(200, self._info(r, self.hub.state.commit_at(r, rev or "main")))

    def refs(self, user, query, repo):
        r = self.hub.state.repo(repo, user)
        ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
        self._send(200, {"branches": [ref("heads", n, o) for n, o in r.branches.items()], "converts": [],
                         "tags": [ref("tags", n, o) for n, o in r.tags.items()], "pullRequests": []})

    def create_branch(self, user, query, repo, branch):
        body = self._json_body()
        r = self.hub.state.repo(repo, user, write=True)
        if branch in r.branches:
            raise HubError(409, f"Branch {branch} already exists")
        r.branches[branch] = self.hub.state.commit_at(r, body.get("startingPoint") or "main").oid
        self._send(200, {})

    def create_tag(self, user, query, repo, rev):
        body = self._json_body()
        r = self.hub.state.repo(repo, user, write=True)
        if body["tag"] in r.tags:
            raise HubError(409, f"Tag {body['tag']} already exists")
        r.tags[body["tag"]] = self.hub.state.commit_at(r, rev).oid
        self._send(200, {})

    def preupload(self, user, query, repo, rev):
        body = self._json_body()
        r = self.hub.state.repo(repo, user, write=True)
        commit = self.hub.state.commit_at(r, rev)
        files = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = (any(fnmatch.fnmatch(f["path"], p) for p in LFS_PATTERNS) or f.get("size", 0) > LFS_MIN_SIZE
                   or b"\0" in sample)
            old = commit.files.get(f["path"])
            oid = (old.sha256 or old.oid) if old else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, user, query, repo):
        body = self._json_body()
        self.hub.state.repo(repo, user, write=body.get("operation") == "upload")
        objects = []
        for obj in body.get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"]}
            stored = self.hub.state.lfs.get(obj["oid"])
            if stored is None or len(stored) != obj["size"]:
                item["authenticated"] = True
                item["actions"] = {"upload": {"href": f"{self._base()}/__lfs__/{obj['oid']}", "expires_in": 3600}}
            objects.append(item)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def lfs_put(self, user, query, oid):
        data = self.body
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        self.hub.state.lfs[oid] = data
        self._send(200, b"")

    def commit(self, user, query, repo, rev):
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        state = self.hub.state
        r = state.repo(repo, user, write=True)
        if rev not in r.branches:
            raise HubError(404, f"Invalid rev id: {rev} is not a branch", "RevisionNotFound")
        parent = state.commit_at(r, rev)
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HubError(412, "A commit has happened since the parent commit; pull and retry")
        files = dict(parent.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = Blob.regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                stored = state.lfs.get(value["oid"])
                if stored is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = Blob.lfs(value["oid"], len(stored))
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
        commit = state.new_commit(r, parent, header.get("summary", ""), header.get("description", ""), files)
        r.branches[rev] = commit.oid
        self._send(200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                         "commitUrl": f"{self._base()}/{repo}/commit/{commit.oid}"})

    def _entries(self, commit: Commit, folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        files = {p: b for p, b in commit.files.items() if p.startswith(prefix)}
        if folder.strip("/") and not files:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        folders, out = set(), []
        for path, blob in sorted(files.items()):
            rest = path[len(prefix):].split("/")
            for i in range(1, len(rest)):
                folders.add(prefix + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                out.append(self._entry(path, blob))
        for f in sorted(folders):
            if recursive or "/" not in f[len(prefix):]:
                out.append(self._entry(f, None))
        return out

    def tree(self, user, query, repo, rev, path=None):
        commit = self.hub.state.commit_at(self.hub.state.repo(repo, user), rev)
        recursive = (query.get("recursive") or ["False"])[0].lower() in ("1", "true")
        self._send(200, self._entries(commit, path or "", recursive))

    def paths_info(self, user, query, repo, rev):
        form = parse_qs(self.body.decode())
        commit = self.hub.state.commit_at(self.hub.state.repo(repo, user), rev)
        out = []
        for path in form.get("paths", []):
            if path in commit.files:
                out.append(self._entry(path, commit.files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                out.append(self._entry(path, None))
        self._send(200, out)

    def resolve(self, user, query, repo, rev, path):
        state = self.hub.state
        commit = state.commit_at(state.repo(repo, user), rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = blob.data if blob.data is not None else state.tampered.get((repo, blob.sha256), state.lfs[blob.sha256])
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "ETag": f'"{blob.oid}"'}
        if blob.sha256:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        status = 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and self.command == "GET":
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers)


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"
ROUTES = [
    (("GET",), r"/api/whoami-v2", _Handler.whoami),
    (("POST",), r"/api/repos/create", _Handler.create_repo),
    (("POST",), r"/api/validate-yaml", _Handler.validate_yaml),
    (("GET",), r"/api/models", _Handler.list_models),
    (("GET",), rf"/api/models/{_REPO}/refs", _Handler.refs),
    (("POST",), rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", _Handler.create_branch),
    (("POST",), rf"/api/models/{_REPO}/tag/{_REV}", _Handler.create_tag),
    (("POST",), rf"/api/models/{_REPO}/preupload/{_REV}", _Handler.preupload),
    (("POST",), rf"/api/models/{_REPO}/commit/{_REV}", _Handler.commit),
    (("GET",), rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", _Handler.tree),
    (("POST",), rf"/api/models/{_REPO}/paths-info/{_REV}", _Handler.paths_info),
    (("GET",), rf"/api/models/{_REPO}(?:/revision/{_REV})?", _Handler.model_info),
    (("POST",), rf"/{_REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    (("PUT",), r"/__lfs__/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    (("GET", "HEAD"), rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", _Handler.resolve),
]
