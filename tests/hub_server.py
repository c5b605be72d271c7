"""A small stand-in for the Hugging Face Hub on 127.0.0.1, serving model folders the way the hub does.

It answers what ``huggingface_hub`` asks of the hub for a download: ``/api/models/<repo>[/revision/<rev>]``
(``?blobs=true`` gives sizes, git blob ids and LFS sha256), and ``/<repo>/resolve/<rev>/<file>``, which
redirects ``*.safetensors`` (LFS files) to a CDN path as the hub does, with ``Range`` requests answered
206. Faults are queued per file name: "cut" sends half the body and closes the connection, "corrupt"
sends the body with its first byte changed, "404" and "500" answer with that status. Every request is
logged with its ``Range`` header.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from huggingface_hub import constants

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class HubServer:
    """Serves ``repos`` (repo id -> folder) at ``url`` until ``close()``."""

    repos: dict[str, Path]
    faults: dict[str, list[str]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests_for(self, name: str) -> list[Request]:
        """The logged requests that fetched the file ``name`` (through its resolve or its CDN path)."""
        return [r for r in self.log if r.path.endswith("/" + name)]

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.log.append(Request(handler.command, path, handler.headers.get("Range")))
        if path.startswith("/api/models/"):
            self._info(handler, path.removeprefix("/api/models/"))
        elif "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            self._resolve(handler, repo, rest.partition("/")[2], body)
        elif path.startswith("/cdn/"):
            repo, _, name = path.removeprefix("/cdn/").rpartition("/")
            self._file(handler, repo, name, body)
        else:
            self._error(handler, 404, "RepoNotFound")

    def _info(self, handler: BaseHTTPRequestHandler, rest: str) -> None:
        repo = rest.partition("/revision/")[0]
        if repo not in self.repos:
            return self._error(handler, 401, "RepoNotFound")
        siblings = []
        for file in sorted(p for p in self.repos[repo].rglob("*") if p.is_file()):
            data = file.read_bytes()
            entry = {"rfilename": file.relative_to(self.repos[repo]).as_posix(), "size": len(data)}
            if file.name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                entry["blobId"] = hashlib.sha1(b"pointer " + data[:16]).hexdigest()
            else:
                entry["blobId"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            siblings.append(entry)
        self._send(handler, 200, json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode(),
                   {"Content-Type": "application/json"})

    def _resolve(self, handler: BaseHTTPRequestHandler, repo: str, name: str, body: bool) -> None:
        file = self.repos.get(repo, Path("/nonexistent")) / name
        fault = self._fault(name, ("404", "500"))
        if fault == "500":
            return self._send(handler, 500, b"Internal Error", {})
        if fault == "404" or not file.is_file():
            return self._error(handler, 404, "EntryNotFound")
        if name.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(file.read_bytes()).hexdigest()
            return self._send(handler, 302, b"", {
                "Location": f"/cdn/{repo}/{name}", "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(file.stat().st_size), "ETag": '"pointer"',
            })
        self._file(handler, repo, name, body)

    def _file(self, handler: BaseHTTPRequestHandler, repo: str, name: str, body: bool) -> None:
        data = (self.repos[repo] / name).read_bytes()
        start = int(handler.headers["Range"].removeprefix("bytes=").partition("-")[0]) if handler.headers.get("Range") else 0
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        part = data[start:]
        fault = self._fault(name, ("cut", "corrupt")) if body else None
        if fault == "corrupt":
            part = bytes([part[0] ^ 0xFF]) + part[1:]
        if fault == "cut":
            handler.send_response(206 if start else 200)
            for key, value in {**headers, "Content-Length": str(len(part))}.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(part[: len(part) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        self._send(handler, 206 if start else 200, part if body else b"", headers, length=len(part))

    def _fault(self, name: str, kinds: tuple[str, ...]) -> str | None:
        queued = self.faults.get(name)
        if queued and queued[0] in kinds:
            return queued.pop(0)
        return None

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
        self._send(handler, status, code.encode(), {"X-Error-Code": code, "X-Repo-Commit": COMMIT})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str], length: int | None = None) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload) if length is None else length))
        handler.end_headers()
        if payload:
            handler.wfile.write(payload)


def point_client_at(monkeypatch, tmp_path: Path, url: str) -> None:
    """Do for one test what HF_ENDPOINT set before start-up does (the client reads it into its constants
    at import), online (tests/conftest.py sets HF_HUB_OFFLINE) and with a Hugging Face home of its own."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
