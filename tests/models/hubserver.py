"""A small Hugging Face hub for the pull tests: a real HTTP server on 127.0.0.1:<free port>, in a thread, serving
files in the hub's URL layout with the headers huggingface_hub reads.

    HEAD/GET /{owner}/{repo}/resolve/{revision}/{path}    an LFS file: 302 to the CDN (another origin, as the
                                                          hub's is), with X-Repo-Commit, X-Linked-Etag (its
                                                          sha256), X-Linked-Size; a file kept in git: 200 with
                                                          ETag = its git blob sha1 and the bytes
    GET /cdn/{owner}/{repo}/{path}                        the bytes, on http://localhost:<port> (a different
                                                          origin from 127.0.0.1, so no token follows); Range
                                                          requests answered 206
    GET /api/models/{owner}/{repo}[/revision/{revision}]  the repo's files (`siblings`) and its commit (`sha`)

Errors carry the hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), which
huggingface_hub turns into its exception types; a gated or private repo opens with `Hub.token`. Faults a test sets: `drop_after` (the next body stops after that
many bytes and the connection closes, once) and `lie` (filenames whose X-Linked-Etag is another file's sha256).
`gets` records each body request (path, Range header) and `served` the body bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 1024 * 1024


def tiny_gguf(name: str = "tiny") -> bytes:
    """A real GGUF (version 3) with two metadata keys and no tensors: a header read_metadata accepts."""

    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", "llama"), ("general.name", name)]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv:
        out += string(key) + struct.pack("<I", 8) + string(value)  # 8: a string value
    return out


@dataclass
class HubFile:
    source: bytes | Path
    lfs: bool = True

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def read(self, start: int, n: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:start + n]
        with open(self.source, "rb") as f:
            f.seek(start)
            return f.read(n)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for start in range(0, self.size, 16 * CHUNK):
            h.update(self.read(start, 16 * CHUNK))
        return h.hexdigest()


@dataclass
class Repo:
    commit: str
    files: dict[str, HubFile]
    gated: bool = False  # readable only with the hub's token (403 GatedRepo; 401 with none)
    private: bool = False  # the same, but as the hub hides a private repo: 401 RepoNotFound


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    token: str = "hf_test_token"
    drop_after: int | None = None
    lie: set[str] = field(default_factory=set)
    gets: list[tuple[str, str | None]] = field(default_factory=list)
    served: int = 0
    cdn_tokens: list[str] = field(default_factory=list)  # Authorization headers the CDN was sent (none is right)
    url: str = ""
    cdn: str = ""
    _sha: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo: str, files: dict[str, bytes | Path | HubFile], *, gated: bool = False,
            private: bool = False) -> Repo:
        commit = hashlib.sha1(repo.encode()).hexdigest()
        made = {name: f if isinstance(f, HubFile) else HubFile(f) for name, f in files.items()}
        self.repos[repo] = Repo(commit, made, gated, private)
        return self.repos[repo]

    def sha256(self, repo: str, name: str) -> str:
        key = (repo, name)
        if key not in self._sha:  # the 98 MB file is hashed once per test, not per request
            self._sha[key] = self.repos[repo].files[name].sha256()
        return self._sha[key]


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, format, *args):  # the test's output stays the test's
        pass

    def do_HEAD(self):
        self._route(body=False)

    def do_GET(self):
        self._route(body=True)

    def _route(self, body: bool) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._listing(parts[2:])
        if parts[:1] == ["cdn"] and len(parts) >= 4:
            repo, name = f"{parts[1]}/{parts[2]}", "/".join(parts[3:])
            if self.headers.get("Authorization"):
                self.hub.cdn_tokens.append(self.headers["Authorization"])
            found = self.hub.repos.get(repo)
            if found is None or name not in found.files:
                return self._error(404, "EntryNotFound")
            return self._bytes(found.files[name], body, {"ETag": f'"{self.hub.sha256(repo, name)}"'})
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body)
        return self._error(404, None)

    def _repo(self, name: str, revision: str) -> Repo | None:
        """The repo when this request may read it at `revision`; else the error is sent and None returned."""
        repo = self.hub.repos.get(name)
        if repo is None:
            return self._error(404, "RepoNotFound")
        authorized = self.headers.get("Authorization") == f"Bearer {self.hub.token}"
        if repo.private and not authorized:
            return self._error(401, "RepoNotFound")
        if repo.gated and not authorized:
            return self._error(401 if self.headers.get("Authorization") is None else 403, "GatedRepo")
        if revision not in (repo.commit, "main"):
            return self._error(404, "RevisionNotFound")
        return repo

    def _resolve(self, name: str, revision: str, filename: str, body: bool) -> None:
        repo = self._repo(name, revision)
        if repo is None:
            return
        f = repo.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", {"X-Repo-Commit": repo.commit})
        headers = {"X-Repo-Commit": repo.commit}
        if not f.lfs:
            data = f.read(0, f.size)
            return self._bytes(f, body, {**headers, "ETag": f'"{git_sha1(data)}"'})
        sha = self.hub.sha256(name, filename)
        if filename in self.hub.lie:
            sha = hashlib.sha256(sha.encode()).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {f.size}\n".encode()
        self.send_response(302)
        for k, v in {**headers, "ETag": f'"{git_sha1(pointer)}"', "X-Linked-Etag": f'"{sha}"',
                     "X-Linked-Size": str(f.size), "Location": f"{self.hub.cdn}/cdn/{name}/{filename}",
                     "Content-Length": "0"}.items():
            self.send_header(k, v)
        self.end_headers()

    def _listing(self, parts: list[str]) -> None:
        name = "/".join(parts[:2])
        revision = parts[3] if len(parts) >= 4 and parts[2] == "revision" else "main"
        repo = self._repo(name, revision)
        if repo is None:
            return
        data = json.dumps({"id": name, "sha": repo.commit, "private": False, "gated": repo.gated,
                           "siblings": [{"rfilename": n} for n in repo.files]}).encode()
        self._send(200, {"Content-Type": "application/json", "X-Repo-Commit": repo.commit}, data)

    def _bytes(self, f: HubFile, body: bool, headers: dict[str, str]) -> None:
        size, start = f.size, 0
        range_header = self.headers.get("Range")
        status = 200
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-")[0])
            if start >= size:
                return self._send(416, {"Content-Range": f"bytes */{size}"}, b"")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(size - start), "Accept-Ranges": "bytes",
                     "Content-Type": "application/octet-stream"}.items():
            self.send_header(k, v)
        self.end_headers()
        if not body:
            return
        with self.hub._lock:
            self.hub.gets.append((urlsplit(self.path).path, range_header))
            stop, self.hub.drop_after = self.hub.drop_after, None  # a fault happens once
        sent = 0
        while start + sent < size:
            n = min(CHUNK, size - start - sent, size if stop is None else stop - sent)
            try:
                self.wfile.write(f.read(start + sent, n))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client left (a test's Ctrl-C)
                return
            sent += n
            with self.hub._lock:
                self.hub.served += n
            if stop is not None and sent >= stop:
                self.close_connection = True  # Content-Length promised more: the client sees a dropped connection
                return

    def _error(self, status: int, code: str | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps({"error": code or "not found"}).encode()
        extra = {"X-Error-Code": code} if code else {}
        self._send(status, {"Content-Type": "application/json", **extra, **(headers or {})}, data)

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class HubServer:
    """The hub served on 127.0.0.1:<free port>; `url` is the endpoint, the CDN answers on localhost:<port>."""

    def __init__(self) -> None:
        self.hub = Hub()
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.hub.url, self.hub.cdn = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"hub-{port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
