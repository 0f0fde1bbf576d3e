"""The project's Markdown renders: every code fence closes on a line of its own, and every link
between its pages reaches a page and heading that exist.

A closing fence with text after it (``` Files go to ...) is not a fence at all, and the code block
swallows the rest of the page; the README's export section did this.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    path.relative_to(ROOT)
    for path in ROOT.rglob("*.md")
    if not {"build", "runs"} & set(path.relative_to(ROOT).parts)
    # what tools keep beside the project: .venv, .pytest_cache (a second `make test` found its README)
    and not any(part.startswith(".") for part in path.relative_to(ROOT).parts[:-1])
    and not any(part.endswith(".egg-info") for part in path.parts)
)


def test_the_pages_are_found():
    assert {Path("README.md"), Path("ARCHITECTURE.md"), Path("benchmarks/README.md")} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_every_code_fence_closes_on_a_line_of_its_own(page):
    problems, opened = [], None
    for number, line in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1):
        text = line.lstrip()
        if text.startswith("```") and opened is None:
            opened = number
        elif text.startswith("```"):
            if text.rstrip("`").strip():
                problems.append(f"line {number}: text after the fence that closes line {opened}'s block")
            opened = None
        elif "```" in text and opened is None:
            problems.append(f"line {number}: a fence inside a line of text")
    if opened is not None:
        problems.append(f"line {opened}: a code block that never closes")
    assert not problems, f"{page}: " + "; ".join(problems)


def _anchor(heading):
    """GitHub's id for a heading: lower case, punctuation but hyphens and underscores dropped, spaces
    to hyphens (`## How "auto" decides` -> `how-auto-decides`)."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    return {
        _anchor(line.lstrip("#"))
        for line in _outside_fences(path.read_text(encoding="utf-8"))
        if re.match(r"#{1,6} ", line)
    }


def _outside_fences(text):
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            yield line


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_every_relative_link_reaches_a_file_and_heading_that_exist(page):
    """The README sends readers to docs/ pages and their sections; a moved section must not leave a
    dead link behind."""
    problems = []
    for line in _outside_fences((ROOT / page).read_text(encoding="utf-8")):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            linked = ((ROOT / page).parent / path).resolve() if path else ROOT / page
            if not linked.exists():
                problems.append(f"{target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                problems.append(f"{target}: no such heading")
    assert not problems, f"{page}: " + "; ".join(problems)
