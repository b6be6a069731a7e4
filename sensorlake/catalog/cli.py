"""`sensorlake catalog build|serve`."""

from __future__ import annotations

import signal
import sys
import time

HELP = "Build or serve the data catalogue (<lake>/_catalog/catalog.json and index.html)."
DESCRIPTION = HELP + """

build: describe every dataset (schema with descriptions and units, partitioning, rows, size, time
       coverage, freshness, sample queries), the sensor registry and each sensor's quality over the
       last 24 hours; catalog.json is a Frictionless Data Package, index.html a self-contained page.
serve: build, serve <lake>/_catalog on http://127.0.0.1:8088/ and rebuild every --interval seconds.

examples:
  sensorlake catalog build
  sensorlake catalog serve --interval 60"""


def configure_parser(p) -> None:
    from sensorlake.settings import ROLE_SETTINGS, Settings

    p.add_argument("action", choices=["build", "serve"], help="build once, or serve and rebuild periodically")
    p.add_argument("--interval", type=float, default=None,
                   help="serve: seconds between rebuilds [env SENSORLAKE_CATALOG_INTERVAL_S, default 60]")
    Settings.add_arguments(p, ROLE_SETTINGS["catalog"])


def run(args) -> int:
    from sensorlake.catalog.build import CATALOG_DIR, CatalogError, write_catalog
    from sensorlake.catalog.serve import CatalogServer
    from sensorlake.settings import Settings
    from sensorlake.sql import local_lake

    settings = Settings.from_args(args)
    local_lake(settings.lake, CatalogError, "the catalogue")  # before saying "building ..."
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.action == "build":
        started = time.monotonic()
        say(f"building the catalogue of {settings.lake} ...")
        doc = write_catalog(settings.lake, settings)
        folder = f"{doc['sensorlake:lake']}/{CATALOG_DIR}"
        print(f"wrote {folder}/catalog.json and {folder}/index.html: {len(doc['resources'])} datasets, "
              f"{len(doc['sensorlake:quality']['sensors'])} sensors ({time.monotonic() - started:.1f} s)")
        return 0
    server = CatalogServer(settings, interval=args.interval, progress=say)
    signal.signal(signal.SIGTERM, server.request_stop)
    say(f"building the catalogue of {settings.lake} ...")
    host, port = server.start()
    say(f"catalogue on http://{host}:{port}/ (rebuilt every {server.interval:g} s; Ctrl-C stops)")
    server.wait()
    return 0
