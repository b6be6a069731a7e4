"""Every reference in README.md and docs/*.md resolves for a reader who has only the repository.

A clone of the repository is all a reader has, so the documents must not point at anything else:

* numbers of our issue tracker ("issue 8", "issues 3/4", a bare "#12"): a reader cannot open them.
  Upstream references name their repository (``apache/beam#32895``) and are allowed;
* relative links (``[text](path)``) to files that are not in the repository, or that leave it
  (``../shared/...``), and ``#anchors`` that match no heading of the target document;
* backticked repository paths (```pipelines/windows.py```) whose file or folder is not tracked;
* placeholders: "to be filled", "TBD", "FIGURE:", and the design notes that live outside the
  repository ("DESIGN.md", "../shared/").

It also keeps the solution design's promise to its readers: under 4,000 words before the
appendices (``body_words``; run ``python -m tests.unit.test_docs_references`` to print the count).

The checker is tested on planted bad references first, so a green run means something.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SOLUTION_DESIGN = REPO / "docs" / "solution-design.md"
BODY_WORD_LIMIT = 4000

#: Paths that a command writes and the repository never holds (git-ignored on purpose). A backticked
#: path under one of these is where a reader finds a command's output, not a broken reference.
GENERATED = ("bench/results/",)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ISSUE_WORD = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
# A bare "#123": not an upstream "owner/repo#123", not an HTML entity "&#123;", not a URL fragment.
_BARE_NUMBER = re.compile(r"(?<![\w&/#.-])#\d+(?![\w-])")
_QUALIFIED_NUMBER = re.compile(r"[\w.-]+/[\w.-]+#\d+\b")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_PLACEHOLDERS = (
    (re.compile(r"to be filled", re.IGNORECASE), "placeholder 'to be filled'"),
    (re.compile(r"\bTBD\b"), "placeholder 'TBD'"),
    (re.compile(r"FIGURE:"), "placeholder 'FIGURE:'"),
    (re.compile(r"\.\./shared/"), "a path outside the repository ('../shared/')"),
    (re.compile(r"\bDESIGN\.md\b"), "'DESIGN.md' is not in the repository (the design page is docs/design.md)"),
)


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# ----------------------------------------------------------------------------------- the repository
@functools.lru_cache(maxsize=8)
def tracked_paths(repo: Path = REPO) -> set[str]:
    """Every file of the repository (tracked, or new and not ignored) and every folder that holds
    one, repository-relative ('a/b.py', 'a/'). Git-ignored files (`bench/results/`, `.venv/`) are
    not in it."""
    try:
        # tracked files, and new files not yet committed but not ignored either
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:  # not a git work tree (an unpacked archive): what is on disk is the repository
        files = [p.relative_to(repo).as_posix() for p in repo.rglob("*")
                 if p.is_file() and ".git" not in p.parts and "node_modules" not in p.parts
                 and ".venv" not in p.parts]
    paths = set(files)
    for f in files:
        parts = f.split("/")
        for i in range(1, len(parts)):
            paths.add("/".join(parts[:i]) + "/")
    return paths


def headings_anchors(text: str) -> set[str]:
    """GitHub's anchors for a Markdown text: one per heading (duplicates get -1, -2), plus explicit
    ``<a id=...>``/``<a name=...>`` targets."""
    anchors: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    seen: dict[str, int] = {}
    for line in _outside_fences(text):
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line[1])
        if not m:
            continue
        title = re.sub(r"`([^`]*)`", r"\1", m.group(1))
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        anchors.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return anchors


# ----------------------------------------------------------------------------------- the checker
def _outside_fences(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line not inside a fenced code block."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if re.match(r"^ {0,3}" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence), line):
                fence = None
            continue
        out.append((n, line))
    return out


def _looks_like_repo_path(span: str, top_level: set[str]) -> str | None:
    """The repository-relative path a code span names, or None when the span is not a path of ours
    (a command, a topic, a lake path, a placeholder, a glob)."""
    s = span.strip()
    if not s or re.search(r"\s|[<>*{}$|=?\[\]()]", s) or "://" in s or s.startswith(("-", "~")):
        return None
    s = re.sub(r"(?:::\w+|:\d+(?:-\d+)?)$", "", s)  # pytest node ids, line numbers
    s = s[2:] if s.startswith("./") else s
    first = s.split("/")[0]
    if "/" in s:
        return s if (first + "/") in top_level else None
    return s if s in top_level else None  # a top-level file (`setup.py`); `sensors.json` is prose


def check_text(text: str, where: Path, repo: Path = REPO, tracked: set[str] | None = None) -> list[Problem]:
    """All unresolved references in one Markdown text that lives at ``where`` inside ``repo``."""
    tracked = tracked_paths(repo) if tracked is None else tracked
    top_level = {p.split("/")[0] + ("/" if "/" in p else "") for p in tracked}
    rel = where.relative_to(repo).as_posix() if where.is_absolute() else where.as_posix()
    problems: list[Problem] = []

    for n, line in enumerate(text.splitlines(), 1):  # everywhere, code blocks included
        for rx, what in _PLACEHOLDERS:
            if rx.search(line):
                problems.append(Problem(rel, n, what))
        for m in _ISSUE_WORD.finditer(line):
            problems.append(Problem(rel, n, f"tracker reference '{m.group(0)}': a reader of the "
                                            "repository cannot open it; say what it means instead"))

    for n, line in _outside_fences(text):
        for m in _BARE_NUMBER.finditer(_QUALIFIED_NUMBER.sub("", _LINK_TARGET.sub("]()", line))):
            problems.append(Problem(rel, n, f"tracker reference '{m.group(0)}' (name the upstream "
                                            "repository, e.g. apache/beam#123, or drop it)"))
        prose = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for rx in (_LINK, _IMAGE):
            for m in rx.finditer(prose):
                problems.extend(_check_link(m.group(1), where, repo, tracked, rel, n))
        for m in _CODE_SPAN.finditer(line):
            path = _looks_like_repo_path(m.group(2), top_level)
            if path is None or path.startswith(GENERATED):
                continue
            if path not in tracked and (path.rstrip("/") + "/") not in tracked:
                problems.append(Problem(rel, n, f"`{path}` is not in the repository"))
    return problems


def _check_link(target: str, where: Path, repo: Path, tracked: set[str], rel: str, n: int) -> list[Problem]:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
        return []
    path_part, _, anchor = target.partition("#")
    path_part = path_part.split("?")[0]
    base = where.parent if where.is_absolute() else (repo / where).parent
    if path_part:
        resolved = (base / path_part).resolve()
        try:
            inside = resolved.relative_to(repo.resolve()).as_posix()
        except ValueError:
            return [Problem(rel, n, f"link '{target}' leaves the repository")]
        if inside not in tracked and (inside.rstrip("/") + "/") not in tracked:
            return [Problem(rel, n, f"link '{target}' names a file that is not in the repository")]
        target_file = resolved
    else:
        target_file = where if where.is_absolute() else repo / where
    if anchor and target_file.suffix == ".md":
        text = target_file.read_text(encoding="utf-8") if target_file.exists() else ""
        if anchor not in headings_anchors(text):
            return [Problem(rel, n, f"link '{target}': no heading with the anchor '#{anchor}'")]
    return []


# ----------------------------------------------------------------------------------- word count
def body_words(path: Path = SOLUTION_DESIGN) -> int:
    """Words of the solution design before its first appendix, diagrams and code blocks excluded
    (tables and headings count): what a reader reads before the evidence."""
    words = 0
    for _, line in _outside_fences(path.read_text(encoding="utf-8")):
        if re.match(r"^#{1,6}\s+Appendix", line):
            break
        line = re.sub(r"<!--.*?-->", " ", line)
        words += sum(1 for tok in line.split() if re.search(r"[A-Za-z0-9]", tok))
    return words


# ----------------------------------------------------------------------------------- the checker's own tests
@pytest.fixture()
def sample_repo(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "windows.py").write_text("")
    (tmp_path / "docs" / "results.md").write_text("# Results\n\n## Pipeline throughput\n\ntext\n")
    (tmp_path / "setup.py").write_text("")
    return tmp_path


def _sample(sample_repo, text: str) -> list[Problem]:
    doc = sample_repo / "docs" / "guide.md"
    doc.write_text(text)
    tracked = {"docs/", "docs/results.md", "docs/guide.md", "pipelines/", "pipelines/windows.py", "setup.py"}
    return check_text(text, doc, sample_repo, tracked)


GOOD_SAMPLE = """# Guide

