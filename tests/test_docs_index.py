"""Docs as code: every page's headings are anchors, and every reference to one exists.

Pages of `docs/` have unnumbered headings; code, docstrings, notebooks, the README and the pages
themselves cite a section by the GitHub anchor of its heading, `docs/choices.md#seeds-per-stage`
(inside `docs/`, a Markdown link `[Seeds per stage](choices.md#seeds-per-stage)`). These tests
compute the anchors as GitHub does (lower case, punctuation dropped, spaces to hyphens, `-1`,
`-2`, ... for repeats; headings inside code blocks do not count) and check that

- the docs index (`docs/README.md`) links every page, and every top-level (`##`) section of every
  page, and nothing else: no page or anchor that does not exist, no section below `##`;
- every `docs/<page>.md#anchor` reference in any scanned file, and every Markdown link with an
  anchor in the README and `docs/` (`X.md#anchor`, `#anchor` on the same page), points at a heading;
- no old numbered reference (`choices.md` followed by a section sign and a number) remains,
  file type by file type (Markdown, code, notebooks).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest

from tests.test_docs import DOCS, FILES, MARKDOWN_LINK, ROOT, file_text

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# "docs/choices.md#seeds-per-stage", not preceded by a path character (so "x/docs/..." is not one)
ANCHOR_REFERENCE = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_-]+\.md)#([\w-]+)")
_SIGN = "\u00a7"  # the section sign, written so that this file's own patterns do not match it
OLD_REFERENCE = re.compile(rf"(?<![\w.-])(?:docs/)?([A-Za-z0-9_-]+\.md)\s*{_SIGN}\s*[A-Z]?\d")
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md")


# ------------------------------------------------------------------------------- anchors
def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def parse_headings(text: str) -> list[tuple[int, str, str]]:
    """(level, heading text, anchor) of every heading outside code blocks, repeats suffixed."""
    out, seen, in_code = [], {}, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = HEADING.match(line)
        if in_code or not match:
            continue
        base = github_anchor(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append((len(match.group(1)), match.group(2), base if n == 0 else f"{base}-{n}"))
    return out


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    return frozenset(a for _, _, a in parse_headings(page.read_text(encoding="utf-8")))


def anchor_problems(text: str, here: Path | None, docs: Path = DOCS) -> list[str]:
    """Every anchor reference in `text` that points at no heading.

    `docs/<page>.md#a` counts everywhere; when `here` is a Markdown file, its links `[t](X.md#a)`
    and `[t](#a)` too (relative to `here`'s folder).
    """
    problems = []
    for m in ANCHOR_REFERENCE.finditer(text):
        page, anchor = docs / m.group(1), m.group(2)
        if not page.is_file():
            problems.append(f"{m.group(0)}: docs/{m.group(1)} does not exist")
        elif anchor not in anchors(page):
            problems.append(f"{m.group(0)}: docs/{m.group(1)} has no heading with anchor #{anchor}")
    if here is not None and here.suffix == ".md":
        for m in MARKDOWN_LINK.finditer(text):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or "#" not in target:
                continue
            path, _, anchor = target.partition("#")
            page = (here.parent / path).resolve() if path else here
            if page.suffix == ".md" and page.is_file() and anchor not in anchors(page):
                problems.append(f"link {target!r}: {path or here.name} has no heading #{anchor}")
    return problems


# ---------------------------------------------------------------------------------- tests
def test_every_page_has_headings_and_unique_anchors():
    assert PAGES
    for page in PAGES:
        found = parse_headings(page.read_text(encoding="utf-8"))
        assert found and found[0][0] == 1, f"{page.name}: no title heading"
        assert not any(re.match(r"§?[A-Z]?\d+(\.\d+)*[.:]?\s", h) for _, h, _ in found), (
            f"{page.name}: a numbered heading; headings carry no numbers (cite their anchors)")
        bases = [github_anchor(h) for _, h, _ in found]
        repeated = sorted({b for b in bases if bases.count(b) > 1})
        assert not repeated, f"{page.name}: headings with the same anchor {repeated}"


def test_the_docs_index_lists_every_page_and_top_level_section_and_nothing_else():
    index = DOCS / "README.md"
    text = index.read_text(encoding="utf-8")
    linked_pages, linked_sections = set(), set()
    for m in MARKDOWN_LINK.finditer(text):
        path, _, anchor = m.group(1).partition("#")
        assert path and not re.match(r"[a-z]+:", path), f"docs/README.md: link {m.group(1)!r}"
        assert (DOCS / path).is_file(), f"docs/README.md links {path}, which does not exist"
        linked_pages.add(path)
        if anchor:
            linked_sections.add((path, anchor))
    pages = {p.name for p in PAGES}
    assert linked_pages == pages, (
        f"docs/README.md: pages not listed {sorted(pages - linked_pages)}, "
        f"listed but not pages {sorted(linked_pages - pages)}")
    top = {(p.name, a) for p in PAGES
           for level, _, a in parse_headings(p.read_text(encoding="utf-8")) if level == 2}
    assert not top - linked_sections, (
        f"docs/README.md does not list {sorted(top - linked_sections)}")
    assert not linked_sections - top, (
        f"docs/README.md lists what is not a top-level section: {sorted(linked_sections - top)}")


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _by_type(kind: str) -> list[Path]:
    return [p for p in FILES if p.suffix == f".{kind}"]


@pytest.mark.parametrize("path", FILES, ids=_label)
def test_every_anchor_reference_points_at_a_heading(path):
    problems = anchor_problems(file_text(path), path)
    assert not problems, f"{_label(path)}:\n" + "\n".join(problems)


def _old_style(path: Path) -> list[str]:
    text = file_text(path)
    pages = {p.name for p in DOCS.glob("*.md")}
    return [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
            for m in OLD_REFERENCE.finditer(text) if m.group(1) in pages]


@pytest.mark.parametrize("kind", ["md", "py", "ipynb"])
def test_no_numbered_reference_remains(kind):
    found = [f"{_label(p)} {hit}" for p in _by_type(kind) for hit in _old_style(p)]
    assert _by_type(kind), f"no .{kind} file scanned"
    assert not found, "numbered section references; cite the heading's anchor:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "choices.md").write_text(
        "# Choices\n\n## Part one\n\n### Seeds per stage\n\n### The `cpu` model: O' of C_Tr\n\n"
        "### Repeat\n\n### Repeat\n\n```\n### Inside a code block\n```\n", encoding="utf-8")
    page = docs / "choices.md"
    assert [a for _, _, a in parse_headings(page.read_text())] == [
        "choices", "part-one", "seeds-per-stage", "the-cpu-model-o-of-c_tr", "repeat", "repeat-1"]
    d = "do" + "cs/"  # references that must fail, kept from failing this file's own scan

    def problems(text: str, here: Path | None = None) -> list[str]:
        anchors.cache_clear()
        return anchor_problems(text, here, docs)

    assert not problems(f"see {d}choices.md#seeds-per-stage and {d}choices.md#repeat-1.")
    assert problems(f"see {d}choices.md#seeds")
    assert problems(f"see {d}choices.md#inside-a-code-block")
    assert problems(f"see {d}missing.md#seeds-per-stage")
    assert not problems("[x](choices.md#part-one), [y](#seeds-per-stage)", page)
    assert problems("[x](choices.md#part-two)", page)
    assert problems("[y](#part-two)", page)
    assert not problems("[y](#part-two)")  # outside Markdown a bare link is not read
    old = "choices.md " + _SIGN
    assert OLD_REFERENCE.search(f"({d}{old}31)") and OLD_REFERENCE.search(f"[{old}S7](choices.md)")
    assert not OLD_REFERENCE.search(f"({d}choices.md#seeds-per-stage; paper {_SIGN}5)")
    anchors.cache_clear()
