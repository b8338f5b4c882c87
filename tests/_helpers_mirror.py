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
