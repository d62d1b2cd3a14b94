"""A fake Hugging Face Hub: the subset of the Hub HTTP API that ``huggingface_hub`` 2.x and ``datasets`` use to create
a repo, upload a folder (regular, base64-in-the-commit uploads), download files for ``from_pretrained`` and load a
dataset repo with ``datasets.load_dataset``.

It lets the tests run the real upload and download code over real HTTP, with no network. Model and dataset repos
live side by side (``hub.repos`` and ``hub.datasets``); the API routes take the repo type from the URL, the way the Hub
does: ``/api/models/...`` or ``/api/datasets/...``, and ``/{repo}/resolve/...`` or ``/datasets/{repo}/resolve/...``.
Endpoints (as called by ``huggingface_hub.HfApi``, ``hf_hub_download``, ``HfFileSystem`` and ``datasets``), with
``{type}`` one of ``models`` / ``datasets``:

- ``POST /api/repos/create`` (``create_repo``, ``type`` in the payload; 409 when the repo exists),
- ``POST /api/validate-yaml`` (``upload_folder`` checks the README's metadata; a YAML error is a 400),
- ``POST /api/{type}/{repo}/preupload/{rev}`` (always answers the "regular" upload mode, so no LFS or Xet storage),
- ``POST /api/{type}/{repo}/commit/{rev}`` (NDJSON: a header line, then ``file`` lines with base64 content),
- ``GET /api/whoami-v2``, ``GET /api/{type}/{repo}[/revision/{rev}]`` (repo info: ``sha`` of the revision, siblings),
- ``GET /api/{type}/{repo}/tree/{rev}[/{path}][?recursive=true&expand=true]`` (files and folders, one level or all),
- ``POST /api/{type}/{repo}/paths-info/{rev}`` (form ``paths=...&expand=...``: the entries of the paths that exist),
- ``HEAD`` / ``GET /[datasets/]{repo}/resolve/{rev}/{path}`` with the headers ``hf_hub_download`` reads
  (``X-Repo-Commit``, ``ETag``, ``Content-Length``), ``Range`` requests (206, as ``HfFileSystem`` reads), and
  ``X-Error-Code`` on a 404 (``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``).

``GET /api/agent-harnesses`` (``huggingface_hub``'s agent detection) is left a 404 on purpose: the client would cache
an answer under HF_HOME, and it does without one.

Revisions are ``main`` or the sha of any commit (every commit keeps its snapshot of the files); anything else (e.g.
``refs/convert/parquet``, the Hub's Parquet export branch, which this server has none of) is ``RevisionNotFound``.
Writes need ``Authorization: Bearer <token>`` with the server's token: anything else is a 401, as the Hub answers a
bad token. Every request is recorded in ``requests`` (method, path, whether it was authorised) for the tests.
Tests can also create a repo directly: ``hub.add_repo("someone/data", {"README.md": ..., "x.json": ...},
repo_type="dataset")``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
TYPE = r"(?P<type>models|datasets)"
REV = r"(?P<rev>[^/]+)"  # matched on the raw path: a revision is quoted with safe="" (refs%2Fconvert%2Fparquet)
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
REPO_TYPES = ("model", "dataset")


@dataclass
class FakeRepo:
    repo_id: str
    private: bool
    repo_type: str = "model"
    files: dict[str, bytes] = field(default_factory=dict)  # at the head of main
    commits: list[str] = field(default_factory=list)  # commit hashes, oldest first
    commit_messages: list[str] = field(default_factory=list)
    commit_dates: list[str] = field(default_factory=list)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit hash -> files at that commit

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit hash, files) of a revision: ``main`` or a commit hash; ``None`` for an unknown revision."""
        if revision == "main" or revision == self.head:
            return self.head, self.files
        if revision in self.snapshots:
            return revision, self.snapshots[revision]
        return None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorised: bool


