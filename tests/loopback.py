"""A loopback HTTP server for download tests: Range support, dropped connections, routes.

``serve(root)`` serves the files under ``root``; ``serve(server)`` serves a :class:`Server`
subclass whose :meth:`Server.resolve` answers other paths (e.g. a fake API).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Server:
    """Serves files from ``root`` with Range support; can drop connections or ignore Range."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.drop_after: int | None = None  # bytes sent before the first droppable response is cut
        self.drops = 0
        self.ranges: list[str | None] = []
        self.honour_range = True

    def resolve(self, handler: BaseHTTPRequestHandler) -> bytes | int:
        """The body of a GET (Range and drops apply to it), or an HTTP error status."""
        path = self.root / unquote(urlsplit(handler.path).path).lstrip("/")
        return path.read_bytes() if path.is_file() else 404

    def droppable(self, handler: BaseHTTPRequestHandler) -> bool:
        """Whether ``drop_after`` may cut this response (every one here)."""
        return True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = server.resolve(self)
                if isinstance(data, int):
                    self.send_error(data)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start, end = 0, len(data) - 1
                if header and server.honour_range:
                    first, last = header.removeprefix("bytes=").split("-")
                    start, end = int(first), min(end, int(last)) if last else end
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end + 1 - start))
                self.end_headers()
                body = data[start : end + 1]
                drop = server.drop_after is not None and server.drops == 0
                if drop and server.droppable(self):
                    server.drops += 1
                    self.wfile.write(body[: server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the peer sees a short read
                    return
                self.wfile.write(body)

        return Handler


@contextmanager
def serve(root: Path | Server) -> Iterator[tuple[Server, str]]:
    """Serve ``root`` (a folder or a :class:`Server`) on 127.0.0.1: (server, base URL)."""
    state = root if isinstance(root, Server) else Server(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
