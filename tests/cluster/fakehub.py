"""A STAND-IN for the Hugging Face Hub, for tests only: not the Hub.

A threaded plain-HTTP server holding a few small model repos in memory, answering exactly what
`huggingface_hub.snapshot_download` (2.4.0, the version in the test images) asks for:

- `GET /api/models/{repo}/revision/{rev}`: repo info (`id`, `sha`, `siblings`);
- `GET /api/models/{repo}/tree/{rev}`: the file listing (`type`, `path`, `size`, `oid`), one page;
- `HEAD` and `GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag` (the git blob ID),
  `Content-Length`, and the bytes on GET;
- `GET /api/agent-harnesses` (public, no token): an empty registry; huggingface_hub fetches
  it once a day for its User-Agent header.

Unknown repos, revisions and files answer 404 with the Hub's `X-Error-Code`. With `token`, a
repo request without `Authorization: Bearer TOKEN` gets 401 (a gated repo). Every request is recorded
(client address, method, path, Authorization), so tests can count downloads per file and see
who sent the token. No LFS, no Xet, no redirects: plain git blobs served by the "Hub" itself.
"""

from __future__ import annotations

import hashlib
import json
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Request:
    client: str  # the address it came from
    method: str
    path: str
    authorization: str | None


def blob_id(data: bytes) -> str:
    """The git blob SHA-1, which the Hub sends as the ETag of a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up (getfqdn): no DNS on the sandbox.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeHub:
    """Serves `repos` ({repo_id: {filename: bytes}}) at http://HOST:PORT until `close()`."""

    def __init__(self, repos: dict[str, dict[str, bytes]], host: str = "127.0.0.1",
                 token: str | None = None) -> None:
        self.repos = repos
        self.token = token
        # One commit per repo, derived from its content, as 40 hex digits like a git commit.
        self.commits = {repo: hashlib.sha1(json.dumps(
            sorted((name, blob_id(data)) for name, data in files.items())).encode()).hexdigest()
            for repo, files in repos.items()}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server((host, 0), self._handler())
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fakehub")
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloads(self, repo: str, filename: str) -> int:
        """GETs of one file's bytes, at any revision."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == "GET"
                       and r.path.startswith(f"/{repo}/resolve/")
                       and r.path.endswith(f"/{filename}"))

    def authorizations(self) -> set[str | None]:
        with self._lock:
            return {r.authorization for r in self.requests}

    # -- the HTTP side -------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _commit(self, repo: str, rev: str) -> tuple[str | None, tuple[int, dict[str, str], bytes]]:
        """(commit, ok) for a known repo and revision, else (None, the Hub's 404 answer)."""
        if repo not in self.repos:
            return None, (404, {"X-Error-Code": "RepoNotFound",
                                "X-Error-Message": "Repository not found"}, b"")
        commit = self.commits[repo]
        if rev not in ("main", commit):
            return None, (404, {"X-Error-Code": "RevisionNotFound",
                                "X-Error-Message": "Invalid rev id"}, b"")
        return commit, (200, {}, b"")

    def _answer(self, path: str, authorization: str | None
                ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request."""
        if path == "/api/agent-harnesses":  # public; huggingface_hub builds its User-Agent with it
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"standardEnvVars": [], "harnesses": {}}).encode()
        if self.token and authorization != f"Bearer {self.token}":
            return 401, {"X-Error-Code": "GatedRepo",
                         "X-Error-Message": "Access to this repo is restricted"}, b""
        parts = [unquote(p) for p in path.split("/")[1:]]
        if parts[:2] == ["api", "models"] and len(parts) >= 6:  # /api/models/ORG/NAME/KIND/REV
            repo, kind, rev = "/".join(parts[2:4]), parts[4], parts[5]
            commit, missing = self._commit(repo, rev)
            if commit is None:
                return missing
            files = self.repos[repo]
            if kind == "revision":
                body: object = {"id": repo, "sha": commit, "private": False,
                                "siblings": [{"rfilename": name} for name in sorted(files)]}
            elif kind == "tree":
                body = [{"type": "file", "path": name, "size": len(data), "oid": blob_id(data)}
                        for name, data in sorted(files.items())]
            else:
                return 404, {}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if len(parts) >= 5 and parts[2] == "resolve":  # /ORG/NAME/resolve/REV/FILE
            repo, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            commit, missing = self._commit(repo, rev)
            if commit is None:
                return missing
            data = self.repos[repo].get(filename)
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                             "X-Error-Message": "Entry not found"}, b""
            return 200, {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit,
                         "ETag": f'"{blob_id(data)}"'}, data
        return 404, {}, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, with_body: bool) -> None:
                path = urlsplit(self.path).path
                auth = self.headers.get("Authorization")
                hub._record(Request(self.client_address[0], self.command, path, auth))
                status, headers, body = hub._answer(path, auth)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._serve(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(False)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler
