"""The data catalogue: ``<lake>/_catalog/catalog.json`` (a Frictionless Data Package) and ``index.html``.

* :mod:`sensorlake.catalog.build` collects what a data consumer needs to know about each dataset
  (schema with descriptions and units, partitioning, rows, bytes, time coverage, freshness, sample
  queries), the sensor registry and every sensor's quality over the last 24 hours;
* :mod:`sensorlake.catalog.page` renders that descriptor as one self-contained HTML page;
* :mod:`sensorlake.catalog.serve` serves both on 127.0.0.1 and rebuilds them periodically.

``datapackage.schema.json`` (next to this file) is the JSON Schema every catalogue is validated
against before it is written: the Frictionless Data Package v2 structure (the part we use) plus
our ``sensorlake:*`` extension properties.
"""

from sensorlake.catalog.build import CatalogError, build_catalog, validate_catalog, write_catalog

__all__ = ["CatalogError", "build_catalog", "validate_catalog", "write_catalog"]
