"""The project stands alone: what its files cite is inside the repository, and it exists.

Code, docstrings, notebooks, the README and `docs/` cite the paper (section, figure, table) or a
page of `docs/`, never a file outside the repository (docs/architecture.md#packages-and-layering).
These tests scan
every tracked (or new, not ignored) text file of the packages, tests, benchmarks, notebooks, docs
and the README and check that

- no file mentions the project's private notes outside the repository (the note files' names are
  assembled at run time below, so this file does not match its own patterns);
- every page of `docs/` that is mentioned exists, and so does a heading cited after it as
  `docs/architecture.md, "Run engine"` (a heading containing those words);
- inside `docs/`, relative Markdown links resolve, to a heading when they carry an anchor;
- the docs index links every page.

Anchors (`docs/choices.md#seeds-per-stage`), the docs index's sections and the absence of old
numbered references are checked in `tests/test_docs_index.py`.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("wrapperlens", "tasks", "tinystories", "tests", "benchmarks", "notebooks", "docs",
           "README.md", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".toml", ".txt", ".cfg", ".ini", ".yaml", ".yml"}
SKIPPED_PARTS = {".venv", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}

# Files that live outside the repository; assembled so that this file does not mention them.
_NOTES, _SCALE, _DESIGN = "NO" + "TES", "CPU" + "_SCALE", "DES" + "IGN"
OUTSIDE_REFERENCE = re.compile(
    rf"\b{_NOTES}\b"  # the notes file, "<notes> §5", "<notes> E.2", "<notes>'" (not NOTES_X names)
    rf"|\b{_NOTES}\.md\b|\b{_SCALE}\b|\b{_DESIGN}\.md\b"
)

# A page path under docs/ (the prefix is optional inside docs/), then any old numbered sections
# (read past, they are tests/test_docs_index.py's), and optionally `, "Heading words"`.
DOC_REFERENCE = re.compile(
    r"(?<![\w/.-])(docs/)?([A-Za-z0-9_-]+\.md)"
    r"((?:\s*(?:,|and|to|or)?\s*§[A-Z]?\d+(?:\.\d+)*)*)"
    r"(?:,\s*\"([^\"\n]+)\")?"
)
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


# ------------------------------------------------------------------------------------ files
def scanned_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored text files under `SCANNED` (a file walk without git)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *SCANNED],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = []
        for name in SCANNED:
            top = ROOT / name
            paths.extend([top] if top.is_file() else top.rglob("*"))
    return sorted(
        p for p in set(paths)
        if p.is_file() and p.suffix in TEXT_SUFFIXES and not SKIPPED_PARTS & set(p.parts)
    )


def file_text(path: Path) -> str:
    """The text a reader sees: a notebook's cell sources and text outputs, any other file whole."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return raw
    try:
        notebook = json.loads(raw)
    except json.JSONDecodeError as err:
        raise AssertionError(f"{path.relative_to(ROOT)}: not valid notebook JSON ({err})") from None
    parts = []
    for cell in notebook.get("cells", []):
        parts.append("".join(cell.get("source", [])))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", [])))
            for value in output.get("data", {}).values():
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    parts.append("".join(value))
    return "\n".join(parts)


@lru_cache(maxsize=None)
def headings(page: Path) -> tuple[str, ...]:
    """The heading texts of a Markdown page, outside code blocks."""
    texts = []
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = HEADING.match(line)
        if in_code or not match:
            continue
        texts.append(match.group(1))
    return tuple(texts)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# ------------------------------------------------------------------------------- the checks
