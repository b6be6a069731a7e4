"""`sensorlake catalog serve`: the catalogue page on 127.0.0.1:8088, rebuilt every ``--interval`` seconds.

Standard library only (http.server). It serves ``<lake>/_catalog/`` (index.html, catalog.json) and
``/healthz`` (JSON: when the catalogue was last built, the last build error if any). A failed
rebuild is logged and the last good catalogue stays online.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from sensorlake.catalog.build import CATALOG_DIR, CatalogError, write_catalog
from sensorlake.logs import log_event
from sensorlake.settings import Settings

log = logging.getLogger("sensorlake.catalog")


class _Handler(SimpleHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.split("?")[0] == "/healthz":
            body = json.dumps(self.server.health()).encode()
            self.send_response(200 if self.server.last_built else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server signature)
        log.debug("http " + format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    last_built: str | None = None
    last_error: str | None = None
    builds: int = 0

    def health(self) -> dict:
        return {"built": self.last_built, "builds": self.builds, "lastError": self.last_error}


class CatalogServer:
    """Builds the catalogue, serves it, rebuilds it every ``interval`` seconds until stopped."""

    def __init__(self, settings: Settings, interval: float | None = None, host: str | None = None,
                 port: int | None = None, progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.interval = float(interval if interval is not None else settings.catalog_interval_s)
        if self.interval <= 0:
            raise CatalogError("--interval must be a positive number of seconds")
        self.host = host or settings.catalog_host
        self.port = settings.catalog_port if port is None else port
        self.folder = Path(settings.lake).resolve() / CATALOG_DIR
        self.progress = progress or (lambda m: None)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            self.httpd = _Server((self.host, self.port), partial(_Handler, directory=str(self.folder)))
        except OSError as exc:
            raise CatalogError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def build_once(self) -> bool:
        started = time.monotonic()
        try:
            doc = write_catalog(self.settings.lake, self.settings)
        except Exception as exc:  # noqa: BLE001 - keep serving the last good catalogue
            self.httpd.last_error = f"{type(exc).__name__}: {exc}"
            log_event(log, logging.ERROR, "catalogue build failed", error=self.httpd.last_error)
            self.progress(f"catalogue build failed: {self.httpd.last_error}")
            return False
        self.httpd.last_built, self.httpd.last_error = doc["created"], None
        self.httpd.builds += 1
        log_event(log, logging.INFO, "catalogue built", seconds=round(time.monotonic() - started, 2))
        return True

    def _rebuild_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.build_once()

    def start(self) -> tuple[str, int]:
        """Builds once, then serves and rebuilds in background threads; returns (host, port)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.build_once()
        for target in (self.httpd.serve_forever, self._rebuild_loop):
            t = threading.Thread(target=target, daemon=True, name=f"catalog-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self.address

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def request_stop(self, *_args) -> None:
        """Signal-handler friendly: wait() returns and stops the server."""
        self._stop.set()

    def wait(self) -> None:
        try:
            while not self._stop.wait(3600):
                pass
        finally:
            self.stop()
