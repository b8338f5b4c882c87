"""A real HTTP server on 127.0.0.1 serving a folder (a mirror tree), with request logging and planted faults."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves files under the server's root; paths in `server.truncate` send half their bytes, then hang up."""

    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        if self.path in self.server.truncate:
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path))
        super().do_HEAD()

    def log_message(self, format, *args):  # quiet: the request log is kept on the server
        pass


@contextlib.contextmanager
def serve(root: Path, handler=MirrorHandler):
    """Serve `root` on 127.0.0.1 (a free port) in a thread; yields the server (url, requests, truncate)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.requests, server.truncate, server.root = [], set(), Path(root)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def upstream_path(url: str) -> str:
    """Where a mirror keeps `url`: HOST/PATH."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc + parts.path


class HubHandler(SimpleHTTPRequestHandler):
    """The few Hub routes huggingface_hub's snapshot_download uses, answered from a Hub cache tree
    (`models--ORG--NAME/refs/REV`, `.../snapshots/COMMIT/PATH`): repo info, tree listing, file resolve."""

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, error: str | None = None):
        self.send_response(code)
        for key, value in {**(headers or {}), **({"X-Error-Code": error} if error else {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _snapshot(self, org: str, name: str, revision: str):
        repo = self.server.root / f"models--{org}--{name}"
        if not repo.is_dir():
            return None, "RepoNotFound"
        ref = repo / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        snap = repo / "snapshots" / commit
        return (commit, snap) if snap.is_dir() else (None, "RevisionNotFound")

    def _answer(self):
        import hashlib
        import json
        import re
        from urllib.parse import unquote, urlsplit

        self.server.requests.append((self.command, self.path))
        path = urlsplit(self.path).path
        route = (re.match(r"^/api/models/([^/]+)/([^/]+)/revision/([^/]+)$", path)
                 or re.match(r"^/api/models/([^/]+)/([^/]+)/tree/([^/]+)$", path)
                 or re.match(r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", path))
        if route is None:
            return self._send(404)
        org, name, revision = route.group(1), route.group(2), unquote(route.group(3))
        found, detail = self._snapshot(org, name, revision)
        if found is None:
            return self._send(404, b"{}", error=detail)
        commit, snap = found, detail
        files = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
        if "/revision/" in path:
            body = {"id": f"{org}/{name}", "sha": commit, "siblings": [{"rfilename": f} for f in files]}
            return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        if "/tree/" in path:
            body = [{"type": "file", "path": f, "size": (snap / f).stat().st_size,
                     "oid": hashlib.sha1((snap / f).read_bytes()).hexdigest()} for f in files]
            return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        rel = unquote(route.group(4))
        if rel not in files:
            return self._send(404, b"", error="EntryNotFound")
        data = (snap / rel).read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        return self._send(200, data, {"X-Repo-Commit": commit, "ETag": etag})

    do_GET = _answer
    do_HEAD = _answer

    def log_message(self, format, *args):
        pass
