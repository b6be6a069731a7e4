"""Every ```mermaid block in docs/*.md must render with the real Mermaid.

The renderer is the pinned ``@mermaid-js/mermaid-cli`` under ``tools/mermaid`` (``npm ci`` there),
driving Debian's ``chromium`` through ``tools/mermaid/puppeteer-config.json``; puppeteer's own
browser download does not work here. A diagram with a syntax error fails its test with Mermaid's
own message and the line in the document.

Missing tools fail the test with the install instruction (a silent skip would let broken
diagrams through); set ``SENSORLAKE_SKIP_MERMAID=1`` to skip deliberately.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TOOL = REPO / "tools" / "mermaid"
MMDC = TOOL / "node_modules" / ".bin" / "mmdc"
PUPPETEER_CONFIG = TOOL / "puppeteer-config.json"
SKIP_ENV = "SENSORLAKE_SKIP_MERMAID"
RENDER_TIMEOUT_S = 120  # one browser session; generous for a loaded CI machine
INSTALL = ("Node.js >= 20 with npm (e.g. NodeSource 20.x), `apt-get install -y chromium`, then "
           "`cd tools/mermaid && PUPPETEER_SKIP_DOWNLOAD=1 npm ci`")

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*mermaid\s*$")


def mermaid_blocks(text: str) -> list[tuple[int, str]]:
    """(1-based line of the first diagram line, diagram source) for each ```mermaid fence."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            # Skip other fenced blocks whole, so a "```mermaid" inside them is not a diagram.
            other = re.match(r"^ {0,3}(`{3,}|~{3,})", lines[i])
            if other:
                close = re.compile(r"^ {0,3}" + re.escape(other.group(1)[0]) + "{%d,}\\s*$" % len(other.group(1)))
                i += 1
                while i < len(lines) and not close.match(lines[i]):
                    i += 1
            i += 1
            continue
        fence = m.group("fence")
        close = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence))
        start = i + 1
        j = start
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        blocks.append((start + 1, "\n".join(lines[start:j]) + "\n"))
        i = j + 1
    return blocks


def _doc_blocks() -> list[tuple[str, int, str]]:
    out = []
    for md in sorted(DOCS.glob("*.md")):
        for line, src in mermaid_blocks(md.read_text(encoding="utf-8")):
            out.append((md.relative_to(REPO).as_posix(), line, src))
    return out


DOC_BLOCKS = _doc_blocks()


def _require_tools() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: Mermaid diagrams not checked")
    missing = []
    if shutil.which("node") is None:
        missing.append("node")
    if not MMDC.exists():
        missing.append(f"{MMDC.relative_to(REPO)}")
    browser = None
    try:
        browser = json.loads(PUPPETEER_CONFIG.read_text())["executablePath"]
    except (OSError, ValueError, KeyError):
        missing.append(f"{PUPPETEER_CONFIG.relative_to(REPO)} with executablePath")
    if browser and not Path(browser).exists():
        missing.append(browser)
    if missing:
        pytest.fail(f"Mermaid renderer not installed (missing: {', '.join(missing)}). Install it with: "
                    f"{INSTALL}  -- or set {SKIP_ENV}=1 to skip these checks on purpose.", pytrace=False)


def _mmdc(src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MMDC), "--quiet", "--puppeteerConfigFile", str(PUPPETEER_CONFIG), "-i", str(src), "-o", str(out)],
        cwd=TOOL, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"})


def _error(proc: subprocess.CompletedProcess) -> str:
    """Mermaid's message first; the JavaScript stack trace dropped."""
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines()
             if ln.strip() and not ln.lstrip().startswith("at ")]
    return "\n".join(lines[:12]) or f"mmdc exited with {proc.returncode}"


def _svg_problem(svg_path: Path) -> str | None:
    svg = svg_path.read_text(encoding="utf-8") if svg_path.exists() else ""
    if "<svg" not in svg:
        return "mmdc wrote no SVG"
    if 'aria-roledescription="error"' in svg or "Syntax error in text" in svg:
        return "Mermaid rendered its error diagram"
    return None