def outside_references(text: str) -> list[str]:
    """Each line of `text` that names a file outside the repository, with its line number."""
    return [
        f"line {n}: {line.strip()[:120]}"
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE_REFERENCE.search(line)
    ]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def doc_reference_problems(text: str, in_docs: bool, docs: Path = DOCS) -> list[str]:
    """Every reference to a `docs/` page (and its sections) in `text` that does not resolve.

    Args:
        text: The file's text.
        in_docs: The file is a page of `docs/`: references without the `docs/` prefix
            (`choices.md, "Seeds per stage"`) and relative Markdown links count too; outside
            `docs/` only a path that starts with `docs/` does.
        docs: The docs folder the references point into.
    """
    problems = []
    for match in DOC_REFERENCE.finditer(text):
        prefix, name, sections, heading = match.groups()
        if not prefix and not (in_docs and (sections or heading)):
            continue  # a bare name outside docs/ (README.md, ...) is not a docs reference
        where = f"line {_line_of(text, match.start())}: {match.group(0).strip()!r}"
        page = docs / name
        if not page.is_file():
            problems.append(f"{where}: docs/{name} does not exist")
            continue
        texts = headings(page)
        if heading and not any(heading.lower() in t.lower() for t in texts):
            problems.append(f"{where}: docs/{name} has no heading containing {heading!r}")
    if in_docs:
        for match in MARKDOWN_LINK.finditer(text):
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor of the same page
            path, _, anchor = target.partition("#")
            where = f"line {_line_of(text, match.start())}: link {target!r}"
            linked = (docs / path).resolve()
            if not linked.exists():
                problems.append(f"{where}: {path} does not exist")
            elif anchor and linked.suffix == ".md":
                if anchor not in {github_slug(t) for t in headings(linked)}:
                    problems.append(f"{where}: {path} has no heading with anchor #{anchor}")
    return problems


# ------------------------------------------------------------------------------------ tests
FILES = scanned_files()


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_scan_sees_the_packages_the_docs_and_itself():
    labels = {_label(p) for p in FILES}
    assert {"README.md", "tests/test_docs.py", "docs/README.md", "tasks/grammar.py"} <= labels
    assert any(label.endswith(".ipynb") for label in labels)


@pytest.mark.parametrize("path", FILES, ids=_label)
def test_no_file_cites_a_document_outside_the_repository(path):
    found = outside_references(file_text(path))
    assert not found, (
        f"{_label(path)} cites a file that is not in the repository; cite the paper "
        "(section / figure / table) or a page of docs/ instead:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", FILES, ids=_label)
def test_every_docs_reference_resolves(path):
    in_docs = path.parent == DOCS
    problems = doc_reference_problems(file_text(path), in_docs)
    assert not problems, f"{_label(path)}:\n" + "\n".join(problems)


def test_the_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {m.group(1).partition("#")[0] for m in MARKDOWN_LINK.finditer(index)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages, "docs/ holds no pages"
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    # The patterns must fire on the real offenders (assembled here, as above) and on nothing else.
    assert outside_references(f"see {_NOTES} §5 item 11")
    assert outside_references(f"(paper/{_NOTES}.md)")
    assert outside_references(f"(`{_SCALE}.md`: rows)")
    assert outside_references(f"({_DESIGN}.md, Presets)")
    assert outside_references(f"(the jailbreak, {_NOTES} E.2)")
    assert not outside_references(f"{_NOTES}_TABLE = 1  # release notes, design notes")

    docs = tmp_path / "docs"
    docs.mkdir()
    d = "do" + "cs/"  # references that must fail, kept from failing this file's own scan
    (docs / "choices.md").write_text(
        "# Choices\n\n## Part one\n\n### The metric\n\n### Pruning units\n\n"
        "```\n### Inside a code block\n```\n", encoding="utf-8")
    (docs / "architecture.md").write_text("# A\n\n## Run engine\n", encoding="utf-8")

    def problems(text: str, in_docs: bool = False) -> list[str]:
        return doc_reference_problems(text, in_docs, docs)

    assert not problems(f"({d}choices.md#the-metric) and docs/choices.md, docs/architecture.md")
    assert not problems('sweeps key on it (docs/architecture.md, "Run engine").')
    assert not problems('docs/choices.md,\n"Pruning units" across a line break')
    assert not problems("README.md outside docs/ is not a docs reference")
    assert problems(f'{d}choices.md, "Inside a code block"')  # a code block is not a heading
    assert problems(f"{d}missing.md")
    assert problems(f'{d}architecture.md, "No such heading"')
    assert problems("see [the metric](choices.md#metric)", in_docs=True)
    assert not problems("see [the metric](choices.md#the-metric)", in_docs=True)
    assert problems("see [x](nowhere.md)", in_docs=True)
