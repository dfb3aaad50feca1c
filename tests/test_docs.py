"""The documentation holds together: no page over :data:`MAX_PAGE_LINES` lines, every relative
link and ``#anchor`` between pages resolves, and every page under ``docs/`` the code, tests and
benchmarks name exists."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_PAGE_LINES = 300
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, letters, digits, spaces → hyphens."""
    text = heading.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings (repeated ones numbered as GitHub numbers them)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            name = slug(match.group(1))
            count = seen.get(name, 0)
            found.add(name if count == 0 else f"{name}-{count}")
            seen[name] = count + 1
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or anchor does not exist."""
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_anchor_rule_follows_github() -> None:
    assert slug("Paper vs the authors' code") == "paper-vs-the-authors-code"
    assert slug("`--sigma auto` on JPEGs") == "--sigma-auto-on-jpegs"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_is_short_and_its_links_resolve(page: Path) -> None:
    lines = len(page.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_PAGE_LINES, f"{page.name}: {lines} lines"
    assert not broken_links(page)


def test_every_docs_page_the_code_names_exists() -> None:
    sources = [*ROOT.glob("deeprestore/**/*.py"), *ROOT.glob("tests/*.py"),
               *ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.sh"), *ROOT.glob("examples/*.py")]
    missing = sorted({f"{source.relative_to(ROOT)}: {name}" for source in sources
                      for name in re.findall(r"docs/[\w/.-]+?\.md", source.read_text())
                      if not (ROOT / name).exists()})
    assert not missing