class FakeHub:
    """``with FakeHub() as hub: HfApi(endpoint=hub.url, token=hub.token) ...``"""

    def __init__(self, token: str = "hf_fake_write_token", user: str = "tester"):
        self.token = token
        self.user = user
        self.repos: dict[str, FakeRepo] = {}  # model repos
        self.datasets: dict[str, FakeRepo] = {}  # dataset repos
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- helpers for tests -------------------------------------------------------------------------------------------

    def store(self, repo_type: str = "model") -> dict[str, FakeRepo]:
        if repo_type not in REPO_TYPES:
            raise ValueError(f"this server holds model and dataset repos, not {repo_type!r}")
        return self.repos if repo_type == "model" else self.datasets

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.store(repo_type)[repo_id].files)

    def paths_requested(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        repo_type: str = "model",
        private: bool = False,
        message: str = "Upload files",
        delete: tuple[str, ...] = (),
    ) -> str:
        """Create ``repo_id`` if needed and commit ``files`` (text is UTF-8 encoded) and the deletion of ``delete``
        to its main branch, as an upload would. Returns the commit hash."""
        self.create(repo_id, private, repo_type)
        lines = [{"key": "header", "value": {"summary": message}}]
        for path, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            lines.append(
                {
                    "key": "file",
                    "value": {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()},
                }
            )
        lines += [{"key": "deletedFile", "value": {"path": path}} for path in delete]
        return self.commit(repo_id, lines, repo_type)

    def add_dataset_repo(self, repo_id: str, files: dict[str, bytes | str], **kwargs) -> str:
        return self.add_repo(repo_id, files, repo_type="dataset", **kwargs)

    # --- state changes (under the lock: the server is threaded) -------------------------------------------------

    def create(self, repo_id: str, private: bool, repo_type: str = "model") -> bool:
        store = self.store(repo_type)
        with self._lock:
            if repo_id in store:
                return False
            store[repo_id] = FakeRepo(repo_id, private, repo_type)
            return True

    def commit(self, repo_id: str, lines: list[dict], repo_type: str = "model") -> str:
        with self._lock:
            repo = self.store(repo_type)[repo_id]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = dict(repo.files)
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise ValueError(f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key != "header":
                    raise ValueError(f"unsupported commit operation {key!r} (this server asked for regular uploads)")
            tree = hashlib.sha1(
                b"".join(p.encode() + b"\0" + _git_blob_sha(d).encode() for p, d in sorted(files.items()))
            )
            parent = f"{repo_type}:{repo_id}:{repo.head}:{header['summary']}:{tree.hexdigest()}"
            sha = hashlib.sha1(parent.encode()).hexdigest()
            repo.files = files
            repo.snapshots[sha] = files
            repo.commits.append(sha)
            repo.commit_messages.append(header["summary"])
            repo.commit_dates.append(datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            return sha


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _folders(paths) -> set[str]:
    """Every folder that holds one of ``paths`` (``a/b/c.json`` -> ``a``, ``a/b``)."""
    return {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}


def _true(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    # --- plumbing ----------------------------------------------------------------------------------------------------

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.fake.token}"

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), headers, head)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head)

    def _unauthorised(self, head: bool = False) -> None:
        self._error(401, BAD_TOKEN_MESSAGE if self.headers.get("Authorization") else "Unauthorized", head=head)

    def _readable(self, repo_type: str, repo_id: str, head: bool = False) -> FakeRepo | None:
        repo = self.fake.store(repo_type).get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404, "Repository not found", "RepoNotFound", head)
            return None
        return repo

    def _revision(self, repo_type: str, repo_id: str, rev: str, head: bool = False):
        """(repo, commit hash, files) of a readable repo at ``rev``; ``None`` once the error is sent."""
        repo = self._readable(repo_type, repo_id, head)
        if repo is None:
            return None
        found = repo.at(unquote(rev))
        if found is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound", head)
            return None
        return repo, *found

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        """The raw (still quoted) path and the query; the unquoted path is recorded."""
        parts = urlsplit(self.path)
        with self.fake._lock:
            self.fake.requests.append(Request(self.command, unquote(parts.path), self._authorised()))
        return parts.path, parse_qs(parts.query)

    # --- verbs -------------------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self._get(head=False)

    def _get(self, head: bool) -> None:
        path, query = self._record()
        if path == "/api/whoami-v2":
            if not self._authorised():
                return self._unauthorised(head)
            return self._json(200, {"type": "user", "name": self.fake.user, "orgs": [], "auth": {}}, head=head)
        if m := re.fullmatch(rf"/api/{TYPE}/{REPO}/tree/{REV}(?:/(?P<sub>.*))?", path):
            sub = unquote(m["sub"] or "").strip("/")
            return self._tree(m["type"][:-1], m["repo"], m["rev"], sub, query, head)
        if m := re.fullmatch(rf"/api/{TYPE}/{REPO}(?:/revision/(?P<rev>.+))?", path):  # quoted or not
            return self._info(m["type"][:-1], m["repo"], m["rev"] or "main", head)
        if m := re.fullmatch(rf"/datasets/{REPO}/resolve/{REV}/(?P<file>.+)", path):
            return self._resolve("dataset", m["repo"], m["rev"], unquote(m["file"]), head)
        if m := re.fullmatch(rf"/{REPO}/resolve/{REV}/(?P<file>.+)", path):
            return self._resolve("model", m["repo"], m["rev"], unquote(m["file"]), head)
        self._error(404, f"no route for {self.command} {unquote(path)}", head=head)

    def do_POST(self) -> None:
        path, _ = self._record()
        body = self._body()
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if m := re.fullmatch(rf"/api/{TYPE}/{REPO}/preupload/{REV}", path):
            return self._preupload(m["type"][:-1], m["repo"], json.loads(body))
        if m := re.fullmatch(rf"/api/{TYPE}/{REPO}/commit/{REV}", path):
            return self._commit(m["type"][:-1], m["repo"], m["rev"], body)
        if m := re.fullmatch(rf"/api/{TYPE}/{REPO}/paths-info/{REV}", path):
            return self._paths_info(m["type"][:-1], m["repo"], m["rev"], parse_qs(body.decode()))
        self._error(404, f"no route for POST {unquote(path)}")

    # --- endpoints ---------------------------------------------------------------------------------------------------

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.fake.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def _create(self, payload: dict) -> None:
        if not self._authorised():
            return self._unauthorised()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            return self._error(400, f"this server holds model and dataset repos, not {repo_type!r}")
        repo_id = f"{payload.get('organization') or self.fake.user}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = self._repo_url(repo_type, repo_id)
        if not self.fake.create(repo_id, private, repo_type):
            return self._json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        import yaml

        text = payload.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
        if not m:
            return self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(m[1])
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a mapping")
            for entry in meta.get("model-index", []):  # the structure the Hub requires of model-index
                for result in entry["results"]:
                    result["task"]["type"], result["dataset"]["type"], result["dataset"]["name"]
                    for metric in result["metrics"]:
                        float(metric["value"]), metric["type"]
        except Exception as e:
            return self._json(400, {"errors": [{"message": f"invalid metadata: {e!r}"}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_type: str, repo_id: str, payload: dict) -> None:
        if not self._authorised():
            return self._unauthorised()
        repo = self.fake.store(repo_type).get(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in payload["files"]
        ]
        self._json(200, {"files": files, "commitOid": repo.head})

    def _commit(self, repo_type: str, repo_id: str, rev: str, body: bytes) -> None:
        if not self._authorised():
            return self._unauthorised()
        if repo_id not in self.fake.store(repo_type):
            return self._error(404, "Repository not found", "RepoNotFound")
        if unquote(rev) != "main":
            return self._error(
                404, f"Invalid rev id: {unquote(rev)} (this server commits to main only)", "RevisionNotFound"
            )
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        try:
            sha = self.fake.commit(repo_id, lines, repo_type)
        except ValueError as e:
            return self._error(400, str(e))
        self._json(200, {"commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}", "commitOid": sha})

    def _info(self, repo_type: str, repo_id: str, rev: str, head: bool) -> None:
        found = self._revision(repo_type, repo_id, rev, head)
        if found is None:
            return
        repo, sha, files = found
        info = {
            "_id": hashlib.sha1(f"{repo_type}:{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(files)],
        }
        if repo.commits:
            info["lastModified"] = repo.commit_dates[repo.commits.index(sha)]
        if repo_type == "model":
            info["modelId"] = repo_id
        self._json(200, info, head=head)

    def _entry(self, repo: FakeRepo, sha: str, files: dict[str, bytes], path: str, expand: bool) -> dict:
        if path in files:
            data = files[path]
            entry = {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": path}
        else:
            inside = sorted((p, _git_blob_sha(d)) for p, d in files.items() if p.startswith(path + "/"))
            entry = {
                "type": "directory",
                "oid": hashlib.sha1(repr(inside).encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        if expand:  # the Hub's last commit of the path; here, the commit asked for
            i = repo.commits.index(sha)
            entry["lastCommit"] = {"id": sha, "title": repo.commit_messages[i], "date": repo.commit_dates[i]}
        return entry

    def _tree(self, repo_type: str, repo_id: str, rev: str, sub: str, query: dict, head: bool) -> None:
        found = self._revision(repo_type, repo_id, rev, head)
        if found is None:
            return
        repo, sha, files = found
        folders = _folders(files)
        if sub and sub not in folders:  # a missing path, or a file: the Hub lists folders only
            return self._error(404, f"{sub} does not exist or is not a folder", "EntryNotFound", head)
        prefix = f"{sub}/" if sub else ""
        under = [p for p in sorted(set(files) | folders) if p.startswith(prefix)]
        if not _true(query.get("recursive")):
            under = [p for p in under if "/" not in p[len(prefix) :]]
        expand = _true(query.get("expand"))
        under.sort(key=lambda p: (p not in folders, p))  # folders first, as the Hub lists them
        self._json(200, [self._entry(repo, sha, files, p, expand) for p in under], head=head)

    def _paths_info(self, repo_type: str, repo_id: str, rev: str, form: dict[str, list[str]]) -> None:
        found = self._revision(repo_type, repo_id, rev)
        if found is None:
            return
        repo, sha, files = found
        folders = _folders(files)
        paths = [p.strip("/") for p in form.get("paths", [])]
        expand = _true(form.get("expand"))
        self._json(200, [self._entry(repo, sha, files, p, expand) for p in paths if p in files or p in folders])

    def _resolve(self, repo_type: str, repo_id: str, rev: str, filename: str, head: bool) -> None:
        found = self._revision(repo_type, repo_id, rev, head)
        if found is None:
            return
        _, sha, files = found
        data = files.get(filename)
        if data is None:
            return self._error(404, f"{filename} does not exist", "EntryNotFound", head)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{_git_blob_sha(data)}"',
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        if m := re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or ""):
            start = int(m[1]) if m[1] else max(len(data) - int(m[2] or 0), 0)
            end = min(int(m[2]), len(data) - 1) if m[1] and m[2] else len(data) - 1
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers, head)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        self._send(status, body, headers, head)
