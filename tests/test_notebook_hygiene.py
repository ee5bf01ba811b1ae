"""Committed chapters carry no per-run noise (timestamps, random ids), so a one-sentence edit is a few-line diff."""

import json
import re

import nbformat
import pytest

from ddpm_edu._clean import clean_file, cleaned_text
from ddpm_edu._export import chapter_notebooks

CHAPTERS = chapter_notebooks()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_committed_chapter_is_clean(path):
    assert path.read_text(encoding="utf-8") == cleaned_text(path), (
        f"{path.name} carries run-specific metadata: run `python -m ddpm_edu._clean {path}` after executing it")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_no_timestamps_and_code_cells_ran_in_order(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not [c["id"] for c in code if "execution" in c["metadata"]]
    counts = [c["execution_count"] for c in code if c["source"]]
    assert counts == list(range(1, len(counts) + 1)), "re-execute the chapter top to bottom"


def _planted(tmp_path):
    """A copy of chapter 1 with what a fresh nbclient run adds: timestamps, a new animation id (and new widget ids,
    if a chapter 1 holds a widget again)."""
    src = next(p for p in CHAPTERS if p.name.startswith("01_"))
    text = src.read_text(encoding="utf-8")
    anim = re.search(r"(?<=anim)[0-9a-f]{32}", text).group(0)
    text = text.replace(anim, "0123456789abcdef" * 2)
    widget = re.search(r'"model_id": "([0-9a-f]{32})"', text)
    if widget:
        text = text.replace(widget.group(1), "fedcba9876543210" * 2)
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00.000000Z"}
    nb["metadata"]["language_info"]["version"] = "3.99.1"
    path = tmp_path / src.name
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return src, path


def test_cleaner_removes_run_noise_and_keeps_the_rest(tmp_path):
    src, path = _planted(tmp_path)
    assert cleaned_text(path) != path.read_text(encoding="utf-8")  # the test above would catch this notebook
    assert clean_file(path)
    assert path.read_text(encoding="utf-8") == src.read_text(encoding="utf-8")  # ids back to their stable values
    assert not clean_file(path)  # idempotent


def test_cleaner_keeps_tags_and_outputs():
    for path in CHAPTERS:
        before = json.loads(path.read_text(encoding="utf-8"))
        after = json.loads(cleaned_text(path))
        for b, a in zip(before["cells"], after["cells"]):
            assert b["metadata"].get("tags") == a["metadata"].get("tags")
            assert len(b.get("outputs", [])) == len(a.get("outputs", []))


def test_cleaner_merges_printed_pieces_the_way_nbval_compares_them(tmp_path):
    from nbval.plugin import coalesce_streams

    src = CHAPTERS[0]
    nb = json.loads(src.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and any(o["output_type"] == "stream"
                                                                          for o in c["outputs"]))
    stream = next(o for o in cell["outputs"] if o["output_type"] == "stream")
    text = "".join(stream["text"])
    pieces = [dict(stream, text=text[:5]), dict(stream, text=text[5:])]  # what one flush per print stores
    i = cell["outputs"].index(stream)
    cell["outputs"][i:i + 1] = pieces
    path = tmp_path / src.name
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert clean_file(path)
    assert path.read_text(encoding="utf-8") == src.read_text(encoding="utf-8")
    assert len(coalesce_streams([nbformat.from_dict(p) for p in pieces])) == 1  # nbval compares the merged text


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_every_number_the_text_glues_is_stored_in_the_notebook(path):
    """A `{glue:text}`key`` in a chapter's prose needs a `glue("key", ...)` output (kept by the cleaner), or the book
    build fails; this finds the missing key without building the book."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    used = {m.group(1) for c in nb["cells"] if c["cell_type"] == "markdown"
            for m in re.finditer(r"\{glue(?::\w+)?\}`([^`:]+)", "".join(c["source"]))}
    stored = {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb["cells"] if c["cell_type"] == "code"
              for o in c.get("outputs", [])}
    assert not used - stored, f"glued in the text but not stored: {sorted(used - stored)}"
