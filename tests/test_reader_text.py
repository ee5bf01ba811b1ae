"""Text a reader sees never speaks of the project's development (issue numbers, commit hashes, "an earlier
version"), and stored outputs and glued numbers carry no more digits than a reader needs (a full-precision float
differs in its last digits on another CPU or BLAS, and nbval then fails on the reader's machine)."""

import json
import re
from pathlib import Path

import pytest

from ddpm_edu._export import chapter_notebooks

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = chapter_notebooks()
DEV_WORDS = re.compile(r"(?i)\bissues? ?#?\d+|\b(?:an )?earlier version\b|\bcommit\b\s+[0-9a-f]{7,40}\b|"
                       r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
ISSUE_NUMBER = re.compile(r"(?i)\bissues? ?#?\d+")
# a decimal number with more than MAX_DIGITS significant digits
NUMBER = re.compile(r"(?<![\w.])-?(\d+)\.(\d+)")
MAX_DIGITS = 7


def dev_words(text: str) -> list[str]:
    return [m.group(0) for m in DEV_WORDS.finditer(text)]


def significant_digits(match: re.Match) -> int:
    whole, fraction = match.group(1), match.group(2)
    return len(whole.lstrip("0") + fraction) if whole.strip("0") else len(fraction.lstrip("0"))


def overlong_numbers(text: str) -> list[str]:
    return [m.group(0) for m in NUMBER.finditer(text) if significant_digits(m) > MAX_DIGITS]


def reader_texts():
    """(where, text) for every piece of text a reader of the book, the README or a model card sees."""
    for path in CHAPTERS:
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])
    for path in [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md")),
                 *sorted((ROOT / "ddpm_edu" / "pretrained").rglob("*.md"))]:
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "book" / "data").glob("*.json")):
        yield str(path.relative_to(ROOT)), json.dumps(_printed(json.loads(path.read_text(encoding="utf-8"))))


PRINTED_KEYS = {"printed", "command", "commands", "hardware", "sampler", "note"}


def _printed(value):
    """The text a data file shows a reader (its printed table, commands, hardware), not ids such as weight hashes."""
    if isinstance(value, dict):
        return [v if k in PRINTED_KEYS else _printed(v) for k, v in value.items()]
    if isinstance(value, list):
        return [_printed(v) for v in value]
    return None


def stored_outputs(path: Path):
    """(cell index, text) of every compared output of a chapter: printed text, plain-text results and glue."""
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code" or "nbval-ignore-output" in cell["metadata"].get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                yield i, "".join(out["text"])
            for kind, data in out.get("data", {}).items():
                if kind == "text/plain" or "papermill" in kind:
                    yield i, data if isinstance(data, str) else "".join(data)


def test_no_development_words_for_readers():
    found = [(where, words) for where, text in reader_texts() if (words := dev_words(text))]
    assert not found, f"reader-facing text speaks of the development process: {found}"


def test_no_issue_numbers_in_the_code():
    files = [*sorted((ROOT / "ddpm_edu").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")),
             *sorted((ROOT / "tools").glob("*"))]
    found = [(str(p.relative_to(ROOT)), m) for p in files if p.is_file()
             for m in ISSUE_NUMBER.findall(p.read_text(encoding="utf-8"))]
    assert not found, found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_stored_outputs_are_rounded(path):
    found = [(i, n) for i, text in stored_outputs(path) for n in overlong_numbers(text)]
    assert not found, f"{path.name}: round these printed or glued numbers to what the text needs: {found[:5]}"


def test_the_checks_catch_what_they_look_for():
    assert dev_words("as issue 13 measured") and dev_words("at commit 9ba4555,") and dev_words("An earlier version")
    assert not dev_words("the 1000-step column, 28x28 digits, a deadbeef-free sentence")
    assert overlong_numbers("'9.893846293586648'") == ["9.893846293586648"]
    assert not overlong_numbers("FID 9.89, sum 258.9606, 0.000012")
