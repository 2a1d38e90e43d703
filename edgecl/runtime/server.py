"""Local HTTP server: ``/healthz``, ``/metrics`` (Prometheus), ``/api/...`` and a small dashboard.

Binds 127.0.0.1 by default. Runs in its own daemon thread; handlers only read state
through the callables they are given, so the server never blocks the loop.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)

DASHBOARD = """<!doctype html><html><head><meta charset="utf-8"><title>edgecl</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}</style>
</head><body><h1>edgecl</h1><pre id="h">loading...</pre><h2>Models</h2><pre id="m"></pre>
<h2>Pending labels</h2><pre id="p"></pre><script>
async function r(){for(const [id,u] of [["h","/healthz"],["m","/api/models"],["p","/api/labels/pending"]]){
 try{document.getElementById(id).textContent=JSON.stringify(await (await fetch(u)).json(),null,1)}
 catch(e){document.getElementById(id).textContent=String(e)}}}
r();setInterval(r,2000);</script></body></html>"""


class Routes:
    """What the server can show; each callable returns JSON-ready data (or bytes for metrics).

    Args:
        health: current status of the runtime.
        metrics: Prometheus exposition text.
        models: registry listing.
        pending: operator label queue.
        label_action: ``(item_id, "accept"|"reject") -> dict``.
    """

    def __init__(self, health: Callable[[], dict], metrics: Callable[[], bytes] | None = None,
                 models: Callable[[], list] | None = None, pending: Callable[[], list] | None = None,
                 label_action: Callable[[str, str], dict] | None = None):
        self.health = health
        self.metrics = metrics
        self.models = models or (lambda: [])
        self.pending = pending or (lambda: [])
        self.label_action = label_action


def _make_handler(routes: Routes):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgecl"

        def log_message(self, fmt, *args):  # route access logs to logging at debug level
            log.debug("http: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self):  # noqa: N802 (http.server naming)
            path = self.path.split("?")[0]
            if path == "/healthz":
                self._json(200, routes.health())
            elif path == "/metrics" and routes.metrics is not None:
                self._send(200, routes.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/api/models":
                self._json(200, routes.models())
            elif path == "/api/labels/pending":
                self._json(200, routes.pending())
            elif path in ("/", "/dashboard"):
                self._send(200, DASHBOARD.encode(), "text/html; charset=utf-8")
            else:
                self._json(404, {"error": f"no such path: {path}"})

        def do_POST(self):  # noqa: N802
            parts = self.path.strip("/").split("/")
            if (len(parts) == 4 and parts[:2] == ["api", "labels"] and parts[3] in ("accept", "reject")
                    and routes.label_action is not None):
                try:
                    self._json(200, routes.label_action(parts[2], parts[3]))
                except KeyError:
                    self._json(404, {"error": f"no pending label {parts[2]}"})
            else:
                self._json(404, {"error": f"no such path: {self.path}"})

    return Handler


class StatusServer:
    """The HTTP server thread.

    Args:
        routes: what to serve.
        host: bind address (127.0.0.1 by default: not reachable from the network).
        port: TCP port (0 picks a free one; see :attr:`port` after :meth:`start`).
    """

    def __init__(self, routes: Routes, host: str = "127.0.0.1", port: int = 8765):
        self.routes = routes
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            OSError: the port is taken or the address is invalid.
        """
        self._httpd = ThreadingHTTPServer((self.host, self.port), _make_handler(self.routes))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgecl-http",
                                        daemon=True)
        self._thread.start()
        log.info("serving http://%s:%d/ (healthz, metrics, api)", self.host, self.port)

    def stop(self) -> None:
        """Shut the server down."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
