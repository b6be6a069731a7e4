"""Renders the catalogue descriptor as one self-contained HTML page (no network: inline CSS, JS, SVG)."""

from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable

BADGE_COLOURS = {
    "ok": "#1a7f37", "degraded": "#b08800", "bad": "#cf222e", "missing": "#6e7781", "unregistered": "#8250df",
    "no data": "#6e7781", "warn": "#b08800", "error": "#cf222e", "not monitored": "#57606a",
}

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); margin: 0; }
header { background: #0d1117; color: #f0f6fc; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #9198a1; }
main { padding: 8px 28px 40px; max-width: 1400px; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 28px; }
h3 { margin: 0 0 6px; font-size: 17px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px;
         font-weight: 600; white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; background: #fff; }
.card b { font-size: 20px; display: block; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.dataset { border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px; margin: 14px 0; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
      overflow-x: auto; white-space: pre-wrap; margin: 4px 0 10px; }
details summary { cursor: pointer; color: #0969da; margin: 6px 0; }
svg.spark { display: block; background: var(--bg); border-radius: 3px; }
input[type=search] { padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; width: 260px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
"""

JS = """
(function () {
  "use strict";
  function ago(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }
  document.querySelectorAll("[data-time]").forEach(function (el) {
    var t = Date.parse(el.getAttribute("data-time"));
    if (!isNaN(t)) {
      el.setAttribute("title", el.getAttribute("data-time"));
      el.textContent = ago(Math.max(0, (Date.now() - t) / 1000));
    }
  });
  var filter = document.getElementById("sensor-filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var q = filter.value.toLowerCase();
      document.querySelectorAll("#sensors tbody tr").forEach(function (row) {
        row.style.display = row.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
      });
    });
  }
  document.body.setAttribute("data-ready", "1");
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def badge(status: str | None) -> str:
    status = status or "no data"
    return f'<span class="badge" style="background:{BADGE_COLOURS.get(status, "#57606a")}">{_e(status)}</span>'


def _fmt_num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if not v.is_integer() else f"{v:.0f}"
    return f"{v:,}"


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _time(iso: str | None) -> str:
    return "–" if not iso else f'<span data-time="{_e(iso)}">{_e(iso)}</span>'


def sparkline(values: list[float | None], width: int = 260, height: int = 44, lo: float | None = None,
              hi: float | None = None, colour: str = "#0969da", label: str = "") -> str:
    """An inline SVG line of ``values`` (None = gap), one x step per value."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    title = f"<title>{_e(label)}</title>"
    if not present:
        return (f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{_e(label)}">'
                f'{title}<text x="6" y="{height // 2 + 4}" font-size="11" fill="#59636e">no data</text></svg>')
    lo = min(present) if lo is None else lo
    hi = max(present) if hi is None else hi
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    n = max(len(values) - 1, 1)
    pad, labels = 3, 36  # the scale is written in the right margin

    def xy(i: int, v: float) -> str:
        x = pad + (width - pad - labels) * i / n
        y = pad + (height - 2 * pad) * (1 - (v - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(xy(i, v))
    shapes = []
    for run in runs:
        if len(run) == 1:
            x, y = run[0].split(",")
            shapes.append(f'<circle cx="{x}" cy="{y}" r="1.2" fill="{colour}"/>')
        elif run:
            shapes.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{" ".join(run)}"/>')
    scale = (f'<text x="{width - 3}" y="10" font-size="9" text-anchor="end" fill="#59636e">{_e(_fmt_num(hi, 2))}</text>'
             f'<text x="{width - 3}" y="{height - 3}" font-size="9" text-anchor="end" fill="#59636e">'
             f'{_e(_fmt_num(lo, 2))}</text>')
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_e(label)}">{title}{"".join(shapes)}{scale}</svg>')


def _rows(cells: Iterable[Iterable[str]]) -> str:
    return "".join("<tr>" + "".join(cells_) + "</tr>" for cells_ in cells)


def _sensors_section(quality: dict) -> str:
    rows = []
    for s in quality["sensors"]:
        unit = s.get("unit") or ""
        rng = ("–" if s.get("rangeMin") is None else f"{_fmt_num(s['rangeMin'])} .. {_fmt_num(s['rangeMax'])} {unit}")
        minutes = ", ".join(f"{k} {v}" for k, v in s.get("statusMinutes", {}).items()) or "–"
        rows.append([
            f'<td data-status="{_e(s["status"])}">{badge(s["status"])}</td>',
            f'<td><b>{_e(s["sensorId"])}</b><br><span class="muted">{_e(s["description"])}</span></td>',
            f"<td>{_e(s.get('type') or '–')}<br>{_e(rng)}</td>",
            f'<td class="num">{_fmt_pct(s["completeness"])}</td>',
            f'<td class="num">{_fmt_pct(s["rangeValidity"])}</td>',
            f"<td>{_time(s['lastSeen'])}<br>{badge(s['lastStatus']) if s.get('lastStatus') else ''}</td>",
            "<td>" + sparkline(s["series"]["mean"], label=f"sensor {s['sensorId']}: 1-minute mean, last 24 h") + "</td>",
            "<td>" + sparkline(s["series"]["completeness"], lo=0, hi=1, colour="#1a7f37",
                               label=f"sensor {s['sensorId']}: completeness per minute, last 24 h") + "</td>",
            f'<td class="muted">{_e(minutes)}</td>',
        ])
    t = quality["thresholds"]
    return f"""
<h2 id="sensor-quality">Sensors: quality over the last 24 hours</h2>
<p class="muted">Window {_e(quality['window']['start'])} to {_e(quality['window']['end'])}, one point per minute.
Badge: the per-minute status rule applied to the 24-hour totals (ok: completeness &ge; {t['okCompleteness']} and range validity &ge;
{t['okRangeValidity']}; bad: completeness &lt; {t['badCompleteness']} or validity &lt; {t['badRangeValidity']};
missing: nothing received). The last-minute status is under "last seen".</p>
<p><input type="search" id="sensor-filter" placeholder="Filter sensors" aria-label="Filter sensors"></p>
<table id="sensors">
<thead><tr><th>status (24 h)</th><th>sensor</th><th>type / valid range</th><th>completeness</th>
<th>range validity</th><th>last seen / last minute</th><th>1-minute mean</th><th>completeness per minute</th>
<th>minutes by status</th></tr></thead>
<tbody>{_rows(rows)}</tbody></table>"""


def _schema_table(fields: list[dict]) -> str:
    rows = [[f"<td><code>{_e(f['name'])}</code></td>",
             f"<td>{_e(f['type'])}{' (' + _e(f['format']) + ')' if f.get('format') else ''}"
             f"{'' if f.get('constraints', {}).get('required') else ' <span class=muted>nullable</span>'}</td>",
             f"<td>{_e(f.get('sensorlake:unit') or '')}</td>", f"<td>{_e(f.get('description'))}</td>"]
            for f in fields]
    return ("<table><thead><tr><th>column</th><th>type</th><th>unit</th><th>description</th></tr></thead>"
            f"<tbody>{_rows(rows)}</tbody></table>")


def _dataset_section(r: dict) -> str:
    part = r["sensorlake:partitioning"]
    cov = r["sensorlake:coverage"]
    fresh = r["sensorlake:freshness"]
    owner = r["sensorlake:owner"]
    keys = ", ".join(f"{k['name']} ({k['type']})" for k in part["keys"])
    thresholds = ("" if fresh["warnAfterSeconds"] is None else
                  f" &middot; warn after {fresh['warnAfterSeconds']} s, error after {fresh['errorAfterSeconds']} s")
    queries = "".join(f"<p class=muted>{_e(q['title'])}</p><pre><code>{_e(q['sql'])}</code></pre>"
                      for q in r["sensorlake:sampleQueries"])
    return f"""
<section class="dataset" id="dataset-{_e(r['name'])}" data-dataset="{_e(r['name'])}">
<h3>{_e(r['title'])} &nbsp;<code>{_e(r['sensorlake:view'])}</code> {badge(fresh['status'])}</h3>
<p>{_e(r['description'])}</p>
<dl class="facts">
<dt>SQL view</dt><dd><code>{_e(r['sensorlake:view'])}</code> in <code>sensorlake sql</code></dd>
<dt>files</dt><dd><code>{_e(part['glob'])}</code> ({_e(r['format'])})</dd>
<dt>partitioning</dt><dd>Hive: {_e(keys)} &middot; {part['partitions']:,} partitions, {part['files']:,} files</dd>
<dt>rows</dt><dd>{r['sensorlake:rows']:,} (as stored in the files)</dd>
<dt>size</dt><dd>{_e(_fmt_bytes(r['bytes']))}</dd>
<dt>time coverage</dt><dd><code>{_e(cov['column'])}</code>: {_e(cov['earliest'] or '–')} &rarr; {_e(cov['latest'] or '–')}</dd>
<dt>freshness</dt><dd>{badge(fresh['status'])} newest data {_time(fresh['latest'])}{thresholds}</dd>
<dt>owner / contact</dt><dd>{_e(owner['title'])} &middot; <a href="mailto:{_e(owner['email'])}">{_e(owner['email'])}</a></dd>
</dl>
<details><summary>Schema ({len(r['schema']['fields'])} columns, key {_e(', '.join(r['schema'].get('primaryKey', [])))})</summary>
{_schema_table(r['schema']['fields'])}</details>
<details open><summary>Sample queries</summary>{queries}</details>
</section>"""


def _registry_section(registry: dict) -> str:
    rows = [[f"<td><b>{_e(s['sensor_id'])}</b></td>", f"<td>{_e(s['description'])}</td>", f"<td>{_e(s['type'])}</td>",
             f"<td>{_e(s['unit'])}</td>", f"<td class=num>{_fmt_num(s['range_min'])} .. {_fmt_num(s['range_max'])}</td>",
             f"<td class=num>{_fmt_num(s['interval_ms'])}</td>",
             f"<td class=num>{_fmt_num(s.get('lat'), 4)}, {_fmt_num(s.get('lng'), 4)}</td>"]
            for s in registry["sensors"]]
    versions = "".join(
        f"<li><code>{_e(v['version'])}</code>: {len(v['sensorIds'])} sensors ({_e(', '.join(v['sensorIds']))})"
        f"{' <b>invalid: ' + _e(v['error']) + '</b>' if v.get('error') else ''} &middot; <code>{_e(v['path'])}</code></li>"
        for v in reversed(registry["versions"]))
    return f"""
<h2 id="registry">Sensor registry</h2>
<p class="muted">The newest version (view <code>sensors</code>); every version the pipeline saw is kept.</p>
<table id="registry-table"><thead><tr><th>sensor</th><th>description</th><th>type</th><th>unit</th>
<th>valid range</th><th>interval (ms)</th><th>location</th></tr></thead><tbody>{_rows(rows)}</tbody></table>
<details><summary>{len(registry['versions'])} registry versions</summary><ul>{versions}</ul></details>"""


def render_page(doc: dict) -> str:
    quality = doc["sensorlake:quality"]
    statuses: dict[str, int] = {}
    for s in quality["sensors"]:
        statuses[s["status"]] = statuses.get(s["status"], 0) + 1
    owner = doc["contributors"][0]
    cards = [f'<div class="card"><b>{len(doc["resources"])}</b>datasets</div>',
             f'<div class="card"><b>{len(quality["sensors"])}</b>sensors</div>']
    cards += [f'<div class="card"><b>{n}</b>{badge(st)}</div>' for st, n in sorted(statuses.items())]
    nav = " &middot; ".join(f'<a href="#dataset-{_e(r["name"])}">{_e(r["sensorlake:view"])}</a>' for r in doc["resources"])
    datasets = "".join(_dataset_section(r) for r in doc["resources"])
    how = "".join(f"<p class=muted>{_e(q['title'])}</p><pre><code>{_e(q['sql'])}</code></pre>"
                  for q in doc.get("sensorlake:howToQuery", []))
    # The descriptor is embedded too (not fetched: the page must work from file://).
    embedded = json.dumps({"name": doc["name"], "created": doc["created"],
                           "resources": [r["name"] for r in doc["resources"]]}).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(doc['title'])} &mdash; data catalogue</title>
<style>{CSS}</style>
</head>
<body data-generated="{_e(doc['created'])}">
<header>
<h1>{_e(doc['title'])}</h1>
<p>Data catalogue built {_e(doc['created'])} from <code>{_e(doc.get('sensorlake:lake', ''))}</code> &middot;
owner {_e(owner.get('title'))} &middot; <a style="color:#9198a1" href="mailto:{_e(owner.get('email'))}">{_e(owner.get('email'))}</a>
&middot; machine-readable: <a style="color:#9198a1" href="catalog.json">catalog.json</a> (Frictionless Data Package)</p>
</header>
<main>
<p>{_e(doc['description'])}</p>
<div class="cards">{''.join(cards)}</div>
{_sensors_section(quality)}
<h2 id="datasets">Datasets</h2>
<p>{nav}</p>
{datasets}
{_registry_section(doc['sensorlake:registry'])}
<h2 id="how-to-query">How to query</h2>
{how}
</main>
<script type="application/json" id="catalog-summary">{embedded}</script>
<script>{JS}</script>
</body>
</html>
"""
