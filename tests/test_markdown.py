"""The project's Markdown renders: every code fence closes on a line of its own.

A closing fence with text after it (``` Files go to ...) is not a fence at all, and the code block
swallows the rest of the page; the README's export section did this.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    path.relative_to(ROOT)
    for path in ROOT.rglob("*.md")
    if not {".venv", ".venv-peer", "build", "runs"} & set(path.relative_to(ROOT).parts)
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
