"""The book's code is the package's code: re-exporting every chapter must reproduce ddpm_edu/ exactly."""

import shutil
from pathlib import Path

from ddpm_edu import _export

ROOT = Path(__file__).resolve().parent.parent


def test_every_chapter_reexports_to_the_committed_package(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    for nb in _export.chapter_notebooks(ROOT / "book"):
        shutil.copy(nb, book / nb.name)
    lib = tmp_path / "ddpm_edu"
    generated = _export.export_all(book, lib)
    assert generated, "no chapter exported anything"

    committed = {p.name for p in (ROOT / "ddpm_edu").glob("*.py") if _export.is_generated(p)}
    fresh = {p.name for p in generated}
    assert committed == fresh, f"stale or missing generated modules: {sorted(committed ^ fresh)}"
    for p in generated:
        expected = p.read_text(encoding="utf-8")
        actual = (ROOT / "ddpm_edu" / p.name).read_text(encoding="utf-8")
        assert actual == expected, (
            f"ddpm_edu/{p.name} differs from its chapter; edit the notebook, then run `python -m ddpm_edu._export`")


def test_generated_modules_name_the_chapter_to_edit():
    for p in (ROOT / "ddpm_edu").glob("*.py"):
        if _export.is_generated(p):
            first = p.read_text(encoding="utf-8").splitlines()[0]
            assert "File to edit: ../book/" in first and first.endswith(".ipynb."), first