def render(source: str, workdir: Path) -> tuple[bool, str]:
    """Renders one diagram to SVG with mmdc; (ok, Mermaid's error message or the SVG)."""
    src = workdir / "diagram.mmd"
    out = workdir / "diagram.svg"
    src.write_text(source, encoding="utf-8")
    proc = _mmdc(src, out)
    if proc.returncode != 0:
        return False, _error(proc)
    problem = _svg_problem(out)
    return (False, problem) if problem else (True, out.read_text(encoding="utf-8"))


def render_all(sources: list[str], workdir: Path) -> tuple[bool, list[bool], str]:
    """Renders every diagram in one browser session (mmdc's Markdown mode writes out-<n>.svg).

    Returns (whole run succeeded, per-diagram success, error message). mmdc stops at the first
    bad diagram, so after a failure the caller renders the unconfirmed ones alone to name them.
    """
    src = workdir / "all.md"
    src.write_text("".join(f"```mermaid\n{s}```\n\n" for s in sources), encoding="utf-8")
    proc = _mmdc(src, workdir / "out.md")
    ok = [_svg_problem(workdir / f"out-{i}.svg") is None for i in range(1, len(sources) + 1)]
    return proc.returncode == 0 and all(ok), ok, "" if proc.returncode == 0 else _error(proc)


@pytest.fixture(scope="module")
def docs_rendered(tmp_path_factory) -> list[bool]:
    _require_tools()
    _, ok, _ = render_all([src for _, _, src in DOC_BLOCKS], tmp_path_factory.mktemp("mermaid-docs"))
    return ok


# ---------------------------------------------------------------------- pure (no tools)
def test_blocks_are_found_with_their_line_numbers():
    text = ("# t\n\n```mermaid\nflowchart LR\n  a --> b\n```\n\n```python\n# ```mermaid\nx = 1\n```\n\n"
            "~~~~mermaid\nsequenceDiagram\n  A->>B: hi\n~~~~\n")
    assert mermaid_blocks(text) == [(4, "flowchart LR\n  a --> b\n"), (14, "sequenceDiagram\n  A->>B: hi\n")]


def test_the_solution_design_has_diagrams_to_check():
    assert any(path == "docs/solution-design.md" for path, _, _ in DOC_BLOCKS), \
        "docs/solution-design.md has no ```mermaid block"


def test_renderer_is_pinned_and_its_modules_are_not_committed():
    pkg = json.loads((TOOL / "package.json").read_text())
    for name, version in pkg["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} must be pinned exactly, got {version}"
    assert (TOOL / "package-lock.json").is_file()
    assert "node_modules/" in (TOOL / ".gitignore").read_text().split()


# ---------------------------------------------------------------------- the renderer
GOOD = "flowchart LR\n  A[MQTT] --> B[Kafka]\n"
BROKEN = "flowchart LR\n  A[MQTT] --> --> B[Kafka\n"


def test_a_broken_diagram_is_rejected_with_mermaids_error(tmp_path):
    _require_tools()
    whole, ok, message = render_all([GOOD, BROKEN], tmp_path)
    assert not whole
    assert ok == [True, False]
    assert "Parse error on line 2" in message, message


def test_a_broken_diagram_alone_is_named_with_mermaids_error(tmp_path):
    _require_tools()
    ok, message = render(BROKEN, tmp_path)
    assert not ok
    assert "Parse error on line 2" in message, message


@pytest.mark.parametrize("index", range(len(DOC_BLOCKS)),
                         ids=[f"{p}:{n}" for p, n, _ in DOC_BLOCKS])
def test_docs_diagram_renders(index, docs_rendered, tmp_path):
    if docs_rendered[index]:
        return
    path, line, source = DOC_BLOCKS[index]
    ok, message = render(source, tmp_path)  # alone, for Mermaid's own error message
    if not ok:
        pytest.fail(f"{path}:{line}: the ```mermaid block starting here does not render "
                    f"(Mermaid's line numbers count from this line):\n{message}", pytrace=False)