## 1. Guide

See [results](results.md#pipeline-throughput), [this page](#guide), [the repo](../setup.py),
[a numbered heading](#1-guide),
`pipelines/windows.py`, `setup.py`, `bench/results/` (generated), upstream apache/beam#32895,
a topic `sensors/#`, a lake path `raw/readings/date=D/`, a command `make test`, https://example.com/x#12,
and `raw/sensors/version=<UTC>/sensors.json`.

```python
x = {"a": 1}  # a comment with #1 in code is not a tracker reference
```
"""

PLANTED = {
    "see issue 8 for details": "tracker reference 'issue 8'",
    "resolved in issues 3/4": "tracker reference 'issues 3'",
    "fixed by #12 last week": "tracker reference '#12'",
    "(see #7)": "tracker reference '#7'",
    "[design](../../shared/DESIGN.md)": "leaves the repository",
    "[design](../shared/notes.md)": "'../shared/'",
    "[gone](missing.md)": "not in the repository",
    "[anchor](results.md#no-such-heading)": "no heading with the anchor",
    "the job `pipelines/reprocess.py` re-parses": "`pipelines/reprocess.py` is not in the repository",
    "value: to be filled": "to be filled",
    "owner: TBD": "TBD",
    "<!-- FIGURE: pipeline_events_per_s -->": "FIGURE:",
    'DESIGN.md "Message contract"': "DESIGN.md",
}


def test_a_clean_sample_has_no_problems(sample_repo):
    assert _sample(sample_repo, GOOD_SAMPLE) == []


@pytest.mark.parametrize("planted", list(PLANTED), ids=list(PLANTED))
def test_a_planted_bad_reference_is_reported_with_its_line(sample_repo, planted):
    problems = _sample(sample_repo, GOOD_SAMPLE + "\nMore text.\n" + planted + "\n")
    assert problems, f"the checker missed: {planted!r}"
    assert any(PLANTED[planted] in p.message for p in problems), [str(p) for p in problems]
    bad_line = (GOOD_SAMPLE + "\nMore text.\n").count("\n") + 1
    assert {p.line for p in problems} == {bad_line}


def test_github_anchors_follow_githubs_rules():
    text = "# A `code` Title: with (punctuation)!\n## Same\n## Same\n```\n# not a heading\n```\n"
    assert headings_anchors(text) == {"a-code-title-with-punctuation", "same", "same-1"}


def test_words_before_the_appendices_are_counted_without_diagrams(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\none two three\n\n```mermaid\nflowchart LR\n a --> b\n```\n| a | b |\n"
                   "<!-- hidden words -->\n## Appendix A. Evidence\nmany more words here\n")
    assert body_words(doc) == 1 + 3 + 2  # "# T" counts T; the table counts a and b


# ----------------------------------------------------------------------------------- the real documents
@pytest.mark.parametrize("doc", DOCUMENTS, ids=[d.relative_to(REPO).as_posix() for d in DOCUMENTS])
def test_document_references_resolve(doc):
    problems = check_text(doc.read_text(encoding="utf-8"), doc)
    assert not problems, "unresolved references:\n" + "\n".join(map(str, problems))


def test_solution_design_answers_in_under_4000_words_before_its_appendices():
    words = body_words()
    assert words < BODY_WORD_LIMIT, (f"docs/solution-design.md has {words} words before its first "
                                     f"'## Appendix' heading; keep the answers under {BODY_WORD_LIMIT} "
                                     "and move evidence to the appendices")


if __name__ == "__main__":
    print(f"{SOLUTION_DESIGN.relative_to(REPO)}: {body_words()} words before the appendices "
          f"(limit {BODY_WORD_LIMIT})")
    sys.exit(0)
