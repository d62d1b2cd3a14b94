"""A fake Hugging Face Hub: the subset of the Hub HTTP API that ``huggingface_hub`` 2.x uses to create a repo,
upload a folder (regular, base64-in-the-commit uploads) and download files for ``from_pretrained``.

It lets the tests run the real upload and download code over real HTTP, with no network. Endpoints (as called by
``huggingface_hub.HfApi`` and ``hf_hub_download``):

- ``POST /api/repos/create`` (``create_repo``; 409 when the repo exists),
- ``POST /api/validate-yaml`` (``upload_folder`` checks the README's metadata; a YAML error is a 400),
- ``POST /api/models/{repo}/preupload/{rev}`` (always answers the "regular" upload mode, so no LFS or Xet storage),
- ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: a header line, then ``file`` lines with base64 content),
- ``GET /api/whoami-v2``, ``GET /api/models/{repo}[/revision/{rev}]`` (repo / model info),
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (file listing),
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` with the headers ``hf_hub_download`` reads (``X-Repo-Commit``,
  ``ETag``, ``Content-Length``) and ``X-Error-Code`` on a 404 (``RepoNotFound`` / ``EntryNotFound``).

Writes need ``Authorization: Bearer <token>`` with the server's token: anything else is a 401, as the Hub answers a
bad token. Every request is recorded in ``requests`` (method, path, whether it was authorised) for the tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


@dataclass
class FakeRepo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # commit hashes, oldest first
    commit_messages: list[str] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


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
        self.repos: dict[str, FakeRepo] = {}
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

    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].files)

    def paths_requested(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # --- state changes (under the lock: the server is threaded) -------------------------------------------------

    def create(self, repo_id: str, private: bool) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = FakeRepo(repo_id, private)
            return True

    def commit(self, repo_id: str, lines: list[dict]) -> str:
        with self._lock:
            repo = self.repos[repo_id]
            header = next(x["value"] for x in lines if x["key"] == "header")
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise ValueError(f"unsupported encoding {value.get('encoding')!r}")
                    repo.files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    repo.files.pop(value["path"], None)
                elif key != "header":
                    raise ValueError(f"unsupported commit operation {key!r} (this server asked for regular uploads)")
            sha = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{header['summary']}".encode()).hexdigest()
            repo.commits.append(sha)
            repo.commit_messages.append(header["summary"])
            return sha


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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

    def _readable(self, repo_id: str, head: bool = False) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404, "Repository not found", "RepoNotFound", head)
            return None
        return repo

    def _record(self) -> str:
        path = unquote(urlsplit(self.path).path)
        with self.fake._lock:
            self.fake.requests.append(Request(self.command, path, self._authorised()))
        return path

    # --- verbs -------------------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self._get(head=False)

    def _get(self, head: bool) -> None:
        path = self._record()
        if path == "/api/whoami-v2":
            if not self._authorised():
                return self._unauthorised(head)
            return self._json(200, {"type": "user", "name": self.fake.user, "orgs": [], "auth": {}}, head=head)
        if m := re.fullmatch(rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", path):
            return self._tree(m["repo"], (m["sub"] or "").strip("/"), head)
        if m := re.fullmatch(rf"/api/models/{REPO}(?:/revision/(?P<rev>.+))?", path):
            return self._info(m["repo"], head)
        if m := re.fullmatch(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path):
            return self._resolve(m["repo"], m["file"], head)
        self._error(404, f"no route for {self.command} {path}", head=head)

    def do_POST(self) -> None:
        path = self._record()
        body = self._body()
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if m := re.fullmatch(rf"/api/models/{REPO}/preupload/(?P<rev>.+)", path):
            return self._preupload(m["repo"], json.loads(body))
        if m := re.fullmatch(rf"/api/models/{REPO}/commit/(?P<rev>.+)", path):
            return self._commit(m["repo"], body)
        self._error(404, f"no route for POST {path}")

    # --- endpoints ---------------------------------------------------------------------------------------------------

    def _create(self, payload: dict) -> None:
        if not self._authorised():
            return self._unauthorised()
        repo_id = f"{payload.get('organization') or self.fake.user}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        if not self.fake.create(repo_id, private):
            return self._json(
                409, {"error": "You already created this model repo", "url": f"{self.fake.url}/{repo_id}"}
            )
        self._json(200, {"url": f"{self.fake.url}/{repo_id}", "name": repo_id})

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

    def _preupload(self, repo_id: str, payload: dict) -> None:
        if not self._authorised():
            return self._unauthorised()
        if repo_id not in self.fake.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in payload["files"]
        ]
        self._json(200, {"files": files, "commitOid": self.fake.repos[repo_id].head})

    def _commit(self, repo_id: str, body: bytes) -> None:
        if not self._authorised():
            return self._unauthorised()
        if repo_id not in self.fake.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        try:
            sha = self.fake.commit(repo_id, lines)
        except ValueError as e:
            return self._error(400, str(e))
        self._json(200, {"commitUrl": f"{self.fake.url}/{repo_id}/commit/{sha}", "commitOid": sha})

    def _info(self, repo_id: str, head: bool) -> None:
        repo = self._readable(repo_id, head)
        if repo is None:
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.head,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
            "tags": [],
        }
        self._json(200, info, head=head)

    def _tree(self, repo_id: str, sub: str, head: bool) -> None:
        repo = self._readable(repo_id, head)
        if repo is None:
            return
        prefix = f"{sub}/" if sub else ""
        entries = [
            {"type": "file", "path": p, "size": len(d), "oid": _git_blob_sha(d)}
            for p, d in sorted(repo.files.items())
            if p.startswith(prefix)
        ]
        self._json(200, entries, head=head)

    def _resolve(self, repo_id: str, filename: str, head: bool) -> None:
        repo = self._readable(repo_id, head)
        if repo is None:
            return
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, f"{filename} does not exist", "EntryNotFound", head)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": repo.head,
            "ETag": f'"{_git_blob_sha(data)}"',
            "Content-Length": str(len(data)),
        }
        self._send(200, data, headers, head)
